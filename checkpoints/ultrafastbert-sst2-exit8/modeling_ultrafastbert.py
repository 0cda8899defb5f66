# Copyright 2026 The UltraFastBERT-HF authors. Apache-2.0.
"""PyTorch UltraFastBERT: a crammedBERT encoder whose feedforward blocks are fast feedforward (FFF) trees.

Reference: P. Belcak and R. Wattenhofer, "Exponentially Faster Language Modelling", 2023 (arXiv:2311.10770).
"""

import contextlib
import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from transformers import initialization as init
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import (
    BaseModelOutput,
    MaskedLMOutput,
    QuestionAnsweringModelOutput,
    SequenceClassifierOutput,
    TokenClassifierOutput,
)
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, PreTrainedModel

from .configuration_ultrafastbert import UltraFastBertConfig
from .early_exit import pick_exit_threshold, predict_exit_layers, softmax_entropy
from .fast_feedforward import FastFeedForward
from .adaptivfloat import AdaptivFloatLinear, prepare_quantized_modules_
from .pruning import prepare_compact_pruned_modules_, restore_compact_pruned_weights_
from .adaptive_span import AdaptiveSpan, adaptive_span_attention, span_penalty
from .cuda_graphs import cuda_graph_inference, recording_graph

# Every class a saved checkpoint should be loadable as through the Auto API with trust_remote_code=True.
AUTO_MAP = {
    "AutoConfig": "configuration_ultrafastbert.UltraFastBertConfig",
    "AutoModel": "modeling_ultrafastbert.UltraFastBertModel",
    "AutoModelForMaskedLM": "modeling_ultrafastbert.UltraFastBertForMaskedLM",
    "AutoModelForSequenceClassification": "modeling_ultrafastbert.UltraFastBertForSequenceClassification",
    "AutoModelForTokenClassification": "modeling_ultrafastbert.UltraFastBertForTokenClassification",
    "AutoModelForQuestionAnswering": "modeling_ultrafastbert.UltraFastBertForQuestionAnswering",
}
_AUTO_CLASS_OF = {name.split(".")[1]: auto for auto, name in AUTO_MAP.items() if auto != "AutoConfig"}


def _is_compiling() -> bool:
    return hasattr(torch, "compiler") and torch.compiler.is_compiling()


def _may_sync(tensor: torch.Tensor) -> bool:
    """Whether reading a value back to the host is allowed (not while compiling, capturing a CUDA graph or recording
    one through cuda_graphs.py)."""
    if _is_compiling() or recording_graph():  # recording: the warm-up run before a capture takes the capture's path
        return False
    return not (tensor.is_cuda and torch.cuda.is_current_stream_capturing())


def _mean_loss(loss_fn: Callable, prediction: torch.Tensor, target: torch.Tensor, num_items_in_batch=None, **options):
    """``loss_fn`` averaged over the labelled items of the batch.

    Given ``num_items_in_batch`` (what Trainer passes: the labelled items of the whole optimizer step, over every
    gradient-accumulation micro-batch and every device), the loss is summed and divided by that count instead, so the
    per-micro-batch, per-device losses add up to the mean over the step. Trainer relies on this: it leaves such a loss
    unscaled for accumulation and multiplies it by the number of devices before they average their gradients.
    """
    if num_items_in_batch is None:
        return loss_fn(prediction, target, reduction="mean", **options)
    if torch.is_tensor(num_items_in_batch):
        num_items_in_batch = num_items_in_batch.to(prediction.device)
    return loss_fn(prediction, target, reduction="sum", **options) / num_items_in_batch


