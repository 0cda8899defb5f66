"""transformers' own common model tests (`ModelTesterMixin`) over the five UltraFastBERT classes.

`ModelTesterMixin` is what every in-library model passes. It is not part of the installed wheel, so this module takes
`tests/test_modeling_common.py` from the source distribution of the *installed* transformers version at test time
(`pip download --no-deps --no-binary :all: transformers==X`, extracted once into ~/.cache/ultrafastbert). Nothing of
transformers is copied into this repository: the model tester below is ours.

Offline, point ``ULTRAFASTBERT_TRANSFORMERS_SRC`` at an unpacked transformers source tree of the same version. When
the files cannot be obtained the suite is skipped, except in CI (``CI`` set), where that is a failure.

The sdist ships the top-level ``tests/*.py`` only. `test_modeling_common.py` imports two modules that are not among
them: ``tests/exporters/test_export.py`` (``ExportTesterMixin``, the base of ``ModelTesterMixin``: export to
ONNX/AOTI/ExecuTorch/OpenVINO/TensorRT) and ``tests/generation/test_utils.py`` (``GenerationTesterMixin``, for models
that generate; ours do not, and ``ModelTesterMixin`` only checks that a non-generating model's tester does not
inherit it). Where the sdist lacks them, they are stood in for by empty mixins, so the export tests are not run
(``STAND_INS`` below names them).
"""

import importlib.util
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import types
import unittest
import unittest.mock
from pathlib import Path

import pytest
import torch
import transformers
from transformers.models.auto import modeling_auto

from modeling_ultrafastbert import (
    UltraFastBertConfig,
    UltraFastBertForMaskedLM,
    UltraFastBertForQuestionAnswering,
    UltraFastBertForSequenceClassification,
    UltraFastBertForTokenClassification,
    UltraFastBertModel,
)

VERSION = transformers.__version__
CACHE_DIR = Path(os.environ.get("ULTRAFASTBERT_CACHE", Path.home() / ".cache" / "ultrafastbert"))
SOURCE_DIR = CACHE_DIR / f"transformers-src-{VERSION}"
PACKAGE = "_transformers_common_tests"  # the name the sdist's tests/ folder is imported under

# modules test_modeling_common.py imports that the sdist may not ship -> what stands in for them, and why
STAND_INS = {
    "exporters.test_export": (
        "ExportTesterMixin",
        "not in the sdist; its export tests (ONNX/AOTI/ExecuTorch/OpenVINO/TensorRT) are therefore not run",
    ),
    "generation.test_utils": (
        "GenerationTesterMixin",
        "not in the sdist; UltraFastBERT does not generate, and a non-generating model's tester must not inherit it",
    ),
}

AUTO_TABLES = {
    "MODEL_MAPPING_NAMES": "UltraFastBertModel",
    "MODEL_FOR_MASKED_LM_MAPPING_NAMES": "UltraFastBertForMaskedLM",
    "MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES": "UltraFastBertForSequenceClassification",
    "MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES": "UltraFastBertForTokenClassification",
    "MODEL_FOR_QUESTION_ANSWERING_MAPPING_NAMES": "UltraFastBertForQuestionAnswering",
}

# Tests of ModelTesterMixin that cannot apply to UltraFastBERT and do not skip themselves: name -> reason.
# None so far. Every skip in a run (82 of 188 with transformers 5.23.0 on a CPU; `pytest -rs` lists them) is the
# mixin's own, with its reason: hardware or libraries absent here (an accelerator, several of them, MPS, Flash
# Attention 2/3/4, DeepSpeed, the `kernels` library), features UltraFastBERT does not have (composite or sub-configs,
# RoPE, sparse experts, a tensor-parallel plan, sliding windows, seq2seq or decoder-only LM heads, resizable position
# embeddings, `_keep_in_fp32_modules`, a checkpoint-conversion mapping, `capture_outputs`, grouped_mm), and one test
# marked @slow that also needs an accelerator (test_torch_compile_for_training).
NOT_APPLICABLE: dict[str, str] = {}


# ------------------------------------------------------------------ obtaining the files


def _download_sdist_tests(target: Path) -> None:
    """pip-download the sdist of the installed version and unpack its tests/ folder into ``target`` (atomically)."""
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE_DIR, prefix=".transformers-src-") as work:
        work = Path(work)
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                   f"transformers=={VERSION}", "-d", str(work / "dist"), "--quiet", "--timeout", "60", "--retries", "2"]
        result = subprocess.run(command, capture_output=True, text=True, timeout=900)
        archives = list((work / "dist").glob("transformers-*.tar.gz"))
        if result.returncode != 0 or not archives:
            raise RuntimeError(f"`{' '.join(command)}` failed:\n{result.stdout}\n{result.stderr}")
        staging = work / "tree"
        with tarfile.open(archives[0]) as archive:
            members = [
                m for m in archive.getmembers()
                if m.isfile() and len(Path(m.name).parts) >= 3 and Path(m.name).parts[1] == "tests"
            ]
            if not any(Path(m.name).parts[2:] == ("test_modeling_common.py",) for m in members):
                raise RuntimeError(f"{archives[0].name} has no tests/test_modeling_common.py")
            archive.extractall(staging, members=members, filter="data")
        (top,) = staging.iterdir()
        try:
            os.replace(top, target)  # atomic: a concurrent run either sees the whole tree or none
        except OSError:
            if not (target / "tests" / "test_modeling_common.py").is_file():
                raise


