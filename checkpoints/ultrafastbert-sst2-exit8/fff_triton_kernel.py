# Copyright 2026 The UltraFastBERT-HF authors. Apache-2.0.
"""Triton kernels for conditional FFF inference on CUDA tensors (forward only).

Three strategies compute the same function as ``fast_feedforward.fff_conditional_torch``:

* ``"phased"`` (few tokens): one program per token walks every tree ``P`` levels at a time. A phase loads the
  ``2**P - 1`` node rows of the subtree the token is in with one wide load, computes their logits together and walks
  the ``P`` levels in registers; the visited nodes' output rows follow. The walk is a chain of dependent memory round
  trips, and this cuts the chain from ``D + 1`` to ``ceil((D + 1) / P)`` links at the price of reading a few more
  rows. Any K, hidden size up to ``PHASED_MAX_HIDDEN``.
* ``"grouped"`` (many tokens): the levels are split in two halves of ``S`` and ``D + 1 - S`` levels. A first kernel
  computes the logits of all ``2**S - 1`` top nodes for a tile of tokens with tensor cores (a small dense GEMM),
  walks the top levels in registers and keeps the masked top activations. Tokens are then bucketed by the subtree
  they entered (an atomic counter per subtree gives each token its slot in that subtree's bucket) and a second
  kernel processes every subtree's tokens as dense tiles: the subtree's node rows are shared by the whole tile, so
  both products again run on tensor cores, and the output tile sums the top and bottom contributions in one pass.
  Weight rows are read once per tile instead of once per token. One tree, depth <= 11 (the shipped models).
* ``"walk"``: one level per round trip, a few tokens per program; any shape (the fallback for very wide models).

Every kernel can add the transformer block's residual to its output while writing it. Accumulation is fp32 for
fp32/bf16/fp16 inputs; fp32 dots use IEEE precision (no TF32) so fp32 results match the PyTorch walk to ~1e-6.
"""

import math
import os

import torch

try:  # Triton is optional: without it the dispatch falls back to the pure-PyTorch walk
    import triton
    import triton.language as tl

    _TRITON_IMPORT_ERROR = None
except ImportError as error:  # pragma: no cover - depends on the environment
    triton = None
    tl = None
    _TRITON_IMPORT_ERROR = error

_SUPPORTED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
GROUPED_MAX_DEPTH = 11  # 2 * 6 levels: node tiles of <= 64 rows; deeper trees use the phased kernel
GROUPED_MIN_TOKENS = 3072  # below this the phased kernel is faster (H100, hidden 768, depth 11)


_AVAILABLE = None  # (True, "ok") once seen: the dispatch asks on every call, and the answer cannot change


def is_available() -> tuple[bool, str]:
    global _AVAILABLE
    if _AVAILABLE is not None:
        return _AVAILABLE
    if triton is None:
        return False, f"Triton is not installed ({_TRITON_IMPORT_ERROR})"
    if not torch.cuda.is_available():
        return False, "CUDA is not available"
    _AVAILABLE = (True, "ok")
    return _AVAILABLE


