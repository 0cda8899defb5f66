"""GPU benchmark of conditional FFF inference vs a dense cuBLAS feedforward (H100 / any CUDA GPU).

Layer level (hidden 768, one tree of depth 11 = 4095 neurons, 12 visited per token), tokens in {128, 4096, 16384,
65536}: dense FF-3072 (Linear-GELU-Linear, cuBLAS, same dtype), our masked path (fff_masked), the pure-PyTorch
conditional walk (fff_conditional_torch) and the Triton kernels (auto, plus each of the three strategies). Model level: the full
1x11 UltraFastBERT (16 layers) for sequence classification at 32x128 tokens vs transformers' BertForSequenceClassification
of the same shape with a 3072 FF (sdpa). Medians from triton.testing.do_bench (CUDA events), inputs rotated among 4
buffers so that repeated calls do not just hit L2. Correctness is checked before timing.

    python3 benchmarks/bench_fff_layer_gpu.py [--dtype bf16] [--tokens 128 4096 16384 65536] [--skip-model] [--sweep 4096]
"""

import argparse
import math
import platform
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import triton  # noqa: E402
from triton.testing import do_bench  # noqa: E402

from modeling_ultrafastbert import fff_triton_kernel as tk  # noqa: E402
from modeling_ultrafastbert.fast_feedforward import fff_conditional_torch, fff_masked, fff_paths_torch  # noqa: E402

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def median_us(fn, rotate):
    state = {"i": 0}

    def call():
        state["i"] = (state["i"] + 1) % rotate
        fn(state["i"])

    return 1000.0 * do_bench(call, warmup=50, rep=300, return_mode="median")


def graph_us(fn):
    """GPU time alone: the call captured in a CUDA graph and replayed (no host launch overhead; inputs L2-warm)."""
    try:
        return 1000.0 * triton.testing.do_bench_cudagraph(lambda: fn(0), rep=200, return_mode="median")
    except Exception as error:  # capture can fail (host syncs); report instead of hiding
        print(f"  (graph capture failed: {type(error).__name__}: {str(error)[:120]})")
        return float("nan")


def sweep(tokens_list, dtype, in_w, in_b, out_w, hidden=768):
    """Tuning knobs of the phased and grouped strategies (host-launched median / graph-replay us)."""
    grouped = [dict(), dict(split=2), dict(split=3), dict(top_bt=32), dict(top_bt=32, split=2), dict(warps=8),
               dict(bt=128, warps=8)]
    phased = [dict(levels_small=2, levels=2), dict(levels_small=3, levels=3), dict(levels_small=4, levels=4),
              dict(warps=2)]
    print("\n== tuning sweep: host-launched median / graph-replay us (changes from the defaults "
          f"phased {tk.PHASED_CONFIG}, grouped {tk.GROUPED_CONFIG})")
    for tokens in tokens_list:
        xs = [torch.randn(tokens, hidden, device="cuda", dtype=dtype) for _ in range(4)]
        line = []
        for strategy, table, configs in (("phased", tk.PHASED_CONFIG, phased), ("grouped", tk.GROUPED_CONFIG, grouped)):
            saved = dict(table)
            for change in configs:
                table.update(change)
                tk.clear_launch_cache()  # launch plans are cached per call signature; they must see the change
                fn = lambda i: tk.fff_forward(xs[i], in_w, in_b, out_w, strategy=strategy)  # noqa: E731
                try:
                    line.append(f"{strategy} {change or 'default'}: {median_us(fn, 4):.1f} / {graph_us(fn):.1f}")
                except Exception as error:  # e.g. out of shared memory for a large tile
                    line.append(f"{strategy} {change}: failed ({type(error).__name__})")
                table.clear()
                table.update(saved)
                tk.clear_launch_cache()
        print(f"tokens={tokens}:\n  " + "\n  ".join(line))


