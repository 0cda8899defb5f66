# Copyright 2026 The UltraFastBERT-HF authors. Apache-2.0.
"""Knowledge distillation of a sequence classifier from a fine-tuned teacher (Hinton et al. 2015; EdgeBERT's recipe).

The student's loss is ``alpha * soft + (1 - alpha) * hard``: ``hard`` is the student's own loss on the labels, ``soft``
the cross-entropy from the teacher's softened distribution ``softmax(teacher_logits / T)`` to the student's
``log_softmax(student_logits / T)``, times ``T**2`` so that its gradients keep their scale whatever the temperature.
EdgeBERT distills with ``alpha = 0.9`` (0.9 soft targets, 0.1 hard labels).

Sequence-classification logits are one distribution per sentence, so the teacher must predict the same labels: same
``num_labels`` and, where both configs name them, the same ``id2label`` (else ValueError); regression tasks are
refused. The teacher need not share the student's tokenizer: each model reads its own tokenization of the same
sentence. `teacher_logits` runs the teacher once over the training set (with its own tokenizer) and the logits travel
with the examples as ``teacher_logits``; `DistillationTrainer` can also run a live teacher on the student's own batch,
which is only meaningful when the tokenizers are identical (`same_tokenizer`), and refuses otherwise.
Everything else may differ: depth, width, heads, FFF or dense feedforward, off-ramps. The teacher runs in eval mode,
without gradients and without early exit (``config.early_exit_entropy = None``), so every example gets its full-depth
logits.

Intermediate-layer distillation (TinyBERT's, Jiao et al. 2020) adds ``hidden_weight * hidden_state_loss``: each
student layer's output state is pulled towards the state of the teacher layer at the same relative depth
(`hidden_layer_pairs`). It needs a live teacher reading the student's batches (same tokenizer) and the same hidden
size (ValueError otherwise); depths may differ. The states are compared after standardising each token's vector (a
LayerNorm without weights), because pre-LayerNorm residual streams grow in scale with depth and from model to model.

Masked-LM heads (one distribution per token over the vocabulary) distill the same way at the labelled (masked)
positions only, which needs the same vocabulary (`check_teacher_compatible`); `copy_teacher_weights` starts a student
from its teacher's weights (DistilBERT's initialisation). `examples/pretrain_mlm.py --teacher` uses both.

This module is used by `examples/run_glue.py` (``--teacher``, ``--distill-hidden-weight``); it is not part of the
remote code of checkpoints.
"""

import torch
from torch import nn

from transformers import Trainer


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float = 2.0,
    num_items_in_batch=None,
) -> torch.Tensor:
    """``T**2`` times the cross-entropy from the teacher's softened distribution to the student's, averaged over the
    examples (or summed and divided by ``num_items_in_batch``, Trainer's count of the step's labelled examples)."""
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student logits {tuple(student_logits.shape)} and teacher logits {tuple(teacher_logits.shape)} must have "
            "the same shape (same batch, same number of labels)"
        )
    if not temperature > 0:
        raise ValueError(f"the distillation temperature must be > 0, got {temperature!r}")
    targets = nn.functional.softmax(teacher_logits.detach().float() / temperature, dim=-1)
    log_probs = nn.functional.log_softmax(student_logits.float() / temperature, dim=-1)
    per_example = -(targets * log_probs).sum(dim=-1) * temperature**2
    if num_items_in_batch is None:
        return per_example.mean()
    if torch.is_tensor(num_items_in_batch):
        num_items_in_batch = num_items_in_batch.to(per_example.device)
    return per_example.sum() / num_items_in_batch


