# Copyright 2026 The UltraFastBERT-HF authors. Apache-2.0.
"""Fine-tune and evaluate UltraFastBERT on a GLUE task with `Trainer`, offline, from the GLUE release's TSV files.

    python examples/run_glue.py --task sst2 --model checkpoints/ultrafastbert-sst2-small \
        --data-dir ../shared/data/glue --output-dir /tmp/sst2 --epochs 1

``--model`` is any UltraFastBERT checkpoint folder or Hub id with a tokenizer: a pretrained MLM checkpoint (its
classification head is then freshly initialised) or an already fine-tuned one. ``--data-dir`` is the task's folder
(holding ``train.tsv`` and ``dev.tsv``) or the GLUE root that holds it (``SST-2``, ``CoLA``, ...). The dev metrics
are computed locally (accuracy; F1 for MRPC; Matthews correlation for CoLA; Pearson/Spearman for STS-B) and written
to ``OUTPUT_DIR/eval_results.json``; the fine-tuned model and tokenizer are saved to ``OUTPUT_DIR`` with the
remote-code files, so that they load with ``trust_remote_code=True``, together with a model card. ``--push-to-hub
REPO_ID`` uploads that folder.

Early exit (EdgeBERT / DeeBERT): ``--exit-ramps`` gives the classifier an off-ramp after every layer and trains it with
DeeBERT's two stages (``--exit-training two-stage``: backbone + final head for ``--epochs``, then the ramps alone for
``--ramp-epochs`` on the sum of the ramp losses, optionally distilled from the final head with
``--ramp-distill-weight``); ``joint`` trains everything at once on the summed losses, ``ramps`` only the ramps of an
already fine-tuned checkpoint. ``--exit-holdout`` training examples are kept out of training to fit the calibration
curve (threshold -> mean layers, accuracy) and the exit-layer predictor, which are stored in the config together with
the threshold chosen by ``--exit-max-accuracy-drop`` (default: 1 point on the held-out slice), ``--exit-mean-layers``
or ``--exit-entropy``. The dev set is not used for any of these choices; it reports the accuracy with and without exit.

    python examples/run_glue.py --task sst2 --model MLM_CHECKPOINT --data-dir ../shared/data/glue \
        --output-dir /tmp/sst2-exit --exit-ramps --epochs 2 --ramp-epochs 1

Distillation (EdgeBERT's recipe): ``--teacher FINE_TUNED_CHECKPOINT`` trains the student on
``alpha * T**2 * CE(softmax(teacher / T), log_softmax(student / T)) + (1 - alpha) * label loss`` with
``--distill-alpha`` (default 0.9, EdgeBERT's 0.9 soft / 0.1 hard) and ``--distill-temperature`` T (default 2). The
teacher (any size, FFF or dense, with or without off-ramps) runs in eval mode, without gradients and without early
exit, once over the training set before training, each sentence tokenized with the teacher's own tokenizer (so the
tokenizers may differ); it must be a classifier with the student's label set, otherwise the script stops with an error
(see `modeling_ultrafastbert/distillation.py`). With ``--exit-ramps`` the teacher guides the backbone stage of the
two-stage training only. A teacher too large to hold next to the student can be run once beforehand:
``--teacher CHECKPOINT --save-teacher-logits FILE.safetensors`` writes its logits for every training row and stops;
``--teacher FILE.safetensors`` then trains on them.
``--augment-copies N`` adds N perturbed copies of every training sentence (words masked or swapped for other
training words, n-gram cuts; Tang et al. 2019), labelled by the teacher. ``--distill-hidden-weight W`` adds TinyBERT's intermediate-layer loss (W times the MSE between each student layer's
standardised states and those of the teacher layer at the same relative depth); the teacher then runs live on the
student's batches, so it needs the student's hidden size. With another vocabulary it reads the student's tokens
translated to its own ids, and only the sentences that both tokenizers split alike enter that loss.

    python examples/run_glue.py --task sst2 --model FFF_MLM_CHECKPOINT --teacher DENSE_SST2_CHECKPOINT \
        --data-dir ../shared/data/glue --output-dir /tmp/sst2-distilled --epochs 2

Pruning (EdgeBERT; ``modeling_ultrafastbert.pruning``): ``--prune movement|soft-movement|magnitude`` prunes the
encoder's attention projections and FFF node rows to ``--sparsity`` along the cubic schedule (``--prune-warmup`` /
``--prune-cooldown`` steps or fractions), ``--embedding-sparsity`` prunes the word embeddings by magnitude (alone
with ``--prune none``). The masks are baked into the weights before evaluation and saving (``config.pruning``
records the sparsity per tensor); ``conversion/compact_pruned.py`` then stores the result compactly.

    python examples/run_glue.py --task sst2 --model MLM_CHECKPOINT --data-dir ../shared/data/glue \
        --output-dir /tmp/sst2-mvp80 --prune movement --sparsity 0.8 --embedding-sparsity 0.95
"""

import argparse
import json
import random
import math
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(REPO_ROOT))

import modeling_ultrafastbert  # noqa: E402,F401  (registers the Auto classes)
from modeling_ultrafastbert.adaptive_span import AdaptiveSpan, plot_span_heatmap, span_summary  # noqa: E402
from modeling_ultrafastbert.early_exit import (  # noqa: E402
    calibrate_exits,
    evaluate_exit_curve,
    exit_confusion,
    pick_exit_threshold,
    predict_exit_layers,
    simulate_exit_layers,
    softmax_entropy,
)
from modeling_ultrafastbert.distillation import (  # noqa: E402
    DistillationTrainer,
    check_teacher_compatible,
    same_tokenizer,
    teacher_logits,
)
from modeling_ultrafastbert.pruning import Pruner, PruningCallback  # noqa: E402
from transformers import (  # noqa: E402
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    Trainer,
    TrainingArguments,
    set_seed,
)


@dataclass(frozen=True)
class GlueTask:
    folder: str
    text_columns: tuple  # one or two column indices (negative = from the end)
    label_column: int
    labels: tuple | None  # label strings in id order; None = regression
    header: bool
    dev_file: str = "dev.tsv"
    metric: str = "accuracy"  # the metric reported first (the task's official one)


