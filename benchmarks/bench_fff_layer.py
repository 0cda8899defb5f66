"""CPU benchmark of one FFF layer (hidden 768, one tree of depth 11 = 4095 neurons, 12 visited per token).

For tokens in {1, 128, 4096} and threads in {1, all}: torch dense FF-3072 and FF-4095 (Linear-GELU-Linear), our
masked path (fff_masked), our pure-PyTorch conditional walk (fff_conditional_torch), the native kernel called through
the layer (FastFeedForward, fff_kernel="native": what the model runs) and the bare op. Median microseconds and the
ratio to dense FF-3072, all from one run. For 1 token it also prints the split between the kernel itself and the
Python / dispatcher overhead around it. Correctness is checked before timing.

    python3 benchmarks/bench_fff_layer.py [--tokens 1 128 4096] [--dtype fp32|bf16] [--seconds 1.0]
"""

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from modeling_ultrafastbert import fff_cpu_kernel  # noqa: E402
from modeling_ultrafastbert.fast_feedforward import (  # noqa: E402
    FastFeedForward,
    fff_conditional_torch,
    fff_masked,
    fff_paths_torch,
)

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def machine() -> str:
    model = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    import os

    return f"{model}, {os.cpu_count()} logical cores, torch {torch.__version__}, Python {platform.python_version()}"


def sample_us(fn, seconds: float, min_calls: int = 5, warmup: int = 2, max_calls: int = 20000) -> list[float]:
    for _ in range(warmup):  # packing, allocator pools, caches
        fn()
    times = []
    deadline = time.perf_counter() + seconds
    while (time.perf_counter() < deadline or len(times) < min_calls) and len(times) < max_calls:
        start = time.perf_counter()
        fn()
        times.append(1e6 * (time.perf_counter() - start))
    return times


def median_us(fn, seconds: float) -> float:
    return statistics.median(sample_us(fn, seconds))


def require_native_kernel() -> None:
    """Print the machine and the native CPU kernel's state; exit if the kernel is not available."""
    ok, reason = fff_cpu_kernel.is_available()
    print(f"machine: {machine()}")
    print(f"native kernel: {reason}")
    if not ok:
        sys.exit(1)


def interleaved_medians(contenders: dict, seconds: float, rounds: int = 5) -> dict:
    """Median µs of each contender over samples taken in ``rounds`` interleaved slices, so that load from other
    processes on a shared machine hits every contender alike instead of skewing one of them."""
    samples = {name: [] for name in contenders}
    for r in range(rounds):
        for name, (fn, budget) in contenders.items():
            samples[name] += sample_us(fn, budget * seconds / rounds, min_calls=1, warmup=2 if r == 0 else 0)
    return {name: statistics.median(values) for name, values in samples.items()}


def dense_ff(intermediate: int, dtype) -> nn.Module:
    return nn.Sequential(nn.Linear(768, intermediate), nn.GELU(), nn.Linear(intermediate, 768)).eval().to(dtype)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, nargs="+", default=[1, 128, 4096])
    parser.add_argument("--dtype", choices=DTYPES, default="fp32")
    parser.add_argument("--seconds", type=float, default=1.0, help="time budget per contender and shape")
    args = parser.parse_args()
    dtype = DTYPES[args.dtype]
    all_threads = torch.get_num_threads()

    require_native_kernel()
    torch.manual_seed(0)
    layer = FastFeedForward(768, 11, 1, kernel="native").eval().to(dtype).requires_grad_(False)
    w1, b, w2 = layer.in_weight, layer.in_bias, layer.out_weight
    ff3072, ff4095 = dense_ff(3072, dtype), dense_ff(4095, dtype)
    op = torch.ops.ultrafastbert.fff_forward_cpu.default

    # correctness first: the native kernel against the pure-PyTorch walk and the masked path
    with torch.inference_mode():
        x = torch.randn(256, 768, dtype=dtype)
        _, logits = fff_paths_torch(x.float(), w1.float(), b.float())
        safe = logits.abs().amin(-1).amin(-1) > (1e-4 if dtype == torch.float32 else 3e-2)
        tol = dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=5e-2, atol=5e-2)
        torch.testing.assert_close(layer(x)[safe], fff_conditional_torch(x, w1, b, w2)[safe], **tol)
        torch.testing.assert_close(layer(x)[safe], fff_masked(x, w1, b, w2)[safe], **tol)
    print(f"check: native == pure-PyTorch conditional == masked on {int(safe.sum())}/256 tokens with clear decisions")
    print(f"dtype {args.dtype}; FFF: hidden 768, 1 tree, depth 11 (4095 neurons, 12 per token); medians in µs\n")

    header = f"{'tokens':>6} {'threads':>7} | " + " | ".join(
        f"{name:>17}" for name in ("dense FF-3072", "dense FF-4095", "masked FFF", "torch conditional",
                                   "native (layer)", "native (op)")
    )
    print(header)
    print("-" * len(header))
    for threads in sorted({1, all_threads}):
        torch.set_num_threads(threads)
        for tokens in args.tokens:
            x = torch.randn(tokens, 768, dtype=dtype)
            slow = 1.0 if tokens < 4096 else 0.5
            with torch.inference_mode():
                results = interleaved_medians(
                    {
                        "dense FF-3072": (lambda: ff3072(x), 1.0),
                        "dense FF-4095": (lambda: ff4095(x), slow),
                        "masked FFF": (lambda: fff_masked(x, w1, b, w2), slow),
                        "torch conditional": (lambda: fff_conditional_torch(x, w1, b, w2), 1.0),
                        "native (layer)": (lambda: layer(x), 1.0),
                        "native (op)": (lambda: op(x, w1, b, w2), 1.0),
                        "native (python fn)": (lambda: fff_cpu_kernel.fff_forward(x, w1, b, w2), 1.0),
                        "op with 0 tokens": (lambda: op(x[:0], w1, b, w2), 1.0),
                    },
                    args.seconds,
                )
            direct, noop = results.pop("native (python fn)"), results.pop("op with 0 tokens")
            base = results["dense FF-3072"]
            cells = " | ".join(f"{us:9.1f} {base / us:6.1f}x" for us in results.values())
            print(f"{tokens:>6} {threads:>7} | {cells}")
            if tokens == 1:
                layer_us, op_us = results["native (layer)"], results["native (op)"]
                print(
                    f"{'':>16}1-token split: layer {layer_us:.1f} = module+dispatch {layer_us - direct:.1f}"
                    f" + python checks {direct - op_us:.1f} + op {op_us:.1f}"
                    f" (of which op call with 0 tokens, i.e. dispatcher+allocation: {noop:.1f};"
                    f" kernel work ≈ {op_us - noop:.1f})"
                )
    torch.set_num_threads(all_threads)


if __name__ == "__main__":
    main()
