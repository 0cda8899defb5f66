"""CPU benchmark of the FFF layer with AdaptivFloat-8 rows against our fp32 kernel, same layer, one run.

UltraFastBERT-1x11's FFF (hidden 768, one tree of depth 11): the fp32 native kernel on the decoded weights vs the
8-bit kernel reading uint8 rows (decoded in registers). Checks first that both agree, then medians (µs) from interleaved
slices, ratio = fp32 / 8-bit.

With --layers N (default 1) each timed call runs N distinct layers in turn, as a model's forward does, and the time
is per layer: with one layer the rows a call visits stay in the L2 cache for the next call (the 8-bit rows of 128 tokens,
~1.2 MB, fit; the fp32 rows, ~4.7 MB, do not), with 16 they come from L3 as in the 16-layer model.

    python3 benchmarks/bench_fff_layer_8bit.py [--tokens 1 128 4096] [--threads 1 2] [--seconds 2] [--layers 16]
"""

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_fff_layer import interleaved_medians, require_native_kernel  # noqa: E402

from modeling_ultrafastbert import fff_cpu_kernel  # noqa: E402
from modeling_ultrafastbert.adaptivfloat import adaptivfloat_dequantize, adaptivfloat_quantize  # noqa: E402
from modeling_ultrafastbert.fast_feedforward import FastFeedForward  # noqa: E402


def adaptivfloat8_layer() -> tuple:
    """UltraFastBERT-1x11's FFF (hidden 768, one tree of depth 11), random, with its weights in AdaptivFloat-8:
    (layer, in_codes, in_exponent_bias, out_codes, out_exponent_bias)."""
    layer = FastFeedForward(768, 11, 1).eval().requires_grad_(False)
    in_codes, in_exp = adaptivfloat_quantize(layer.in_weight)
    out_codes, out_exp = adaptivfloat_quantize(layer.out_weight)
    return layer, in_codes, in_exp, out_codes, out_exp


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, nargs="+", default=[1, 128, 4096])
    parser.add_argument("--threads", type=int, nargs="+", default=None)
    parser.add_argument("--seconds", type=float, default=2.0, help="time budget per contender and shape")
    parser.add_argument("--layers", type=int, default=1, help="distinct layers run in turn per timed call")
    args = parser.parse_args()
    require_native_kernel()
    if args.layers < 1:
        parser.error(f"--layers must be at least 1, got {args.layers}")
    torch.manual_seed(0)
    layers = []  # (in_codes, in_exponent_bias, in_bias, out_codes, out_exponent_bias, decoded w1, decoded w2)
    for _ in range(args.layers):
        layer, in_codes, in_exp, out_codes, out_exp = adaptivfloat8_layer()
        layers.append((in_codes, in_exp, layer.in_bias, out_codes, out_exp, adaptivfloat_dequantize(in_codes, in_exp),
                       adaptivfloat_dequantize(out_codes, out_exp)))
    with torch.inference_mode():
        x = torch.randn(256, 768)
        for in_codes, in_exp, b, out_codes, out_exp, w1, w2 in layers:
            torch.testing.assert_close(fff_cpu_kernel.fff_forward_adaptivfloat8(x, in_codes, in_exp, b, out_codes,
                                                                                out_exp),
                                       fff_cpu_kernel.fff_forward(x, w1, b, w2), rtol=1e-6, atol=1e-6)
    print(f"check: 8-bit kernel == fp32 kernel on the decoded weights (256 tokens, {args.layers} layer(s))")
    print(f"row bytes per node: fp32 {2 * 768 * 4}, AdaptivFloat-8 {2 * 768}; {args.layers} distinct layer(s) per "
          "call; medians in µs per layer\n")

    def fp32(x):
        for _, _, b, _, _, w1, w2 in layers:
            fff_cpu_kernel.fff_forward(x, w1, b, w2)

    def af8(x):
        for in_codes, in_exp, b, out_codes, out_exp, _, _ in layers:
            fff_cpu_kernel.fff_forward_adaptivfloat8(x, in_codes, in_exp, b, out_codes, out_exp)

    print(f"{'tokens':>6} {'threads':>7} | {'fp32 kernel':>11} | {'8-bit kernel':>12} | {'8-bit faster by':>15}")
    for threads in args.threads or sorted({1, torch.get_num_threads()}):
        torch.set_num_threads(threads)
        for tokens in args.tokens:
            x = torch.randn(tokens, 768)
            with torch.inference_mode():
                us = interleaved_medians({"fp32": (lambda: fp32(x), 1.0), "af8": (lambda: af8(x), 1.0)}, args.seconds)
                us = {name: value / args.layers for name, value in us.items()}
            print(f"{tokens:>6} {threads:>7} | {us['fp32']:11.1f} | {us['af8']:12.1f} | {us['fp32'] / us['af8']:14.2f}x")


if __name__ == "__main__":
    main()
