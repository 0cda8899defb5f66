# Copyright 2026 The UltraFastBERT-HF authors. Apache-2.0.
"""Adaptive attention span (EdgeBERT's form of Sukhbaatar et al., 2019): one learned span per head.

Every head h has a learned scalar z_h (tokens, independent of the input). Its attention weights are multiplied by a soft
mask of the token distance d = |i - j| and renormalised:

    m_h(d) = clamp((R + z_h - d) / R, 0, 1)

with R the ramp. A head attends to distances d < z_h + R only; a head with z_h + R <= 0 attends to nothing and its
output is zero. z_h lives in [-R, max_positions]: the lower end -R (not 0) is what lets a head switch off entirely,
since at z_h = 0 the mask still keeps the token itself (m(0) = 1). The reported span of a head is max(z_h + R, 0),
the distance from which on it sees nothing. The training loss gains `coefficient * mean(z)` over all heads.

Two computations of the same function:
- training (and `output_attentions`): softmax over all keys, times the mask, renormalised (`soft_span_attention`);
- inference: heads of span 0 are not computed at all (their query/key/value rows and output-projection columns are
  dropped), and each other head attends only inside its band (softmax of score + log m over the band, which equals
  the renormalised product). On CUDA the block is one fused Triton launch (span_triton_kernel.py); on the CPU in fp32
  the native kernel's `banded_span_attention_cpu` (fff_cpu_kernel.py); elsewhere, or for bands nearly as wide as the
  sequence, PyTorch (`banded_attention`: query blocks that each see a window of keys, or one sdpa call).
"""

import math

import torch
from torch import nn

try:  # the fused CUDA kernel (Triton is optional); imported in this form so that it travels with remote code
    from .span_triton_kernel import SpanLaunch
    from .span_triton_kernel import span_attention as triton_span_attention
    from .span_triton_kernel import supports as triton_span_supports
    from .span_triton_kernel import INTERPRETED as triton_span_interpreted  # tests run the kernel on the CPU
except ImportError:  # pragma: no cover - depends on the environment
    triton_span_attention = None
    triton_span_interpreted = False
try:  # the native CPU kernel's banded attention (compiled on first use; imported in the same form)
    from .fff_cpu_kernel import BANDED_SPAN_MAX_WIDTH
    from .fff_cpu_kernel import banded_span_attention as native_banded_attention
    from .fff_cpu_kernel import banded_span_attention_available as native_banded_available
    from .fff_cpu_kernel import banded_span_attention_op as native_banded_op
except ImportError:  # pragma: no cover - depends on the environment
    native_banded_attention = None


class AdaptiveSpan(nn.Module):
    """The learned spans of one attention layer's heads and the mask they define."""

    def __init__(self, num_heads: int, max_positions: int, ramp: float, initial_span: float):
        super().__init__()
        self.num_heads = num_heads
        self.max_positions = max_positions
        self.ramp = float(ramp)
        self.initial_span = float(initial_span)
        # stored as a fraction of max_positions (as in Sukhbaatar et al.) so that an optimizer step moves every span
        # by a comparable share of the sequence, whatever the maximum
        self.span_fraction = nn.Parameter(torch.full((num_heads,), self.initial_span / max_positions))
        self._compact_cache = None
        self._plan_cache = None
        self._layout_cache = None

    def inference_plan(self) -> tuple[list[int], torch.Tensor]:
        """The heads that are on and their z, cached until the spans change (no host sync per call at inference)."""
        key = (self.span_fraction.data_ptr(), self.span_fraction._version, self.span_fraction.device)
        if self._plan_cache is None or self._plan_cache[0] != key:
            with torch.no_grad():
                z = self.z().detach()
                active = [head for head, on in enumerate((z + self.ramp > 0).tolist()) if on]
                self._plan_cache = (key, (active, z[active].clone(), (z[active] + self.ramp).tolist()))
        return self._plan_cache[1]

    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.span_fraction.fill_(self.initial_span / self.max_positions)

    def z(self) -> torch.Tensor:
        """z_h in tokens, held inside [-R, max_positions] (the gradient stops at the ends)."""
        return (self.span_fraction * self.max_positions).clamp(-self.ramp, self.max_positions)

    def spans(self) -> torch.Tensor:
        """The distance from which on each head sees nothing: max(z + R, 0) (0: the head is off)."""
        return (self.z() + self.ramp).clamp(min=0)

    def mask(self, seq_length: int, device=None, dtype=torch.float32) -> torch.Tensor:
        """(heads, seq, seq) soft mask m_h(|i - j|)."""
        positions = torch.arange(seq_length, device=device)
        distance = (positions[:, None] - positions[None, :]).abs().to(dtype)
        z = self.z().to(device=device, dtype=dtype)
        return ((self.ramp + z[:, None, None] - distance) / self.ramp).clamp(0, 1)


