# Copyright 2026 The UltraFastBERT-HF authors. Apache-2.0.
"""Masked-language-model pretraining of UltraFastBERT with the crammedBERT recipe, as a plain `Trainer` script.

Recipe (Geiping & Goldstein, "Cramming", 2022, as used for UltraFastBERT): no dropout during pretraining, a one-cycle
triangular learning rate (linear warm-up to the peak, then linear decay to zero), sequences of 128 tokens packed from
the corpus, 15% of tokens masked (80/10/10 replacement), AdamW with betas (0.9, 0.98) and gradient clipping. A
WordPiece vocabulary is trained on the same text with `tokenizers` and saved as a BERT tokenizer.

The schedule runs either over a step count (``--max-steps``) or, as in crammedBERT, over a wall-clock budget
(``--budget-minutes``: the learning rate follows the fraction of the budget spent, and training stops when it is
spent).

Examples::

    # tiny, CPU, a few seconds
    python examples/pretrain_mlm.py --output-dir /tmp/mlm --hidden-size 64 --layers 2 --heads 2 --fff-depth 3 \
        --vocab-size 2000 --max-steps 50 --max-lines 2000
    # the dense-feedforward twin of the same size (same neurons and parameters, every neuron used)
    python examples/pretrain_mlm.py --output-dir /tmp/mlm-dense --dense-ff-twin ...
    # distilled from a pretrained masked-LM teacher (its tokenizer; soft targets at the masked positions, TinyBERT's
    # hidden-state loss), started from its weights (a dense twin's neurons become the nodes of the tree)
    python examples/pretrain_mlm.py --output-dir /tmp/mlm-kd --teacher /tmp/mlm-dense --init-from-teacher \
        --distill-hidden-weight 1 --max-steps 1750 --lr 5e-4 --peak-at 0.1 ...
    # several GPUs: the same command under `accelerate launch` (DDP), or plain python (Trainer's DataParallel);
    # --batch-size is per device, so halve it on two GPUs to keep the global batch
    accelerate launch --multi_gpu --num_processes 2 examples/pretrain_mlm.py --output-dir /tmp/mlm --max-steps 20000

The text defaults to the SST-2 train sentences in ``../shared/data/glue/SST-2/train.tsv`` (one per line after the
header); pass ``--train-files`` for raw text files (one document or sentence per line).
"""

import argparse
import copy
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.optim.lr_scheduler import LambdaLR

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(REPO_ROOT))

from transformers import (  # noqa: E402
    AutoModelForMaskedLM,
    AutoTokenizer,
    BertTokenizerFast,
    DataCollatorForLanguageModeling,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    set_seed,
)

from modeling_ultrafastbert import UltraFastBertConfig, UltraFastBertForMaskedLM  # noqa: E402
from modeling_ultrafastbert.distillation import (  # noqa: E402
    DistillationTrainer,
    check_teacher_compatible,
    copy_teacher_weights,
    prepare_teacher,
    same_tokenizer,
)

