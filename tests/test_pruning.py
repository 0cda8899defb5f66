"""Pruning (movement, soft movement, magnitude; cubic schedule; finalize) and compact storage of pruned checkpoints."""

import json
import warnings

import pytest
import torch
from conftest import run_in_clean_env, tiny_config
from safetensors.torch import load_file

from modeling_ultrafastbert import UltraFastBertForMaskedLM, UltraFastBertForSequenceClassification
from modeling_ultrafastbert.pruning import (
    BITMASK_SUFFIX,
    VALUES_SUFFIX,
    Pruner,
    PruningCallback,
    compact_tensor,
    cubic_sparsity,
    dense_tensor,
    pack_bits,
    unpack_bits,
)

warnings.filterwarnings("ignore", message="UltraFastBERT: no native FFF kernel")

ENCODER_TENSORS = ("attention.query_key_value.weight", "attention.dense.weight", "feedforward.in_weight",
                   "feedforward.out_weight")


def _inputs(config, batch=3, length=9, seed=0):
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, config.vocab_size, (batch, length), generator=generator)
    mask = torch.ones_like(ids)
    mask[0, 6:] = 0
    return ids, mask


def _bits(tensor):
    return tensor.contiguous().view(torch.uint8)


def _pruned_model(method="movement", sparsity=0.8, embedding_sparsity=0.9, seed=0):
    """A tiny classifier pruned to its final sparsity (random scores stand in for training) and finalized."""
    torch.manual_seed(seed)
    model = UltraFastBertForSequenceClassification(tiny_config(num_labels=2))
    pruner = Pruner(model, method, sparsity, embedding_sparsity=embedding_sparsity)
    for scores in pruner.score_parameters():
        scores.data.normal_()
    pruner.set_step(10, 10)
    pruner.finalize()
    return model.eval()


# --- schedule -----------------------------------------------------------------------------------------------------

