"""EdgeBERT part 1: off-ramps, entropy early exit, the exit-layer predictor, the budget knob and ramp training."""

import warnings

import pytest
import torch
from conftest import run_in_clean_env, tiny_config
from transformers import AutoModelForSequenceClassification, Trainer, TrainingArguments, pipeline

from modeling_ultrafastbert import UltraFastBertConfig, UltraFastBertForSequenceClassification, native_kernel_status
from modeling_ultrafastbert.early_exit import (
    calibrate_exits,
    fit_exit_predictor,
    pick_exit_threshold,
    predict_exit_layers,
    simulate_exit_layers,
    softmax_entropy,
)

warnings.filterwarnings("ignore", message="UltraFastBERT: no native FFF kernel")

LAYERS = 4


def ramp_model(seed: int = 0, **overrides) -> UltraFastBertForSequenceClassification:
    """A tiny 4-layer classifier with ramps whose classifiers are scaled up, so that entropies spread over (0, ln 2)."""
    torch.manual_seed(seed)
    values = dict(num_hidden_layers=LAYERS, num_labels=2, exit_ramps=True)
    values.update(overrides)
    model = UltraFastBertForSequenceClassification(tiny_config(**values)).eval()
    with torch.no_grad():
        for ramp in model.exit_ramps:
            ramp.classifier.weight.mul_(8.0)
        model.classifier.weight.mul_(8.0)
    return model


def padded_batch(seed: int = 1, batch: int = 12, length: int = 17, vocab: int = 211):
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab, (batch, length), generator=generator)
    lengths = torch.randint(3, length + 1, (batch,), generator=generator)
    lengths[0] = length
    mask = (torch.arange(length)[None, :] < lengths[:, None]).long()
    return ids.masked_fill(mask == 0, 0), mask


def full_depth_exit_logits(model, ids, mask) -> torch.Tensor:
    saved = model.config.early_exit_entropy
    model.config.early_exit_entropy = None
    with torch.no_grad():
        logits = model(ids, attention_mask=mask, output_exit_logits=True).exit_logits
    model.config.early_exit_entropy = saved
    return logits


