# Copyright 2026 The UltraFastBERT-HF authors. Apache-2.0.
"""UltraFastBERT in a few lines: classify sentences with the embedded SST-2 checkpoint, then time the conditional
(fast feedforward) path against the dense (masked) path on the same batch.

    python examples/quickstart.py
    python examples/quickstart.py "what a wonderful little film" "two hours I will never get back"

Runs offline: the checkpoint, its tokenizer and its modelling code are in ``checkpoints/ultrafastbert-sst2-small``.
"""

import argparse
import statistics
import time
from pathlib import Path

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

CHECKPOINT = Path(__file__).resolve().parents[1] / "checkpoints" / "ultrafastbert-sst2-small"
SENTENCES = [
    "a gripping, beautifully acted film that stays with you",
    "the plot is a mess and the jokes fall flat",
    "an unexpectedly moving story about friendship",
    "i have rarely been this bored in a cinema",
]


def median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up (first calls allocate, and may build a native kernel)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sentences", nargs="*", help="extra sentences to classify")
    parser.add_argument("--model", default=str(CHECKPOINT), help="checkpoint folder or Hub id")
    parser.add_argument("--repeats", type=int, default=5, help="timed repetitions per path (the median is shown)")
    args = parser.parse_args(argv)

    model = AutoModelForSequenceClassification.from_pretrained(args.model, trust_remote_code=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(args.model, trust_remote_code=True)
    classifier = pipeline("text-classification", model=model, tokenizer=tokenizer, device="cpu")

    sentences = SENTENCES + list(args.sentences)
    predictions = classifier(sentences)
    for sentence, prediction in zip(sentences, predictions):
        print(f"{prediction['label']:>8}  {prediction['score']:.3f}  {sentence}")

    # the same batch through both FFF paths: "conditional" visits D+1 neurons per token and tree, "dense" all of them
    batch = tokenizer(sentences * 8, padding=True, truncation=True, return_tensors="pt")
    timings, logits = {}, {}
    for mode in ("conditional", "dense"):
        model.config.fff_inference = mode

        def forward():
            with torch.inference_mode():
                logits[mode] = model(**batch).logits

        timings[mode] = median_seconds(forward, args.repeats)
    model.config.fff_inference = "conditional"
    agree = bool((logits["conditional"].argmax(-1) == logits["dense"].argmax(-1)).all())
    config = model.config
    used = (config.fff_depth + 1) * config.fff_trees
    print(
        f"\nbatch of {batch['input_ids'].shape[0]} x {batch['input_ids'].shape[1]} tokens, {config.num_hidden_layers} "
        f"layers, FFF {config.fff_trees}x depth {config.fff_depth} ({used} of {config.fff_num_nodes * config.fff_trees} "
        f"neurons per token), {torch.get_num_threads()} CPU threads, median of {args.repeats}:"
    )
    print(f"  conditional: {timings['conditional'] * 1e3:8.2f} ms")
    print(f"  dense:       {timings['dense'] * 1e3:8.2f} ms   (dense / conditional = "
          f"{timings['dense'] / timings['conditional']:.2f}x; same predictions: {agree})")
    print("  (whole-model time: attention and embeddings are the same in both; the FFF layers are a part of it)")
    return {"predictions": predictions, "timings": timings, "same_predictions": agree}


if __name__ == "__main__":
    main()
