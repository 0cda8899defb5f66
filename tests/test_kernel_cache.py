"""The on-disk cache of the native CPU kernel: a damaged library is rebuilt (never loaded), a library or cache folder
that another user could write is never loaded. Each test gets its own cache under tmp_path (ULTRAFASTBERT_CACHE).

Compiling takes ~12 s, so only the truncated-library test compiles for real; the others replace the compiler step
with a copy of the library this session already built and check the decisions around it."""

import os
import shutil
import stat
import subprocess
import sys
import textwrap

import pytest

from modeling_ultrafastbert import fff_cpu_kernel

from conftest import REPO_ROOT


@pytest.fixture(scope="module")
def built():
    """The library this session built (or found verified) in the default cache: our source of good bytes."""
    ok, reason = fff_cpu_kernel.is_available()
    if not ok:
        if shutil.which("c++") or shutil.which("g++"):
            pytest.fail(f"a C++ compiler is present but the kernel is unavailable: {reason}")
        pytest.skip(f"no C++ compiler, the native kernel cannot be built: {reason}")
    library = fff_cpu_kernel.library_path()
    assert fff_cpu_kernel._library_problem(library) is None, "the session's own cached library fails its check"
    return library


@pytest.fixture
def cache(tmp_path, monkeypatch, built):
    """A private cache under tmp_path holding a copy of the good library and its digest, where this process and its
    subprocesses look for the kernel."""
    root = tmp_path / "cache"
    monkeypatch.setenv("ULTRAFASTBERT_CACHE", str(root))
    target = fff_cpu_kernel.library_path()
    assert target.parent.parent == root
    target.parent.mkdir(parents=True, mode=0o700)
    os.chmod(root, 0o700)
    shutil.copy2(built, target)
    shutil.copy2(fff_cpu_kernel.digest_path(built), fff_cpu_kernel.digest_path(target))
    assert fff_cpu_kernel._library_problem(target) is None
    return target


@pytest.fixture
def fake_compiler(monkeypatch, built):
    """Replace the compiler step by a copy of the good library; returns the list of outputs it wrote."""
    outputs = []

    def compile_by_copying(output, workdir):
        shutil.copyfile(built, output)
        os.chmod(output, 0o755)
        outputs.append(output)

    monkeypatch.setattr(fff_cpu_kernel, "_compile", compile_by_copying)
    return outputs


# a subprocess that loads the package's kernel from $ULTRAFASTBERT_CACHE, checks it against the PyTorch walk and
# lists the kernel libraries mapped into it
_USE_KERNEL = """
import warnings
warnings.simplefilter("always")
import torch
from modeling_ultrafastbert import fff_cpu_kernel as kernel
from modeling_ultrafastbert.fast_feedforward import fff_conditional_torch
{patch}
ok, reason = kernel.is_available()
print("STATUS", ok, reason)
torch.manual_seed(0)
x, w1, b, w2 = torch.randn(9, 16), torch.randn(2, 7, 16), torch.randn(2, 7), torch.randn(2, 7, 16)
torch.testing.assert_close(kernel.fff_forward(x, w1, b, w2), fff_conditional_torch(x, w1, b, w2), rtol=1e-5, atol=1e-5)
print("NATIVE MATCHES WALK")
with open("/proc/self/maps") as maps:
    print("MAPPED", sorted({line.split(None, 5)[-1].strip() for line in maps if "fff_cpu_kernel.so" in line}))
"""


def _run_with_package(tmp_path, patch=""):
    work = tmp_path / "cwd"
    work.mkdir(exist_ok=True)
    (tmp_path / "tmp").mkdir(exist_ok=True)
    os.chmod(tmp_path / "tmp", 0o1777)  # like /tmp: world-writable and sticky
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), TMPDIR=str(tmp_path / "tmp"))
    return subprocess.run([sys.executable, "-c", textwrap.dedent(_USE_KERNEL).replace("{patch}", patch)], cwd=work, env=env,
                          capture_output=True, text=True, timeout=600)