def span_penalty(model: nn.Module, coefficient: float, form: str = "mean") -> torch.Tensor | None:
    """The span penalty of ``model``'s adaptive-span layers (None if it has none). ``form="mean"``: coefficient * mean
    of z over every head (EdgeBERT). ``form="layer_rms"``: coefficient * mean over layers of sqrt(mean over the layer's
    heads of (z + R)^2): a group penalty, whose gradient on a head grows as the other heads of its layer close (a lone
    open head of 4 is pushed 2x as hard as under the mean), so whole layers close."""
    modules = [module for module in model.modules() if isinstance(module, AdaptiveSpan)]
    if not modules:
        return None
    if form == "mean":
        return coefficient * torch.cat([module.z() for module in modules]).mean()
    if form == "layer_rms":
        # eps keeps the gradient finite (zero) for a layer whose heads are all closed
        rms = [((module.z() + module.ramp) ** 2).mean().add(1e-6).sqrt() for module in modules]
        return coefficient * torch.stack(rms).mean()
    raise ValueError(f"unknown span penalty form {form!r} (expected 'mean' or 'layer_rms')")


@torch.no_grad()
def span_table(model: nn.Module) -> list[list[float]]:
    """Each layer's heads' spans (tokens, max(z + R, 0)), layer by layer."""
    return [module.spans().float().cpu().tolist() for module in model.modules() if isinstance(module, AdaptiveSpan)]


def span_summary(model: nn.Module, seq_length: int) -> dict:
    """Spans per layer/head and the figures the EdgeBERT targets are stated in."""
    table = span_table(model)
    flat = [span for layer in table for span in layer]
    if not flat:
        return {}
    mean_span = sum(min(span, seq_length) for span in flat) / len(flat)
    return {
        "spans_per_layer": [[round(span, 2) for span in layer] for layer in table],
        "mean_span": round(mean_span, 3),
        "mean_span_fraction_of_sequence": round(mean_span / seq_length, 4),
        "heads_at_span_0": sum(span == 0 for span in flat),
        "fraction_heads_at_span_0": round(sum(span == 0 for span in flat) / len(flat), 4),
        "sequence_length": seq_length,
    }


