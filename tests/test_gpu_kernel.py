"""GPU tests of the Triton conditional FFF kernels (skipped without CUDA + Triton; run on the GPU machine).

Every test draws fresh random inputs (no fixed seed). Decisions near a tie (|logit| tiny) may legitimately differ
between two correct implementations that sum in a different order. The fp32 parity test draws such tokens again
until none is left (so every token is compared, even when there is only one) and checks that few needed it; the
other tests leave them out of the comparison.
"""

import math

import pytest
import torch

from modeling_ultrafastbert.fast_feedforward import (
    FastFeedForward,
    fff_conditional,
    fff_conditional_torch,
    fff_masked,
    fff_paths_torch,
)

try:
    from modeling_ultrafastbert import fff_triton_kernel as tk

    _OK, _WHY = tk.is_available()
except ImportError as error:  # pragma: no cover
    tk, _OK, _WHY = None, False, str(error)

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not _OK, reason=f"needs CUDA and Triton: {_WHY}")]


def _random_fff(tokens, hidden, depth, trees, dtype, transposed_x=False, tie_margin=None, dev="cuda"):
    """Random inputs and weights. With ``tie_margin``, the rows of x whose float64 path passes within ``tie_margin`` of
    a tie are drawn again until none does, so every token can be compared however few there are (drawing once, a
    single token is near a tie with probability ~1e-3 at margin 1e-4, and then nothing was left to compare)."""
    nodes = 2 ** (depth + 1) - 1
    if transposed_x:  # a non-contiguous (T, H) view
        x = torch.randn(hidden, tokens, device=dev).t()
    else:
        x = torch.randn(tokens, hidden, device=dev)
    in_w = torch.randn(trees, nodes, hidden, device=dev) / math.sqrt(hidden)
    in_b = torch.randn(trees, nodes, device=dev) * 0.1
    out_w = torch.randn(trees, nodes, hidden, device=dev) / math.sqrt((depth + 1) * trees)
    x, in_w, in_b, out_w = x.to(dtype), in_w.to(dtype), in_b.to(dtype), out_w.to(dtype)
    if tie_margin is not None and tokens:
        near_tie = ~_stable_tokens(x, in_w, in_b, tie_margin)
        first_draw_near_tie = near_tie.sum().item()
        for _ in range(20):  # each redrawn row is near a tie again with probability ~1e-3
            if not near_tie.any():
                break
            x[near_tie] = torch.randn(int(near_tie.sum()), hidden, device=dev).to(dtype)  # writes through the view
            near_tie = ~_stable_tokens(x, in_w, in_b, tie_margin)
        assert not near_tie.any(), "tokens keep landing near a tie: the margin is too wide for these weights"
        # the margin must reject few tokens, or the comparison would only cover easy inputs; judged where the count
        # means something (at 100+ tokens more than 10% near a tie is impossible by chance at ~1e-3 per token)
        assert tokens < 100 or first_draw_near_tie <= 0.1 * tokens, (first_draw_near_tie, tokens)
    return x, in_w, in_b, out_w


def _stable_tokens(x, in_w, in_b, margin):
    """Tokens whose float64 path keeps every visited logit at least `margin` away from the tie at zero."""
    _, logits = fff_paths_torch(x.double(), in_w.double(), in_b.double())
    return logits.abs().amin(dim=(1, 2)) > margin


def _rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


STRATEGIES = ["walk", "phased", "grouped"]
SHAPES = [  # tokens, hidden, depth, trees
    (1, 768, 11, 1),
    (130, 768, 11, 1),
    (3000, 768, 11, 1),
    (257, 100, 3, 1),
    (64, 48, 1, 1),
    (200, 96, 4, 3),
    (33, 64, 0, 2),
    (50, 40, 13, 1),
]


# the grouped strategy covers one tree with 1 <= depth <= 11 (fff_forward refuses others; auto walks them)
CASES = ([("walk",) + shape for shape in SHAPES] + [("phased",) + shape for shape in SHAPES]
         + [("grouped",) + s for s in SHAPES if s[3] == 1 and 1 <= s[2] <= 11])


