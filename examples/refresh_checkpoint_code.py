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
from safetensors.torch import load_file

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from transformers import AutoTokenizer  # noqa: E402

from modeling_ultrafastbert import UltraFastBertForSequenceClassification  # noqa: E402

KEEP = ("README.md", "eval_results.json", "pretrain_results.json", "dense_twin_eval_results.json",
        "dense_twin_pretrain_results.json")


def write_card(folder: Path, config, name: str) -> None:
    from model_cards.generate import write_model_card

    results = json.loads((folder / "eval_results.json").read_text())
    pretrain = json.loads((folder / "pretrain_results.json").read_text()) if (folder / "pretrain_results.json").exists() else {}
    twin_path = folder / "dense_twin_eval_results.json"
    twin = json.loads(twin_path.read_text()) if twin_path.exists() else None
    twin_pre_path = folder / "dense_twin_pretrain_results.json"
    twin_pre = json.loads(twin_pre_path.read_text()) if twin_pre_path.exists() else {}
    pre_args = pretrain.get("args", {})
    description = (
        "A small UltraFastBERT trained from scratch for this project as its embedded default: masked-language-model "
        f"pretraining with the crammedBERT recipe (`examples/pretrain_mlm.py`: no dropout, one-cycle triangular "
        f"learning rate peaking at {pre_args.get('lr', '?')} halfway, sequences of 128 packed tokens, 15% masking) "
        f"on the SST-2 train sentences only, for a {pre_args.get('budget_minutes', '?')}-minute budget on one "
        f"{pretrain.get('device', '?')} ({pretrain.get('global_steps', '?')} steps of {pre_args.get('batch_size', '?')} "
        f"sequences, bf16), then fine-tuned on SST-2 with `examples/run_glue.py` "
        f"({results['global_steps']} steps, batch {results['args']['batch_size']}, learning rate "
        f"{results['args']['lr']}, {results['train_seconds']} s). The WordPiece vocabulary ({config.vocab_size} "
        f"tokens) was trained on the same sentences. **SST-2 dev accuracy: {results['accuracy']:.4f}** "
        f"({results['eval_examples']} examples, fp32, conditional FFF path). "
        "`examples/train_default_checkpoint.sh` reproduces it."
    )
    if twin is not None:
        description += (
            f"\n\nDense-feedforward twin, trained with the same script, data, time budget and seeds "
            f"({twin_pre.get('global_steps', '?')} pretraining steps vs {pretrain.get('global_steps', '?')}; each feedforward is "
            f"a plain GELU layer of the same {config.fff_num_nodes * config.fff_trees} neurons and the same parameter "
            f"count, all of them used for every token; everything else identical): **SST-2 dev accuracy "
            f"{twin['accuracy']:.4f}** (MLM held-out loss {twin_pre.get('eval_mlm_loss_after', float('nan')):.3f} vs "
            f"{pretrain.get('eval_mlm_loss_after', float('nan')):.3f} for this FFF model). The FFF model uses "
            f"{(config.fff_depth + 1) * config.fff_trees} of its {config.fff_num_nodes * config.fff_trees} "
            "feedforward neurons per token."
        )
    path = write_model_card(
        folder, config, model_name=name, task="text-classification",
        metrics={"sst2": {"accuracy": round(results["accuracy"], 4)}},
        description=description, license="apache-2.0",
        training_note="pretrained for minutes on SST-2 sentences only (see below).",
        extra_limitations=[
            "A demonstration model: tiny (4 layers, hidden 256) and pretrained for minutes on SST-2 sentences "
            "only, so far below BERT-base; it is here to show the architecture and the conditional path end to end."
        ],
    )


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", help="checkpoint folder to rewrite")
    p.add_argument("--source", default=None, help="folder to take weights, tokenizer and results from (default: the checkpoint)")
    p.add_argument("--dense-twin", default=None, help="the dense twin's run_glue output folder (results go into the card)")
    p.add_argument("--card", action="store_true", help="regenerate README.md with model_cards.generate")
    p.add_argument("--name", default=None, help="model name in the card (default: the folder's name)")
    args = p.parse_args(argv)
    target = Path(args.checkpoint)
    source = Path(args.source) if args.source else target
    if not (source / "model.safetensors").is_file():
        raise SystemExit(f"error: {source} holds no model.safetensors")

    model = UltraFastBertForSequenceClassification.from_pretrained(source)
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

    before, after = load_file(source / "model.safetensors"), load_file(staging / "model.safetensors")
    if before.keys() != after.keys() or any(not torch.equal(before[k], after[k]) for k in before):
        shutil.rmtree(staging)
        raise SystemExit("error: the re-saved weights differ from the source; nothing was changed")
    if args.card:
        write_card(staging, model.config, args.name or target.name)
    if target.exists():
        shutil.rmtree(target)
    shutil.move(str(staging), str(target))
    print(f"rewrote {target}: {sorted(p.name for p in target.iterdir())}")


if __name__ == "__main__":
    main()
