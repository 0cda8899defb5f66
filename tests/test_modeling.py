"""UltraFastBERT models: outputs, heads, losses, padding, tying, switches, bad input, compile, checkpointing."""

import warnings

import pytest
import torch
from conftest import tiny_config

from modeling_ultrafastbert import (
    UltraFastBertConfig,
    UltraFastBertForMaskedLM,
    UltraFastBertForQuestionAnswering,
    UltraFastBertForSequenceClassification,
    UltraFastBertForTokenClassification,
    UltraFastBertModel,
)
from modeling_ultrafastbert import fast_feedforward

warnings.filterwarnings("ignore", message="UltraFastBERT: no native FFF kernel")


def inputs(config, batch=3, length=17, pad_from=9, seed=0):
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, config.vocab_size, (batch, length), generator=generator)
    mask = torch.ones(batch, length, dtype=torch.long)
    mask[1, pad_from:] = 0
    ids[1, pad_from:] = config.pad_token_id
    return ids, mask


def test_base_model_outputs_and_attention_implementations():
    config = tiny_config()
    model = UltraFastBertModel(config).eval()
    ids, mask = inputs(config)
    with torch.no_grad():
        out = model(ids, attention_mask=mask, output_hidden_states=True, output_attentions=True)
        sdpa = model(ids, attention_mask=mask)
    assert out.last_hidden_state.shape == (3, 17, config.hidden_size)
    assert len(out.hidden_states) == config.num_hidden_layers + 1
    assert torch.equal(out.hidden_states[-1], out.last_hidden_state)
    assert len(out.attentions) == config.num_hidden_layers
    assert out.attentions[0].shape == (3, config.num_attention_heads, 17, 17)
    # padded keys get no attention; probabilities sum to one
    assert torch.all(out.attentions[0][1, :, :, 9:] == 0)
    torch.testing.assert_close(out.attentions[0].sum(-1), torch.ones(3, config.num_attention_heads, 17))
    assert model.config._attn_implementation == "sdpa"
    torch.testing.assert_close(sdpa.last_hidden_state, out.last_hidden_state, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        tuple_out = model(ids, attention_mask=mask, return_dict=False)
        # an all-ones mask is dropped (so sdpa may use flash attention) and changes nothing
        torch.testing.assert_close(model(ids, attention_mask=torch.ones_like(ids)).last_hidden_state,
                                   model(ids).last_hidden_state)
    assert isinstance(tuple_out, tuple) and torch.equal(tuple_out[0], sdpa.last_hidden_state)


def test_padding_does_not_change_real_tokens_or_avg_pooling():
    config = tiny_config(num_labels=3)
    model = UltraFastBertForSequenceClassification(config).eval()
    ids, mask = inputs(config)
    with torch.no_grad():
        padded = model(ids, attention_mask=mask).logits[1]
        alone = model(ids[1:2, :9]).logits[0]
        torch.testing.assert_close(padded, alone, rtol=1e-5, atol=1e-5)
        base_padded = model.ultrafastbert(ids, attention_mask=mask).last_hidden_state[1, :9]
        base_alone = model.ultrafastbert(ids[1:2, :9]).last_hidden_state[0]
        torch.testing.assert_close(base_padded, base_alone, rtol=1e-5, atol=1e-5)
        # the original release's pooler averages padding too: different logits for the padded row
        model.config.classifier_pool_includes_padding = True
        original = model(ids, attention_mask=mask).logits[1]
        assert not torch.allclose(original, alone, atol=1e-4)
        model.config.classifier_pool_includes_padding = False
        model.config.classifier_pooling = "cls"
        torch.testing.assert_close(model(ids, attention_mask=mask).logits[1], model(ids[1:2, :9]).logits[0])


@pytest.mark.parametrize("model_class", [
    UltraFastBertModel, UltraFastBertForMaskedLM, UltraFastBertForSequenceClassification,
    UltraFastBertForTokenClassification, UltraFastBertForQuestionAnswering,
])
def test_conditional_equals_dense_for_whole_models(model_class):
    config = tiny_config(fff_depth=5, num_labels=2)
    torch.manual_seed(0)
    model = model_class(config).eval()
    ids, mask = inputs(config)

    def first_output(out):
        return out.last_hidden_state if model_class is UltraFastBertModel else out[0]

    with torch.no_grad():
        model.config.fff_inference = "conditional"
        model.config.fff_kernel = "torch"
        conditional = first_output(model(ids, attention_mask=mask))
        model.config.fff_inference = "dense"
        dense = first_output(model(ids, attention_mask=mask))
    torch.testing.assert_close(conditional, dense, rtol=1e-5, atol=1e-5)


def test_config_switches_take_effect_at_the_next_call(monkeypatch):
    config = tiny_config()
    model = UltraFastBertModel(config).eval()
    ids, _ = inputs(config)
    calls = {"masked": 0, "conditional": 0}
    real_masked, real_conditional = fast_feedforward.fff_masked, fast_feedforward.fff_conditional

    def counting_masked(*args):
        calls["masked"] += 1
        return real_masked(*args)

    def counting_conditional(*args):
        calls["conditional"] += 1
        assert args[4] == model.config.fff_kernel
        return real_conditional(*args)

    monkeypatch.setattr(fast_feedforward, "fff_masked", counting_masked)
    monkeypatch.setattr(fast_feedforward, "fff_conditional", counting_conditional)
    with torch.no_grad():
        model(ids)
        assert calls == {"masked": 0, "conditional": config.num_hidden_layers}
        model.config.fff_inference = "dense"
        model(ids)
        assert calls == {"masked": config.num_hidden_layers, "conditional": config.num_hidden_layers}
        model.config.fff_inference, model.config.fff_kernel = "conditional", "torch"
        model(ids)
        assert calls["conditional"] == 2 * config.num_hidden_layers
        model.config.fff_inference = "bogus"
        with pytest.raises(ValueError, match="fff_inference"):
            model(ids)


def test_native_kernel_request_is_an_error_or_runs():
    config = tiny_config(fff_kernel="native")
    model = UltraFastBertModel(config).eval()
    ids, _ = inputs(config)
    available, reason = fast_feedforward.native_kernel_status("cpu")
    with torch.no_grad():
        if available:
            model.config.fff_kernel = "native"
            native = model(ids).last_hidden_state
            model.config.fff_kernel = "torch"
            torch.testing.assert_close(native, model(ids).last_hidden_state, rtol=1e-5, atol=1e-5)
        else:
            with pytest.raises(RuntimeError, match="native"):
                model(ids)


def test_sequence_classification_losses():
    torch.manual_seed(0)
    ids, mask = inputs(tiny_config())
    regression = UltraFastBertForSequenceClassification(tiny_config(num_labels=1))
    out = regression(ids, attention_mask=mask, labels=torch.tensor([0.5, 1.0, -2.0]))
    assert regression.config.problem_type == "regression" and out.loss.ndim == 0
    torch.testing.assert_close(out.loss, torch.nn.functional.mse_loss(out.logits.squeeze(-1), torch.tensor([0.5, 1.0, -2.0])))

    single = UltraFastBertForSequenceClassification(tiny_config(num_labels=3))
    labels = torch.tensor([0, 2, 1])
    out = single(ids, attention_mask=mask, labels=labels)
    assert single.config.problem_type == "single_label_classification"
    torch.testing.assert_close(out.loss, torch.nn.functional.cross_entropy(out.logits, labels))

    multi = UltraFastBertForSequenceClassification(tiny_config(num_labels=3))
    targets = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0], [1.0, 1.0, 0.0]])
    out = multi(ids, attention_mask=mask, labels=targets)
    assert multi.config.problem_type == "multi_label_classification"
    torch.testing.assert_close(out.loss, torch.nn.functional.binary_cross_entropy_with_logits(out.logits, targets))
    out.loss.backward()
    assert multi.classifier.weight.grad is not None