class UltraFastBertScaledSinusoidalPositions(nn.Module):
    """Fixed sinusoids times one learned scalar (crammedBERT's "scaled-sinusoidal", after the FLASH paper)."""

    def __init__(self, hidden_size: int, max_positions: int):
        super().__init__()
        self.hidden_size = hidden_size
        self.max_positions = max_positions
        self.scale_factor = nn.Parameter(torch.tensor([1.0 / math.sqrt(hidden_size)]))
        # recomputed, never saved: the table is a pure function of the shape
        self.register_buffer("sinusoids", self.make_table(hidden_size, max_positions), persistent=False)

    @staticmethod
    def make_table(hidden_size: int, max_positions: int) -> torch.Tensor:
        position = torch.arange(max_positions, dtype=torch.float).unsqueeze(1)
        frequency = torch.exp(torch.arange(0, hidden_size, 2).float() * (-math.log(10000.0) / hidden_size))
        table = torch.zeros(max_positions, hidden_size)
        table[:, 0::2] = torch.sin(position * frequency)
        table[:, 1::2] = torch.cos(position * frequency)[:, : hidden_size // 2]
        return table

    def forward(self, position_ids: torch.Tensor | int) -> torch.Tensor:
        """Position vectors for ``position_ids`` of any shape: (..., hidden); an int ``n`` stands for positions 0..n-1
        (a slice of the table instead of a gather)."""
        if isinstance(position_ids, int):
            return self.scale_factor * self.sinusoids[:position_ids]
        return self.scale_factor * self.sinusoids[position_ids]


class UltraFastBertEmbeddings(nn.Module):
    """Word embeddings + positions, then LayerNorm and dropout (no token types, as in crammedBERT).

    With factorized embeddings (ALBERT, `config.embedding_size`) all of this is `embedding_size` wide and a
    projection to `hidden_size` follows."""

    def __init__(self, config: UltraFastBertConfig):
        super().__init__()
        width = config.word_embedding_size
        self.word_embeddings = nn.Embedding(config.vocab_size, width, padding_idx=config.pad_token_id)
        if config.position_embedding_type == "scaled_sinusoidal":
            self.position_embeddings = UltraFastBertScaledSinusoidalPositions(width, config.max_position_embeddings)
        else:
            self.position_embeddings = nn.Embedding(config.max_position_embeddings, width)
        self.LayerNorm = nn.LayerNorm(width, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.embedding_dropout_prob)
        if config.factorized_embeddings:  # absent otherwise: unfactorized checkpoints keep their state_dict keys
            self.projection = nn.Linear(width, config.hidden_size, bias=False)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if inputs_embeds is None:
            inputs_embeds = self.word_embeddings(input_ids)
        if position_ids is None:  # 0..L-1 for every row: one (L, hidden) table, broadcast over the batch
            if isinstance(self.position_embeddings, UltraFastBertScaledSinusoidalPositions):
                position_ids = inputs_embeds.shape[1]  # the table's first L rows, sliced rather than gathered
            else:
                position_ids = torch.arange(inputs_embeds.shape[1], device=inputs_embeds.device)
        positions = self.position_embeddings(position_ids)
        embeddings = self.dropout(self.LayerNorm(inputs_embeds + positions.to(inputs_embeds.dtype)))
        return self.projection(embeddings) if hasattr(self, "projection") else embeddings


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        scores = scores + attention_mask
    probs = nn.functional.softmax(scores, dim=-1)
    probs = nn.functional.dropout(probs, p=dropout, training=module.training)
    output = torch.matmul(probs, value).transpose(1, 2).contiguous()
    return output, probs


class UltraFastBertSelfAttention(nn.Module):
    """Bidirectional multi-head self-attention without biases; the output projection is part of it."""

    def __init__(self, config: UltraFastBertConfig):
        super().__init__()
        self.config = config
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.scaling = self.head_dim**-0.5
        self.is_causal = False
        # one GEMM for the three projections, in crammedBERT's layout: the rows of each head hold its query, key and
        # value blocks one after another
        self.query_key_value = nn.Linear(config.hidden_size, 3 * config.hidden_size, bias=False)
        self.dense = nn.Linear(config.hidden_size, config.hidden_size, bias=False)
        self.dropout_prob = config.attention_probs_dropout_prob
        if getattr(config, "adaptive_span", False):  # EdgeBERT's learned span per head (adaptive_span.py)
            initial = config.adaptive_span_init
            self.adaptive_span = AdaptiveSpan(
                self.num_heads, config.max_position_embeddings, config.adaptive_span_ramp,
                config.max_position_embeddings if initial is None else initial,
            )

    def forward(
        self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None, output_attentions: bool = False,
        residual: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """With ``residual`` (the skip connection, eval only: no dropout in between) the output is ``residual +
        attention``; the 8-bit output projection adds it while writing its product."""
        if hasattr(self, "adaptive_span"):
            return adaptive_span_attention(self, hidden_states, attention_mask, output_attentions, residual)
        batch, seq_length, _ = hidden_states.shape
        qkv = self.query_key_value(hidden_states).view(batch, seq_length, self.num_heads, 3, self.head_dim)
        query, key, value = qkv.permute(3, 0, 2, 1, 4).unbind(0)  # (batch, heads, seq, head_dim) views
        if attention_mask is not None and attention_mask.dtype != query.dtype:
            attention_mask = attention_mask.to(query.dtype)  # AdaptivFloat models may run attention in bf16

        if batch * seq_length == 0:  # empty input: nothing to attend (and the fused kernels' reshapes would fail)
            probs = query.new_zeros(batch, self.num_heads, seq_length, seq_length) if output_attentions else None
            context = hidden_states.new_zeros(batch, seq_length, self.num_heads * self.head_dim)
            return self._output_projection(context, hidden_states, residual), probs

        implementation = self.config._attn_implementation or "eager"
        if output_attentions:
            implementation = "eager"  # the fused kernels never materialise the probabilities
        if implementation == "sdpa":
            # called directly: the same call transformers' sdpa wrapper makes (not causal, no GQA), without its
            # Python per layer and call, which shows when the model is launched from the host
            context = nn.functional.scaled_dot_product_attention(
                query, key, value, attn_mask=attention_mask, dropout_p=self.dropout_prob if self.training else 0.0,
                scale=self.scaling,
            )
            context = context.transpose(1, 2).reshape(batch, seq_length, -1)  # (batch, seq, heads * head_dim)
            return self._output_projection(context, hidden_states, residual), None
        attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(implementation, eager_attention_forward)
        if implementation == "eager":
            attention_interface = eager_attention_forward
        context, probs = attention_interface(
            self,
            query,
            key,
            value,
            attention_mask,
            dropout=self.dropout_prob if self.training else 0.0,
            scaling=self.scaling,
        )
        context = context.reshape(batch, seq_length, -1)
        return self._output_projection(context, hidden_states, residual), (probs if output_attentions else None)

    def _output_projection(
        self, context: torch.Tensor, hidden_states: torch.Tensor, residual: torch.Tensor | None
    ) -> torch.Tensor:
        if isinstance(self.dense, AdaptivFloatLinear):
            # AdaptivFloat models may run attention in bf16: the projection returns in the residual stream's dtype
            # (the 8-bit product is computed in fp32: no round trip through bf16), adding the residual as it writes
            return self.dense(context, output_dtype=hidden_states.dtype, residual=residual)
        output = self.dense(context)
        return output if residual is None else residual + output


class UltraFastBertLayer(GradientCheckpointingLayer):
    """Pre-LayerNorm block: x + attn(LN(x)), then x + FFF(LN(x))."""

    def __init__(self, config: UltraFastBertConfig):
        super().__init__()
        self.config = config
        self.attention_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attention = UltraFastBertSelfAttention(config)
        self.feedforward_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.feedforward = FastFeedForward(config.hidden_size, config.fff_depth, config.fff_trees)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(
        self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None, output_attentions: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.training:
            attention_output, probs = self.attention(self.attention_norm(hidden_states), attention_mask,
                                                     output_attentions)
            hidden_states = hidden_states + self.dropout(attention_output)
        else:  # dropout is the identity: the attention adds the skip connection (the 8-bit projection while writing)
            hidden_states, probs = self.attention(self.attention_norm(hidden_states), attention_mask, output_attentions,
                                                  residual=hidden_states)
        # the inference switches live on the config so that flipping them on a loaded model acts at the next call
        # (written only when they changed: a module attribute write costs microseconds of Python, per layer and call)
        feedforward, config = self.feedforward, self.config
        if feedforward.inference != config.fff_inference or feedforward.kernel != config.fff_kernel:
            feedforward.inference, feedforward.kernel = config.fff_inference, config.fff_kernel
        normed = self.feedforward_norm(hidden_states)
        if self.training:
            hidden_states = hidden_states + self.dropout(self.feedforward(normed))
        else:  # dropout is the identity: the kernels (GPU, 8-bit CPU) add the skip connection while writing
            hidden_states = self.feedforward(normed, residual=hidden_states)
        return hidden_states, probs


class UltraFastBertPreTrainedModel(PreTrainedModel):
    config_class = UltraFastBertConfig
    config: UltraFastBertConfig
    base_model_prefix = "ultrafastbert"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flex_attn = False
    _supports_attention_backend = False
    _no_split_modules = ["UltraFastBertLayer"]
    # the heads honour Trainer's `num_items_in_batch` (see `_mean_loss`), as in-library models do
    accepts_loss_kwargs = True

    @torch.no_grad()
    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, FastFeedForward):
            in_bound = 1.0 / math.sqrt(module.hidden_size)
            out_bound = 1.0 / math.sqrt((module.depth + 1) * module.trees)
            init.uniform_(module.in_weight, -in_bound, in_bound)
            init.uniform_(module.in_bias, -in_bound, in_bound)
            init.uniform_(module.out_weight, -out_bound, out_bound)
        elif isinstance(module, UltraFastBertScaledSinusoidalPositions):
            init.constant_(module.scale_factor, 1.0 / math.sqrt(module.hidden_size))
            init.copy_(module.sinusoids, module.make_table(module.hidden_size, module.max_positions))
        elif isinstance(module, AdaptiveSpan):
            init.constant_(module.span_fraction, module.initial_span / module.max_positions)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        # Marking each class with its auto class makes save_pretrained copy the remote-code files (the configuration,
        # this file and the FFF/kernel modules it imports) next to the weights.
        cls._auto_class = _AUTO_CLASS_OF.get(cls.__name__, "AutoModel")

    def post_init(self):
        # an AdaptivFloat checkpoint's config says so: build the uint8-code modules its weights load into
        if getattr(self.config, "weight_quantization", None):
            prepare_quantized_modules_(self, self.config.weight_quantization)
        # a compact pruned checkpoint (conversion/compact_pruned.py) stores bit masks + non-zero values instead
        prepare_compact_pruned_modules_(self)
        super().post_init()

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        loaded = super().from_pretrained(*args, **kwargs)
        model = loaded[0] if isinstance(loaded, tuple) else loaded  # (model, loading_info) with output_loading_info
        restore_compact_pruned_weights_(model)  # compact pruned checkpoints: rebuild the exact dense tensors
        return loaded

    def _with_span_penalty(
        self, loss: torch.Tensor | None, labels: torch.Tensor, num_items_in_batch=None, ignore_index: int = -100
    ) -> torch.Tensor | None:
        """The training loss plus the adaptive-span penalty (coefficient * mean z), when spans are on.

        With Trainer's `num_items_in_batch` the data loss is a share of a sum over every micro-batch of the step (and
        every process), so the penalty takes the same share (labelled items here / all items): summed over the step it
        is counted once, not once per micro-batch or per process."""
        if loss is None or not self.training or not getattr(self.config, "adaptive_span", False):
            return loss
        penalty = span_penalty(self, self.config.adaptive_span_penalty,
                               self.config.adaptive_span_penalty_form)
        if penalty is None:
            return loss
        if num_items_in_batch is not None:
            counted = labels.ne(ignore_index).sum().to(penalty.device, penalty.dtype)
            penalty = penalty * (counted / num_items_in_batch)
        return loss + penalty.to(loss.dtype)

    @property
    def weight_quantization(self) -> dict | None:
        """How the weights are stored: None (floating point) or the AdaptivFloat format of the config."""
        return getattr(self.config, "weight_quantization", None)

    def save_pretrained(self, save_directory, *args, **kwargs):
        # transformers records only the auto class of the saved object; a checkpoint of ours names all of them
        self.config.auto_map = dict(AUTO_MAP)
        return super().save_pretrained(save_directory, *args, **kwargs)


class UltraFastBertModel(UltraFastBertPreTrainedModel):
    """The bare encoder: embeddings, pre-LayerNorm FFF blocks, final LayerNorm."""

    def __init__(self, config: UltraFastBertConfig):
        super().__init__(config)
        self.embeddings = UltraFastBertEmbeddings(config)
        # one block per group (ALBERT sharing): without sharing, one per layer; `layer_sequence` maps layers to blocks
        self.layer_groups = tuple(config.layer_groups())
        self.layers = nn.ModuleList([UltraFastBertLayer(config) for _ in range(self.layer_groups[-1] + 1)])
        self.final_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self):
        return self.embeddings.word_embeddings

    def set_input_embeddings(self, value):
        self.embeddings.word_embeddings = value

    def layer_sequence(self) -> list | nn.ModuleList:
        """The block each of the `num_hidden_layers` layers runs, in order: with ALBERT sharing (fewer blocks than
        layers) the same module appears for every layer of its group."""
        if len(self.layers) == len(self.layer_groups):
            return self.layers
        return [self.layers[group] for group in self.layer_groups]

    def _validate_inputs(self, input_ids, attention_mask, inputs_embeds) -> tuple[int, int]:
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Pass exactly one of input_ids or inputs_embeds.")
        if input_ids is not None:
            if input_ids.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
                raise ValueError(f"input_ids must be an integer tensor, got dtype {input_ids.dtype}")
            if input_ids.dim() != 2:
                raise ValueError(f"input_ids must have shape (batch, sequence), got {tuple(input_ids.shape)}")
            batch, seq_length = input_ids.shape
            if _may_sync(input_ids) and input_ids.numel() > 0:
                low, high = torch.stack([input_ids.min(), input_ids.max()]).tolist()  # one host sync, not two
                if low < 0 or high >= self.config.vocab_size:
                    raise ValueError(
                        f"input_ids contain ids outside the vocabulary [0, {self.config.vocab_size}): "
                        f"min {low}, max {high}"
                    )
        else:
            if inputs_embeds.dim() != 3 or inputs_embeds.shape[-1] != self.config.word_embedding_size:
                raise ValueError(
                    f"inputs_embeds must have shape (batch, sequence, {self.config.word_embedding_size}), "
                    f"got {tuple(inputs_embeds.shape)}"
                )
            batch, seq_length = inputs_embeds.shape[:2]
        if seq_length > self.config.max_position_embeddings:
            raise ValueError(
                f"Sequence length {seq_length} exceeds max_position_embeddings={self.config.max_position_embeddings}; "
                "truncate the input (e.g. tokenizer(..., truncation=True, max_length=...))."
            )
        if attention_mask is not None and tuple(attention_mask.shape) != (batch, seq_length):
            raise ValueError(
                f"attention_mask has shape {tuple(attention_mask.shape)}, expected (batch, sequence) = "
                f"{(batch, seq_length)} to match the inputs"
            )
        return batch, seq_length

    def _position_ids(
        self, position_ids: torch.Tensor | None, attention_mask: torch.Tensor | None, batch: int, seq_length: int
    ) -> torch.Tensor | None:
        """The position of every token: given ones checked, else 0..L-1 shifted left past each row's leading padding.

        The shift gives a left-padded sentence the positions it has alone (the leading padding gets position 0: it is
        masked out of attention, so its value never reaches a real token). Right padding, or none, keeps 0..L-1
        everywhere, padding included, as the original release does (its "avg" pooler over padding depends on it).
        ``None`` means 0..L-1 for every row.
        """
        if position_ids is None:
            if attention_mask is None:
                return None
            if _may_sync(attention_mask) and bool(attention_mask[:, :1].all()):
                return None  # no row starts with padding: 0..L-1 everywhere, nothing to compute per row
            leading_padding = (attention_mask.to(torch.bool).cumsum(-1) == 0).sum(-1, keepdim=True)
            return (torch.arange(seq_length, device=attention_mask.device) - leading_padding).clamp(min=0)
        if position_ids.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
            raise ValueError(f"position_ids must be an integer tensor, got dtype {position_ids.dtype}")
        if position_ids.dim() != 2 or position_ids.shape[1] != seq_length or position_ids.shape[0] not in (1, batch):
            raise ValueError(
                f"position_ids must have shape (batch, sequence) = {(batch, seq_length)} (or (1, {seq_length}) for "
                f"all rows), got {tuple(position_ids.shape)}"
            )
        if _may_sync(position_ids) and position_ids.numel() > 0:
            low, high = torch.stack([position_ids.min(), position_ids.max()]).tolist()
            if low < 0 or high >= self.config.max_position_embeddings:
                raise ValueError(
                    f"position_ids must lie in [0, max_position_embeddings={self.config.max_position_embeddings}), "
                    f"got min {low}, max {high}"
                )
        return position_ids

    def _attention_bias(self, attention_mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
        """(batch, 1, 1, keys) additive bias: 0 for real tokens, the dtype's minimum for padding."""
        if attention_mask is None:
            return None
        if _may_sync(attention_mask) and bool(attention_mask.all()):
            return None  # no padding: without a mask sdpa may pick its fastest (flash) kernel
        keep = attention_mask.to(torch.bool)[:, None, None, :]
        return torch.zeros(keep.shape, dtype=dtype, device=keep.device).masked_fill(~keep, torch.finfo(dtype).min)

    @cuda_graph_inference
    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,  # accepted and ignored: crammedBERT has no token types
        inputs_embeds: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        position_ids: torch.Tensor | None = None,
        **kwargs,
    ) -> tuple | BaseModelOutput:
        output_attentions = output_attentions if output_attentions is not None else self.config.output_attentions
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        batch, seq_length = self._validate_inputs(input_ids, attention_mask, inputs_embeds)
        if input_ids is not None and recording_graph():
            # recording a CUDA graph whose caller range-checks the ids (cuda_graphs.py): a bad id must not fault the
            # lookup kernel before that check can report it
            input_ids = input_ids.clamp(0, self.config.vocab_size - 1)
        position_ids = self._position_ids(position_ids, attention_mask, batch, seq_length)

        hidden_states = self.embeddings(input_ids=input_ids, inputs_embeds=inputs_embeds, position_ids=position_ids)
        attention_bias = self._attention_bias(attention_mask, hidden_states.dtype)

        all_hidden_states = () if output_hidden_states else None
        all_attentions = () if output_attentions else None
        for layer in self.layer_sequence():
            if output_hidden_states:
                all_hidden_states = all_hidden_states + (hidden_states,)
            hidden_states, probs = layer(hidden_states, attention_bias, output_attentions=output_attentions)
            if output_attentions:
                all_attentions = all_attentions + (probs,)
        hidden_states = self.final_norm(hidden_states)
        if output_hidden_states:
            # as in GPT-2: the last entry is the final (normalised) state, equal to last_hidden_state
            all_hidden_states = all_hidden_states + (hidden_states,)

        output = BaseModelOutput(
            last_hidden_state=hidden_states, hidden_states=all_hidden_states, attentions=all_attentions
        )
        return output if return_dict else output.to_tuple()


class UltraFastBertForMaskedLM(UltraFastBertPreTrainedModel):
    """Encoder + a decoder tied to the word embeddings (crammedBERT skips the head transform). With factorized
    embeddings a projection from hidden_size to embedding_size comes first (ALBERT), so that the decoder has the
    (vocab, embedding_size) shape of the word embeddings it is tied to."""

    _tied_weights_keys = {"decoder.weight": "ultrafastbert.embeddings.word_embeddings.weight"}

    def __init__(self, config: UltraFastBertConfig):
        super().__init__(config)
        self.ultrafastbert = UltraFastBertModel(config)
        if config.factorized_embeddings:
            self.decoder_projection = nn.Linear(config.hidden_size, config.word_embedding_size, bias=False)
        self.decoder = nn.Linear(config.word_embedding_size, config.vocab_size, bias=False)
        self.post_init()

    def get_output_embeddings(self):
        return self.decoder

    def set_output_embeddings(self, new_embeddings):
        self.decoder = new_embeddings

    @cuda_graph_inference
    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        position_ids: torch.Tensor | None = None,
        **kwargs,
    ) -> tuple | MaskedLMOutput:
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        outputs = self.ultrafastbert(
            input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds, position_ids=position_ids,
            output_attentions=output_attentions, output_hidden_states=output_hidden_states, return_dict=True,
        )
        hidden_states = outputs.last_hidden_state
        if hasattr(self, "decoder_projection"):
            hidden_states = self.decoder_projection(hidden_states)
        logits = self.decoder(hidden_states)
        loss = None
        if labels is not None:
            loss = _mean_loss(
                nn.functional.cross_entropy, logits.view(-1, self.config.vocab_size), labels.view(-1).to(logits.device),
                kwargs.get("num_items_in_batch"),
            )
            loss = self._with_span_penalty(loss, labels, kwargs.get("num_items_in_batch"))
        output = MaskedLMOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions)
        return output if return_dict else output.to_tuple()


