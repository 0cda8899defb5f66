# Copyright 2026 The UltraFastBERT-HF authors. Apache-2.0.
"""Sweep the early-exit entropy threshold of an UltraFastBERT classifier with off-ramps on SST-2 dev.

For every threshold (and "none": every example runs all layers) it measures, from one run:
  * dev accuracy and the mean exit layer (the model's own `exit_layers` output), and
  * CPU wall-clock over the whole dev set at batch 1 and at batch 32 (examples leave the batch as they exit),
    the median of `--repeats` passes; the thresholds are interleaved within each pass, and each pass starts at the
    next threshold, so that machine noise and drift hit them alike.
It writes `early_exit_sweep.json`, `early_exit_sweep.md` (a table) and `early_exit_sweep.png` (accuracy against
mean layers, latency on a second axis) into `--output-dir`.

    python examples/early_exit_sweep.py checkpoints/ultrafastbert-sst2-exit8 --output-dir /tmp/sweep
"""

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DEV = REPO_ROOT.parent / "shared" / "data" / "glue" / "SST-2" / "dev.tsv"


def read_sst2(path: Path, limit: int | None) -> tuple[list[str], list[int]]:
    if not path.is_file():
        raise SystemExit(f"error: SST-2 dev file not found: {path} (pass --dev)")
    sentences, labels = [], []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle):
            if number == 0 or not line.strip():
                continue  # header
            text, label = line.rstrip("\r\n").rsplit("\t", 1)
            sentences.append(text)
            labels.append(int(label))
    return (sentences[:limit], labels[:limit]) if limit else (sentences, labels)


def parse_thresholds(text: str) -> list[float | None]:
    values = []
    for part in text.split(","):
        part = part.strip().lower()
        value = None if part == "none" else float(part)
        if value is not None and value < 0:
            raise SystemExit(f"error: thresholds must be >= 0 or 'none', got {part}")
        values.append(value)
    return values


def batches(tokenizer, sentences: list[str], batch_size: int, max_length: int) -> list[dict]:
    """Tokenised once, up front: the timing is the model's, not the tokenizer's."""
    out = []
    for start in range(0, len(sentences), batch_size):
        out.append(tokenizer(sentences[start:start + batch_size], padding=True, truncation=True,
                             max_length=max_length, return_tensors="pt"))
    return out