def plot_span_heatmap(model: nn.Module, path, title: str = "learned attention spans (tokens)") -> bool:
    """A layer x head heat map of the spans as a PNG; False if matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    table = span_table(model)
    figure, axes = plt.subplots(figsize=(1.2 + 0.6 * len(table[0]), 1.0 + 0.35 * len(table)))
    image = axes.imshow(table, cmap="viridis", vmin=0, aspect="auto")
    for layer, row in enumerate(table):
        for head, span in enumerate(row):
            axes.text(head, layer, f"{span:.0f}", ha="center", va="center", color="w", fontsize=7)
    axes.set_xlabel("head")
    axes.set_ylabel("layer")
    axes.set_title(title, fontsize=9)
    figure.colorbar(image, ax=axes)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return True


# --- the two computations -----------------------------------------------------------------------------------------


def soft_span_attention(query, key, value, attention_mask, mask, scaling: float, dropout: float, training: bool):
    """Full attention with the span mask on the weights, renormalised (the training form). Returns (context, probs)
    with context (batch, seq, heads, head_dim)."""
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        scores = scores + attention_mask
    probs = nn.functional.softmax(scores, dim=-1) * mask.to(scores.dtype)
    # a row whose band holds only padding sums to 0: it stays 0 (only padding queries have such rows)
    probs = probs / probs.sum(-1, keepdim=True).clamp(min=torch.finfo(probs.dtype).tiny)
    probs = nn.functional.dropout(probs, p=dropout, training=training)
    return torch.matmul(probs, value).transpose(1, 2).contiguous(), probs


def band_width(spans) -> int:
    """The farthest distance any of these heads sees (spans = z + R: m(d) > 0 for d < z + R)."""
    return max(math.ceil(span) for span in spans) - 1


def _log_mask_window(z, ramp: float, block: int, width: int, device, dtype) -> torch.Tensor:
    """(heads, block, block + 2 * width) log m over the key window of a query block: query a of the block and window
    key k are at distance |a + width - k| (the same for every block)."""
    a = torch.arange(block, device=device)[:, None]
    k = torch.arange(block + 2 * width, device=device)[None, :]
    distance = (a + width - k).abs().to(torch.float32)
    m = ((ramp + z.float()[:, None, None] - distance) / ramp).clamp(0, 1)
    return m.log().to(dtype)  # log 0 = -inf: outside the band


def _band_layout(z, ramp: float, spans: list[float], seq_length: int, device, dtype):
    """How to compute the band for these spans and this length, and the log-mask bias it needs:
    ("full", None) when every head sees the whole sequence (plain attention), ("dense", (heads, seq, seq) bias) when
    the band covers nearly everything, or ("blocks", (block, width, (heads, block, window) bias))."""
    if min(z.float().tolist()) >= seq_length - 1:  # m = 1 at every distance that exists
        return "full", None
    width = band_width(spans)
    block = max(16, min(64, 1 << max(width, 1).bit_length()))
    # measured (benchmarks/bench_adaptive_span.py, CPU fp32 and H100 bf16, 128 tokens): query blocks lose to one dense
    # call even with windows of a quarter of the keys; they are kept for long sequences, where the band is narrow
    if 8 * (2 * width + block) > seq_length:
        positions = torch.arange(seq_length, device=device)
        distance = (positions[:, None] - positions[None, :]).abs().float()
        return "dense", ((ramp + z.float()[:, None, None] - distance) / ramp).clamp(0, 1).log().to(dtype)
    # the window bias of every block, with -inf on the keys past either end of the sequence
    num_blocks = -(-seq_length // block)
    window = block + 2 * width
    inside = torch.zeros(num_blocks * block + 2 * width, device=device, dtype=dtype)
    inside[:width] = -math.inf
    inside[width + seq_length:] = -math.inf
    edges = inside.unfold(0, window, block)  # (blocks, window)
    bias = _log_mask_window(z, ramp, block, width, device, dtype)[:, None] + edges[None, :, None, :]
    return "blocks", (block, width, bias.reshape(-1, block, window))  # (heads * blocks, block, window)


def banded_attention(query, key, value, z, ramp: float, key_bias, scaling: float, spans=None, layout=None):
    """Span-masked attention computed inside the band only.

    query/key/value (batch, heads, seq, head_dim) of the heads that are on, z their spans (heads,), key_bias None or
    (batch, 1, 1, seq) additive padding bias, spans (optional) the host copy of z + ramp, layout (optional) what
    `_band_layout` returns for them. Returns the context (batch, seq, heads, head_dim).
    """
    batch, heads, seq_length, head_dim = query.shape
    if layout is None:
        spans = (z.float() + ramp).tolist() if spans is None else spans
        layout = _band_layout(z, ramp, spans, seq_length, query.device, query.dtype)
    kind, plan = layout
    if kind != "blocks":  # one dense call: plain attention, or with the log-mask bias
        bias = None if kind == "full" else plan[None]
        if key_bias is not None:
            bias = key_bias if bias is None else bias + key_bias
        context = nn.functional.scaled_dot_product_attention(query, key, value, attn_mask=bias, scale=scaling)
        return context.transpose(1, 2)

    # queries in blocks of `block`; block b sees keys [b * block - width, (b + 1) * block + width)
    block, width, window_bias = plan
    num_blocks = -(-seq_length // block)
    padded_length = num_blocks * block
    window = block + 2 * width
    pad_queries = padded_length - seq_length
    query = nn.functional.pad(query, (0, 0, 0, pad_queries))
    # keys padded by `width` on the left and width + pad_queries on the right; those get -inf through the bias
    key = nn.functional.pad(key, (0, 0, width, width + pad_queries))
    value = nn.functional.pad(value, (0, 0, width, width + pad_queries))
    key_windows = key.unfold(2, window, block).transpose(-1, -2)  # (batch, heads, blocks, window, head_dim)
    value_windows = value.unfold(2, window, block).transpose(-1, -2)
    query_blocks = query.view(batch, heads, num_blocks, block, head_dim)

    bias = window_bias.view(1, heads, num_blocks, block, window)  # the same for every row of the batch
    if key_bias is not None:  # padding: each row's key bias, cut into the same windows
        padding = nn.functional.pad(key_bias.reshape(batch, seq_length), (width, width + pad_queries))
        bias = bias + padding.unfold(1, window, block)[:, None, :, None, :]  # (batch, heads, blocks, block, window)
    # batched matmuls over (batch, heads, blocks): faster than sdpa on such small blocks
    scores = torch.matmul(query_blocks, key_windows.transpose(-1, -2)) * scaling + bias
    context = torch.matmul(torch.softmax(scores, dim=-1), value_windows)
    context = context.view(batch, heads, padded_length, head_dim)[:, :, :seq_length]
    return context.transpose(1, 2)


def _compact_projections(span: AdaptiveSpan, attention: nn.Module, active: list[int]):
    """The query/key/value rows and output-projection columns of the heads that are on (cached until the weights or
    the spans change), or None when the projections are not plain Linear layers (e.g. quantized)."""
    qkv, dense = attention.query_key_value, attention.dense
    if type(qkv) is not nn.Linear or type(dense) is not nn.Linear or qkv.bias is not None or dense.bias is not None:
        return None
    key = (tuple(active), qkv.weight.data_ptr(), qkv.weight._version, dense.weight.data_ptr(), dense.weight._version,
           qkv.weight.dtype, qkv.weight.device)
    if span._compact_cache is None or span._compact_cache[0] != key:
        head_dim = attention.head_dim
        heads = torch.tensor(active, device=qkv.weight.device)
        qkv_rows = (heads[:, None] * 3 * head_dim + torch.arange(3 * head_dim, device=heads.device)).reshape(-1)
        dense_columns = (heads[:, None] * head_dim + torch.arange(head_dim, device=heads.device)).reshape(-1)
        with torch.no_grad():
            weights = (qkv.weight.index_select(0, qkv_rows).contiguous(),
                       dense.weight.index_select(1, dense_columns).contiguous())
        span._compact_cache = (key, weights)
    return span._compact_cache[1]


def _native_band_applies(hidden_states, attention_mask, width: int) -> bool:
    """Whether the native CPU kernel computes this call's band: fp32 on the CPU, a per-key padding mask (or none), and a
    band clearly narrower than the sequence (one that covers it is plain attention, which sdpa does faster)."""
    seq_length = hidden_states.shape[1]
    return (native_banded_attention is not None and hidden_states.device.type == "cpu"
            and hidden_states.dtype == torch.float32 and 2 * width + 16 < seq_length
            and width <= BANDED_SPAN_MAX_WIDTH
            and (attention_mask is None or tuple(attention_mask.shape) == (hidden_states.shape[0], 1, 1, seq_length))
            and native_banded_available())


def _parameters_key(attention: nn.Module, span: AdaptiveSpan) -> tuple:
    """The storage and version of the spans and the two projection weights: what the cached block plans depend on.
    Read from the modules' dicts (attribute access through nn.Module costs microseconds per call)."""
    modules = attention._modules
    qkv_weight = modules["query_key_value"]._parameters.get("weight")
    dense_weight = modules["dense"]._parameters.get("weight")
    fraction = span._parameters["span_fraction"]
    return (
        fraction.data_ptr(), fraction._version,
        None if qkv_weight is None else (qkv_weight.data_ptr(), qkv_weight._version),
        None if dense_weight is None else (dense_weight.data_ptr(), dense_weight._version),
    )