class UltraFastBertPooler(nn.Module):
    """crammedBERT's classification pooler: average (or first token), a dense layer, Tanh, dropout."""

    def __init__(self, config: UltraFastBertConfig):
        super().__init__()
        self.config = config
        self.dense = nn.Linear(config.hidden_size, config.classifier_hidden_size)
        self.activation = nn.Tanh()
        self.dropout = nn.Dropout(config.classifier_dropout)

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        if hidden_states.shape[1] == 0:
            raise ValueError(
                "Sequence classification pools the tokens of each sequence, but the input has sequence length 0 "
                f"(hidden states of shape {tuple(hidden_states.shape)}); give every sequence at least one token."
            )
        if self.config.classifier_pooling == "cls":
            pooled = hidden_states[:, 0]
        elif attention_mask is None or self.config.classifier_pool_includes_padding:
            pooled = hidden_states.mean(dim=1)
        else:
            weights = attention_mask.to(hidden_states.dtype).unsqueeze(-1)
            pooled = (hidden_states * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)
        return self.dropout(self.activation(self.dense(pooled)))


class UltraFastBertExitRamp(nn.Module):
    """An off-ramp after one layer: the final head's shape (pooler + classifier), with a LayerNorm of its own in front,
    since pre-LayerNorm blocks leave their outputs unnormalised (the final head reads them after final_norm)."""

    def __init__(self, config: UltraFastBertConfig):
        super().__init__()
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.pooler = UltraFastBertPooler(config)
        self.classifier = nn.Linear(config.classifier_hidden_size, config.num_labels)

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        return self.classifier(self.pooler(self.norm(hidden_states), attention_mask))


