"""ALBERT-style options (cross-layer sharing, factorized embeddings) and distillation from a fine-tuned teacher."""

import json
import math
import warnings

import pytest
import torch
from conftest import REPO_ROOT, SST2_DIR, run_in_clean_env, tiny_config
from safetensors import safe_open
from torch import nn

from modeling_ultrafastbert import (
    UltraFastBertConfig,
    UltraFastBertForMaskedLM,
    UltraFastBertForSequenceClassification,
)
from modeling_ultrafastbert.distillation import (
    DistillationTrainer,
    check_teacher_compatible,
    copy_teacher_weights,
    distillation_loss,
    hidden_layer_pairs,
    hidden_state_loss,
    same_tokenizer,
    teacher_logits,
)

warnings.filterwarnings("ignore", message="UltraFastBERT: no native FFF kernel")


from conftest import load_example as _load_script  # noqa: E402


def _saved_keys(folder) -> set:
    with safe_open(str(folder / "model.safetensors"), framework="pt") as handle:
        return set(handle.keys())


# --- configuration -------------------------------------------------------------------------------------------------


def test_layer_groups_follow_albert():
    assert tiny_config(num_hidden_layers=4).layer_groups() == [0, 1, 2, 3]
    assert tiny_config(num_hidden_layers=4, num_hidden_groups=2).layer_groups() == [0, 0, 1, 1]
    assert tiny_config(num_hidden_layers=3, num_hidden_groups=2).layer_groups() == [0, 0, 1]
    assert tiny_config(num_hidden_layers=5, num_hidden_groups=1).layer_groups() == [0] * 5


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"num_hidden_groups": 0}, "num_hidden_groups"),
        ({"num_hidden_groups": 3}, "num_hidden_groups"),  # more groups than the 2 layers
        ({"num_hidden_groups": 1.5}, "num_hidden_groups"),
        ({"embedding_size": 0}, "embedding_size"),
        ({"embedding_size": 64}, "embedding_size"),  # wider than hidden_size 48
    ],
)
def test_bad_albert_options_are_rejected(overrides, message):
    with pytest.raises(ValueError, match=message):
        tiny_config(**overrides)


def test_defaults_keep_todays_modules_and_checkpoint_keys():
    """A config without the ALBERT fields builds the same modules as before: same keys as the shipped checkpoint."""
    checkpoint = REPO_ROOT / "checkpoints" / "ultrafastbert-sst2-small"
    config = UltraFastBertConfig.from_pretrained(checkpoint)
    assert config.num_hidden_groups is None and config.embedding_size is None
    model = UltraFastBertForSequenceClassification(config)
    assert set(model.state_dict()) == _saved_keys(checkpoint)
    assert not hasattr(model.ultrafastbert.embeddings, "projection")
    assert model.ultrafastbert.layer_sequence() is model.ultrafastbert.layers
    assert not hasattr(UltraFastBertForMaskedLM(tiny_config()), "decoder_projection")
    # equal to the unshared, unfactorized values: the same model
    same = tiny_config(num_hidden_groups=2, embedding_size=48)
    assert set(UltraFastBertForMaskedLM(same).state_dict()) == set(UltraFastBertForMaskedLM(tiny_config()).state_dict())


# --- cross-layer sharing --------------------------------------------------------------------------------------------


def test_shared_layers_are_one_module_and_one_storage():
    config = tiny_config(num_hidden_layers=4, num_hidden_groups=2)
    model = UltraFastBertForSequenceClassification(config)
    base = model.ultrafastbert
    assert len(base.layers) == 2
    sequence = base.layer_sequence()
    assert len(sequence) == 4
    assert sequence[0] is sequence[1] is base.layers[0] and sequence[2] is sequence[3] is base.layers[1]
    assert sequence[1] is not sequence[2]
    weights = [layer.attention.query_key_value.weight for layer in sequence]
    assert weights[0].data_ptr() == weights[1].data_ptr() != weights[2].data_ptr() == weights[3].data_ptr()
    layer_keys = {key.split(".")[2] for key in model.state_dict() if key.startswith("ultrafastbert.layers.")}
    assert layer_keys == {"0", "1"}  # one set of keys per group
    unshared = UltraFastBertForSequenceClassification(tiny_config(num_hidden_layers=4))
    block = sum(p.numel() for p in base.layers[0].parameters())
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(unshared) - count(model) == 2 * block


def test_shared_forward_runs_each_block_in_layer_order():
    torch.manual_seed(0)
    config = tiny_config(num_hidden_layers=3, num_hidden_groups=2)
    base = UltraFastBertForMaskedLM(config).ultrafastbert.eval()
    ids = torch.randint(1, config.vocab_size, (2, 9))
    with torch.no_grad():
        out = base(ids, output_hidden_states=True)
        hidden = base.embeddings(ids)
        for group in (0, 0, 1):  # layer i runs block i * G // L
            hidden, _ = base.layers[group](hidden)
        expected = base.final_norm(hidden)
    torch.testing.assert_close(out.last_hidden_state, expected)
    assert len(out.hidden_states) == 3 + 1