@pytest.mark.parametrize("strategy,tokens,hidden,depth,trees", CASES)
def test_fp32_parity_with_torch_and_masked(strategy, tokens, hidden, depth, trees):
    # no token passes within 1e-4 of a tie (redrawn until so): every token is compared
    x, in_w, in_b, out_w = _random_fff(tokens, hidden, depth, trees, torch.float32, transposed_x=tokens % 2 == 1,
                                       tie_margin=1e-4)
    assert x.is_contiguous() == (tokens % 2 == 0 or tokens == 1)  # the redraw kept the transposed layout
    with torch.no_grad():
        y = tk.fff_forward(x, in_w, in_b, out_w, strategy=strategy)
        ref = fff_conditional_torch(x, in_w, in_b, out_w)
        masked = fff_masked(x, in_w, in_b, out_w) if depth <= 11 else None
    assert y.shape == x.shape and y.dtype == x.dtype and torch.isfinite(y).all()
    assert _stable_tokens(x, in_w, in_b, 1e-4).all()
    assert _rel(y, ref) <= 1e-5
    if masked is not None:
        # identical decisions: the masked path (dense GEMM) and the kernel agree on every token
        assert _rel(y, masked) <= 1e-5


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_half_precision_parity(dtype, strategy):
    x, in_w, in_b, out_w = _random_fff(2048, 768, 11, 1, dtype)
    with torch.no_grad():
        y = tk.fff_forward(x, in_w, in_b, out_w, strategy=strategy)
        ref32 = fff_conditional_torch(x.float(), in_w.float(), in_b.float(), out_w.float())
        ref = fff_conditional_torch(x, in_w, in_b, out_w)
    assert y.dtype == dtype and torch.isfinite(y).all()
    # tokens whose decisions cannot flip under half-precision rounding of the logits
    keep = _stable_tokens(x, in_w, in_b, 0.02)
    assert keep.float().mean() > 0.6
    err_kernel = _rel(y[keep], ref32[keep])
    err_torch = _rel(ref[keep], ref32[keep])
    assert err_kernel < 1e-2
    assert err_kernel <= 2 * err_torch + 1e-3  # no worse than the PyTorch walk in the same dtype


def test_zero_tokens_and_dispatch():
    x, in_w, in_b, out_w = _random_fff(0, 768, 11, 1, torch.bfloat16)
    assert tk.fff_forward(x, in_w, in_b, out_w).shape == (0, 768)
    x, in_w, in_b, out_w = _random_fff(1500, 768, 11, 1, torch.float32)
    keep = _stable_tokens(x, in_w, in_b, 1e-4)
    with torch.no_grad():
        native = fff_conditional(x, in_w, in_b, out_w, kernel="native")
        auto = fff_conditional(x, in_w, in_b, out_w, kernel="auto")
        ref = fff_conditional(x, in_w, in_b, out_w, kernel="torch")
    assert _rel(native[keep], ref[keep]) <= 1e-5 and torch.equal(native, auto)


def test_layer_eval_uses_kernel_and_bad_inputs_raise():
    layer = FastFeedForward(96, depth=5, trees=1, kernel="native").cuda().eval()
    x = torch.randn(4, 300, 96, device="cuda")
    with torch.no_grad():
        y = layer(x)
        layer.kernel = "torch"
        ref = layer(x)
    keep = _stable_tokens(x.reshape(-1, 96), layer.in_weight, layer.in_bias, 1e-4)
    assert _rel(y.reshape(-1, 96)[keep], ref.reshape(-1, 96)[keep]) <= 1e-5
    x, in_w, in_b, out_w = _random_fff(10, 64, 3, 1, torch.float32)
    with pytest.raises(ValueError, match="dtype"):
        tk.fff_forward(x.half(), in_w, in_b, out_w)
    with pytest.raises(ValueError, match="CUDA"):
        tk.fff_forward(x.cpu(), in_w.cpu(), in_b.cpu(), out_w.cpu())
    with pytest.raises(ValueError, match="hidden"):
        tk.fff_forward(x[:, :32], in_w, in_b, out_w)
    x, in_w, in_b, out_w = _random_fff(10, 64, 3, 2, torch.float32)
    with pytest.raises(ValueError, match="grouped"):
        tk.fff_forward(x, in_w, in_b, out_w, strategy="grouped")


