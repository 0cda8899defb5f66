"""CPU benchmark of the full-size UltraFastBERT-1x11 sequence classifier against BERT of the same shape.

UltraFastBERT-1x11 (16 layers, hidden 768, 12 heads, vocab 32768, one FFF tree of depth 11 per layer, sdpa
attention) with fff_inference="conditional" (fff_kernel="auto": the native CPU kernel when it builds) vs
transformers' BertForSequenceClassification of the same shape with a 3072 FF (sdpa), and vs our own
fff_inference="dense" (the masked path the released model runs). Batches 1x128 and 8x128, random weights (speed does
not depend on them), medians in ms and ratios, from one run, all threads (and --threads to change it).

    python3 benchmarks/bench_model.py [--batches 1 8] [--seq 128] [--seconds 3] [--threads N]
"""

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_fff_layer import interleaved_medians, machine  # noqa: E402
from transformers import BertConfig, BertForSequenceClassification  # noqa: E402

from modeling_ultrafastbert import UltraFastBertConfig, UltraFastBertForSequenceClassification  # noqa: E402
from modeling_ultrafastbert.fast_feedforward import native_kernel_status  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--seconds", type=float, default=3.0, help="time budget per contender and batch")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"machine: {machine()}, {torch.get_num_threads()} threads")
    print(f"native CPU kernel: {native_kernel_status('cpu')}")

    torch.manual_seed(0)
    shape = dict(vocab_size=32768, hidden_size=768, num_hidden_layers=16, num_attention_heads=12,
                 max_position_embeddings=512, num_labels=2)
    ours = UltraFastBertForSequenceClassification(
        UltraFastBertConfig(fff_depth=11, fff_trees=1, attn_implementation="sdpa", **shape)
    ).eval()
    bert = BertForSequenceClassification(
        BertConfig(intermediate_size=3072, attn_implementation="sdpa", **shape)
    ).eval()
    print(f"attention: ours {ours.config._attn_implementation}, BERT {bert.config._attn_implementation}")

    header = f"{'batch':>8} | {'BERT FF-3072':>13} | {'ours dense':>11} | {'ours conditional':>16} | " \
             f"{'vs BERT':>7} | {'vs ours dense':>13}"
    print(header)
    print("-" * len(header))
    for batch in args.batches:
        ids = torch.randint(5, 32768, (batch, args.seq), generator=torch.Generator().manual_seed(batch))
        mask = torch.ones_like(ids)
        with torch.inference_mode():
            ours.config.fff_inference = "conditional"
            conditional_logits = ours(input_ids=ids, attention_mask=mask).logits
            ours.config.fff_inference = "dense"
            dense_logits = ours(input_ids=ids, attention_mask=mask).logits
            # the conditional and masked computations agree (random weights: decisions near 0 are rare)
            torch.testing.assert_close(conditional_logits, dense_logits, rtol=1e-3, atol=1e-3)

            def run(mode):
                ours.config.fff_inference = mode
                return ours(input_ids=ids, attention_mask=mask)

            # interleaved slices: load from other processes on a shared machine hits all three alike
            ms = {name: us / 1e3 for name, us in interleaved_medians(
                {
                    "bert": (lambda: bert(input_ids=ids, attention_mask=mask), 1.0),
                    "dense": (lambda: run("dense"), 1.0),
                    "conditional": (lambda: run("conditional"), 1.0),
                },
                args.seconds,
            ).items()}
            t_bert, t_dense, t_cond = ms["bert"], ms["dense"], ms["conditional"]
            ours.config.fff_inference = "conditional"
        print(f"{batch:>4}x{args.seq:<3} | {t_bert:10.1f} ms | {t_dense:8.1f} ms | {t_cond:13.1f} ms | "
              f"{t_bert / t_cond:6.2f}x | {t_dense / t_cond:12.2f}x")


if __name__ == "__main__":
    main()
