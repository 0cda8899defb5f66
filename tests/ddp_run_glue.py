"""Worker for tests/test_distributed_cpu.py: examples/run_glue.py as is, with a line per process after every
Trainer.train() giving how the model was wrapped and a fingerprint of its weights (DDP keeps the replicas identical;
replicas that were never wrapped drift apart).

    ACCELERATE_USE_CPU=1 python3 -m torch.distributed.run --nproc_per_node 2 tests/ddp_run_glue.py RUN_GLUE_ARGS..."""

import os
import sys
from pathlib import Path

import torch
import transformers

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from conftest import load_example  # noqa: E402 - this file's folder is first on sys.path when run as a script

train = transformers.Trainer.train


def train_and_report(self, *args, **kwargs):
    output = train(self, *args, **kwargs)
    weights = torch.cat([p.detach().double().flatten() for p in self.model.parameters()])
    print(f"REPLICA rank={os.environ.get('RANK', '0')} wrapped={type(self.model_wrapped).__name__} "
          f"steps={self.state.global_step} norm={weights.norm().item():.12e} sum={weights.sum().item():.12e} END",
          flush=True)
    return output


transformers.Trainer.train = train_and_report
try:
    load_example("run_glue").main(sys.argv[1:])
finally:
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
