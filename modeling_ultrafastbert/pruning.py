# Copyright 2026 The UltraFastBERT-HF authors. Apache-2.0.
"""Weight pruning for UltraFastBERT: movement pruning, magnitude pruning, and compact storage of pruned checkpoints.

Training-time pruning (EdgeBERT, after Sanh et al., "Movement Pruning", NeurIPS 2020, and Zhu & Gupta, 2017):

  * ``movement``: every pruned tensor W gets learned importance scores S of its shape; the forward uses W * M with
    M = TopK(S) (the top ``1 - sparsity`` fraction of the tensor's scores kept). The mask is a straight-through
    estimator: dL/dS = dL/dM = dL/dW' * W, so a score grows when its weight moves away from zero.
  * ``soft-movement``: M = sigmoid(S) > tau, the threshold rising with the schedule, and an L1 penalty
    ``regularization * mean(sigmoid(S))`` per tensor pushing the scores down; the sparsity is whatever results.
  * ``magnitude``: M keeps the largest |W| of the tensor (gradual magnitude pruning, no extra parameters).

The sparsity follows the cubic schedule: 0 for ``warmup_steps``, then
``s_t = s_final * (1 - (1 - (t - warmup) / (total - warmup - cooldown)) ** 3)``, then ``s_final`` for the last
``cooldown_steps`` (it reaches ``s_final`` exactly at step ``total - cooldown``).

The masks are ``torch.nn.utils.parametrize`` parametrizations, so the model code is untouched and Trainer's
optimizer sees the scores as ordinary parameters. ``Pruner.finalize()`` bakes the masks into the weights (W * M),
removes the scores and records the sparsity of every tensor in ``config.pruning``: the result is an ordinary model.

Compact storage (``conversion/compact_pruned.py``): each pruned tensor is stored in model.safetensors as a bit mask
of its non-zero entries (``<key>_nonzero_bitmask``, uint8, 8 entries per byte, little-endian bit order) plus those
entries in order (``<key>_nonzero_values``), and ``config.pruning["compact_tensors"]`` lists them with their counts.
The model then holds the two as buffers while loading (``prepare_compact_pruned_modules_``) and rebuilds the exact
dense tensors right after ``from_pretrained`` (``restore_compact_pruned_weights_``), dropping the buffers.
"""

from __future__ import annotations

import math
import re

import torch
from torch import nn
from torch.nn.utils import parametrize

PRUNING_METHODS = ("movement", "soft-movement", "magnitude")
BITMASK_SUFFIX = "_nonzero_bitmask"
VALUES_SUFFIX = "_nonzero_values"

# the tensors of the encoder that "encoder sparsity" means: attention projections and the FFF node rows
ENCODER_PATTERNS = (
    r"layers\.\d+\.attention\.query_key_value\.weight",
    r"layers\.\d+\.attention\.dense\.weight",
    r"layers\.\d+\.feedforward\.in_weight",
    r"layers\.\d+\.feedforward\.out_weight",
)
EMBEDDING_PATTERNS = (r"embeddings\.word_embeddings\.weight",)


# --- schedule ---------------------------------------------------------------------------------------------------------

def cubic_schedule_fraction(step: int, total_steps: int, warmup_steps: int = 0, cooldown_steps: int = 0) -> float:
    """Progress in [0, 1] of the cubic schedule at optimizer step ``step`` (0-based): 0 during warm-up,
    ``1 - (1 - p) ** 3`` over the ramp (p its elapsed fraction), 1 from step ``total - cooldown`` on."""
    ramp = total_steps - warmup_steps - cooldown_steps
    if warmup_steps < 0 or cooldown_steps < 0 or ramp < 0:
        raise ValueError(
            f"warm-up ({warmup_steps}) and cool-down ({cooldown_steps}) steps must be non-negative and fit in the "
            f"{total_steps} training steps"
        )
    if step < warmup_steps:
        return 0.0
    if step >= warmup_steps + ramp:
        return 1.0
    return 1.0 - (1.0 - (step - warmup_steps) / ramp) ** 3


def cubic_sparsity(step: int, total_steps: int, final_sparsity: float, warmup_steps: int = 0,
                   cooldown_steps: int = 0, initial_sparsity: float = 0.0) -> float:
    """Sparsity at optimizer step ``step`` (0-based) of the cubic schedule (Zhu & Gupta 2017; Sanh et al. 2020)."""
    if not 0.0 <= final_sparsity < 1.0 or not 0.0 <= initial_sparsity <= final_sparsity:
        raise ValueError(f"sparsities must satisfy 0 <= initial ({initial_sparsity}) <= final ({final_sparsity}) < 1")
    fraction = cubic_schedule_fraction(step, total_steps, warmup_steps, cooldown_steps)
    return initial_sparsity + (final_sparsity - initial_sparsity) * fraction