def _native_span_block(attention: nn.Module, span: AdaptiveSpan, hidden_states, attention_mask):
    """The block of the heads that are on through the native CPU kernel, or None where it does not apply (no head on,
    quantized or biased projections, another mask layout, a band too wide for it, bf16, torch.compile tracing).

    Everything the call needs (heads on, compact weights, z, band width) is cached on the span module like the CUDA
    block's launch, keyed by the parameters' storage and versions and the call signature: at 128 tokens the generic
    path's Python is a tenth of a block. In transposed layouts: one GEMM writes the queries, keys and values
    element-major (16 queries then fill one vector in the kernel), the kernel writes the context the same way, and the
    output projection reads it transposed (no copies in between)."""
    if torch.compiler.is_compiling():
        return None
    key = (_parameters_key(attention, span), hidden_states.shape, hidden_states.dtype,
           None if attention_mask is None else attention_mask.shape)
    cached = span.__dict__.get("_native_block")
    if cached is None or cached[0] != key:
        cached = (key, _prepare_native_block(attention, span, hidden_states, attention_mask))
        span.__dict__["_native_block"] = cached
    prepared = cached[1]
    if prepared is None:
        return None
    qkv_compact, dense_compact, z, width, heads, no_bias = prepared
    attention.__dict__["computed_heads"] = heads  # what ran (read by tests and benchmarks)
    attention.__dict__["band_path"] = "native"
    batch, seq_length, _ = hidden_states.shape
    head_dim = attention.head_dim
    # (batch, heads * 3 * head_dim, seq): each row's block contiguous, which the kernel's windows read fastest
    qkv_t = torch.matmul(qkv_compact, hidden_states.transpose(1, 2))
    qkv_t = qkv_t.view(batch, heads, 3, head_dim, seq_length).permute(1, 2, 3, 0, 4)
    key_bias = no_bias if attention_mask is None else attention_mask.reshape(batch * seq_length)
    context_t = native_banded_op()(qkv_t, z, span.ramp, attention.scaling, width, key_bias)
    # stored batch-major like its input: (batch, heads * head_dim, seq), read transposed by the output projection
    context_t = context_t.permute(2, 0, 1, 3).reshape(batch, heads * head_dim, seq_length)
    return torch.matmul(context_t.transpose(1, 2), dense_compact.t())