def test_cubic_schedule_hits_the_target_at_the_promised_step():
    total, warmup, cooldown, target = 100, 10, 20, 0.8
    values = [cubic_sparsity(step, total, target, warmup, cooldown) for step in range(total)]
    assert values[:warmup + 1] == [0.0] * (warmup + 1)  # flat warm-up; the ramp starts from 0 at step `warmup`
    assert all(values[i] < target for i in range(total - cooldown))  # not before the promised step ...
    assert values[total - cooldown:] == [target] * cooldown  # ... and exactly from it on
    assert all(b >= a for a, b in zip(values, values[1:]))  # monotone
    # cubic: a quarter of the way up the ramp already 1 - 0.75**3 of the target
    assert cubic_sparsity(warmup + 70 // 4, total, 1 - 1e-9, warmup, cooldown) > 0.55
    with pytest.raises(ValueError, match="warm-up"):
        cubic_sparsity(0, 10, 0.5, 8, 8)
    with pytest.raises(ValueError, match="sparsities"):
        cubic_sparsity(0, 10, 1.0)


def test_trainer_masks_reach_the_target_sparsity_at_the_promised_step():
    """Driven by the callback, every mask is at the target from step total - cooldown, not one step earlier."""
    torch.manual_seed(0)
    model = UltraFastBertForSequenceClassification(tiny_config())
    pruner = Pruner(model, "movement", 0.6, embedding_sparsity=0.9, warmup_steps=2, cooldown_steps=3)
    callback = PruningCallback(pruner)
    state = type("State", (), {"max_steps": 12, "global_step": 0})()
    callback.on_train_begin(None, state, None)
    seen = {}
    for step in range(12):
        state.global_step = step
        callback.on_step_begin(None, state, None)
        masks = pruner.current_masks()
        seen[step] = {name: 1 - mask.float().mean().item() for name, mask in masks.items()}
    embedding = "ultrafastbert.embeddings.word_embeddings.weight"
    for step in (0, 1, 2):
        assert all(value == 0 for value in seen[step].values())
    assert all(value < 0.6 - 1e-3 for name, value in seen[8].items() if name != embedding)
    for step in (9, 10, 11):
        for name, value in seen[step].items():
            assert value == pytest.approx(0.9 if name == embedding else 0.6, abs=1 / 2000), (step, name)


# --- masks ----------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["movement", "soft-movement", "magnitude"])
def test_masks_at_sparsity_zero_change_nothing(method):
    config = tiny_config(num_labels=2)
    torch.manual_seed(0)
    model = UltraFastBertForSequenceClassification(config).eval()
    ids, mask = _inputs(config)
    with torch.no_grad():
        expected = model(ids, attention_mask=mask).logits
    pruner = Pruner(model, method, sparsity=0.5, embedding_sparsity=0.5)
    pruner.set_step(0, 100)  # warm-up: sparsity 0
    with torch.no_grad():
        got = model(ids, attention_mask=mask).logits
    assert torch.equal(got, expected)
    assert all(bool(m.all()) for m in pruner.current_masks().values())
    # and gradients still reach the weights through the (all-ones) masks
    model.train()
    model(ids, attention_mask=mask, labels=torch.tensor([0, 1, 1])).loss.backward()
    layer = model.ultrafastbert.layers[0]
    assert layer.feedforward.parametrizations.in_weight.original.grad.abs().sum() > 0


def test_movement_scores_get_straight_through_gradients():
    config = tiny_config(num_labels=2)
    torch.manual_seed(0)
    model = UltraFastBertForSequenceClassification(config)
    pruner = Pruner(model, "movement", sparsity=0.5)
    pruner.set_step(100, 100)
    ids, mask = _inputs(config)
    model(ids, attention_mask=mask, labels=torch.tensor([0, 1, 1])).loss.backward()
    attention = model.ultrafastbert.layers[1].attention.query_key_value
    weight = attention.parametrizations.weight.original
    scores = attention.parametrizations.weight[0].scores
    # dL/dS = dL/dW' * W (the mask's straight-through gradient), for kept and pruned entries alike
    masked_grad = scores.grad / torch.where(weight == 0, torch.ones_like(weight), weight)
    assert scores.grad.abs().sum() > 0
    keep = pruner.current_masks()["ultrafastbert.layers.1.attention.query_key_value.weight"]
    torch.testing.assert_close(weight.grad[keep], masked_grad[keep], rtol=1e-4, atol=1e-7)
    assert torch.all(weight.grad[~keep] == 0)  # pruned weights get no gradient


def test_per_row_embedding_magnitude_keeps_the_same_count_per_token():
    torch.manual_seed(0)
    model = UltraFastBertForSequenceClassification(tiny_config())
    pruner = Pruner(model, "magnitude", 0.0, embedding_sparsity=0.75, embedding_per_row=True)
    pruner.set_step(5, 5)
    weight = model.ultrafastbert.embeddings.word_embeddings.parametrizations.weight.original.detach()
    mask = pruner.current_masks()["ultrafastbert.embeddings.word_embeddings.weight"]
    assert torch.all(mask.sum(-1) == 12)  # 48 - round(0.75 * 48) per row
    kept_min = torch.where(mask, weight.abs(), torch.inf).min(-1).values
    dropped_max = torch.where(mask, -torch.inf, weight.abs()).max(-1).values
    assert torch.all(kept_min >= dropped_max)  # the largest magnitudes of each row


def test_soft_movement_penalty_pushes_scores_down():
    torch.manual_seed(0)
    model = UltraFastBertForSequenceClassification(tiny_config())
    pruner = Pruner(model, "soft-movement", regularization=5.0, warmup_steps=0, cooldown_steps=0)
    pruner.set_step(10, 10)
    pruner.add_regularization_gradient_()
    for scores in pruner.score_parameters():
        assert torch.all(scores.grad > 0)  # gradient descent lowers every score
    with pytest.raises(ValueError, match="pruning method"):
        Pruner(model, "random")


@pytest.mark.parametrize("method", ["movement", "magnitude", "soft-movement"])
def test_finalized_weights_equal_weights_times_mask(method):
    torch.manual_seed(0)
    model = UltraFastBertForSequenceClassification(tiny_config())
    pruner = Pruner(model, method, 0.7, embedding_sparsity=0.9, soft_threshold=0.5)
    for scores in pruner.score_parameters():
        scores.data.normal_()
    pruner.set_step(50, 50)
    masks = pruner.current_masks()
    originals = {}
    for name in masks:
        module_name, _, attribute = name.rpartition(".")
        originals[name] = model.get_submodule(module_name).parametrizations[attribute].original.detach().clone()
    record = pruner.finalize()
    state = model.state_dict()
    assert not any("parametrizations" in key or "scores" in key for key in state)
    for name, mask in masks.items():
        expected = originals[name] * mask
        assert torch.equal(state[name], expected), name
        assert not torch.signbit(state[name][~mask]).any()  # pruned entries are +0.0
    assert model.config.pruning == record
    assert record["method"] == method
    if method != "soft-movement":
        assert record["encoder_sparsity"] == pytest.approx(0.7, abs=1e-3)
    assert record["embedding_sparsity"] == pytest.approx(0.9, abs=1e-3)
    assert set(record["tensor_sparsity"]) == {name.removeprefix("ultrafastbert.") for name in masks}


def test_finalized_checkpoint_is_ordinary(tmp_path):
    model = _pruned_model()
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["pruning"]["method"] == "movement"
    reloaded = UltraFastBertForSequenceClassification.from_pretrained(tmp_path).eval()
    ids, mask = _inputs(model.config)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids, attention_mask=mask).logits, model(ids, attention_mask=mask).logits)