def _steps(value: float | int, total_steps: int, name: str) -> int:
    """Steps given as a count (int) or as a fraction of the training steps (float < 1)."""
    if isinstance(value, float) and 0.0 <= value < 1.0:
        return int(round(value * total_steps))
    if isinstance(value, bool) or int(value) != value or value < 0:
        raise ValueError(f"{name} must be a step count or a fraction in [0, 1), got {value!r}")
    return int(value)


# --- masks --------------------------------------------------------------------------------------------------------

def topk_mask(scores: torch.Tensor, sparsity: float, per_row: bool = False) -> torch.Tensor:
    """Binary mask keeping the ``numel - round(sparsity * numel)`` largest scores of the tensor (``per_row``: of
    each row, i.e. along the last dimension)."""
    if per_row:
        pruned = int(round(sparsity * scores.shape[-1]))
        mask = torch.zeros_like(scores)
        if pruned <= 0:
            return mask + 1
        kept = scores.shape[-1] - pruned
        if kept > 0:
            mask.scatter_(-1, scores.detach().topk(kept, dim=-1, sorted=False).indices, 1.0)
        return mask
    pruned = int(round(sparsity * scores.numel()))
    if pruned <= 0:
        return torch.ones_like(scores)
    mask = torch.zeros(scores.numel(), dtype=scores.dtype, device=scores.device)
    kept = scores.numel() - pruned
    if kept > 0:
        mask[scores.detach().reshape(-1).topk(kept, sorted=False).indices] = 1.0
    return mask.view_as(scores)


class _StraightThroughTopK(torch.autograd.Function):
    """M = TopK(S); the gradient passes to the scores unchanged (straight-through)."""

    @staticmethod
    def forward(ctx, scores, sparsity):
        return topk_mask(scores, sparsity)

    @staticmethod
    def backward(ctx, grad):
        return grad, None


class _StraightThroughThreshold(torch.autograd.Function):
    """M = sigmoid(S) > threshold; the gradient passes to the scores unchanged (straight-through)."""

    @staticmethod
    def forward(ctx, scores, threshold):
        return (torch.sigmoid(scores) > threshold).to(scores.dtype)

    @staticmethod
    def backward(ctx, grad):
        return grad, None


class MovementMask(nn.Module):
    """Parametrization W -> W * M(S) with learned scores S (hard TopK or soft threshold)."""

    def __init__(self, weight: torch.Tensor, soft: bool = False):
        super().__init__()
        self.soft = soft
        # zeros: before any movement all weights are equally important (Sanh et al.'s constant init)
        self.scores = nn.Parameter(torch.zeros_like(weight, dtype=torch.float32))
        self.sparsity = 0.0  # hard variant: fraction pruned now
        self.threshold = 0.0  # soft variant: sigmoid(S) must exceed this

    def mask(self) -> torch.Tensor:
        if self.soft:
            return _StraightThroughThreshold.apply(self.scores, self.threshold)
        return _StraightThroughTopK.apply(self.scores, self.sparsity)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * self.mask().to(weight.dtype)


class MagnitudeMask(nn.Module):
    """Parametrization W -> W * M with M keeping the largest |W| of the tensor, or of each row with ``per_row`` (no
    gradient through the mask)."""

    def __init__(self, weight: torch.Tensor, per_row: bool = False):
        super().__init__()
        self.sparsity = 0.0
        self.per_row = per_row

    def mask(self, weight: torch.Tensor) -> torch.Tensor:
        return topk_mask(weight.detach().abs().float(), self.sparsity, self.per_row)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        if self.sparsity <= 0:
            return weight
        return weight * self.mask(weight).to(weight.dtype)


