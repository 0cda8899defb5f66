"""EdgeBERT part 2: adaptive attention span (a learned span per head; span-0 heads skipped, the others banded)."""

import math
import warnings

import pytest
import torch
from conftest import run_in_clean_env, tiny_config

from modeling_ultrafastbert import (
    UltraFastBertConfig,
    UltraFastBertForMaskedLM,
    UltraFastBertForQuestionAnswering,
    UltraFastBertForSequenceClassification,
    UltraFastBertForTokenClassification,
    UltraFastBertModel,
)
from modeling_ultrafastbert import adaptive_span as adaptive_span_module
from modeling_ultrafastbert.adaptive_span import AdaptiveSpan, banded_attention, span_penalty, span_summary
from modeling_ultrafastbert.fff_cpu_kernel import banded_span_attention as native_banded_attention
from modeling_ultrafastbert.fff_cpu_kernel import banded_span_attention_available as native_banded_available

warnings.filterwarnings("ignore", message="UltraFastBERT: no native FFF kernel")

NO_DROPOUT = dict(attention_probs_dropout_prob=0.0, hidden_dropout_prob=0.0, embedding_dropout_prob=0.0,
                  classifier_dropout=0.0)


def span_model(cls=UltraFastBertModel, seed: int = 0, **overrides):
    torch.manual_seed(seed)
    values = dict(adaptive_span=True, adaptive_span_ramp=4.0, max_position_embeddings=96, **NO_DROPOUT)
    values.update(overrides)
    return cls(tiny_config(**values))


def set_spans(model, spans_per_layer):
    """Set z (tokens) of every head, layer by layer."""
    with torch.no_grad():
        for module, spans in zip([m for m in model.modules() if isinstance(m, AdaptiveSpan)], spans_per_layer):
            module.span_fraction.copy_(torch.tensor(spans, dtype=torch.float32) / module.max_positions)


