"""A prediction must not depend on how the batch was built, nor a loss on how a step was split.

Padding side (positions), empty batches, float16 on the CPU, and Trainer's `num_items_in_batch` (gradient
accumulation and several devices).
"""

import warnings

import pytest
import torch
from conftest import REPO_ROOT, tiny_config

from modeling_ultrafastbert import (
    UltraFastBertForMaskedLM,
    UltraFastBertForQuestionAnswering,
    UltraFastBertForSequenceClassification,
    UltraFastBertForTokenClassification,
    UltraFastBertModel,
)
from modeling_ultrafastbert.fast_feedforward import FastFeedForward, fff_conditional

warnings.filterwarnings("ignore", message="UltraFastBERT: no native FFF kernel")
warnings.filterwarnings("ignore", message="UltraFastBERT: the native FFF kernel on cpu has no")

HEADS = (
    UltraFastBertModel,
    UltraFastBertForMaskedLM,
    UltraFastBertForSequenceClassification,
    UltraFastBertForTokenClassification,
    UltraFastBertForQuestionAnswering,
)
CHECKPOINT = REPO_ROOT / "checkpoints" / "ultrafastbert-sst2-small"


def pad_batch(sentences: list[list[int]], pad_id: int, side: str) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in sentences)
    ids = torch.full((len(sentences), width), pad_id, dtype=torch.long)
    mask = torch.zeros(len(sentences), width, dtype=torch.long)
    for row, sentence in enumerate(sentences):
        span = slice(0, len(sentence)) if side == "right" else slice(width - len(sentence), width)
        ids[row, span] = torch.tensor(sentence)
        mask[row, span] = 1
    return ids, mask


def assert_batch_equals_each_sentence_alone(model, sentences, pad_id):
    with torch.no_grad():
        alone = torch.cat([model(torch.tensor([s])).logits for s in sentences])
        for side in ("left", "right"):
            ids, mask = pad_batch(sentences, pad_id, side)
            batched = model(ids, attention_mask=mask).logits
            torch.testing.assert_close(batched, alone, rtol=0, atol=1e-5, msg=f"{side} padding")


# ---------------------------------------------------------------- positions and padding side


@pytest.mark.parametrize("position_embedding_type", ["scaled_sinusoidal", "learned"])
def test_left_and_right_padding_equal_each_sentence_alone(position_embedding_type):
    config = tiny_config(position_embedding_type=position_embedding_type, num_labels=3)
    torch.manual_seed(0)
    model = UltraFastBertForSequenceClassification(config).eval()
    if position_embedding_type == "learned":  # the default init is small: make positions matter
        torch.nn.init.normal_(model.ultrafastbert.embeddings.position_embeddings.weight, std=1.0)
    generator = torch.Generator().manual_seed(1)
    sentences = [torch.randint(1, config.vocab_size, (n,), generator=generator).tolist() for n in (11, 4, 7, 1)]
    assert_batch_equals_each_sentence_alone(model, sentences, config.pad_token_id)


def test_left_padding_needs_the_positions_from_the_mask():
    # the check above can fail: with positions 0..L-1 on the padded row, left padding changes the answer
    config = tiny_config(num_labels=3)
    torch.manual_seed(0)
    model = UltraFastBertForSequenceClassification(config).eval()
    sentences = [list(range(5, 16)), [7, 8, 9]]
    ids, mask = pad_batch(sentences, config.pad_token_id, "left")
    naive_positions = torch.arange(ids.shape[1]).expand_as(ids)
    with torch.no_grad():
        alone = model(torch.tensor([sentences[1]])).logits
        derived = model(ids, attention_mask=mask).logits[1:]
        naive = model(ids, attention_mask=mask, position_ids=naive_positions).logits[1:]
    torch.testing.assert_close(derived, alone, rtol=0, atol=1e-5)
    assert (naive - alone).abs().max() > 1e-3