# Column layouts of the GLUE release (https://gluebenchmark.com/tasks), 0-based.
TASKS = {
    "cola": GlueTask("CoLA", (3,), 1, ("0", "1"), header=False, metric="matthews_correlation"),
    "sst2": GlueTask("SST-2", (0,), 1, ("0", "1"), header=True),
    "mrpc": GlueTask("MRPC", (3, 4), 0, ("0", "1"), header=True, metric="f1"),
    "stsb": GlueTask("STS-B", (7, 8), -1, None, header=True, metric="pearson"),
    "qnli": GlueTask("QNLI", (1, 2), -1, ("entailment", "not_entailment"), header=True),
    "rte": GlueTask("RTE", (1, 2), -1, ("entailment", "not_entailment"), header=True),
    "mnli": GlueTask("MNLI", (8, 9), -1, ("contradiction", "entailment", "neutral"), header=True,
                     dev_file="dev_matched.tsv"),
}


# readable names for the 0/1 label columns (the others' file values already are names)
LABEL_NAMES = {"cola": ("unacceptable", "acceptable"), "sst2": ("negative", "positive"),
               "mrpc": ("not_equivalent", "equivalent")}


class GlueDataError(ValueError):
    pass


def resolve_task_dir(data_dir: str | os.PathLike, task: GlueTask) -> Path:
    """The task folder itself, or the GLUE root holding it."""
    data_dir = Path(data_dir)
    for candidate in (data_dir, data_dir / task.folder):
        if (candidate / "train.tsv").is_file() or (candidate / task.dev_file).is_file():
            return candidate
    raise FileNotFoundError(
        f"no {task.folder} data found: neither {data_dir} nor {data_dir / task.folder} holds train.tsv / "
        f"{task.dev_file} (pass the task folder or the GLUE root as --data-dir)"
    )


def read_glue_tsv(path: Path, task: GlueTask, max_rows: int | None = None) -> dict:
    """Read one GLUE TSV into {"text_a", "text_b"?, "label"}; errors name the file and the line."""
    if not path.is_file():
        raise FileNotFoundError(f"GLUE file not found: {path}")
    needed = max(c if c >= 0 else -c - 1 for c in task.text_columns + (task.label_column,)) + 1
    columns = {"text_a": [], "label": []}
    if len(task.text_columns) == 2:
        columns["text_b"] = []
    with open(path, encoding="utf-8") as handle:
        for number, raw in enumerate(handle, 1):
            if number == 1 and task.header:
                continue
            line = raw.rstrip("\r\n")
            if not line.strip():
                continue
            # GLUE fields are tab-separated and unquoted (quotes are part of the text)
            fields = line.split("\t")
            if len(fields) < needed:
                raise GlueDataError(
                    f"{path}:{number}: malformed {task.folder} row: expected at least {needed} tab-separated "
                    f"columns, found {len(fields)}"
                )
            raw_label = fields[task.label_column].strip()
            if task.labels is None:
                try:
                    label = float(raw_label)
                except ValueError:
                    raise GlueDataError(f"{path}:{number}: malformed {task.folder} row: score {raw_label!r} is not a number") from None
                if not math.isfinite(label):
                    raise GlueDataError(f"{path}:{number}: malformed {task.folder} row: score {raw_label!r} is not finite")
            else:
                if raw_label not in task.labels:
                    raise GlueDataError(
                        f"{path}:{number}: malformed {task.folder} row: label {raw_label!r} is not one of {list(task.labels)}"
                    )
                label = task.labels.index(raw_label)
            columns["text_a"].append(fields[task.text_columns[0]])
            if "text_b" in columns:
                columns["text_b"].append(fields[task.text_columns[1]])
            columns["label"].append(label)
            if max_rows is not None and len(columns["label"]) >= max_rows:
                break
    if not columns["label"]:
        raise GlueDataError(f"{path}: no examples found")
    return columns


# --- metrics, computed locally -------------------------------------------------------------------------------------

def accuracy(pred, gold) -> float:
    return float(np.mean(np.asarray(pred) == np.asarray(gold)))


def f1_binary(pred, gold) -> float:
    pred, gold = np.asarray(pred), np.asarray(gold)
    tp = float(np.sum((pred == 1) & (gold == 1)))
    fp = float(np.sum((pred == 1) & (gold == 0)))
    fn = float(np.sum((pred == 0) & (gold == 1)))
    return 0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn)


def matthews_correlation(pred, gold) -> float:
    pred, gold = np.asarray(pred), np.asarray(gold)
    tp = float(np.sum((pred == 1) & (gold == 1)))
    tn = float(np.sum((pred == 0) & (gold == 0)))
    fp = float(np.sum((pred == 1) & (gold == 0)))
    fn = float(np.sum((pred == 0) & (gold == 1)))
    denominator = math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return 0.0 if denominator == 0 else (tp * tn - fp * fn) / denominator


def pearson(x, y) -> float:
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    x, y = x - x.mean(), y - y.mean()
    denominator = math.sqrt(float(np.sum(x * x)) * float(np.sum(y * y)))
    return 0.0 if denominator == 0 else float(np.sum(x * y)) / denominator


def _average_ranks(values) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values))
    sorted_values = values[order]
    start = 0
    while start < len(values):  # tied values share the mean of their ranks
        end = start
        while end + 1 < len(values) and sorted_values[end + 1] == sorted_values[start]:
            end += 1
        ranks[order[start:end + 1]] = (start + end) / 2.0 + 1.0
        start = end + 1
    return ranks


def spearman(x, y) -> float:
    return pearson(_average_ranks(x), _average_ranks(y))


def compute_task_metrics(task_name: str, predictions: np.ndarray, labels: np.ndarray) -> dict:
    if task_name == "stsb":
        scores = predictions.reshape(-1)
        p, s = pearson(scores, labels), spearman(scores, labels)
        return {"pearson": p, "spearmanr": s, "combined_score": (p + s) / 2}
    pred = predictions.argmax(-1)
    metrics = {"accuracy": accuracy(pred, labels)}
    if task_name == "mrpc":
        metrics["f1"] = f1_binary(pred, labels)
        metrics["combined_score"] = (metrics["accuracy"] + metrics["f1"]) / 2
    if task_name == "cola":
        metrics["matthews_correlation"] = matthews_correlation(pred, labels)
    return metrics


# --- data ------------------------------------------------------------------------------------------------------------

class EncodedDataset(torch.utils.data.Dataset):
    def __init__(self, encodings: dict, labels: list):
        self.encodings = encodings
        self.labels = labels

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        item = {key: values[index] for key, values in self.encodings.items()}
        item["labels"] = self.labels[index]
        return item