def test_truncated_library_is_rebuilt_not_loaded(cache, tmp_path):
    """Loading a truncated library used to kill Python with SIGBUS (exit 135); now it is rebuilt (a real compile)."""
    size = cache.stat().st_size
    with open(cache, "r+b") as f:
        f.truncate(size // 2)
    result = _run_with_package(tmp_path)
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    assert f"STATUS True compiled FFF CPU kernel loaded from {cache} (rebuilt: " in result.stdout, result.stdout
    assert "sha256 differs" in result.stdout
    assert "NATIVE MATCHES WALK" in result.stdout
    assert fff_cpu_kernel._library_problem(cache) is None
    assert cache.stat().st_size > size // 2


def _garbage(target):
    target.write_bytes(os.urandom(target.stat().st_size))


def _writable_by_others(target):
    os.chmod(target, 0o777)


def _shared_group_writable_digest(target):
    _give_to_a_shared_group(fff_cpu_kernel.digest_path(target), 0o664)


def _give_to_a_shared_group(path, mode):
    if os.getuid() != 0:
        pytest.skip("changing a file's group to one shared with other users needs root")
    os.chown(path, -1, 65534)  # nogroup: not this user's private group
    os.chmod(path, mode)


def _digest_missing(target):
    fff_cpu_kernel.digest_path(target).unlink()


def _digest_of_other_bytes(target):
    fff_cpu_kernel.digest_path(target).write_text("0" * 64 + "\n")


def _digest_garbage(target):
    fff_cpu_kernel.digest_path(target).write_bytes(os.urandom(80))


def _owned_by_nobody(target):
    if os.getuid() != 0:
        pytest.skip("changing a file's owner needs root")
    os.chown(target, 65534, 65534)


def _replaced_by_symlink(target):
    real = target.with_name("elsewhere.so")
    target.rename(real)
    target.symlink_to(real)


@pytest.mark.parametrize(
    "damage, problem",
    [
        (_garbage, "sha256 differs"),
        (_digest_of_other_bytes, "sha256 differs"),
        (_digest_garbage, "sha256 differs"),
        (_digest_missing, "fff_cpu_kernel.so.sha256 is missing"),
        (_writable_by_others, "writable by group or others"),
        (_shared_group_writable_digest, "writable by group or others"),
        (_owned_by_nobody, "belongs to another user"),
        (_replaced_by_symlink, "not a regular file"),
    ],
)
def test_damaged_or_unsafe_library_is_rebuilt_before_loading(cache, fake_compiler, damage, problem):
    damage(cache)
    assert problem in fff_cpu_kernel._library_problem(cache)
    target, note = fff_cpu_kernel._cached_library()
    assert target == cache and len(fake_compiler) == 1
    assert note.startswith(" (rebuilt: ") and problem in note
    assert fff_cpu_kernel._library_problem(cache) is None  # ours, private, and the recorded bytes
    assert not cache.stat().st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    # a verified library is used as it is: no second build
    assert fff_cpu_kernel._cached_library() == (cache, "")
    assert len(fake_compiler) == 1


def test_first_build_records_the_digest(tmp_path, monkeypatch, fake_compiler):
    previous = os.umask(0o002)  # a permissive umask must not leave the cache writable by the group
    try:
        monkeypatch.setenv("ULTRAFASTBERT_CACHE", str(tmp_path / "cache"))
        target, note = fff_cpu_kernel._cached_library()
    finally:
        os.umask(previous)
    assert note == "" and len(fake_compiler) == 1
    assert fff_cpu_kernel.digest_path(target).read_text().strip() == fff_cpu_kernel._sha256(target)
    for path in (target, fff_cpu_kernel.digest_path(target), target.parent, target.parent.parent):
        assert not path.stat().st_mode & (stat.S_IWGRP | stat.S_IWOTH), path


def test_group_writable_folders_of_a_private_group_are_fine(cache, fake_compiler):
    """With user-private groups (Debian/Ubuntu, umask 002) ~/.cache is group-writable by this user's own group only."""
    if not fff_cpu_kernel._private_group(os.getgid()):
        pytest.skip("this user's primary group is shared with other users")
    for folder in (cache.parent, cache.parent.parent, cache.parent.parent.parent):
        os.chown(folder, -1, os.getgid())
        os.chmod(folder, 0o770)
    assert fff_cpu_kernel._cached_library() == (cache, "")
    assert not fake_compiler


def _cache_root_world_writable(cache):
    os.chmod(cache.parent.parent, 0o777)


def _library_folder_writable_by_a_shared_group(cache):
    _give_to_a_shared_group(cache.parent, 0o770)


def _cache_root_sticky_but_world_writable(cache):
    os.chmod(cache.parent.parent, 0o1777)  # sticky is fine above the cache, not for the cache itself


def _cache_root_owned_by_nobody(cache):
    if os.getuid() != 0:
        pytest.skip("changing a folder's owner needs root")
    os.chown(cache.parent.parent, 65534, 65534)


def _ancestor_world_writable(cache):
    os.chmod(cache.parent.parent.parent, 0o777)


@pytest.mark.parametrize(
    "make_unsafe",
    [_cache_root_world_writable, _library_folder_writable_by_a_shared_group, _cache_root_sticky_but_world_writable,
     _cache_root_owned_by_nobody, _ancestor_world_writable],
)
def test_unsafe_cache_folder_is_not_used(cache, fake_compiler, make_unsafe):
    make_unsafe(cache)
    with pytest.raises(fff_cpu_kernel._CacheUnusable):
        fff_cpu_kernel._cached_library()
    assert not fake_compiler


def test_sticky_world_writable_folder_above_the_cache_is_fine(cache, fake_compiler):
    os.chmod(cache.parent.parent.parent, 0o1777)  # like /tmp: others cannot rename or replace our entries
    assert fff_cpu_kernel._cached_library() == (cache, "")
    assert not fake_compiler


def test_world_writable_cache_loads_a_private_build_with_a_warning(cache, tmp_path, built):
    """End to end in a fresh process: the good library in a world-writable cache is not loaded; a private build is
    (the compiler step is replaced by a copy of the good library to keep the test fast)."""
    os.chmod(cache.parent.parent, 0o777)
    patch = textwrap.dedent(
        f"""
        import os, shutil
        def compile_by_copying(output, workdir):
            shutil.copyfile({str(built)!r}, output)
            os.chmod(output, 0o755)
        kernel._compile = compile_by_copying
        """
    )
    result = _run_with_package(tmp_path, patch)
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    assert "STATUS True compiled FFF CPU kernel loaded from a private build for this process" in result.stdout
    assert "is writable by group or others" in result.stdout
    assert "NATIVE MATCHES WALK" in result.stdout
    assert "the FFF CPU kernel cache" in result.stderr and "ULTRAFASTBERT_CACHE" in result.stderr  # the warning
    mapped = result.stdout.split("MAPPED", 1)[1]
    assert str(cache) not in mapped and "ultrafastbert-fff-" in mapped, mapped
    # the private build's folder is removed once the library is mapped
    assert not list((tmp_path / "tmp").iterdir())


def test_a_cache_that_cannot_be_created_is_not_used(tmp_path, monkeypatch, fake_compiler):
    (tmp_path / "a_file").write_text("")
    monkeypatch.setenv("ULTRAFASTBERT_CACHE", str(tmp_path / "a_file" / "cache"))
    with pytest.raises(fff_cpu_kernel._CacheUnusable, match="cannot be created"):
        fff_cpu_kernel._cached_library()
    assert not fake_compiler


# --- a toolchain whose C++ exceptions kill the process -------------------------------------------------------------
# A library defining the kernel's op whose every call ends the process, as a failing TORCH_CHECK did with one
# toolchain (a relocated GCC behind $CXX): what the build's self-test must catch.
_CRASHING_OP = """
#include <cstdlib>
#include <torch/library.h>
#include <ATen/ATen.h>
at::Tensor crash(const at::Tensor& x, const at::Tensor&, const at::Tensor&, const at::Tensor&) { std::abort(); }
TORCH_LIBRARY(ultrafastbert, m) { m.def("%s"); }
TORCH_LIBRARY_IMPL(ultrafastbert, CPU, m) { m.impl("fff_forward_cpu", &crash); }
"""


@pytest.fixture(scope="module")
def crashing_library(built, tmp_path_factory):
    folder = tmp_path_factory.mktemp("crashing")
    source, library = folder / "crash.cpp", folder / "crash.so"
    source.write_text(_CRASHING_OP % fff_cpu_kernel.OP_SCHEMA)
    proc = subprocess.run(fff_cpu_kernel._compile_command(str(library), str(source), []), capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return library


def test_self_test_passes_a_good_library_and_fails_one_that_crashes(built, crashing_library):
    assert fff_cpu_kernel._exception_self_test(built) is None
    problem = fff_cpu_kernel._exception_self_test(crashing_library)
    assert problem is not None and "ended the process (signal 6)" in problem, problem


def test_build_moves_on_to_the_next_compiler_when_a_library_fails_its_self_test(tmp_path, monkeypatch, built,
                                                                             crashing_library):
    """The compile step of each candidate is replaced by a copy: the first "compiler" gives the crashing library."""
    produced_by = {"broken-cxx": crashing_library, "good-cxx": built}
    monkeypatch.setattr(fff_cpu_kernel, "_compilers", lambda: list(produced_by))
    monkeypatch.setattr(fff_cpu_kernel, "_compile_command",
                        lambda output, source, arch, compiler=None: ["cp", str(produced_by[compiler]), output])
    output = tmp_path / "fff_cpu_kernel.so"
    with pytest.warns(UserWarning, match="built with good-cxx after: broken-cxx: the library it built fails its "
                                         "self-test"):
        fff_cpu_kernel._compile(output, str(tmp_path))
    assert output.read_bytes() == built.read_bytes()

    produced_by["good-cxx"] = crashing_library  # no candidate gives a library that raises: a clear error
    with pytest.raises(RuntimeError, match="(?s)broken-cxx: the library it built fails its self-test.*"
                                           "good-cxx: the library it built fails its self-test"):
        fff_cpu_kernel._compile(output, str(tmp_path))
