"""GPU speed as users get it: modules called from Python one call after another (host-launched), beside CUDA graphs.

Layer: our FastFeedForward module (hidden 768, one tree of depth 11, eval, fff_kernel="auto": the Triton kernels)
against a dense FF-3072 module (Linear-GELU-Linear, cuBLAS), same dtype, at 128 tokens (and --tokens). Whole model:
UltraFastBERT-1x11 for sequence classification (16 layers, hidden 768) against transformers'
BertForSequenceClassification of the same shape (FF-3072, sdpa), batch 32x128 with an all-ones attention mask.

Three timings per contender, from one run:
- **host-launched**: wall time per call of a loop of back-to-back calls (inputs rotated among 4 buffers, one
  synchronize at the end), median over repeats. This is what a Python loop over batches gets: the larger of the
  host's launch cost and the GPU's time.
- **CUDA graph**: the same call captured once and replayed (do_bench_cudagraph median): GPU time alone.
- for the model, with --compile: torch.compile(model, mode="reduce-overhead") called like the eager model.
Our model is timed with its automatic CUDA graphs (`config.cuda_graphs="auto"`: recorded on the third call of a shape)
and without them (`"off"`, every kernel launched from Python).
The layer also shows our module with the launch cache emptied before every call, i.e. what each call cost before the
cache (validation, launch description and Triton's generic launch path on every call).

    python3 benchmarks/bench_gpu_host_launch.py [--dtype bf16] [--tokens 128 4096] [--compile] [--skip-model]
"""

import argparse
import math
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import triton  # noqa: E402
from triton.testing import do_bench_cudagraph  # noqa: E402

from modeling_ultrafastbert import fff_triton_kernel as tk  # noqa: E402
from modeling_ultrafastbert.fast_feedforward import FastFeedForward  # noqa: E402

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown CPU"


def host_launched_us(fn, calls: int, repeats: int = 7, rotate: int = 4) -> float:
    """Median over ``repeats`` of (wall time of ``calls`` back-to-back calls, then one synchronize) / calls."""
    for i in range(3):  # warm-up: compilation, allocator pools, launch caches
        fn(i % rotate)
    torch.cuda.synchronize()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        for i in range(calls):
            fn(i % rotate)
        torch.cuda.synchronize()
        samples.append(1e6 * (time.perf_counter() - start) / calls)
    return statistics.median(samples)


def graph_us(fn) -> float:
    try:
        return 1000.0 * do_bench_cudagraph(lambda: fn(0), rep=200, return_mode="median")
    except Exception as error:  # report, do not hide
        print(f"  (graph capture failed: {type(error).__name__}: {str(error)[:160]})")
        return float("nan")


def layer_bench(tokens_list, dtype, hidden=768, depth=11, dense_width=3072):
    torch.manual_seed(0)
    fff = FastFeedForward(hidden, depth, trees=1).cuda().to(dtype).eval()
    dense = torch.nn.Sequential(
        torch.nn.Linear(hidden, dense_width), torch.nn.GELU(), torch.nn.Linear(dense_width, hidden)
    ).cuda().to(dtype).eval()
    for tokens in tokens_list:
        xs = [torch.randn(tokens, hidden, device="cuda", dtype=dtype) for _ in range(4)]
        calls = 2000 if tokens <= 1024 else 500

        def uncached(i):
            tk.clear_launch_cache()
            return fff(xs[i])

        with torch.inference_mode():
            # the module must run the Triton kernel (not a fallback) and compute the FFF
            y = fff(xs[0])
            fff.kernel = "torch"
            ref = fff(xs[0])
            fff.kernel = "auto"
            rel = ((y.float() - ref.float()).norm() / ref.float().norm()).item()
            host = {
                "dense FF-3072 (cuBLAS)": host_launched_us(lambda i: dense(xs[i]), calls),
                "FFF module (auto)": host_launched_us(lambda i: fff(xs[i]), calls),
                "FFF module, launch cache emptied each call": host_launched_us(uncached, calls),
            }
            graph = {
                "dense FF-3072 (cuBLAS)": graph_us(lambda i: dense(xs[i])),
                "FFF module (auto)": graph_us(lambda i: fff(xs[i])),
            }
        base, gbase = host["dense FF-3072 (cuBLAS)"], graph["dense FF-3072 (cuBLAS)"]
        print(f"\n== FFF layer vs dense FF-3072, {tokens} tokens, hidden {hidden}, depth {depth}, {dtype} "
              f"(kernel vs PyTorch walk: rel. diff {rel:.1e})")
        print(f"{'contender':46s} {'host-launched us':>17s} {'vs dense':>9s} {'CUDA graph us':>14s} {'vs dense':>9s}")
        for name, t in host.items():
            g = graph.get(name, float("nan"))
            print(f"{name:46s} {t:17.1f} {base / t:8.2f}x {g:14.1f} {gbase / g:8.2f}x")