@dataclass
class UltraFastBertSequenceClassifierOutput(SequenceClassifierOutput):
    r"""
    exit_layers (`torch.LongTensor` of shape `(batch_size,)`, *optional*):
        With early exit: the layer (1-based) each example left at; `logits` are that layer's ramp's.
    predicted_exit_layers (`torch.LongTensor` of shape `(batch_size,)`, *optional*):
        With early exit and an exit predictor: the exit layer predicted after the first layer (EdgeBERT).
    exit_logits (`torch.FloatTensor` of shape `(batch_size, num_layers, num_labels)`, *optional*):
        With `output_exit_logits=True` (full depth, no exit): every exit's logits, the final head's last.
    """

    exit_layers: torch.LongTensor | None = None
    predicted_exit_layers: torch.LongTensor | None = None
    exit_logits: torch.FloatTensor | None = None


EXIT_TRAINING_STAGES = ("backbone", "ramps", "joint")


class UltraFastBertForSequenceClassification(UltraFastBertPreTrainedModel):
    """Encoder + pooler + classifier; with `config.exit_ramps`, an off-ramp after every layer but the last and
    entropy early exit at inference (`config.early_exit_entropy`, DeeBERT's rule), the survivors of a batch running on
    as a smaller batch.

    Training with ramps follows `exit_training_stage` (DeeBERT's two stages): `"backbone"` trains on the final head's
    loss only, `"ramps"` on the sum of the ramps' losses with the encoder run without gradients (optionally distilled
    from the final head, `ramp_distill_weight`), `"joint"` (default) on the sum of all. `set_exit_training_stage`
    also freezes and unfreezes the parameters to match.
    """

    def __init__(self, config: UltraFastBertConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.ultrafastbert = UltraFastBertModel(config)
        self.pooler = UltraFastBertPooler(config)
        self.classifier = nn.Linear(config.classifier_hidden_size, config.num_labels)
        if config.exit_ramps:
            # ramps for layers 1..L-1: the last layer's exit is the final head
            self.exit_ramps = nn.ModuleList(
                [UltraFastBertExitRamp(config) for _ in range(config.num_hidden_layers - 1)]
            )
        self.exit_training_stage = "joint"
        self.ramp_distill_weight = 0.0
        self._exit_prediction_hooks = OrderedDict()  # weak-referenceable, as RemovableHandle needs
        self.post_init()

    # --- early-exit controls ----------------------------------------------------------------------------------

    def _check_exit_ramps(self, what: str) -> None:
        # the exit fields may be edited on the config at any time; validate them again only when they changed
        fields = (self.config.exit_ramps, self.config.early_exit_entropy, id(self.config.exit_predictor),
                  id(self.config.exit_calibration))
        if fields != getattr(self, "_validated_exit_fields", None):
            self.config.validate_early_exit()
            self._validated_exit_fields = fields
        if not hasattr(self, "exit_ramps"):
            raise ValueError(
                f"{what} needs off-ramps, but this model has none (config.exit_ramps=False when it was built); "
                "train a checkpoint with exit_ramps=True"
            )

    def set_exit_threshold(self, threshold: float | None) -> None:
        """Set the entropy threshold (None: run every layer). Keeps the stored predictor only if it was fitted for
        this threshold (in the calibration curve)."""
        if threshold is not None:
            self._check_exit_ramps("early exit")
        previous = self.config.early_exit_entropy
        self.config.early_exit_entropy = threshold
        try:
            self.config.validate_early_exit()
        except ValueError:
            self.config.early_exit_entropy = previous
            raise
        point = next((p for p in self.config.exit_calibration or [] if p["threshold"] == threshold), None)
        if point is not None:
            self.config.exit_predictor = point["exit_predictor"]
        elif threshold != previous:
            self.config.exit_predictor = None  # fitted for another threshold: its predictions would be wrong

    def set_exit_budget(
        self,
        mean_layers: float | None = None,
        relative_latency: float | None = None,
        max_accuracy_drop: float | None = None,
    ) -> dict:
        """Pick the entropy threshold meeting a budget from the calibration curve (`config.exit_calibration`) and
        install it with its exit predictor; returns the chosen calibration point. See `early_exit.pick_exit_threshold`.
        """
        self._check_exit_ramps("an exit budget")
        point = pick_exit_threshold(
            self.config.exit_calibration, self.config.num_hidden_layers, mean_layers=mean_layers,
            relative_latency=relative_latency, max_accuracy_drop=max_accuracy_drop,
        )
        self.set_exit_threshold(point["threshold"])
        return point

    def set_exit_training_stage(self, stage: str, ramp_distill_weight: float | None = None) -> None:
        """DeeBERT's stages: "backbone" trains encoder + final head, "ramps" freezes them and trains the ramps,
        "joint" trains everything on the summed losses."""
        if stage not in EXIT_TRAINING_STAGES:
            raise ValueError(f"exit training stage must be one of {EXIT_TRAINING_STAGES}, got {stage!r}")
        self._check_exit_ramps(f"exit training stage {stage!r}")
        if ramp_distill_weight is not None:
            if not 0.0 <= ramp_distill_weight <= 1.0:
                raise ValueError(f"ramp_distill_weight must lie in [0, 1], got {ramp_distill_weight}")
            self.ramp_distill_weight = float(ramp_distill_weight)
        self.exit_training_stage = stage
        for name, parameter in self.named_parameters():
            is_ramp = name.startswith("exit_ramps.")
            parameter.requires_grad_(stage == "joint" or (stage == "ramps") == is_ramp)

    def register_exit_prediction_hook(self, hook: Callable) -> "torch.utils.hooks.RemovableHandle":
        """Call ``hook(predicted_exit_layers, example_indices)`` after the first layer of every exiting forward, before
        the rest of the layers run (a server can schedule on the per-sentence estimate)."""
        handle = torch.utils.hooks.RemovableHandle(self._exit_prediction_hooks)
        self._exit_prediction_hooks[handle.id] = hook
        return handle

    @torch.no_grad()
    def predict_exit_layers(
        self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """EdgeBERT's estimate: run the first layer and its ramp only, return the predicted exit layer per example."""
        self._check_exit_ramps("exit prediction")
        if self.config.exit_predictor is None:
            raise ValueError("the model has no exit predictor (config.exit_predictor); calibrate it on held-out data")
        base = self.ultrafastbert
        base._validate_inputs(input_ids, attention_mask, inputs_embeds)
        hidden_states = base.embeddings(input_ids=input_ids, inputs_embeds=inputs_embeds)
        hidden_states, _ = base.layers[0](hidden_states, base._attention_bias(attention_mask, hidden_states.dtype))
        return predict_exit_layers(self.config.exit_predictor, softmax_entropy(self._exit_logits(0, hidden_states, attention_mask)))

    def _exit_logits(self, index: int, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        """Logits of the exit after layer index+1 (0-based index; the last layer's exit is the final head)."""
        if index == self.config.num_hidden_layers - 1:
            return self.classifier(self.pooler(self.ultrafastbert.final_norm(hidden_states), attention_mask))
        return self.exit_ramps[index](hidden_states, attention_mask)

    def _forward_with_exit(
        self, input_ids, attention_mask, inputs_embeds, threshold: float, position_ids=None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Run layer by layer; after each, examples whose exit entropy is below the threshold leave with that exit's
        logits, and the others go on as a smaller batch. Returns (logits, exit_layers, predicted_exit_layers)."""
        base = self.ultrafastbert
        batch, seq_length = base._validate_inputs(input_ids, attention_mask, inputs_embeds)
        if attention_mask is not None and _may_sync(attention_mask) and bool(attention_mask.all()):
            # no padding (a sentence served alone, say): positions 0..L-1, no attention bias and plain mean pooling in
            # every ramp, without the per-layer work a mask costs (a ramp is a third of a small layer's time)
            attention_mask = None
        position_ids = base._position_ids(position_ids, attention_mask, batch, seq_length)
        hidden_states = base.embeddings(input_ids=input_ids, inputs_embeds=inputs_embeds, position_ids=position_ids)
        attention_bias = base._attention_bias(attention_mask, hidden_states.dtype)
        remaining = torch.arange(batch, device=hidden_states.device)  # original index of each surviving row
        exit_layers = torch.full((batch,), self.config.num_hidden_layers, dtype=torch.long, device=remaining.device)
        logits = predicted = None
        for index, layer in enumerate(base.layer_sequence()):
            hidden_states, _ = layer(hidden_states, attention_bias)
            layer_logits = self._exit_logits(index, hidden_states, attention_mask)
            if logits is None:
                logits = layer_logits.new_empty((batch, layer_logits.shape[-1]))
            if index == self.config.num_hidden_layers - 1:  # the final head: everyone left exits here
                logits[remaining] = layer_logits
                break
            entropy = softmax_entropy(layer_logits)
            if index == 0 and self.config.exit_predictor is not None:
                predicted = predict_exit_layers(self.config.exit_predictor, entropy)
                for hook in list(self._exit_prediction_hooks.values()):
                    hook(predicted, remaining)
            leaving = entropy < threshold
            leaving_count = int(leaving.sum())  # one host sync per layer decides what happens next
            if leaving_count == 0:
                continue
            if leaving_count == remaining.numel():  # everyone left leaves here
                logits[remaining] = layer_logits
                exit_layers[remaining] = index + 1
                break
            logits[remaining[leaving]] = layer_logits[leaving]
            exit_layers[remaining[leaving]] = index + 1
            staying = ~leaving  # the survivors go on as a smaller batch
            remaining, hidden_states = remaining[staying], hidden_states[staying]
            if attention_mask is not None:
                attention_mask = attention_mask[staying]
                attention_bias = base._attention_bias(attention_mask, hidden_states.dtype)
        return logits, exit_layers, predicted

    def _ramp_training_loss(
        self, final_loss, ramp_logits: list, final_logits: torch.Tensor, labels: torch.Tensor, num_items_in_batch=None
    ):
        """DeeBERT's ramp loss (sum over ramps), each ramp optionally distilled from the final head. Every term is a
        mean over the labelled items, like the final head's (see `_mean_loss`)."""
        distill = self.ramp_distill_weight
        target = final_logits.detach()
        ramp_loss = 0.0
        for logits in ramp_logits:
            if self.config.problem_type == "regression":
                squeeze = self.num_labels == 1
                predictions = logits.squeeze(-1) if squeeze else logits
                hard = _mean_loss(nn.functional.mse_loss, predictions,
                                  (labels.squeeze(-1) if squeeze else labels).to(logits.dtype), num_items_in_batch)
                soft = _mean_loss(nn.functional.mse_loss, predictions, target.squeeze(-1) if squeeze else target,
                                  num_items_in_batch) if distill else 0.0
            elif self.config.problem_type == "single_label_classification":
                hard = _mean_loss(nn.functional.cross_entropy, logits.view(-1, self.num_labels), labels.view(-1),
                                  num_items_in_batch)
                # cross-entropy to the final head's distribution (KL divergence up to a constant)
                soft = _mean_loss(nn.functional.cross_entropy, logits, target.softmax(-1),
                                  num_items_in_batch) if distill else 0.0
            else:
                hard = _mean_loss(nn.functional.binary_cross_entropy_with_logits, logits, labels.to(logits.dtype),
                                  num_items_in_batch)
                soft = _mean_loss(nn.functional.binary_cross_entropy_with_logits, logits, target.sigmoid(),
                                  num_items_in_batch) if distill else 0.0
            ramp_loss = ramp_loss + (1.0 - distill) * hard + distill * soft
        if self.exit_training_stage == "ramps":
            return ramp_loss
        if self.exit_training_stage == "backbone":
            return final_loss
        return final_loss + ramp_loss

    # --- forward ----------------------------------------------------------------------------------------------

    @cuda_graph_inference
    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        position_ids: torch.Tensor | None = None,
        output_exit_logits: bool | None = None,
        **kwargs,
    ) -> tuple | UltraFastBertSequenceClassifierOutput:
        r"""
        output_exit_logits (`bool`, *optional*):
            Return every exit's logits (`exit_logits`, full depth); needs off-ramps and no early exit.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        output_attentions = output_attentions if output_attentions is not None else self.config.output_attentions
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        threshold = self.config.early_exit_entropy
        exiting = threshold is not None and not self.training
        if exiting or output_exit_logits:
            self._check_exit_ramps("early exit" if exiting else "output_exit_logits")
        exit_layers = predicted_exit_layers = exit_logits = outputs = None
        if exiting:
            if output_attentions or output_hidden_states or output_exit_logits:
                raise ValueError(
                    "output_attentions, output_hidden_states and output_exit_logits are not defined with early exit "
                    "(exited examples skip the later layers); set config.early_exit_entropy = None for them"
                )
            logits, exit_layers, predicted_exit_layers = self._forward_with_exit(
                input_ids, attention_mask, inputs_embeds, float(threshold), position_ids
            )
        else:
            trains_ramps = self.training and labels is not None and self.exit_training_stage != "backbone"
            with_ramps = hasattr(self, "exit_ramps") and (output_exit_logits or trains_ramps)
            # stage 2 trains the ramps only: the frozen encoder runs without building a graph
            frozen_backbone = self.training and with_ramps and self.exit_training_stage == "ramps"
            with torch.no_grad() if frozen_backbone else contextlib.nullcontext():
                outputs = self.ultrafastbert(
                    input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds, position_ids=position_ids,
                    output_attentions=output_attentions, output_hidden_states=output_hidden_states or with_ramps,
                    return_dict=True,
                )
            logits = self.classifier(self.pooler(outputs.last_hidden_state, attention_mask))
            if with_ramps:
                # hidden_states[i] is layer i's output (entry 0: the embeddings; the last: after final_norm)
                ramp_logits = [ramp(hidden, attention_mask)
                               for ramp, hidden in zip(self.exit_ramps, outputs.hidden_states[1:-1])]
                exit_logits = torch.stack(ramp_logits + [logits], dim=1)

        loss = None
        if labels is not None:
            labels = labels.to(logits.device)
            if self.config.problem_type is None:
                if self.num_labels == 1:
                    self.config.problem_type = "regression"
                elif labels.dtype in (torch.long, torch.int):
                    self.config.problem_type = "single_label_classification"
                else:
                    self.config.problem_type = "multi_label_classification"
            num_items_in_batch = kwargs.get("num_items_in_batch")
            if self.config.problem_type == "regression":
                if self.num_labels == 1:  # one score per example: (batch, 1) logits against (batch,) labels
                    predictions, targets = logits.squeeze(-1), labels.squeeze(-1)
                else:
                    predictions, targets = logits, labels
                loss = _mean_loss(nn.functional.mse_loss, predictions, targets.to(logits.dtype), num_items_in_batch)
            elif self.config.problem_type == "single_label_classification":
                loss = _mean_loss(
                    nn.functional.cross_entropy, logits.view(-1, self.num_labels), labels.view(-1), num_items_in_batch
                )
            else:
                loss = _mean_loss(
                    nn.functional.binary_cross_entropy_with_logits, logits, labels.to(logits.dtype), num_items_in_batch
                )
            if exit_logits is not None and self.training:
                loss = self._ramp_training_loss(
                    loss, list(exit_logits.unbind(1))[:-1], logits, labels, num_items_in_batch
                )
            loss = self._with_span_penalty(loss, labels, num_items_in_batch)

        output = UltraFastBertSequenceClassifierOutput(
            loss=loss,
            logits=logits,
            hidden_states=outputs.hidden_states if outputs is not None and output_hidden_states else None,
            attentions=outputs.attentions if outputs is not None else None,
            exit_layers=exit_layers,
            predicted_exit_layers=predicted_exit_layers,
            exit_logits=exit_logits if output_exit_logits else None,
        )
        return output if return_dict else output.to_tuple()


class UltraFastBertForTokenClassification(UltraFastBertPreTrainedModel):
    def __init__(self, config: UltraFastBertConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.ultrafastbert = UltraFastBertModel(config)
        self.dropout = nn.Dropout(config.classifier_dropout)
        # not "classifier": that name is the sequence head's (a different shape), and checkpoints load across heads
        self.token_classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    @cuda_graph_inference
    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        position_ids: torch.Tensor | None = None,
        **kwargs,
    ) -> tuple | TokenClassifierOutput:
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        outputs = self.ultrafastbert(
            input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds, position_ids=position_ids,
            output_attentions=output_attentions, output_hidden_states=output_hidden_states, return_dict=True,
        )
        logits = self.token_classifier(self.dropout(outputs.last_hidden_state))
        loss = None
        if labels is not None:
            loss = _mean_loss(
                nn.functional.cross_entropy, logits.view(-1, self.num_labels), labels.view(-1).to(logits.device),
                kwargs.get("num_items_in_batch"),
            )
            loss = self._with_span_penalty(loss, labels, kwargs.get("num_items_in_batch"))
        output = TokenClassifierOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )
        return output if return_dict else output.to_tuple()


class UltraFastBertForQuestionAnswering(UltraFastBertPreTrainedModel):
    def __init__(self, config: UltraFastBertConfig):
        super().__init__(config)
        self.ultrafastbert = UltraFastBertModel(config)
        self.qa_outputs = nn.Linear(config.hidden_size, 2)
        self.post_init()

    @cuda_graph_inference
    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        start_positions: torch.Tensor | None = None,
        end_positions: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        position_ids: torch.Tensor | None = None,
        **kwargs,
    ) -> tuple | QuestionAnsweringModelOutput:
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        outputs = self.ultrafastbert(
            input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds, position_ids=position_ids,
            output_attentions=output_attentions, output_hidden_states=output_hidden_states, return_dict=True,
        )
        start_logits, end_logits = self.qa_outputs(outputs.last_hidden_state).split(1, dim=-1)
        start_logits, end_logits = start_logits.squeeze(-1).contiguous(), end_logits.squeeze(-1).contiguous()

        loss = None
        if start_positions is not None and end_positions is not None:
            # positions outside the sequence are ignored, as in BERT
            ignored_index = start_logits.size(1)
            start_positions = start_positions.view(-1).clamp(0, ignored_index).to(start_logits.device)
            end_positions = end_positions.view(-1).clamp(0, ignored_index).to(end_logits.device)
            num_items_in_batch = kwargs.get("num_items_in_batch")
            start_loss, end_loss = (
                _mean_loss(nn.functional.cross_entropy, logits, positions, num_items_in_batch, ignore_index=ignored_index)
                for logits, positions in ((start_logits, start_positions), (end_logits, end_positions))
            )
            loss = (start_loss + end_loss) / 2
            loss = self._with_span_penalty(loss, start_positions, num_items_in_batch, ignore_index=ignored_index)

        output = QuestionAnsweringModelOutput(
            loss=loss,
            start_logits=start_logits,
            end_logits=end_logits,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )
        return output if return_dict else output.to_tuple()


__all__ = [
    "UltraFastBertPreTrainedModel",
    "UltraFastBertModel",
    "UltraFastBertForMaskedLM",
    "UltraFastBertForSequenceClassification",
    "UltraFastBertSequenceClassifierOutput",
    "UltraFastBertForTokenClassification",
    "UltraFastBertForQuestionAnswering",
]
