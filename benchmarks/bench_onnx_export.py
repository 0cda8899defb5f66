"""ONNX Runtime (CPU) benchmark: our exported UltraFastBERT-1x11 against BERT of the same shape, both exported to ONNX.

UltraFastBERT-1x11 (16 layers, hidden 768, 12 heads, vocab 32768, one FFF tree of depth 11 per layer) is exported
with conversion/export_onnx.py (the FFF as unrolled per-level gathers, checked against PyTorch in onnxruntime before
timing); transformers' BertForSequenceClassification of the same shape with a 3072 FF is exported with torch.onnx the
same way (dynamic batch/sequence). Both run in onnxruntime's CPU provider, fp32, default graph optimisations, same
thread count. Random weights (speed does not depend on them); medians of interleaved samples, from one run.

    python3 benchmarks/bench_onnx_export.py [--batches 1] [--seq 128] [--seconds 5] [--threads N] [--workdir DIR]
"""

import argparse
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import onnxruntime  # noqa: E402
from bench_fff_layer import interleaved_medians, machine  # noqa: E402
from transformers import BertConfig, BertForSequenceClassification  # noqa: E402

from conversion.export_onnx import export_onnx, onnx_session  # noqa: E402
from modeling_ultrafastbert import UltraFastBertConfig, UltraFastBertForSequenceClassification  # noqa: E402


def export_bert(model: BertForSequenceClassification, path: Path, max_length: int) -> None:
    """BERT through the same torch.onnx exporter (dynamic batch and sequence axes)."""

    class Logits(torch.nn.Module):
        def __init__(self, bert):
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask):
            return self.bert(input_ids=input_ids, attention_mask=attention_mask).logits

    input_ids = torch.randint(1, model.config.vocab_size, (2, 8))
    batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence", max=max_length)
    with torch.no_grad():
        program = torch.onnx.export(
            Logits(model).eval(), (input_ids, torch.ones_like(input_ids)),
            input_names=["input_ids", "attention_mask"], output_names=["logits"],
            dynamic_shapes={"input_ids": {0: batch, 1: sequence}, "attention_mask": {0: batch, 1: sequence}},
            dynamo=True, verbose=False,
        )
    program.save(str(path))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, nargs="+", default=[1])
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--seconds", type=float, default=5.0, help="time budget per contender and batch")
    parser.add_argument("--threads", type=int, default=None, help="onnxruntime intra-op threads (default: all)")
    parser.add_argument("--workdir", default=None, help="where to write the .onnx files (default: a temp folder)")
    args = parser.parse_args()

    torch.manual_seed(0)
    shape = dict(vocab_size=32768, hidden_size=768, num_hidden_layers=16, num_attention_heads=12,
                 max_position_embeddings=max(128, args.seq), num_labels=2)
    ours = UltraFastBertForSequenceClassification(
        UltraFastBertConfig(fff_depth=11, fff_trees=1, attn_implementation="sdpa", **shape)
    ).eval()
    bert = BertForSequenceClassification(BertConfig(intermediate_size=3072, attn_implementation="sdpa", **shape)).eval()

    with tempfile.TemporaryDirectory(dir=args.workdir) as workdir:
        ours_path, bert_path = Path(workdir) / "ultrafastbert-1x11.onnx", Path(workdir) / "bert-base.onnx"
        report = export_onnx(ours, ours_path)  # raises unless onnxruntime matches PyTorch within 1e-4
        export_bert(bert, bert_path, shape["max_position_embeddings"])
        sessions = {"ours": onnx_session(ours_path, args.threads), "bert": onnx_session(bert_path, args.threads)}

        print(f"machine: {machine()}, onnxruntime {onnxruntime.__version__}, "
              f"intra-op threads {args.threads or 'default (all cores)'}")
        print(f"export check: max |onnxruntime - PyTorch| = {report['max_abs_diff']:.2g} (random inputs)")
        header = f"{'batch':>8} | {'ORT BERT FF-3072':>16} | {'ORT ours 1x11':>13} | {'ours vs BERT':>12}"
        print(header)
        print("-" * len(header))
        for batch in args.batches:
            ids = torch.randint(5, shape["vocab_size"], (batch, args.seq), generator=torch.Generator().manual_seed(batch))
            feed = {"input_ids": ids.numpy(), "attention_mask": torch.ones_like(ids).numpy()}
            times = interleaved_medians(
                {name: (lambda s=session: s.run(None, feed), 1.0) for name, session in sessions.items()},
                args.seconds,
            )
            t_bert, t_ours = times["bert"] / 1e3, times["ours"] / 1e3
            print(f"{batch:>4}x{args.seq:<3} | {t_bert:13.1f} ms | {t_ours:10.1f} ms | {t_bert / t_ours:11.2f}x")


if __name__ == "__main__":
    main()
