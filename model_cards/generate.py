# Copyright 2026 The UltraFastBERT-HF authors. Apache-2.0.
"""Write the Hub model card (README.md) of an UltraFastBERT checkpoint from `template.md`.

    from model_cards.generate import write_model_card
    write_model_card(out_dir, model.config, model_name="ultrafastbert-1x11-sst2", task="text-classification",
                     metrics={"sst2": {"accuracy": 0.83}}, speed=[{"device": "CPU", "speedup": "30x"}])
"""

from __future__ import annotations

import os
from pathlib import Path

from huggingface_hub import EvalResult, ModelCardData

TEMPLATE = Path(__file__).with_name("template.md")

# the original UltraFastBERT release (code and weights) is MIT-licensed; converted weights keep that licence
DEFAULT_LICENSE = "mit"

PIPELINE_TAGS = {
    "fill-mask": "fill-mask",
    "masked-lm": "fill-mask",
    "text-classification": "text-classification",
    "sequence-classification": "text-classification",
    "token-classification": "token-classification",
    "question-answering": "question-answering",
    "feature-extraction": "feature-extraction",
}
AUTO_CLASS = {
    "fill-mask": "AutoModelForMaskedLM",
    "text-classification": "AutoModelForSequenceClassification",
    "token-classification": "AutoModelForTokenClassification",
    "question-answering": "AutoModelForQuestionAnswering",
    "feature-extraction": "AutoModel",
}
GLUE_TASKS = {"cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "mnli_matched", "mnli_mismatched", "qnli", "rte", "wnli", "ax"}
GLUE_NAMES = {"cola": "CoLA", "sst2": "SST-2", "mrpc": "MRPC", "qqp": "QQP", "stsb": "STS-B", "mnli": "MNLI",
              "mnli_matched": "MNLI-m", "mnli_mismatched": "MNLI-mm", "qnli": "QNLI", "rte": "RTE", "wnli": "WNLI"}


def _task_from_config(config) -> str:
    architectures = getattr(config, "architectures", None) or []
    for arch in architectures:
        for suffix, task in (("ForMaskedLM", "fill-mask"), ("ForSequenceClassification", "text-classification"),
                             ("ForTokenClassification", "token-classification"),
                             ("ForQuestionAnswering", "question-answering")):
            if arch.endswith(suffix):
                return task
    return "feature-extraction"


def _eval_results(metrics: dict, model_name: str, task: str) -> list[EvalResult]:
    results = []
    for dataset, values in metrics.items():
        if not isinstance(values, dict):
            raise ValueError(f"metrics[{dataset!r}] must be a dict of metric name -> value, got {values!r}")
        key = dataset.lower().replace("-", "")
        is_glue = key in GLUE_TASKS
        for metric, value in values.items():
            results.append(
                EvalResult(
                    task_type=task,
                    dataset_type="nyu-mll/glue" if is_glue else dataset,
                    dataset_name=f"GLUE {GLUE_NAMES.get(key, dataset)}" if is_glue else dataset,
                    dataset_config=key if is_glue else None,
                    dataset_split="validation",
                    metric_type=str(metric),
                    metric_value=float(value),
                )
            )
    return results


def _table(rows, title: str) -> str:
    """Rows: a list of dicts (one table row each, same keys) or a dict of label -> value."""
    if isinstance(rows, dict):
        rows = [{"": k, "value": v} for k, v in rows.items()]
    rows = list(rows)
    if not rows:
        return ""
    columns = list(dict.fromkeys(k for row in rows for k in row))
    lines = [f"## {title}", "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(str(row.get(c, "")) for c in columns) + " |")
    return "\n".join(lines) + "\n"


def render_model_card(
    config,
    *,
    model_name: str,
    base_model: str | None = None,
    task: str | None = None,
    metrics: dict | None = None,
    speed=None,
    datasets: list[str] | None = None,
    license: str = DEFAULT_LICENSE,
    repo_id: str | None = None,
    converted_from: str | None = None,
    description: str | None = None,
    extra_limitations: list[str] | None = None,
    tags: list[str] | None = None,
    training_note: str = "pretrained with the crammedBERT recipe (one GPU day), so it is below BERT-base on most tasks.",
) -> str:
    """Return the model card text (YAML front matter + markdown)."""
    task = task or _task_from_config(config)
    if task not in PIPELINE_TAGS:
        raise ValueError(f"unknown task {task!r}; expected one of {sorted(PIPELINE_TAGS)}")
    pipeline_tag = PIPELINE_TAGS[task]
    metrics = metrics or {}
    if datasets is None:
        datasets = ["nyu-mll/glue"] if any(k.lower().replace("-", "") in GLUE_TASKS for k in metrics) else []

    card_data = ModelCardData(
        license=license,
        language="en",
        library_name="transformers",
        pipeline_tag=pipeline_tag,
        tags=list(dict.fromkeys(["ultrafastbert", "fast-feedforward", "fff", "crammedbert", "conditional-computation"]
                                + list(tags or []))),
        datasets=datasets or None,
        base_model=base_model,
        model_name=model_name,
        eval_results=_eval_results(metrics, model_name, pipeline_tag) or None,
    )

    K, D = config.fff_trees, config.fff_depth
    per_tree = 2 ** (D + 1) - 1
    used = K * (D + 1)
    auto_class = AUTO_CLASS[pipeline_tag]
    load_id = repo_id or model_name
    usage = [f"from transformers import AutoTokenizer, {auto_class}", "",
             f'model = {auto_class}.from_pretrained("{load_id}", trust_remote_code=True).eval()']
    if pipeline_tag == "fill-mask":
        usage += [f'tokenizer = AutoTokenizer.from_pretrained("{load_id}")',
                  'inputs = tokenizer("The capital of France is [MASK].", return_tensors="pt")',
                  "logits = model(**inputs).logits"]
    elif pipeline_tag == "text-classification":
        usage += [f'tokenizer = AutoTokenizer.from_pretrained("{load_id}")',
                  'inputs = tokenizer("a gripping, beautifully made film", return_tensors="pt")',
                  "predicted = model.config.id2label[int(model(**inputs).logits.argmax(-1))]"]
    else:
        usage += [f'tokenizer = AutoTokenizer.from_pretrained("{load_id}")',
                  'outputs = model(**tokenizer("Hello world", return_tensors="pt"))']

    classifier_rows = ""
    limitations = list(extra_limitations or [])
    if pipeline_tag == "text-classification":
        pooling = getattr(config, "classifier_pooling", "avg")
        includes_padding = getattr(config, "classifier_pool_includes_padding", False)
        pool_text = ("first token" if pooling == "cls" else
                     "mean over all positions, padding included (as the original release)" if includes_padding
                     else "mean over real (non-padding) tokens")
        classifier_rows = (f"| classifier pooling | {pool_text} |\n"
                           f"| labels | {', '.join(str(v) for v in config.id2label.values())} |\n")
        if pooling == "avg":
            limitations.append(
                "The original release's pooler averaged over all positions including padding, so its predictions "
                "depended on the padded length. This checkpoint "
                + ("keeps that behaviour (`classifier_pool_includes_padding=True`) to reproduce the original "
                   "outputs exactly." if includes_padding else
                   "averages over real tokens only (`classifier_pool_includes_padding=False`); set it to `True` to "
                   "reproduce the original outputs on padded batches.")
            )

    summary = description or (
        f"An UltraFastBERT-{K}x{D} model for `{pipeline_tag}`"
        + (f", based on [{base_model}](https://huggingface.co/{base_model})" if base_model else "") + "."
    )
    origin = ""
    if converted_from:
        origin = (f"\nThe weights were converted from the original crammedBERT-format checkpoint `{converted_from}` "
                  "(P. Belcak and R. Wattenhofer) with `conversion/convert_original_checkpoint.py`; the conversion "
                  "checks the converted model against forward passes before writing.\n")

    metrics_section = ""
    if metrics:
        rows = [{"task": GLUE_NAMES.get(ds.lower().replace("-", ""), ds), "metric": m, "value": v}
                for ds, values in metrics.items() for m, v in values.items()]
        metrics_section = "\n" + _table(rows, "Evaluation results (validation)")
    speed_section = ""
    if speed:
        speed_section = "\n" + _table(speed, "Speed")

    template = TEMPLATE.read_text()
    return template.format(
        front_matter=card_data.to_yaml().strip(),
        model_name=model_name,
        summary=summary,
        origin=origin,
        usage="\n".join(usage),
        num_hidden_layers=config.num_hidden_layers,
        hidden_size=config.hidden_size,
        num_attention_heads=config.num_attention_heads,
        vocab_size=config.vocab_size,
        max_position_embeddings=config.max_position_embeddings,
        position_embedding_type=config.position_embedding_type,
        fff_trees=K,
        fff_depth=D,
        neurons_per_tree=per_tree,
        neurons_per_layer=K * per_tree,
        neurons_used=used,
        fraction_used=f"{100.0 * used / (K * per_tree):.2g}%",
        classifier_rows=classifier_rows,
        metrics_section=metrics_section,
        speed_section=speed_section,
        training_note=training_note,
        extra_limitations="".join(f"- {item}\n" for item in limitations),
    )


def write_model_card(out_dir_or_path: str | os.PathLike, config, *, model_name: str, **kwargs) -> Path:
    """Write README.md into a folder (or to the given .md path) and return its path. See `render_model_card`."""
    path = Path(out_dir_or_path)
    if path.suffix.lower() != ".md":
        path = path / "README.md"
    text = render_model_card(config, model_name=model_name, **kwargs)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path