def _prepare_native_block(attention, span, hidden_states, attention_mask):
    active, active_z, active_spans = span.inference_plan()
    if not active:
        return None
    compact = _compact_projections(span, attention, active)
    width = band_width(active_spans)
    if compact is None or not _native_band_applies(hidden_states, attention_mask, width):
        return None
    z = active_z.detach().to(torch.float32).contiguous()
    return compact[0], compact[1], z, width, len(active), hidden_states.new_empty(0)


def _fused_span_block(attention: nn.Module, span: AdaptiveSpan, hidden_states, attention_mask, residual):
    """The block as one fused Triton launch, or None where it does not apply (no head on, quantized or biased
    projections, another mask layout, a band too wide, torch.compile tracing).

    At the sizes where spans pay the host's Python is the block's cost, so everything the launch needs (heads on,
    compact weights, the validated launch) is cached on the span module, keyed by the parameters' storage and versions
    and by the call signature, and the parameters are read from the modules' dicts.
    """
    if torch.compiler.is_compiling():
        return None
    padding = attention_mask
    key = (
        _parameters_key(attention, span),
        hidden_states.shape, hidden_states.stride(), hidden_states.dtype, hidden_states.device,
        hidden_states.data_ptr() % 16,
        None if padding is None else (padding.shape, padding.stride(), padding.dtype, padding.data_ptr() % 16),
        None if residual is None else (residual.shape, residual.stride(), residual.dtype, residual.data_ptr() % 16),
    )
    cached = span.__dict__.get("_fused_block")
    if cached is None or cached[0] != key:
        cached = (key, _prepare_fused_block(attention, span, hidden_states, padding, residual))
        span.__dict__["_fused_block"] = cached
    prepared = cached[1]
    if prepared is None:
        return None
    launch, qkv_compact, dense_compact, z, heads_on = prepared
    attention.__dict__["computed_heads"] = heads_on  # a plain attribute: nn.Module.__setattr__ costs microseconds
    return launch(hidden_states, qkv_compact, dense_compact, z, padding, residual)