if triton is not None:

    @triton.jit
    def _gelu(z):
        # exact (erf) GELU, as torch.nn.functional.gelu's default
        return 0.5 * z * (1.0 + tl.math.erf(z * 0.7071067811865476))

    @triton.jit
    def _heap_depth(col, LEVELS: tl.constexpr):
        # depth of heap index `col` inside a subtree of LEVELS levels (0 for its root); local node j at depth m
        # below the subtree's root r is node r * 2**m + j of the whole tree
        depth = tl.zeros(col.shape, dtype=tl.int64)
        for i in tl.static_range(1, LEVELS):
            depth += (col + 1 >= 2**i).to(tl.int64)
        return depth

    @triton.jit
    def _walk_kernel(
        x_ptr, stride_xt, stride_xh, win_ptr, bin_ptr, wout_ptr, y_ptr, res_ptr, stride_rt, stride_rh, T, H, K, N,
        LEVELS: tl.constexpr, PATH: tl.constexpr, BT: tl.constexpr, BH: tl.constexpr, RESIDUAL: tl.constexpr,
    ):
        pid = tl.program_id(0)
        offs_t = pid * BT + tl.arange(0, BT)
        tmask = offs_t < T
        xrow = offs_t.to(tl.int64) * stride_xt
        cols = tl.arange(0, PATH)
        acts = tl.zeros((BT, PATH), dtype=tl.float32)
        rows = tl.zeros((BT, PATH), dtype=tl.int64)
        for k in range(0, K):
            node = tl.zeros((BT,), dtype=tl.int64)
            for level in tl.static_range(LEVELS):
                row = k * N + node  # int64: K * N * H may exceed 2**31
                # bias first, so that its load overlaps the row loads instead of adding a dependent round trip
                z = tl.load(bin_ptr + row, mask=tmask, other=0.0).to(tl.float32)
                for h0 in range(0, H, BH):
                    hh = h0 + tl.arange(0, BH)
                    m = tmask[:, None] & (hh < H)[None, :]
                    xv = tl.load(x_ptr + xrow[:, None] + hh[None, :].to(tl.int64) * stride_xh, mask=m, other=0.0)
                    wv = tl.load(win_ptr + row[:, None] * H + hh[None, :], mask=m, other=0.0)
                    z += tl.sum(xv.to(tl.float32) * wv.to(tl.float32), axis=1)
                slot = (cols == k * LEVELS + level)[None, :]
                acts = tl.where(slot, _gelu(z)[:, None], acts)
                rows = tl.where(slot, row[:, None], rows)
                node = 2 * node + 1 + (z > 0).to(tl.int64)
        # output: y = sum over visited (tree, level) of act * out_weight[row]
        for h0 in range(0, H, BH):
            hh = h0 + tl.arange(0, BH)
            m = tmask[:, None] & (hh < H)[None, :]
            acc = tl.zeros((BT, BH), dtype=tl.float32)
            if RESIDUAL:
                acc += tl.load(res_ptr + offs_t.to(tl.int64)[:, None] * stride_rt + hh[None, :].to(tl.int64) * stride_rh,
                               mask=m, other=0.0).to(tl.float32)
            for c in range(0, K * LEVELS):
                pick = (cols == c)[None, :]
                a = tl.sum(tl.where(pick, acts, 0.0), axis=1)
                row = tl.sum(tl.where(pick, rows, 0), axis=1)
                wv = tl.load(wout_ptr + row[:, None] * H + hh[None, :], mask=m, other=0.0)
                acc += a[:, None] * wv.to(tl.float32)
            tl.store(y_ptr + offs_t.to(tl.int64)[:, None] * H + hh[None, :], acc.to(y_ptr.dtype.element_ty), mask=m)

    @triton.jit
    def _phased_kernel(
        x_ptr, stride_xt, stride_xh, win_ptr, bin_ptr, wout_ptr, y_ptr, res_ptr, stride_rt, stride_rh, K, N, H,
        LEVELS: tl.constexpr, P: tl.constexpr, NP: tl.constexpr, LP: tl.constexpr, BH: tl.constexpr,
        RESIDUAL: tl.constexpr,
    ):
        # One token per program. The levels are taken P at a time: the 2**P - 1 node rows of the subtree the token
        # is in are loaded together and their logits computed at once, so a tree costs ceil((D+1)/P) dependent
        # memory round trips instead of D+1. Only the visited nodes' output rows are loaded.
        t = tl.program_id(0).to(tl.int64)
        hh = tl.arange(0, BH)
        hmask = hh < H
        x = tl.load(x_ptr + t * stride_xt + hh.to(tl.int64) * stride_xh, mask=hmask, other=0.0).to(tl.float32)
        col = tl.arange(0, NP)  # heap index inside the phase's subtree
        local_depth = _heap_depth(col, P)
        step = tl.arange(0, LP)
        y = tl.zeros((BH,), dtype=tl.float32)
        if RESIDUAL:  # the block's skip connection, added while the output is written anyway
            y += tl.load(res_ptr + t * stride_rt + hh.to(tl.int64) * stride_rh, mask=hmask, other=0.0).to(tl.float32)
        for k in range(0, K):
            root = tl.zeros((), dtype=tl.int64)  # heap index (within the tree) of the phase's subtree root
            for phase in tl.static_range(0, LEVELS, P):
                valid = (col < 2**P - 1) & (local_depth < LEVELS - phase)  # the last phase may be shorter
                row = k * N + (root << local_depth) + col  # node r * 2**m + j: local node j at local depth m
                w_in = tl.load(win_ptr + row[:, None] * H + hh[None, :], mask=valid[:, None] & hmask[None, :],
                               other=0.0)
                z = tl.sum(w_in.to(tl.float32) * x[None, :], axis=1)
                z += tl.load(bin_ptr + row, mask=valid, other=0.0).to(tl.float32)
                # walk the phase's levels in registers, noting each visited node's row and activation
                local = tl.zeros((), dtype=tl.int64)
                path_row = tl.zeros((LP,), dtype=tl.int64)
                path_act = tl.zeros((LP,), dtype=tl.float32)
                for level in tl.static_range(P):
                    if phase + level < LEVELS:
                        zn = tl.sum(tl.where(col == local, z, 0.0), axis=0)
                        path_row = tl.where(step == level, k * N + root, path_row)
                        path_act = tl.where(step == level, _gelu(zn), path_act)
                        right = (zn > 0).to(tl.int64)
                        local = 2 * local + 1 + right
                        root = 2 * root + 1 + right  # now the global heap index of the next node
                w_out = tl.load(wout_ptr + path_row[:, None] * H + hh[None, :],
                                mask=(step < LEVELS - phase)[:, None] & (step < P)[:, None] & hmask[None, :],
                                other=0.0)
                y += tl.sum(path_act[:, None] * w_out.to(tl.float32), axis=0)
        tl.store(y_ptr + t * H + hh, y.to(y_ptr.dtype.element_ty), mask=hmask)

    @triton.jit
    def _subtree_walk(logits, col, LEVELS: tl.constexpr, BT: tl.constexpr, NP: tl.constexpr):
        # walk LEVELS levels of a heap-ordered subtree whose node logits are the columns of `logits`
        node = tl.zeros((BT,), dtype=tl.int32)
        visited = tl.zeros((BT, NP), dtype=tl.int32)
        for _ in tl.static_range(LEVELS):
            sel = col[None, :] == node[:, None]
            visited = visited | sel.to(tl.int32)
            z = tl.sum(tl.where(sel, logits, 0.0), axis=1)
            node = 2 * node + 1 + (z > 0).to(tl.int32)
        return visited != 0, node

    @triton.jit
    def _tile_logits(x_ptr, xrow, tmask, stride_xh, win_ptr, bin_ptr, node_row, node_mask, H,
                     BT: tl.constexpr, NP: tl.constexpr, BK: tl.constexpr, IEEE: tl.constexpr):
        # logits (BT, NP) of a tile of tokens (x row offsets `xrow`) against NP node rows: a small GEMM on tensor cores
        acc = tl.zeros((BT, NP), dtype=tl.float32)
        for h0 in range(0, H, BK):
            kk = h0 + tl.arange(0, BK)
            kmask = kk < H
            xv = tl.load(x_ptr + xrow[:, None] + kk[None, :].to(tl.int64) * stride_xh,
                         mask=tmask[:, None] & kmask[None, :], other=0.0)
            wv = tl.load(win_ptr + node_row[None, :] * H + kk[:, None], mask=node_mask[None, :] & kmask[:, None],
                         other=0.0)
            if IEEE:
                acc = tl.dot(xv, wv, acc, input_precision="ieee")
            else:
                acc = tl.dot(xv, wv, acc)
        return acc + tl.load(bin_ptr + node_row, mask=node_mask, other=0.0).to(tl.float32)[None, :]

    @triton.jit
    def _top_kernel(
        x_ptr, stride_xt, stride_xh, win_ptr, bin_ptr, act_ptr, bucket_ptr, count_ptr, T, H,
        LEVELS: tl.constexpr, NP: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr, IEEE: tl.constexpr,
    ):
        pid = tl.program_id(0)
        offs_t = pid * BT + tl.arange(0, BT)
        tmask = offs_t < T
        xrow = offs_t.to(tl.int64) * stride_xt
        col = tl.arange(0, NP)
        logits = _tile_logits(x_ptr, xrow, tmask, stride_xh, win_ptr, bin_ptr, col, col < (2**LEVELS - 1), H,
                              BT, NP, BK, IEEE)
        visited, node = _subtree_walk(logits, col, LEVELS, BT, NP)
        act = tl.where(visited, _gelu(logits), 0.0)
        tl.store(act_ptr + offs_t.to(tl.int64)[:, None] * NP + col[None, :], act.to(act_ptr.dtype.element_ty),
                 mask=tmask[:, None])
        leaf = node - (2**LEVELS - 1)  # which subtree (rooted at level LEVELS) the token enters
        slot = tl.atomic_add(count_ptr + leaf, 1, mask=tmask)  # position inside the bucket; order is irrelevant
        tl.store(bucket_ptr + leaf.to(tl.int64) * T + slot, offs_t, mask=tmask)

    @triton.jit
    def _bottom_kernel(
        x_ptr, stride_xt, stride_xh, win_ptr, bin_ptr, wout_ptr, act_ptr, bucket_ptr, count_ptr, y_ptr,
        res_ptr, stride_rt, stride_rh, T, H,
        TOP_LEVELS: tl.constexpr, LEVELS: tl.constexpr, NP_TOP: tl.constexpr, NP: tl.constexpr,
        G: tl.constexpr, GP: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr, BN: tl.constexpr,
        SPLIT: tl.constexpr, IEEE: tl.constexpr, RESIDUAL: tl.constexpr,
    ):
        # SPLIT programs share a tile, each writing every SPLIT-th block of output columns: more programs in
        # flight when there are few tiles, at the price of recomputing the tile's logits
        part = tl.program_id(0) % SPLIT
        pid = tl.program_id(0) // SPLIT
        # find this program's (subtree, tile) from the bucket sizes; the grid is an upper bound on the tile count
        gidx = tl.arange(0, GP)
        counts = tl.load(count_ptr + gidx, mask=gidx < G, other=0)
        tiles = (counts + BT - 1) // BT
        total = tl.sum(tiles, axis=0)
        if pid < total:
            g = tl.sum((tl.cumsum(tiles, axis=0) <= pid).to(tl.int32), axis=0)
            before = gidx < g
            tile = pid - tl.sum(tl.where(before, tiles, 0), axis=0)
            count = tl.sum(tl.where(gidx == g, counts, 0), axis=0)
            rows_in_bucket = tile * BT + tl.arange(0, BT)
            tmask = rows_in_bucket < count
            tok = tl.load(bucket_ptr + g.to(tl.int64) * T + rows_in_bucket, mask=tmask, other=0).to(tl.int64)
            xrow = tok * stride_xt

            root = (2**TOP_LEVELS - 1) + g  # the subtree's root in the whole tree
            col = tl.arange(0, NP)
            cmask = col < (2**LEVELS - 1)
            grow = (root.to(tl.int64) << _heap_depth(col, LEVELS)) + col

            logits = _tile_logits(x_ptr, xrow, tmask, stride_xh, win_ptr, bin_ptr, grow, cmask, H, BT, NP, BK, IEEE)
            visited, _ = _subtree_walk(logits, col, LEVELS, BT, NP)
            act = tl.where(visited, _gelu(logits), 0.0).to(wout_ptr.dtype.element_ty)

            tcol = tl.arange(0, NP_TOP)
            tcmask = tcol < (2**TOP_LEVELS - 1)
            act_top = tl.load(act_ptr + tok[:, None] * NP_TOP + tcol[None, :], mask=tmask[:, None], other=0.0)
            for n0 in range(part * BN, H, SPLIT * BN):
                nn = n0 + tl.arange(0, BN)
                nmask = nn < H
                w_bot = tl.load(wout_ptr + grow[:, None] * H + nn[None, :], mask=cmask[:, None] & nmask[None, :],
                                other=0.0)
                w_top = tl.load(wout_ptr + tcol[:, None] * H + nn[None, :], mask=tcmask[:, None] & nmask[None, :],
                                other=0.0)
                if IEEE:
                    out = tl.dot(act, w_bot, input_precision="ieee")
                    out = tl.dot(act_top, w_top, out, input_precision="ieee")
                else:
                    out = tl.dot(act, w_bot)
                    out = tl.dot(act_top, w_top, out)
                if RESIDUAL:
                    out += tl.load(res_ptr + tok[:, None] * stride_rt + nn[None, :].to(tl.int64) * stride_rh,
                                   mask=tmask[:, None] & nmask[None, :], other=0.0).to(tl.float32)
                tl.store(y_ptr + tok[:, None] * H + nn[None, :], out.to(y_ptr.dtype.element_ty),
                         mask=tmask[:, None] & nmask[None, :])