def test_gradients_of_a_shared_block_sum_over_its_layers():
    torch.manual_seed(0)
    config = tiny_config(num_hidden_layers=2, num_hidden_groups=1, hidden_dropout_prob=0.0,
                         attention_probs_dropout_prob=0.0, embedding_dropout_prob=0.0)
    model = UltraFastBertForMaskedLM(config)
    ids = torch.randint(1, config.vocab_size, (2, 7))
    model(ids, labels=ids).loss.backward()
    assert model.ultrafastbert.layers[0].attention.dense.weight.grad.abs().sum() > 0
    optimizer_params = list(model.parameters())
    assert len(optimizer_params) == len({p.data_ptr() for p in optimizer_params})  # no duplicate in an optimizer


def test_early_exit_path_runs_the_shared_blocks():
    torch.manual_seed(0)
    config = tiny_config(num_hidden_layers=4, num_hidden_groups=2, exit_ramps=True, num_labels=3)
    model = UltraFastBertForSequenceClassification(config).eval()
    ids = torch.randint(1, config.vocab_size, (3, 8))
    with torch.no_grad():
        full = model(ids).logits
        model.set_exit_threshold(0.0)  # nobody leaves early: the exit loop must run all 4 layers
        exiting = model(ids)
        model.set_exit_threshold(100.0)  # everybody leaves after layer 1
        early = model(ids)
    torch.testing.assert_close(exiting.logits, full)
    assert exiting.exit_layers.tolist() == [4, 4, 4]
    assert early.exit_layers.tolist() == [1, 1, 1]


# --- factorized embeddings and the tied decoder ----------------------------------------------------------------------


def test_factorized_embeddings_project_and_the_decoder_is_tied():
    config = tiny_config(embedding_size=16, num_hidden_layers=2, num_hidden_groups=1)
    model = UltraFastBertForMaskedLM(config)
    embeddings = model.ultrafastbert.embeddings
    assert tuple(embeddings.word_embeddings.weight.shape) == (config.vocab_size, 16)
    assert tuple(embeddings.projection.weight.shape) == (48, 16)
    assert tuple(model.decoder_projection.weight.shape) == (16, 48)
    assert model.decoder.weight is embeddings.word_embeddings.weight  # tied: the same tensor
    ids = torch.randint(1, config.vocab_size, (2, 5))
    assert tuple(model(ids).logits.shape) == (2, 5, config.vocab_size)
    # inputs_embeds replace the word embeddings, so they are embedding_size wide
    model.eval()
    torch.testing.assert_close(model(inputs_embeds=embeddings.word_embeddings(ids)).logits, model(ids).logits)
    with pytest.raises(ValueError, match=r"inputs_embeds must have shape \(batch, sequence, 16\)"):
        model(inputs_embeds=torch.zeros(2, 5, 48))
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    unfactorized = UltraFastBertForMaskedLM(tiny_config(num_hidden_layers=2, num_hidden_groups=1))
    # V*H -> V*E + 2*E*H (+ position scale, LayerNorm of width E instead of H)
    assert count(unfactorized) - count(model) == 211 * (48 - 16) - 2 * 16 * 48 + 2 * (48 - 16)


def test_shared_factorized_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    config = tiny_config(num_hidden_layers=4, num_hidden_groups=2, embedding_size=16)
    model = UltraFastBertForMaskedLM(config).eval()
    model.save_pretrained(tmp_path)
    keys = _saved_keys(tmp_path)
    assert not any(key.startswith("ultrafastbert.layers.2.") for key in keys)
    assert "ultrafastbert.layers.1.attention.dense.weight" in keys
    assert "decoder.weight" not in keys  # stored once, as the word embeddings
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["num_hidden_groups"] == 2 and saved["embedding_size"] == 16
    loaded = UltraFastBertForMaskedLM.from_pretrained(tmp_path).eval()
    assert loaded.decoder.weight is loaded.ultrafastbert.embeddings.word_embeddings.weight
    sequence = loaded.ultrafastbert.layer_sequence()
    assert sequence[0] is sequence[1] and len(loaded.ultrafastbert.layers) == 2
    ids = torch.randint(1, config.vocab_size, (2, 7))
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, model(ids).logits)
    # an MLM checkpoint loads into the classifier with every encoder weight
    classifier = UltraFastBertForSequenceClassification.from_pretrained(tmp_path)
    torch.testing.assert_close(classifier.ultrafastbert.embeddings.projection.weight,
                               model.ultrafastbert.embeddings.projection.weight)


def test_shared_factorized_remote_code(tmp_path):
    torch.manual_seed(0)
    config = tiny_config(num_hidden_layers=4, num_hidden_groups=2, embedding_size=16, num_labels=2)
    model = UltraFastBertForSequenceClassification(config).eval()
    model.save_pretrained(tmp_path / "cls")
    UltraFastBertForMaskedLM(config).save_pretrained(tmp_path / "mlm")
    ids = torch.randint(1, config.vocab_size, (2, 9))
    with torch.no_grad():
        expected = model(ids).logits
    torch.save({"ids": ids, "expected": expected}, tmp_path / "io.pt")
    output = run_in_clean_env(
        f"""
        import warnings, torch
        warnings.simplefilter("ignore")
        from transformers import AutoModelForMaskedLM, AutoModelForSequenceClassification
        io = torch.load({str(tmp_path / 'io.pt')!r})
        model = AutoModelForSequenceClassification.from_pretrained({str(tmp_path / 'cls')!r}, trust_remote_code=True)
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        with torch.no_grad():
            torch.testing.assert_close(model.eval()(io["ids"]).logits, io["expected"], rtol=1e-5, atol=1e-5)
        sequence = model.ultrafastbert.layer_sequence()
        assert len(model.ultrafastbert.layers) == 2 and sequence[0] is sequence[1] and sequence[1] is not sequence[2]
        mlm = AutoModelForMaskedLM.from_pretrained({str(tmp_path / 'mlm')!r}, trust_remote_code=True)
        assert mlm.decoder.weight is mlm.ultrafastbert.embeddings.word_embeddings.weight, "decoder untied"
        assert tuple(mlm.decoder.weight.shape) == (211, 16)
        print("remote shared factorized ok")
        """,
        tmp_path,
    )
    assert "remote shared factorized ok" in output


