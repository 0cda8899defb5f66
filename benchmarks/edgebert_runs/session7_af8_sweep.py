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
from modeling_ultrafastbert import fff_triton_kernel as tk  # noqa: E402
from modeling_ultrafastbert.adaptivfloat import adaptivfloat_dequantize, adaptivfloat_quantize  # noqa: E402

CONFIGS = [  # (bt, bk, bn, warps, stages, top_bt)
    (64, 64, 64, 4, 3, 64),  # shipped
    (128, 64, 64, 8, 3, 128),
    (128, 64, 128, 8, 3, 128),
    (256, 64, 64, 8, 2, 128),
    (256, 32, 64, 8, 3, 128),
]


def graph_us(fn):
    try:
        return 1000.0 * triton.testing.do_bench_cudagraph(fn, rep=150, return_mode="median")
    except Exception as error:
        print(f"  failed: {type(error).__name__}: {str(error)[:160]}")
        return float("nan")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", type=int, nargs="+", default=[16384])
    parser.add_argument("--configs", type=int, nargs="+", default=None, help="indices into CONFIGS (default: all)")
    args = parser.parse_args()
    torch.manual_seed(0)
    hidden, depth, dtype = 768, 11, torch.bfloat16
    nodes = 2 ** (depth + 1) - 1
    in_w = torch.randn(1, nodes, hidden, device="cuda") / hidden**0.5
    in_b = (torch.randn(1, nodes, device="cuda") * 0.1).to(dtype)
    out_w = torch.randn(1, nodes, hidden, device="cuda") / (depth + 1) ** 0.5
    c1, e1 = adaptivfloat_quantize(in_w)
    c2, e2 = adaptivfloat_quantize(out_w)
    d1, d2 = adaptivfloat_dequantize(c1, e1).to(dtype), adaptivfloat_dequantize(c2, e2).to(dtype)
    shipped = dict(tk.GROUPED_CONFIG)
    print(torch.cuda.get_device_name(), "triton", triton.__version__)
    for tokens in args.tokens:
        x = torch.randn(tokens, hidden, device="cuda", dtype=dtype)
        ref = None
        print(f"\n== {tokens} tokens: (bt, bk, bn, warps, stages, top_bt) | bf16 rows us | AF8 rows us, decode via fp32 | "
              "AF8 rows us, direct bf16 decode | AF8 (direct) faster by")
        chosen = CONFIGS if args.configs is None else [CONFIGS[i] for i in args.configs]
        for bt, bk, bn, warps, stages, top_bt in chosen:
            tk.GROUPED_CONFIG.update(shipped)
            tk.GROUPED_CONFIG.update(bt=bt, bk=bk, bn=bn, warps=warps, stages=stages, top_bt=top_bt)
            tk.clear_launch_cache()
            tk.AF8_DIRECT_BF16_DECODE = True
            try:
                y16 = tk.fff_forward(x, d1, in_b, d2, strategy="grouped")
                y8 = tk.fff_forward_adaptivfloat8(x, c1, e1, in_b, c2, e2)
            except Exception as error:
                print(f"  {(bt, bk, bn, warps, stages, top_bt)} failed: {type(error).__name__}: {str(error)[:160]}")
                continue
            ref = y16 if ref is None else ref
            check = "identical" if torch.equal(y8, y16) else "DIFFERENT"
            drift = ((y16.float() - ref.float()).norm() / ref.float().norm()).item()
            t16 = graph_us(lambda: tk.fff_forward(x, d1, in_b, d2, strategy="grouped"))
            t8 = graph_us(lambda: tk.fff_forward_adaptivfloat8(x, c1, e1, in_b, c2, e2))
            tk.AF8_DIRECT_BF16_DECODE = False
            y8_old = tk.fff_forward_adaptivfloat8(x, c1, e1, in_b, c2, e2)
            check += "" if torch.equal(y8_old, y16) else " (old decode DIFFERENT)"
            t8_old = graph_us(lambda: tk.fff_forward_adaptivfloat8(x, c1, e1, in_b, c2, e2))
            tk.AF8_DIRECT_BF16_DECODE = True
            print(f"  {(bt, bk, bn, warps, stages, top_bt)} | {t16:8.1f} | {t8_old:8.1f} | {t8:8.1f} | "
                  f"{t16 / t8:5.2f}x  {check}, bf16 vs shipped tile rel {drift:.1e}", flush=True)
    tk.AF8_DIRECT_BF16_DECODE = False
    tk.GROUPED_CONFIG.update(shipped)


if __name__ == "__main__":
    main()