def encode(tokenizer, columns: dict, max_length: int) -> EncodedDataset:
    pair = (columns["text_a"], columns["text_b"]) if "text_b" in columns else (columns["text_a"],)
    encodings = tokenizer(*pair, truncation=True, max_length=max_length)
    # crammedBERT has no token types; UltraFastBERT ignores them, so don't carry them around
    encodings = {k: v for k, v in encodings.items() if k in ("input_ids", "attention_mask")}
    return EncodedDataset(encodings, columns["label"])


def translate_token_ids(tokenizer, teacher_tokenizer, train_set, train: dict, teacher_max_length: int,
                        student_vocab_size: int):
    """Map student token ids to the teacher's ids of the same token strings (unknown ones to the teacher's unk),
    and flag the training rows whose translated ids are exactly the teacher's own tokenization."""
    teacher_vocab = teacher_tokenizer.get_vocab()
    unknown = teacher_tokenizer.unk_token_id if teacher_tokenizer.unk_token_id is not None else 0
    student_vocab = tokenizer.get_vocab()
    id_map = torch.full((max(student_vocab_size, max(student_vocab.values()) + 1),), unknown, dtype=torch.long)
    for token, index in student_vocab.items():
        id_map[index] = teacher_vocab.get(token, unknown)
    own = encode(teacher_tokenizer, train, teacher_max_length).encodings["input_ids"]
    aligned = [int(id_map[torch.tensor(ids)].tolist() == theirs)
               for ids, theirs in zip(train_set.encodings["input_ids"], own)]
    return id_map, aligned


def augment_sentences(sentences: list, copies: int, seed: int, mask_token: str | None, mask_prob: float = 0.1,
                      replace_prob: float = 0.1, ngram_prob: float = 0.25) -> list:
    """``copies`` perturbed versions of every sentence (copy-major order), for the teacher to label (the transfer-set
    augmentation of Tang et al. 2019): each word is masked with probability ``mask_prob``, replaced by a word drawn
    from the sentences' own words (so by frequency) with probability ``replace_prob``, and with probability
    ``ngram_prob`` the result is cut to a random run of 1 to 5 words."""
    rng = random.Random(seed)
    pool = [word for sentence in sentences for word in sentence.split()]
    if not pool:
        return []
    augmented = []
    for _ in range(copies):
        for sentence in sentences:
            words = []
            for word in sentence.split():
                draw = rng.random()
                if draw < mask_prob:
                    words.append(word if mask_token is None else mask_token)  # no mask token: the word stays
                elif draw < mask_prob + replace_prob:
                    words.append(rng.choice(pool))
                else:
                    words.append(word)
            if len(words) > 1 and rng.random() < ngram_prob:
                length = rng.randint(1, min(5, len(words)))
                start = rng.randint(0, len(words) - length)
                words = words[start:start + length]
            augmented.append(" ".join(words))
    return augmented


