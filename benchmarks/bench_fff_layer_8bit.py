"""CPU benchmark of the FFF layer with AdaptivFloat-8 rows against our fp32 kernel, same layer, one run.

UltraFastBERT-1x11's FFF (hidden 768, one tree of depth 11): the fp32 native kernel on the decoded weights vs the
8-bit kernel reading uint8 rows (decoded in registers). Checks first that both agree, then medians (µs) from interleaved
slices, ratio = fp32 / 8-bit.

    python3 benchmarks/bench_fff_layer_8bit.py [--tokens 1 128 4096] [--threads 1 2] [--seconds 2]
"""

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_fff_layer import interleaved_medians, machine  # noqa: E402

from modeling_ultrafastbert import fff_cpu_kernel  # noqa: E402
from modeling_ultrafastbert.adaptivfloat import adaptivfloat_dequantize, adaptivfloat_quantize  # noqa: E402
from modeling_ultrafastbert.fast_feedforward import FastFeedForward  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, nargs="+", default=[1, 128, 4096])
    parser.add_argument("--threads", type=int, nargs="+", default=None)
    parser.add_argument("--seconds", type=float, default=2.0, help="time budget per contender and shape")
    args = parser.parse_args()
    ok, reason = fff_cpu_kernel.is_available()
    print(f"machine: {machine()}")
    print(f"native kernel: {reason}")
    if not ok:
        sys.exit(1)
    torch.manual_seed(0)
    layer = FastFeedForward(768, 11, 1).eval().requires_grad_(False)
    in_codes, in_exp = adaptivfloat_quantize(layer.in_weight)
    out_codes, out_exp = adaptivfloat_quantize(layer.out_weight)
    w1, w2, b = adaptivfloat_dequantize(in_codes, in_exp), adaptivfloat_dequantize(out_codes, out_exp), layer.in_bias
    with torch.inference_mode():
        x = torch.randn(256, 768)
        torch.testing.assert_close(fff_cpu_kernel.fff_forward_adaptivfloat8(x, in_codes, in_exp, b, out_codes, out_exp),
                                   fff_cpu_kernel.fff_forward(x, w1, b, w2), rtol=1e-6, atol=1e-6)
    print("check: 8-bit kernel == fp32 kernel on the decoded weights (256 tokens)")
    print(f"row bytes per node: fp32 {2 * 768 * 4}, AdaptivFloat-8 {2 * 768}; medians in µs\n")
    print(f"{'tokens':>6} {'threads':>7} | {'fp32 kernel':>11} | {'8-bit kernel':>12} | {'8-bit faster by':>15}")
    for threads in args.threads or sorted({1, torch.get_num_threads()}):
        torch.set_num_threads(threads)
        for tokens in args.tokens:
            x = torch.randn(tokens, 768)
            with torch.inference_mode():
                us = interleaved_medians({
                    "fp32": (lambda: fff_cpu_kernel.fff_forward(x, w1, b, w2), 1.0),
                    "af8": (lambda: fff_cpu_kernel.fff_forward_adaptivfloat8(x, in_codes, in_exp, b, out_codes,
                                                                             out_exp), 1.0),
                }, args.seconds)
            print(f"{tokens:>6} {threads:>7} | {us['fp32']:11.1f} | {us['af8']:12.1f} | {us['fp32'] / us['af8']:14.2f}x")


if __name__ == "__main__":
    main()
