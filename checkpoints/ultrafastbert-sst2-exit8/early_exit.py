# Copyright 2026 The UltraFastBERT-HF authors. Apache-2.0.
"""Entropy early exit (DeeBERT) and EdgeBERT's exit-layer predictor, as plain functions on tensors.

The modelling file runs the layers; this module holds the arithmetic around the exits:

- `softmax_entropy`: the exit criterion, H = -sum p log p of a ramp's softmax.
- `simulate_exit_layers`: the exit layer of each example for a threshold, from every ramp's entropy (what the model
  does layer by layer at inference, computed at once from a full-depth pass; used for calibration).
- `fit_exit_predictor` / `predict_exit_layers`: EdgeBERT's lookup table from the first ramp's entropy to the
  predicted exit layer, fitted on held-out data.
- `calibrate_exits` / `pick_exit_threshold`: the calibration curve (threshold -> mean layers, accuracy, predictor)
  and the knob that picks a threshold meeting a layer, latency or accuracy budget from it.

Layers are numbered from 1: exit layer l means that layers 1..l ran and ramp l (the final head when l is the last
layer) gave the prediction. Torch only, so that it travels with the checkpoints as remote code.
"""

import math

import torch


def softmax_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy in nats of softmax(logits) over the last dimension, computed in float32: shape logits.shape[:-1]."""
    log_probs = torch.log_softmax(logits.float(), dim=-1)
    return -(log_probs.exp() * log_probs).sum(dim=-1)


def simulate_exit_layers(entropies: torch.Tensor, threshold: float | None) -> torch.Tensor:
    """Exit layer (1-based) of each example: the first layer whose entropy is below the threshold, else the last.

    ``entropies`` has shape (examples, layers), the entropy of every ramp with the final head last; the final head's
    entropy does not matter (the last layer always exits). ``None`` runs every layer.
    """
    if entropies.dim() != 2:
        raise ValueError(f"entropies must have shape (examples, layers), got {tuple(entropies.shape)}")
    examples, layers = entropies.shape
    last = torch.full((examples,), layers, dtype=torch.long)
    if threshold is None or layers == 1:
        return last
    leaves = entropies[:, :-1] < threshold  # (examples, layers - 1)
    first = leaves.float().argmax(dim=1) + 1  # argmax finds the first True
    return torch.where(leaves.any(dim=1), first, last)


def fit_exit_predictor(first_entropy: torch.Tensor, exit_layers: torch.Tensor, num_bins: int = 16) -> dict:
    """EdgeBERT's predictor: bins of the first ramp's entropy -> the exit layer to expect.

    The bin edges are quantiles of the held-out entropies (so every bin holds data); each bin predicts the layer that
    is within one layer of the most of its examples' true exits (ties: the earlier layer), which is the accuracy the
    predictor is judged on. Returns ``{"entropy_bin_edges": [...], "exit_layers": [...]}`` (JSON-ready, for the
    config), with one more layer than edges.
    """
    first_entropy = first_entropy.detach().float().reshape(-1).contiguous().cpu()
    exit_layers = exit_layers.detach().long().reshape(-1).cpu()
    if first_entropy.numel() == 0 or first_entropy.numel() != exit_layers.numel():
        raise ValueError(
            f"fit_exit_predictor needs one exit layer per entropy and at least one example, got "
            f"{first_entropy.numel()} entropies and {exit_layers.numel()} exit layers"
        )
    if num_bins < 1:
        raise ValueError(f"num_bins must be >= 1, got {num_bins}")
    quantiles = torch.linspace(0, 1, num_bins + 1)[1:-1]
    edges = torch.unique(torch.quantile(first_entropy, quantiles)) if num_bins > 1 else torch.empty(0)
    bins = torch.bucketize(first_entropy, edges, right=True)
    max_layer = int(exit_layers.max())
    candidates = torch.arange(1, max_layer + 1)
    overall = _best_within_one(exit_layers, candidates)
    predicted = []
    for index in range(edges.numel() + 1):
        in_bin = exit_layers[bins == index]
        predicted.append(_best_within_one(in_bin, candidates) if in_bin.numel() else overall)
    return {"entropy_bin_edges": [float(e) for e in edges], "exit_layers": predicted}


def _best_within_one(exit_layers: torch.Tensor, candidates: torch.Tensor) -> int:
    hits = ((exit_layers[None, :] - candidates[:, None]).abs() <= 1).sum(dim=1)
    return int(candidates[int(hits.argmax())])  # argmax returns the first maximum: the earliest layer


def predict_exit_layers(predictor: dict, first_entropy: torch.Tensor) -> torch.Tensor:
    """Predicted exit layer (1-based, long) for each first-ramp entropy, from a table of `fit_exit_predictor`."""
    edges = torch.tensor(predictor["entropy_bin_edges"], dtype=torch.float32, device=first_entropy.device)
    layers = torch.tensor(predictor["exit_layers"], dtype=torch.long, device=first_entropy.device)
    return layers[torch.bucketize(first_entropy.float().contiguous(), edges, right=True)]


def default_thresholds(num_labels: int, count: int = 25) -> list[float]:
    """Thresholds from 0 (never exit early) to the largest possible entropy log(num_labels) (exit at layer 1)."""
    top = math.log(max(num_labels, 2))
    # denser near 0, where confident ramps live: a quadratic spacing
    return [round(top * (i / (count - 1)) ** 2, 6) for i in range(count)]


def calibrate_exits(
    layer_logits: torch.Tensor,
    labels: torch.Tensor,
    thresholds: list[float] | None = None,
    num_bins: int = 16,
) -> list[dict]:
    """The calibration curve on held-out data.

    ``layer_logits`` (examples, layers, labels) are every exit's logits from a full-depth pass (the model's
    ``exit_logits`` output); for each threshold the exits are simulated and the point records the threshold, the
    mean exit layer, the accuracy, the exit predictor fitted for that threshold and the share of examples that
    predictor places within one layer of the true exit.
    """
    if layer_logits.dim() != 3:
        raise ValueError(f"layer_logits must have shape (examples, layers, labels), got {tuple(layer_logits.shape)}")
    layer_logits = layer_logits.detach().float().cpu()
    labels = labels.detach().reshape(-1).cpu()
    if labels.numel() != layer_logits.shape[0]:
        raise ValueError(f"got {labels.numel()} labels for {layer_logits.shape[0]} examples")
    entropies = softmax_entropy(layer_logits)
    rows = torch.arange(layer_logits.shape[0])
    if thresholds is None:
        thresholds = default_thresholds(layer_logits.shape[-1])
    curve = []
    for threshold in sorted(float(t) for t in thresholds):
        if threshold < 0:
            raise ValueError(f"thresholds must be non-negative, got {threshold}")
        exits = simulate_exit_layers(entropies, threshold)
        predictions = layer_logits[rows, exits - 1].argmax(dim=-1)
        predictor = fit_exit_predictor(entropies[:, 0], exits, num_bins)
        predicted = predict_exit_layers(predictor, entropies[:, 0])
        curve.append({
            "threshold": threshold,
            "mean_layers": round(float(exits.float().mean()), 4),
            "accuracy": round(float((predictions == labels).float().mean()), 4),
            "predictor_within_one": round(float(((predicted - exits).abs() <= 1).float().mean()), 4),
            "exit_predictor": predictor,
        })
    return curve


def evaluate_exit_curve(layer_logits: torch.Tensor, labels: torch.Tensor, calibration: list[dict]) -> list[dict]:
    """Apply a calibration curve fitted elsewhere (held-out data) to new data (e.g. the dev set): per threshold the
    simulated mean exit layer and accuracy, and how often that threshold's stored predictor lands within one layer
    of the true exit. Nothing is fitted here."""
    layer_logits = layer_logits.detach().float().cpu()
    labels = labels.detach().reshape(-1).cpu()
    entropies = softmax_entropy(layer_logits)
    rows = torch.arange(layer_logits.shape[0])
    report = []
    for point in calibration:
        exits = simulate_exit_layers(entropies, point["threshold"])
        predicted = predict_exit_layers(point["exit_predictor"], entropies[:, 0])
        report.append({
            "threshold": point["threshold"],
            "mean_layers": round(float(exits.float().mean()), 4),
            "accuracy": round(float((layer_logits[rows, exits - 1].argmax(-1) == labels).float().mean()), 4),
            "predictor_within_one": round(float(((predicted - exits).abs() <= 1).float().mean()), 4),
        })
    return report


def exit_confusion(true_layers: torch.Tensor, predicted_layers: torch.Tensor, num_layers: int) -> list[list[int]]:
    """Counts[true - 1][predicted - 1] of exit layers (rows: true exit, columns: predicted exit)."""
    counts = torch.zeros(num_layers, num_layers, dtype=torch.long)
    index = (true_layers.long().cpu() - 1) * num_layers + (predicted_layers.long().cpu() - 1)
    counts.view(-1).index_add_(0, index, torch.ones_like(index))
    return counts.tolist()


def pick_exit_threshold(
    calibration: list[dict],
    num_layers: int,
    mean_layers: float | None = None,
    relative_latency: float | None = None,
    max_accuracy_drop: float | None = None,
) -> dict:
    """The calibration point that meets one budget, given exactly one of:

    - ``mean_layers``: at most this many layers on average; the most accurate such point.
    - ``relative_latency``: at most this fraction of the full-depth runtime, modelled as layers run / layers (the
      theoretical runtime EdgeBERT reports; embeddings and ramps are not counted); the most accurate such point.
    - ``max_accuracy_drop``: accuracy at most this much below the full-depth accuracy (the threshold-0 point, or
      the most accurate one); the point with the fewest layers.
    """
    given = [name for name, value in (("mean_layers", mean_layers), ("relative_latency", relative_latency),
                                      ("max_accuracy_drop", max_accuracy_drop)) if value is not None]
    if len(given) != 1:
        raise ValueError(f"give exactly one of mean_layers, relative_latency, max_accuracy_drop (got {given or 'none'})")
    if not calibration:
        raise ValueError(
            "the model has no exit calibration curve (config.exit_calibration); fit one on held-out data with "
            "early_exit.calibrate_exits (examples/run_glue.py --exit-ramps does)"
        )
    if max_accuracy_drop is not None:
        if max_accuracy_drop < 0:
            raise ValueError(f"max_accuracy_drop must be >= 0, got {max_accuracy_drop}")
        reference = next((p["accuracy"] for p in calibration if p["threshold"] == 0), None)
        if reference is None:
            reference = max(p["accuracy"] for p in calibration)
        allowed = [p for p in calibration if p["accuracy"] >= reference - max_accuracy_drop - 1e-9]
        return min(allowed, key=lambda p: (p["mean_layers"], -p["accuracy"]))
    if relative_latency is not None:
        if not 0 < relative_latency <= 1:
            raise ValueError(f"relative_latency must lie in (0, 1], got {relative_latency}")
        mean_layers = relative_latency * num_layers
    if mean_layers <= 0:
        raise ValueError(f"mean_layers must be > 0, got {mean_layers}")
    allowed = [p for p in calibration if p["mean_layers"] <= mean_layers + 1e-9]
    if not allowed:
        fewest = min(p["mean_layers"] for p in calibration)
        raise ValueError(
            f"no calibrated threshold runs at most {mean_layers:.3g} layers on average; the fewest is {fewest:.3g}"
        )
    return max(allowed, key=lambda p: (p["accuracy"], -p["mean_layers"]))


__all__ = [
    "softmax_entropy",
    "simulate_exit_layers",
    "fit_exit_predictor",
    "predict_exit_layers",
    "default_thresholds",
    "calibrate_exits",
    "evaluate_exit_curve",
    "exit_confusion",
    "pick_exit_threshold",
]