def test_adaptivfloat_quantization_of_a_shared_factorized_classifier():
    from modeling_ultrafastbert.adaptivfloat import quantize_model_

    torch.manual_seed(0)
    config = tiny_config(num_hidden_layers=4, num_hidden_groups=2, embedding_size=16)
    model = UltraFastBertForSequenceClassification(config).eval()
    ids = torch.randint(1, config.vocab_size, (2, 6))
    with torch.no_grad():
        reference = model(ids).logits
        quantize_model_(model)
        quantized = model(ids).logits
    sequence = model.ultrafastbert.layer_sequence()
    assert sequence[0] is sequence[1]  # still one block per group after the module swap
    assert torch.allclose(quantized, reference, atol=0.1)


# --- distillation --------------------------------------------------------------------------------------------------


def test_distillation_loss_is_temperature_scaled_soft_cross_entropy():
    torch.manual_seed(0)
    student, teacher = torch.randn(5, 3), torch.randn(5, 3)
    T = 2.5
    expected = (-(torch.softmax(teacher / T, -1) * torch.log_softmax(student / T, -1)).sum(-1)).mean() * T**2
    torch.testing.assert_close(distillation_loss(student, teacher, T), expected)
    # = T^2 (KL(teacher || student) + H(teacher)): minimal when the student matches the teacher
    assert distillation_loss(teacher, teacher, T) < distillation_loss(student, teacher, T)
    torch.testing.assert_close(distillation_loss(student, teacher, T, num_items_in_batch=10), expected * 5 / 10)
    with pytest.raises(ValueError, match="same shape"):
        distillation_loss(student, teacher[:, :2])
    with pytest.raises(ValueError, match="temperature"):
        distillation_loss(student, teacher, 0.0)


def test_teacher_must_predict_the_same_labels():
    student = UltraFastBertForSequenceClassification(tiny_config(num_labels=2))
    check_teacher_compatible(student, UltraFastBertForSequenceClassification(tiny_config(num_labels=2, hidden_size=32)))
    with pytest.raises(ValueError, match="3 labels and the student 2"):
        check_teacher_compatible(student, UltraFastBertForSequenceClassification(tiny_config(num_labels=3)))
    named = UltraFastBertForSequenceClassification(tiny_config(id2label={0: "negative", 1: "positive"}))
    swapped = UltraFastBertForSequenceClassification(tiny_config(id2label={0: "positive", 1: "negative"}))
    with pytest.raises(ValueError, match="labels"):
        check_teacher_compatible(named, swapped)
    regression = UltraFastBertForSequenceClassification(tiny_config(num_labels=2, problem_type="regression"))
    with pytest.raises(ValueError, match="classification"):
        check_teacher_compatible(student, regression)


def test_teacher_runs_at_full_depth_without_exit_or_dropout():
    torch.manual_seed(0)
    config = tiny_config(num_hidden_layers=3, exit_ramps=True, early_exit_entropy=100.0, hidden_dropout_prob=0.5)
    teacher = UltraFastBertForSequenceClassification(config).train()
    ids = torch.randint(1, config.vocab_size, (4, 6))
    dataset = [{"input_ids": row.tolist(), "labels": 0} for row in ids]
    collate = lambda items: {"input_ids": torch.tensor([item["input_ids"] for item in items]),  # noqa: E731
                             "labels": torch.tensor([item["labels"] for item in items])}
    logits = teacher_logits(teacher, dataset, collate, batch_size=3)
    assert teacher.config.early_exit_entropy is None and not teacher.training
    assert not any(p.requires_grad for p in teacher.parameters())
    with torch.no_grad():
        torch.testing.assert_close(logits, teacher(ids).logits)
    assert teacher(ids).exit_layers is None


def test_a_dense_twin_teacher_runs_its_depth_0_trees_densely():
    from modeling_ultrafastbert.distillation import prepare_teacher

    torch.manual_seed(0)
    teacher = UltraFastBertForSequenceClassification(tiny_config(fff_depth=0, fff_trees=16)).eval()
    ids = torch.randint(1, 211, (3, 9))
    with torch.no_grad():
        conditional = teacher(ids).logits
        prepare_teacher(teacher)
        assert teacher.config.fff_inference == "dense"
        torch.testing.assert_close(teacher(ids).logits, conditional, atol=1e-5, rtol=1e-5)
    deeper = prepare_teacher(UltraFastBertForSequenceClassification(tiny_config()))
    assert deeper.config.fff_inference == "conditional"  # real trees keep their conditional path