def run_pass(model, encoded: list[dict]) -> tuple[float, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Seconds for the whole list of batches, plus predictions, exit layers and predicted exit layers (if any)."""
    predictions, exits, predicted = [], [], []
    start = time.perf_counter()
    with torch.inference_mode():
        for batch in encoded:
            output = model(**batch)
            predictions.append(output.logits.argmax(-1))
            if output.exit_layers is not None:
                exits.append(output.exit_layers)
            else:
                exits.append(torch.full((output.logits.shape[0],), model.config.num_hidden_layers))
            if output.predicted_exit_layers is not None:
                predicted.append(output.predicted_exit_layers)
    seconds = time.perf_counter() - start
    return seconds, torch.cat(predictions), torch.cat(exits), torch.cat(predicted) if predicted else None


def sweep(model, tokenizer, sentences, labels, thresholds, batch_sizes=(1, 32), repeats: int = 3,
          max_length: int = 128) -> list[dict]:
    labels_t = torch.tensor(labels)
    encoded = {b: batches(tokenizer, sentences, b, max_length) for b in batch_sizes}
    times = {(t, b): [] for t in thresholds for b in batch_sizes}
    seen = {}
    run_pass(model, encoded[batch_sizes[-1]][:2])  # warm-up (kernel load, allocator)
    for r in range(repeats):
        # each pass starts at another threshold: a drift within a pass (clock, cache, allocator) then hits every
        # threshold alike instead of always the last ones
        for threshold in thresholds[r % len(thresholds):] + thresholds[:r % len(thresholds)]:
            model.set_exit_threshold(threshold)
            for b in batch_sizes:
                seconds, predictions, exits, predicted = run_pass(model, encoded[b])
                times[(threshold, b)].append(seconds)
                previous = seen.setdefault(threshold, (predictions, exits, predicted))
                # per-example decisions must not depend on the batch (exit rule and padding are per example)
                if not (torch.equal(previous[0], predictions) and torch.equal(previous[1], exits)):
                    raise RuntimeError(f"threshold {threshold}: batch {b} gave other predictions or exits")
    rows = []
    for threshold in thresholds:
        predictions, exits, predicted = seen[threshold]
        layers = model.config.num_hidden_layers
        row = {"threshold": threshold, "accuracy": float((predictions == labels_t).float().mean()),
               "mean_exit_layer": float(exits.float().mean()),
               "exit_histogram": torch.bincount(exits, minlength=layers + 1)[1:].tolist()}
        if predicted is not None:  # the exit predictor is stored for this threshold: how good was it?
            row["predictor_within_one_layer"] = float(((predicted - exits).abs() <= 1).float().mean())
            # confusion[true - 1][predicted - 1]
            row["predictor_confusion"] = torch.bincount((exits - 1) * layers + (predicted - 1),
                                                        minlength=layers * layers).view(layers, layers).tolist()
        for b in batch_sizes:
            row[f"seconds_batch{b}"] = statistics.median(times[(threshold, b)])
        rows.append(row)
    full = next((r for r in rows if r["threshold"] is None), None)
    for row in rows:
        if full is not None:
            row["accuracy_drop_points"] = 100 * (full["accuracy"] - row["accuracy"])
            row["layers_saved"] = 1 - row["mean_exit_layer"] / full["mean_exit_layer"]
            for b in batch_sizes:
                row[f"time_saved_batch{b}"] = 1 - row[f"seconds_batch{b}"] / full[f"seconds_batch{b}"]
    return rows


def markdown_table(rows: list[dict], batch_sizes=(1, 32)) -> str:
    head = ["threshold", "dev accuracy", "points lost", "mean exit layer", "layers saved"]
    for b in batch_sizes:
        head += [f"s @ batch {b}", f"time saved @ {b}"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = ["none (all layers)" if r["threshold"] is None else f"{r['threshold']:.4g}", f"{r['accuracy']:.4f}",
                 f"{r.get('accuracy_drop_points', 0):.2f}", f"{r['mean_exit_layer']:.2f}",
                 f"{100 * r.get('layers_saved', 0):.1f}%"]
        for b in batch_sizes:
            cells += [f"{r[f'seconds_batch{b}']:.3f}", f"{100 * r.get(f'time_saved_batch{b}', 0):.1f}%"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path, title: str, examples: int, batch_sizes=(1, 32)) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot written", file=sys.stderr)
        return False
    ordered = sorted(rows, key=lambda r: r["mean_exit_layer"])
    layers = [r["mean_exit_layer"] for r in ordered]
    figure, left = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    left.plot(layers, [100 * r["accuracy"] for r in ordered], "o-", color="tab:blue", label="dev accuracy")
    left.set_xlabel("mean exit layer")
    left.set_ylabel("SST-2 dev accuracy (%)", color="tab:blue")
    right = left.twinx()
    for b, style in zip(batch_sizes, ("s--", "^:")):
        right.plot(layers, [1000 * r[f"seconds_batch{b}"] / examples for r in ordered], style,
                   color="tab:red" if b == batch_sizes[0] else "tab:orange", label=f"time per sentence, batch {b}")
    right.set_ylabel("CPU wall-clock per sentence (ms)", color="tab:red")
    handles = left.get_legend_handles_labels()[0] + right.get_legend_handles_labels()[0]
    names = left.get_legend_handles_labels()[1] + right.get_legend_handles_labels()[1]
    left.legend(handles, names, loc="lower right", fontsize=8)
    left.set_title(title, fontsize=9)
    figure.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    figure.savefig(tmp)
    plt.close(figure)
    os.replace(tmp, path)
    return True


def write_atomic(path: Path, text: str) -> None:
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.", delete=False,
                                     encoding="utf-8") as handle:
        handle.write(text)
    os.replace(handle.name, path)


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", help="a fine-tuned UltraFastBERT classifier with off-ramps (exit_ramps=True)")
    p.add_argument("--dev", default=str(DEFAULT_DEV), help="SST-2 dev.tsv")
    p.add_argument("--output-dir", required=True)
    p.add_argument("--thresholds", default="none,0.1,0.2,0.3,0.35,0.39,0.43,0.48,0.53,0.58,0.64",
                   help="comma-separated entropy thresholds; 'none' runs every layer")
    p.add_argument("--repeats", type=int, default=3, help="timed passes per threshold (the median is reported)")
    p.add_argument("--max-examples", type=int, default=None)
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--fff-kernel", choices=("auto", "torch", "native"), default=None)
    args = p.parse_args(argv)
    if args.repeats < 1:
        raise SystemExit("error: --repeats must be >= 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    sys.path.insert(0, str(REPO_ROOT))
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(args.checkpoint, trust_remote_code=True,
                                                               dtype=torch.float32).eval()
    if not getattr(model.config, "exit_ramps", False):
        raise SystemExit(f"error: {args.checkpoint} has no off-ramps (config.exit_ramps is false)")
    if args.fff_kernel:
        model.config.fff_kernel = args.fff_kernel
    tokenizer = AutoTokenizer.from_pretrained(args.checkpoint, trust_remote_code=True)
    sentences, labels = read_sst2(Path(args.dev), args.max_examples)
    thresholds = parse_thresholds(args.thresholds)
    shipped = model.config.early_exit_entropy
    # "none" (every layer: the baseline of every saving) first, then the thresholds with the checkpoint's own setting
    thresholds = [None] + sorted({t for t in thresholds + [shipped] if t is not None})
    rows = sweep(model, tokenizer, sentences, labels, thresholds, repeats=args.repeats,
                 max_length=min(128, model.config.max_position_embeddings))
    model.set_exit_threshold(shipped)

    machine = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    result = {"checkpoint": str(args.checkpoint), "examples": len(sentences), "repeats": args.repeats,
              "machine": machine, "shipped_threshold": shipped, "rows": rows}
    write_atomic(out / "early_exit_sweep.json", json.dumps(result, indent=1) + "\n")
    table = markdown_table(rows)
    write_atomic(out / "early_exit_sweep.md",
                 f"SST-2 dev ({len(sentences)} sentences), {args.checkpoint}, {machine}; median of {args.repeats} "
                 f"passes\n\n{table}")
    plot(rows, out / "early_exit_sweep.png", f"{Path(args.checkpoint).name}: early exit on SST-2 dev ({machine})",
         len(sentences))
    print(f"machine: {machine}")
    print(table)
    return rows


if __name__ == "__main__":
    main()