def model_bench(dtype, batch, seq, compile_model):
    from transformers import BertConfig, BertForSequenceClassification

    from modeling_ultrafastbert import UltraFastBertConfig, UltraFastBertForSequenceClassification

    torch.manual_seed(0)
    config = UltraFastBertConfig(attn_implementation="sdpa")  # the full 1x11 shape
    ours = UltraFastBertForSequenceClassification(config).cuda().to(dtype).eval()
    ours.config.cuda_graphs = "auto"
    bert_config = BertConfig(vocab_size=config.vocab_size, hidden_size=768, num_hidden_layers=config.num_hidden_layers,
                             num_attention_heads=12, intermediate_size=3072, max_position_embeddings=512)
    bert = BertForSequenceClassification._from_config(bert_config, attn_implementation="sdpa").cuda().to(dtype).eval()
    inputs = [(torch.randint(1, config.vocab_size, (batch, seq), device="cuda"),
               torch.ones(batch, seq, dtype=torch.long, device="cuda")) for _ in range(4)]
    models = {"BERT FF-3072 (sdpa)": bert, "UltraFastBERT-1x11 (Triton FFF, cuda_graphs='auto')": ours}
    host, graph = {}, {}
    with torch.inference_mode():
        for name, model in models.items():
            call = lambda i, m=model: m(input_ids=inputs[i][0], attention_mask=inputs[i][1]).logits  # noqa: E731
            host[name] = host_launched_us(call, calls=30)
            graph[name] = graph_us(call)
        # ours as it launched before the automatic graphs (cuda_graphs.py): every kernel from Python
        ours.config.cuda_graphs = "off"
        call = lambda i: ours(input_ids=inputs[i][0], attention_mask=inputs[i][1]).logits  # noqa: E731
        host["UltraFastBERT-1x11, cuda_graphs='off' (every kernel from Python)"] = host_launched_us(call, calls=30)
        ours.config.cuda_graphs = "auto"
        recorded = ours.__dict__.get("_cuda_graphs")
        print(f"  ours with cuda_graphs='auto': {getattr(recorded, 'recordings', 0)} graph(s) recorded, "
              f"{getattr(recorded, 'replays', 0)} replays")
        if compile_model:
            for name, model in list(models.items()):
                compiled = torch.compile(model, mode="reduce-overhead")
                call = lambda i, m=compiled: m(input_ids=inputs[i][0], attention_mask=inputs[i][1]).logits  # noqa
                start = time.perf_counter()
                for i in range(3):
                    call(i)
                torch.cuda.synchronize()
                print(f"  torch.compile(reduce-overhead) of {name}: {time.perf_counter() - start:.0f} s to warm up")
                host[name + ", compiled reduce-overhead"] = host_launched_us(call, calls=30)
    bert_name = "BERT FF-3072 (sdpa)"
    print(f"\n== whole model, {batch}x{seq} tokens, {dtype}")
    print(f"{'model':56s} {'host-launched us':>17s} {'vs BERT':>8s} {'CUDA graph us':>14s} {'vs BERT':>8s}")
    for name, t in host.items():
        ref = host[bert_name + (", compiled reduce-overhead" if "compiled" in name else "")]
        g = graph.get(name, float("nan"))
        gtext = f"{g:14.1f} {graph[bert_name] / g:7.2f}x" if not math.isnan(g) else f"{'':14s} {'':8s}"
        print(f"{name:56s} {t:17.1f} {ref / t:7.2f}x {gtext}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dtype", default="bf16", choices=sorted(DTYPES))
    parser.add_argument("--tokens", type=int, nargs="+", default=[128])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--compile", action="store_true", help="also time torch.compile(mode='reduce-overhead')")
    parser.add_argument("--skip-model", action="store_true")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("this benchmark needs a CUDA GPU")
    props = torch.cuda.get_device_properties(0)
    print(f"machine: {props.name} ({props.multi_processor_count} SMs), host {cpu_name()}, torch {torch.__version__} "
          f"(CUDA {torch.version.cuda}), triton {triton.__version__}, Python {platform.python_version()}")
    layer_bench(args.tokens, DTYPES[args.dtype])
    if not args.skip_model:
        model_bench(DTYPES[args.dtype], args.batch, args.seq, args.compile)


if __name__ == "__main__":
    main()