class _Examples(torch.utils.data.Dataset):
    def __init__(self, ids, labels, targets=None):
        self.ids, self.labels, self.targets = ids, labels, targets

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        item = {"input_ids": self.ids[index], "labels": self.labels[index]}
        if self.targets is not None:
            item["teacher_logits"] = self.targets[index]
        return item


def _trainer_args(tmp_path, steps=3):
    from transformers import TrainingArguments

    return TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=4, max_steps=steps,
                             learning_rate=1e-3, report_to="none", save_strategy="no", logging_steps=1,
                             disable_tqdm=True, use_cpu=True)


def test_distillation_trainer_loss_and_training(tmp_path):
    torch.manual_seed(0)
    student = UltraFastBertForSequenceClassification(tiny_config(hidden_dropout_prob=0.0, classifier_dropout=0.0,
                                                                 attention_probs_dropout_prob=0.0,
                                                                 embedding_dropout_prob=0.0))
    teacher = UltraFastBertForSequenceClassification(tiny_config(num_hidden_layers=3, hidden_size=32))
    ids = torch.randint(1, 211, (12, 7))
    labels = torch.randint(0, 2, (12,))
    with torch.no_grad():
        targets = teacher.eval()(ids).logits
    dataset = _Examples(ids, labels, targets)
    trainer = DistillationTrainer(model=student, args=_trainer_args(tmp_path), train_dataset=dataset,
                                  alpha=0.9, temperature=2.0)
    # the training loss is 0.9 * soft + 0.1 * hard on a batch
    batch = {"input_ids": ids[:4], "labels": labels[:4], "teacher_logits": targets[:4]}
    student.train()
    loss = trainer.compute_loss(student, dict(batch))
    with torch.no_grad():
        logits = student(ids[:4]).logits
    expected = 0.9 * distillation_loss(logits, targets[:4], 2.0) + 0.1 * nn.functional.cross_entropy(logits, labels[:4])
    torch.testing.assert_close(loss.detach(), expected)
    before = student.classifier.weight.detach().clone()
    result = trainer.train()
    assert result.global_step == 3 and math.isfinite(result.training_loss)
    assert not torch.equal(before, student.classifier.weight)
    # alpha = 0: the label loss alone, whatever the teacher says
    plain = DistillationTrainer(model=student, args=_trainer_args(tmp_path), train_dataset=dataset, alpha=0.0)
    student.train()
    with torch.no_grad():
        torch.testing.assert_close(plain.compute_loss(student, dict(batch)), student(**{k: batch[k] for k in ("input_ids", "labels")}).loss)


def test_live_teacher_needs_the_same_tokenizer(tmp_path):
    from transformers import AutoTokenizer

    train_tokenizer = _load_script("pretrain_mlm").train_tokenizer
    words = ["a fine film", "a dull and tedious film", "the best movie of the year", "not good at all"] * 5
    tokenizer = train_tokenizer(words, 60, 16)
    other = train_tokenizer(words[::-1] + ["other words make another vocabulary entirely"] * 5, 60, 16)
    tokenizer.save_pretrained(tmp_path / "tokenizer")
    assert same_tokenizer(tokenizer, AutoTokenizer.from_pretrained(tmp_path / "tokenizer"), words[:4])
    assert not same_tokenizer(tokenizer, other)
    torch.manual_seed(0)
    student = UltraFastBertForSequenceClassification(tiny_config(vocab_size=len(tokenizer)))
    teacher = UltraFastBertForSequenceClassification(tiny_config(vocab_size=len(tokenizer), hidden_size=32))
    ids = torch.randint(1, len(tokenizer), (8, 6))
    dataset = _Examples(ids, torch.randint(0, 2, (8,)))
    trainer = DistillationTrainer(model=student, args=_trainer_args(tmp_path, steps=2), train_dataset=dataset,
                                  processing_class=tokenizer, teacher=teacher, teacher_tokenizer=tokenizer)
    assert trainer.train().global_step == 2  # the live teacher reads the student's batches
    with pytest.raises(ValueError, match="tokenizer differs"):
        DistillationTrainer(model=student, args=_trainer_args(tmp_path), train_dataset=dataset,
                            processing_class=tokenizer, teacher=teacher, teacher_tokenizer=other)
    with pytest.raises(ValueError, match="labels"):
        DistillationTrainer(model=student, args=_trainer_args(tmp_path), train_dataset=dataset,
                            teacher=UltraFastBertForSequenceClassification(tiny_config(num_labels=5)))


def test_hidden_layer_pairs_map_uniformly_by_relative_depth():
    assert hidden_layer_pairs(3, 3) == [(1, 1), (2, 2), (3, 3)]
    assert hidden_layer_pairs(4, 8) == [(1, 2), (2, 4), (3, 6), (4, 8)]
    assert hidden_layer_pairs(3, 12) == [(1, 4), (2, 8), (3, 12)]
    assert hidden_layer_pairs(4, 2) == [(1, 1), (2, 1), (3, 2), (4, 2)]  # 0.5 and 1.5 round up
    with pytest.raises(ValueError, match="layer counts"):
        hidden_layer_pairs(0, 4)