def _check_inputs(x, in_weight, in_bias, out_weight, residual):
    if triton is None:
        raise RuntimeError(f"Triton is not installed ({_TRITON_IMPORT_ERROR})")
    if x.dim() != 2:
        raise ValueError(f"x must be (tokens, hidden), got shape {tuple(x.shape)}")
    if in_weight.dim() != 3 or out_weight.shape != in_weight.shape or in_bias.shape != in_weight.shape[:2]:
        raise ValueError(
            "expected in_weight/out_weight (K, N, H) and in_bias (K, N), got "
            f"{tuple(in_weight.shape)}, {tuple(out_weight.shape)}, {tuple(in_bias.shape)}"
        )
    trees, nodes, hidden = in_weight.shape
    if x.shape[1] != hidden:
        raise ValueError(f"x has hidden size {x.shape[1]}, the weights {hidden}")
    depth = int(math.log2(nodes + 1)) - 1
    if 2 ** (depth + 1) - 1 != nodes:
        raise ValueError(f"nodes per tree must be 2**(depth+1) - 1, got {nodes}")
    tensors = [("x", x), ("in_weight", in_weight), ("in_bias", in_bias), ("out_weight", out_weight)]
    if residual is not None:
        if residual.shape != x.shape:
            raise ValueError(f"residual has shape {tuple(residual.shape)} but x has {tuple(x.shape)}")
        tensors.append(("residual", residual))
    for name, t in tensors:
        if t.device.type != "cuda" and not _INTERPRETED:  # the interpreter (tests) runs on CPU tensors
            raise ValueError(f"the Triton FFF kernel needs CUDA tensors; {name} is on {t.device}")
        if t.device != x.device:
            raise ValueError(f"{name} is on {t.device} but x is on {x.device}")
        if t.dtype != x.dtype:
            raise ValueError(f"{name} has dtype {t.dtype} but x has {x.dtype}; cast the model or the inputs")
    if x.dtype not in _SUPPORTED_DTYPES:
        raise ValueError(f"unsupported dtype {x.dtype}; expected one of {_SUPPORTED_DTYPES}")
    return trees, nodes, hidden, depth