# --- main ------------------------------------------------------------------------------------------------------------

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--task", required=True, choices=sorted(TASKS))
    p.add_argument("--model", required=True, help="UltraFastBERT checkpoint folder or Hub id (MLM or fine-tuned)")
    p.add_argument("--data-dir", required=True, help="the task folder, or the GLUE root holding it")
    p.add_argument("--output-dir", required=True)
    p.add_argument("--max-steps", type=int, default=None, help="optimizer steps (overrides --epochs)")
    p.add_argument("--epochs", type=float, default=3.0)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--eval-batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--warmup-ratio", type=float, default=0.1)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--dropout", type=float, default=0.1,
                   help="dropout during fine-tuning (pretraining used none); negative keeps the checkpoint's")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--max-train-samples", type=int, default=None)
    p.add_argument("--max-eval-samples", type=int, default=None)
    p.add_argument("--eval-only", action="store_true", help="only evaluate --model on the dev set")
    p.add_argument("--fff-kernel", choices=("auto", "torch", "native"), default=None,
                   help="conditional FFF implementation for evaluation (default: the checkpoint's)")
    p.add_argument("--fff-inference", choices=("conditional", "dense"), default=None,
                   help="eval-mode FFF computation (default: the checkpoint's)")
    p.add_argument("--tf32", action="store_true", help="allow TF32 matmuls while training on CUDA (eval stays fp32)")
    p.add_argument("--push-to-hub", metavar="REPO_ID", default=None, help="upload the saved checkpoint to this Hub repo")
    p.add_argument("--model-name", default=None, help="name in the model card (default: the output folder's name)")
    p.add_argument("--logging-steps", type=int, default=50)
    p.add_argument("--no-save", action="store_true", help="write eval_results.json only")
    exits = p.add_argument_group("early exit (EdgeBERT off-ramps)")
    exits.add_argument("--exit-ramps", action="store_true",
                       help="train off-ramps after every layer (implied when --model already has them)")
    exits.add_argument("--exit-training", choices=("two-stage", "joint", "ramps"), default="two-stage",
                       help="two-stage: backbone then ramps (DeeBERT); joint: all losses at once; ramps: ramps only")
    exits.add_argument("--ramp-epochs", type=float, default=1.0, help="epochs of the ramp stage")
    exits.add_argument("--ramp-lr", type=float, default=5e-4, help="learning rate of the ramp stage")
    exits.add_argument("--ramp-distill-weight", type=float, default=0.0,
                       help="weight of distillation from the final head in each ramp's loss (0: labels only)")
    exits.add_argument("--exit-holdout", type=int, default=2000,
                       help="training examples held out (never trained on) to calibrate the exits and the predictor")
    exits.add_argument("--exit-bins", type=int, default=16, help="entropy bins of the exit-layer predictor")
    choice = exits.add_mutually_exclusive_group()
    choice.add_argument("--exit-max-accuracy-drop", type=float, default=None,
                        help="pick the threshold with the fewest layers within this accuracy drop on the held-out "
                             "slice (default 0.01)")
    choice.add_argument("--exit-mean-layers", type=float, default=None,
                        help="pick the most accurate threshold running at most this many layers on average")
    choice.add_argument("--exit-entropy", type=float, default=None, help="use this entropy threshold")
    distill = p.add_argument_group("distillation from a fine-tuned teacher")
    distill.add_argument("--teacher", default=None,
                         help="fine-tuned classifier of the same task whose soft targets guide training, or a "
                              ".safetensors file of its training-set logits (--save-teacher-logits)")
    distill.add_argument("--save-teacher-logits", metavar="FILE", default=None,
                         help="with --teacher CHECKPOINT: write its logits for every training row to FILE "
                              "(.safetensors) and stop")
    distill.add_argument("--distill-alpha", type=float, default=0.9,
                         help="weight of the soft-target loss; the label loss gets 1 - alpha (EdgeBERT: 0.9)")
    distill.add_argument("--distill-temperature", type=float, default=2.0, help="softmax temperature T of the soft targets")
    distill.add_argument("--distill-hidden-weight", type=float, default=0.0,
                         help="weight of intermediate-layer distillation (TinyBERT): MSE between the standardised "
                              "states of each student layer and the teacher layer at the same relative depth; needs "
                              "--teacher CHECKPOINT with the same tokenizer and hidden size, which then runs live on "
                              "every training batch (0: off)")
    distill.add_argument("--augment-copies", type=int, default=0,
                         help="with --teacher CHECKPOINT: add this many perturbed copies of every training sentence "
                              "(words masked or swapped, n-gram cuts), labelled by the teacher (soft targets and its "
                              "argmax as the hard label); single-sentence tasks (0: none)")
    pruning = p.add_argument_group("pruning (movement / magnitude, EdgeBERT)")
    pruning.add_argument("--prune", choices=("none", "movement", "soft-movement", "magnitude"), default="none",
                         help="how to prune the encoder (attention projections, FFF node rows)")
    pruning.add_argument("--sparsity", type=float, default=0.5, help="final fraction of zeros per encoder tensor")
    pruning.add_argument("--embedding-sparsity", type=float, default=0.0,
                         help="final fraction of zeros of the word embeddings (magnitude pruning; 0: none)")
    pruning.add_argument("--embedding-per-row", action="store_true",
                         help="rank the embedding magnitudes within each token's row instead of the whole matrix")
    pruning.add_argument("--prune-warmup", type=float, default=0.1,
                         help="steps (>= 1) or fraction of the training steps before pruning starts")
    pruning.add_argument("--prune-cooldown", type=float, default=0.1,
                         help="steps (>= 1) or fraction of the training steps at the final sparsity")
    pruning.add_argument("--score-lr", type=float, default=1e-2, help="learning rate of the movement scores")
    pruning.add_argument("--soft-threshold", type=float, default=0.1,
                         help="soft movement: final threshold on sigmoid(scores)")
    pruning.add_argument("--soft-regularization", type=float, default=1.0,
                         help="soft movement: L1 coefficient on mean(sigmoid(scores)) per tensor")
    spans = p.add_argument_group("adaptive attention span (EdgeBERT: one learned span per head)")
    spans.add_argument("--adaptive-span", action="store_true",
                       help="learn a span per head; heads of span 0 are skipped at inference, the others banded")
    spans.add_argument("--span-ramp", type=float, default=16.0, help="ramp R of the soft mask, tokens")
    spans.add_argument("--span-penalty", type=float, default=0.01,
                       help="coefficient of the span penalty (coefficient * mean span in tokens) in the loss")
    spans.add_argument("--span-penalty-form", choices=("mean", "layer-rms"), default="mean",
                       help="mean: coefficient * mean span over all heads (EdgeBERT); layer-rms: coefficient * mean "
                            "over layers of the RMS of the layer's spans, which closes whole layers")
    spans.add_argument("--span-init", type=float, default=None,
                       help="initial span of every head, tokens (default: the maximum, i.e. plain attention)")
    spans.add_argument("--span-lr", type=float, default=2e-3,
                       help="learning rate of the span parameters (fractions of the maximum span), no weight decay")
    args = p.parse_args(argv)
    if not 0.0 <= args.distill_alpha <= 1.0:
        p.error("--distill-alpha must lie in [0, 1]")
    if not args.distill_temperature > 0:
        p.error("--distill-temperature must be > 0")
    if args.augment_copies < 0:
        p.error("--augment-copies must be >= 0")
    if args.augment_copies > 0 and (args.teacher is None or args.teacher.endswith(".safetensors")
                                    or args.save_teacher_logits is not None):
        p.error("--augment-copies needs --teacher CHECKPOINT (it labels the new sentences) and no --save-teacher-logits")
    if args.augment_copies > 0 and args.exit_ramps:
        p.error("--augment-copies with --exit-ramps is not supported (the exit calibration holds out training rows)")
    if not args.distill_hidden_weight >= 0:
        p.error("--distill-hidden-weight must be >= 0")
    if args.distill_hidden_weight > 0 and (args.teacher is None or args.teacher.endswith(".safetensors")
                                           or args.save_teacher_logits is not None):
        p.error("--distill-hidden-weight needs --teacher CHECKPOINT (a live teacher; its logits file has no hidden "
                "states) and no --save-teacher-logits")
    if args.save_teacher_logits is not None and (args.teacher is None or args.teacher.endswith(".safetensors")):
        p.error("--save-teacher-logits needs --teacher CHECKPOINT")
    if args.teacher is not None and args.eval_only:
        p.error("--teacher needs training (drop --eval-only)")
    if args.teacher is not None and args.exit_ramps and args.exit_training != "two-stage":
        p.error("--teacher with --exit-ramps needs --exit-training two-stage (the teacher guides the backbone stage)")
    if args.exit_entropy is not None and args.exit_entropy < 0:
        p.error("--exit-entropy must be >= 0")
    if not 0.0 <= args.ramp_distill_weight <= 1.0:
        p.error("--ramp-distill-weight must lie in [0, 1]")
    if args.max_length > 512 or args.max_length < 8:
        p.error("--max-length must lie in [8, 512]")
    return args


