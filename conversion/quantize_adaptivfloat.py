# Copyright 2026 The UltraFastBERT-HF authors. Apache-2.0.
"""Turn an UltraFastBERT checkpoint into an AdaptivFloat one: every weight matrix (embeddings, attention q/k/v and
output projections, FFF input/output rows, pooler, classifier) stored as uint8 codes plus one exponent bias per tensor
in model.safetensors, ``config.weight_quantization`` recording the format. LayerNorms and biases stay fp32. The result
loads with ``from_pretrained(..., trust_remote_code=True)`` like any checkpoint of ours.

Usage:
    python conversion/quantize_adaptivfloat.py SRC OUT [--bits 8] [--exponent-bits 3] [--projection-dtype bfloat16]

As a library:
    from conversion.quantize_adaptivfloat import quantize_checkpoint
    quantize_checkpoint("checkpoints/ultrafastbert-sst2-small", "out/sst2-af8")

OUT is written to a temporary folder beside it, reloaded and compared with the dequantized-weights model, and moved
into place only when that succeeds.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import modeling_ultrafastbert  # noqa: E402
from conversion.checkpoint_files import copy_side_files, model_class_for, move_into_place  # noqa: E402
from modeling_ultrafastbert.adaptivfloat import quantize_model_  # noqa: E402





def quantize_checkpoint(src: str | os.PathLike, out: str | os.PathLike, bits: int = 8, exponent_bits: int = 3,
                        projection_dtype: str = "bfloat16") -> Path:
    """Write the AdaptivFloat<bits, exponent_bits> version of checkpoint ``src`` to ``out``; returns ``out``."""
    src, out = Path(src), Path(out)
    if not (src / "config.json").is_file():
        raise FileNotFoundError(f"{src} has no config.json: not a saved checkpoint")
    config = modeling_ultrafastbert.UltraFastBertConfig.from_pretrained(src)
    if getattr(config, "weight_quantization", None):
        raise ValueError(f"{src} is already quantized ({config.weight_quantization})")
    model = model_class_for(config).from_pretrained(src).eval()
    quantize_model_(model, bits=bits, exponent_bits=exponent_bits, projection_dtype=projection_dtype)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        model.save_pretrained(tmp_dir)
        copy_side_files(src, tmp_dir)
        _verify(tmp_dir, model)
        move_into_place(tmp_dir, out)
    finally:
        if tmp_dir.exists():
            shutil.rmtree(tmp_dir, ignore_errors=True)
    return out


def _verify(folder: Path, model) -> None:
    """The written folder says what it is and reloads to the same outputs as the model in memory."""
    saved = json.loads((folder / "config.json").read_text())
    if saved.get("weight_quantization", {}).get("format") != "adaptivfloat":
        raise RuntimeError(f"{folder}/config.json does not record the weight quantization")
    reloaded = type(model).from_pretrained(folder).eval()
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(1, model.config.vocab_size, (2, min(16, model.config.max_position_embeddings)),
                        generator=generator)
    with torch.no_grad():
        expected, got = model(ids).to_tuple()[0], reloaded(ids).to_tuple()[0]
    if not torch.allclose(expected, got, rtol=1e-5, atol=1e-6):
        raise RuntimeError(f"the reloaded quantized model differs from the one written (max |diff| "
                           f"{(expected - got).abs().max().item():.3g})")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src", help="checkpoint folder of ours (float weights)")
    parser.add_argument("out", help="output folder (replaced only when quantization and verification succeed)")
    parser.add_argument("--bits", type=int, default=8)
    parser.add_argument("--exponent-bits", type=int, default=3)
    parser.add_argument("--projection-dtype", default="bfloat16", choices=["bfloat16", "float32", "int8"],
                        help="activations of the q/k/v, output, pooler and classifier products (weights are exact)")
    args = parser.parse_args(argv)
    out = quantize_checkpoint(args.src, args.out, args.bits, args.exponent_bits, args.projection_dtype)
    size = lambda folder: sum(f.stat().st_size for f in Path(folder).glob("*.safetensors"))  # noqa: E731
    print(f"wrote {out}: {size(out) / 1e6:.2f} MB of weights, {size(out) / size(args.src):.3f}x of {args.src}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