def test_hidden_state_loss_is_masked_mse_of_standardised_states():
    torch.manual_seed(0)
    student = tuple(torch.randn(2, 5, 8) for _ in range(3))
    teacher = tuple(torch.randn(2, 5, 8) for _ in range(3))
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])

    def standardised(x):
        return (x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, unbiased=False, keepdim=True) + 1e-5)

    keep = mask.bool()
    expected = torch.stack([((standardised(student[i]) - standardised(teacher[i])) ** 2).mean(-1)[keep].mean()
                            for i in (1, 2)]).mean()
    torch.testing.assert_close(hidden_state_loss(student, teacher, mask), expected)
    # identical states (up to scale and shift) cost nothing; padded positions are ignored
    assert hidden_state_loss(student, tuple(3.0 * x + 1.0 for x in student), mask) < 1e-8
    moved = tuple(torch.where(keep[..., None], x, x + 100.0) for x in teacher)
    torch.testing.assert_close(hidden_state_loss(student, moved, mask), expected)
    # without a mask every token counts; explicit pairs pick the layers
    torch.testing.assert_close(hidden_state_loss(student, teacher, pairs=[(2, 1)]),
                               ((standardised(student[2]) - standardised(teacher[1])) ** 2).mean())
    with pytest.raises(ValueError, match="differ in shape"):
        hidden_state_loss(student, tuple(x[..., :4] for x in teacher), mask)


def test_hidden_state_distillation_in_the_trainer(tmp_path):
    torch.manual_seed(0)
    quiet = dict(hidden_dropout_prob=0.0, classifier_dropout=0.0, attention_probs_dropout_prob=0.0,
                 embedding_dropout_prob=0.0)
    student = UltraFastBertForSequenceClassification(tiny_config(**quiet))
    teacher = UltraFastBertForSequenceClassification(tiny_config(num_hidden_layers=4, fff_depth=1))
    ids = torch.randint(1, 211, (12, 7))
    labels = torch.randint(0, 2, (12,))
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    dataset = _Examples(ids, labels)
    trainer = DistillationTrainer(model=student, args=_trainer_args(tmp_path), train_dataset=dataset, teacher=teacher,
                                  alpha=0.9, temperature=2.0, hidden_weight=0.5)
    assert trainer.hidden_pairs == [(1, 2), (2, 4)]
    batch = {"input_ids": ids[:4], "attention_mask": mask[:4], "labels": labels[:4]}
    student.train()
    loss = trainer.compute_loss(student, dict(batch))
    with torch.no_grad():
        out = student(ids[:4], attention_mask=mask[:4], output_hidden_states=True)
        t_out = teacher(ids[:4], attention_mask=mask[:4], output_hidden_states=True)
    expected = (0.9 * distillation_loss(out.logits, t_out.logits, 2.0)
                + 0.1 * nn.functional.cross_entropy(out.logits, labels[:4])
                + 0.5 * hidden_state_loss(out.hidden_states, t_out.hidden_states, mask[:4], [(1, 2), (2, 4)]))
    torch.testing.assert_close(loss.detach(), expected)
    # the gradient of the hidden term reaches the student's encoder, not the frozen teacher
    student.zero_grad()
    hidden_state_loss(student(ids[:4], attention_mask=mask[:4], output_hidden_states=True).hidden_states,
                      t_out.hidden_states, mask[:4], trainer.hidden_pairs).backward()
    assert student.ultrafastbert.embeddings.word_embeddings.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in teacher.parameters())
    assert trainer.train().global_step == 3
    with pytest.raises(ValueError, match="live teacher"):
        DistillationTrainer(model=student, args=_trainer_args(tmp_path), train_dataset=dataset, hidden_weight=1.0)
    with pytest.raises(ValueError, match="hidden_size is 48, the teacher's 32"):
        DistillationTrainer(model=student, args=_trainer_args(tmp_path), train_dataset=dataset, hidden_weight=1.0,
                            teacher=UltraFastBertForSequenceClassification(tiny_config(hidden_size=32)))
    with pytest.raises(ValueError, match=">= 0"):
        DistillationTrainer(model=student, args=_trainer_args(tmp_path), train_dataset=dataset, teacher=teacher,
                            hidden_weight=-1.0)


def test_augmented_sentences_mask_swap_and_cut_words():
    augment = _load_script("run_glue").augment_sentences
    sentences = ["a fine and moving film", "dull", "the best movie of the year by far", ""]
    out = augment(sentences, 3, seed=1, mask_token="[MASK]", mask_prob=0.2, replace_prob=0.2, ngram_prob=0.5)
    assert len(out) == 12 and out == augment(sentences, 3, seed=1, mask_token="[MASK]", mask_prob=0.2,
                                             replace_prob=0.2, ngram_prob=0.5)
    pool = {word for sentence in sentences for word in sentence.split()} | {"[MASK]"}
    assert all(set(text.split()) <= pool for text in out)
    assert any("[MASK]" in text for text in out) and out != sentences * 3
    # copy-major order: the k-th copy of sentence i sits at k * len(sentences) + i; cuts keep at most 5 words
    assert all(len(out[k * 4 + 2].split()) in (*range(1, 6), 8) for k in range(3))
    assert out[3] == out[7] == out[11] == ""
    # nothing perturbed: the copies are the sentences
    assert augment(sentences, 2, seed=0, mask_token="[MASK]", mask_prob=0, replace_prob=0, ngram_prob=0) == sentences * 2
    assert augment(sentences, 1, seed=0, mask_token=None, mask_prob=1.0, replace_prob=0, ngram_prob=0) == sentences