def layer_bench(tokens_list, dtype, sweep_tokens=(), hidden=768, depth=11, dense_width=3072, rotate=4):
    dev = "cuda"
    nodes = 2 ** (depth + 1) - 1
    in_w = (torch.randn(1, nodes, hidden, device=dev) / math.sqrt(hidden)).to(dtype)
    in_b = (torch.randn(1, nodes, device=dev) * 0.1).to(dtype)
    out_w = (torch.randn(1, nodes, hidden, device=dev) / math.sqrt(depth + 1)).to(dtype)
    dense = torch.nn.Sequential(
        torch.nn.Linear(hidden, dense_width), torch.nn.GELU(), torch.nn.Linear(dense_width, hidden)
    ).to(dev, dtype)
    rows = []
    for tokens in tokens_list:
        xs = [torch.randn(tokens, hidden, device=dev, dtype=dtype) for _ in range(rotate)]
        # correctness on this very input: kernel vs fp32 walk on the tokens whose decisions cannot flip
        with torch.no_grad():
            x = xs[0]
            ref = fff_conditional_torch(x.float(), in_w.float(), in_b.float(), out_w.float())
            _, logits = fff_paths_torch(x.float(), in_w.float(), in_b.float())
            keep = logits.abs().amin(dim=(1, 2)) > (1e-4 if dtype == torch.float32 else 0.02)
            errs = {}
            for strategy in ("walk", "phased", "grouped"):
                y = tk.fff_forward(x, in_w, in_b, out_w, strategy=strategy)
                errs[strategy] = ((y[keep].float() - ref[keep]).norm() / ref[keep].norm()).item()
        contenders = {
            "dense FF-3072 (cuBLAS)": lambda i: dense(xs[i]),
            "fff_masked": lambda i: fff_masked(xs[i], in_w, in_b, out_w),
            "fff_conditional_torch": lambda i: fff_conditional_torch(xs[i], in_w, in_b, out_w),
            "triton walk": lambda i: tk.fff_forward(xs[i], in_w, in_b, out_w, strategy="walk"),
            "triton phased": lambda i: tk.fff_forward(xs[i], in_w, in_b, out_w, strategy="phased"),
            "triton grouped": lambda i: tk.fff_forward(xs[i], in_w, in_b, out_w, strategy="grouped"),
            "triton auto (dispatch)": lambda i: tk.fff_forward(xs[i], in_w, in_b, out_w),
        }
        times = {}
        with torch.inference_mode():
            for name, fn in contenders.items():
                if name == "fff_masked" and tokens * nodes * 2 * 4 > 8 * 2**30:
                    times[name] = float("nan")
                    continue
                times[name] = median_us(fn, rotate)
        graph_times = {name: graph_us(contenders[name]) for name in
                       ("dense FF-3072 (cuBLAS)", "triton walk", "triton phased", "triton grouped",
                        "triton auto (dispatch)")}
        base = times["dense FF-3072 (cuBLAS)"]
        print(f"\n== tokens={tokens} dtype={dtype} (stable tokens {keep.float().mean().item():.3f}; rel. err vs fp32 "
              "walk: " + ", ".join(f"{k} {v:.2e}" for k, v in errs.items()) + ")")
        print(f"{'implementation':28s} {'median us':>11s} {'speedup vs dense':>17s}")
        for name, t in times.items():
            print(f"{name:28s} {t:11.1f} {base / t:16.2f}x")
            rows.append((tokens, name, t, base / t))
        gbase = graph_times["dense FF-3072 (cuBLAS)"]
        print("GPU time alone (CUDA-graph replay, L2-warm): " + ", ".join(
            f"{name} {t:.1f} us ({gbase / t:.2f}x)" for name, t in graph_times.items()))
        # floor: activations in + out once, weights once (bytes); visited-node FLOPs
        elem = torch.finfo(dtype).bits // 8
        floor_bytes = 2 * tokens * hidden * elem + (2 * nodes * hidden + nodes) * elem
        flops = tokens * (depth + 1) * hidden * 4
        dense_flops = tokens * hidden * dense_width * 4
        print(f"floor: {floor_bytes / 1e6:.1f} MB -> {floor_bytes / 3.0e12 * 1e6:.1f} us at 3.0 TB/s; "
              f"FFF {flops / 1e9:.2f} GFLOP (dense {dense_flops / 1e9:.1f} GFLOP, {dense_flops / base / 1e6:.0f} "
              f"TFLOP/s achieved)")
    if dtype != torch.float32 and sweep_tokens:
        sweep(sweep_tokens, dtype, in_w, in_b, out_w, hidden)
    return rows