# --- compact storage ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("numel", [1, 7, 8, 9, 1000])
def test_bit_packing_round_trips(numel):
    mask = torch.rand(numel, generator=torch.Generator().manual_seed(numel)) > 0.5
    packed = pack_bits(mask)
    assert packed.dtype == torch.uint8 and packed.numel() == (numel + 7) // 8
    assert torch.equal(unpack_bits(packed, numel), mask)
    assert int(pack_bits(torch.tensor([True] + [False] * 7))) == 1  # entry i is bit i


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_compact_tensor_round_trips_bit_exactly(dtype):
    tensor = torch.randn(5, 13, generator=torch.Generator().manual_seed(0)).to(dtype)
    tensor[tensor.abs() < 0.8] = 0.0
    tensor[0, 0], tensor[0, 1] = -0.0, float("nan")  # signed zero and NaN survive too
    bitmask, values = compact_tensor(tensor)
    assert values.dtype == dtype and values.numel() < tensor.numel()
    assert torch.equal(_bits(dense_tensor(bitmask, values, tensor.shape)), _bits(tensor))
    with pytest.raises(ValueError, match="bit mask marks"):
        dense_tensor(bitmask, values[1:], tensor.shape)


@pytest.fixture
def compact_pair(tmp_path):
    from conversion.compact_pruned import compact_checkpoint

    model = _pruned_model()
    dense_dir, compact_dir = tmp_path / "dense", tmp_path / "compact"
    model.save_pretrained(dense_dir)
    result = compact_checkpoint(dense_dir, compact_dir)
    return model, dense_dir, compact_dir, result


def test_compact_checkpoint_round_trips_bit_exactly(compact_pair):
    model, dense_dir, compact_dir, result = compact_pair
    stored = load_file(compact_dir / "model.safetensors")
    key = "ultrafastbert.layers.0.feedforward.in_weight"
    assert key not in stored and key + BITMASK_SUFFIX in stored and key + VALUES_SUFFIX in stored
    assert "ultrafastbert.embeddings.word_embeddings.weight" + VALUES_SUFFIX in stored
    assert "classifier.weight" in stored  # dense tensors stay as they are
    config = json.loads((compact_dir / "config.json").read_text())
    assert config["pruning"]["compact_tensors"][key.removeprefix("ultrafastbert.")] == stored[key + VALUES_SUFFIX].numel()
    assert result["compact_bytes"] < 0.5 * result["dense_bytes"]

    reloaded = UltraFastBertForSequenceClassification.from_pretrained(compact_dir)
    expected, got = load_file(dense_dir / "model.safetensors"), reloaded.state_dict()
    assert set(got) == set(model.state_dict())  # no leftover buffers
    for name, tensor in expected.items():
        assert got[name].dtype == tensor.dtype and torch.equal(_bits(got[name]), _bits(tensor)), name
    assert "compact_tensors" not in reloaded.config.pruning  # in memory it is an ordinary dense model
    # loading info is passed through, and reports nothing missing
    _, info = UltraFastBertForSequenceClassification.from_pretrained(compact_dir, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]


def test_compact_mlm_checkpoint_keeps_the_decoder_tied(tmp_path):
    from conversion.compact_pruned import compact_checkpoint

    torch.manual_seed(0)
    model = UltraFastBertForMaskedLM(tiny_config())
    pruner = Pruner(model, "magnitude", 0.5, embedding_sparsity=0.8)
    pruner.set_step(10, 10)
    pruner.finalize()
    model.save_pretrained(tmp_path / "dense")
    compact_checkpoint(tmp_path / "dense", tmp_path / "compact")
    reloaded = UltraFastBertForMaskedLM.from_pretrained(tmp_path / "compact")
    embedding = reloaded.ultrafastbert.embeddings.word_embeddings.weight
    assert reloaded.decoder.weight is embedding
    assert torch.equal(embedding, model.ultrafastbert.embeddings.word_embeddings.weight)