def test_shipped_checkpoint_padding_side_does_not_change_logits():
    from transformers import AutoTokenizer

    model = UltraFastBertForSequenceClassification.from_pretrained(CHECKPOINT).eval()
    tokenizer = AutoTokenizer.from_pretrained(CHECKPOINT)
    texts = ["a gorgeous , witty , seductive movie .", "dull .", "it 's a charming and often affecting journey ."]
    sentences = [tokenizer(t)["input_ids"] for t in texts]
    assert_batch_equals_each_sentence_alone(model, sentences, tokenizer.pad_token_id)
    # and through the tokenizer's own left padding
    tokenizer.padding_side = "left"
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        alone = torch.cat([model(torch.tensor([s])).logits for s in sentences])
        torch.testing.assert_close(model(**batch).logits, alone, rtol=0, atol=1e-5)


@pytest.mark.parametrize("model_class", HEADS)
def test_every_head_accepts_position_ids(model_class):
    config = tiny_config()
    torch.manual_seed(0)
    model = model_class(config).eval()
    ids = torch.randint(1, config.vocab_size, (2, 9))
    first = lambda out: out[0]  # noqa: E731
    with torch.no_grad():
        default = first(model(ids))
        explicit = first(model(ids, position_ids=torch.arange(9).expand(2, 9)))
        shifted = first(model(ids, position_ids=torch.arange(3, 12).expand(2, 9)))
        broadcast = first(model(ids, position_ids=torch.arange(9)[None]))
    torch.testing.assert_close(explicit, default)
    torch.testing.assert_close(broadcast, default)
    assert not torch.allclose(shifted, default)


@pytest.mark.parametrize(
    "position_ids, message",
    [
        (torch.arange(9.0).expand(2, 9), "must be an integer tensor"),
        (torch.arange(9).expand(3, 9), r"must have shape \(batch, sequence\) = \(2, 9\)"),
        (torch.arange(8).expand(2, 8), r"must have shape \(batch, sequence\)"),
        (torch.arange(9), r"must have shape \(batch, sequence\)"),
        (torch.arange(9).expand(2, 9) - 1, r"must lie in \[0, max_position_embeddings=40\), got min -1"),
        (torch.arange(9).expand(2, 9) + 35, r"must lie in \[0, max_position_embeddings=40\), got min 35, max 43"),
    ],
)
def test_bad_position_ids_raise_clear_errors(position_ids, message):
    model = UltraFastBertModel(tiny_config()).eval()
    with pytest.raises(ValueError, match=message):
        model(torch.ones(2, 9, dtype=torch.long), position_ids=position_ids)


# ---------------------------------------------------------------- empty input


@pytest.mark.parametrize("model_class", HEADS)
@pytest.mark.parametrize("shape", [(0, 6), (3, 0), (0, 0)])
def test_empty_input_gives_empty_outputs(model_class, shape):
    config = tiny_config(num_labels=3)
    model = model_class(config).eval()
    batch, length = shape
    ids = torch.zeros(shape, dtype=torch.long)
    if model_class is UltraFastBertForSequenceClassification and length == 0:
        # a sequence of no tokens has nothing to pool: a clear error rather than a made-up class
        with pytest.raises(ValueError, match="sequence length 0"):
            model(ids)
        return
    expected = {
        UltraFastBertModel: {"last_hidden_state": (batch, length, config.hidden_size)},
        UltraFastBertForMaskedLM: {"logits": (batch, length, config.vocab_size)},
        UltraFastBertForSequenceClassification: {"logits": (batch, 3)},
        UltraFastBertForTokenClassification: {"logits": (batch, length, 3)},
        UltraFastBertForQuestionAnswering: {"start_logits": (batch, length), "end_logits": (batch, length)},
    }[model_class]
    with torch.no_grad():
        for mask in (None, torch.ones(shape, dtype=torch.long)):
            out = model(ids, attention_mask=mask, output_hidden_states=True, output_attentions=True)
            for name, want in expected.items():
                assert tuple(out[name].shape) == want, name
            assert [tuple(h.shape) for h in out.hidden_states] == [(batch, length, config.hidden_size)] * 3
            assert [tuple(a.shape) for a in out.attentions] == [(batch, config.num_attention_heads, length, length)] * 2
    model.train()  # the training (masked) path too, with a gradient
    out = model(inputs_embeds=torch.zeros(batch, length, config.hidden_size, requires_grad=True))
    assert out[0].shape[0] == batch