def obtain_transformers_tests() -> Path:
    """The ``tests`` folder of the installed version's source distribution (downloaded and cached on first use)."""
    override = os.environ.get("ULTRAFASTBERT_TRANSFORMERS_SRC")
    if override:
        tests = Path(override) / "tests"
        if not (tests / "test_modeling_common.py").is_file():
            raise RuntimeError(f"ULTRAFASTBERT_TRANSFORMERS_SRC={override} has no tests/test_modeling_common.py")
        return tests
    if not (SOURCE_DIR / "tests" / "test_modeling_common.py").is_file():
        _download_sdist_tests(SOURCE_DIR)
    return SOURCE_DIR / "tests"


def import_modeling_common(tests_dir: Path) -> types.ModuleType:
    """Import test_modeling_common.py as ``PACKAGE.test_modeling_common``, standing in for modules it lacks."""
    if f"{PACKAGE}.test_modeling_common" in sys.modules:
        return sys.modules[f"{PACKAGE}.test_modeling_common"]
    package = types.ModuleType(PACKAGE)
    package.__path__ = [str(tests_dir)]
    sys.modules[PACKAGE] = package
    for dotted, (class_name, _why) in STAND_INS.items():
        if (tests_dir / (dotted.replace(".", "/") + ".py")).is_file():
            continue  # shipped: the real module is imported
        parent, name = dotted.split(".")
        sub = sys.modules.setdefault(f"{PACKAGE}.{parent}", types.ModuleType(f"{PACKAGE}.{parent}"))
        sub.__path__ = []
        module = types.ModuleType(f"{PACKAGE}.{dotted}")
        setattr(module, class_name, type(class_name, (), {"__doc__": "stand-in: " + _why}))
        sys.modules[module.__name__] = module
    spec = importlib.util.spec_from_file_location(f"{PACKAGE}.test_modeling_common", tests_dir / "test_modeling_common.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


try:
    common = import_modeling_common(obtain_transformers_tests())
    UNAVAILABLE = None
except Exception as error:  # no network, no pip, a missing test dependency, ...
    common = None
    UNAVAILABLE = f"{type(error).__name__}: {error}"


def test_transformers_common_tests_were_obtained():
    if UNAVAILABLE is None:
        return
    message = f"could not obtain transformers {VERSION}'s tests/test_modeling_common.py: {UNAVAILABLE}"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def test_missing_files_fail_in_ci_and_skip_elsewhere(tmp_path):
    # the guard above, exercised: a source tree without the files, with and without CI set
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["ULTRAFASTBERT_TRANSFORMERS_SRC"] = str(tmp_path / "no-such-tree")
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", __file__, "-k", "were_obtained"]
    local = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, cwd=Path(__file__).parents[1])
    in_ci = subprocess.run(command, env={**env, "CI": "true"}, capture_output=True, text=True, timeout=300,
                           cwd=Path(__file__).parents[1])
    assert local.returncode == 0 and "1 skipped" in local.stdout, local.stdout + local.stderr
    assert in_ci.returncode == 1 and "1 failed" in in_ci.stdout, in_ci.stdout + in_ci.stderr
    assert "no tests/test_modeling_common.py" in in_ci.stdout


# ------------------------------------------------------------------ our model tester


class UltraFastBertModelTester:
    def __init__(self, parent, batch_size=13, seq_length=7, vocab_size=99, hidden_size=32, num_hidden_layers=2,
                 num_attention_heads=4, fff_depth=2, fff_trees=1, max_position_embeddings=64, num_labels=3,
                 is_training=True):
        self.parent = parent
        self.batch_size = batch_size
        self.seq_length = seq_length
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.fff_depth = fff_depth
        self.fff_trees = fff_trees
        self.max_position_embeddings = max_position_embeddings
        self.num_labels = num_labels
        self.is_training = is_training

    def get_config(self) -> UltraFastBertConfig:
        return UltraFastBertConfig(
            vocab_size=self.vocab_size,
            hidden_size=self.hidden_size,
            num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads,
            fff_depth=self.fff_depth,
            fff_trees=self.fff_trees,
            max_position_embeddings=self.max_position_embeddings,
            num_labels=self.num_labels,
        )

    def prepare_config_and_inputs(self):
        input_ids = common.ids_tensor([self.batch_size, self.seq_length], self.vocab_size)
        attention_mask = common.random_attention_mask([self.batch_size, self.seq_length])
        return self.get_config(), input_ids, attention_mask

    def prepare_config_and_inputs_for_common(self):
        config, input_ids, attention_mask = self.prepare_config_and_inputs()
        return config, {"input_ids": input_ids, "attention_mask": attention_mask}


if common is not None:

    class UltraFastBertCommonModelTest(common.ModelTesterMixin, unittest.TestCase):
        all_model_classes = (
            UltraFastBertModel,
            UltraFastBertForMaskedLM,
            UltraFastBertForSequenceClassification,
            UltraFastBertForTokenClassification,
            UltraFastBertForQuestionAnswering,
        )

        def setUp(self):
            self.model_tester = UltraFastBertModelTester(self)
            # The mixin finds what a class is (a bare encoder, which labels a head takes) by its name in transformers'
            # own Auto tables, where a remote-code model is not listed; list ours there while a test runs.
            for table, class_name in AUTO_TABLES.items():
                patcher = unittest.mock.patch.dict(getattr(modeling_auto, table), {"ultrafastbert": class_name})
                patcher.start()
                self.addCleanup(patcher.stop)

    for _name, _reason in NOT_APPLICABLE.items():
        if not hasattr(UltraFastBertCommonModelTest, _name):
            raise AssertionError(f"NOT_APPLICABLE names {_name}, which ModelTesterMixin {VERSION} does not have")
        setattr(UltraFastBertCommonModelTest, _name, unittest.skip(_reason)(getattr(UltraFastBertCommonModelTest, _name)))
