"""Session 7 device experiment (issue 13, H100 target): tile sizes of the grouped kernels, AdaptivFloat-8 rows vs
bf16 rows, each config timed for both (GPU time, CUDA-graph replay medians), outputs compared.

The hypothesis: at the shipped tile of 64 tokens, each tile decodes its 2 x 128 x 768 weights again, so the decode
is paid per 64 tokens; larger token tiles amortise it (and cut the L2 weight traffic of both kernels).

    python3 benchmarks/edgebert_runs/session7_af8_sweep.py [--tokens 16384]
"""
import argparse
import sys
from pathlib import Path

import torch
import triton

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench_fff_layer_gpu import adaptivfloat8_layer, graph_us  # noqa: E402

from modeling_ultrafastbert import fff_triton_kernel as tk  # noqa: E402

CONFIGS = [  # (bt, bk, bn, warps, stages, top_bt)
    (64, 64, 64, 4, 3, 64),  # shipped
    (128, 64, 64, 8, 3, 128),
    (128, 64, 128, 8, 3, 128),
    (256, 64, 64, 8, 2, 128),
    (256, 32, 64, 8, 3, 128),
]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", type=int, nargs="+", default=[16384])
    parser.add_argument("--configs", type=int, nargs="+", default=None, help="indices into CONFIGS (default: all)")
    args = parser.parse_args()
    torch.manual_seed(0)
    hidden, depth, dtype = 768, 11, torch.bfloat16
    (c1, e1, in_b, c2, e2), (d1, d2) = adaptivfloat8_layer(hidden, depth, dtype)
    shipped, shipped_decode = dict(tk.GROUPED_CONFIG), tk.AF8_DIRECT_BF16_DECODE
    chosen = CONFIGS if args.configs is None else [CONFIGS[i] for i in args.configs]

    def af8(x, direct):
        """Output and GPU time of the 8-bit kernel with the given decode."""
        tk.AF8_DIRECT_BF16_DECODE = direct
        y = tk.fff_forward_adaptivfloat8(x, c1, e1, in_b, c2, e2)
        return y, graph_us(lambda i: tk.fff_forward_adaptivfloat8(x, c1, e1, in_b, c2, e2))

    print(torch.cuda.get_device_name(), "triton", triton.__version__)
    for tokens in args.tokens:
        x = torch.randn(tokens, hidden, device="cuda", dtype=dtype)
        ref = None
        print(f"\n== {tokens} tokens: (bt, bk, bn, warps, stages, top_bt) | bf16 rows us | AF8 rows us, decode via "
              "fp32 | AF8 rows us, direct bf16 decode | AF8 (direct) faster by")
        for tile in chosen:
            tk.GROUPED_CONFIG.update(shipped)
            tk.GROUPED_CONFIG.update(zip(("bt", "bk", "bn", "warps", "stages", "top_bt"), tile))
            tk.clear_launch_cache()
            try:
                y16 = tk.fff_forward(x, d1, in_b, d2, strategy="grouped")
                t16 = graph_us(lambda i: tk.fff_forward(x, d1, in_b, d2, strategy="grouped"))
                y8_fp32, t8_fp32 = af8(x, direct=False)
                y8, t8 = af8(x, direct=True)
            except Exception as error:
                print(f"  {tile} failed: {type(error).__name__}: {str(error)[:160]}")
                continue
            ref = y16 if ref is None else ref
            check = "identical" if torch.equal(y8, y16) else "DIFFERENT"
            check += "" if torch.equal(y8_fp32, y16) else " (decode via fp32 DIFFERENT)"
            drift = ((y16.float() - ref.float()).norm() / ref.float().norm()).item()
            print(f"  {tile} | {t16:8.1f} | {t8_fp32:8.1f} | {t8:8.1f} | {t16 / t8:5.2f}x  {check}, "
                  f"bf16 vs shipped tile rel {drift:.1e}", flush=True)
    tk.GROUPED_CONFIG.update(shipped)
    tk.AF8_DIRECT_BF16_DECODE = shipped_decode
    tk.clear_launch_cache()


if __name__ == "__main__":
    main()