def hidden_layer_pairs(student_layers: int, teacher_layers: int) -> list[tuple[int, int]]:
    """``(student, teacher)`` index pairs into the models' ``hidden_states`` tuples: student layer ``i`` (1..Ls) learns
    from teacher layer ``i * Lt / Ls`` rounded half up (TinyBERT's uniform mapping). Index 0 (the embeddings) is left
    out; the last pair are the two final normalised states."""
    if student_layers < 1 or teacher_layers < 1:
        raise ValueError(f"layer counts must be >= 1, got student {student_layers} and teacher {teacher_layers}")
    return [(i, (2 * i * teacher_layers + student_layers) // (2 * student_layers)) for i in range(1, student_layers + 1)]


def hidden_state_loss(student_states, teacher_states, attention_mask=None, pairs=None) -> torch.Tensor:
    """Mean over the layer ``pairs`` of the mean squared difference between standardised token states, averaged over
    the tokens that ``attention_mask`` keeps (all tokens without a mask)."""
    if pairs is None:
        pairs = hidden_layer_pairs(len(student_states) - 1, len(teacher_states) - 1)
    losses = []
    for s_index, t_index in pairs:
        student, teacher = student_states[s_index], teacher_states[t_index]
        if student.shape != teacher.shape:
            raise ValueError(f"student state {s_index} {tuple(student.shape)} and teacher state {t_index} "
                             f"{tuple(teacher.shape)} differ in shape (hidden-state distillation needs the same batch, "
                             "sequence and hidden size)")
        width = student.shape[-1]
        difference = (nn.functional.layer_norm(student.float(), (width,))
                      - nn.functional.layer_norm(teacher.detach().float(), (width,)))
        per_token = difference.pow(2).mean(dim=-1)
        if attention_mask is None:
            losses.append(per_token.mean())
        else:
            keep = attention_mask.to(per_token.device, per_token.dtype)
            losses.append((per_token * keep).sum() / keep.sum().clamp(min=1.0))
    return torch.stack(losses).mean()


@torch.no_grad()
def copy_teacher_weights(student, teacher) -> dict:
    """Start ``student`` from ``teacher``'s weights (DistilBERT's initialisation): every student tensor is copied from
    the teacher tensor of the same name and shape. Feedforward node tensors (``...feedforward.in_weight``, ``in_bias``,
    ``out_weight``) of another tree arrangement with the same number of neurons are reshaped, neuron for neuron: the
    dense twin's 511 trees of depth 0 become the nodes of one tree of depth 8 in their stored order.

    Anything the teacher cannot supply (another width, depth, vocabulary, number of neurons) raises ValueError naming
    the tensors. Returns ``{"copied": [...], "reshaped": [...]}`` (state-dict names).
    """
    teacher_state = teacher.state_dict()
    copied, reshaped, missing = [], [], []
    for name, tensor in student.state_dict().items():
        source = teacher_state.get(name)
        # same neurons in another arrangement of trees: (K, N, H) rows of width H, or (K, N) biases
        same_neurons = (source is not None and ".feedforward." in name and source.numel() == tensor.numel()
                        and (tensor.dim() != 3 or source.shape[-1] == tensor.shape[-1]))
        if source is not None and source.shape == tensor.shape:
            tensor.copy_(source)
            copied.append(name)
        elif same_neurons:
            tensor.copy_(source.reshape(tensor.shape))
            reshaped.append(name)
        else:
            found = "absent" if source is None else f"shape {tuple(source.shape)}"
            missing.append(f"{name} {tuple(tensor.shape)} (teacher: {found})")
    if missing:
        raise ValueError("the teacher cannot initialise the student: no tensor of the same name and shape for "
                         + "; ".join(missing[:6]) + (f"; and {len(missing) - 6} more" if len(missing) > 6 else ""))
    return {"copied": copied, "reshaped": reshaped}


def _label_names(config) -> dict | None:
    names = getattr(config, "id2label", None)
    if not names:
        return None
    names = {int(key): str(value) for key, value in names.items()}
    if all(value == f"LABEL_{key}" for key, value in names.items()):
        return None  # transformers' placeholder names say nothing about the labels
    return names


def is_token_level(model) -> bool:
    """Whether ``model`` predicts one distribution per token over its vocabulary (a masked-LM head)."""
    get_output_embeddings = getattr(model, "get_output_embeddings", None)
    return get_output_embeddings is not None and get_output_embeddings() is not None


def check_teacher_compatible(student, teacher) -> None:
    """Raise ValueError if ``teacher``'s logits cannot serve as soft targets for ``student``'s (same label set; for
    masked-LM heads, the same vocabulary size)."""
    s_config, t_config = student.config, teacher.config
    if is_token_level(student) or is_token_level(teacher):
        if not (is_token_level(student) and is_token_level(teacher)):
            raise ValueError("a masked-LM student needs a masked-LM teacher (and a classifier a classifier): one "
                             "predicts tokens, the other labels")
        if s_config.vocab_size != t_config.vocab_size:
            raise ValueError(f"the teacher's vocabulary has {t_config.vocab_size} tokens and the student's "
                             f"{s_config.vocab_size}: masked-LM distillation compares them token id by token id")
        return
    if getattr(s_config, "problem_type", None) == "regression" or getattr(t_config, "problem_type", None) == "regression":
        raise ValueError("logits distillation needs a classification task (soft targets are class distributions); "
                         "the student or the teacher is a regression model")
    if s_config.num_labels != t_config.num_labels:
        raise ValueError(
            f"the teacher predicts {t_config.num_labels} labels and the student {s_config.num_labels}: logits "
            "distillation needs the same label set (fine-tune the teacher on the same task)"
        )
    s_names, t_names = _label_names(s_config), _label_names(t_config)
    if s_names is not None and t_names is not None and s_names != t_names:
        raise ValueError(f"the teacher's labels {t_names} differ from the student's {s_names}: the logits would be "
                         "compared label id by label id")


def same_tokenizer(first, second, sample_texts=()) -> bool:
    """Whether two tokenizers give the same token ids: same vocabulary, and the same ids for every sample text."""
    if first.get_vocab() != second.get_vocab():
        return False
    return all(first(text)["input_ids"] == second(text)["input_ids"] for text in sample_texts)


def prepare_teacher(teacher):
    """The teacher as it is used for distillation: eval mode (no dropout), frozen, full depth (no early exit), and
    a dense-feedforward twin (trees of depth 0) computed densely."""
    if getattr(teacher.config, "early_exit_entropy", None) is not None:
        teacher.config.early_exit_entropy = None
    if getattr(teacher.config, "fff_depth", None) == 0 and getattr(teacher.config, "fff_inference", None) == "conditional":
        # trees of depth 0 (the dense-feedforward twin): every node is on the path, so the dense product is the
        # same sum as the conditional gather, computed as one matrix product
        teacher.config.fff_inference = "dense"
    teacher.eval()
    teacher.requires_grad_(False)
    return teacher


@torch.no_grad()
def teacher_logits(teacher, dataset, collator, batch_size: int = 128) -> torch.Tensor:
    """The teacher's full-depth logits (examples, labels), fp32 on the CPU, for a dataset encoded with the teacher's
    own tokenizer (items without "labels" are fine; "labels" are dropped)."""
    prepare_teacher(teacher)
    device = next(teacher.parameters()).device
    logits = []
    for start in range(0, len(dataset), batch_size):
        batch = collator([dataset[index] for index in range(start, min(start + batch_size, len(dataset)))])
        batch = {key: value.to(device) for key, value in batch.items() if key not in ("labels", "teacher_logits")}
        logits.append(teacher(**batch, return_dict=True).logits.float().cpu())
    return torch.cat(logits) if logits else torch.empty(0, teacher.config.num_labels)


class DistillationTrainer(Trainer):
    """`Trainer` whose training loss is ``alpha * distillation_loss + (1 - alpha) * the student's own loss``.

    The soft targets come from the batch's ``teacher_logits`` (precomputed by `teacher_logits`, any tokenizer), or
    else from running ``teacher`` on the student's batch (only when the two tokenizers are identical; pass
    ``teacher_tokenizer`` to have that checked against the trainer's ``processing_class``). The student's own loss is
    its output's ``loss`` (its head's loss on the labels, normalised by Trainer's ``num_items_in_batch`` like the soft
    term). With ``hidden_weight > 0`` the live ``teacher`` also runs on every batch and ``hidden_weight *
    hidden_state_loss`` of the two models' states is added. Evaluation losses are the student's own loss only.
    """

    def __init__(self, *args, teacher: nn.Module | None = None, teacher_tokenizer=None, alpha: float = 0.9,
                 temperature: float = 2.0, hidden_weight: float = 0.0, teacher_id_map: torch.Tensor | None = None,
                 **kwargs):
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"the distillation weight alpha must lie in [0, 1], got {alpha!r}")
        if not temperature > 0:
            raise ValueError(f"the distillation temperature must be > 0, got {temperature!r}")
        if not hidden_weight >= 0:
            raise ValueError(f"the hidden-state distillation weight must be >= 0, got {hidden_weight!r}")
        super().__init__(*args, **kwargs)
        self.hidden_pairs = None
        if hidden_weight > 0:
            if teacher is None:
                raise ValueError("hidden-state distillation needs a live teacher model (precomputed logits carry no "
                                 "hidden states)")
            s_config, t_config = self.model.config, teacher.config
            if s_config.hidden_size != t_config.hidden_size:
                raise ValueError(
                    f"hidden-state distillation compares states of the same width: the student's hidden_size is "
                    f"{s_config.hidden_size}, the teacher's {t_config.hidden_size}"
                )
            self.hidden_pairs = hidden_layer_pairs(s_config.num_hidden_layers, t_config.num_hidden_layers)
        # student token id -> teacher token id (same token string) when the vocabularies differ; rows whose two
        # tokenizations disagree carry hidden_aligned = 0 and are left out of the hidden-state loss
        self.teacher_id_map = teacher_id_map
        if teacher is not None:
            check_teacher_compatible(self.model, teacher)
            student_tokenizer = self.processing_class
            if teacher_tokenizer is not None and student_tokenizer is not None and not same_tokenizer(
                student_tokenizer, teacher_tokenizer
            ):
                raise ValueError(
                    "the teacher's tokenizer differs from the student's, so the teacher cannot read the student's "
                    "batches: precompute its logits on its own tokenization (`teacher_logits`) instead"
                )
            teacher = prepare_teacher(teacher).to(self.args.device)
        self.teacher = teacher
        self.distill_alpha = float(alpha)
        self.distill_temperature = float(temperature)
        self.hidden_weight = float(hidden_weight)

    def _set_signature_columns_if_needed(self):
        # Trainer keeps only the columns the model's forward names; the soft targets are the trainer's own
        super()._set_signature_columns_if_needed()
        extra = [name for name in ("teacher_logits", "hidden_aligned") if name not in self._signature_columns]
        self._signature_columns = list(self._signature_columns) + extra

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs = dict(inputs)
        targets = inputs.pop("teacher_logits", None)
        aligned = inputs.pop("hidden_aligned", None)
        if not model.training or "labels" not in inputs:
            return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                        num_items_in_batch=num_items_in_batch)
        kwargs = {"num_items_in_batch": num_items_in_batch} if num_items_in_batch is not None else {}
        with_hidden = self.hidden_weight > 0
        if with_hidden:
            kwargs["output_hidden_states"] = True
        outputs = model(**inputs, **kwargs)
        teacher_outputs = None
        if targets is None or with_hidden:
            if self.teacher is None:
                raise ValueError("DistillationTrainer needs a teacher or batches with precomputed 'teacher_logits'")
            with torch.no_grad():
                teacher_inputs = {key: value for key, value in inputs.items() if key != "labels"}
                if with_hidden and self.teacher_id_map is not None:
                    if targets is None:
                        raise ValueError("a teacher with another vocabulary needs precomputed 'teacher_logits' (it "
                                         "reads translated ids, exact only where the tokenizations agree)")
                    id_map = self.teacher_id_map.to(inputs["input_ids"].device)
                    teacher_inputs["input_ids"] = id_map[inputs["input_ids"]]
                teacher_outputs = self.teacher(**teacher_inputs, output_hidden_states=with_hidden, return_dict=True)
            if targets is None:
                targets = teacher_outputs.logits
        student_logits, targets = outputs.logits, targets.to(outputs.logits.device)
        labelled = inputs["labels"] != -100
        if student_logits.dim() == 3:
            # token-level heads (masked LM): soft targets at the labelled (masked) positions only, as the hard loss
            student_logits, targets = student_logits[labelled], targets[labelled]
        soft = distillation_loss(student_logits, targets, self.distill_temperature, num_items_in_batch)
        loss = self.distill_alpha * soft + (1.0 - self.distill_alpha) * outputs.loss
        if with_hidden:
            mask = inputs.get("attention_mask")
            if aligned is not None:
                if mask is None:
                    mask = torch.ones_like(inputs["input_ids"])
                mask = mask * aligned.to(mask.device, mask.dtype).view(-1, 1)
            hidden = hidden_state_loss(outputs.hidden_states, teacher_outputs.hidden_states, mask, self.hidden_pairs)
            if num_items_in_batch is not None:
                # a per-batch mean: weigh it by the batch's share of the step's examples, as the summed terms are
                items = num_items_in_batch.to(hidden.device) if torch.is_tensor(num_items_in_batch) else num_items_in_batch
                hidden = hidden * (labelled.sum() / items)
            loss = loss + self.hidden_weight * hidden
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            # as Trainer does for a loss normalised by the step's item count over all devices
            loss = loss * self.accelerator.num_processes
        return (loss, outputs) if return_outputs else loss


__all__ = ["distillation_loss", "hidden_layer_pairs", "hidden_state_loss", "is_token_level", "check_teacher_compatible",
           "copy_teacher_weights", "same_tokenizer", "prepare_teacher", "teacher_logits", "DistillationTrainer"]
