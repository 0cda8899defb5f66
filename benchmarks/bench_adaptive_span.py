# Copyright 2026 The UltraFastBERT-HF authors. Apache-2.0.
"""Adaptive attention span (EdgeBERT): the attention block of each layer with its learned spans (heads of span 0
skipped, the others banded) against full attention of the same layer (same weights, the default sdpa path), side by
side in one run; then the whole model with spans on against the same model with spans off.

    PYTHONPATH=$PWD python3 benchmarks/bench_adaptive_span.py --model CHECKPOINT_WITH_SPANS [--device cuda]
    PYTHONPATH=$PWD python3 benchmarks/bench_adaptive_span.py --model ANY_CHECKPOINT --spans-from eval_results.json

(`--spans-from`: the spans that `examples/run_glue.py --adaptive-span` learned and reported, set on any checkpoint of
the same shape; timing does not depend on the weights' values.)

CPU: fp32, wall-clock medians. CUDA: bf16, medians of CUDA-event times of single host-launched calls.
"""

import argparse
import copy
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from modeling_ultrafastbert import UltraFastBertModel  # noqa: E402
from modeling_ultrafastbert.adaptive_span import span_summary  # noqa: E402


def machine(device: str) -> str:
    if device == "cuda":
        return f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}"
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"


def median_time(fn, device: str, repeats: int, warmup: int = 10) -> float:
    """Median seconds of one call."""
    with torch.no_grad():
        for _ in range(warmup):
            fn()
        times = []
        if device == "cuda":
            torch.cuda.synchronize()
            for _ in range(repeats):
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                end.record()
                end.synchronize()
                times.append(start.elapsed_time(end) / 1e3)
        else:
            for _ in range(repeats):
                t0 = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t0)
    return statistics.median(times)


def interleaved_medians(contender, baseline, device: str, repeats: int, rounds: int = 5) -> tuple[float, float]:
    """Median seconds of one call of each, measured in alternating rounds (a drift of the machine's speed during the
    run then hits both sides alike)."""
    per_round = max(1, repeats // rounds)
    samples = ([], [])
    for _ in range(rounds):
        for fn, into in ((contender, samples[0]), (baseline, samples[1])):
            into.append(median_time(fn, device, per_round, warmup=3))
    return statistics.median(samples[0]), statistics.median(samples[1])


def without_spans(model: UltraFastBertModel) -> UltraFastBertModel:
    """The same weights with plain (full) attention."""
    plain = copy.deepcopy(model)
    for layer in plain.layers:
        del layer.attention.adaptive_span
    plain.config.adaptive_span = False
    return plain


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a checkpoint trained with adaptive_span=True")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--shapes", default="1x128,32x128", help="batch x tokens, comma-separated")
    parser.add_argument("--repeats", type=int, default=100)
    parser.add_argument("--no-model", action="store_true", help="only the attention blocks")
    parser.add_argument("--json", default=None, help="also write the results here")
    parser.add_argument("--spans-from", default=None,
                        help="eval_results.json of run_glue --adaptive-span (or its printed JSON): use these spans")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda but CUDA is not available")

    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    spans_source = None
    if args.spans_from:
        spans_source = json.loads(Path(args.spans_from).read_text())["adaptive_span"]
        model = UltraFastBertModel.from_pretrained(
            args.model, dtype=torch.float32, adaptive_span=True, adaptive_span_ramp=spans_source.get("ramp", 16.0))
        ramp = model.config.adaptive_span_ramp
        with torch.no_grad():
            for layer, spans in zip(model.layers, spans_source["spans_per_layer"]):
                span = layer.attention.adaptive_span  # span s = max(z + R, 0): z = s - R (a span of 0: z = -R)
                span.span_fraction.copy_((torch.tensor(spans) - ramp) / span.max_positions)
    else:
        model = UltraFastBertModel.from_pretrained(args.model, dtype=torch.float32)
    if not model.config.adaptive_span:
        raise SystemExit(f"error: {args.model} has no adaptive spans (config.adaptive_span is False)")
    model = model.to(args.device, dtype).eval()
    plain = without_spans(model)
    summary = span_summary(model, model.config.max_position_embeddings)
    print(f"machine: {machine(args.device)}; dtype {dtype}")
    print(f"spans per layer: {summary['spans_per_layer']}; mean {summary['mean_span']} tokens; "
          f"{summary['heads_at_span_0']} heads at 0")
    results = {"machine": machine(args.device), "dtype": str(dtype), "spans": summary, "attention": [], "model": []}
    generator = torch.Generator().manual_seed(0)
    for shape in args.shapes.split(","):
        batch, tokens = (int(v) for v in shape.split("x"))
        hidden = torch.randn(batch, tokens, model.config.hidden_size, generator=generator).to(args.device, dtype)
        print(f"\n== attention block (qkv projection, attention, output projection), {batch}x{tokens} tokens")
        print(f"{'layer':>5} {'heads on':>8} {'max span':>8} {'spans (us)':>11} {'full (us)':>10} {'ratio':>7}")
        ratios, total_contender, total_baseline = [], 0.0, 0.0
        for index, (layer, plain_layer) in enumerate(zip(model.layers, plain.layers)):
            contender, baseline = interleaved_medians(lambda: layer.attention(hidden, None),
                                                      lambda: plain_layer.attention(hidden, None), args.device,
                                                      args.repeats)
            total_contender, total_baseline = total_contender + contender, total_baseline + baseline
            spans = summary["spans_per_layer"][index]
            ratio = baseline / contender
            ratios.append(ratio)
            print(f"{index + 1:>5} {sum(s > 0 for s in spans):>8} {max(spans):>8.1f} {contender * 1e6:>11.1f} "
                  f"{baseline * 1e6:>10.1f} {ratio:>6.2f}x")
            results["attention"].append({"shape": shape, "layer": index + 1, "contender_s": contender,
                                         "baseline_s": baseline, "ratio": ratio})
        print(f"median ratio over layers: {statistics.median(ratios):.2f}x; all layers' blocks together: "
              f"{total_contender * 1e6:.1f} us vs {total_baseline * 1e6:.1f} us, {total_baseline / total_contender:.2f}x")
        results["attention_total"] = results.get("attention_total", []) + [
            {"shape": shape, "contender_s": total_contender, "baseline_s": total_baseline}]
        if args.no_model:
            continue
        ids = torch.randint(1, model.config.vocab_size, (batch, tokens), generator=generator).to(args.device)
        contender, baseline = interleaved_medians(lambda: model(ids), lambda: plain(ids), args.device,
                                                  max(10, args.repeats // 5))
        print(f"whole model {batch}x{tokens}: spans on {contender * 1e3:.2f} ms, spans off {baseline * 1e3:.2f} ms, "
              f"ratio {baseline / contender:.2f}x")
        results["model"].append({"shape": shape, "contender_s": contender, "baseline_s": baseline,
                                 "ratio": baseline / contender})
    if args.json:
        tmp = Path(args.json).with_suffix(".tmp")
        tmp.write_text(json.dumps(results, indent=1) + "\n")
        os.replace(tmp, args.json)
    return results


if __name__ == "__main__":
    main()
