# Copyright 2026 The UltraFastBERT-HF authors. Apache-2.0.
"""The adaptive-span attention block as one Triton kernel (inference, CUDA).

One launch computes, for the heads that are on, the query/key/value projections, the span-masked attention inside
each head's band and the output projection (plus the block's skip connection). At the sizes where spans pay (hidden
256, 128 tokens) the unfused block is a handful of small launches and its cost is the host's; one launch is what
makes skipping heads and keys show on the GPU.

Program (b, m) owns query rows [m * BLOCK_M, (m + 1) * BLOCK_M) of row b of the batch. Per head that is on: the
queries of its rows and the keys/values of the key window around them ([start - WIDTH, end + WIDTH), WIDTH the
farthest distance any of these heads sees; or the whole sequence when the window would cover it) are projected from
the hidden states, the scores get log m(|i - j|) (-inf outside the band), the padding bias and a softmax; the context
is written to a small workspace in the input dtype (what the unfused path feeds its output projection). After a
barrier the program multiplies its rows of the workspace by the output projection. Keys and values of neighbouring
blocks are projected again by each block: at these sizes that is cheaper than another launch.

Accumulation is fp32; fp32 inputs use IEEE dots (no TF32), so fp32 results match the PyTorch forms to ~1e-6.
"""

import os

import torch

try:  # Triton is optional: without it the span attention runs in PyTorch
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the environment
    triton = None
    tl = None

from .fff_triton_kernel import _Launch

INTERPRETED = os.environ.get("TRITON_INTERPRET", "0") == "1"
_SUPPORTED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
MAX_WINDOW = 256  # keys per program; beyond that the PyTorch path (blocks of sdpa-free matmuls) is used


if triton is not None:

    @triton.jit
    def _project(x_rows, row_ok, w_rows, H: tl.constexpr, BLOCK_K: tl.constexpr, ROWS: tl.constexpr,
                 D: tl.constexpr, IEEE: tl.constexpr):
        # (ROWS, D) = x[rows] @ W[w_rows]^T, W row-major (., H)
        acc = tl.zeros((ROWS, D), dtype=tl.float32)
        for k0 in range(0, H, BLOCK_K):
            kk = k0 + tl.arange(0, BLOCK_K)
            xv = tl.load(x_rows + kk[None, :], mask=row_ok[:, None], other=0.0)
            wv = tl.load(w_rows + kk[:, None])
            if IEEE:
                acc = tl.dot(xv, wv, acc, input_precision="ieee")
            else:
                acc = tl.dot(xv, wv, acc)
        return acc.to(x_rows.dtype.element_ty)  # rounded as the unfused projection's output is

    @triton.jit
    def _span_attention_kernel(
        x_ptr, stride_xb, stride_xl, wqkv_ptr, wo_ptr, z_ptr, kbias_ptr, res_ptr, stride_rb, stride_rl, ctx_ptr,
        out_ptr, L, ramp, scaling,
        H: tl.constexpr, D: tl.constexpr, ACTIVE: tl.constexpr, WIDTH: tl.constexpr, FULL_WINDOW: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_H: tl.constexpr,
        HAS_KBIAS: tl.constexpr, RESIDUAL: tl.constexpr, IEEE: tl.constexpr,
    ):
        b = tl.program_id(0).to(tl.int64)
        start = tl.program_id(1) * BLOCK_M
        rows = start + tl.arange(0, BLOCK_M)
        row_ok = rows < L
        if FULL_WINDOW:
            keys = tl.arange(0, BLOCK_N)
        else:
            keys = start - WIDTH + tl.arange(0, BLOCK_N)
        key_ok = (keys >= 0) & (keys < L)
        dh = tl.arange(0, D)
        x_rows = x_ptr + b * stride_xb + rows.to(tl.int64)[:, None] * stride_xl
        x_keys = x_ptr + b * stride_xb + keys.to(tl.int64)[:, None] * stride_xl
        distance = tl.abs(rows[:, None] - keys[None, :]).to(tl.float32)
        if HAS_KBIAS:
            key_bias = tl.load(kbias_ptr + b * L + keys, mask=key_ok, other=0.0).to(tl.float32)
        ctx_rows = ctx_ptr + (b * L + rows.to(tl.int64))[:, None] * (ACTIVE * D)

        for a in range(ACTIVE):
            # this head's rows of the compact qkv weight: query, key, value blocks of D rows each
            w_head = wqkv_ptr + (a * 3 * D + dh)[None, :].to(tl.int64) * H
            q = _project(x_rows, row_ok, w_head, H, BLOCK_K, BLOCK_M, D, IEEE)
            k = _project(x_keys, key_ok, w_head + D * H, H, BLOCK_K, BLOCK_N, D, IEEE)
            if IEEE:
                scores = tl.dot(q, tl.trans(k), input_precision="ieee")
            else:
                scores = tl.dot(q, tl.trans(k))
            z = tl.load(z_ptr + a).to(tl.float32)
            mask = tl.minimum(tl.maximum((ramp + z - distance) / ramp, 0.0), 1.0)
            # softmax(score + log m) over the band: the renormalised product of the training form
            scores = tl.where(key_ok[None, :] & (mask > 0.0), scores * scaling + tl.log(mask), float("-inf"))
            if HAS_KBIAS:
                scores = scores + key_bias[None, :]
            peak = tl.max(scores, axis=1)
            peak = tl.where(peak == float("-inf"), 0.0, peak)  # rows past the end: nothing to attend
            probs = tl.exp(scores - peak[:, None])
            total = tl.sum(probs, axis=1)
            probs = probs / tl.where(total > 0.0, total, 1.0)[:, None]
            v = _project(x_keys, key_ok, w_head + 2 * D * H, H, BLOCK_K, BLOCK_N, D, IEEE)
            if IEEE:
                context = tl.dot(probs.to(v.dtype), v, input_precision="ieee")
            else:
                context = tl.dot(probs.to(v.dtype), v)
            tl.store(ctx_rows + a * D + dh[None, :], context.to(ctx_ptr.dtype.element_ty), mask=row_ok[:, None])

        tl.debug_barrier()  # the rows' contexts of every head are written (by this program's threads) before use
        for h0 in range(0, H, BLOCK_H):
            hh = h0 + tl.arange(0, BLOCK_H)
            acc = tl.zeros((BLOCK_M, BLOCK_H), dtype=tl.float32)
            for a in range(ACTIVE):
                context = tl.load(ctx_rows + a * D + dh[None, :], mask=row_ok[:, None], other=0.0)
                wo = tl.load(wo_ptr + hh[None, :].to(tl.int64) * (ACTIVE * D) + (a * D + dh)[:, None])
                if IEEE:
                    acc = tl.dot(context, wo, acc, input_precision="ieee")
                else:
                    acc = tl.dot(context, wo, acc)
            if RESIDUAL:
                acc += tl.load(res_ptr + b * stride_rb + rows.to(tl.int64)[:, None] * stride_rl + hh[None, :],
                               mask=row_ok[:, None], other=0.0).to(tl.float32)
            tl.store(out_ptr + (b * L + rows.to(tl.int64))[:, None] * H + hh[None, :],
                     acc.to(out_ptr.dtype.element_ty), mask=row_ok[:, None])