def test_hidden_state_distillation_through_a_vocabulary_map(tmp_path):
    import copy

    torch.manual_seed(0)
    quiet = dict(hidden_dropout_prob=0.0, classifier_dropout=0.0, attention_probs_dropout_prob=0.0,
                 embedding_dropout_prob=0.0)
    student = UltraFastBertForSequenceClassification(tiny_config(**quiet)).eval()
    # the teacher is the student with its vocabulary permuted: through the map it computes the very same states
    teacher = copy.deepcopy(student)
    id_map = torch.randperm(211)
    with torch.no_grad():
        teacher.ultrafastbert.embeddings.word_embeddings.weight[id_map] = student.ultrafastbert.embeddings.word_embeddings.weight
    ids = torch.randint(1, 211, (4, 7))
    with torch.no_grad():
        targets = teacher(id_map[ids]).logits
    batch = {"input_ids": ids, "labels": torch.randint(0, 2, (4,)), "teacher_logits": targets}
    args = _trainer_args(tmp_path)
    mapped = DistillationTrainer(model=student, args=args, teacher=teacher, hidden_weight=1.0, teacher_id_map=id_map)
    plain = DistillationTrainer(model=student, args=args)
    with torch.no_grad():
        torch.testing.assert_close(mapped.compute_loss(student.train(), dict(batch)), plain.compute_loss(student, dict(batch)))
    # without the map the teacher reads other tokens: the hidden term is positive, and rows flagged as not aligned
    # are left out of it
    unmapped = DistillationTrainer(model=student, args=args, teacher=teacher, hidden_weight=1.0)
    with torch.no_grad():
        base = plain.compute_loss(student, dict(batch))
        out = student(ids, output_hidden_states=True)
        t_out = teacher(ids, output_hidden_states=True)
        assert unmapped.compute_loss(student, dict(batch)) > base + 1e-3
        keep = torch.tensor([1, 0, 1, 1])
        expected = base + hidden_state_loss(out.hidden_states, t_out.hidden_states, keep[:, None].expand(4, 7))
        torch.testing.assert_close(unmapped.compute_loss(student, {**batch, "hidden_aligned": keep}), expected)
    # a translated teacher cannot give exact soft targets itself
    with pytest.raises(ValueError, match="precomputed 'teacher_logits'"):
        mapped.compute_loss(student, {k: v for k, v in batch.items() if k != "teacher_logits"})


# --- the examples ----------------------------------------------------------------------------------------------------


needs_sst2 = pytest.mark.skipif(not (SST2_DIR / "train.tsv").is_file(), reason="SST-2 data not found")


@needs_sst2
def test_pretrain_shared_factorized_then_distill_with_run_glue(tmp_path):
    pretrain_mlm, run_glue = _load_script("pretrain_mlm"), _load_script("run_glue")
    common = ["--sst2-train", str(SST2_DIR / "train.tsv"), "--max-lines", "400", "--vocab-size", "300",
              "--hidden-size", "32", "--heads", "2", "--fff-depth", "2", "--seq-length", "32", "--batch-size", "16",
              "--max-steps", "4", "--seed", "0"]
    student_mlm, teacher_mlm = tmp_path / "student-mlm", tmp_path / "teacher-mlm"
    results = pretrain_mlm.main(["--output-dir", str(student_mlm), "--layers", "4", "--hidden-groups", "2",
                                 "--embedding-size", "16", *common])
    assert json.loads((student_mlm / "config.json").read_text())["num_hidden_groups"] == 2
    assert not any(".layers.2." in key for key in _saved_keys(student_mlm))
    # the teacher: a dense-feedforward twin, with its own tokenizer (trained again on other lines)
    pretrain_mlm.main(["--output-dir", str(teacher_mlm), "--layers", "1", "--dense-ff-twin", *common[:3], "500",
                       *common[4:]])
    glue = ["--task", "sst2", "--data-dir", str(SST2_DIR), "--max-train-samples", "64", "--max-eval-samples", "32",
            "--max-length", "32", "--batch-size", "16", "--logging-steps", "1"]
    teacher = tmp_path / "teacher-sst2"
    run_glue.main(["--model", str(teacher_mlm), "--output-dir", str(teacher), "--max-steps", "2", *glue])
    logits_file = tmp_path / "teacher.safetensors"
    run_glue.main(["--model", str(student_mlm), "--teacher", str(teacher), "--save-teacher-logits",
                   str(logits_file), "--output-dir", str(tmp_path / "unused"), *glue])
    with safe_open(str(logits_file), framework="pt") as handle:
        assert tuple(handle.get_tensor("teacher_logits").shape) == (64, 2)
    for source in (teacher, logits_file):
        out = tmp_path / f"student-{source.name}"
        distilled = run_glue.main(["--model", str(student_mlm), "--teacher", str(source), "--distill-alpha", "0.9",
                                   "--distill-temperature", "2", "--output-dir", str(out), "--max-steps", "2", *glue])
        assert distilled["global_steps"] == 2 and distilled["teacher"] == str(source)
        assert 0.0 <= distilled["accuracy"] <= 1.0 and distilled["teacher_train_accuracy"] >= 0.0
    # intermediate-layer distillation: a live teacher with the student's tokenizer and width (here the student's own
    # MLM checkpoint fine-tuned for two steps)
    same_width = tmp_path / "teacher-same-tokenizer"
    run_glue.main(["--model", str(student_mlm), "--output-dir", str(same_width), "--max-steps", "2", *glue])
    hidden = run_glue.main(["--model", str(student_mlm), "--teacher", str(same_width), "--distill-hidden-weight", "1",
                            "--output-dir", str(tmp_path / "student-hidden"), "--max-steps", "2", "--no-save", *glue])
    assert hidden["global_steps"] == 2 and hidden["distill_hidden_weight"] == 1.0
    augmented = run_glue.main(["--model", str(student_mlm), "--teacher", str(same_width), "--augment-copies", "2",
                               "--distill-hidden-weight", "0.5", "--output-dir", str(tmp_path / "student-augmented"),
                               "--max-steps", "2", "--no-save", *glue])
    assert augmented["train_examples"] == 3 * 64 and augmented["augmented_rows"] == 128
    with pytest.raises(SystemExit):  # argparse: the teacher must label the new sentences
        run_glue.main(["--model", str(student_mlm), "--teacher", str(logits_file), "--augment-copies", "1",
                       "--output-dir", str(tmp_path / "refused"), *glue])
    # a teacher with its own vocabulary (and width 32 too): its ids are translated, aligned rows only
    other = run_glue.main(["--model", str(student_mlm), "--teacher", str(teacher), "--distill-hidden-weight", "1",
                           "--output-dir", str(tmp_path / "student-other-vocab"), "--max-steps", "2", "--no-save", *glue])
    assert other["global_steps"] == 2 and 0.0 < other["hidden_aligned_fraction"] <= 1.0
    with pytest.raises(SystemExit):  # argparse: a logits file has no hidden states
        run_glue.main(["--model", str(student_mlm), "--teacher", str(logits_file), "--distill-hidden-weight", "1",
                       "--output-dir", str(tmp_path / "refused"), *glue])
    assert results["global_steps"] == 4
    with pytest.raises(SystemExit, match="task 'sst2', not 'cola'|do not cover"):
        run_glue.load_teacher_logits(str(logits_file), "cola", 64, 2)
    with pytest.raises(SystemExit, match="do not cover"):
        run_glue.load_teacher_logits(str(logits_file), "sst2", 65, 2)


