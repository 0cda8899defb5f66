"""CPU benchmark of the full-size UltraFastBERT-1x11 sequence classifier against BERT of the same shape.

UltraFastBERT-1x11 (16 layers, hidden 768, 12 heads, vocab 32768, one FFF tree of depth 11 per layer, sdpa
attention) with fff_inference="conditional" (fff_kernel="auto": the native CPU kernel when it builds) vs
transformers' BertForSequenceClassification of the same shape with a 3072 FF (sdpa), and vs our own
fff_inference="dense" (the masked path the released model runs). Batches 1x128 and 8x128, random weights (speed does
not depend on them), medians in ms and ratios, from one run, all threads (and --threads to change it).

With --onnx it adds the real peers and our 8-bit model, all timed in the same interleaved run:
  * "BERT ORT fp32": the same BERT exported with torch.onnx, run by ONNX Runtime (all graph optimisations);
  * "BERT ORT int8": that export through onnxruntime.quantization.quantize_dynamic (int8 weights, int8 activations);
  * "ours AF8": our model with AdaptivFloat<8,3> weights (quantize_model_): the 8-bit FFF kernel (adding the skip
    connection as it writes), the projections as dynamic int8 on the decoded weights (projection_dtype="int8": our
    activation quantizer, then oneDNN's int8 matmul writing bf16 q/k/v, or fp32 with the residual added), attention
    in bf16;
  * "ours AF8, bf16 projections": the same with the projections in bf16 on the exactly decoded weights (the default);
and prints every contender against "ours AF8" (and "ours fp32").

    python3 benchmarks/bench_model.py [--batches 1 8] [--seq 128] [--seconds 3] [--threads N] [--onnx]
"""

import argparse
import copy
import sys
import tempfile
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
    parser.add_argument("--onnx", action="store_true",
                        help="add ONNX Runtime fp32/int8 BERT and our AdaptivFloat-8 model, one table per batch")
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

    if args.onnx:
        compare_with_onnx_runtime(ours, bert, args)
        return

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


def export_bert_to_onnx(bert, folder: Path, seq: int) -> tuple[Path, Path]:
    """BERT exported with torch.onnx (fp32) and its onnxruntime quantize_dynamic int8 version."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    fp32_path, int8_path = folder / "bert.onnx", folder / "bert-int8.onnx"
    ids = torch.randint(5, 32768, (1, seq))
    mask = torch.ones_like(ids)
    with torch.no_grad():
        torch.onnx.export(bert, (ids, mask), str(fp32_path), input_names=["input_ids", "attention_mask"],
                          output_names=["logits"], dynamic_axes={"input_ids": {0: "batch", 1: "seq"},
                                                                 "attention_mask": {0: "batch", 1: "seq"}},
                          opset_version=17, dynamo=False)
    quantize_dynamic(str(fp32_path), str(int8_path), weight_type=QuantType.QInt8)
    return fp32_path, int8_path


def ort_session(path: Path, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def compare_with_onnx_runtime(ours, bert, args) -> None:
    from modeling_ultrafastbert.adaptivfloat import quantize_model_, set_projection_dtype_

    import onnxruntime

    ours.config.fff_inference = "conditional"
    ours_af8 = set_projection_dtype_(quantize_model_(copy.deepcopy(ours)), "int8").eval()
    ours_af8_bf16 = quantize_model_(copy.deepcopy(ours), projection_dtype="bfloat16").eval()
    threads = torch.get_num_threads()
    print(f"onnxruntime {onnxruntime.__version__}, {threads} intra-op threads")
    with tempfile.TemporaryDirectory() as tmp:
        fp32_path, int8_path = export_bert_to_onnx(bert, Path(tmp), args.seq)
        sessions = {"BERT ORT fp32": ort_session(fp32_path, threads), "BERT ORT int8": ort_session(int8_path, threads)}
        for batch in args.batches:
            ids = torch.randint(5, 32768, (batch, args.seq), generator=torch.Generator().manual_seed(batch))
            mask = torch.ones_like(ids)
            feed = {"input_ids": ids.numpy(), "attention_mask": mask.numpy()}
            with torch.inference_mode():
                bert_logits = bert(input_ids=ids, attention_mask=mask).logits
                for name, session in sessions.items():  # the export computes the same function
                    ort_logits = torch.from_numpy(session.run(["logits"], feed)[0])
                    tolerance = 1e-3 if "fp32" in name else 0.3
                    torch.testing.assert_close(ort_logits, bert_logits, rtol=tolerance, atol=tolerance)
                contenders = {
                    "BERT PyTorch fp32": (lambda: bert(input_ids=ids, attention_mask=mask), 1.0),
                    "BERT ORT fp32": (lambda: sessions["BERT ORT fp32"].run(["logits"], feed), 1.0),
                    "BERT ORT int8": (lambda: sessions["BERT ORT int8"].run(["logits"], feed), 1.0),
                    "ours fp32": (lambda: ours(input_ids=ids, attention_mask=mask), 1.0),
                    "ours AF8, bf16 projections": (lambda: ours_af8_bf16(input_ids=ids, attention_mask=mask), 1.0),
                    "ours AF8": (lambda: ours_af8(input_ids=ids, attention_mask=mask), 1.0),
                }
                ms = {name: us / 1e3 for name, us in interleaved_medians(contenders, args.seconds).items()}
            print(f"\n{machine()}, {threads} threads; batch {batch}x{args.seq}, random ids, no early exit, "
                  "medians of interleaved slices")
            print(f"| contender | ms | ours AF8 is faster by | ours fp32 is faster by |")
            print(f"|---|---|---|---|")
            for name, value in ms.items():
                print(f"| {name} | {value:.1f} | {value / ms['ours AF8']:.2f}x | {value / ms['ours fp32']:.2f}x |")


if __name__ == "__main__":
    main()