def test_token_classification_and_question_answering_heads():
    config = tiny_config(num_labels=5)
    ids, mask = inputs(config)
    tagger = UltraFastBertForTokenClassification(config)
    labels = torch.randint(0, 5, ids.shape)
    out = tagger(ids, attention_mask=mask, labels=labels)
    assert out.logits.shape == (3, 17, 5) and torch.isfinite(out.loss)
    qa = UltraFastBertForQuestionAnswering(config)
    out = qa(ids, attention_mask=mask, start_positions=torch.tensor([1, 2, 3]), end_positions=torch.tensor([4, 5, 40]))
    assert out.start_logits.shape == (3, 17) and out.end_logits.shape == (3, 17) and torch.isfinite(out.loss)


def test_masked_lm_decoder_is_tied_and_survives_save_load(tmp_path):
    config = tiny_config()
    model = UltraFastBertForMaskedLM(config)
    assert model.decoder.weight is model.ultrafastbert.embeddings.word_embeddings.weight
    model.save_pretrained(tmp_path)
    reloaded = UltraFastBertForMaskedLM.from_pretrained(tmp_path)
    assert reloaded.decoder.weight is reloaded.ultrafastbert.embeddings.word_embeddings.weight
    torch.testing.assert_close(reloaded.decoder.weight, model.decoder.weight)
    ids, mask = inputs(config)
    model.eval(), reloaded.eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids, attention_mask=mask).logits, model(ids, attention_mask=mask).logits)
    # the MLM loss ignores -100 labels
    labels = torch.full_like(ids, -100)
    labels[:, 3] = ids[:, 3]
    assert torch.isfinite(model(ids, attention_mask=mask, labels=labels).loss)