# --- distillation during masked-LM pretraining --------------------------------------------------------------------


def test_masked_lm_distillation_loss_in_the_trainer(tmp_path):
    torch.manual_seed(0)
    quiet = dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, embedding_dropout_prob=0.0)
    student = UltraFastBertForMaskedLM(tiny_config(**quiet))
    teacher = UltraFastBertForMaskedLM(tiny_config(num_hidden_layers=4, fff_depth=0, fff_trees=7))
    ids = torch.randint(5, 211, (12, 7))
    labels = torch.full_like(ids, -100)
    labels[:, 2] = ids[:, 2]
    labels[::3, 5] = ids[::3, 5]
    dataset = _Examples(ids, labels)
    trainer = DistillationTrainer(model=student, args=_trainer_args(tmp_path), train_dataset=dataset, teacher=teacher,
                                  alpha=0.7, temperature=2.0, hidden_weight=0.5)
    assert trainer.teacher.config.fff_inference == "dense"  # the depth-0 twin runs as one dense product
    batch = {"input_ids": ids[:4], "labels": labels[:4]}
    student.train()
    loss = trainer.compute_loss(student, dict(batch))
    masked = labels[:4] != -100
    with torch.no_grad():
        out = student(ids[:4], output_hidden_states=True)
        t_out = teacher(ids[:4], output_hidden_states=True)
    # soft targets and the hard loss only at the masked positions (5 of the 28 tokens here)
    assert int(masked.sum()) == 6
    expected = (0.7 * distillation_loss(out.logits[masked], t_out.logits[masked], 2.0)
                + 0.3 * nn.functional.cross_entropy(out.logits[masked], ids[:4][masked])
                + 0.5 * hidden_state_loss(out.hidden_states, t_out.hidden_states, None, [(1, 2), (2, 4)]))
    torch.testing.assert_close(loss.detach(), expected)
    # Trainer's item count (masked tokens of the step): each summed term is divided by it, the per-batch mean
    # hidden term weighed by the batch's share
    counted = trainer.compute_loss(student, dict(batch), num_items_in_batch=torch.tensor(12))
    expected_counted = (0.7 * distillation_loss(out.logits[masked], t_out.logits[masked], 2.0) * 6 / 12
                        + 0.3 * nn.functional.cross_entropy(out.logits[masked], ids[:4][masked], reduction="sum") / 12
                        + 0.5 * hidden_state_loss(out.hidden_states, t_out.hidden_states, None, [(1, 2), (2, 4)]) * 6 / 12)
    torch.testing.assert_close(counted.detach(), expected_counted)
    assert trainer.train().global_step == 3
    with pytest.raises(ValueError, match="vocabulary has 100 tokens"):
        DistillationTrainer(model=student, args=_trainer_args(tmp_path), train_dataset=dataset,
                            teacher=UltraFastBertForMaskedLM(tiny_config(vocab_size=100)))
    with pytest.raises(ValueError, match="masked-LM teacher"):
        DistillationTrainer(model=student, args=_trainer_args(tmp_path), train_dataset=dataset,
                            teacher=UltraFastBertForSequenceClassification(tiny_config()))


