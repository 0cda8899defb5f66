# Copyright 2026 The UltraFastBERT-HF authors. Apache-2.0.
"""Store a pruned UltraFastBERT checkpoint compactly: every sparse weight tensor of the encoder (attention projections,
FFF node rows, word embeddings) as a bit mask of its non-zero entries plus those entries, in model.safetensors
(``<key>_nonzero_bitmask`` uint8, ``<key>_nonzero_values`` in the tensor's dtype); ``config.pruning["compact_tensors"]``
lists them with their non-zero counts. The result loads with ``from_pretrained(..., trust_remote_code=True)`` without
this package, and the model rebuilds exactly the dense tensors (verified bit for bit before the folder is written).

Usage:
    python conversion/compact_pruned.py SRC OUT [--min-sparsity 0.1]

A tensor is stored compactly only when that is smaller (the mask costs 1 bit per entry, so for float32 from about
3% zeros on) and it has at least ``--min-sparsity`` zeros. OUT is written to a temporary folder beside it and moved
into place only after the reloaded model's tensors equal the source's bit for bit.
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
from safetensors.torch import load_file, save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import modeling_ultrafastbert  # noqa: E402
from conversion.checkpoint_files import COPIED_FILES, copy_side_files, model_class_for, move_into_place  # noqa: E402
from modeling_ultrafastbert.pruning import (  # noqa: E402
    BITMASK_SUFFIX,
    EMBEDDING_PATTERNS,
    ENCODER_PATTERNS,
    VALUES_SUFFIX,
    compact_tensor,
    nonzero_mask,
)





def _is_compactable(base_key: str) -> bool:
    import re

    return any(re.fullmatch(p, base_key) for p in ENCODER_PATTERNS + EMBEDDING_PATTERNS)


def compact_checkpoint(src: str | os.PathLike, out: str | os.PathLike, min_sparsity: float = 0.1) -> dict:
    """Write the compact version of pruned checkpoint ``src`` to ``out``. Returns the sizes and the tensors stored."""
    src, out = Path(src), Path(out)
    if not (src / "config.json").is_file() or not (src / "model.safetensors").is_file():
        raise FileNotFoundError(f"{src} is not a saved checkpoint (needs config.json and a single model.safetensors)")
    if not 0.0 <= min_sparsity < 1.0:
        raise ValueError(f"min_sparsity must lie in [0, 1), got {min_sparsity}")
    config = modeling_ultrafastbert.UltraFastBertConfig.from_pretrained(src)
    if (config.pruning or {}).get("compact_tensors"):
        raise ValueError(f"{src} is already compact")
    if config.weight_quantization:
        raise ValueError(f"{src} holds AdaptivFloat codes ({config.weight_quantization}); compact a float checkpoint")
    model = model_class_for(config).from_pretrained(src, dtype="auto").eval()

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        model.save_pretrained(tmp_dir)  # config, remote code, and the dense file whose tensors are re-encoded
        dense = load_file(tmp_dir / "model.safetensors")
        compact, counts = {}, {}
        for key, tensor in dense.items():
            base_key = key[len("ultrafastbert."):] if key.startswith("ultrafastbert.") else key
            nonzeros = int(nonzero_mask(tensor).sum())
            compact_bytes = (tensor.numel() + 7) // 8 + nonzeros * tensor.element_size()
            sparsity = 1.0 - nonzeros / max(tensor.numel(), 1)
            if (_is_compactable(base_key) and tensor.is_floating_point() and sparsity >= min_sparsity
                    and compact_bytes < tensor.numel() * tensor.element_size()):
                bitmask, values = compact_tensor(tensor)
                compact[key + BITMASK_SUFFIX], compact[key + VALUES_SUFFIX] = bitmask, values
                counts[base_key] = nonzeros
            else:
                compact[key] = tensor
        if not counts:
            raise ValueError(f"no tensor of {src} is sparse enough to store compactly (min_sparsity={min_sparsity})")
        save_file(compact, tmp_dir / "model.safetensors", metadata={"format": "pt"})
        model.config.pruning = {**(model.config.pruning or {}), "compact_tensors": counts}
        model.config.save_pretrained(tmp_dir)
        # the weights are exactly the dense ones, so the measured results still hold
        copy_side_files(src, tmp_dir, COPIED_FILES + ("eval_results.json",))
        _verify(tmp_dir, model, dense)
        move_into_place(tmp_dir, out)
    finally:
        if tmp_dir.exists():
            shutil.rmtree(tmp_dir, ignore_errors=True)
    dense_bytes = (src / "model.safetensors").stat().st_size
    compact_bytes = (out / "model.safetensors").stat().st_size
    return {"dense_bytes": dense_bytes, "compact_bytes": compact_bytes, "ratio": compact_bytes / dense_bytes,
            "compact_tensors": counts}


def _bits(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.contiguous().view(torch.uint8)


def _verify(folder: Path, model, dense: dict) -> None:
    """The written folder records its compact tensors, and reloads to exactly the dense tensors."""
    saved = json.loads((folder / "config.json").read_text())
    if not (saved.get("pruning") or {}).get("compact_tensors"):
        raise RuntimeError(f"{folder}/config.json does not record the compact tensors")
    reloaded = type(model).from_pretrained(folder, dtype="auto")
    state = reloaded.state_dict()
    for key, tensor in dense.items():
        if key not in state or state[key].dtype != tensor.dtype or not torch.equal(_bits(state[key]), _bits(tensor)):
            raise RuntimeError(f"the reloaded compact checkpoint differs from the source at {key}")
    leftovers = [k for k in state if k.endswith((BITMASK_SUFFIX, VALUES_SUFFIX))]
    if leftovers:
        raise RuntimeError(f"the reloaded model kept compact buffers: {leftovers[:3]}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src", help="pruned checkpoint folder of ours (dense, float weights)")
    parser.add_argument("out", help="output folder (replaced only when writing and verification succeed)")
    parser.add_argument("--min-sparsity", type=float, default=0.1,
                        help="store a tensor compactly only from this fraction of zeros on (default 0.1)")
    args = parser.parse_args(argv)
    result = compact_checkpoint(args.src, args.out, args.min_sparsity)
    print(f"wrote {args.out}: {len(result['compact_tensors'])} tensors as bit mask + values; model.safetensors "
          f"{result['compact_bytes']:,} bytes vs {result['dense_bytes']:,} dense = {result['ratio']:.3f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
