# Copyright 2026 The UltraFastBERT-HF authors. Apache-2.0.
"""SST-2 dev accuracy of one checkpoint with float weights vs AdaptivFloat-8 vs plain int8, and checkpoint bytes.

Contenders, all from the same fp32 checkpoint:
  * fp32: the checkpoint as it is;
  * AdaptivFloat<8,3>, the real quantized checkpoint (uint8 codes, 8-bit CPU FFF kernel), with the projections'
    and attention's activations in bf16 (the default), in fp32, and with the projections through PyTorch's dynamic
    int8 linear (decoded weights rounded again to per-channel int8, int8 activations);
  * int8: every weight matrix rounded to symmetric per-tensor int8 (scale max|w|/127) and run in fp32 (simulated:
    the accuracy of the format, not a kernel).

    python examples/eval_weight_quantization.py [--model checkpoints/ultrafastbert-sst2-small]
        [--data-dir ../shared/data/glue] [--max-eval-samples N]
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from transformers import AutoTokenizer  # noqa: E402

from conversion.quantize_adaptivfloat import quantize_checkpoint  # noqa: E402
from modeling_ultrafastbert import UltraFastBertForSequenceClassification  # noqa: E402
from modeling_ultrafastbert.adaptivfloat import (  # noqa: E402
    int8_symmetric_dequantize,
    int8_symmetric_quantize,
    set_projection_dtype_,
)

REPO_ROOT = Path(__file__).resolve().parents[1]


def read_dev(data_dir: Path, limit: int | None) -> tuple[list[str], list[int]]:
    sentences, labels = [], []
    with open(data_dir / "SST-2" / "dev.tsv", encoding="utf-8") as handle:
        next(handle)
        for line in handle:
            sentence, label = line.rstrip("\n").split("\t")
            sentences.append(sentence)
            labels.append(int(label))
    return (sentences[:limit], labels[:limit]) if limit else (sentences, labels)


@torch.inference_mode()
def accuracy(model, tokenizer, sentences, labels, batch_size: int = 64) -> float:
    correct = 0
    for start in range(0, len(sentences), batch_size):
        batch = tokenizer(sentences[start:start + batch_size], padding=True, truncation=True,
                          max_length=model.config.max_position_embeddings, return_tensors="pt")
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        correct += int((logits.argmax(-1) == torch.tensor(labels[start:start + batch_size])).sum())
    return correct / len(sentences)


@torch.no_grad()
def round_weights_to_int8_(model) -> None:
    """Every weight matrix (the tensors AdaptivFloat quantizes) rounded to symmetric per-tensor int8, in place."""
    for name, parameter in model.named_parameters():
        if parameter.dim() >= 2 and name.endswith("weight"):  # embeddings, projections, FFF rows, pooler, classifier
            parameter.copy_(int8_symmetric_dequantize(*int8_symmetric_quantize(parameter)))


def weight_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.glob("*.safetensors"))


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(REPO_ROOT / "checkpoints" / "ultrafastbert-sst2-small"))
    parser.add_argument("--data-dir", default=str(REPO_ROOT.parent / "shared" / "data" / "glue"))
    parser.add_argument("--max-eval-samples", type=int, default=None)
    args = parser.parse_args(argv)
    source = Path(args.model)
    sentences, labels = read_dev(Path(args.data_dir), args.max_eval_samples)
    tokenizer = AutoTokenizer.from_pretrained(source)

    results = {}
    fp32 = UltraFastBertForSequenceClassification.from_pretrained(source).eval()
    results["fp32"] = (accuracy(fp32, tokenizer, sentences, labels), weight_bytes(source))
    with tempfile.TemporaryDirectory() as tmp:
        folder = quantize_checkpoint(source, Path(tmp) / "af8")
        quantized = UltraFastBertForSequenceClassification.from_pretrained(folder).eval()
        for projection_dtype, label in (("bfloat16", "bf16 projections and attention"),
                                        ("float32", "fp32 projections and attention"),
                                        ("int8", "int8 dynamic projections, bf16 attention")):
            set_projection_dtype_(quantized, projection_dtype)
            results[f"AdaptivFloat<8,3>, {label}"] = (accuracy(quantized, tokenizer, sentences, labels),
                                                      weight_bytes(folder))
    int8 = UltraFastBertForSequenceClassification.from_pretrained(source).eval()
    round_weights_to_int8_(int8)
    results["int8 symmetric per-tensor (simulated)"] = (accuracy(int8, tokenizer, sentences, labels), None)

    base_accuracy, base_bytes = results["fp32"]
    print(f"SST-2 dev ({len(sentences)} sentences), checkpoint {source}")
    print(f"| weights | accuracy | vs fp32 (points) | checkpoint weight bytes |")
    print(f"|---|---|---|---|")
    for name, (acc, size) in results.items():
        size_text = "-" if size is None else f"{size / 1e6:.2f} MB ({size / base_bytes:.3f}x)"
        print(f"| {name} | {acc:.4f} | {100 * (acc - base_accuracy):+.2f} | {size_text} |")
    return results


if __name__ == "__main__":
    main()
