"""Several checkpoints loaded as remote code in one process, with or without the installed package beside them: every
copy of fff_cpu_kernel.py shares one loaded library and one fake-impl registration, and every model runs the native
kernel (no fallback warning) with the logits it gives alone. torch 2.11 raised "already has an fake impl registered"
when a second copy registered; a copy built from another kernel source used to load a second library defining the
same op, which aborts the process."""

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from modeling_ultrafastbert import UltraFastBertForSequenceClassification, fff_cpu_kernel

from conftest import REPO_ROOT, run_in_clean_env, tiny_config


@pytest.fixture(scope="module")
def kernel_cache():
    ok, reason = fff_cpu_kernel.is_available()
    if not ok:
        pytest.skip(f"the native CPU kernel is unavailable here: {reason}")
    return str(fff_cpu_kernel.library_path().parents[1])  # share this session's build with the subprocesses


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, kernel_cache):
    """Three tiny classifiers with different weights (same shapes, so the kernel's packed-weight cache must tell them
    apart), saved as remote-code folders, and the logits each gives alone in this process."""
    folder = tmp_path_factory.mktemp("checkpoints")
    ids = torch.randint(1, 211, (3, 13), generator=torch.Generator().manual_seed(0))
    expected = {"ids": ids}
    for seed, name in enumerate(("a", "b", "c")):
        torch.manual_seed(seed)
        model = UltraFastBertForSequenceClassification(tiny_config(num_labels=2)).eval()
        model.save_pretrained(folder / name)
        with torch.no_grad():
            expected[name] = model(ids).logits
    # checkpoint c was saved by another release: its kernel source differs (a comment), so its build key differs
    kernel_file = folder / "c" / "fff_cpu_kernel.py"
    source = kernel_file.read_text()
    assert source.count('_CPP_SOURCE = r"""') == 1
    kernel_file.write_text(source.replace('_CPP_SOURCE = r"""', '_CPP_SOURCE = r"""// a later release\n'))
    torch.save(expected, folder / "io.pt")
    return folder


# helpers run inside the subprocesses
_CHECKS = """
import os, sys, warnings
import torch
from transformers import AutoModelForSequenceClassification

warnings.filterwarnings("error", message="UltraFastBERT: no native FFF kernel")  # a fallback fails the run
io = torch.load(os.path.join(FOLDER, "io.pt"))
OP = "ultrafastbert::fff_forward_cpu"


def remote(name):
    folder = os.path.join(FOLDER, name)
    if "modeling_ultrafastbert" in sys.modules:
        # the imported package registers the Auto classes, which then win over remote code: load the checkpoint's
        # own code explicitly, as the remote-code path does
        from transformers.dynamic_module_utils import get_class_from_dynamic_module
        cls = get_class_from_dynamic_module("modeling_ultrafastbert.UltraFastBertForSequenceClassification", folder)
        model = cls.from_pretrained(folder)
    else:
        model = AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True)
    assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
    return model.eval()


def kernel_of(model):
    return sys.modules[type(model).__module__.rsplit(".", 1)[0] + ".fff_cpu_kernel"]


def check(models):
    # each model: its copy of the kernel module reports the native kernel, the native op runs once per layer, and
    # the logits are those the model gives alone
    for name, model in models.items():
        kernel = kernel_of(model)
        ok, reason = kernel.is_available()
        assert ok, (name, reason)
        calls = []
        op = kernel._op
        kernel._op = lambda *args: calls.append(1) or op(*args)
        try:
            with torch.no_grad():
                logits = model(io["ids"]).logits
        finally:
            kernel._op = op
        assert len(calls) == model.config.num_hidden_layers, (name, len(calls))
        torch.testing.assert_close(logits, io[name.split("-")[0]], rtol=1e-5, atol=1e-6)
        print("NATIVE", name, kernel.__name__, "|", reason)
    copies = sorted(name for name in sys.modules if name.endswith("fff_cpu_kernel"))
    # one library mapped, whatever the number of copies
    with open("/proc/self/maps") as maps:
        libraries = {line.split(None, 5)[-1].strip() for line in maps if "fff_cpu_kernel.so" in line}
    assert len(libraries) == 1, libraries
    # one fake impl registered (torch >= 2.13 keeps a list and would silently stack one per copy), and it works
    from torch._library.simple_registry import singleton
    holder = singleton.find(OP).fake_impl
    if hasattr(holder, "kernels"):
        assert len(holder.kernels) == 1, [k.source for k in holder.kernels]
    assert holder.kernel is not None
    from torch._subclasses.fake_tensor import FakeTensorMode
    with FakeTensorMode():
        out = torch.ops.ultrafastbert.fff_forward_cpu(torch.empty(5, 8), torch.empty(1, 3, 8), torch.empty(1, 3),
                                                      torch.empty(1, 3, 8))
    assert out.shape == (5, 8)
    print("COPIES", len(copies), "LIBRARIES", len(libraries))
"""