# --------------------------------------------------------------------------------------------------------------------
# launch descriptions: which kernels a call runs, on which grid, with which scalar arguments and workspaces.
# Tensors appear by name ("x", "in_weight", "in_bias", "out_weight", "y", "residual", then the workspaces) so that one
# description serves both the ordinary Triton launch (traced by torch.compile) and the cached launch below.

_TENSOR_NAMES = ("x", "in_weight", "in_bias", "out_weight", "y", "residual")


def _walk_launches(tokens, hidden, trees, nodes, depth, x_strides, res_strides, has_residual, dtype):
    levels = depth + 1
    block_t = 1 if tokens <= 256 else 4
    params = dict(
        x_ptr="x", stride_xt=x_strides[0], stride_xh=x_strides[1], win_ptr="in_weight", bin_ptr="in_bias",
        wout_ptr="out_weight", y_ptr="y", res_ptr="residual", stride_rt=res_strides[0], stride_rh=res_strides[1],
        T=tokens, H=hidden, K=trees, N=nodes, LEVELS=levels, PATH=triton.next_power_of_2(trees * levels),
        BT=block_t, BH=min(triton.next_power_of_2(hidden), 1024), RESIDUAL=has_residual,
    )
    return [(_walk_kernel, (triton.cdiv(tokens, block_t), 1, 1), params, dict(num_warps=4))], []


# levels per phase (a phase loads the 2**levels - 1 rows of a subtree at once), by token count; measured on an H100
PHASED_CONFIG = {"small_tokens": 512, "levels_small": 3, "levels": 2, "warps": 4}
PHASED_MAX_HIDDEN = 2048  # a program holds whole rows in registers; wider models use the walk kernel


def _phased_launches(tokens, hidden, trees, nodes, depth, x_strides, res_strides, has_residual, dtype):
    cfg = PHASED_CONFIG
    per_phase = cfg["levels_small"] if tokens <= cfg["small_tokens"] else cfg["levels"]
    per_phase = min(per_phase, depth + 1)
    params = dict(
        x_ptr="x", stride_xt=x_strides[0], stride_xh=x_strides[1], win_ptr="in_weight", bin_ptr="in_bias",
        wout_ptr="out_weight", y_ptr="y", res_ptr="residual", stride_rt=res_strides[0], stride_rh=res_strides[1],
        K=trees, N=nodes, H=hidden, LEVELS=depth + 1, P=per_phase, NP=max(2, 2**per_phase),
        LP=max(2, triton.next_power_of_2(per_phase)), BH=triton.next_power_of_2(hidden), RESIDUAL=has_residual,
    )
    return [(_phased_kernel, (tokens, 1, 1), params, dict(num_warps=cfg["warps"]))], []


# tiles for 16-bit inputs (fp32 uses smaller ones); top_bt: tokens per program of the first kernel
# split: programs per tile of the second kernel (each writes part of the output columns), up to split_max_tokens
GROUPED_CONFIG = {"bt": 64, "bk": 64, "bn": 64, "warps": 4, "stages": 3, "split": 2, "split_max_tokens": 8192,
                  "top_bt": 64}


def _grouped_launches(tokens, hidden, trees, nodes, depth, x_strides, res_strides, has_residual, dtype):
    ieee = dtype == torch.float32
    top_levels = (depth + 2) // 2
    bottom_levels = depth + 1 - top_levels
    np_top = max(16, triton.next_power_of_2(2**top_levels - 1))
    np_bottom = max(16, triton.next_power_of_2(2**bottom_levels - 1))
    buckets = 2**top_levels
    cfg = GROUPED_CONFIG
    block_t, block_k, block_n = (32, 32, 64) if ieee else (cfg["bt"], cfg["bk"], cfg["bn"])  # fp32: smaller tiles
    options = dict(num_warps=4, num_stages=2) if ieee else dict(num_warps=cfg["warps"], num_stages=cfg["stages"])
    # workspaces: the top activations; bucket g holds the ids of the tokens that enter subtree g (capacity `tokens`
    # each: no prefix sum, no scatter); counts (zeroed) are the buckets' fill levels
    workspaces = [("act", (tokens, np_top), None, False), ("bucket", (buckets, tokens), torch.int32, False),
                  ("counts", (buckets,), torch.int32, True)]
    top_t = block_t if ieee else cfg["top_bt"]
    top = dict(
        x_ptr="x", stride_xt=x_strides[0], stride_xh=x_strides[1], win_ptr="in_weight", bin_ptr="in_bias",
        act_ptr="act", bucket_ptr="bucket", count_ptr="counts", T=tokens, H=hidden,
        LEVELS=top_levels, NP=np_top, BT=top_t, BK=block_k, IEEE=ieee,
    )
    split = cfg["split"] if tokens <= cfg["split_max_tokens"] else 1  # measured on an H100: 8% faster at 4096
    bottom = dict(
        x_ptr="x", stride_xt=x_strides[0], stride_xh=x_strides[1], win_ptr="in_weight", bin_ptr="in_bias",
        wout_ptr="out_weight", act_ptr="act", bucket_ptr="bucket", count_ptr="counts", y_ptr="y",
        res_ptr="residual", stride_rt=res_strides[0], stride_rh=res_strides[1], T=tokens, H=hidden,
        TOP_LEVELS=top_levels, LEVELS=bottom_levels, NP_TOP=np_top, NP=np_bottom, G=buckets,
        GP=triton.next_power_of_2(buckets), BT=block_t, BK=block_k, BN=block_n, SPLIT=split, IEEE=ieee,
        RESIDUAL=has_residual,
    )
    # sum over buckets of ceil(count / BT) <= ceil(tokens / BT) + buckets; surplus programs exit at once
    return [(_top_kernel, (triton.cdiv(tokens, top_t), 1, 1), top, options),
            (_bottom_kernel, ((triton.cdiv(tokens, block_t) + buckets) * split, 1, 1), bottom, options)], workspaces