def is_available() -> bool:
    return triton is not None and (INTERPRETED or torch.cuda.is_available())


def _next_power_of_2(n: int) -> int:
    return 1 << max(int(n) - 1, 0).bit_length()


def launch_shape(seq_length: int, width: int) -> tuple[int, int, bool] | None:
    """(BLOCK_M, BLOCK_N, full_window) for a sequence and the farthest distance any head sees, or None when the key
    window would exceed MAX_WINDOW (use the PyTorch path)."""
    block_m = 16 if width <= 8 else 32
    full = _next_power_of_2(seq_length)
    window = _next_power_of_2(block_m + 2 * width)
    if window >= full:
        return (block_m, max(full, 16), True) if full <= MAX_WINDOW else None
    return (block_m, window, False) if window <= MAX_WINDOW else None


def supports(hidden_states: torch.Tensor, head_dim: int, width: int) -> bool:
    """Whether the fused kernel can run this call (else the caller uses the PyTorch path)."""
    if not is_available() or hidden_states.dim() != 3 or hidden_states.dtype not in _SUPPORTED_DTYPES:
        return False
    if hidden_states.device.type != "cuda" and not INTERPRETED:
        return False
    hidden = hidden_states.shape[2]
    if head_dim not in (16, 32, 64, 128) or hidden % 32 != 0 or hidden_states.stride(2) != 1:
        return False
    return launch_shape(hidden_states.shape[1], width) is not None


_PLANS: dict = {}
_MAX_PLANS = 256
_TENSOR_SLOTS = {name: i for i, name in enumerate(("x", "wqkv", "wo", "z", "kbias", "res", "ctx", "out"))}


def _describe(hidden_states, active: int, head_dim: int, width: int, ramp: float, scaling: float, has_kbias: bool,
              residual):
    """Grid, arguments (tensors by slot name) and options of the launch for this call signature."""
    batch, seq_length, hidden = hidden_states.shape
    block_m, block_n, full_window = launch_shape(seq_length, width)
    params = dict(
        x_ptr="x", stride_xb=hidden_states.stride(0), stride_xl=hidden_states.stride(1), wqkv_ptr="wqkv", wo_ptr="wo",
        z_ptr="z", kbias_ptr="kbias", res_ptr="res", stride_rb=residual.stride(0) if residual is not None else 0,
        stride_rl=residual.stride(1) if residual is not None else 0, ctx_ptr="ctx", out_ptr="out", L=seq_length,
        ramp=float(ramp), scaling=float(scaling), H=hidden, D=head_dim, ACTIVE=active, WIDTH=width,
        FULL_WINDOW=full_window, BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=64 if hidden % 64 == 0 else 32,
        BLOCK_H=64 if hidden % 64 == 0 else 32,
        HAS_KBIAS=has_kbias, RESIDUAL=residual is not None, IEEE=hidden_states.dtype == torch.float32,
    )
    grid = (batch, triton.cdiv(seq_length, block_m), 1)
    return grid, params, dict(num_warps=4 if block_n <= 64 else 8)


