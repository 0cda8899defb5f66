"""pipeline() tasks with a WordPiece BertTokenizerFast, and Trainer fine-tuning on a slice of SST-2."""

import warnings

import numpy as np
import pytest
import torch
from conftest import read_sst2, tiny_config
from transformers import Trainer, TrainingArguments, pipeline

from modeling_ultrafastbert import UltraFastBertForMaskedLM, UltraFastBertForSequenceClassification, UltraFastBertModel

warnings.filterwarnings("ignore", message="UltraFastBERT: no native FFF kernel")


def config_for(tokenizer, **overrides):
    return tiny_config(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, **overrides)


def test_fill_mask_pipeline(wordpiece_tokenizer, tmp_path):
    model = UltraFastBertForMaskedLM(config_for(wordpiece_tokenizer)).eval()
    fill = pipeline("fill-mask", model=model, tokenizer=wordpiece_tokenizer, device="cpu")
    predictions = fill(f"a truly {wordpiece_tokenizer.mask_token} film", top_k=3)
    assert len(predictions) == 3
    assert all({"score", "token", "token_str", "sequence"} <= set(p) for p in predictions)
    scores = [p["score"] for p in predictions]
    assert scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1.0 + 1e-6
    # the pipeline's top token is the model's own argmax at the mask position
    encoded = wordpiece_tokenizer(f"a truly {wordpiece_tokenizer.mask_token} film", return_tensors="pt")
    position = int((encoded["input_ids"][0] == wordpiece_tokenizer.mask_token_id).nonzero()[0, 0])
    with torch.no_grad():
        logits = model(**encoded).logits[0, position]
    assert predictions[0]["token"] == int(logits.argmax())


def test_text_classification_pipeline(wordpiece_tokenizer):
    config = config_for(wordpiece_tokenizer, num_labels=2, id2label={0: "negative", 1: "positive"},
                        label2id={"negative": 0, "positive": 1})
    model = UltraFastBertForSequenceClassification(config).eval()
    classify = pipeline("text-classification", model=model, tokenizer=wordpiece_tokenizer, device="cpu")
    sentences = ["a gorgeous , witty , seductive movie .", "the plot is nothing but boilerplate clichés ."]
    results = classify(sentences, batch_size=2)
    assert [r["label"] in ("negative", "positive") for r in results] == [True, True]
    with torch.no_grad():
        for sentence, result in zip(sentences, results):
            probabilities = model(**wordpiece_tokenizer(sentence, return_tensors="pt")).logits.softmax(-1)[0]
            assert result["label"] == config.id2label[int(probabilities.argmax())]
            assert result["score"] == pytest.approx(float(probabilities.max()), rel=1e-4)


def test_feature_extraction_pipeline(wordpiece_tokenizer):
    model = UltraFastBertModel(config_for(wordpiece_tokenizer)).eval()
    extract = pipeline("feature-extraction", model=model, tokenizer=wordpiece_tokenizer, device="cpu")
    features = np.array(extract("an intelligent , moving film")[0])
    encoded = wordpiece_tokenizer("an intelligent , moving film", return_tensors="pt")
    with torch.no_grad():
        expected = model(**encoded).last_hidden_state[0].numpy()
    assert features.shape == expected.shape
    np.testing.assert_allclose(features, expected, rtol=1e-5, atol=1e-5)


class SST2Slice(torch.utils.data.Dataset):
    def __init__(self, tokenizer, split, limit):
        sentences, labels = read_sst2(split, limit)
        self.encoded = tokenizer(sentences, truncation=True, max_length=40)
        self.labels = labels

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        item = {key: values[index] for key, values in self.encoded.items()}
        item["labels"] = self.labels[index]
        return item


def accuracy(prediction):
    return {"accuracy": float((prediction.predictions.argmax(-1) == prediction.label_ids).mean())}


@pytest.mark.parametrize("gradient_checkpointing", [False, True])
def test_trainer_fine_tunes_on_sst2(wordpiece_tokenizer, tmp_path, gradient_checkpointing):
    torch.manual_seed(0)
    config = config_for(wordpiece_tokenizer, num_labels=2, fff_depth=4, fff_trees=1)
    model = UltraFastBertForSequenceClassification(config)
    train = SST2Slice(wordpiece_tokenizer, "train", 64)
    dev = SST2Slice(wordpiece_tokenizer, "dev", 128)
    args = TrainingArguments(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=16,
        per_device_eval_batch_size=64,
        num_train_epochs=25,
        learning_rate=3e-3,
        logging_steps=8,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        seed=0,
        gradient_checkpointing=gradient_checkpointing,
        disable_tqdm=True,
    )
    from transformers import DataCollatorWithPadding

    trainer = Trainer(model=model, args=args, train_dataset=train, eval_dataset=dev,
                      data_collator=DataCollatorWithPadding(wordpiece_tokenizer), compute_metrics=accuracy)
    before = trainer.evaluate(train)["eval_loss"]
    trainer.train()
    after = trainer.evaluate(train)["eval_loss"]
    assert after < before - 0.01, (before, after)
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) >= 4
    assert all(np.isfinite(losses)), losses
    assert model.ultrafastbert.layers[0].gradient_checkpointing == gradient_checkpointing
    metrics = trainer.evaluate()
    predictions = trainer.predict(dev)
    assert metrics["eval_accuracy"] == pytest.approx(float((predictions.predictions.argmax(-1) == np.array(dev.labels)).mean()))