def _prepare_fused_block(attention, span, hidden_states, padding, residual):
    active, active_z, active_spans = span.inference_plan()
    if not active:
        return None
    compact = _compact_projections(span, attention, active)
    if compact is None:
        return None
    batch, seq_length, _ = hidden_states.shape
    if padding is not None and (tuple(padding.shape) != (batch, 1, 1, seq_length) or not padding.is_contiguous()):
        return None
    if residual is not None and (tuple(residual.shape) != tuple(hidden_states.shape) or residual.stride(2) != 1):
        return None
    width = band_width(active_spans)
    if not triton_span_supports(hidden_states, attention.head_dim, width):
        return None
    launch = SpanLaunch(hidden_states, compact[0], active_z, span.ramp, attention.scaling, width,
                        padding is not None, residual)
    return launch, compact[0], compact[1], active_z, len(active)


def adaptive_span_attention(attention: nn.Module, hidden_states, attention_mask, output_attentions: bool,
                            residual=None):
    """The forward of an attention layer with adaptive spans: soft form in training (or for `output_attentions`),
    banded form with the heads of span 0 skipped otherwise (on CUDA one fused Triton launch where it applies).
    Returns (output, probs or None); with ``residual`` the output is ``residual + attention``."""
    output, probs = _span_attention_forward(attention, hidden_states, attention_mask, output_attentions, residual)
    if output is None:  # the fused kernel added the residual while writing
        return probs[0], None
    return (output if residual is None else residual + output), probs


def _span_attention_forward(attention: nn.Module, hidden_states, attention_mask, output_attentions: bool, residual):
    span: AdaptiveSpan = attention.adaptive_span
    batch, seq_length, _ = hidden_states.shape
    num_heads, head_dim = attention.num_heads, attention.head_dim
    if attention_mask is not None and attention_mask.dtype != hidden_states.dtype:
        attention_mask = attention_mask.to(hidden_states.dtype)

    if attention.training or output_attentions or batch * seq_length == 0:
        qkv = attention.query_key_value(hidden_states).view(batch, seq_length, num_heads, 3, head_dim)
        query, key, value = qkv.permute(3, 0, 2, 1, 4).unbind(0)
        mask = span.mask(seq_length, device=query.device, dtype=query.dtype)
        context, probs = soft_span_attention(
            query, key, value, attention_mask, mask, attention.scaling,
            attention.dropout_prob if attention.training else 0.0, attention.training,
        )
        return attention.dense(context.reshape(batch, seq_length, -1)), (probs if output_attentions else None)

    if triton_span_attention is not None and (hidden_states.is_cuda or triton_span_interpreted):
        fused = _fused_span_block(attention, span, hidden_states, attention_mask, residual)
        if fused is not None:
            return None, (fused,)
    if native_banded_attention is not None and hidden_states.device.type == "cpu":
        output = _native_span_block(attention, span, hidden_states, attention_mask)
        if output is not None:
            return output, None
    active, active_z, active_spans = span.inference_plan()
    attention.computed_heads = len(active)  # what the last call computed (read by tests and benchmarks)
    if not active:  # every head is off: the attention output is zero, and nothing is computed
        return hidden_states.new_zeros(batch, seq_length, attention.dense.out_features), None
    compact = _compact_projections(span, attention, active)
    if compact is not None:
        qkv_weight, dense_weight = compact
        qkv = nn.functional.linear(hidden_states, qkv_weight).view(batch, seq_length, len(active), 3, head_dim)
    else:  # not a plain Linear: project every head, keep the ones that are on
        qkv = attention.query_key_value(hidden_states).view(batch, seq_length, num_heads, 3, head_dim)
        qkv = qkv[:, :, active]
    query, key, value = qkv.permute(3, 0, 2, 1, 4).unbind(0)
    layout_key = (seq_length, query.device, query.dtype, span._plan_cache[0])
    if span._layout_cache is None or span._layout_cache[0] != layout_key:  # the bias tables, per length and spans
        layout = _band_layout(active_z, span.ramp, active_spans, seq_length, query.device, query.dtype)
        span._layout_cache = (layout_key, layout)
    attention.__dict__["band_path"] = span._layout_cache[1][0]
    context = banded_attention(query, key, value, active_z, span.ramp, attention_mask, attention.scaling,
                               layout=span._layout_cache[1])
    context = context.reshape(batch, seq_length, len(active) * head_dim)
    if compact is not None:
        return nn.functional.linear(context, dense_weight), None
    full = context.new_zeros(batch, seq_length, num_heads, head_dim)
    full[:, :, active] = context.view(batch, seq_length, len(active), head_dim)
    return attention.dense(full.reshape(batch, seq_length, -1)), None