def write_card(folder: Path, model, args, metrics: dict, train_info: dict) -> None:
    name = args.model_name or Path(args.output_dir).name
    task = TASKS[args.task]
    description = (
        f"UltraFastBERT fine-tuned on GLUE {task.folder} with `examples/run_glue.py` from `{args.model}` "
        f"({train_info.get('train_examples')} training examples, {train_info.get('global_steps')} steps, "
        f"learning rate {args.lr}, batch {args.batch_size}, seed {args.seed}). The metrics are those of the dev set "
        f"({train_info.get('eval_examples')} examples), computed in fp32 with the conditional FFF path."
    )
    try:
        from model_cards.generate import write_model_card
    except ImportError as error:
        print(f"model_cards.generate is not available ({error}); writing a minimal model card", flush=True)
        lines = [f"# {name}", "", description, "", f"| {task.folder} dev metric | value |", "|---|---|"]
        lines += [f"| {k} | {v:.4f} |" for k, v in metrics.items() if isinstance(v, float)]
        (folder / "README.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
        return
    write_model_card(
        folder, model.config, model_name=name, task="text-classification",
        metrics={args.task: {k: round(v, 4) for k, v in metrics.items() if isinstance(v, float)}},
        description=description, license="apache-2.0", repo_id=args.push_to_hub,
    )


class SpanLearningRateTrainer(Trainer):
    """Trainer whose optimizer gives the adaptive-span parameters a learning rate of their own and no weight decay
    (they are fractions of the maximum span: the encoder's learning rate would move them a few tokens in a run)."""

    def __init__(self, *args, span_lr: float, **kwargs):
        super().__init__(*args, **kwargs)
        self.span_lr = span_lr

    def _span_parameters(self, model) -> list:
        return [module.span_fraction for module in model.modules()
                if isinstance(module, AdaptiveSpan) and module.span_fraction.requires_grad]

    def create_optimizer(self, model=None):
        fresh = self.optimizer is None
        optimizer = super().create_optimizer(model)
        spans = self._span_parameters(self.model if model is None else model)
        if fresh and spans:
            span_ids = {id(p) for p in spans}
            for group in optimizer.param_groups:
                group["params"] = [p for p in group["params"] if id(p) not in span_ids]
            optimizer.add_param_group({"params": spans, "lr": self.span_lr, "weight_decay": 0.0})
        return optimizer


class DistillingSpanTrainer(SpanLearningRateTrainer, DistillationTrainer):
    """Distillation (soft-target loss) and the spans' own learning rate together."""


def write_span_card_section(folder: Path, model, summary: dict) -> None:
    """Append the learned spans (table + heat map) to the model card."""
    config = model.config
    penalty = (f"penalty {config.adaptive_span_penalty} x mean span"
               if config.adaptive_span_penalty_form == "mean"
               else f"penalty {config.adaptive_span_penalty} x mean over layers of the RMS of the layer's spans")
    lines = ["", "## Adaptive attention span", "",
             f"Each head learned a span (EdgeBERT / Sukhbaatar et al.; ramp R = {config.adaptive_span_ramp} tokens, "
             f"{penalty}). At inference heads of span 0 are not computed "
             "and the others attend only to tokens closer than their span.", "",
             f"Mean span {summary['mean_span']:.1f} tokens ({100 * summary['mean_span_fraction_of_sequence']:.1f}% of "
             f"{summary['sequence_length']}); {summary['heads_at_span_0']} of "
             f"{sum(len(r) for r in summary['spans_per_layer'])} heads at span 0.", ""]
    heads = len(summary["spans_per_layer"][0])
    lines += ["| layer | " + " | ".join(f"head {h}" for h in range(heads)) + " |", "|---" * (heads + 1) + "|"]
    lines += [f"| {i + 1} | " + " | ".join(f"{span:.1f}" for span in row) + " |"
              for i, row in enumerate(summary["spans_per_layer"])]
    if plot_span_heatmap(model, folder / "adaptive_spans.png"):
        lines += ["", "![learned spans per layer and head](adaptive_spans.png)"]
    card = folder / "README.md"
    card.write_text(card.read_text(encoding="utf-8") + "\n".join(lines) + "\n", encoding="utf-8")


def push(folder: Path, repo_id: str) -> None:
    try:
        from conversion.push_to_hub import PushError, push_checkpoint
    except ImportError as error:
        raise SystemExit(
            f"--push-to-hub needs conversion/push_to_hub.py (push_checkpoint), which could not be imported: {error}. "
            f"The checkpoint is saved in {folder}; upload it with `hf upload {repo_id} {folder}`."
        ) from None
    try:
        url = push_checkpoint(str(folder), repo_id, commit_message=f"Upload {folder.name} (examples/run_glue.py)")
    except PushError as error:
        raise SystemExit(f"error: could not push {folder} to {repo_id}: {error}") from None
    print(f"pushed to {url}", flush=True)


# --- early exit -------------------------------------------------------------------------------------------------------

def split_holdout(dataset: EncodedDataset, count: int, seed: int) -> tuple[EncodedDataset, EncodedDataset]:
    """A seeded random slice of `count` training examples kept out of training (for the exit calibration)."""
    if not 0 < count < len(dataset):
        raise ValueError(f"--exit-holdout must lie in (0, {len(dataset)}) training examples, got {count}")
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed)).tolist()

    def subset(indices):
        encodings = {key: [values[i] for i in indices] for key, values in dataset.encodings.items()}
        return EncodedDataset(encodings, [dataset.labels[i] for i in indices])

    return subset(sorted(order[count:])), subset(sorted(order[:count]))


@torch.no_grad()
def collect_exit_logits(model, dataset, tokenizer, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every exit's logits (examples, layers, labels) from full-depth passes, and the labels."""
    saved = model.config.early_exit_entropy
    model.config.early_exit_entropy = None
    collator = DataCollatorWithPadding(tokenizer)
    device = next(model.parameters()).device
    logits, labels = [], []
    try:
        for start in range(0, len(dataset), batch_size):
            batch = collator([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))])
            labels.append(batch.pop("labels"))
            batch = {k: v.to(device) for k, v in batch.items()}
            logits.append(model(**batch, output_exit_logits=True).exit_logits.float().cpu())
    finally:
        model.config.early_exit_entropy = saved
    return torch.cat(logits), torch.cat(labels)


def calibrate_model_exits(model, holdout_set, tokenizer, args) -> dict:
    """Fit the calibration curve and the exit predictors on the held-out slice; install the chosen threshold."""
    layer_logits, labels = collect_exit_logits(model, holdout_set, tokenizer, args.eval_batch_size)
    model.config.exit_calibration = calibrate_exits(layer_logits, labels, num_bins=args.exit_bins)
    if args.exit_entropy is not None:
        model.set_exit_threshold(args.exit_entropy)
        return {"threshold": args.exit_entropy}
    if args.exit_mean_layers is not None:
        return model.set_exit_budget(mean_layers=args.exit_mean_layers)
    drop = 0.01 if args.exit_max_accuracy_drop is None else args.exit_max_accuracy_drop
    return model.set_exit_budget(max_accuracy_drop=drop)


