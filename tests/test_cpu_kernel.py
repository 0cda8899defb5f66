"""The native CPU kernel for conditional FFF inference: equality with the PyTorch paths, dtypes, shapes, threads,
errors, dispatch, torch.compile / torch.export. The first test that needs the kernel compiles it (cached on disk)."""

import shutil
import threading

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from modeling_ultrafastbert import fast_feedforward as ff
from modeling_ultrafastbert import fff_cpu_kernel
from modeling_ultrafastbert.fast_feedforward import (
    FastFeedForward,
    fff_conditional,
    fff_conditional_torch,
    fff_masked,
    fff_paths_torch,
)

from conftest import run_in_clean_env, tiny_config


@pytest.fixture(scope="module", autouse=True)
def kernel():
    ok, reason = fff_cpu_kernel.is_available()
    if not ok:
        if shutil.which("c++") or shutil.which("g++"):
            pytest.fail(f"a C++ compiler is present but the kernel is unavailable: {reason}")
        pytest.skip(f"no C++ compiler, the native kernel cannot be built: {reason}")
    return fff_cpu_kernel


@pytest.fixture
def threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def _layer(hidden, depth, trees, seed=0, dtype=torch.float32):
    torch.manual_seed(seed)
    layer = FastFeedForward(hidden, depth, trees).eval().to(dtype)
    with torch.no_grad():  # larger biases than the init spread the walks over the whole tree
        layer.in_bias.normal_(0, 0.5)
    return layer


def _safe_tokens(x, layer, margin):
    """Tokens whose every visited logit is at least ``margin`` away from 0, so all paths agree on every decision."""
    _, logits = fff_paths_torch(x.float(), layer.in_weight.float(), layer.in_bias.float())
    return logits.reshape(x.shape[0], -1).abs().amin(-1) > margin