def test_compact_checkpoint_loads_through_remote_code(compact_pair, tmp_path):
    model, dense_dir, compact_dir, _ = compact_pair
    ids, mask = _inputs(model.config)
    with torch.no_grad():
        expected = model(ids, attention_mask=mask).logits
    torch.save({"ids": ids, "mask": mask, "expected": expected}, tmp_path / "io.pt")
    output = run_in_clean_env(
        f"""
        import warnings, torch
        warnings.simplefilter("ignore")
        from safetensors.torch import load_file
        from transformers import AutoModel, AutoModelForSequenceClassification
        io = torch.load({str(tmp_path / 'io.pt')!r})
        model = AutoModelForSequenceClassification.from_pretrained({str(compact_dir)!r}, trust_remote_code=True).eval()
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        dense = load_file({str(dense_dir / 'model.safetensors')!r})
        state = model.state_dict()
        assert set(state) == set(dense), sorted(set(state) ^ set(dense))[:4]
        for key, tensor in dense.items():
            assert torch.equal(state[key].view(torch.uint8), tensor.view(torch.uint8)), key
        with torch.no_grad():
            torch.testing.assert_close(model(io["ids"], attention_mask=io["mask"]).logits, io["expected"])
        base = AutoModel.from_pretrained({str(compact_dir)!r}, trust_remote_code=True)
        assert torch.equal(base.layers[0].feedforward.in_weight, dense["ultrafastbert.layers.0.feedforward.in_weight"])
        print("compact remote code ok")
        """,
        tmp_path,
    )
    assert "compact remote code ok" in output


def test_compact_conversion_refuses_bad_input(tmp_path, compact_pair):
    from conversion.compact_pruned import compact_checkpoint

    _, dense_dir, compact_dir, _ = compact_pair
    with pytest.raises(ValueError, match="already compact"):
        compact_checkpoint(compact_dir, tmp_path / "again")
    with pytest.raises(FileNotFoundError, match="not a saved checkpoint"):
        compact_checkpoint(tmp_path / "nowhere", tmp_path / "out")
    UltraFastBertForSequenceClassification(tiny_config()).save_pretrained(tmp_path / "unpruned")
    with pytest.raises(ValueError, match="sparse enough"):
        compact_checkpoint(tmp_path / "unpruned", tmp_path / "out")
    assert not (tmp_path / "out").exists()


# --- Trainer ------------------------------------------------------------------------------------------------------

def test_trainer_run_with_the_pruning_callback(tmp_path):
    from transformers import Trainer, TrainingArguments

    config = tiny_config(num_labels=2)
    torch.manual_seed(0)
    model = UltraFastBertForSequenceClassification(config)
    pruner = Pruner(model, "movement", 0.5, embedding_sparsity=0.8, warmup_steps=1, cooldown_steps=2)
    generator = torch.Generator().manual_seed(0)
    data = [{"input_ids": torch.randint(1, config.vocab_size, (8,), generator=generator), "labels": i % 2}
            for i in range(48)]
    args = TrainingArguments(output_dir=str(tmp_path / "run"), per_device_train_batch_size=8, max_steps=6,
                             learning_rate=1e-3, report_to="none", save_strategy="no", use_cpu=True,
                             logging_steps=2, disable_tqdm=True)
    optimizer = torch.optim.AdamW(pruner.optimizer_grouped_parameters(0.01, score_lr=1e-2), lr=1e-3)
    scores_before = [s.detach().clone() for s in pruner.score_parameters()]
    trainer = Trainer(model=model, args=args, train_dataset=data, callbacks=[PruningCallback(pruner)],
                      optimizers=(optimizer, None))
    trainer.train()
    assert trainer.state.global_step == 6
    assert any(not torch.equal(a, b) for a, b in zip(scores_before, pruner.score_parameters()))  # scores learned
    record = pruner.finalize()
    assert record["encoder_sparsity"] == pytest.approx(0.5, abs=1e-3)
    assert record["embedding_sparsity"] == pytest.approx(0.8, abs=1e-3)
    model.save_pretrained(tmp_path / "pruned")
    reloaded = UltraFastBertForSequenceClassification.from_pretrained(tmp_path / "pruned")
    assert reloaded.config.pruning["encoder_sparsity"] == record["encoder_sparsity"]