def split_threshold(entropies: torch.Tensor) -> float:
    """A threshold between two distinct first-ramp entropies near the middle, far from every entropy (no ties)."""
    values = entropies[:, :-1].flatten().sort().values
    gaps = values[1:] - values[:-1]
    middle = slice(len(values) // 4, 3 * len(values) // 4)
    index = middle.start + int(gaps[middle].argmax())
    assert gaps[index] > 1e-4
    return float((values[index] + values[index + 1]) / 2)


# --- the exit rule and its arithmetic -------------------------------------------------------------------------------

def test_softmax_entropy_and_simulated_exits():
    logits = torch.tensor([[0.0, 0.0], [10.0, -10.0]])
    assert torch.allclose(softmax_entropy(logits), torch.tensor([torch.log(torch.tensor(2.0)), 0.0]), atol=1e-6)
    entropies = torch.tensor([[0.5, 0.1, 0.6], [0.6, 0.6, 0.6], [0.05, 0.6, 0.01]])
    assert simulate_exit_layers(entropies, 0.2).tolist() == [2, 3, 1]
    assert simulate_exit_layers(entropies, None).tolist() == [3, 3, 3]
    assert simulate_exit_layers(entropies, 0.0).tolist() == [3, 3, 3]


def test_predictor_table_is_fitted_to_the_data():
    first = torch.tensor([0.1, 0.12, 0.11, 0.5, 0.52, 0.51, 0.9, 0.95, 0.97])
    exits = torch.tensor([1, 1, 2, 4, 4, 5, 8, 8, 7])
    predictor = fit_exit_predictor(first, exits, num_bins=3)
    assert len(predictor["exit_layers"]) == len(predictor["entropy_bin_edges"]) + 1
    predicted = predict_exit_layers(predictor, first)
    assert ((predicted - exits).abs() <= 1).all(), (predicted, exits)
    assert predict_exit_layers(predictor, torch.tensor([0.0, 5.0])).tolist() == [
        predictor["exit_layers"][0], predictor["exit_layers"][-1]]


# --- inference --------------------------------------------------------------------------------------------------------

def test_threshold_none_gives_the_logits_of_the_model_without_ramps():
    model = ramp_model()
    plain = UltraFastBertForSequenceClassification(tiny_config(num_hidden_layers=LAYERS, num_labels=2)).eval()
    missing, unexpected = plain.load_state_dict(model.state_dict(), strict=False)
    assert not missing and all(key.startswith("exit_ramps.") for key in unexpected) and unexpected
    ids, mask = padded_batch()
    with torch.no_grad():
        ours = model(ids, attention_mask=mask)
        theirs = plain(ids, attention_mask=mask)
        every_exit = model(ids, attention_mask=mask, output_exit_logits=True).exit_logits
    assert torch.equal(ours.logits, theirs.logits)
    assert ours.exit_layers is None and ours.exit_logits is None
    assert every_exit.shape == (ids.shape[0], LAYERS, 2)
    assert torch.equal(every_exit[:, -1], theirs.logits)


def test_huge_threshold_exits_everyone_at_layer_one_with_ramp_one_logits():
    model = ramp_model()
    ids, mask = padded_batch()
    reference = full_depth_exit_logits(model, ids, mask)
    model.set_exit_threshold(100.0)
    with torch.no_grad():
        out = model(ids, attention_mask=mask)
    assert out.exit_layers.tolist() == [1] * ids.shape[0]
    torch.testing.assert_close(out.logits, reference[:, 0], rtol=1e-5, atol=1e-6)
    assert not torch.allclose(out.logits, reference[:, -1])  # the ramp really differs from the final head


@pytest.mark.parametrize("kernel", ["torch", "native"])
def test_batch_gives_each_example_its_own_result(kernel):
    if kernel == "native" and not native_kernel_status("cpu")[0]:
        pytest.skip(native_kernel_status("cpu")[1])
    model = ramp_model(fff_kernel=kernel)
    ids, mask = padded_batch()
    entropies = softmax_entropy(full_depth_exit_logits(model, ids, mask))
    threshold = split_threshold(entropies)
    model.set_exit_threshold(threshold)
    with torch.no_grad():
        batched = model(ids, attention_mask=mask)
        alone = [model(ids[i:i + 1, : int(mask[i].sum())]) for i in range(ids.shape[0])]
    expected_exits = simulate_exit_layers(entropies, threshold)
    assert batched.exit_layers.tolist() == expected_exits.tolist()
    assert len(set(expected_exits.tolist())) > 1, "the test needs examples leaving at different layers"
    assert batched.exit_layers.tolist() == [int(a.exit_layers) for a in alone]
    torch.testing.assert_close(batched.logits, torch.cat([a.logits for a in alone]), rtol=1e-4, atol=1e-5)


def test_left_padded_batch_exits_like_each_example_alone():
    """Left padding (as some tokenizers pad) must not move positions: positions follow the mask in the exit path too."""
    model = ramp_model()
    ids, mask = padded_batch()
    lengths = mask.sum(1)
    left_ids, left_mask = torch.zeros_like(ids), torch.zeros_like(mask)
    for i, n in enumerate(lengths.tolist()):
        left_ids[i, ids.shape[1] - n:], left_mask[i, ids.shape[1] - n:] = ids[i, :n], 1
    entropies = softmax_entropy(full_depth_exit_logits(model, ids, mask))
    model.set_exit_threshold(split_threshold(entropies))
    with torch.no_grad():
        left = model(left_ids, attention_mask=left_mask)
        alone = [model(ids[i:i + 1, :n]) for i, n in enumerate(lengths.tolist())]
    assert len(set(left.exit_layers.tolist())) > 1
    assert left.exit_layers.tolist() == [int(a.exit_layers) for a in alone]
    torch.testing.assert_close(left.logits, torch.cat([a.logits for a in alone]), rtol=1e-4, atol=1e-5)


def test_exited_examples_really_skip_the_later_layers():
    model = ramp_model()
    ids, mask = padded_batch()
    model.set_exit_threshold(split_threshold(softmax_entropy(full_depth_exit_logits(model, ids, mask))))
    rows_seen = []
    handles = [layer.register_forward_pre_hook(lambda module, args: rows_seen.append(args[0].shape[0]))
               for layer in model.ultrafastbert.layers]
    try:
        with torch.no_grad():
            out = model(ids, attention_mask=mask)
    finally:
        for handle in handles:
            handle.remove()
    expected = [int((out.exit_layers >= layer).sum()) for layer in range(1, LAYERS + 1)]
    expected = [rows for rows in expected if rows > 0]
    assert rows_seen == expected
    assert sum(rows_seen) == int(out.exit_layers.sum()) < ids.shape[0] * LAYERS


def test_exit_predictor_runs_after_the_first_layer_and_matches_the_standalone_estimate():
    model = ramp_model()
    ids, mask = padded_batch()
    every_exit = full_depth_exit_logits(model, ids, mask)
    threshold = split_threshold(softmax_entropy(every_exit))
    labels = torch.randint(0, 2, (ids.shape[0],))
    model.config.exit_calibration = calibrate_exits(every_exit, labels, thresholds=[0.0, threshold, 100.0], num_bins=4)
    model.set_exit_threshold(threshold)
    assert model.config.exit_predictor == model.config.exit_calibration[1]["exit_predictor"]

    layers_run, seen = [], []
    layer_hook = model.ultrafastbert.layers[1].register_forward_pre_hook(lambda *_: layers_run.append(2))
    handle = model.register_exit_prediction_hook(lambda predicted, rows: seen.append((predicted, rows, list(layers_run))))
    with torch.no_grad():
        out = model(ids, attention_mask=mask)
    handle.remove()
    layer_hook.remove()
    assert len(seen) == 1 and seen[0][2] == []  # called before layer 2 ran
    assert torch.equal(seen[0][0], out.predicted_exit_layers) and seen[0][1].tolist() == list(range(ids.shape[0]))
    assert torch.equal(model.predict_exit_layers(ids, attention_mask=mask), out.predicted_exit_layers)
    expected = predict_exit_layers(model.config.exit_predictor, softmax_entropy(every_exit[:, 0]))
    assert torch.equal(out.predicted_exit_layers, expected)


def test_calibration_curve_matches_the_real_exits_and_the_budget_knob_picks_from_it():
    model = ramp_model()
    ids, mask = padded_batch(batch=24)
    every_exit = full_depth_exit_logits(model, ids, mask)
    labels = torch.randint(0, 2, (ids.shape[0],), generator=torch.Generator().manual_seed(3))
    curve = calibrate_exits(every_exit, labels)
    model.config.exit_calibration = curve
    for point in curve[:: len(curve) // 5]:
        model.set_exit_threshold(point["threshold"])
        with torch.no_grad():
            out = model(ids, attention_mask=mask)
        assert float(out.exit_layers.float().mean()) == pytest.approx(point["mean_layers"], abs=1e-4)
        assert float((out.logits.argmax(-1) == labels).float().mean()) == pytest.approx(point["accuracy"], abs=1e-4)
    chosen = model.set_exit_budget(mean_layers=2.5)
    assert chosen["mean_layers"] <= 2.5 and model.config.early_exit_entropy == chosen["threshold"]
    assert all(p["accuracy"] <= chosen["accuracy"] for p in curve if p["mean_layers"] <= 2.5)
    assert model.set_exit_budget(relative_latency=0.5)["mean_layers"] <= 0.5 * LAYERS
    lossless = pick_exit_threshold(curve, LAYERS, max_accuracy_drop=0.0)
    assert lossless["accuracy"] >= curve[0]["accuracy"]
    with pytest.raises(ValueError, match="exactly one"):
        model.set_exit_budget()
    with pytest.raises(ValueError, match="no calibrated threshold"):
        model.set_exit_budget(mean_layers=0.5)


# --- bad input --------------------------------------------------------------------------------------------------------

def test_bad_exit_settings_are_clear_value_errors():
    with pytest.raises(ValueError, match="non-negative"):
        tiny_config(exit_ramps=True, early_exit_entropy=-0.1)
    with pytest.raises(ValueError, match="no off-ramps"):
        tiny_config(early_exit_entropy=0.3)
    with pytest.raises(ValueError, match="exit_predictor"):
        tiny_config(exit_ramps=True, exit_predictor={"entropy_bin_edges": [0.1], "exit_layers": [1]})
    with pytest.raises(ValueError, match="num_hidden_layers >= 2"):  # no layer but the last: no ramp (was a crash in
        tiny_config(exit_ramps=True, num_hidden_layers=1)           # Trainer, an empty optimizer in the ramp stage)
    model = ramp_model()
    with pytest.raises(ValueError, match="non-negative"):
        model.set_exit_threshold(-1.0)
    assert model.config.early_exit_entropy is None
    ids, mask = padded_batch()
    model.set_exit_threshold(0.3)
    with pytest.raises(ValueError, match="output_hidden_states"):
        model(ids, attention_mask=mask, output_hidden_states=True)
    with pytest.raises(ValueError, match="stage"):
        model.set_exit_training_stage("everything")

    plain = UltraFastBertForSequenceClassification(tiny_config(num_labels=2)).eval()
    with pytest.raises(ValueError, match="off-ramps"):
        plain.set_exit_threshold(0.3)
    with pytest.raises(ValueError, match="off-ramps"):
        plain(ids, attention_mask=mask, output_exit_logits=True)
    plain.config.early_exit_entropy = 0.3  # set behind the model's back: refused at the next call
    with pytest.raises(ValueError, match="off-ramps"):
        plain(ids, attention_mask=mask)


# --- save / load, remote code, pipeline ---------------------------------------------------------------------------------

def test_save_load_and_remote_code_keep_ramps_threshold_and_predictor(tmp_path):
    model = ramp_model()
    ids, mask = padded_batch()
    threshold = split_threshold(softmax_entropy(full_depth_exit_logits(model, ids, mask)))
    model.config.exit_predictor = {"entropy_bin_edges": [0.2, 0.4], "exit_layers": [1, 2, 4]}
    model.config.early_exit_entropy = threshold
    with torch.no_grad():
        expected = model(ids, attention_mask=mask)
    model.save_pretrained(tmp_path / "ckpt")
    assert (tmp_path / "ckpt" / "early_exit.py").exists()
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "ckpt").eval()
    assert loaded.config.early_exit_entropy == threshold and loaded.config.exit_predictor == model.config.exit_predictor
    for key, value in model.state_dict().items():
        if key.startswith("exit_ramps."):
            assert torch.equal(loaded.state_dict()[key], value), key
    with torch.no_grad():
        out = loaded(ids, attention_mask=mask)
    assert torch.equal(out.exit_layers, expected.exit_layers) and torch.equal(out.logits, expected.logits)
    torch.save({"ids": ids, "mask": mask, "logits": expected.logits, "exits": expected.exit_layers,
                "predicted": expected.predicted_exit_layers}, tmp_path / "io.pt")
    output = run_in_clean_env(
        f"""
        import warnings, torch
        warnings.simplefilter("ignore")
        from transformers import AutoModelForSequenceClassification
        io = torch.load({str(tmp_path / 'io.pt')!r})
        model = AutoModelForSequenceClassification.from_pretrained({str(tmp_path / 'ckpt')!r}, trust_remote_code=True)
        model.eval()
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        assert model.config.early_exit_entropy == {threshold!r}
        with torch.no_grad():
            out = model(io["ids"], attention_mask=io["mask"])
        assert torch.equal(out.exit_layers, io["exits"]), (out.exit_layers, io["exits"])
        assert torch.equal(out.predicted_exit_layers, io["predicted"])
        torch.testing.assert_close(out.logits, io["logits"], rtol=0, atol=0)
        print("REMOTE-OK", len(model.exit_ramps))
        """,
        tmp_path,
    )
    assert f"REMOTE-OK {LAYERS - 1}" in output


def test_checkpoints_without_ramps_load_as_before(tmp_path):
    plain = UltraFastBertForSequenceClassification(tiny_config(num_labels=2)).eval()
    plain.save_pretrained(tmp_path)
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    assert not hasattr(loaded, "exit_ramps") and loaded.config.exit_ramps is False
    assert not any(key.startswith("exit_ramps") for key in loaded.state_dict())


def test_pipeline_respects_the_threshold(wordpiece_tokenizer):
    model = ramp_model(vocab_size=wordpiece_tokenizer.vocab_size, id2label={0: "neg", 1: "pos"},
                       label2id={"neg": 0, "pos": 1})
    classifier = pipeline("text-classification", model=model, tokenizer=wordpiece_tokenizer, device="cpu", top_k=None)
    sentences = ["a gripping film", "the plot is a mess and the jokes fall flat", "moving"]
    encoded = wordpiece_tokenizer(sentences, padding=True, return_tensors="pt")
    every_exit = full_depth_exit_logits(model, encoded["input_ids"], encoded["attention_mask"])
    for threshold, column in ((None, -1), (100.0, 0)):
        model.set_exit_threshold(threshold)
        results = classifier(sentences)
        for result, logits in zip(results, every_exit[:, column]):
            scores = {item["label"]: item["score"] for item in result}
            expected = logits.softmax(-1)
            assert scores["neg"] == pytest.approx(float(expected[0]), abs=1e-5)
            assert scores["pos"] == pytest.approx(float(expected[1]), abs=1e-5)


# --- training ----------------------------------------------------------------------------------------------------------

class _Toy(torch.utils.data.Dataset):
    def __init__(self, count=32, length=9):
        generator = torch.Generator().manual_seed(5)
        self.ids = torch.randint(5, 211, (count, length), generator=generator)
        self.labels = (self.ids[:, 0] > 100).long()

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        return {"input_ids": self.ids[index], "attention_mask": torch.ones_like(self.ids[index]),
                "labels": self.labels[index]}


@pytest.mark.parametrize("distill", [0.0, 0.5])
def test_trainer_trains_both_stages(tmp_path, distill):
    model = ramp_model().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}

    def train(stage):
        model.set_exit_training_stage(stage, ramp_distill_weight=distill)
        args = TrainingArguments(output_dir=str(tmp_path / stage), per_device_train_batch_size=8, max_steps=4,
                                 learning_rate=1e-2, report_to="none", save_strategy="no", use_cpu=True)
        Trainer(model=model, args=args, train_dataset=_Toy()).train()
        return {k: v.clone() for k, v in model.state_dict().items()}

    after_backbone = train("backbone")
    changed = {k for k in before if not torch.equal(before[k], after_backbone[k])}
    assert any(k.startswith("ultrafastbert.layers.") for k in changed) and "classifier.weight" in changed
    assert not any(k.startswith("exit_ramps.") for k in changed)

    after_ramps = train("ramps")
    changed = {k for k in before if not torch.equal(after_backbone[k], after_ramps[k])}
    assert changed and all(k.startswith("exit_ramps.") for k in changed)
    assert {k.split(".")[1] for k in changed} == {str(i) for i in range(LAYERS - 1)}  # every ramp trained


def test_ramp_stage_loss_is_the_sum_of_ramp_losses():
    model = ramp_model().train()
    model.set_exit_training_stage("ramps")
    model.config.hidden_dropout_prob = 0.0
    batch = _Toy()[:8]
    torch.manual_seed(0)
    model.eval()  # no dropout, so that the two forwards see the same network
    every_exit = model(batch["input_ids"], output_exit_logits=True).exit_logits
    model.train()
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    loss = model(batch["input_ids"], labels=batch["labels"]).loss
    expected = sum(torch.nn.functional.cross_entropy(every_exit[:, i], batch["labels"]) for i in range(LAYERS - 1))
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
    assert loss.requires_grad