# ---------------------------------------------------------------- float16 on the CPU


def test_float16_on_cpu_runs_with_auto_and_matches_float32():
    torch.manual_seed(0)
    layer = FastFeedForward(32, depth=3, trees=2).eval()
    x = torch.randn(64, 32)
    half = layer.half()
    with torch.no_grad():
        out16 = half(x.half())
        # the reference: the same float16 numbers, computed in float32 along the same path
        weights = [p.float() for p in (half.in_weight, half.in_bias, half.out_weight)]
        reference = fff_conditional(x.half().float(), *weights, kernel="torch")
        _, logits = half.float().paths(x.half().float())
    assert out16.dtype == torch.float16
    # tokens whose walk passes a near-tie may legitimately turn the other way in float16; compare the others
    decided = logits.abs().amin(dim=(-1, -2)) > 0.02
    assert decided.float().mean() > 0.7
    torch.testing.assert_close(out16.float()[decided], reference[decided], rtol=0, atol=2e-2)


def test_float16_whole_model_on_cpu_and_native_refuses_clearly():
    config = tiny_config(num_labels=3)
    torch.manual_seed(0)
    model = UltraFastBertForSequenceClassification(config).eval()
    ids = torch.randint(1, config.vocab_size, (2, 9))
    with torch.no_grad():
        reference = model(ids).logits
        logits16 = model.half()(ids).logits
    assert logits16.dtype == torch.float16 and torch.isfinite(logits16).all()
    torch.testing.assert_close(logits16.float(), reference, rtol=0, atol=5e-2)
    model.config.fff_kernel = "native"
    with torch.no_grad(), pytest.raises(TypeError, match="not torch.float16"):
        model(ids)


# ---------------------------------------------------------------- losses and num_items_in_batch


def labelled_inputs(model_class, config, batch=6, length=10, seed=0):
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, config.vocab_size, (batch, length), generator=generator)
    if model_class is UltraFastBertForQuestionAnswering:
        return {"input_ids": ids, "start_positions": torch.randint(0, length, (batch,), generator=generator),
                "end_positions": torch.randint(0, length, (batch,), generator=generator)}
    if model_class is UltraFastBertForSequenceClassification:
        labels = torch.randint(0, config.num_labels, (batch,), generator=generator)
    else:
        labels = torch.randint(0, config.num_labels if model_class is UltraFastBertForTokenClassification
                               else config.vocab_size, (batch, length), generator=generator)
        labels[torch.rand(labels.shape, generator=generator) < 0.6] = -100  # unevenly many labels per row
    return {"input_ids": ids, "labels": labels}


def count_items(model_class, inputs):
    if model_class is UltraFastBertForQuestionAnswering:
        return inputs["input_ids"].shape[0]
    return int(inputs["labels"].ne(-100).sum())


def rows(inputs, span):
    return {name: value[span] for name, value in inputs.items()}


LOSS_CASES = [
    (UltraFastBertForMaskedLM, {}),
    (UltraFastBertForTokenClassification, {"num_labels": 5}),
    (UltraFastBertForQuestionAnswering, {}),
    (UltraFastBertForSequenceClassification, {"num_labels": 3}),
    (UltraFastBertForSequenceClassification, {"num_labels": 1, "problem_type": "regression"}),
    (UltraFastBertForSequenceClassification, {"num_labels": 3, "problem_type": "regression"}),
    (UltraFastBertForSequenceClassification, {"num_labels": 3, "problem_type": "multi_label_classification"}),
]