_RUNNERS = {"phased": _phased_launches, "grouped": _grouped_launches, "walk": _walk_launches}
STRATEGIES = ("auto", "phased", "grouped", "walk")


def _describe(x, in_weight, strategy, residual):
    """Validated strategy -> (launches, workspaces) for this call's shapes (see the launch descriptions above)."""
    tokens, hidden = x.shape
    trees, nodes, _ = in_weight.shape
    depth = int(math.log2(nodes + 1)) - 1
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    grouped_ok = trees == 1 and 1 <= depth <= GROUPED_MAX_DEPTH
    if strategy == "grouped" and not grouped_ok:
        raise ValueError(f"the grouped strategy needs one tree and 1 <= depth <= {GROUPED_MAX_DEPTH}")
    if strategy == "phased" and hidden > PHASED_MAX_HIDDEN:
        raise ValueError(f"the phased strategy needs hidden size <= {PHASED_MAX_HIDDEN}, got {hidden}")
    if tokens == 0 or hidden == 0:
        return [], []
    if strategy == "auto":
        if grouped_ok and tokens >= GROUPED_MIN_TOKENS:
            strategy = "grouped"
        else:
            strategy = "phased" if hidden <= PHASED_MAX_HIDDEN else "walk"
    # without a residual the kernels never read its pointer; y stands in for it
    res_strides = (residual.stride(0), residual.stride(1)) if residual is not None else (0, 0)
    return _RUNNERS[strategy](tokens, hidden, trees, nodes, depth, (x.stride(0), x.stride(1)), res_strides,
                              residual is not None, x.dtype)


# --------------------------------------------------------------------------------------------------------------------
# cached launches
#
# `kernel[grid](...)` re-binds and re-specialises every argument in Python on each call (about 18 µs on the H100 VM's
# host, three times the phased kernel's GPU time at 128 tokens). Everything about a call except the tensors' addresses
# is fixed by its shapes, strides, dtypes, devices and pointer alignments (Triton specialises on 16-byte alignment),
# so the first call with a given signature is validated, described and launched the ordinary way, which compiles the
# kernel; later calls reuse the description and hand the arguments straight to the compiled kernel's launcher
# (`CompiledKernel.run`, with the calling convention of Triton 3.4-3.9's own `JITFunction.run`; other versions use the
# slower but public `CompiledKernel[grid](*args)`).


def _triton_version() -> tuple:
    try:
        return tuple(int(part) for part in triton.__version__.split(".")[:2])
    except (AttributeError, ValueError):  # pragma: no cover
        return (0, 0)


_INTERPRETED = os.environ.get("TRITON_INTERPRET", "0") == "1"
_COMPILED_LAUNCH = triton is not None and _triton_version() >= (3, 3) and not _INTERPRETED
_DIRECT_LAUNCH = _COMPILED_LAUNCH and (3, 4) <= _triton_version() <= (3, 9) and hasattr(triton, "knobs")
_MAX_PLANS = 1024  # distinct call signatures remembered; the cache is emptied beyond that


class _Launch:
    """One kernel launch with fixed grid, scalar arguments and options; tensors are filled in per call."""

    def __init__(self, kernel, grid, params, options, slots):
        names = list(kernel.arg_names)
        if set(names) != set(params):  # the description must name every parameter of the kernel
            raise RuntimeError(f"launch description of {names} does not match the kernel: {sorted(params)}")
        self.kernel, self.grid, self.options = kernel, grid, options
        self.template = [params[name] for name in names]  # positional, as Triton's launcher takes them
        self.tensor_positions = [(i, slots[v]) for i, v in enumerate(self.template) if isinstance(v, str)]
        self.compiled = None

    def __call__(self, tensors, device_index):
        args = self.template.copy()
        for position, slot in self.tensor_positions:
            args[position] = tensors[slot]
        compiled = self.compiled
        if compiled is None:
            compiled = self.kernel[self.grid](*args, **self.options)  # compiles on first use
            if _COMPILED_LAUNCH and compiled is not None:
                self.runner = compiled[self.grid]
                self.run, self.function, self.metadata = compiled.run, compiled.function, compiled.packed_metadata
                self.compiled = compiled  # last: another thread may take the fast branches as soon as it is set
        elif _DIRECT_LAUNCH and triton.knobs.runtime.launch_enter_hook is None:  # no profiler hook wants metadata
            self.run(*self.grid, _current_stream(device_index), self.function, self.metadata, None, None,
                     triton.knobs.runtime.launch_exit_hook, *args)
        else:
            self.runner(*args)


_stream_lookup = None  # Triton's lookup of torch's current raw stream (driver.active is created lazily)


def _current_stream(device_index):
    global _stream_lookup
    if _stream_lookup is None:
        _stream_lookup = triton.runtime.driver.active.get_current_stream
    return _stream_lookup(device_index)


class _Plan:
    """A validated call signature: its output shape, workspaces and launches."""

    def __init__(self, x, in_weight, in_bias, out_weight, strategy, residual):
        launches, workspaces = _describe(x, in_weight, strategy, residual)
        slot_names = _TENSOR_NAMES + tuple(name for name, *_ in workspaces)
        slots = {name: i for i, name in enumerate(slot_names)}
        self.launches = [_Launch(kernel, grid, params, options, slots) for kernel, grid, params, options in launches]
        self.workspaces = [(shape, dtype or x.dtype, zeroed) for _, shape, dtype, zeroed in workspaces]
        self.output_shape = (x.shape[0], in_weight.shape[2])
        self.device = x.device
        self.contiguous = in_weight.is_contiguous() and in_bias.is_contiguous() and out_weight.is_contiguous()

    def __call__(self, x, in_weight, in_bias, out_weight, residual):
        y = torch.empty(self.output_shape, dtype=x.dtype, device=self.device)
        if not self.launches:
            return y
        if not self.contiguous:  # the kernels index weights as dense row-major blocks
            in_weight, in_bias, out_weight = in_weight.contiguous(), in_bias.contiguous(), out_weight.contiguous()
        tensors = [x, in_weight, in_bias, out_weight, y, y if residual is None else residual]
        for shape, dtype, zeroed in self.workspaces:
            tensors.append((torch.zeros if zeroed else torch.empty)(shape, dtype=dtype, device=self.device))
        device_index = self.device.index
        if device_index != torch.cuda.current_device():  # Triton launches on the current device
            with torch.cuda.device(self.device):
                for launch in self.launches:
                    launch(tensors, device_index)
        else:
            for launch in self.launches:
                launch(tensors, device_index)
        return y


