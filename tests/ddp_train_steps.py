"""Worker for tests/test_distributed_cpu.py: a few Trainer steps of a tiny masked LM, printed as one JSON line.

    python3 tests/ddp_train_steps.py PER_DEVICE_BATCH [mlm|classification]           # one process
    ACCELERATE_USE_CPU=1 torchrun --standalone --nproc_per_node 2 tests/ddp_train_steps.py PER_DEVICE_BATCH [...]

Fixed data and fixed labels (rows with different numbers of labelled tokens), no dropout and plain Trainer sharding,
so one process at batch B and two processes at B / 2 see the same global batches and must compute the same losses and
gradients, and end with the same weights and held-out loss (Trainer.evaluate() after training: before it, accelerate
1.16 marks the model as prepared for evaluation and train() then never wraps it in DDP; examples/pretrain_mlm.py
computes its held-out loss itself for that reason)."""

import json
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from transformers import Trainer, TrainerCallback, TrainingArguments  # noqa: E402

from modeling_ultrafastbert import (  # noqa: E402
    UltraFastBertConfig,
    UltraFastBertForMaskedLM,
    UltraFastBertForSequenceClassification,
)


class Rows(torch.utils.data.Dataset):
    def __init__(self, count=64, length=16, vocab=100, task="mlm"):
        generator = torch.Generator().manual_seed(1)
        self.ids = torch.randint(5, vocab, (count, length), generator=generator)
        if task == "mlm":
            labelled = torch.rand(count, length, generator=generator) < torch.linspace(0.05, 0.5, count)[:, None]
            self.labels = torch.where(labelled, self.ids, -100)
        else:  # one of 3 classes per row
            self.labels = torch.randint(0, 3, (count,), generator=generator)

    def __len__(self):
        return self.ids.shape[0]

    def __getitem__(self, index):
        return {"input_ids": self.ids[index], "labels": self.labels[index]}


class Record(TrainerCallback):
    def __init__(self):
        self.steps = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "grad_norm" in logs:
            self.steps.append([state.global_step, logs["loss"], logs["grad_norm"]])


def main():
    torch.manual_seed(0)
    config = UltraFastBertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                 fff_depth=3, max_position_embeddings=32, hidden_dropout_prob=0.0,
                                 attention_probs_dropout_prob=0.0, embedding_dropout_prob=0.0, num_labels=3,
                                 classifier_dropout=0.0)
    task = sys.argv[2] if len(sys.argv) > 2 else "mlm"
    model = (UltraFastBertForMaskedLM if task == "mlm" else UltraFastBertForSequenceClassification)(config)
    out = Path(os.environ.get("DDP_TEST_OUT", "/tmp")) / f"rank{os.environ.get('RANK', '0')}"
    args = TrainingArguments(output_dir=str(out), per_device_train_batch_size=int(sys.argv[1]),
                             per_device_eval_batch_size=8, max_steps=3, learning_rate=5e-3, max_grad_norm=0.5,
                             logging_steps=1, report_to="none", save_strategy="no", seed=0, disable_tqdm=True)
    record = Record()
    trainer = Trainer(model=model, args=args, train_dataset=Rows(task=task),
                      eval_dataset=Rows(16, task=task), callbacks=[record])
    trainer.train()
    eval_after = trainer.evaluate()["eval_loss"]
    weights = torch.cat([p.detach().flatten() for p in model.parameters()])
    if trainer.is_world_process_zero():
        print("RESULT " + json.dumps({
            "world_size": args.world_size, "wrapped": type(trainer.model_wrapped).__name__,
            "eval_after": eval_after, "steps": record.steps, "weights_norm": float(weights.norm()),
        }) + " END", flush=True)


if __name__ == "__main__":
    main()
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()  # not left to the interpreter's teardown (gloo aborted there once)