@pytest.mark.parametrize("model_class, overrides", LOSS_CASES, ids=lambda v: getattr(v, "__name__", str(v)))
def test_split_losses_with_num_items_in_batch_add_up_to_the_mean(model_class, overrides):
    config = tiny_config(**overrides)
    torch.manual_seed(0)
    model = model_class(config).eval()
    inputs = labelled_inputs(model_class, config)
    if config.problem_type == "regression":
        shape = (6,) if config.num_labels == 1 else (6, config.num_labels)
        inputs["labels"] = torch.randn(shape)
    elif config.problem_type == "multi_label_classification":
        inputs["labels"] = torch.randint(0, 2, (6, config.num_labels)).float()
    with torch.no_grad():
        mean_loss = model(**inputs).loss
        # what Trainer passes: the labelled items of the whole step (here: two micro-batches, or two devices)
        total = torch.tensor(inputs["labels"].ne(-100).sum().item() if "labels" in inputs else 6)
        parts = [model(**rows(inputs, span), num_items_in_batch=total).loss for span in (slice(0, 2), slice(2, 6))]
        whole = model(**inputs, num_items_in_batch=total).loss
    torch.testing.assert_close(sum(parts), mean_loss)
    torch.testing.assert_close(whole, mean_loss)
    # an int count works too, and a count other than the step's scales the sum, not the mean
    with torch.no_grad():
        doubled = model(**inputs, num_items_in_batch=2 * int(total)).loss
    torch.testing.assert_close(doubled, mean_loss / 2)


def test_trainer_uses_num_items_in_batch_and_logs_the_same_loss_for_any_accumulation(tmp_path):
    from transformers import Trainer, TrainingArguments

    config = tiny_config(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, embedding_dropout_prob=0.0)
    torch.manual_seed(0)
    model = UltraFastBertForMaskedLM(config)
    examples = labelled_inputs(UltraFastBertForMaskedLM, config, batch=8, seed=3)
    dataset = [rows(examples, i) for i in range(8)]
    with torch.no_grad():
        expected = model(**examples).loss.item()  # the mean over every labelled token of the step

    logged = {}
    for batch_size, accumulation in ((8, 1), (4, 2), (2, 4)):
        args = TrainingArguments(
            output_dir=str(tmp_path / f"run{accumulation}"), per_device_train_batch_size=batch_size,
            gradient_accumulation_steps=accumulation, learning_rate=0.0, max_steps=1, logging_steps=1,
            report_to="none", save_strategy="no", use_cpu=True, dataloader_drop_last=False,
        )
        trainer = Trainer(model=model, args=args, train_dataset=dataset)
        # the count reaches the model: Trainer passes it because the forward takes loss kwargs
        assert trainer.model_accepts_loss_kwargs
        trainer.train()
        logged[accumulation] = next(e["loss"] for e in trainer.state.log_history if "loss" in e)
    for accumulation, loss in logged.items():
        assert loss == pytest.approx(expected, rel=1e-4), (accumulation, logged, expected)


def test_trainer_loss_on_each_of_two_devices_averages_to_the_mean(tmp_path):
    # Trainer's DDP arithmetic, on one CPU: with two processes it counts the labelled items over both, passes that
    # count to each process's forward and multiplies each loss by 2 before DDP averages the gradients. Reading
    # `num_items_in_batch` makes that average the mean over the global batch; ignoring it doubled the loss.
    from unittest import mock

    from transformers import Trainer, TrainingArguments

    config = tiny_config(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, embedding_dropout_prob=0.0)
    torch.manual_seed(0)
    model = UltraFastBertForMaskedLM(config).eval()
    examples = labelled_inputs(UltraFastBertForMaskedLM, config, batch=8, seed=5)
    args = TrainingArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True)
    trainer = Trainer(model=model, args=args)
    assert args.average_tokens_across_devices
    shards = [rows(examples, slice(0, 3)), rows(examples, slice(3, 8))]  # uneven, as masking makes them
    global_count = sum(trainer._get_num_items_in_batch([shard], "cpu") for shard in shards)
    with torch.no_grad(), mock.patch.object(type(trainer.accelerator), "num_processes", new=2):
        per_device = [trainer.compute_loss(model, shard, num_items_in_batch=global_count) for shard in shards]
        mean_loss = model(**examples).loss
    torch.testing.assert_close(sum(per_device) / 2, mean_loss)