def test_full_size_fp32_matches_torch_and_masked(kernel):
    layer = _layer(768, 11, 1)
    x = torch.randn(96, 768)
    safe = _safe_tokens(x, layer, 1e-4)
    assert safe.sum() > 80
    with torch.no_grad():
        native = kernel.fff_forward(x, layer.in_weight, layer.in_bias, layer.out_weight)
        walk = fff_conditional_torch(x, layer.in_weight, layer.in_bias, layer.out_weight)
        masked = fff_masked(x, layer.in_weight, layer.in_bias, layer.out_weight)
    torch.testing.assert_close(native[safe], walk[safe], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(native[safe], masked[safe], rtol=1e-5, atol=1e-6)


def test_exactly_zero_logit_goes_left(kernel):
    layer = _layer(8, 1, 2)
    with torch.no_grad():
        layer.in_bias.copy_(torch.tensor([[0.0, 1.0, -1.0], [0.0, -2.0, 3.0]]))
    x = torch.zeros(3, 8)  # every logit equals the node's bias: the roots are exactly 0
    with torch.no_grad():
        native = kernel.fff_forward(x, layer.in_weight, layer.in_bias, layer.out_weight)
        walk = fff_conditional_torch(x, layer.in_weight, layer.in_bias, layer.out_weight)
    gelu = torch.nn.functional.gelu
    expected = gelu(torch.tensor(1.0)) * layer.out_weight[0, 1] + gelu(torch.tensor(-2.0)) * layer.out_weight[1, 1]
    torch.testing.assert_close(native, expected.expand(3, 8).detach(), rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(native, walk)


def test_bf16_within_bf16_tolerance(kernel):
    layer = _layer(256, 6, 2, dtype=torch.bfloat16)
    x = torch.randn(256, 256).to(torch.bfloat16)
    safe = _safe_tokens(x, layer, 0.03)  # bf16 rounding of the logits cannot flip these decisions
    assert safe.sum() > 20
    with torch.no_grad():
        native = kernel.fff_forward(x, layer.in_weight, layer.in_bias, layer.out_weight)
        walk_bf16 = fff_conditional_torch(x, layer.in_weight, layer.in_bias, layer.out_weight)
        walk_fp32 = fff_conditional_torch(x.float(), layer.in_weight.float(), layer.in_bias.float(),
                                          layer.out_weight.float())
    assert native.dtype == torch.bfloat16
    # fp32 accumulation: only the final rounding to bf16 separates the kernel from the fp32 walk on bf16 weights
    torch.testing.assert_close(native[safe].float(), walk_fp32[safe], rtol=1e-2, atol=1e-2)
    torch.testing.assert_close(native[safe].float(), walk_bf16[safe].float(), rtol=5e-2, atol=5e-2)


@settings(max_examples=60, deadline=None)
@given(
    trees=st.integers(1, 3),
    depth=st.integers(0, 12),
    hidden=st.integers(1, 41),
    tokens=st.integers(0, 9),
    layout=st.sampled_from(["contiguous", "transposed", "strided"]),
    num_threads=st.sampled_from([1, 2]),
    seed=st.integers(0, 2**16),
)
def test_random_shapes_match_torch_paths(kernel, trees, depth, hidden, tokens, layout, num_threads, seed):
    if depth > 8:
        hidden = min(hidden, 9)  # keep the 2**(D+1)-node trees small
    layer = _layer(hidden, depth, trees, seed=seed)
    generator = torch.Generator().manual_seed(seed)
    if layout == "transposed":
        x = torch.randn(hidden, tokens, generator=generator).t()
    elif layout == "strided":
        x = torch.randn(tokens, 2 * hidden, generator=generator)[:, ::2]
    else:
        x = torch.randn(tokens, hidden, generator=generator)
    before = torch.get_num_threads()
    torch.set_num_threads(num_threads)
    try:
        with torch.no_grad():
            native = kernel.fff_forward(x, layer.in_weight, layer.in_bias, layer.out_weight)
            walk = fff_conditional_torch(x, layer.in_weight, layer.in_bias, layer.out_weight)
            masked = fff_masked(x, layer.in_weight, layer.in_bias, layer.out_weight) if depth <= 8 else walk
    finally:
        torch.set_num_threads(before)
    assert native.shape == (tokens, hidden) and native.dtype == x.dtype
    safe = _safe_tokens(x, layer, 1e-4) if tokens else torch.zeros(0, dtype=torch.bool)
    torch.testing.assert_close(native[safe], walk[safe], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(native[safe], masked[safe], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_zero_tokens(kernel, dtype):
    layer = _layer(20, 3, 2, dtype=dtype)
    with torch.no_grad():
        out = kernel.fff_forward(torch.empty(0, 20, dtype=dtype), layer.in_weight, layer.in_bias, layer.out_weight)
        assert out.shape == (0, 20) and out.dtype == dtype
        assert layer(torch.empty(3, 0, 20, dtype=dtype)).shape == (3, 0, 20)


@pytest.mark.parametrize("num_threads", [1, 2])
def test_one_and_many_threads_agree(kernel, threads, num_threads):
    layer = _layer(96, 7, 3)
    x = torch.randn(300, 96)
    torch.set_num_threads(num_threads)
    with torch.no_grad():
        native = kernel.fff_forward(x, layer.in_weight, layer.in_bias, layer.out_weight)
    torch.set_num_threads(1)
    with torch.no_grad():
        single = kernel.fff_forward(x, layer.in_weight, layer.in_bias, layer.out_weight)
        walk = fff_conditional_torch(x, layer.in_weight, layer.in_bias, layer.out_weight)
    assert torch.equal(native, single)  # tokens never interact: the split over threads cannot change a bit
    safe = _safe_tokens(x, layer, 1e-4)
    torch.testing.assert_close(native[safe], walk[safe], rtol=1e-5, atol=1e-6)


def test_packed_weights_follow_in_place_updates(kernel):
    layer = _layer(32, 3, 2)
    x = torch.randn(5, 32)
    with torch.no_grad():
        first = kernel.fff_forward(x, layer.in_weight, layer.in_bias, layer.out_weight)
        layer.out_weight.mul_(2.0)  # bumps the version counter: the packed copy must be rebuilt
        second = kernel.fff_forward(x, layer.in_weight, layer.in_bias, layer.out_weight)
        layer.in_bias.add_(0.25)
        third = kernel.fff_forward(x, layer.in_weight, layer.in_bias, layer.out_weight)
        walk = fff_conditional_torch(x, layer.in_weight, layer.in_bias, layer.out_weight)
    torch.testing.assert_close(second, 2 * first, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(third, walk, rtol=1e-5, atol=1e-6)
    layer.to(torch.bfloat16)  # new storage under the same parameters
    with torch.no_grad():
        as_bf16 = kernel.fff_forward(x.to(torch.bfloat16), layer.in_weight, layer.in_bias, layer.out_weight)
    assert as_bf16.dtype == torch.bfloat16


def test_four_python_threads_share_one_model(kernel):
    from modeling_ultrafastbert import UltraFastBertForSequenceClassification

    torch.manual_seed(0)
    model = UltraFastBertForSequenceClassification(tiny_config(fff_kernel="native", fff_depth=5)).eval()
    inputs = [torch.randint(0, 211, (3, 30), generator=torch.Generator().manual_seed(i)) for i in range(8)]
    with torch.no_grad():
        sequential = [model(input_ids=ids).logits for ids in inputs]
    results = {}
    errors = []

    def work(worker):
        try:
            with torch.no_grad():
                for _ in range(5):
                    for i in range(worker, len(inputs), 4):
                        results[(worker, i)] = model(input_ids=inputs[i]).logits
        except Exception as error:  # surfaced below
            errors.append(error)

    pool = [threading.Thread(target=work, args=(w,)) for w in range(4)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    assert not errors, errors
    assert len(results) == len(inputs)
    for (_, i), logits in results.items():
        assert torch.equal(logits, sequential[i])


def test_bad_inputs_raise_clear_errors(kernel):
    layer = _layer(16, 2, 2)
    w1, b, w2 = layer.in_weight.detach(), layer.in_bias.detach(), layer.out_weight.detach()
    x = torch.randn(4, 16)
    cases = [
        ((x.double(), w1, b, w2), TypeError, "share one dtype"),
        ((x.half(), w1.half(), b, w2.half()), TypeError, "float32 or bfloat16"),
        ((torch.randn(4, 15), w1, b, w2), ValueError, "hidden size 15"),
        ((x, w1, b, w2.to("meta")), ValueError, "out_weight is on meta"),
        ((x, w1, b[:1], w2), ValueError, "in_bias"),
        ((x, w1, b, w2[:, :3]), ValueError, "out_weight"),
        ((x[0], w1, b, w2), ValueError, r"\(tokens, hidden\)"),
    ]
    for args, error, message in cases:
        with pytest.raises(error, match=message):
            kernel.fff_forward(*args)
    # the C++ side checks too, for callers that reach the op directly
    op = torch.ops.ultrafastbert.fff_forward_cpu
    with pytest.raises(RuntimeError, match="must share one dtype"):
        op(x.double(), w1, b, w2)
    with pytest.raises(RuntimeError, match="hidden size 15"):
        op(torch.randn(4, 15), w1, b, w2)
    with pytest.raises(RuntimeError, match="nodes per tree"):
        op(x, w1[:, :2], b[:, :2], w2[:, :2])
    with pytest.raises(RuntimeError, match="differ in shape"):
        op(x, w1, b, w2[:1])


def _counting(monkeypatch):
    calls = []
    original = fff_cpu_kernel.fff_forward

    def counted(*args):
        calls.append(1)
        return original(*args)

    monkeypatch.setattr(ff, "cpu_fff_forward", counted)
    return calls


def test_dispatch_native_and_auto_use_the_kernel(kernel, monkeypatch):
    assert ff.cpu_fff_forward is fff_cpu_kernel.fff_forward
    assert ff.native_kernel_status("cpu")[0]
    calls = _counting(monkeypatch)
    layer = _layer(24, 3, 2)
    x = torch.randn(2, 7, 24)
    with torch.no_grad():
        reference = fff_conditional_torch(x.reshape(-1, 24), layer.in_weight, layer.in_bias, layer.out_weight)
        for mode in ("native", "auto"):
            layer.kernel = mode
            before = len(calls)
            out = layer(x)
            assert len(calls) == before + 1, f"fff_kernel={mode!r} did not reach the native kernel"
            torch.testing.assert_close(out.reshape(-1, 24), reference, rtol=1e-5, atol=1e-6)
        layer.kernel = "torch"
        layer(x)
    assert len(calls) == 2
    # with autograd wanted, "auto" stays on the differentiable walk and "native" refuses
    layer.kernel = "auto"
    layer(x).sum().backward()
    assert len(calls) == 2
    with pytest.raises(RuntimeError, match="forward-only"):
        fff_conditional(x.reshape(-1, 24), layer.in_weight, layer.in_bias, layer.out_weight, "native")


def test_torch_compile_and_export_see_one_op(kernel):
    layer = _layer(32, 4, 2).requires_grad_(False)
    x = torch.randn(6, 32)
    eager = layer(x)
    torch._dynamo.reset()
    compiled = torch.compile(layer, backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(compiled(x), eager)
    exported = torch.export.export(layer, (x,))
    targets = [str(node.target) for node in exported.graph.nodes if node.op == "call_function"]
    assert any("fff_forward_cpu" in t for t in targets), targets
    torch.testing.assert_close(exported.module()(x), eager)


def test_remote_code_checkpoint_runs_the_native_kernel(kernel, tmp_path):
    """A checkpoint loaded with trust_remote_code, without this package, compiles/loads the embedded kernel."""
    from modeling_ultrafastbert import UltraFastBertForSequenceClassification

    torch.manual_seed(0)
    model = UltraFastBertForSequenceClassification(tiny_config(num_labels=2, fff_kernel="native")).eval()
    checkpoint = tmp_path / "checkpoint"
    model.save_pretrained(checkpoint)
    assert (checkpoint / "fff_cpu_kernel.py").exists()
    ids = torch.randint(1, 211, (2, 9))
    with torch.no_grad():
        expected = model(ids).logits
    torch.save({"ids": ids, "expected": expected}, tmp_path / "io.pt")
    output = run_in_clean_env(
        f"""
        import sys, torch
        from transformers import AutoModelForSequenceClassification
        io = torch.load({str(tmp_path / 'io.pt')!r})
        model = AutoModelForSequenceClassification.from_pretrained({str(checkpoint)!r}, trust_remote_code=True).eval()
        kernel = next(m for name, m in sys.modules.items() if name.endswith(".fff_cpu_kernel"))
        print(kernel.is_available())
        calls = []
        op = kernel._op
        kernel._op = lambda *args: calls.append(1) or op(*args)
        with torch.no_grad():
            torch.testing.assert_close(model(io["ids"]).logits, io["expected"], rtol=1e-5, atol=1e-5)
        print("native calls", len(calls))
        """,
        tmp_path,
        # share this session's build instead of compiling again under the clean HOME
        extra_env={"ULTRAFASTBERT_CACHE": str(fff_cpu_kernel.library_path().parents[1])},
    )
    assert "(True, 'compiled FFF CPU kernel loaded" in output, output
    assert "native calls 2" in output, output  # one per layer
