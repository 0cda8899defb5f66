# Copyright 2026 The UltraFastBERT-HF authors. Apache-2.0.
"""Re-save a fine-tuned UltraFastBERT checkpoint with the package's current remote-code files (and model card).

``save_pretrained`` copies the modelling files as they are at save time; after the package changes, run

    python examples/refresh_checkpoint_code.py checkpoints/ultrafastbert-sst2-small

to rewrite the folder's .py files and config from the current package. The weights are loaded and saved unchanged
(checked tensor by tensor); the tokenizer and the result files are kept. ``--source DIR`` takes the weights from
another folder (e.g. a fresh `run_glue.py` output), ``--dense-twin DIR`` adds that twin's results to the card.
"""

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

REPO_ROOT = Path(__file__).resolve().parents[1]
for path in (REPO_ROOT, REPO_ROOT / "examples"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from transformers import AutoTokenizer  # noqa: E402

from conversion.checkpoint_files import move_into_place  # noqa: E402
from modeling_ultrafastbert import UltraFastBertForSequenceClassification  # noqa: E402

KEEP = ("README.md", "eval_results.json", "pretrain_results.json", "dense_twin_eval_results.json",
        "dense_twin_pretrain_results.json", "early_exit_sweep.json", "early_exit_sweep.png")


def write_card(folder: Path, config, name: str) -> None:
    from model_cards.generate import write_model_card

    results = json.loads((folder / "eval_results.json").read_text())
    pretrain = json.loads((folder / "pretrain_results.json").read_text()) if (folder / "pretrain_results.json").exists() else {}
    twin_path = folder / "dense_twin_eval_results.json"
    twin = json.loads(twin_path.read_text()) if twin_path.exists() else None
    twin_pre_path = folder / "dense_twin_pretrain_results.json"
    twin_pre = json.loads(twin_pre_path.read_text()) if twin_pre_path.exists() else {}
    pre_args = pretrain.get("args", {})
    with_exits = getattr(config, "exit_ramps", False) and "accuracy_full_depth" in results
    # with off-ramps, eval_results' accuracy is the training run's exit threshold's; the card leads with all layers
    accuracy = results["accuracy_full_depth"] if with_exits else results["accuracy"]
    role = "deeper early-exit demo" if with_exits else "embedded default"
    reproduce = (
        "`SIZE=\"--hidden-size 256 --layers 8 --heads 4 --fff-depth 8 --fff-trees 1 --vocab-size 8192\" "
        "BUDGET_MINUTES=3.5 GLUE_EXTRA=\"--exit-ramps --exit-training two-stage --ramp-epochs 1\" bash "
        "examples/train_default_checkpoint.sh` reproduces it (then `examples/refresh_checkpoint_code.py "
        "--exit-entropy` sets the threshold)." if with_exits else
        "`examples/train_default_checkpoint.sh` reproduces it."
    )
    description = (
        f"A small UltraFastBERT trained from scratch for this project as its {role}: masked-language-model "
        f"pretraining with the crammedBERT recipe (`examples/pretrain_mlm.py`: no dropout, one-cycle triangular "
        f"learning rate peaking at {pre_args.get('lr', '?')} halfway, sequences of 128 packed tokens, 15% masking) "
        f"on the SST-2 train sentences only, for a {pre_args.get('budget_minutes', '?')}-minute budget on one "
        f"{pretrain.get('device', '?')} ({pretrain.get('global_steps', '?')} steps of {pre_args.get('batch_size', '?')} "
        f"sequences, bf16), then fine-tuned on SST-2 with `examples/run_glue.py` "
        f"({results['global_steps']} steps, batch {results['args']['batch_size']}, learning rate "
        f"{results['args']['lr']}, {results['train_seconds']} s). The WordPiece vocabulary ({config.vocab_size} "
        f"tokens) was trained on the same sentences. **SST-2 dev accuracy{' (all layers)' if with_exits else ''}: "
        f"{accuracy:.4f}** ({results['eval_examples']} examples, fp32, conditional FFF path). " + reproduce
    )
    if twin is not None:
        description += (
            f"\n\nDense-feedforward twin, trained with the same script, data, time budget and seeds "
            f"({twin_pre.get('global_steps', '?')} pretraining steps vs {pretrain.get('global_steps', '?')}; each feedforward is "
            f"a plain GELU layer of the same {config.fff_num_nodes * config.fff_trees} neurons and the same parameter "
            f"count, all of them used for every token; everything else identical): **SST-2 dev accuracy "
            f"{twin.get('accuracy_full_depth', twin['accuracy']):.4f}** (MLM held-out loss {twin_pre.get('eval_mlm_loss_after', float('nan')):.3f} vs "
            f"{pretrain.get('eval_mlm_loss_after', float('nan')):.3f} for this FFF model). The FFF model uses "
            f"{(config.fff_depth + 1) * config.fff_trees} of its {config.fff_num_nodes * config.fff_trees} "
            "feedforward neurons per token."
        )
    metrics = {"sst2": {"accuracy": round(results["accuracy"], 4)}}
    sweep_path = folder / "early_exit_sweep.json"
    if getattr(config, "exit_ramps", False) and sweep_path.exists():
        sweep = json.loads(sweep_path.read_text())
        shipped = next(r for r in sweep["rows"] if r["threshold"] == config.early_exit_entropy)
        full = next(r for r in sweep["rows"] if r["threshold"] is None)
        metrics = {"sst2": {"accuracy": round(shipped["accuracy"], 4)}}
        description += "\n\n" + exit_section(config, results, sweep, shipped, full)
    path = write_model_card(
        folder, config, model_name=name, task="text-classification", metrics=metrics,
        description=description, license="apache-2.0",
        training_note="pretrained for minutes on SST-2 sentences only (see below).",
        extra_limitations=[
            f"A demonstration model: tiny ({config.num_hidden_layers} layers, hidden {config.hidden_size}) and "
            "pretrained for minutes on SST-2 sentences only, so far below BERT-base; it is here to show the "
            "architecture and the conditional path end to end."
        ],
    )
    return path


def exit_section(config, results: dict, sweep: dict, shipped: dict, full: dict) -> str:
    """The early-exit part of the card: how the ramps were trained, the shipped threshold and the measured sweep."""
    from early_exit_sweep import markdown_table

    args = results.get("args", {})
    lines = [
        "## Early exit (EdgeBERT / DeeBERT off-ramps)",
        "",
        f"Every layer but the last has an off-ramp (LayerNorm, pooler, classifier). Training followed DeeBERT's two "
        f"stages (`run_glue.py --exit-ramps --exit-training {args.get('exit_training', 'two-stage')}`): "
        f"{args.get('epochs', '?')} epochs of backbone + final head, then {args.get('ramp_epochs', '?')} epoch of the "
        f"ramps alone on the frozen backbone. {results.get('exit_holdout_examples', '?')} training sentences were held "
        "out to fit the calibration curve (`config.exit_calibration`) and the exit-layer predictor.",
        "",
        f"At inference an example leaves at the first layer whose ramp's softmax entropy is below "
        f"`config.early_exit_entropy` = **{config.early_exit_entropy:.4g}** nats (set it to `None` to run every layer, "
        "or pick another point with `model.set_exit_budget(mean_layers=...)` / `max_accuracy_drop=...`). The "
        "shipped value is the most aggressive point of the held-out curve that lost at most 0.1 point there (chosen "
        "after seeing the dev sweep below, between it and the next more careful point, 0.3899); the held-out slice "
        "comes from the training distribution and is easier than dev, so dev loses more.",
        "",
        f"On SST-2 dev: **{100 * shipped['accuracy']:.2f}%** accuracy at a mean exit layer of "
        f"**{shipped['mean_exit_layer']:.2f} of {config.num_hidden_layers}** "
        f"({100 * shipped['layers_saved']:.0f}% of the layers skipped), against {100 * full['accuracy']:.2f}% when "
        f"every sentence runs all layers. CPU wall-clock over the dev set "
        f"({sweep['machine']}, median of {sweep['repeats']} passes): {100 * shipped['time_saved_batch1']:.0f}% less "
        f"at batch 1 and {100 * shipped['time_saved_batch32']:.0f}% less at batch 32. The exit-layer predictor "
        f"(after layer 1, from the first ramp's entropy) is within one layer of the true exit for "
        f"{100 * shipped.get('predictor_within_one_layer', float('nan')):.1f}% of dev sentences at this threshold "
        "(rows: true exit layer 1..L, columns: predicted):",
        "",
        "| true \\ predicted | " + " | ".join(str(i + 1) for i in range(config.num_hidden_layers)) + " |",
        "|" + "---|" * (config.num_hidden_layers + 1),
        *[f"| {i + 1} | " + " | ".join(str(v) for v in row) + " |"
          for i, row in enumerate(shipped.get("predictor_confusion", []))],
        "",
        "The sweep (`python examples/early_exit_sweep.py <this folder> --output-dir OUT`):",
        "",
        markdown_table(sweep["rows"]),
        "![accuracy and latency against the mean exit layer](early_exit_sweep.png)",
    ]
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", help="checkpoint folder to rewrite")
    p.add_argument("--source", default=None, help="folder to take weights, tokenizer and results from (default: the checkpoint)")
    p.add_argument("--dense-twin", default=None, help="the dense twin's run_glue output folder (results go into the card)")
    p.add_argument("--card", action="store_true", help="regenerate README.md with model_cards.generate")
    p.add_argument("--name", default=None, help="model name in the card (default: the folder's name)")
    p.add_argument("--exit-entropy", default=None,
                   help="set this early-exit entropy threshold ('none': run every layer) before saving")
    args = p.parse_args(argv)
    target = Path(args.checkpoint)
    source = Path(args.source) if args.source else target
    if not (source / "model.safetensors").is_file():
        raise SystemExit(f"error: {source} holds no model.safetensors")

    # weights stored in bf16 (the deeper demo checkpoint, to stay small) are written back in bf16; the config keeps
    # float32, so a user computes in fp32 unless they ask otherwise
    stored = {t.dtype for t in load_file(source / "model.safetensors").values() if t.is_floating_point()}
    model = UltraFastBertForSequenceClassification.from_pretrained(source, dtype=torch.float32)
    if args.exit_entropy is not None:
        model.set_exit_threshold(None if args.exit_entropy.lower() == "none" else float(args.exit_entropy))
    tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    for name in KEEP:
        if (source / name).exists():
            shutil.copy2(source / name, staging / name)
    if args.dense_twin:
        twin = Path(args.dense_twin)
        shutil.copy2(twin / "eval_results.json", staging / "dense_twin_eval_results.json")
        if (twin / "pretrain_results.json").exists():
            shutil.copy2(twin / "pretrain_results.json", staging / "dense_twin_pretrain_results.json")

    if stored == {torch.bfloat16}:
        weights = {k: v.to(torch.bfloat16) if v.is_floating_point() else v
                   for k, v in load_file(staging / "model.safetensors").items()}
        save_file(weights, staging / "model.safetensors", metadata={"format": "pt"})
    before, after = load_file(source / "model.safetensors"), load_file(staging / "model.safetensors")
    if before.keys() != after.keys() or any(not torch.equal(before[k], after[k]) for k in before):
        shutil.rmtree(staging)
        raise SystemExit("error: the re-saved weights differ from the source; nothing was changed")
    if args.card:
        try:
            write_card(staging, model.config, args.name or target.name)
        except BaseException:
            shutil.rmtree(staging)  # leave no half-written folder behind
            raise
    move_into_place(staging, target)
    print(f"rewrote {target}: {sorted(p.name for p in target.iterdir())}")


if __name__ == "__main__":
    main()