_PLANS: dict = {}


def clear_launch_cache() -> None:
    """Forget the cached launch plans (needed after changing PHASED_CONFIG / GROUPED_CONFIG at run time)."""
    _PLANS.clear()


def _signature(x, in_weight, in_bias, out_weight, strategy, residual):
    # everything the validation, the launch description and Triton's specialisation depend on
    signature = (strategy, x.device, x.dtype, x.shape, x.stride(), x.data_ptr() % 16)
    for t in (in_weight, in_bias, out_weight) if residual is None else (in_weight, in_bias, out_weight, residual):
        signature += (t.device, t.dtype, t.shape, t.stride(), t.data_ptr() % 16)
    return signature


def _is_compiling() -> bool:
    return hasattr(torch, "compiler") and torch.compiler.is_compiling()


def fff_forward(x, in_weight, in_bias, out_weight, strategy: str = "auto", residual=None):
    """Conditional FFF forward on CUDA. ``x`` (T, H), any strides; weights (K, N, H), (K, N), (K, N, H).

    ``strategy``: "auto" picks "grouped" for one tree, depth <= 11 and at least GROUPED_MIN_TOKENS tokens, else
    "phased" (hidden <= PHASED_MAX_HIDDEN), else "walk". ``residual`` (T, H), optional, is added to the output as it
    is written (the block's skip connection, saving a pass over the activations). Returns a new contiguous (T, H)
    tensor in x's dtype. Forward only: the result carries no autograd graph (no no_grad context here: at small
    token counts the host overhead is the cost).

    Eager calls are validated once per call signature and then launched from a cache (see "cached launches");
    under torch.compile the kernels are launched the ordinary way, which the compiler traces.
    """
    if _is_compiling() or _INTERPRETED:  # the interpreter (tests) has no compiled launcher to cache
        return _forward_traced(x, in_weight, in_bias, out_weight, strategy, residual)
    key = _signature(x, in_weight, in_bias, out_weight, strategy, residual)
    plan = _PLANS.get(key)
    if plan is None:
        _check_inputs(x, in_weight, in_bias, out_weight, residual)
        plan = _Plan(x, in_weight, in_bias, out_weight, strategy, residual)
        if len(_PLANS) >= _MAX_PLANS:
            _PLANS.clear()
        _PLANS[key] = plan
    return plan(x, in_weight, in_bias, out_weight, residual)


def _forward_traced(x, in_weight, in_bias, out_weight, strategy, residual):
    _check_inputs(x, in_weight, in_bias, out_weight, residual)
    launches, workspaces = _describe(x, in_weight, strategy, residual)
    y = torch.empty(x.shape[0], in_weight.shape[2], dtype=x.dtype, device=x.device)
    if not launches:
        return y
    in_weight, in_bias, out_weight = in_weight.contiguous(), in_bias.contiguous(), out_weight.contiguous()
    tensors = dict(x=x, in_weight=in_weight, in_bias=in_bias, out_weight=out_weight, y=y,
                   residual=y if residual is None else residual)
    for name, shape, dtype, zeroed in workspaces:
        tensors[name] = (torch.zeros if zeroed else torch.empty)(shape, dtype=dtype or x.dtype, device=x.device)
    for kernel, grid, params, options in launches:
        arguments = {name: tensors[v] if isinstance(v, str) else v for name, v in params.items()}
        if x.device.type == "cuda" and x.device.index != torch.cuda.current_device():  # launches go to the current device
            with torch.cuda.device(x.device):
                kernel[grid](**arguments, **options)
        else:
            kernel[grid](**arguments, **options)
    return y


# ------------------------------------------------------------------------------------------------------------------
# AdaptivFloat<8, 3> rows (see adaptivfloat.py): the grouped kernels again, reading uint8 codes and decoding them in
# registers (integer shifts into fp32 bits, exact), then cast to x's dtype for the tensor-core dots. AdaptivFloat-8
# values have 4 mantissa bits, so the cast to bf16/fp16 (in range) is exact too: the result equals the grouped kernel
# run on the decoded weights.
# ------------------------------------------------------------------------------------------------------------------

# bf16 activations: decode the codes straight into bf16 bits instead of through fp32 (same values; on the H100 1-3%
# faster and identical, benchmarks/edgebert_runs/session7_af8_sweep.py A/Bs the two)
AF8_DIRECT_BF16_DECODE = True