def _owner(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    module_name, _, attribute = name.rpartition(".")
    return (model.get_submodule(module_name) if module_name else model), attribute


def _base_relative(name: str) -> str:
    """Parameter name relative to the bare encoder (head models hold it under ``ultrafastbert.``)."""
    return name[len("ultrafastbert."):] if name.startswith("ultrafastbert.") else name


class Pruner:
    """Attach pruning masks to a model, step their schedule, and bake them in.

    Args:
        model: an UltraFastBERT model (any head).
        method: ``"movement"`` (hard TopK), ``"soft-movement"`` or ``"magnitude"``, for the encoder tensors
            (attention projections and FFF ``in_weight`` / ``out_weight``).
        sparsity: final fraction of zeros per encoder tensor (hard variants); 0 leaves the encoder alone.
        embedding_sparsity: final fraction of zeros of the word embeddings, by magnitude; 0 leaves them alone.
        embedding_per_row: rank the embedding magnitudes within each token's row (every token keeps the same number
            of entries) instead of over the whole matrix.
        warmup_steps, cooldown_steps: schedule plateaus, as step counts or fractions of the training steps.
        soft_threshold: final threshold on sigmoid(S) of soft movement.
        regularization: L1 coefficient on mean(sigmoid(S)) per tensor, soft movement (ramped with the schedule).

    Create the pruner before the Trainer (so that its optimizer holds the scores) and pass ``PruningCallback(pruner)``.
    """

    def __init__(self, model: nn.Module, method: str = "movement", sparsity: float = 0.5,
                 embedding_sparsity: float = 0.0, warmup_steps: float | int = 0.1, cooldown_steps: float | int = 0.1,
                 soft_threshold: float = 0.1, regularization: float = 1.0, embedding_per_row: bool = False):
        if method not in PRUNING_METHODS:
            raise ValueError(f"pruning method must be one of {PRUNING_METHODS}, got {method!r}")
        for name, value in (("sparsity", sparsity), ("embedding_sparsity", embedding_sparsity)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
                raise ValueError(f"{name} must be a fraction in [0, 1), got {value!r}")
        if not 0.0 < soft_threshold < 1.0:
            raise ValueError(f"soft_threshold must lie in (0, 1) (a threshold on sigmoid(scores)), got {soft_threshold}")
        if regularization < 0:
            raise ValueError(f"regularization must be >= 0, got {regularization}")
        self.model = model
        self.method = method
        self.sparsity = float(sparsity)
        self.embedding_sparsity = float(embedding_sparsity)
        self.warmup_steps, self.cooldown_steps = warmup_steps, cooldown_steps
        self.soft_threshold = soft_threshold
        self.regularization = regularization
        self.schedule_fraction = 0.0  # progress of the schedule in [0, 1]
        self.masks: dict[str, nn.Module] = {}  # parameter name -> its mask parametrization
        encoder = method == "soft-movement" or self.sparsity > 0
        for name, parameter in list(model.named_parameters()):
            relative = _base_relative(name)
            if encoder and any(re.fullmatch(p, relative) for p in ENCODER_PATTERNS):
                mask = MagnitudeMask(parameter) if method == "magnitude" else MovementMask(
                    parameter, soft=method == "soft-movement")
            elif self.embedding_sparsity > 0 and any(re.fullmatch(p, relative) for p in EMBEDDING_PATTERNS):
                mask = MagnitudeMask(parameter, per_row=embedding_per_row)
            else:
                continue
            module, attribute = _owner(model, name)
            # unsafe: parametrizing a tied matrix (the MLM decoder reads it unmasked while training; finalize masks both)
            parametrize.register_parametrization(module, attribute, mask.to(parameter.device), unsafe=True)
            self.masks[name] = mask
        if not self.masks:
            raise ValueError("nothing to prune: give a sparsity > 0, soft movement, or an embedding sparsity > 0")

    # --- schedule -------------------------------------------------------------------------------------------------

    def target_sparsity(self, name: str) -> float:
        return self.embedding_sparsity if any(
            re.fullmatch(p, _base_relative(name)) for p in EMBEDDING_PATTERNS) else self.sparsity

    def set_step(self, step: int, total_steps: int) -> None:
        """Put every mask at the schedule's value for optimizer step ``step`` of ``total_steps``."""
        warmup = _steps(self.warmup_steps, total_steps, "warmup_steps")
        cooldown = _steps(self.cooldown_steps, total_steps, "cooldown_steps")
        self.schedule_fraction = cubic_schedule_fraction(step, total_steps, warmup, cooldown)
        for name, mask in self.masks.items():
            mask.sparsity = self.target_sparsity(name) * self.schedule_fraction
            if isinstance(mask, MovementMask):
                mask.threshold = self.soft_threshold * self.schedule_fraction

    def score_parameters(self) -> list[nn.Parameter]:
        return [mask.scores for mask in self.masks.values() if isinstance(mask, MovementMask)]

    def add_regularization_gradient_(self) -> None:
        """Soft movement's L1 penalty, ``lambda_t * sum over tensors of mean(sigmoid(S))``: its gradient is added to
        the scores' gradients (called before each optimizer step; lambda_t ramps with the schedule)."""
        if self.method != "soft-movement" or self.regularization == 0:
            return
        strength = self.regularization * self.schedule_fraction
        for scores in self.score_parameters():
            sigmoid = torch.sigmoid(scores.detach())
            penalty_grad = strength * sigmoid * (1 - sigmoid) / scores.numel()
            scores.grad = penalty_grad if scores.grad is None else scores.grad + penalty_grad

    def optimizer_grouped_parameters(self, weight_decay: float = 0.0, score_lr: float | None = None) -> list[dict]:
        """Parameter groups for an optimizer: weights (decayed except biases and norms) and scores (no decay, own
        learning rate; scores move by about the learning rate per Adam step, so they want a larger one)."""
        scores = {id(p) for p in self.score_parameters()}
        decay, no_decay = [], []
        for name, parameter in self.model.named_parameters():
            if id(parameter) in scores or not parameter.requires_grad:
                continue
            (no_decay if parameter.ndim < 2 or "norm" in name.lower() else decay).append(parameter)
        groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        if scores:
            group = {"params": self.score_parameters(), "weight_decay": 0.0}
            if score_lr is not None:
                group["lr"] = score_lr
            groups.append(group)
        return groups

    # --- masks and finalisation -------------------------------------------------------------------------------------

    @torch.no_grad()
    def current_masks(self) -> dict[str, torch.Tensor]:
        """The binary mask of every pruned tensor, as the next forward would use it."""
        masks = {}
        for name, mask in self.masks.items():
            module, attribute = _owner(self.model, name)
            original = module.parametrizations[attribute].original
            masks[name] = (mask.mask(original) if isinstance(mask, MagnitudeMask) else mask.mask()).bool()
        return masks

    @torch.no_grad()
    def finalize(self) -> dict:
        """Bake W * M into every pruned weight, remove the masks and scores, and record the sparsity per tensor in
        ``config.pruning``. Returns that record. The model is an ordinary model afterwards."""
        masks = self.current_masks()
        tensors = {}
        for name, mask in masks.items():
            module, attribute = _owner(self.model, name)
            parametrize.remove_parametrizations(module, attribute, leave_parametrized=False)
            weight = getattr(module, attribute)
            weight.masked_fill_(~mask, 0.0)  # W * M, with +0.0 where pruned (a product gives -0.0 for W < 0)
            tensors[_base_relative(name)] = round(1.0 - mask.float().mean().item(), 6)
        encoder = [n for n in masks if not any(re.fullmatch(p, _base_relative(n)) for p in EMBEDDING_PATTERNS)]
        record = {
            "method": self.method,
            "encoder_sparsity": _mean_sparsity(self.model, encoder),
            "embedding_sparsity": tensors.get("embeddings.word_embeddings.weight", 0.0),
            "tensor_sparsity": tensors,
        }
        self.masks = {}
        config = getattr(self.model, "config", None)
        if config is not None:
            config.pruning = record
        return record


def _mean_sparsity(model: nn.Module, names: list[str]) -> float:
    zeros = total = 0
    for name in names:
        tensor = model.get_parameter(name)
        zeros += int((tensor == 0).sum())
        total += tensor.numel()
    return round(zeros / total, 6) if total else 0.0


try:  # the Trainer callback; transformers is always present where the model runs, but keep the module importable alone
    from transformers import TrainerCallback
except ImportError:  # pragma: no cover
    TrainerCallback = object


class PruningCallback(TrainerCallback):
    """Steps a `Pruner`'s schedule with Trainer's optimizer steps and adds soft movement's penalty gradient.

    With ``finalize_on_train_end``, the masks are baked in when training ends (the model is then ordinary)."""

    def __init__(self, pruner: Pruner, finalize_on_train_end: bool = False):
        self.pruner = pruner
        self.finalize_on_train_end = finalize_on_train_end
        self.total_steps = None

    def on_train_begin(self, args, state, control, **kwargs):
        self.total_steps = state.max_steps
        self.pruner.set_step(state.global_step, self.total_steps)

    def on_step_begin(self, args, state, control, **kwargs):
        self.pruner.set_step(state.global_step, self.total_steps)

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        self.pruner.add_regularization_gradient_()

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs is not None and self.pruner.masks:
            logs["pruning_schedule"] = round(self.pruner.schedule_fraction, 4)

    def on_train_end(self, args, state, control, **kwargs):
        # the last step's schedule value (the target at the end of a full run)
        self.pruner.set_step(state.global_step, self.total_steps)
        if self.finalize_on_train_end:
            self.pruner.finalize()


# --- compact storage ----------------------------------------------------------------------------------------------

def pack_bits(mask: torch.Tensor) -> torch.Tensor:
    """Flattened boolean mask -> uint8, 8 entries per byte, entry i in bit i % 8 of byte i // 8."""
    flat = mask.reshape(-1).to(torch.uint8)
    flat = torch.cat([flat, flat.new_zeros((-flat.numel()) % 8)])
    weights = torch.tensor([1, 2, 4, 8, 16, 32, 64, 128], dtype=torch.uint8, device=flat.device)
    return (flat.view(-1, 8) * weights).sum(1, dtype=torch.uint8)


def unpack_bits(packed: torch.Tensor, numel: int) -> torch.Tensor:
    shifts = torch.arange(8, dtype=torch.uint8, device=packed.device)
    return ((packed.view(-1, 1) >> shifts) & 1).reshape(-1)[:numel].bool()


def nonzero_mask(tensor: torch.Tensor) -> torch.Tensor:
    """Entries whose bits are not all zero (-0.0 counts as non-zero, so that storage is bit-exact)."""
    return (tensor != 0) | torch.signbit(tensor) if tensor.is_floating_point() else tensor != 0


def compact_tensor(tensor: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A tensor as (bit mask of its non-zero entries, those entries in row-major order)."""
    keep = nonzero_mask(tensor)
    return pack_bits(keep), tensor.reshape(-1)[keep.reshape(-1)].clone()


def dense_tensor(bitmask: torch.Tensor, values: torch.Tensor, shape) -> torch.Tensor:
    numel = math.prod(shape)
    keep = unpack_bits(bitmask, numel)
    if int(keep.sum()) != values.numel():
        raise ValueError(f"compact tensor of shape {tuple(shape)}: the bit mask marks {int(keep.sum())} non-zero "
                         f"entries but {values.numel()} values are stored")
    dense = torch.zeros(numel, dtype=values.dtype, device=values.device)
    dense[keep.to(values.device)] = values
    return dense.view(shape)


def _compact_entries(config) -> dict:
    pruning = getattr(config, "pruning", None)
    return (pruning or {}).get("compact_tensors") or {}


def prepare_compact_pruned_modules_(model: nn.Module) -> None:
    """Give the bare encoder of a compact checkpoint the buffers its model.safetensors holds (bit mask + values per
    pruned tensor, sized from ``config.pruning["compact_tensors"]``) and say the dense tensors are expected missing."""
    entries = _compact_entries(model.config)
    if not entries or not hasattr(model, "layers"):  # only the bare encoder holds compact tensors
        return
    ignore = set(model._keys_to_ignore_on_load_missing or [])
    for name, nonzeros in entries.items():
        module, attribute = _owner(model, name)
        dense = getattr(module, attribute)
        module.register_buffer(attribute + BITMASK_SUFFIX, torch.zeros((dense.numel() + 7) // 8, dtype=torch.uint8))
        module.register_buffer(attribute + VALUES_SUFFIX, torch.zeros(int(nonzeros), dtype=dense.dtype))
        ignore.add(re.escape(name) + "$")
        if name == "embeddings.word_embeddings.weight" and getattr(model.config, "tie_word_embeddings", False):
            ignore.add(r"decoder\.weight$")  # the MLM decoder is tied to it: restored with it
    model._keys_to_ignore_on_load_missing = ignore


@torch.no_grad()
def restore_compact_pruned_weights_(model: nn.Module) -> bool:
    """After loading a compact checkpoint: rebuild every dense tensor from its bit mask and values (in place, so tied
    weights stay tied), drop the buffers and the record of them. Returns whether anything was restored."""
    entries = _compact_entries(model.config)
    if not entries:
        return False
    base = model if hasattr(model, "layers") else getattr(model, "ultrafastbert", None)
    if base is None:
        return False
    for name in entries:
        module, attribute = _owner(base, name)
        dense = getattr(module, attribute)
        bitmask = module._buffers.pop(attribute + BITMASK_SUFFIX)
        values = module._buffers.pop(attribute + VALUES_SUFFIX)
        dense.copy_(dense_tensor(bitmask, values.to(dense.dtype), dense.shape))
    model.config.pruning = {k: v for k, v in model.config.pruning.items() if k != "compact_tensors"}
    return True


__all__ = [
    "PRUNING_METHODS",
    "cubic_schedule_fraction",
    "cubic_sparsity",
    "topk_mask",
    "MovementMask",
    "MagnitudeMask",
    "Pruner",
    "PruningCallback",
    "pack_bits",
    "unpack_bits",
    "compact_tensor",
    "dense_tensor",
    "prepare_compact_pruned_modules_",
    "restore_compact_pruned_weights_",
]