def exit_report(model, dev_set, tokenizer, args) -> dict:
    """Dev-set view of the exits from one full-depth pass: accuracy at full depth, the held-out calibration curve
    applied to dev, and the confusion of the exit predictor at the configured threshold."""
    layer_logits, labels = collect_exit_logits(model, dev_set, tokenizer, args.eval_batch_size)
    config = model.config
    report = {"accuracy_full_depth": float((layer_logits[:, -1].argmax(-1) == labels).float().mean()),
              "exit_threshold": config.early_exit_entropy}
    if config.exit_calibration:
        report["dev_exit_curve"] = evaluate_exit_curve(layer_logits, labels, config.exit_calibration)
    if config.early_exit_entropy is not None:
        entropies = softmax_entropy(layer_logits)
        exits = simulate_exit_layers(entropies, config.early_exit_entropy)
        report["simulated_mean_exit_layer"] = float(exits.float().mean())
        if config.exit_predictor is not None:
            predicted = predict_exit_layers(config.exit_predictor, entropies[:, 0])
            report["predictor_within_one_layer"] = float(((predicted - exits).abs() <= 1).float().mean())
            report["predictor_exact"] = float((predicted == exits).float().mean())
            report["predictor_confusion"] = exit_confusion(exits, predicted, config.num_hidden_layers)
    return report


def save_teacher_logits(path: str, logits: torch.Tensor, task_name: str, teacher: str) -> None:
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    save_file({"teacher_logits": logits.float().contiguous()}, str(tmp),
              metadata={"task": task_name, "teacher": str(teacher), "rows": str(len(logits))})
    os.replace(tmp, path)


def load_teacher_logits(path: str, task_name: str, rows: int, num_labels: int) -> torch.Tensor:
    """Precomputed teacher logits for the first ``rows`` training rows, checked against the task and label count."""
    from safetensors import safe_open

    if not Path(path).is_file():
        raise SystemExit(f"error: --teacher {path}: no such file")
    with safe_open(path, framework="pt") as handle:
        metadata = handle.metadata() or {}
        if "teacher_logits" not in handle.keys():
            raise SystemExit(f"error: --teacher {path} holds no 'teacher_logits' tensor (write it with --save-teacher-logits)")
        logits = handle.get_tensor("teacher_logits").float()
    if metadata.get("task") != task_name:
        raise SystemExit(f"error: --teacher {path} holds logits for task {metadata.get('task')!r}, not {task_name!r}")
    if logits.dim() != 2 or logits.shape[1] != num_labels or logits.shape[0] < rows:
        raise SystemExit(f"error: --teacher {path}: logits of shape {tuple(logits.shape)} do not cover {rows} training "
                         f"rows of {num_labels} labels")
    return logits[:rows]