@pytest.mark.parametrize("batch", [16, 64])  # 1024 tokens per layer: phased; 4096: grouped (with the residual)
def test_model_native_matches_torch_walk(batch):
    from modeling_ultrafastbert import UltraFastBertConfig, UltraFastBertForSequenceClassification

    config = UltraFastBertConfig(
        vocab_size=500, hidden_size=128, num_hidden_layers=2, num_attention_heads=4, fff_depth=6,
        max_position_embeddings=64, fff_kernel="native",
    )
    model = UltraFastBertForSequenceClassification(config).cuda().eval()
    ids = torch.randint(0, 500, (batch, 64), device="cuda")
    assert (batch * 64 >= tk.GROUPED_MIN_TOKENS) == (batch == 64)
    with torch.no_grad():
        native = model(input_ids=ids).logits
        model.config.fff_kernel = "torch"
        walk = model(input_ids=ids).logits
    # random weights: a near-tie flip in one token moves a pooled logit slightly, so compare loosely
    assert torch.allclose(native, walk, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_residual_is_added_while_writing(strategy, dtype):
    x, in_w, in_b, out_w = _random_fff(700, 768, 11, 1, dtype)
    residual = torch.randn(700, 2 * 768, device="cuda", dtype=dtype)[:, ::2]  # a strided (T, H) view
    with torch.no_grad():
        plain = tk.fff_forward(x, in_w, in_b, out_w, strategy=strategy)
        fused = tk.fff_forward(x, in_w, in_b, out_w, strategy=strategy, residual=residual)
    # same decisions (same kernel, same logits): the only difference is the residual added in fp32 before rounding
    tol = 1e-6 if dtype == torch.float32 else 1e-2
    torch.testing.assert_close(fused.float(), residual.float() + plain.float(), rtol=tol, atol=tol)
    with pytest.raises(ValueError, match="residual"):
        tk.fff_forward(x, in_w, in_b, out_w, strategy=strategy, residual=residual[:10])
    with pytest.raises(ValueError, match="residual"):
        tk.fff_forward(x, in_w, in_b, out_w, strategy=strategy, residual=residual.half())


@pytest.mark.parametrize("split", [2, 3])
def test_grouped_split_output_columns(split, monkeypatch):
    monkeypatch.setitem(tk.GROUPED_CONFIG, "split", split)
    monkeypatch.setitem(tk.GROUPED_CONFIG, "split_max_tokens", 10**9)
    x, in_w, in_b, out_w = _random_fff(3000, 768, 11, 1, torch.bfloat16)
    tk.clear_launch_cache()  # launch plans are cached per call signature: a config change needs a fresh one
    with torch.no_grad():
        y = tk.fff_forward(x, in_w, in_b, out_w, strategy="grouped")
        monkeypatch.setitem(tk.GROUPED_CONFIG, "split", 1)
        tk.clear_launch_cache()
        ref = tk.fff_forward(x, in_w, in_b, out_w, strategy="grouped")
    tk.clear_launch_cache()
    assert torch.equal(y, ref)  # the same tiles and dot products, only distributed over more programs


def test_auto_picks_phased_for_few_tokens_and_grouped_for_many(monkeypatch):
    seen = []
    for name in ("phased", "grouped", "walk"):
        real = tk._RUNNERS[name]
        monkeypatch.setitem(tk._RUNNERS, name, lambda *a, _real=real, _name=name: seen.append(_name) or _real(*a))
    for tokens, trees, hidden, expect in ((128, 1, 768, "phased"), (tk.GROUPED_MIN_TOKENS, 1, 768, "grouped"),
                                          (tk.GROUPED_MIN_TOKENS, 2, 64, "phased"), (5, 1, 4096, "walk")):
        x, in_w, in_b, out_w = _random_fff(tokens, hidden, 5, trees, torch.bfloat16)
        tk.clear_launch_cache()  # the strategy is chosen when a call signature is first seen
        tk.fff_forward(x, in_w, in_b, out_w)
        assert seen[-1] == expect, (tokens, trees, hidden)
    tk.clear_launch_cache()


@pytest.mark.parametrize("tokens", [200, 3200])  # the phased and the grouped path
def test_layer_compiles_with_the_triton_kernel(tokens):
    # torch.compile traces user Triton kernels; the compiled layer must run the same kernels (same result)
    layer = FastFeedForward(128, depth=7, trees=1, kernel="native").cuda().eval().to(torch.bfloat16)
    x = torch.randn(tokens, 128, device="cuda", dtype=torch.bfloat16)
    residual = torch.randn_like(x)
    with torch.no_grad():
        eager = layer(x, residual=residual)
        compiled = torch.compile(layer, fullgraph=True)(x, residual=residual)
    torch.testing.assert_close(compiled, eager, rtol=0, atol=0)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_cached_launches_match_a_fresh_launch(strategy):
    """Later calls of a signature go through the cached plan and Triton's compiled launcher; they must compute what
    a first (validated, described, ordinarily launched) call computes, also for a misaligned input (a new plan)."""
    x, in_w, in_b, out_w = _random_fff(700, 768, 11, 1, torch.float32)
    residual = torch.randn_like(x)
    with torch.no_grad():
        tk.clear_launch_cache()
        first = tk.fff_forward(x, in_w, in_b, out_w, strategy=strategy, residual=residual)
        assert len(tk._PLANS) == 1
        (plan,) = tk._PLANS.values()
        again = [tk.fff_forward(x, in_w, in_b, out_w, strategy=strategy, residual=residual) for _ in range(3)]
        assert len(tk._PLANS) == 1
        if tk._COMPILED_LAUNCH:
            assert all(launch.compiled is not None for launch in plan.launches)
        for y in again:
            assert torch.equal(y, first)
        # a view starting one element in is not 16-byte aligned: Triton specialises differently, so a new plan
        shifted = torch.empty(700 * 768 + 1, device="cuda")[1:].view(700, 768)
        shifted.copy_(x)
        assert shifted.data_ptr() % 16 != 0
        y_shifted = [tk.fff_forward(shifted, in_w, in_b, out_w, strategy=strategy, residual=residual) for _ in range(2)]
        assert len(tk._PLANS) == 2
        keep = _stable_tokens(x, in_w, in_b, 1e-4)
        for y in y_shifted:  # another specialisation may sum in another order: equal up to rounding
            assert _rel(y[keep], first[keep]) <= 1e-5
        # validation is not skipped for a signature never seen, even after many cached calls
        with pytest.raises(ValueError, match="dtype"):
            tk.fff_forward(x, in_w.half(), in_b, out_w, strategy=strategy)
    tk.clear_launch_cache()


def _tiny_gpu_model(dtype):
    from modeling_ultrafastbert import UltraFastBertConfig, UltraFastBertForSequenceClassification

    config = UltraFastBertConfig(
        vocab_size=500, hidden_size=128, num_hidden_layers=2, num_attention_heads=4, fff_depth=6,
        max_position_embeddings=64, attn_implementation="sdpa",
    )
    return UltraFastBertForSequenceClassification(config).cuda().to(dtype).eval()


@pytest.mark.parametrize("batch", [4, 64])  # 256 tokens per layer: phased; 4096: grouped (workspaces, memset)
def test_whole_model_in_a_cuda_graph(batch):
    model = _tiny_gpu_model(torch.float32)
    static_ids = torch.randint(1, 500, (batch, 64), device="cuda")
    static_mask = torch.ones_like(static_ids)
    static_mask[0, 40:] = 0
    with torch.no_grad():
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm up (compiles the kernels) outside the capture
            model(input_ids=static_ids, attention_mask=static_mask)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):  # no host syncs may happen in here
            static_logits = model(input_ids=static_ids, attention_mask=static_mask).logits
        for _ in range(2):
            ids = torch.randint(1, 500, (batch, 64), device="cuda")
            static_ids.copy_(ids)
            graph.replay()
            eager = model(input_ids=ids, attention_mask=static_mask).logits
            torch.testing.assert_close(static_logits, eager, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("batch", [4, 64])
def test_whole_model_compiles_with_reduce_overhead(batch):
    model = _tiny_gpu_model(torch.bfloat16)
    compiled = torch.compile(model, mode="reduce-overhead")
    with torch.no_grad():
        for step in range(4):  # cudagraph trees record on the first calls, then replay
            ids = torch.randint(1, 500, (batch, 64), device="cuda")
            mask = torch.ones_like(ids)
            mask[-1, 50:] = 0
            eager = model(input_ids=ids, attention_mask=mask).logits
            got = compiled(input_ids=ids, attention_mask=mask).logits.clone()
            # bf16: inductor fuses the LayerNorms and adds differently; a token near a tie may take another branch
            torch.testing.assert_close(got.float(), eager.float(), rtol=3e-2, atol=3e-2)

@pytest.mark.parametrize("tokens", [130, 4096, 16384])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_adaptivfloat8_grouped_kernel_equals_grouped_kernel_on_decoded_weights(tokens, dtype):
    from modeling_ultrafastbert.adaptivfloat import adaptivfloat_dequantize, adaptivfloat_quantize

    x, in_w, in_b, out_w = _random_fff(tokens, 768, 11, 1, torch.float32)
    c1, e1 = adaptivfloat_quantize(in_w)
    c2, e2 = adaptivfloat_quantize(out_w)
    d1, d2 = adaptivfloat_dequantize(c1, e1).to(dtype), adaptivfloat_dequantize(c2, e2).to(dtype)
    x, in_b = x.to(dtype), in_b.to(dtype)
    residual = torch.randn_like(x)
    got = tk.fff_forward_adaptivfloat8(x, c1, e1, in_b, c2, e2, residual=residual)
    expected = tk.fff_forward(x, d1, in_b, d2, strategy="grouped", residual=residual)
    assert torch.equal(got, expected)  # decoding is exact: the same tiles, the same sums
    keep = _stable_tokens(x, d1, in_b, 1e-3 if dtype == torch.float32 else 3e-2)
    reference = fff_conditional_torch(x.double(), d1.double(), in_b.double(), d2.double()) + residual.double()
    tol = 1e-4 if dtype == torch.float32 else 3e-2
    assert _rel(got[keep], reference[keep]) < tol


def test_adaptivfloat8_model_uses_the_8bit_kernel_on_cuda():
    from modeling_ultrafastbert.adaptivfloat import AdaptivFloatFastFeedForward

    fff = AdaptivFloatFastFeedForward(64, 5, 1).cuda().eval()
    with torch.no_grad():
        fff._set_codes("in_weight", torch.randn(1, 63, 64, device="cuda") / 8)
        fff._set_codes("out_weight", torch.randn(1, 63, 64, device="cuda"))
    x = torch.randn(300, 64, device="cuda")
    calls = []
    original = tk.fff_forward_adaptivfloat8
    tk.fff_forward_adaptivfloat8 = lambda *a, **k: calls.append(1) or original(*a, **k)
    try:
        import modeling_ultrafastbert.adaptivfloat as af

        af.triton_fff_forward_adaptivfloat8 = tk.fff_forward_adaptivfloat8
        with torch.no_grad():
            y = fff(x)
    finally:
        tk.fff_forward_adaptivfloat8 = original
        af.triton_fff_forward_adaptivfloat8 = original
    assert calls, "the AdaptivFloat FFF did not run the 8-bit Triton kernel"
    fff.kernel = "torch"
    with torch.no_grad():
        torch.testing.assert_close(y, fff(x), rtol=1e-4, atol=1e-4)


def test_early_exit_on_cuda_with_the_triton_kernels_matches_the_cpu():
    """Early exit on the GPU (Triton FFF kernels, shrinking batch) gives every example the exit layer and logits the
    CPU PyTorch walk gives it."""
    from modeling_ultrafastbert import UltraFastBertConfig, UltraFastBertForSequenceClassification
    from modeling_ultrafastbert.early_exit import softmax_entropy

    torch.manual_seed(0)
    config = UltraFastBertConfig(
        vocab_size=500, hidden_size=128, num_hidden_layers=4, num_attention_heads=4, fff_depth=6,
        max_position_embeddings=64, exit_ramps=True, fff_kernel="torch",
    )
    cpu = UltraFastBertForSequenceClassification(config).eval()
    with torch.no_grad():
        for ramp in cpu.exit_ramps:
            ramp.classifier.weight.mul_(8.0)  # spread the entropies so that examples leave at different layers
    ids = torch.randint(5, 500, (48, 40))
    mask = (torch.arange(40)[None] < torch.randint(4, 41, (48, 1))).long()
    with torch.no_grad():
        entropies = softmax_entropy(cpu(ids, attention_mask=mask, output_exit_logits=True).exit_logits)
    threshold = float(entropies[:, 1].median())
    cpu.set_exit_threshold(threshold)
    import copy

    gpu = UltraFastBertForSequenceClassification(copy.deepcopy(cpu.config)).eval()
    gpu.load_state_dict(cpu.state_dict())
    gpu.config.fff_kernel = "native"
    gpu.set_exit_threshold(threshold)
    gpu.cuda()
    with torch.no_grad():
        expected = cpu(ids, attention_mask=mask)
        got = gpu(ids.cuda(), attention_mask=mask.cuda())
    assert len(set(expected.exit_layers.tolist())) > 1
    # decisions near the threshold may flip with rounding: compare where the entropies are clear of it
    clear = ((entropies[:, :-1] - threshold).abs() > 1e-3).all(-1)
    assert clear.float().mean() > 0.8
    assert got.exit_layers.cpu()[clear].tolist() == expected.exit_layers[clear].tolist()
    torch.testing.assert_close(got.logits.cpu()[clear], expected.logits[clear], rtol=1e-4, atol=1e-4)