if triton is not None:

    @triton.jit
    def _af8_decode(codes, exponent_bias):
        # sign | 3 exponent bits | 4 mantissa bits -> fp32 bits; magnitude 0 is zero (no denormals)
        c = codes.to(tl.int32)
        magnitude = c & 0x7F
        bits = ((magnitude << 19) + ((127 + exponent_bias) << 23)) | ((c & 0x80) << 24)
        bits = tl.where(magnitude == 0, 0, bits)
        return bits.to(tl.float32, bitcast=True)

    @triton.jit
    def _af8_decode_as(codes, exponent_bias, dtype: tl.constexpr, DIRECT: tl.constexpr):
        # DIRECT (bf16 only): the same fields placed straight into bf16 bits (bf16 has fp32's exponent range), in
        # 16-bit integers: no fp32 -> bf16 conversion, which costs the GPU four times an integer operation
        if DIRECT:
            c = codes.to(tl.int16)
            magnitude = c & 0x7F
            bits = ((magnitude << 3) + ((127 + exponent_bias) << 7).to(tl.int16)) | ((c & 0x80) << 8)
            bits = tl.where(magnitude == 0, 0, bits).to(tl.int16)
            return bits.to(tl.bfloat16, bitcast=True)
        else:
            return _af8_decode(codes, exponent_bias).to(dtype)

    @triton.jit
    def _tile_logits_af8(x_ptr, xrow, tmask, stride_xh, win_ptr, in_exp, bin_ptr, node_row, node_mask, H,
                         BT: tl.constexpr, NP: tl.constexpr, BK: tl.constexpr, IEEE: tl.constexpr,
                         DIRECT: tl.constexpr):
        acc = tl.zeros((BT, NP), dtype=tl.float32)
        for h0 in range(0, H, BK):
            kk = h0 + tl.arange(0, BK)
            kmask = kk < H
            xv = tl.load(x_ptr + xrow[:, None] + kk[None, :].to(tl.int64) * stride_xh,
                         mask=tmask[:, None] & kmask[None, :], other=0.0)
            codes = tl.load(win_ptr + node_row[None, :] * H + kk[:, None], mask=node_mask[None, :] & kmask[:, None],
                            other=0)
            wv = _af8_decode_as(codes, in_exp, xv.dtype, DIRECT)
            if IEEE:
                acc = tl.dot(xv, wv, acc, input_precision="ieee")
            else:
                acc = tl.dot(xv, wv, acc)
        return acc + tl.load(bin_ptr + node_row, mask=node_mask, other=0.0).to(tl.float32)[None, :]

    @triton.jit
    def _top_kernel_af8(
        x_ptr, stride_xt, stride_xh, win_ptr, in_exp, bin_ptr, act_ptr, bucket_ptr, count_ptr, T, H,
        LEVELS: tl.constexpr, NP: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr, IEEE: tl.constexpr,
        DIRECT: tl.constexpr,
    ):
        pid = tl.program_id(0)
        offs_t = pid * BT + tl.arange(0, BT)
        tmask = offs_t < T
        xrow = offs_t.to(tl.int64) * stride_xt
        col = tl.arange(0, NP)
        logits = _tile_logits_af8(x_ptr, xrow, tmask, stride_xh, win_ptr, in_exp, bin_ptr, col,
                                  col < (2**LEVELS - 1), H, BT, NP, BK, IEEE, DIRECT)
        visited, node = _subtree_walk(logits, col, LEVELS, BT, NP)
        act = tl.where(visited, _gelu(logits), 0.0)
        tl.store(act_ptr + offs_t.to(tl.int64)[:, None] * NP + col[None, :], act.to(act_ptr.dtype.element_ty),
                 mask=tmask[:, None])
        leaf = node - (2**LEVELS - 1)
        slot = tl.atomic_add(count_ptr + leaf, 1, mask=tmask)
        tl.store(bucket_ptr + leaf.to(tl.int64) * T + slot, offs_t, mask=tmask)

    @triton.jit
    def _bottom_kernel_af8(
        x_ptr, stride_xt, stride_xh, win_ptr, in_exp, bin_ptr, wout_ptr, out_exp, act_ptr, bucket_ptr, count_ptr,
        y_ptr, res_ptr, stride_rt, stride_rh, T, H,
        TOP_LEVELS: tl.constexpr, LEVELS: tl.constexpr, NP_TOP: tl.constexpr, NP: tl.constexpr,
        G: tl.constexpr, GP: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr, BN: tl.constexpr,
        SPLIT: tl.constexpr, IEEE: tl.constexpr, RESIDUAL: tl.constexpr, DIRECT: tl.constexpr,
    ):
        part = tl.program_id(0) % SPLIT
        pid = tl.program_id(0) // SPLIT
        gidx = tl.arange(0, GP)
        counts = tl.load(count_ptr + gidx, mask=gidx < G, other=0)
        tiles = (counts + BT - 1) // BT
        total = tl.sum(tiles, axis=0)
        if pid < total:
            g = tl.sum((tl.cumsum(tiles, axis=0) <= pid).to(tl.int32), axis=0)
            before = gidx < g
            tile = pid - tl.sum(tl.where(before, tiles, 0), axis=0)
            count = tl.sum(tl.where(gidx == g, counts, 0), axis=0)
            rows_in_bucket = tile * BT + tl.arange(0, BT)
            tmask = rows_in_bucket < count
            tok = tl.load(bucket_ptr + g.to(tl.int64) * T + rows_in_bucket, mask=tmask, other=0).to(tl.int64)
            xrow = tok * stride_xt

            root = (2**TOP_LEVELS - 1) + g
            col = tl.arange(0, NP)
            cmask = col < (2**LEVELS - 1)
            grow = (root.to(tl.int64) << _heap_depth(col, LEVELS)) + col

            logits = _tile_logits_af8(x_ptr, xrow, tmask, stride_xh, win_ptr, in_exp, bin_ptr, grow, cmask, H,
                                      BT, NP, BK, IEEE, DIRECT)
            visited, _ = _subtree_walk(logits, col, LEVELS, BT, NP)
            act = tl.where(visited, _gelu(logits), 0.0).to(act_ptr.dtype.element_ty)

            tcol = tl.arange(0, NP_TOP)
            tcmask = tcol < (2**TOP_LEVELS - 1)
            act_top = tl.load(act_ptr + tok[:, None] * NP_TOP + tcol[None, :], mask=tmask[:, None], other=0.0)
            for n0 in range(part * BN, H, SPLIT * BN):
                nn = n0 + tl.arange(0, BN)
                nmask = nn < H
                w_bot = _af8_decode_as(tl.load(wout_ptr + grow[:, None] * H + nn[None, :],
                                               mask=cmask[:, None] & nmask[None, :], other=0), out_exp, act.dtype,
                                       DIRECT)
                w_top = _af8_decode_as(tl.load(wout_ptr + tcol[:, None] * H + nn[None, :],
                                               mask=tcmask[:, None] & nmask[None, :], other=0), out_exp, act.dtype,
                                       DIRECT)
                if IEEE:
                    out = tl.dot(act, w_bot, input_precision="ieee")
                    out = tl.dot(act_top, w_top, out, input_precision="ieee")
                else:
                    out = tl.dot(act, w_bot)
                    out = tl.dot(act_top, w_top, out)
                if RESIDUAL:
                    out += tl.load(res_ptr + tok[:, None] * stride_rt + nn[None, :].to(tl.int64) * stride_rh,
                                   mask=tmask[:, None] & nmask[None, :], other=0.0).to(tl.float32)
                tl.store(y_ptr + tok[:, None] * H + nn[None, :], out.to(y_ptr.dtype.element_ty),
                         mask=tmask[:, None] & nmask[None, :])