def test_copy_teacher_weights_reshapes_the_dense_twin_into_a_tree():
    torch.manual_seed(0)
    teacher = UltraFastBertForMaskedLM(tiny_config(fff_depth=0, fff_trees=7))  # 7 neurons, all used
    student = UltraFastBertForMaskedLM(tiny_config(fff_depth=2, fff_trees=1))  # one tree of 7 nodes
    report = copy_teacher_weights(student, teacher)
    t_state, s_state = teacher.state_dict(), student.state_dict()
    assert sorted(report["reshaped"]) == sorted(k for k in s_state if ".feedforward." in k)
    assert set(report["copied"]) | set(report["reshaped"]) == set(s_state)
    for name, tensor in s_state.items():
        assert torch.equal(tensor, t_state[name].reshape(tensor.shape)), name
    # node n of the tree is neuron n of the twin, and the tied decoder still follows the word embeddings
    assert torch.equal(student.ultrafastbert.layers[1].feedforward.in_weight[0, 5], teacher.ultrafastbert.layers[1].feedforward.in_weight[5, 0])
    assert student.decoder.weight.data_ptr() == student.ultrafastbert.embeddings.word_embeddings.weight.data_ptr()
    # the same architecture: the same function
    same = UltraFastBertForMaskedLM(tiny_config(fff_depth=0, fff_trees=7))
    copy_teacher_weights(same, teacher)
    ids = torch.randint(1, 211, (2, 6))
    torch.testing.assert_close(same.eval()(ids).logits, teacher.eval()(ids).logits, rtol=0, atol=0)
    with pytest.raises(ValueError, match="in_weight .*teacher: shape"):
        copy_teacher_weights(UltraFastBertForMaskedLM(tiny_config(fff_depth=3)), teacher)
    with pytest.raises(ValueError, match="word_embeddings"):
        copy_teacher_weights(UltraFastBertForMaskedLM(tiny_config(fff_depth=2, vocab_size=100)), teacher)


@needs_sst2
def test_pretrain_mlm_with_a_teacher(tmp_path):
    pretrain_mlm = _load_script("pretrain_mlm")
    common = ["--sst2-train", str(SST2_DIR / "train.tsv"), "--max-lines", "400", "--vocab-size", "300",
              "--hidden-size", "32", "--heads", "2", "--layers", "2", "--seq-length", "32", "--batch-size", "16",
              "--seed", "0", "--eval-fraction", "0.1", "--logging-steps", "2"]
    teacher = tmp_path / "teacher"
    pretrain_mlm.main(["--output-dir", str(teacher), "--fff-depth", "2", "--dense-ff-twin", "--max-steps", "30",
                       "--lr", "5e-3", *common])
    # the student: one tree of depth 2 holding the twin's 7 neurons, started from the teacher's weights
    student = tmp_path / "student"
    results = pretrain_mlm.main(["--output-dir", str(student), "--fff-depth", "2", "--teacher", str(teacher),
                                 "--init-from-teacher", "--distill-hidden-weight", "1", "--max-steps", "4",
                                 "--lr", "1e-4", *common])
    assert results["global_steps"] == 4 and results["teacher"] == str(teacher)
    assert math.isfinite(results["train_loss_mean"]) and math.isfinite(results["eval_mlm_loss_after"])
    # it reads the teacher's vocabulary (no tokenizer of its own was trained) and starts near the teacher's loss:
    # the same attention, embeddings and neurons (the tree uses 3 of the 7 per token)
    assert (student / "tokenizer.json").read_text() == (teacher / "tokenizer.json").read_text()
    teacher_results = json.loads((teacher / "pretrain_results.json").read_text())
    fresh = pretrain_mlm.main(["--output-dir", str(tmp_path / "fresh"), "--fff-depth", "2", "--teacher", str(teacher),
                               "--max-steps", "1", "--lr", "1e-4", *common])
    # (the held-out set is the same: same text, seed and tokenizer)
    assert teacher_results["eval_mlm_loss_after"] < fresh["eval_mlm_loss_before"] - 0.3
    assert abs(results["eval_mlm_loss_before"] - teacher_results["eval_mlm_loss_after"]) < 0.1
    with pytest.raises(SystemExit):  # argparse: nothing to initialise from
        pretrain_mlm.main(["--output-dir", str(tmp_path / "x"), "--init-from-teacher", "--max-steps", "1", *common])
    with pytest.raises(SystemExit, match="cannot initialise"):
        pretrain_mlm.main(["--output-dir", str(tmp_path / "x"), "--fff-depth", "3", "--teacher", str(teacher),
                           "--init-from-teacher", "--max-steps", "1", *common])
    other_tokenizer = tmp_path / "other-tokenizer"
    pretrain_mlm.train_tokenizer(["completely different words for another vocabulary"] * 20, 60, 32).save_pretrained(
        other_tokenizer)
    with pytest.raises(SystemExit, match="differs from the teacher"):
        pretrain_mlm.main(["--output-dir", str(tmp_path / "x"), "--fff-depth", "2", "--teacher", str(teacher),
                           "--tokenizer", str(other_tokenizer), "--max-steps", "1", *common])