def _script(folder, body):
    return f"FOLDER = {str(folder)!r}\n" + _CHECKS + textwrap.dedent(body)


def test_two_and_three_remote_checkpoints_share_the_native_kernel(checkpoints, kernel_cache, tmp_path):
    output = run_in_clean_env(
        _script(
            checkpoints,
            """
            a, b = remote("a"), remote("b")
            check({"a": a, "b": b})
            c = remote("c")  # another kernel source: reuses the loaded library instead of loading a second one
            check({"a": a, "b": b, "c": c})
            """,
        ),
        tmp_path,
        extra_env={"ULTRAFASTBERT_CACHE": kernel_cache},
    )
    assert output.count("COPIES 2 LIBRARIES 1") == 1 and output.count("COPIES 3 LIBRARIES 1") == 1, output
    assert "NATIVE c" in output and "built from another version of this code" in output, output


def test_remote_checkpoints_beside_the_installed_package(checkpoints, kernel_cache, tmp_path):
    """Remote code first, then the package, then more remote code: all in one process (the package's copy of the
    kernel module is the second to load, in the middle)."""
    work = tmp_path / "cwd"
    work.mkdir()
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), ULTRAFASTBERT_CACHE=kernel_cache,
               HF_HOME=str(tmp_path / "hf_home"), HF_HUB_OFFLINE="1")
    body = """
    a = remote("a")
    check({"a": a})
    from modeling_ultrafastbert import UltraFastBertForSequenceClassification
    package_b = UltraFastBertForSequenceClassification.from_pretrained(os.path.join(FOLDER, "b")).eval()
    assert type(package_b).__module__ == "modeling_ultrafastbert.modeling_ultrafastbert"
    check({"a": a, "b-package": package_b})
    b, c = remote("b"), remote("c")
    check({"a": a, "b-package": package_b, "b": b, "c": c})
    """
    result = subprocess.run([sys.executable, "-c", _script(checkpoints, body)], cwd=work, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    output = result.stdout
    assert "NATIVE b-package modeling_ultrafastbert.fff_cpu_kernel" in output, output
    assert "COPIES 1 LIBRARIES 1" in output and "COPIES 2 LIBRARIES 1" in output, output
    assert "COPIES 4 LIBRARIES 1" in output, output  # a, the package, b and c (a and b share no module)


def test_a_copy_that_predates_the_shared_record(kernel_cache, tmp_path):
    """An older copy of this file (no shared record) already loaded the library and registered a fake impl: the
    package's copy reuses both instead of loading a second library or registering a second fake impl."""
    library = os.path.join(kernel_cache, fff_cpu_kernel.library_path().parent.name, "fff_cpu_kernel.so")
    code = f"""
    import torch
    torch.ops.load_library({library!r})  # what an older copy did
    torch.library.register_fake("ultrafastbert::fff_forward_cpu")(lambda x, w1, b, w2: x.new_empty(x.shape))
    from torch._library.simple_registry import singleton
    from modeling_ultrafastbert import fff_cpu_kernel
    print(fff_cpu_kernel.is_available())
    holder = singleton.find("ultrafastbert::fff_forward_cpu").fake_impl
    assert len(getattr(holder, "kernels", [holder.kernel])) == 1
    x, w1, b, w2 = torch.randn(4, 8), torch.randn(1, 3, 8), torch.randn(1, 3), torch.randn(1, 3, 8)
    print(fff_cpu_kernel.fff_forward(x, w1, b, w2).shape)
    """
    work = tmp_path / "cwd"
    work.mkdir()
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), ULTRAFASTBERT_CACHE=kernel_cache)
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=work, env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    assert "(True, 'compiled FFF CPU kernel already loaded in this process (reused)')" in result.stdout
    assert "torch.Size([4, 8])" in result.stdout


def test_an_op_with_another_schema_is_not_used(kernel_cache, monkeypatch):
    """The op's schema is the contract between copies: a loaded op whose schema differs is refused, with the reason."""
    monkeypatch.setattr(fff_cpu_kernel, "OP_SCHEMA", "fff_forward_cpu(Tensor x, Tensor in_weight) -> Tensor")
    monkeypatch.setattr(fff_cpu_kernel, "_op", fff_cpu_kernel._op)  # restored afterwards, whatever _load does
    ok, reason = fff_cpu_kernel._load()
    assert not ok and "has the schema" in reason and "Tensor in_bias" in reason, reason


def test_the_python_schema_is_the_one_the_library_defines():
    assert f'm.def("{fff_cpu_kernel.OP_SCHEMA}");' in fff_cpu_kernel._CPP_SOURCE