DEFAULT_SST2_TRAIN = REPO_ROOT.parent / "shared" / "data" / "glue" / "SST-2" / "train.tsv"
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output-dir", required=True, help="where the pretrained checkpoint (model + tokenizer) goes")
    p.add_argument("--train-files", nargs="*", default=None,
                   help="raw text files, one document or sentence per line (default: the SST-2 train sentences)")
    p.add_argument("--sst2-train", default=str(DEFAULT_SST2_TRAIN),
                   help="SST-2 train.tsv whose sentences are the text when no --train-files are given")
    p.add_argument("--max-lines", type=int, default=None, help="use only the first N lines of text (quick runs)")
    p.add_argument("--tokenizer", default=None,
                   help="an existing tokenizer folder to use instead of training a WordPiece vocabulary")
    # model size
    p.add_argument("--vocab-size", type=int, default=8192)
    p.add_argument("--hidden-size", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--fff-depth", type=int, default=9)
    p.add_argument("--fff-trees", type=int, default=1)
    p.add_argument("--dense-ff-twin", action="store_true",
                   help="train the dense-feedforward twin instead: fff_trees*(2**(fff_depth+1)-1) trees of depth 0, "
                        "i.e. an ordinary GELU feedforward with the same neurons and parameter count, all of them "
                        "used for every token; everything else is identical")
    p.add_argument("--hidden-groups", type=int, default=None,
                   help="ALBERT cross-layer sharing: the layers share the parameters of this many blocks "
                        "(default: no sharing)")
    p.add_argument("--embedding-size", type=int, default=None,
                   help="ALBERT factorized embeddings of this width, projected to --hidden-size (default: none)")
    p.add_argument("--seq-length", type=int, default=128)
    # optimisation (crammedBERT defaults, scaled to a single small GPU)
    p.add_argument("--batch-size", type=int, default=128, help="per-device batch size")
    p.add_argument("--grad-accum", type=int, default=1)
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate of the one-cycle schedule")
    p.add_argument("--peak-at", type=float, default=0.5, help="fraction of training at which the LR peaks")
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--max-grad-norm", type=float, default=0.5)
    p.add_argument("--mlm-probability", type=float, default=0.15)
    p.add_argument("--max-steps", type=int, default=None, help="optimizer steps (schedule over steps)")
    p.add_argument("--budget-minutes", type=float, default=None,
                   help="wall-clock training budget (schedule over elapsed time, as in crammedBERT; with several "
                        "processes all follow the first one's clock)")
    p.add_argument("--eval-fraction", type=float, default=0.02, help="held-out share of packed sequences")
    p.add_argument("--logging-steps", type=int, default=50)
    p.add_argument("--bf16", choices=("auto", "yes", "no"), default="auto", help="bf16 autocast (auto: on CUDA if supported)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-workers", type=int, default=0)
    distill = p.add_argument_group("distillation from a pretrained masked-LM teacher (DistilBERT / TinyBERT style)")
    distill.add_argument("--teacher", default=None,
                         help="a pretrained masked-LM checkpoint with the same vocabulary: the student also learns its "
                              "softened token distributions at the masked positions (its tokenizer is used unless "
                              "--tokenizer names an identical one)")
    distill.add_argument("--distill-alpha", type=float, default=0.5,
                         help="weight of the soft-target loss; the masked-LM loss on the true tokens gets 1 - alpha")
    distill.add_argument("--distill-temperature", type=float, default=2.0)
    distill.add_argument("--distill-hidden-weight", type=float, default=0.0,
                         help="add this times the MSE between standardised hidden states of each student layer and the "
                              "teacher layer at the same relative depth (needs the same hidden size)")
    distill.add_argument("--init-from-teacher", action="store_true",
                         help="start the student from the teacher's weights (same shapes; feedforward nodes of another "
                              "tree arrangement with the same number of neurons are reshaped)")
    args = p.parse_args(argv)
    if args.teacher is None and (args.init_from_teacher or args.distill_hidden_weight != 0.0):
        p.error("--init-from-teacher and --distill-hidden-weight need --teacher")
    if args.teacher is not None:
        if not 0.0 <= args.distill_alpha <= 1.0:
            p.error(f"--distill-alpha must lie in [0, 1], got {args.distill_alpha}")
        if not args.distill_temperature > 0:
            p.error(f"--distill-temperature must be > 0, got {args.distill_temperature}")
        if not args.distill_hidden_weight >= 0:
            p.error(f"--distill-hidden-weight must be >= 0, got {args.distill_hidden_weight}")
    if (args.max_steps is None) == (args.budget_minutes is None):
        p.error("give exactly one of --max-steps and --budget-minutes")
    if not 0.0 < args.peak_at < 1.0:
        p.error("--peak-at must lie strictly between 0 and 1")
    if args.seq_length < 8:
        p.error("--seq-length must be at least 8")
    return args


def read_lines(args) -> list[str]:
    if args.train_files:
        files = [Path(f) for f in args.train_files]
        is_sst2 = False
    else:
        files = [Path(args.sst2_train)]
        is_sst2 = True
    lines = []
    for path in files:
        if not path.is_file():
            hint = " (the SST-2 data is expected in ../shared/data/glue/SST-2; pass --train-files)" if is_sst2 else ""
            raise FileNotFoundError(f"text file not found: {path}{hint}")
        with open(path, encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                line = line.rstrip("\n")
                if is_sst2:
                    if number == 1:
                        continue  # header
                    if "\t" not in line:
                        raise ValueError(f"{path}:{number}: expected 'sentence<TAB>label'")
                    line = line.rsplit("\t", 1)[0]
                line = line.strip()
                if line:
                    lines.append(line)
                if args.max_lines is not None and len(lines) >= args.max_lines:
                    return lines
    if not lines:
        raise ValueError(f"no text found in {[str(f) for f in files]}")
    return lines


def train_tokenizer(lines: list[str], vocab_size: int, seq_length: int) -> BertTokenizerFast:
    """A lower-cased WordPiece vocabulary trained with `tokenizers`, wrapped as a BERT tokenizer."""
    from tokenizers import BertWordPieceTokenizer

    wordpiece = BertWordPieceTokenizer(lowercase=True, clean_text=True, strip_accents=True)
    wordpiece.train_from_iterator(lines, vocab_size=vocab_size, min_frequency=2, special_tokens=SPECIAL_TOKENS,
                                  wordpieces_prefix="##")
    tokenizer = BertTokenizerFast(vocab=wordpiece.get_vocab(), do_lower_case=True, model_max_length=seq_length)
    if tokenizer.convert_tokens_to_ids("[MASK]") != SPECIAL_TOKENS.index("[MASK]"):
        raise RuntimeError("the trained vocabulary lost its special tokens")
    return tokenizer


def train_tokenizer_once(lines: list[str], args, output_dir: Path) -> BertTokenizerFast:
    """The WordPiece vocabulary, trained by the first process only and loaded by the others.

    Training it is not deterministic (ties between equally frequent pieces fall as the trainer's hash maps order
    them), so processes that each trained their own would pack the text differently and train one model on
    different vocabularies.
    """
    from accelerate import PartialState

    state = PartialState()
    if state.num_processes == 1:
        return train_tokenizer(lines, args.vocab_size, args.seq_length)
    shared = output_dir.parent / f".{output_dir.name}.tokenizer"
    with state.main_process_first():  # the first process runs this block before the others start it
        if state.is_main_process:
            tokenizer = train_tokenizer(lines, args.vocab_size, args.seq_length)
            staging = Path(tempfile.mkdtemp(prefix=".tokenizer-", dir=output_dir.parent))
            tokenizer.save_pretrained(staging)
            shutil.rmtree(shared, ignore_errors=True)
            os.replace(staging, shared)
        else:
            tokenizer = BertTokenizerFast.from_pretrained(shared)
    state.wait_for_everyone()  # all have loaded it
    if state.is_main_process:
        shutil.rmtree(shared, ignore_errors=True)
    return tokenizer


def pack(lines: list[str], tokenizer, seq_length: int) -> torch.Tensor:
    """crammedBERT-style packing: the corpus as one stream of ``line [SEP]`` pieces cut into [CLS] + (L-1) blocks."""
    stream = []
    sep = tokenizer.sep_token_id
    for start in range(0, len(lines), 10_000):
        # verbose=False: the lines are cut into blocks below, so their length against the model maximum is moot
        for ids in tokenizer(lines[start:start + 10_000], add_special_tokens=False, verbose=False)["input_ids"]:
            stream.extend(ids)
            stream.append(sep)
    body = seq_length - 1
    blocks = len(stream) // body
    if blocks < 2:
        raise ValueError(f"the text gives {len(stream)} tokens, fewer than two sequences of {seq_length}: give more text")
    data = torch.tensor(stream[: blocks * body], dtype=torch.long).view(blocks, body)
    cls = torch.full((blocks, 1), tokenizer.cls_token_id, dtype=torch.long)
    return torch.cat([cls, data], dim=1)


class PackedDataset(torch.utils.data.Dataset):
    def __init__(self, blocks: torch.Tensor):
        self.blocks = blocks

    def __len__(self):
        return self.blocks.shape[0]

    def __getitem__(self, index):
        return {"input_ids": self.blocks[index]}


def build_config(args, tokenizer) -> UltraFastBertConfig:
    depth, trees = args.fff_depth, args.fff_trees
    if args.dense_ff_twin:
        # a depth-0 tree is one neuron that every token uses: N trees of depth 0 are a dense GELU layer of width N
        trees, depth = args.fff_trees * (2 ** (args.fff_depth + 1) - 1), 0
    return UltraFastBertConfig(
        vocab_size=len(tokenizer),
        hidden_size=args.hidden_size,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        fff_depth=depth,
        fff_trees=trees,
        max_position_embeddings=args.seq_length,
        # crammedBERT pretrains without dropout
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        embedding_dropout_prob=0.0,
        pad_token_id=tokenizer.pad_token_id,
        num_hidden_groups=args.hidden_groups,
        embedding_size=args.embedding_size,
    )


def one_cycle(progress: float, peak_at: float) -> float:
    """Triangular one-cycle multiplier: 0 -> 1 linearly until ``peak_at``, then 1 -> 0 linearly until the end."""
    progress = min(max(progress, 0.0), 1.0)
    if progress < peak_at:
        return progress / peak_at
    return max(0.0, (1.0 - progress) / (1.0 - peak_at))


class BudgetClock:
    """Fraction of a wall-clock budget spent, counted from the first optimizer step and read once per step.

    Under DDP every process must see the same fraction: it sets the learning rate (which must stay identical, or the
    replicas drift apart) and decides the last step (a process that stops alone leaves the others hanging in their
    next all-reduce). So each step the first process's reading is broadcast to all.
    """

    def __init__(self, budget_seconds: float):
        self.budget = budget_seconds
        self.start = None
        self.spent = 0.0

    def tick(self) -> None:
        if self.start is None:
            self.start = time.monotonic()
        spent = (time.monotonic() - self.start) / self.budget
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            nccl = torch.distributed.get_backend() == "nccl"  # NCCL moves CUDA tensors only
            reading = torch.tensor([spent], dtype=torch.float64, device="cuda" if nccl else "cpu")
            torch.distributed.broadcast(reading, src=0)
            spent = reading.item()
        self.spent = spent

    def fraction(self) -> float:
        return self.spent


class BudgetCallback(TrainerCallback):
    def __init__(self, clock: BudgetClock):
        self.clock = clock

    def on_step_begin(self, args, state, control, **kwargs):
        self.clock.tick()

    def on_step_end(self, args, state, control, **kwargs):
        if self.clock.fraction() >= 1.0:
            control.should_training_stop = True
        return control


def training_collator(mlm_collator: DataCollatorForLanguageModeling, seed: int,
                      process_index: int) -> DataCollatorForLanguageModeling:
    """``mlm_collator`` masking each training batch afresh from its own generator, seeded with the seed and the process
    index. Under DDP each process masks its own share of the batch, and every process seeds the global generator alike:
    masking from it would give all of them the same mask positions and replacement tokens, so the global batch would
    hold fewer independent masks than on one device. (``mlm_collator`` itself keeps the global generator: the held-out
    set is masked with it once, with a fixed seed.)"""
    masker = copy.copy(mlm_collator)
    masker.seed = seed + 1_000_003 * process_index
    masker.generator = None  # made from the seed on first use (per dataloader worker, too)
    return masker


@torch.no_grad()
def held_out_mlm_loss(model: UltraFastBertForMaskedLM, dataset: "MaskedDataset", batch_size: int, bf16: bool) -> float:
    """Mean cross-entropy over every masked token of the held-out set.

    Computed whole in every process rather than through Trainer.evaluate: the result then does not depend on how many
    processes share the work (a distributed evaluation pads its last batches with repeated examples), and, above all,
    evaluating with the Trainer before training breaks DDP: accelerate marks the model as prepared for evaluation, so
    train() reuses it unwrapped and the processes never average their gradients (each trains its own replica on its
    shard). The masked FFF form is the training computation; it gives the same function as the conditional one and
    needs no inference kernel."""
    device = next(model.parameters()).device
    was_training, inference = model.training, model.config.fff_inference
    model.eval()
    model.config.fff_inference = "dense"
    total, count = 0.0, 0
    try:
        for start in range(0, len(dataset), batch_size):
            input_ids = dataset.input_ids[start:start + batch_size].to(device)
            labels = dataset.labels[start:start + batch_size].to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                logits = model(input_ids=input_ids).logits
            total += torch.nn.functional.cross_entropy(
                logits.float().view(-1, logits.shape[-1]), labels.view(-1), reduction="sum"
            ).item()
            count += int((labels != -100).sum())
    finally:
        model.train(was_training)
        model.config.fff_inference = inference
    return total / max(1, count)


class MaskedDataset(torch.utils.data.Dataset):
    def __init__(self, batch: dict):
        self.input_ids, self.labels = batch["input_ids"], batch["labels"]

    def __len__(self):
        return self.input_ids.shape[0]

    def __getitem__(self, index):
        return {"input_ids": self.input_ids[index], "labels": self.labels[index]}


class CrammedTrainer(Trainer):
    """Trainer whose scheduler is the one-cycle triangle, over steps or over a wall-clock budget."""

    def __init__(self, *a, peak_at: float, clock: BudgetClock | None, **kw):
        self.peak_at = peak_at
        self.clock = clock
        super().__init__(*a, **kw)

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        if self.lr_scheduler is None:
            optimizer = optimizer if optimizer is not None else self.optimizer
            if self.clock is not None:
                lam = lambda _step: one_cycle(self.clock.fraction(), self.peak_at)  # noqa: E731
            else:
                lam = lambda step: one_cycle(step / max(1, num_training_steps), self.peak_at)  # noqa: E731
            self.lr_scheduler = LambdaLR(optimizer, lam)
        return self.lr_scheduler


class CrammedDistillationTrainer(CrammedTrainer, DistillationTrainer):
    """The one-cycle trainer whose training loss mixes in the teacher's soft targets (and, optionally, states)."""


def load_teacher(path: str, bf16: bool):
    """The masked-LM teacher, frozen, in bf16 when the student trains under bf16 autocast (it only runs forward)."""
    try:
        teacher = AutoModelForMaskedLM.from_pretrained(path, trust_remote_code=True,
                                                       dtype=torch.bfloat16 if bf16 else torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=True)
    except (OSError, ValueError) as error:
        raise SystemExit(f"error: --teacher {path}: cannot load a masked-LM model and its tokenizer ({error})") from None
    return prepare_teacher(teacher), tokenizer


def use_bf16(choice: str) -> bool:
    if choice == "yes":
        return True
    if choice == "no":
        return False
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def main(argv=None) -> dict:
    args = parse_args(argv)
    set_seed(args.seed)
    output_dir = Path(args.output_dir).resolve()
    output_dir.parent.mkdir(parents=True, exist_ok=True)

    started = time.time()
    lines = read_lines(args)
    teacher = teacher_tokenizer = None
    if args.teacher is not None:
        teacher, teacher_tokenizer = load_teacher(args.teacher, use_bf16(args.bf16))
    if args.tokenizer:
        tokenizer = AutoTokenizer.from_pretrained(args.tokenizer, trust_remote_code=True)
        if teacher_tokenizer is not None and not same_tokenizer(tokenizer, teacher_tokenizer, lines[:16]):
            raise SystemExit(f"error: --tokenizer {args.tokenizer} differs from the teacher's ({args.teacher}); "
                             "masked-LM distillation compares token ids, so leave --tokenizer out to use the teacher's")
    elif teacher_tokenizer is not None:
        tokenizer = teacher_tokenizer
    else:
        tokenizer = train_tokenizer_once(lines, args, output_dir)
    blocks = pack(lines, tokenizer, args.seq_length)
    generator = torch.Generator().manual_seed(args.seed)
    order = torch.randperm(blocks.shape[0], generator=generator)
    n_eval = max(1, int(round(args.eval_fraction * blocks.shape[0])))
    eval_blocks, train_blocks = blocks[order[:n_eval]], blocks[order[n_eval:]]
    print(f"text: {len(lines)} lines -> {blocks.shape[0]} sequences of {args.seq_length} tokens "
          f"({train_blocks.shape[0]} train, {n_eval} held out); vocabulary {len(tokenizer)}", flush=True)

    config = build_config(args, tokenizer)
    model = UltraFastBertForMaskedLM(config)
    if teacher is not None:
        try:
            check_teacher_compatible(model, teacher)
            if args.distill_hidden_weight > 0 and teacher.config.hidden_size != config.hidden_size:
                raise ValueError(f"hidden-state distillation needs the same hidden size (teacher "
                                 f"{teacher.config.hidden_size}, student {config.hidden_size})")
            if args.init_from_teacher:
                initialised = copy_teacher_weights(model, teacher)
                print(f"student initialised from the teacher: {len(initialised['copied'])} tensors copied, "
                      f"{len(initialised['reshaped'])} feedforward tensors reshaped", flush=True)
        except ValueError as error:
            raise SystemExit(f"error: --teacher {args.teacher}: {error}") from None
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {args.layers} layers, hidden {args.hidden_size}, {args.heads} heads, FFF {config.fff_trees} tree(s) "
          f"of depth {config.fff_depth} ({config.fff_num_nodes * config.fff_trees} neurons, "
          f"{(config.fff_depth + 1) * config.fff_trees} used per token), {len(model.ultrafastbert.layers)} distinct "
          f"block(s), embedding width {config.word_embedding_size}; {n_params / 1e6:.2f}M parameters", flush=True)

    collator = DataCollatorForLanguageModeling(tokenizer, mlm=True, mlm_probability=args.mlm_probability)
    set_seed(args.seed + 1)
    eval_dataset = MaskedDataset(collator([{"input_ids": block} for block in eval_blocks]))
    clock = BudgetClock(args.budget_minutes * 60.0) if args.budget_minutes is not None else None
    bf16 = use_bf16(args.bf16)
    work_dir = Path(tempfile.mkdtemp(prefix=".pretrain-", dir=output_dir.parent if output_dir.parent.exists() else None))
    training_args = TrainingArguments(
        output_dir=str(work_dir),
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=args.batch_size,
        gradient_accumulation_steps=args.grad_accum,
        learning_rate=args.lr,
        weight_decay=args.weight_decay,
        adam_beta1=0.9,
        adam_beta2=0.98,
        adam_epsilon=1e-12,
        max_grad_norm=args.max_grad_norm,
        # the budget mode stops through its callback; the step count only has to be out of reach
        max_steps=args.max_steps if args.max_steps is not None else 10**9,
        logging_steps=args.logging_steps,
        logging_first_step=True,
        save_strategy="no",
        eval_strategy="no",
        report_to="none",
        bf16=bf16,
        dataloader_num_workers=args.num_workers,
        dataloader_pin_memory=torch.cuda.is_available(),
        seed=args.seed,
        disable_tqdm=False,
    )
    distillation = {}
    if teacher is not None:
        distillation = {"teacher": teacher, "alpha": args.distill_alpha, "temperature": args.distill_temperature,
                        "hidden_weight": args.distill_hidden_weight}
    trainer = (CrammedDistillationTrainer if teacher is not None else CrammedTrainer)(
        **distillation,
        model=model,
        args=training_args,
        train_dataset=PackedDataset(train_blocks),
        data_collator=training_collator(collator, args.seed, training_args.process_index),
        peak_at=args.peak_at,
        clock=clock,
        callbacks=[BudgetCallback(clock)] if clock is not None else None,
    )
    eval_before = held_out_mlm_loss(model, eval_dataset, args.batch_size, bf16)
    set_seed(args.seed)
    train_started = time.time()
    train_output = trainer.train()
    train_seconds = time.time() - train_started
    eval_after = held_out_mlm_loss(model, eval_dataset, args.batch_size, bf16)
    train_log = [entry for entry in trainer.state.log_history if "loss" in entry]
    train_losses = [entry["loss"] for entry in train_log]
    world_size = trainer.args.world_size

    results = {
        "eval_mlm_loss_before": eval_before,
        "eval_mlm_loss_after": eval_after,
        "first_logged_train_loss": train_losses[0] if train_losses else None,
        "last_logged_train_loss": train_losses[-1] if train_losses else None,
        "train_loss_mean": train_output.training_loss,
        "global_steps": trainer.state.global_step,
        "train_seconds": round(train_seconds, 1),
        "total_seconds": round(time.time() - started, 1),
        # train_batch_size is the per-device batch times the GPUs a DataParallel process drives
        "sequences_seen": trainer.state.global_step * trainer.args.train_batch_size * args.grad_accum * world_size,
        "processes": world_size,
        "devices_per_process": max(1, trainer.args.n_gpu),
        "train_loss_curve": [(entry["step"], entry["loss"]) for entry in train_log],
        "grad_norm_curve": [(entry["step"], entry.get("grad_norm")) for entry in train_log],
        "parameters": n_params,
        "dense_ff_twin": args.dense_ff_twin,
        "teacher": args.teacher,
        "bf16": bf16,
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "args": vars(args),
    }
    print(json.dumps({k: v for k, v in results.items() if k not in ("args", "train_loss_curve", "grad_norm_curve")},
                     indent=1), flush=True)

    if trainer.is_world_process_zero():
        # write everything into a temporary folder beside the target, then move it into place
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=work_dir))
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        (staging / "pretrain_results.json").write_text(json.dumps(results, indent=1) + "\n")
        if output_dir.exists():
            shutil.rmtree(output_dir)
        output_dir.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(staging), str(output_dir))
        print(f"saved to {output_dir}", flush=True)
    shutil.rmtree(work_dir, ignore_errors=True)  # every process made its own
    return results


if __name__ == "__main__":
    try:
        main()
    finally:
        # under torchrun / accelerate launch: shut the process group down before exit (left to the interpreter's
        # teardown, gloo's threads were seen to abort the process after its work was done)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