def batch(seed: int = 1, size: int = 3, length: int = 70, vocab: int = 211):
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, vocab, (size, length), generator=generator)
    mask = torch.ones_like(ids)
    mask[0, length // 2:] = 0
    mask[1, :5] = 0  # left padding too
    return ids, mask


def soft_and_fast(model, ids, mask):
    """Last hidden states from the training form (soft mask, via output_attentions) and the fast inference form."""
    model.eval()
    with torch.no_grad():
        fast = model(ids, attention_mask=mask).last_hidden_state
        soft = model(ids, attention_mask=mask, output_attentions=True).last_hidden_state
    return soft, fast


# --- the function -------------------------------------------------------------------------------------------------

def test_config_is_off_by_default_and_validated():
    config = UltraFastBertConfig()
    assert config.adaptive_span is False
    assert not any(isinstance(m, AdaptiveSpan) for m in UltraFastBertModel(tiny_config()).modules())
    with pytest.raises(ValueError, match="adaptive_span_ramp"):
        tiny_config(adaptive_span=True, adaptive_span_ramp=0)
    with pytest.raises(ValueError, match="adaptive_span_penalty"):
        tiny_config(adaptive_span=True, adaptive_span_penalty=-1.0)
    with pytest.raises(ValueError, match="adaptive_span_init"):
        tiny_config(adaptive_span=True, adaptive_span_init=1000.0)
    with pytest.raises(ValueError, match="adaptive_span must be a bool"):
        tiny_config(adaptive_span="yes")


def test_mask_formula():
    module = AdaptiveSpan(num_heads=3, max_positions=64, ramp=4.0, initial_span=0.0)
    with torch.no_grad():
        module.span_fraction.copy_(torch.tensor([-4.0, 0.0, 2.5]) / 64)
    mask = module.mask(12)
    distance = torch.arange(12).float()
    for head, z in enumerate([-4.0, 0.0, 2.5]):
        torch.testing.assert_close(mask[head, 0], ((4.0 + z - distance) / 4.0).clamp(0, 1))
    assert mask[0].abs().sum() == 0  # z = -R: the head is off
    assert module.spans().tolist() == [0.0, 4.0, 6.5]
    with torch.no_grad():  # z is held in [-R, max_positions]
        module.span_fraction.copy_(torch.tensor([-5.0, 2.0, 0.5]))
    assert module.z().tolist() == [-4.0, 64.0, 32.0]


@pytest.mark.parametrize("training", [False, True])
def test_span_at_least_the_sequence_is_plain_attention(training):
    length = 40
    model = span_model(seed=3)  # default init: z = max_position_embeddings
    plain = UltraFastBertModel(tiny_config(max_position_embeddings=96, **NO_DROPOUT))
    missing, unexpected = plain.load_state_dict(model.state_dict(), strict=False)
    assert not missing and unexpected and all("adaptive_span" in key for key in unexpected)
    set_spans(model, [[length - 1] * 4, [200.0] * 4])  # exactly the farthest distance, and beyond the maximum
    ids, mask = batch(length=length)
    model.train(training), plain.train(training)
    with torch.set_grad_enabled(training):
        ours = model(ids, attention_mask=mask).last_hidden_state
        theirs = plain(ids, attention_mask=mask).last_hidden_state
    real = mask.bool()
    torch.testing.assert_close(ours[real], theirs[real], rtol=1e-5, atol=1e-5)


def test_all_heads_at_span_zero_compute_nothing_and_give_zero():
    model = span_model(seed=4)
    set_spans(model, [[-4.0] * 4, [10.0, -6.0, 3.0, 30.0]])
    attention = model.layers[0].attention
    projections = []
    handles = [module.register_forward_hook(lambda *args: projections.append(1))
               for module in (attention.query_key_value, attention.dense)]
    hidden = torch.randn(2, 30, model.config.hidden_size)
    model.eval()
    with torch.no_grad():
        output, _ = attention(hidden, None)
        model(*batch(length=30))
    for handle in handles:
        handle.remove()
    assert torch.equal(output, torch.zeros_like(output))
    assert projections == [] and attention.computed_heads == 0
    assert model.layers[1].attention.computed_heads == 3
    # the soft (training) form agrees: every weight of the layer is masked
    with torch.no_grad():
        soft, _ = attention.train()(hidden, None)
    assert torch.equal(soft, torch.zeros_like(soft))


NATIVE_BAND = adaptive_span_module.native_banded_attention is not None and native_banded_available()


@pytest.mark.parametrize("length,spans,layouts,native", [
    # narrow bands on a long sequence: the native CPU kernel; without it, query blocks with key windows
    (250, [[0.0, 2.5, -4.0, 1.0], [2.0, -3.0, 1.25, 1.0]], ["native", "native"], True),
    (250, [[0.0, 2.5, -4.0, 1.0], [2.0, -3.0, 1.25, 1.0]], ["blocks", "blocks"], False),
    (100, [[9.0, 2.5, 30.0, -4.0], [0.5, -3.0, 11.0, 1.0]], ["native", "native"], True),  # tails, mixed widths
    # wide bands: one dense call with the log-mask bias; spans past the sequence: plain attention
    (70, [[60.0, 20.0, -4.0, 33.0], [-4.0, 80.0, -4.0, 200.0]], ["dense", "full"], True),
    (9, [[0.0, 1.5, -4.0, 3.0], [-1.0, 2.0, 0.5, 8.0]], ["dense", "dense"], True),  # short sequence
])
def test_soft_form_equals_fast_form(length, spans, layouts, native, monkeypatch):
    if native and "native" in layouts and not NATIVE_BAND:
        pytest.skip("the native CPU kernel could not be built here (its fallback is the row without it)")
    if not native:
        monkeypatch.setattr(adaptive_span_module, "native_banded_attention", None)
    model = span_model(seed=5, max_position_embeddings=256)
    set_spans(model, spans)
    ids, mask = batch(length=length)
    soft, fast = soft_and_fast(model, ids, mask)
    real = mask.bool()
    torch.testing.assert_close(fast[real], soft[real], rtol=1e-5, atol=1e-5)
    assert torch.isfinite(fast).all()
    assert [layer.attention.band_path for layer in model.layers] == layouts
    no_padding = torch.ones_like(mask)  # and without a padding mask (the layout's own edge bias only)
    soft, fast = soft_and_fast(model, ids, no_padding)
    torch.testing.assert_close(fast, soft, rtol=1e-5, atol=1e-5)


def test_banded_attention_against_a_reference_per_head():
    generator = torch.Generator().manual_seed(0)
    query, key, value = (torch.randn(2, 3, 50, 8, generator=generator) for _ in range(3))
    z, ramp = torch.tensor([0.0, 3.5, 9.0]), 2.0
    distance = (torch.arange(50)[:, None] - torch.arange(50)[None, :]).abs().float()
    mask = ((ramp + z[:, None, None] - distance) / ramp).clamp(0, 1)
    weights = torch.softmax(query @ key.transpose(-1, -2) * 0.3, -1) * mask
    expected = (weights / weights.sum(-1, keepdim=True)) @ value
    got = banded_attention(query, key, value, z, ramp, None, 0.3)
    torch.testing.assert_close(got, expected.transpose(1, 2), rtol=1e-5, atol=1e-5)
    # a long sequence takes the block path
    query, key, value = (torch.randn(1, 3, 300, 8, generator=generator) for _ in range(3))
    distance = (torch.arange(300)[:, None] - torch.arange(300)[None, :]).abs().float()
    mask = ((ramp + z[:, None, None] - distance) / ramp).clamp(0, 1)
    weights = torch.softmax(query @ key.transpose(-1, -2) * 0.3, -1) * mask
    expected = (weights / weights.sum(-1, keepdim=True)) @ value
    got = banded_attention(query, key, value, z, ramp, None, 0.3)
    torch.testing.assert_close(got, expected.transpose(1, 2), rtol=1e-5, atol=1e-5)


def test_gradients_reach_z_and_the_penalty_is_in_the_loss():
    model = span_model(UltraFastBertForSequenceClassification, seed=6, num_labels=2, adaptive_span_penalty=0.0)
    set_spans(model, [[3.0, 8.0, 1.0, 20.0], [5.0, 2.0, 9.0, 0.0]])
    ids, mask = batch(length=30)
    labels = torch.tensor([0, 1, 1])
    model.train()
    base = model(ids, attention_mask=mask, labels=labels).loss
    base.backward()
    grads = torch.stack([m.span_fraction.grad for m in model.modules() if isinstance(m, AdaptiveSpan)])
    assert (grads != 0).all(), grads  # every head's span is inside the sequence: the task loss depends on it
    model.zero_grad()
    model.config.adaptive_span_penalty = 0.05
    with_penalty = model(ids, attention_mask=mask, labels=labels).loss
    mean_z = torch.tensor([3.0, 8.0, 1.0, 20.0, 5.0, 2.0, 9.0, 0.0]).mean()
    torch.testing.assert_close(with_penalty - base.detach(), 0.05 * mean_z, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(span_penalty(model, 0.05), 0.05 * mean_z)
    model.eval()  # no penalty outside training
    with torch.no_grad():
        assert model(ids, attention_mask=mask, labels=labels).loss < with_penalty


def _penalty_in_loss(model, **inputs):
    """The training loss with the model's span penalty minus the same loss without it."""
    model.train()
    coefficient = model.config.adaptive_span_penalty
    with_penalty = model(**inputs).loss
    model.config.adaptive_span_penalty = 0.0
    without = model(**inputs).loss
    model.config.adaptive_span_penalty = coefficient
    return with_penalty - without


def test_masked_lm_loss_gets_the_penalty():
    model = span_model(UltraFastBertForMaskedLM, seed=7, adaptive_span_penalty=0.1)
    set_spans(model, [[4.0] * 4, [12.0] * 4])
    ids, mask = batch(length=20)
    penalty = _penalty_in_loss(model, input_ids=ids, attention_mask=mask, labels=ids.clone())
    torch.testing.assert_close(penalty, torch.tensor(0.1 * 8.0), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("head", ["token", "qa"])
def test_token_classification_and_qa_losses_get_the_penalty(head):
    cls = UltraFastBertForTokenClassification if head == "token" else UltraFastBertForQuestionAnswering
    model = span_model(cls, seed=8, adaptive_span_penalty=0.1, num_labels=3)
    set_spans(model, [[4.0] * 4, [12.0] * 4])  # mean z = 8
    ids, mask = batch(length=20)
    if head == "token":
        labels = torch.randint(0, 3, ids.shape, generator=torch.Generator().manual_seed(0))
        inputs = dict(input_ids=ids, attention_mask=mask, labels=labels)
    else:
        inputs = dict(input_ids=ids, attention_mask=mask, start_positions=torch.tensor([1, 2, 3]),
                      end_positions=torch.tensor([4, 5, 6]))
    torch.testing.assert_close(_penalty_in_loss(model, **inputs), torch.tensor(0.1 * 8.0), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("cls", [UltraFastBertForSequenceClassification, UltraFastBertForMaskedLM])
def test_penalty_takes_the_micro_batch_share_under_num_items_in_batch(cls):
    """Trainer sums the micro-batch losses of a step when it passes num_items_in_batch: the penalty must then be
    split by the items of each micro-batch, so that the step counts it once (not once per micro-batch or device)."""
    model = span_model(cls, seed=9, adaptive_span_penalty=0.1, num_labels=2)
    set_spans(model, [[4.0] * 4, [12.0] * 4])
    ids, mask = batch(length=20)
    labels = torch.tensor([0, 1, 1]) if cls is UltraFastBertForSequenceClassification else ids.clone()
    if cls is UltraFastBertForMaskedLM:
        labels[:, ::2] = -100  # unlabelled positions do not count
    items = int(labels.ne(-100).sum())
    for total in (items, 4 * items):
        share = _penalty_in_loss(model, input_ids=ids, attention_mask=mask, labels=labels,
                                 num_items_in_batch=torch.tensor(total))
        torch.testing.assert_close(share, torch.tensor(0.1 * 8.0 * items / total), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("length", [25, 60])  # 60: long enough for the native CPU band kernel
def test_spans_apply_on_the_early_exit_path(length):
    model = span_model(UltraFastBertForSequenceClassification, seed=8, num_labels=2, exit_ramps=True)
    set_spans(model, [[-4.0, 2.0, 5.0, -4.0], [1.0, -4.0, 0.0, 6.0]])
    ids, mask = batch(length=length)
    model.eval()
    with torch.no_grad():
        full = model(ids, attention_mask=mask, output_exit_logits=True).exit_logits
        model.set_exit_threshold(0.0)  # nobody exits early: the exiting path runs every layer
        exiting = model(ids, attention_mask=mask)
    assert exiting.exit_layers.tolist() == [2, 2, 2]
    assert [layer.attention.computed_heads for layer in model.ultrafastbert.layers] == [2, 3]
    if length == 60 and NATIVE_BAND:
        assert [layer.attention.band_path for layer in model.ultrafastbert.layers] == ["native", "native"]
    torch.testing.assert_close(exiting.logits, full[:, -1], rtol=1e-5, atol=1e-5)
    model.set_exit_threshold(100.0)  # everyone exits at layer 1
    with torch.no_grad():
        first = model(ids, attention_mask=mask)
    torch.testing.assert_close(first.logits, full[:, 0], rtol=1e-5, atol=1e-5)


def test_span_summary_and_heatmap(tmp_path):
    from modeling_ultrafastbert.adaptive_span import plot_span_heatmap

    model = span_model(seed=9)
    set_spans(model, [[-4.0, 12.0, -4.0, 28.0], [-4.0, -4.0, 4.0, 60.0]])
    summary = span_summary(model, 64)
    assert summary["spans_per_layer"] == [[0.0, 16.0, 0.0, 32.0], [0.0, 0.0, 8.0, 64.0]]
    assert summary["heads_at_span_0"] == 4 and summary["mean_span"] == 15.0
    pytest.importorskip("matplotlib")
    assert plot_span_heatmap(model, tmp_path / "spans.png") and (tmp_path / "spans.png").stat().st_size > 0


# --- checkpoints ----------------------------------------------------------------------------------------------------

def test_save_and_load_keep_the_spans(tmp_path):
    model = span_model(UltraFastBertForSequenceClassification, seed=10, num_labels=2).eval()
    set_spans(model, [[-4.0, 3.0, 7.0, 50.0], [0.5, -4.0, 9.0, 2.0]])
    ids, mask = batch(length=33)
    with torch.no_grad():
        expected = model(ids, attention_mask=mask).logits
    model.save_pretrained(tmp_path)
    assert (tmp_path / "adaptive_span.py").exists()
    loaded = UltraFastBertForSequenceClassification.from_pretrained(tmp_path).eval()
    assert loaded.config.adaptive_span and loaded.config.adaptive_span_ramp == 4.0
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids, attention_mask=mask).logits, expected, rtol=1e-6, atol=1e-6)


def test_a_checkpoint_without_spans_is_unchanged_and_gains_full_spans(tmp_path):
    torch.manual_seed(11)
    plain = UltraFastBertForSequenceClassification(tiny_config(num_labels=2, max_position_embeddings=96)).eval()
    plain.save_pretrained(tmp_path)
    assert not any("adaptive_span" in key for key in plain.state_dict())
    ids, mask = batch(length=33)
    with torch.no_grad():
        expected = plain(ids, attention_mask=mask).logits
        reloaded = UltraFastBertForSequenceClassification.from_pretrained(tmp_path).eval()
        torch.testing.assert_close(reloaded(ids, attention_mask=mask).logits, expected)
        # switched on at load: the spans start at the maximum, i.e. the same function
        spanned = UltraFastBertForSequenceClassification.from_pretrained(tmp_path, adaptive_span=True).eval()
        assert all(m.z().eq(96).all() for m in spanned.modules() if isinstance(m, AdaptiveSpan))
        torch.testing.assert_close(spanned(ids, attention_mask=mask).logits, expected, rtol=1e-5, atol=1e-5)


def test_remote_code_with_spans(tmp_path):
    model = span_model(UltraFastBertForSequenceClassification, seed=12, num_labels=2).eval()
    set_spans(model, [[-4.0, 3.0, 7.0, 50.0], [0.5, -4.0, 9.0, 2.0]])
    ids, mask = batch(length=33)
    with torch.no_grad():
        expected = model(ids, attention_mask=mask).logits
    model.save_pretrained(tmp_path / "checkpoint")
    torch.save({"ids": ids, "mask": mask, "expected": expected}, tmp_path / "io.pt")
    output = run_in_clean_env(
        f"""
        import warnings, torch
        warnings.simplefilter("ignore")
        from transformers import AutoModelForSequenceClassification
        io = torch.load({str(tmp_path / 'io.pt')!r})
        model = AutoModelForSequenceClassification.from_pretrained({str(tmp_path / 'checkpoint')!r},
                                                                   trust_remote_code=True).eval()
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        with torch.no_grad():
            torch.testing.assert_close(model(io["ids"], attention_mask=io["mask"]).logits, io["expected"],
                                       rtol=1e-5, atol=1e-5)
        print("heads computed", [layer.attention.computed_heads for layer in model.ultrafastbert.layers])
        """,
        tmp_path,
    )
    assert "heads computed [3, 3]" in output


@pytest.mark.parametrize("adaptive_span", [False, True])
def test_sdpa_and_eager_agree(adaptive_span):
    torch.manual_seed(13)
    config = tiny_config(max_position_embeddings=96, adaptive_span=adaptive_span, adaptive_span_ramp=4.0, **NO_DROPOUT)
    ids, mask = batch(length=40)
    outputs = []
    for implementation in ("sdpa", "eager"):
        config._attn_implementation = implementation
        torch.manual_seed(13)
        model = UltraFastBertModel(config).eval()
        if adaptive_span:
            set_spans(model, [[2.0, -4.0, 9.0, 30.0], [0.0, 5.0, -4.0, -4.0]])
        with torch.no_grad():
            outputs.append(model(ids, attention_mask=mask).last_hidden_state)
    torch.testing.assert_close(outputs[0][mask.bool()], outputs[1][mask.bool()], rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_soft_form_equals_fast_form_on_cuda():
    model = span_model(seed=14).cuda()
    set_spans(model, [[0.0, 5.5, -4.0, 11.0], [2.0, -3.0, 60.25, 1.0]])
    ids, mask = (t.cuda() for t in batch(length=70))
    real = mask.bool()
    soft, fast = soft_and_fast(model, ids, mask)
    torch.testing.assert_close(fast[real], soft[real], rtol=1e-5, atol=1e-5)
    # bf16: the fast form is no farther from the fp32 result than the soft form is (rounding alone)
    model.to(torch.bfloat16)
    soft16, fast16 = soft_and_fast(model, ids, mask)
    soft_error = (soft16[real].float() - soft[real]).abs().max()
    fast_error = (fast16[real].float() - soft[real]).abs().max()
    assert fast_error <= 2 * soft_error + 1e-2, (fast_error, soft_error)


FUSED_CHECK = """
import torch
from modeling_ultrafastbert import adaptive_span, UltraFastBertModel, UltraFastBertConfig
from modeling_ultrafastbert.adaptive_span import AdaptiveSpan

calls = []
kernel = adaptive_span.triton_span_attention
class CountedLaunch(adaptive_span.SpanLaunch):
    def __call__(self, *args):
        calls.append(args[-1] is not None)  # the residual, fused into the launch
        return super().__call__(*args)
adaptive_span.SpanLaunch = CountedLaunch

def model_with(spans, length, device, dtype=torch.float32):
    torch.manual_seed(3)
    config = UltraFastBertConfig(vocab_size=211, hidden_size=64, num_hidden_layers=3, num_attention_heads=4,
                                 fff_depth=2, max_position_embeddings=length, adaptive_span=True,
                                 adaptive_span_ramp=4.0, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                                 embedding_dropout_prob=0.0)
    model = UltraFastBertModel(config)
    with torch.no_grad():
        for module, values in zip([m for m in model.modules() if isinstance(m, AdaptiveSpan)], spans):
            module.span_fraction.copy_(torch.tensor(values) / module.max_positions)
    return model.to(device, dtype).eval()

def inputs(length, device):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1, 211, (3, length), generator=g)
    mask = torch.ones_like(ids)
    mask[0, length // 2:] = 0
    mask[1, :5] = 0
    return ids.to(device), mask.to(device)

def check(device):
    # layer 1: narrow bands (key windows), one head off; layer 2: every head off; layer 3: wide (the whole sequence)
    spans = [[0.0, 2.5, -4.0, 1.0], [-4.0, -4.0, -4.0, -4.0], [60.0, 20.0, -4.0, 33.0]]
    for length in (70, 33):
        model = model_with(spans, length, device)
        ids, mask = inputs(length, device)
        real = mask.bool()
        calls.clear()
        with torch.no_grad():
            fast = model(ids, attention_mask=mask).last_hidden_state
            soft = model(ids, attention_mask=mask, output_attentions=True).last_hidden_state
            unpadded = model(ids).last_hidden_state
            soft_unpadded = model(ids, output_attentions=True).last_hidden_state
        # two fused launches per forward (the all-off layer computes nothing), with the skip connection fused
        assert calls == [True] * 4, calls
        torch.testing.assert_close(fast[real], soft[real], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(unpadded, soft_unpadded, rtol=1e-5, atol=1e-5)
        # the attention block alone (no residual), against the PyTorch banded form
        attention = model.layers[0].attention
        hidden = torch.randn(2, length, 64, device=device)
        with torch.no_grad():
            fused = attention(hidden, None)[0]
            adaptive_span.triton_span_attention = None
            reference = attention(hidden, None)[0]
            adaptive_span.triton_span_attention = kernel
            # the kernel's own entry point (other layouts of the padding bias) gives the same
            span = attention.adaptive_span
            active, z, active_spans = span.inference_plan()
            weights = adaptive_span._compact_projections(span, attention, active)
            width = max(int(-(-value // 1)) for value in active_spans) - 1
            direct = kernel(hidden, weights[0], weights[1], z, span.ramp, attention.scaling, width)
        torch.testing.assert_close(fused, reference, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(direct, fused, rtol=0, atol=0)
        # parameters changed in place: the cached launch data follows (new spans, new weights)
        with torch.no_grad():
            span.span_fraction.copy_(torch.tensor([1.0, -4.0, 3.0, -4.0]) / span.max_positions)
            attention.dense.weight.mul_(2.0)
            changed = attention(hidden, None)[0]
            adaptive_span.triton_span_attention = None
            changed_reference = attention(hidden, None)[0]
            adaptive_span.triton_span_attention = kernel
        assert attention.computed_heads == 2
        torch.testing.assert_close(changed, changed_reference, rtol=1e-5, atol=1e-5)
    # a band too wide for one program's key window: the PyTorch path, no launch
    model = model_with([[300.0, 1.0, 1.0, 1.0]] * 3, 300, device)
    calls.clear()
    with torch.no_grad():
        model(torch.randint(1, 211, (1, 300), device=device))
    assert calls == [], calls
    return model_with(spans, 70, device)
"""


def test_fused_span_kernel_in_the_triton_interpreter(tmp_path):
    """TRITON_INTERPRET=1 runs the fused Triton kernel on CPU tensors (a fresh interpreter: the flag is read at
    import); the same checks run on CUDA in the next test."""
    import os
    import subprocess
    import sys

    pytest.importorskip("triton")
    from conftest import REPO_ROOT, require_triton_interpreter

    require_triton_interpreter()

    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=str(REPO_ROOT))
    result = subprocess.run([sys.executable, "-c", FUSED_CHECK + "\ncheck('cpu')\nprint('fused ok')"], cwd=tmp_path,
                            env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "fused ok" in result.stdout


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fused_span_kernel_on_cuda():
    namespace = {}
    exec(FUSED_CHECK, namespace)
    model = namespace["check"]("cuda")
    ids, mask = namespace["inputs"](70, "cuda")
    real = mask.bool()
    with torch.no_grad():
        reference = model(ids, attention_mask=mask, output_attentions=True).last_hidden_state
        model.to(torch.bfloat16)
        soft16 = model(ids, attention_mask=mask, output_attentions=True).last_hidden_state
        fast16 = model(ids, attention_mask=mask).last_hidden_state
    # bf16: the fused kernel is no farther from the fp32 result than the bf16 soft form is (rounding alone)
    soft_error = (soft16[real].float() - reference[real]).abs().max()
    fast_error = (fast16[real].float() - reference[real]).abs().max()
    assert fast_error <= 2 * soft_error + 1e-2, (fast_error, soft_error)


def test_run_glue_learns_spans_and_reports_them(wordpiece_tokenizer, tmp_path):
    import json

    from conftest import SHARED, load_example, require_sst2

    require_sst2()
    run_glue = load_example("run_glue")
    mlm = tmp_path / "mlm"
    torch.manual_seed(0)
    UltraFastBertForMaskedLM(tiny_config(vocab_size=wordpiece_tokenizer.vocab_size)).save_pretrained(mlm)
    wordpiece_tokenizer.save_pretrained(mlm)
    out = tmp_path / "sst2"
    results = run_glue.main([
        "--task", "sst2", "--model", str(mlm), "--data-dir", str(SHARED / "data" / "glue"), "--output-dir", str(out),
        "--max-steps", "8", "--batch-size", "16", "--max-length", "32", "--max-train-samples", "128",
        "--max-eval-samples", "32", "--adaptive-span", "--span-penalty", "0.5", "--span-lr", "0.05",
        "--span-ramp", "4", "--span-init", "20", "--span-penalty-form", "layer-rms",
    ])
    spans = results["adaptive_span"]["spans_per_layer"]
    assert len(spans) == 2 and all(len(layer) == 4 for layer in spans)
    assert all(span < 24.0 for layer in spans for span in layer)  # the penalty pulled every span below its start
    saved = json.loads((out / "config.json").read_text())
    assert saved["adaptive_span"] is True and saved["adaptive_span_ramp"] == 4.0
    assert saved["adaptive_span_penalty_form"] == "layer_rms"
    card = (out / "README.md").read_text()
    assert "## Adaptive attention span" in card and "| layer | head 0 |" in card
    assert "RMS of the layer's spans" in card
    loaded = UltraFastBertForSequenceClassification.from_pretrained(out)
    assert span_summary(loaded, 32)["spans_per_layer"] == spans


def test_layer_rms_penalty_value_gradient_and_config():
    model = span_model(UltraFastBertForSequenceClassification, seed=6, num_labels=2, adaptive_span_penalty=0.05,
                       adaptive_span_penalty_form="layer_rms")
    ramp = model.config.adaptive_span_ramp
    set_spans(model, [[-ramp, -ramp, -ramp, 4.0], [5.0, 2.0, 9.0, 0.0]])
    spans = torch.tensor([[0.0, 0.0, 0.0, 4.0 + ramp], [5.0 + ramp, 2.0 + ramp, 9.0 + ramp, ramp]])
    expected = 0.05 * (spans**2).mean(1).add(1e-6).sqrt().mean()
    torch.testing.assert_close(span_penalty(model, 0.05, "layer_rms"), expected)
    ids, mask = batch(length=30)
    labels = torch.tensor([0, 1, 1])
    torch.testing.assert_close(_penalty_in_loss(model, input_ids=ids, attention_mask=mask, labels=labels), expected,
                               rtol=1e-4, atol=1e-6)
    # the lone open head of layer 0 is pushed sqrt(heads) = 2x as hard as under the mean form
    grads = {}
    for form in ("mean", "layer_rms"):
        model.zero_grad()
        span_penalty(model, 0.05, form).backward()
        first = next(m for m in model.modules() if isinstance(m, AdaptiveSpan))
        grads[form] = first.span_fraction.grad[3].item()
    assert grads["mean"] > 0
    assert grads["layer_rms"] == pytest.approx(2.0 * grads["mean"], rel=1e-4)
    # a layer with every head closed contributes nothing and a finite (zero) gradient
    set_spans(model, [[-ramp] * 4, [-ramp] * 4])
    model.zero_grad()
    penalty = span_penalty(model, 0.05, "layer_rms")
    penalty.backward()
    assert penalty.item() < 1e-4
    assert all(torch.isfinite(m.span_fraction.grad).all() for m in model.modules() if isinstance(m, AdaptiveSpan))
    with pytest.raises(ValueError, match="adaptive_span_penalty_form"):
        tiny_config(adaptive_span=True, adaptive_span_penalty_form="median")
    with pytest.raises(ValueError, match="unknown span penalty form"):
        span_penalty(model, 0.05, "median")


@pytest.mark.parametrize("batch_size,length,head_dim,z,batch_major", [
    (3, 50, 64, [-10.0, 2.5, -15.5], False),  # a head of span 0.5: it sees only itself
    (2, 37, 32, [30.0, -3.0], True),          # a band wider than the sequence, a short last query block
    (1, 200, 20, [120.0], False),             # head_dim not a multiple of 16
    (2, 5, 16, [-15.9, 100.0], True),         # fewer tokens than one block
])
def test_native_band_kernel_equals_the_soft_form(batch_size, length, head_dim, z, batch_major):
    if not NATIVE_BAND:
        pytest.skip("the native CPU kernel could not be built here")
    generator = torch.Generator().manual_seed(length)
    heads, ramp = len(z), 16.0
    qkv = torch.randn(batch_size, length, heads, 3, head_dim, generator=generator)
    z = torch.tensor(z)
    width = max(math.ceil(s) for s in (z + ramp).tolist()) - 1
    key_bias = torch.zeros(batch_size, length)
    key_bias[-1, length - 2:] = torch.finfo(torch.float32).min  # padding as transformers writes it
    key_bias[0, :1] = -math.inf
    if batch_major:  # the layout one batched GEMM writes: (batch, heads, 3, head_dim, seq), viewed
        qkv_t = qkv.permute(0, 2, 3, 4, 1).contiguous().permute(1, 2, 3, 0, 4)
    else:
        qkv_t = qkv.permute(2, 3, 4, 0, 1).contiguous()
    got = native_banded_attention(qkv_t, z, ramp, head_dim**-0.5, width, key_bias.reshape(-1))
    assert got.shape == (heads, head_dim, batch_size, length)
    got = got.permute(2, 3, 0, 1).reshape(batch_size, length, heads * head_dim)
    query, key, value = qkv.permute(3, 0, 2, 1, 4).unbind(0)
    distance = (torch.arange(length)[:, None] - torch.arange(length)[None, :]).abs().float()
    mask = ((ramp + z[:, None, None] - distance) / ramp).clamp(0, 1)
    weights = torch.softmax(query @ key.transpose(-1, -2) * head_dim**-0.5 + key_bias[:, None, None, :], -1) * mask
    expected = ((weights / weights.sum(-1, keepdim=True)) @ value).transpose(1, 2).reshape(got.shape)
    real = key_bias.eq(0)  # a padding query may see only padding; its output is not used
    torch.testing.assert_close(got[real], expected[real], rtol=1e-5, atol=1e-5)
    assert torch.isfinite(got).all()


def test_native_band_kernel_rejects_bad_input():
    if not NATIVE_BAND:
        pytest.skip("the native CPU kernel could not be built here")
    qkv_t = torch.randn(2, 3, 16, 1, 40)
    with pytest.raises(ValueError, match="width"):
        native_banded_attention(qkv_t, torch.zeros(2), 4.0, 0.25, 10_000)
    with pytest.raises(ValueError, match="float32"):
        native_banded_attention(qkv_t.double(), torch.zeros(2), 4.0, 0.25, 3)
    with pytest.raises(RuntimeError, match="z must be"):
        native_banded_attention(qkv_t, torch.zeros(3), 4.0, 0.25, 3)
    with pytest.raises(RuntimeError, match="key_bias"):
        native_banded_attention(qkv_t, torch.zeros(2), 4.0, 0.25, 3, torch.zeros(7))