def test_learned_positions_and_eager_loading(tmp_path):
    config = tiny_config(position_embedding_type="learned")
    model = UltraFastBertModel(config)
    assert isinstance(model.embeddings.position_embeddings, torch.nn.Embedding)
    model.save_pretrained(tmp_path)
    eager = UltraFastBertModel.from_pretrained(tmp_path, attn_implementation="eager").eval()
    sdpa = UltraFastBertModel.from_pretrained(tmp_path).eval()
    assert eager.config._attn_implementation == "eager"
    ids, mask = inputs(config)
    with torch.no_grad():
        torch.testing.assert_close(eager(ids, attention_mask=mask).last_hidden_state,
                                   sdpa(ids, attention_mask=mask).last_hidden_state, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("overrides,message", [
    (dict(fff_depth=-1), "fff_depth"),
    (dict(fff_depth=64), "fff_depth"),
    (dict(fff_trees=0), "fff_trees"),
    (dict(hidden_size=50, num_attention_heads=4), "divisible"),
    (dict(fff_inference="sparse"), "fff_inference"),
    (dict(fff_kernel="cuda"), "fff_kernel"),
    (dict(position_embedding_type="rotary"), "position_embedding_type"),
    (dict(classifier_pooling="max"), "classifier_pooling"),
    (dict(hidden_dropout_prob=1.5), "hidden_dropout_prob"),
    (dict(pad_token_id=500), "pad_token_id"),
    (dict(vocab_size=0), "vocab_size"),
])
def test_bad_config_values_raise_clear_errors(overrides, message):
    with pytest.raises(ValueError, match=message):
        tiny_config(**overrides)


def test_bad_inputs_raise_clear_errors():
    config = tiny_config()
    model = UltraFastBertForSequenceClassification(config).eval()
    ids, mask = inputs(config)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        model(torch.full((1, 4), config.vocab_size))
    with pytest.raises(ValueError, match="outside the vocabulary"):
        model(torch.tensor([[1, -3, 2]]))
    with pytest.raises(ValueError, match="max_position_embeddings"):
        model(torch.ones(1, config.max_position_embeddings + 1, dtype=torch.long))
    with pytest.raises(ValueError, match="integer tensor"):
        model(ids.float())
    with pytest.raises(ValueError, match="attention_mask has shape"):
        model(ids, attention_mask=mask[:, :-1])
    with pytest.raises(ValueError, match="exactly one"):
        model()
    with pytest.raises(ValueError, match="inputs_embeds"):
        model(inputs_embeds=torch.randn(1, 4, config.hidden_size + 1))
    # inputs_embeds is an accepted alternative to ids
    embeds = model.ultrafastbert.embeddings.word_embeddings(ids)
    with torch.no_grad():
        torch.testing.assert_close(model(inputs_embeds=embeds, attention_mask=mask).logits,
                                   model(ids, attention_mask=mask).logits)


def test_torch_compile_matches_eager():
    config = tiny_config(fff_kernel="torch")
    model = UltraFastBertForSequenceClassification(config).eval()
    ids, mask = inputs(config)
    with torch.no_grad():
        expected = model(ids, attention_mask=mask).logits
        compiled = torch.compile(model)
        torch.testing.assert_close(compiled(ids, attention_mask=mask).logits, expected, rtol=1e-5, atol=1e-5)


def test_gradient_checkpointing_gives_the_same_gradients():
    config = tiny_config(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, embedding_dropout_prob=0.0,
                         classifier_dropout=0.0)
    torch.manual_seed(0)
    model = UltraFastBertForSequenceClassification(config).train()
    ids, mask = inputs(config)
    labels = torch.tensor([0, 1, 1])
    model(ids, attention_mask=mask, labels=labels).loss.backward()
    plain = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    model.gradient_checkpointing_enable()
    assert all(layer.gradient_checkpointing for layer in model.ultrafastbert.layers)
    model(ids, attention_mask=mask, labels=labels).loss.backward()
    for name, p in model.named_parameters():
        if name in plain:
            torch.testing.assert_close(p.grad, plain[name], rtol=1e-5, atol=1e-6)