def model_bench(dtype, batch=32, seq=128):
    from transformers import BertConfig, BertForSequenceClassification

    from modeling_ultrafastbert import UltraFastBertConfig, UltraFastBertForSequenceClassification

    dev = "cuda"
    config = UltraFastBertConfig()  # the full 1x11 model: 16 layers, hidden 768, 12 heads, vocab 32768
    fff = UltraFastBertForSequenceClassification(config).to(dev, dtype).eval()
    bert_config = BertConfig(
        vocab_size=config.vocab_size, hidden_size=768, num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=12, intermediate_size=3072, max_position_embeddings=512,
    )
    bert = BertForSequenceClassification._from_config(bert_config, attn_implementation="sdpa").to(dev, dtype).eval()
    inputs = [
        (torch.randint(1, config.vocab_size, (batch, seq), device=dev), torch.ones(batch, seq, dtype=torch.long, device=dev))
        for _ in range(4)
    ]

    def run_fff(i):
        return fff(input_ids=inputs[i][0], attention_mask=inputs[i][1]).logits

    def run_bert(i):
        return bert(input_ids=inputs[i][0], attention_mask=inputs[i][1]).logits

    times = {}
    with torch.inference_mode():
        times["BERT dense FF-3072 (sdpa)"] = median_us(run_bert, 4)
        for kernel in ("native", "torch"):
            fff.config.fff_kernel = kernel
            fff.config.fff_inference = "conditional"
            times[f"UltraFastBERT-1x11 conditional, fff_kernel={kernel}"] = median_us(run_fff, 4)
        fff.config.fff_inference = "dense"
        times["UltraFastBERT-1x11 fff_inference=dense (masked)"] = median_us(run_fff, 4)
        fff.config.fff_inference = "conditional"
        fff.config.fff_kernel = "native"
        # the same models replayed from CUDA graphs (inputs_embeds: no input-id validation sync) = GPU time alone
        embeds = [fff.get_input_embeddings()(ids) for ids, _ in inputs]
        bert_embeds = [bert.get_input_embeddings()(ids) for ids, _ in inputs]
        times["BERT dense FF-3072 (sdpa), CUDA graph"] = graph_us(
            lambda i: bert(inputs_embeds=bert_embeds[i], attention_mask=inputs[i][1]).logits)
        times["UltraFastBERT-1x11 native, CUDA graph"] = graph_us(
            lambda i: fff(inputs_embeds=embeds[i], attention_mask=inputs[i][1]).logits)
        # the batch has no padding: without a mask both models' sdpa may use the flash kernel
        times["BERT dense FF-3072 (sdpa), no mask, CUDA graph"] = graph_us(
            lambda i: bert(inputs_embeds=bert_embeds[i]).logits)
        times["UltraFastBERT-1x11 native, no mask, CUDA graph"] = graph_us(
            lambda i: fff(inputs_embeds=embeds[i]).logits)
    base = times["BERT dense FF-3072 (sdpa)"]
    print(f"\n== whole model, {batch}x{seq} tokens, {dtype} (UltraFastBERT input validation does one .max() host sync "
          "per call)")
    print(f"{'model':52s} {'median us':>11s} {'speedup vs BERT':>16s}")
    for name, t in times.items():
        ref = base
        if "CUDA graph" in name:
            ref = times["BERT dense FF-3072 (sdpa), " + ("no mask, " if "no mask" in name else "") + "CUDA graph"]
        print(f"{name:52s} {t:11.1f} {ref / t:15.2f}x")