def _is_compiling() -> bool:
    return hasattr(torch, "compiler") and torch.compiler.is_compiling()


class SpanLaunch:
    """The launch of one call signature (shapes, strides, dtypes, heads on, width, alignment), validated once: calls
    only allocate the output and the context workspace and launch (see `span_attention` for the arguments)."""

    def __init__(self, hidden_states, qkv_weight, z, ramp: float, scaling: float, width: int, has_key_bias: bool,
                 residual):
        batch, seq_length, hidden = hidden_states.shape
        active = z.shape[0]
        head_dim = qkv_weight.shape[0] // (3 * active)
        self.out_shape = (batch, seq_length, hidden)
        self.context_shape = (batch, seq_length, active * head_dim)
        self.dtype, self.device = hidden_states.dtype, hidden_states.device
        self.empty = batch * seq_length == 0
        self.description = _describe(hidden_states, active, head_dim, width, ramp, scaling, has_key_bias, residual)
        # eager calls reuse Triton's compiled launcher directly: its own launch path costs more host time than the
        # whole block's GPU work at these sizes; traced calls (torch.compile) and the interpreter launch plainly
        self.cached = None if INTERPRETED else _Launch(_span_attention_kernel, *self.description, _TENSOR_SLOTS)

    def __call__(self, hidden_states, qkv_weight, dense_weight, z, key_bias=None, residual=None):
        out = torch.empty(self.out_shape, dtype=self.dtype, device=self.device)
        if self.empty:
            return out
        context = torch.empty(self.context_shape, dtype=self.dtype, device=self.device)
        tensors = [hidden_states, qkv_weight, dense_weight, z, z if key_bias is None else key_bias,
                   out if residual is None else residual, context, out]
        if self.cached is None or _is_compiling():
            grid, params, options = self.description
            arguments = {name: tensors[_TENSOR_SLOTS[v]] if isinstance(v, str) else v for name, v in params.items()}
            _span_attention_kernel[grid](**arguments, **options)
        elif self.device.index != torch.cuda.current_device():  # Triton launches on the current device
            with torch.cuda.device(self.device):
                self.cached(tensors, self.device.index)
        else:
            self.cached(tensors, self.device.index)
        return out


def signature(hidden_states, z, width: int, ramp: float, scaling: float, key_bias, residual) -> tuple:
    """Everything a `SpanLaunch` depends on: Triton specialises the compiled kernel on dtypes and on the 16-byte
    alignment of pointers, besides the shapes and strides."""
    return (hidden_states.shape, hidden_states.stride(), hidden_states.dtype, hidden_states.device,
            hidden_states.data_ptr() % 16, z.shape[0], z.dtype, width, float(ramp), float(scaling),
            None if key_bias is None else (key_bias.shape, key_bias.stride(), key_bias.dtype, key_bias.data_ptr() % 16),
            None if residual is None else (residual.shape, residual.stride(), residual.dtype, residual.data_ptr() % 16))


def span_attention(hidden_states, qkv_weight, dense_weight, z, ramp: float, scaling: float, width: int,
                   key_bias=None, residual=None):
    """The attention block of the heads that are on, in one launch.

    hidden_states (batch, seq, hidden) with unit stride over hidden; qkv_weight (heads_on * 3 * head_dim, hidden)
    contiguous, each head's query, key and value rows in turn; dense_weight (hidden, heads_on * head_dim) contiguous;
    z (heads_on,) their spans; width the farthest distance any of them sees (ceil(max(z) + ramp) - 1); key_bias None
    or a contiguous (batch, seq) (or (batch, 1, 1, seq)) additive padding bias; residual None or (batch, seq, hidden)
    with unit stride over hidden, added to the output. Returns (batch, seq, hidden) in the input dtype. Check
    `supports` first.
    """
    if residual is not None and residual.stride(2) != 1:
        residual = residual.contiguous()
    if key_bias is not None and not key_bias.is_contiguous():
        key_bias = key_bias.contiguous()
    key = signature(hidden_states, z, width, ramp, scaling, key_bias, residual) + (qkv_weight.shape,)
    launch = _PLANS.get(key)
    if launch is None:
        launch = SpanLaunch(hidden_states, qkv_weight, z, ramp, scaling, width, key_bias is not None, residual)
        if len(_PLANS) >= _MAX_PLANS:
            _PLANS.clear()
        _PLANS[key] = launch
    return launch(hidden_states, qkv_weight, dense_weight, z, key_bias, residual)