def fff_forward_adaptivfloat8(x, in_codes, in_exponent_bias: int, in_bias, out_codes, out_exponent_bias: int,
                              residual=None):
    """Conditional FFF on CUDA (or CPU tensors under TRITON_INTERPRET=1) with AdaptivFloat<8, 3> rows: the grouped
    kernels reading uint8 codes (K=1 tree, 1 <= depth <= GROUPED_MAX_DEPTH). ``x`` (T, H) fp32/bf16/fp16; codes
    (1, N, H) uint8 with their per-tensor exponent biases; ``in_bias`` (1, N). Returns (T, H) in x's dtype (plus
    ``residual`` when given). Equals the grouped kernel on the decoded weights."""
    if x.dim() != 2 or x.dtype not in _SUPPORTED_DTYPES:
        raise ValueError(f"x must be (tokens, hidden) of {_SUPPORTED_DTYPES}, got {x.dtype} {tuple(x.shape)}")
    if in_codes.dtype != torch.uint8 or out_codes.dtype != torch.uint8:
        raise TypeError(f"the codes must be uint8, got {in_codes.dtype} / {out_codes.dtype}")
    if in_codes.dim() != 3 or in_codes.shape != out_codes.shape or in_bias.shape != in_codes.shape[:2]:
        raise ValueError(f"expected in_codes (1, N, H), in_bias (1, N), out_codes (1, N, H); got "
                         f"{tuple(in_codes.shape)}, {tuple(in_bias.shape)}, {tuple(out_codes.shape)}")
    trees, nodes, hidden = in_codes.shape
    depth = int(math.log2(nodes + 1)) - 1
    if trees != 1 or not 1 <= depth <= GROUPED_MAX_DEPTH or 2 ** (depth + 1) - 1 != nodes:
        raise ValueError(f"the 8-bit Triton kernel needs one tree of depth 1..{GROUPED_MAX_DEPTH}, got {trees} "
                         f"tree(s) of {nodes} nodes")
    if x.shape[1] != hidden:
        raise ValueError(f"x has hidden size {x.shape[1]} but the codes have {hidden}")
    for e in (in_exponent_bias, out_exponent_bias):  # decoded values must be normal numbers of x's dtype
        if not -120 <= int(e) <= 100:
            raise ValueError(f"exponent bias {e} is outside the range this kernel decodes exactly")
    if residual is not None and residual.shape != x.shape:
        raise ValueError(f"residual has shape {tuple(residual.shape)} but x has {tuple(x.shape)}")
    y = torch.empty(x.shape[0], hidden, dtype=x.dtype, device=x.device)
    if x.shape[0] == 0 or hidden == 0:
        return y
    in_codes, in_bias, out_codes = in_codes.contiguous(), in_bias.contiguous(), out_codes.contiguous()
    if x.device.type == "cuda" and x.device.index != torch.cuda.current_device():
        with torch.cuda.device(x.device):
            return _forward_grouped_af8(x, in_codes, int(in_exponent_bias), in_bias, out_codes,
                                        int(out_exponent_bias), depth, y, residual)
    return _forward_grouped_af8(x, in_codes, int(in_exponent_bias), in_bias, out_codes, int(out_exponent_bias),
                                depth, y, residual)


def _residual_args(residual, y):
    # without a residual the kernels never read the pointer; y stands in for it
    if residual is None:
        return y, 0, 0
    return residual, residual.stride(0), residual.stride(1)


def _forward_grouped_af8(x, in_codes, in_exp, in_bias, out_codes, out_exp, depth, y, residual):
    # the same tiling and launch as the grouped kernels (_grouped_launches)
    tokens, hidden = x.shape
    top_levels = (depth + 2) // 2
    bottom_levels = depth + 1 - top_levels
    np_top = max(16, triton.next_power_of_2(2**top_levels - 1))
    np_bottom = max(16, triton.next_power_of_2(2**bottom_levels - 1))
    buckets = 2**top_levels
    ieee = x.dtype == torch.float32
    direct = x.dtype == torch.bfloat16 and AF8_DIRECT_BF16_DECODE
    cfg = GROUPED_CONFIG
    block_t, block_k, block_n = (32, 32, 64) if ieee else (cfg["bt"], cfg["bk"], cfg["bn"])
    warps, stages = (4, 2) if ieee else (cfg["warps"], cfg["stages"])
    act = torch.empty(tokens, np_top, dtype=x.dtype, device=x.device)
    bucket = torch.empty(buckets, tokens, dtype=torch.int32, device=x.device)
    counts = torch.zeros(buckets, dtype=torch.int32, device=x.device)
    top_t = block_t if ieee else cfg["top_bt"]
    _top_kernel_af8[(triton.cdiv(tokens, top_t),)](
        x, x.stride(0), x.stride(1), in_codes, in_exp, in_bias, act, bucket, counts, tokens, hidden,
        LEVELS=top_levels, NP=np_top, BT=top_t, BK=block_k, IEEE=ieee, DIRECT=direct, num_warps=warps,
        num_stages=stages,
    )
    split = cfg["split"] if tokens <= cfg["split_max_tokens"] else 1
    _bottom_kernel_af8[((triton.cdiv(tokens, block_t) + buckets) * split,)](
        x, x.stride(0), x.stride(1), in_codes, in_exp, in_bias, out_codes, out_exp, act, bucket, counts, y,
        *_residual_args(residual, y), tokens, hidden,
        TOP_LEVELS=top_levels, LEVELS=bottom_levels, NP_TOP=np_top, NP=np_bottom, G=buckets,
        GP=triton.next_power_of_2(buckets), BT=block_t, BK=block_k, BN=block_n, SPLIT=split, IEEE=ieee,
        RESIDUAL=residual is not None, DIRECT=direct, num_warps=warps, num_stages=stages,
    )
    return y