def adaptivfloat8_layer(hidden, depth, dtype, device="cuda"):
    """Random FFF weights as AdaptivFloat-8 codes: ((in_codes, in_exponent_bias, in_bias, out_codes,
    out_exponent_bias), (decoded in weights, decoded out weights)), the bias and decoded weights in ``dtype``."""
    from modeling_ultrafastbert.adaptivfloat import adaptivfloat_dequantize, adaptivfloat_quantize

    nodes = 2 ** (depth + 1) - 1
    in_w = torch.randn(1, nodes, hidden, device=device) / hidden**0.5
    in_b = (torch.randn(1, nodes, device=device) * 0.1).to(dtype)
    out_w = torch.randn(1, nodes, hidden, device=device) / (depth + 1) ** 0.5
    c1, e1 = adaptivfloat_quantize(in_w)
    c2, e2 = adaptivfloat_quantize(out_w)
    decoded = adaptivfloat_dequantize(c1, e1).to(dtype), adaptivfloat_dequantize(c2, e2).to(dtype)
    return (c1, e1, in_b, c2, e2), decoded


def adaptivfloat8_bench(tokens_list, dtype, hidden=768, depth=11):
    """The grouped kernel reading AdaptivFloat-8 rows vs the same kernel on the decoded 16-bit weights (GPU time)."""
    (c1, e1, in_b, c2, e2), (d1, d2) = adaptivfloat8_layer(hidden, depth, dtype)
    print(f"\n== AdaptivFloat-8 rows vs {dtype} rows, grouped kernel, hidden {hidden}, depth {depth} "
          "(GPU time: CUDA-graph replay medians)")
    print(f"{'tokens':>7} {dtype!s:>16} {'AdaptivFloat-8':>15} {'8-bit faster by':>16}  check")
    for tokens in tokens_list:
        x = torch.randn(tokens, hidden, device="cuda", dtype=dtype)
        y16 = tk.fff_forward(x, d1, in_b, d2, strategy="grouped")
        y8 = tk.fff_forward_adaptivfloat8(x, c1, e1, in_b, c2, e2)
        same = torch.equal(y8, y16)
        t16 = graph_us(lambda i: tk.fff_forward(x, d1, in_b, d2, strategy="grouped"))
        t8 = graph_us(lambda i: tk.fff_forward_adaptivfloat8(x, c1, e1, in_b, c2, e2))
        print(f"{tokens:>7} {t16:14.1f}us {t8:13.1f}us {t16 / t8:15.2f}x  {'identical' if same else 'DIFFERENT'}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--dtype", default="bf16", choices=sorted(DTYPES))
    parser.add_argument("--tokens", type=int, nargs="+", default=[128, 4096, 16384, 65536])
    parser.add_argument("--skip-model", action="store_true")
    parser.add_argument("--skip-layer", action="store_true")
    parser.add_argument("--sweep", type=int, nargs="*", default=[], help="token counts for the tuning sweep")
    parser.add_argument("--adaptivfloat8", type=int, nargs="*", default=None,
                        help="token counts for the AdaptivFloat-8 vs 16-bit grouped-kernel comparison (e.g. 16384)")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("this benchmark needs a CUDA GPU")
    torch.manual_seed(0)
    props = torch.cuda.get_device_properties(0)
    print(f"GPU: {props.name}, {props.multi_processor_count} SMs | torch {torch.__version__} (CUDA {torch.version.cuda}) "
          f"| triton {triton.__version__} | python {platform.python_version()}")
    if args.adaptivfloat8 is not None:
        adaptivfloat8_bench(args.adaptivfloat8 or [4096, 16384, 65536], DTYPES[args.dtype])
    if not args.skip_layer:
        layer_bench(args.tokens, DTYPES[args.dtype], args.sweep)
    if not args.skip_model:
        model_bench(DTYPES[args.dtype])


if __name__ == "__main__":
    main()
