"""Shared test helpers: paths to ../shared, tiny configs, a tiny WordPiece tokenizer, a clean-environment runner, the
example scripts as modules."""

import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"
SST2_DIR = SHARED / "data" / "glue" / "SST-2"


def load_example(name: str):
    """examples/NAME.py as a fresh module (the scripts are not a package)."""
    spec = importlib.util.spec_from_file_location(f"example_{name}", REPO_ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def require_sst2() -> Path:
    if not (SST2_DIR / "train.tsv").exists():
        pytest.skip(f"SST-2 data not found at {SST2_DIR} (the shared data folder sits beside the repository)")
    return SST2_DIR


def read_sst2(split: str, limit: int | None = None) -> tuple[list[str], list[int]]:
    sentences, labels = [], []
    with open(require_sst2() / f"{split}.tsv", encoding="utf-8") as handle:
        next(handle)  # header
        for line in handle:
            sentence, label = line.rstrip("\n").split("\t")
            sentences.append(sentence)
            labels.append(int(label))
            if limit is not None and len(sentences) >= limit:
                break
    return sentences, labels


def tiny_config(**overrides):
    from modeling_ultrafastbert import UltraFastBertConfig

    values = dict(
        vocab_size=211,
        hidden_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        fff_depth=3,
        fff_trees=2,
        max_position_embeddings=40,
        classifier_hidden_size=40,
    )
    values.update(overrides)
    return UltraFastBertConfig(**values)


@pytest.fixture(scope="session")
def wordpiece_tokenizer(tmp_path_factory):
    """A BertTokenizerFast with a small WordPiece vocabulary trained on SST-2 training sentences."""
    from tokenizers import BertWordPieceTokenizer
    from transformers import BertTokenizerFast

    sentences, _ = read_sst2("train", limit=3000)
    trainer = BertWordPieceTokenizer(lowercase=True)
    trainer.train_from_iterator(sentences, vocab_size=400, min_frequency=2)
    folder = tmp_path_factory.mktemp("tokenizer")
    # transformers 5 ignores vocab_file= here (every word becomes [UNK]); the full tokenizer.json is honoured
    trainer.save(str(folder / "tokenizer.json"))
    tokenizer = BertTokenizerFast(tokenizer_file=str(folder / "tokenizer.json"), do_lower_case=True,
                                  model_max_length=40)
    assert len(tokenizer) > 100 and tokenizer.unk_token_id not in tokenizer("a gripping film")["input_ids"]
    return tokenizer


_BLOCKER = """
import importlib.abc, sys

class _BlockUltraFastBertPackage(importlib.abc.MetaPathFinder):
    # the tests load checkpoints as remote code: the installed package must not be importable
    def find_spec(self, name, path=None, target=None):
        if name == "modeling_ultrafastbert" or name.startswith("modeling_ultrafastbert."):
            raise ImportError("modeling_ultrafastbert is blocked in this clean environment")
        return None

sys.meta_path.insert(0, _BlockUltraFastBertPackage())
"""


def run_in_clean_env(code: str, tmp_path: Path, timeout: int = 300, extra_env: dict | None = None) -> str:
    """Run ``code`` in a fresh interpreter that cannot import this package (only torch + transformers & co).

    A sitecustomize on PYTHONPATH blocks ``modeling_ultrafastbert``; the working directory is outside the repository,
    HF_HOME is empty and the Hub is offline. Returns stdout; raises with stderr on failure.
    """
    site_dir = tmp_path / "clean_site"
    site_dir.mkdir(exist_ok=True)
    (site_dir / "sitecustomize.py").write_text(_BLOCKER)
    work_dir = tmp_path / "clean_cwd"
    work_dir.mkdir(exist_ok=True)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path / "home"),
        "PYTHONPATH": str(site_dir),
        "PYTHONNOUSERSITE": "1",
        "HF_HOME": str(tmp_path / "hf_home"),
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    env.update(extra_env or {})
    preamble = textwrap.dedent(
        """
        import importlib.util
        try:
            importlib.util.find_spec("modeling_ultrafastbert")
            raise SystemExit("the package is importable: the environment is not clean")
        except ImportError:
            pass
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", preamble + textwrap.dedent(code)],
        cwd=work_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if result.returncode != 0:
        raise AssertionError(f"clean-environment run failed:\nSTDOUT:\n{result.stdout}\nSTDERR:\n{result.stderr}")
    return result.stdout


_INTERPRETER_PROBE = """
import torch
import triton
import triton.language as tl

@triton.jit
def ramp(out_ptr, n, BLOCK: tl.constexpr):
    for start in range(0, n, BLOCK):  # a loop bound known only at run time, as in the FFF and span kernels
        offsets = start + tl.arange(0, BLOCK)
        tl.store(out_ptr + offsets, offsets.to(tl.float32), mask=offsets < n)

out = torch.zeros(40)
ramp[(1,)](out, 40, BLOCK=16)
assert torch.equal(out, torch.arange(40.0)), out
print("interpreter probe ok")
"""
_interpreter_problem: list = []


def triton_interpreter_problem() -> str | None:
    """Why Triton's interpreter (TRITON_INTERPRET=1) cannot run our kernels in this environment, or None if it can.

    Triton 3.6's interpreter, for one, turns a run-time loop bound into a Python int with ``int(array)``, which NumPy 2
    refuses for 1-element arrays; the kernels themselves compile and run on GPUs there (tests/test_gpu_kernel.py).
    """
    if not _interpreter_problem:
        import triton

        result = subprocess.run([sys.executable, "-c", _INTERPRETER_PROBE], env=dict(os.environ, TRITON_INTERPRET="1"),
                                capture_output=True, text=True, timeout=300)
        problem = None
        if result.returncode != 0 or "interpreter probe ok" not in result.stdout:
            import numpy

            last = (result.stderr.strip().splitlines() or ["no output"])[-1][:300]
            problem = (f"Triton {triton.__version__}'s interpreter cannot run a loop with a run-time bound here "
                       f"(NumPy {numpy.__version__}): {last}")
        _interpreter_problem.append(problem)
    return _interpreter_problem[0]


def require_triton_interpreter() -> None:
    """Skip the calling test, naming why, if Triton's interpreter cannot run our kernels here; in CI (``CI`` set),
    where the interpreter is the only run the Triton kernels get, fail instead."""
    problem = triton_interpreter_problem()
    if problem is not None:
        (pytest.fail if os.environ.get("CI") else pytest.skip)(problem)