def main(argv=None) -> dict:
    args = parse_args(argv)
    task = TASKS[args.task]
    set_seed(args.seed)
    started = time.time()

    task_dir = resolve_task_dir(args.data_dir, task)
    dev = read_glue_tsv(task_dir / task.dev_file, task, args.max_eval_samples)
    train = None if args.eval_only else read_glue_tsv(task_dir / "train.tsv", task, args.max_train_samples)

    tokenizer = AutoTokenizer.from_pretrained(args.model, trust_remote_code=True)
    num_labels = 1 if task.labels is None else len(task.labels)
    overrides = {"num_labels": num_labels}
    if task.labels is not None:
        names = LABEL_NAMES.get(args.task, task.labels)
        overrides["id2label"] = {i: label for i, label in enumerate(names)}
        overrides["label2id"] = {label: i for i, label in enumerate(names)}
    overrides["problem_type"] = "regression" if task.labels is None else "single_label_classification"
    if args.exit_ramps:
        if task.labels is None:
            raise SystemExit("error: --exit-ramps needs a classification task (the exit rule is a softmax entropy)")
        overrides["exit_ramps"] = True
    if args.adaptive_span:
        overrides.update(adaptive_span=True, adaptive_span_ramp=args.span_ramp, adaptive_span_penalty=args.span_penalty,
                         adaptive_span_penalty_form=args.span_penalty_form.replace("-", "_"),
                         adaptive_span_init=args.span_init)
    if args.dropout >= 0 and not args.eval_only:
        for key in ("hidden_dropout_prob", "attention_probs_dropout_prob", "embedding_dropout_prob", "classifier_dropout"):
            overrides[key] = args.dropout
    # an MLM checkpoint gets a fresh pooler + classifier; a fine-tuned one with another label count is refused
    # by transformers unless the head is re-made, hence ignore_mismatched_sizes
    # fp32 master weights and fp32 evaluation, also from a checkpoint stored in bf16 (transformers 5 would keep
    # the stored dtype)
    model = AutoModelForSequenceClassification.from_pretrained(
        args.model, trust_remote_code=True, ignore_mismatched_sizes=True, dtype=torch.float32, **overrides
    )
    max_length = min(args.max_length, model.config.max_position_embeddings)
    teacher = None
    dev_set = encode(tokenizer, dev, max_length)
    original_rows = None if train is None else len(train["label"])
    if args.augment_copies > 0 and train is not None:
        if "text_b" in train:
            raise SystemExit(f"error: --augment-copies supports single-sentence tasks, and {args.task} has sentence pairs")
        if task.labels is None:
            raise SystemExit("error: --augment-copies needs a classification task (the teacher's argmax is the label)")
        extra = augment_sentences(train["text_a"], args.augment_copies, args.seed, tokenizer.mask_token)
        # placeholder labels: the teacher's argmax replaces them once it has run
        train = {"text_a": train["text_a"] + extra, "label": list(train["label"]) + [0] * len(extra)}
    train_set = None if train is None else encode(tokenizer, train, max_length)
    teacher_results = {}
    if args.teacher is not None:
        if task.labels is None:
            raise SystemExit("error: --teacher needs a classification task (soft targets are class distributions)")
        t0 = time.time()
        if args.teacher.endswith(".safetensors"):
            targets = load_teacher_logits(args.teacher, args.task, len(train_set), num_labels)
        else:
            teacher = AutoModelForSequenceClassification.from_pretrained(args.teacher, trust_remote_code=True,
                                                                         dtype=torch.float32)
            try:
                check_teacher_compatible(model, teacher)
            except ValueError as error:
                raise SystemExit(f"error: --teacher {args.teacher}: {error}") from None
            teacher_tokenizer = AutoTokenizer.from_pretrained(args.teacher, trust_remote_code=True)
        teacher_id_map = None
        if teacher is not None and args.distill_hidden_weight > 0:
            # hidden-state distillation: the live teacher reads the student's own batches on every step
            if teacher.config.hidden_size != model.config.hidden_size:
                raise SystemExit(f"error: --teacher {args.teacher}: hidden-state distillation needs the same "
                                 f"hidden_size (teacher {teacher.config.hidden_size}, student {model.config.hidden_size})")
            if not same_tokenizer(tokenizer, teacher_tokenizer, train["text_a"][:16]):
                teacher_id_map, aligned = translate_token_ids(tokenizer, teacher_tokenizer, train_set, train,
                                                              min(args.max_length, teacher.config.max_position_embeddings),
                                                              model.config.vocab_size)
                if not any(aligned):
                    raise SystemExit(f"error: --teacher {args.teacher}: its tokenizer splits no training sentence as "
                                     "the student's does, so no hidden states can be compared token by token")
                train_set.encodings["hidden_aligned"] = aligned
                teacher_results["hidden_aligned_fraction"] = sum(aligned) / len(aligned)
        if teacher is not None and args.distill_hidden_weight > 0 and args.augment_copies == 0 and teacher_id_map is None:
            targets = None  # the live teacher gives the soft targets on each batch
        elif teacher is not None:
            # the teacher reads each sentence in its own tokenization; its logits travel with the student's examples
            teacher_set = encode(teacher_tokenizer, train, min(args.max_length, teacher.config.max_position_embeddings))
            teacher.to("cuda" if torch.cuda.is_available() else "cpu")
            targets = teacher_logits(teacher, teacher_set, DataCollatorWithPadding(teacher_tokenizer),
                                     args.eval_batch_size)
            teacher.to("cpu")
            if args.save_teacher_logits is not None:
                save_teacher_logits(args.save_teacher_logits, targets, args.task, args.teacher)
                print(f"teacher logits for {len(targets)} training rows written to {args.save_teacher_logits}")
                return {"teacher_logits": args.save_teacher_logits, "rows": len(targets)}
        teacher_results["distill_hidden_weight"] = args.distill_hidden_weight
        if targets is not None:
            if len(targets) > original_rows:  # augmented rows: the teacher's answer is their label
                train_set.labels = list(train_set.labels[:original_rows]) + targets[original_rows:].argmax(-1).tolist()
            train_set.encodings["teacher_logits"] = targets.tolist()
            teacher_results.update({
                "teacher_train_accuracy": accuracy(targets[:original_rows].argmax(-1).numpy(),
                                                   train["label"][:original_rows]),
                "teacher_seconds": round(time.time() - t0, 1),
                **({"augmented_rows": len(targets) - original_rows} if len(targets) > original_rows else {}),
            })

    pruner = None
    if train_set is not None and (args.prune != "none" or args.embedding_sparsity > 0):
        if args.exit_ramps or hasattr(model, "exit_ramps"):
            raise SystemExit("error: --prune with off-ramps is not supported (prune first, then train the ramps)")
        as_steps = lambda value: int(value) if value >= 1 else value  # noqa: E731
        pruner = Pruner(
            model, method="movement" if args.prune == "none" else args.prune,
            sparsity=0.0 if args.prune == "none" else args.sparsity, embedding_sparsity=args.embedding_sparsity,
            warmup_steps=as_steps(args.prune_warmup), cooldown_steps=as_steps(args.prune_cooldown),
            soft_threshold=args.soft_threshold, regularization=args.soft_regularization,
            embedding_per_row=args.embedding_per_row,
        )

    output_dir = Path(args.output_dir)
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    work_dir = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}-", dir=output_dir.parent))
    on_cuda = torch.cuda.is_available()
    def make_trainer(dataset, epochs: float, lr: float, tag: str) -> Trainer:
        training_args = TrainingArguments(
            output_dir=str(work_dir / f"trainer-{tag}"),
            per_device_train_batch_size=args.batch_size,
            per_device_eval_batch_size=args.eval_batch_size,
            learning_rate=lr,
            weight_decay=args.weight_decay,
            warmup_steps=args.warmup_ratio,  # a float < 1 is a ratio of the total steps
            num_train_epochs=epochs,
            max_steps=args.max_steps if args.max_steps is not None else -1,
            lr_scheduler_type="linear",
            logging_steps=args.logging_steps,
            save_strategy="no",
            eval_strategy="no",
            report_to="none",
            seed=args.seed,
            disable_tqdm=False,
            dataloader_pin_memory=on_cuda,
        )
        distilling = args.teacher is not None and tag in ("train", "backbone")
        if not distilling and dataset is not None and "teacher_logits" in dataset.encodings:
            dataset = EncodedDataset({k: v for k, v in dataset.encodings.items() if k != "teacher_logits"},
                                     dataset.labels)
        extra = {}
        if pruner is not None:
            extra["callbacks"] = [PruningCallback(pruner)]
            # the scores get their own learning rate and no weight decay; Trainer adds its scheduler to this
            extra["optimizers"] = (torch.optim.AdamW(pruner.optimizer_grouped_parameters(
                args.weight_decay, args.score_lr), lr=lr), None)
        # spans get their own learning rate (SpanLearningRateTrainer); a teacher adds the soft-target loss
        return (DistillingSpanTrainer if distilling else SpanLearningRateTrainer)(
            span_lr=args.span_lr,
            model=model,
            args=training_args,
            **extra,
            train_dataset=dataset,
            eval_dataset=dev_set,
            data_collator=DataCollatorWithPadding(tokenizer),
            compute_metrics=compute_metrics,
            **({"alpha": args.distill_alpha, "temperature": args.distill_temperature} if distilling else {}),
            **({"teacher": teacher, "hidden_weight": args.distill_hidden_weight, "teacher_id_map": teacher_id_map}
               if distilling and args.distill_hidden_weight > 0 else {}),
        )

    def compute_metrics(prediction):
        logits = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
        metrics = compute_task_metrics(args.task, np.asarray(logits), np.asarray(prediction.label_ids))
        if model.config.early_exit_entropy is not None and isinstance(prediction.predictions, tuple):
            metrics["mean_exit_layer"] = float(np.mean(prediction.predictions[1]))  # the exit_layers output
        return metrics

    with_exits = hasattr(model, "exit_ramps")
    holdout_set = None
    if with_exits and train_set is not None:
        train_set, holdout_set = split_holdout(train_set, args.exit_holdout, args.seed)
    # (stage, epochs, learning rate): DeeBERT's two stages, or one
    if not with_exits:
        stages = [(None, args.epochs, args.lr)]
    elif args.exit_training == "two-stage":
        stages = [("backbone", args.epochs, args.lr), ("ramps", args.ramp_epochs, args.ramp_lr)]
    elif args.exit_training == "joint":
        stages = [("joint", args.epochs, args.lr)]
    else:
        stages = [("ramps", args.ramp_epochs, args.ramp_lr)]
    trainer = make_trainer(train_set, args.epochs, args.lr, "eval")
    train_seconds, global_steps, stage_seconds = 0.0, 0, {}
    if train_set is not None:
        if on_cuda and args.tf32:
            torch.backends.cuda.matmul.allow_tf32 = True
        for stage, epochs, lr in stages:
            if stage is not None:
                model.set_exit_training_stage(stage, ramp_distill_weight=args.ramp_distill_weight)
                print(f"== exit training stage {stage!r}: {epochs} epochs at learning rate {lr}", flush=True)
            trainer = make_trainer(train_set, epochs, lr, stage or "train")
            t0 = time.time()
            trainer.train()
            stage_seconds[stage or "train"] = round(time.time() - t0, 1)
            train_seconds += time.time() - t0
            global_steps += trainer.state.global_step
        if with_exits:
            model.set_exit_training_stage("joint")  # everything trainable again, as a loaded model is
    pruning_results = {}
    if pruner is not None:  # bake the masks in: what is evaluated and saved is an ordinary model
        record = pruner.finalize()
        pruning_results = {"pruning": {k: v for k, v in record.items() if k != "tensor_sparsity"}}
    # evaluate in full fp32 so that the number is what a CPU user gets from the saved weights
    torch.backends.cuda.matmul.allow_tf32 = False
    model.eval()
    # evaluation-only switches: the saved config keeps the checkpoint's own settings
    saved_switches = (model.config.fff_kernel, model.config.fff_inference)
    model.config.fff_kernel = args.fff_kernel or model.config.fff_kernel
    model.config.fff_inference = args.fff_inference or model.config.fff_inference
    eval_switches = (model.config.fff_kernel, model.config.fff_inference)
    exit_results = {}
    if with_exits:
        if holdout_set is not None:
            chosen = calibrate_model_exits(model, holdout_set, tokenizer, args)
            exit_results["exit_holdout_examples"] = len(holdout_set)
            exit_results["exit_holdout_point"] = {k: v for k, v in chosen.items() if k != "exit_predictor"}
            exit_results["exit_stage_seconds"] = stage_seconds
        elif args.exit_entropy is not None:
            model.set_exit_threshold(args.exit_entropy)
        exit_results.update(exit_report(model, dev_set, tokenizer, args))
    raw = trainer.evaluate()  # with the configured exit, if any: what the saved checkpoint does
    model.config.fff_kernel, model.config.fff_inference = saved_switches
    metrics = {k[len("eval_"):]: v for k, v in raw.items()
               if k.startswith("eval_") and k[len("eval_"):] in ("accuracy", "f1", "matthews_correlation", "pearson",
                                                                  "spearmanr", "combined_score", "loss",
                                                                  "mean_exit_layer")}
    results = {
        "task": args.task,
        **metrics,
        "main_metric": task.metric,
        "eval_examples": len(dev_set),
        "train_examples": 0 if train_set is None else len(train_set),
        "global_steps": global_steps if train_set is not None else 0,
        "train_seconds": round(train_seconds, 1),
        "total_seconds": round(time.time() - started, 1),
        "device": torch.cuda.get_device_name(0) if on_cuda else "cpu",
        "fff_kernel": eval_switches[0],
        "fff_inference": eval_switches[1],
        "model": str(args.model),
        "parameters": sum(parameter.numel() for parameter in model.parameters()),
        **({"teacher": str(args.teacher), "distill_alpha": args.distill_alpha,
            "distill_temperature": args.distill_temperature, **teacher_results} if args.teacher is not None else {}),
        **exit_results,
        **pruning_results,
        **({"adaptive_span": span_summary(model, max_length)} if model.config.adaptive_span else {}),
        "args": vars(args),
    }
    print(json.dumps({k: v for k, v in results.items() if k not in ("args", "dev_exit_curve")}, indent=1), flush=True)

    if trainer.is_world_process_zero():
        if args.eval_only or args.no_save:
            # only the results file; the folder (possibly the evaluated checkpoint itself) is left as it is
            output_dir.mkdir(parents=True, exist_ok=True)
            tmp = work_dir / "eval_results.json"
            tmp.write_text(json.dumps(results, indent=1) + "\n")
            shutil.move(str(tmp), str(output_dir / "eval_results.json"))
        else:
            staging = work_dir / "out"
            staging.mkdir()
            (staging / "eval_results.json").write_text(json.dumps(results, indent=1) + "\n")
            model.save_pretrained(staging)
            tokenizer.save_pretrained(staging)
            write_card(staging, model, args, {k: v for k, v in metrics.items() if k not in ("loss", "mean_exit_layer")}, results)
            if model.config.adaptive_span:
                write_span_card_section(staging, model, results["adaptive_span"])
            if output_dir.exists():
                shutil.rmtree(output_dir)
            shutil.move(str(staging), str(output_dir))
        shutil.rmtree(work_dir, ignore_errors=True)
        print(f"saved to {output_dir}", flush=True)
        if args.push_to_hub:
            if args.eval_only or args.no_save:
                raise SystemExit("--push-to-hub needs a saved checkpoint (drop --eval-only / --no-save)")
            push(output_dir, args.push_to_hub)
    return results


if __name__ == "__main__":
    try:
        main()
    except (FileNotFoundError, GlueDataError) as error:
        raise SystemExit(f"error: {error}") from None
    finally:
        # under torchrun / accelerate launch: shut the process group down before exit (left to the interpreter's
        # teardown, gloo's threads were seen to abort the process after its work was done)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
