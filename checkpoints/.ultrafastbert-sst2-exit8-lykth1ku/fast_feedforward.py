# Copyright 2026 The UltraFastBERT-HF authors. Apache-2.0.
"""Fast feedforward (FFF) layer of UltraFastBERT (Belcak & Wattenhofer, 2023).

K balanced binary trees of depth D, each with N = 2**(D+1) - 1 neurons stored in heap order (children of node n are
2n+1 and 2n+2). Neuron n of tree k has an input row ``in_weight[k, n]``, a bias ``in_bias[k, n]`` and an output row
``out_weight[k, n]``. For every token and tree, D+1 neurons are visited from the root; a neuron contributes
``GELU(z) * out_weight[k, n]`` with ``z = x . in_weight[k, n] + in_bias[k, n]`` and the walk goes right when ``z > 0``.

Three ways to compute the same function live here:
  * ``fff_masked``: the paper's training computation (all node logits, activations masked to the visited path);
  * ``fff_conditional_torch``: the pure-PyTorch conditional walk, batched per level with gathers (reference/fallback);
  * ``fff_conditional``: the single dispatch point that routes to native kernels (CPU extension, Triton) when present.
"""

import math
import threading
import warnings

import torch
from torch import nn

FFF_INFERENCE_MODES = ("conditional", "dense")
FFF_KERNELS = ("auto", "torch", "native")
# dtypes each native kernel computes in; "auto" runs any other dtype (e.g. float16 on the CPU) on the PyTorch walk
NATIVE_KERNEL_DTYPES = {
    "cpu": (torch.float32, torch.bfloat16),
    "cuda": (torch.float32, torch.bfloat16, torch.float16),
}
MAX_FFF_DEPTH = 24  # 2**25 neurons per tree: beyond this the masked training path cannot fit in memory anyway

# Native kernels are flat sibling modules so that they travel with remote code. They are imported in the
# `from .module import name` form on purpose: transformers only finds (and copies) relative imports written that way.
try:  # compiled CPU kernel (built on first use); absent when no C++ toolchain is around
    from .fff_cpu_kernel import fff_forward as cpu_fff_forward
    from .fff_cpu_kernel import is_available as cpu_kernel_available
except ImportError:  # pragma: no cover - depends on the environment
    cpu_fff_forward = cpu_kernel_available = None

try:  # Triton GPU kernel; Triton is optional
    from .fff_triton_kernel import fff_forward as triton_fff_forward
    from .fff_triton_kernel import is_available as triton_kernel_available
except ImportError:  # pragma: no cover - depends on the environment
    triton_fff_forward = triton_kernel_available = None


def _gelu(z: torch.Tensor) -> torch.Tensor:
    # exact (erf) GELU, as nn.GELU() in the original release
    return nn.functional.gelu(z)


def fff_masked(
    x: torch.Tensor, in_weight: torch.Tensor, in_bias: torch.Tensor, out_weight: torch.Tensor
) -> torch.Tensor:
    """Dense masked FFF: every node logit is computed, activations off the visited path are zeroed.

    Differentiable; gradients reach exactly the parameters of visited nodes. ``x`` is (T, H); returns (T, H).
    """
    trees, nodes, hidden = in_weight.shape
    depth = int(math.log2(nodes + 1)) - 1
    logits = torch.matmul(x, in_weight.reshape(trees * nodes, hidden).t()) + in_bias.reshape(-1)
    logits = logits.view(-1, trees, nodes)
    with torch.no_grad():
        path_mask = torch.zeros_like(logits)
        node = torch.zeros(logits.shape[:2] + (1,), dtype=torch.long, device=x.device)
        path_mask.scatter_(2, node, 1.0)
        for _ in range(depth):
            go_right = (logits.gather(2, node) > 0).long()
            node = 2 * node + 1 + go_right
            path_mask.scatter_(2, node, 1.0)
    activations = _gelu(logits) * path_mask
    return torch.matmul(activations.view(-1, trees * nodes), out_weight.reshape(trees * nodes, hidden))


def fff_paths_torch(
    x: torch.Tensor, in_weight: torch.Tensor, in_bias: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Nodes visited and their logits, walking conditionally. Returns ``(nodes, logits)`` of shape (T, K, D+1)."""
    trees, nodes, _ = in_weight.shape
    depth = int(math.log2(nodes + 1)) - 1
    tree_index = torch.arange(trees, device=x.device)
    node = torch.zeros(x.shape[0], trees, dtype=torch.long, device=x.device)
    visited, logits = [], []
    for _ in range(depth + 1):
        z = torch.einsum("th,tkh->tk", x, in_weight[tree_index, node]) + in_bias[tree_index, node]
        visited.append(node)
        logits.append(z)
        node = 2 * node + 1 + (z > 0).long()
    return torch.stack(visited, -1), torch.stack(logits, -1)


def fff_conditional_torch(
    x: torch.Tensor, in_weight: torch.Tensor, in_bias: torch.Tensor, out_weight: torch.Tensor
) -> torch.Tensor:
    """Pure-PyTorch conditional FFF: per level, gather each token's node rows (T, K, H); never a (T, N) tensor."""
    trees, nodes, _ = in_weight.shape
    depth = int(math.log2(nodes + 1)) - 1
    tree_index = torch.arange(trees, device=x.device)
    node = torch.zeros(x.shape[0], trees, dtype=torch.long, device=x.device)
    output = torch.zeros_like(x)
    for _ in range(depth + 1):
        z = torch.einsum("th,tkh->tk", x, in_weight[tree_index, node]) + in_bias[tree_index, node]
        output = output + torch.einsum("tk,tkh->th", _gelu(z), out_weight[tree_index, node])
        node = 2 * node + 1 + (z > 0).long()
    return output


_warned_fallback = set()
_warn_lock = threading.Lock()


def _warn_once(key: str, message: str) -> None:
    with _warn_lock:
        if key in _warned_fallback:
            return
        _warned_fallback.add(key)
    warnings.warn(message, RuntimeWarning, stacklevel=3)


def native_kernel_status(device_type: str) -> tuple[bool, str]:
    """Whether a native conditional kernel can run on ``device_type`` ("cpu" / "cuda"), and why not if it can't."""
    if device_type == "cpu":
        if cpu_kernel_available is None:
            return False, "the CPU kernel module could not be imported"
        return cpu_kernel_available()
    if device_type == "cuda":
        if triton_kernel_available is None:
            return False, "the Triton kernel module could not be imported"
        return triton_kernel_available()
    return False, f"no native FFF kernel exists for device type {device_type!r}"


def fff_conditional(
    x: torch.Tensor,
    in_weight: torch.Tensor,
    in_bias: torch.Tensor,
    out_weight: torch.Tensor,
    kernel: str = "auto",
    residual: torch.Tensor | None = None,
) -> torch.Tensor:
    """The single dispatch point for conditional FFF inference. ``x`` is (T, H); returns (T, H), plus ``residual``
    (T, H) when given (the CUDA kernel adds it while writing its output).

    ``kernel``: "torch" runs the pure-PyTorch walk; "native" requires the compiled kernel for ``x.device`` and raises
    if it is missing or has no version for the weights' dtype; "auto" uses the native kernel when available and
    otherwise (no kernel, or e.g. float16 on the CPU) falls back to the pure-PyTorch walk with a one-time warning
    (never to the dense path).
    """
    # kept lean: at one token the kernel takes a few microseconds, so every Python step here shows
    if kernel == "torch":
        return _plus(fff_conditional_torch(x, in_weight, in_bias, out_weight), residual)
    if kernel != "auto" and kernel != "native":
        raise ValueError(f"fff_kernel must be one of {FFF_KERNELS}, got {kernel!r}")
    wants_grad = torch.is_grad_enabled() and (
        x.requires_grad or in_weight.requires_grad or in_bias.requires_grad or out_weight.requires_grad
    )
    if wants_grad and kernel == "auto":
        # the native kernels are forward-only; the gather walk is differentiable, so eval-mode autograd still works
        return _plus(fff_conditional_torch(x, in_weight, in_bias, out_weight), residual)
    device_type = x.device.type
    native_dtypes = NATIVE_KERNEL_DTYPES.get(device_type)
    if native_dtypes is not None and in_weight.dtype not in native_dtypes:
        if kernel == "native":
            raise TypeError(
                f"fff_kernel='native': the {device_type} kernel supports {native_dtypes}, not {in_weight.dtype} "
                "weights; cast the model, or use fff_kernel='auto' (which runs them on the PyTorch walk) or 'torch'."
            )
        _warn_once(
            f"{device_type}-{in_weight.dtype}",
            f"UltraFastBERT: the native FFF kernel on {device_type} has no {in_weight.dtype} version; "
            "using the pure-PyTorch conditional path (still conditional, but slower).",
        )
        return _plus(fff_conditional_torch(x, in_weight, in_bias, out_weight), residual)
    available, reason = native_kernel_status(device_type)
    if available:
        if wants_grad:
            raise RuntimeError(
                "fff_kernel='native' is forward-only; run under torch.no_grad()/inference_mode, or use fff_kernel='auto'."
            )
        if device_type == "cpu":
            return _plus(cpu_fff_forward(x, in_weight, in_bias, out_weight), residual)
        return triton_fff_forward(x, in_weight, in_bias, out_weight, residual=residual)
    if kernel == "native":
        raise RuntimeError(f"fff_kernel='native' was requested on {device_type}, but {reason}.")
    _warn_once(
        device_type,
        f"UltraFastBERT: no native FFF kernel on {device_type} ({reason}); "
        "using the pure-PyTorch conditional path (still conditional, but slower).",
    )
    return _plus(fff_conditional_torch(x, in_weight, in_bias, out_weight), residual)


def _plus(y: torch.Tensor, residual: torch.Tensor | None) -> torch.Tensor:
    return y if residual is None else residual + y


class FastFeedForward(nn.Module):
    """Fast feedforward layer: ``trees`` binary trees of depth ``depth`` over ``hidden_size`` features, no output bias.

    Training mode computes the paper's masked dense form (all node logits, only the visited path kept). Eval mode
    follows ``inference``: "conditional" visits only ``depth + 1`` nodes per tree through ``fff_conditional``
    (``kernel`` chooses the implementation), "dense" runs the masked form for comparison.
    """

    def __init__(self, hidden_size: int, depth: int, trees: int = 1, inference: str = "conditional", kernel: str = "auto"):
        super().__init__()
        if not isinstance(hidden_size, int) or hidden_size < 1:
            raise ValueError(f"hidden_size must be a positive integer, got {hidden_size!r}")
        if not isinstance(depth, int) or not 0 <= depth <= MAX_FFF_DEPTH:
            raise ValueError(f"depth must be an integer in [0, {MAX_FFF_DEPTH}], got {depth!r}")
        if not isinstance(trees, int) or trees < 1:
            raise ValueError(f"trees must be an integer >= 1, got {trees!r}")
        self.hidden_size = hidden_size
        self.depth = depth
        self.trees = trees
        self.num_nodes = 2 ** (depth + 1) - 1
        self.inference = inference
        self.kernel = kernel
        self._check_modes()
        self.in_weight = nn.Parameter(torch.empty(trees, self.num_nodes, hidden_size))
        self.in_bias = nn.Parameter(torch.empty(trees, self.num_nodes))
        self.out_weight = nn.Parameter(torch.empty(trees, self.num_nodes, hidden_size))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # the original release's init: uniform(+-1/sqrt(fan_in)) for the input side, 1/sqrt(nodes on a path) out
        in_bound = 1.0 / math.sqrt(self.hidden_size)
        out_bound = 1.0 / math.sqrt((self.depth + 1) * self.trees)
        with torch.no_grad():
            self.in_weight.uniform_(-in_bound, in_bound)
            self.in_bias.uniform_(-in_bound, in_bound)
            self.out_weight.uniform_(-out_bound, out_bound)

    def _check_modes(self) -> None:
        if self.inference not in FFF_INFERENCE_MODES:
            raise ValueError(f"fff_inference must be one of {FFF_INFERENCE_MODES}, got {self.inference!r}")
        if self.kernel not in FFF_KERNELS:
            raise ValueError(f"fff_kernel must be one of {FFF_KERNELS}, got {self.kernel!r}")

    def extra_repr(self) -> str:
        return f"hidden_size={self.hidden_size}, depth={self.depth}, trees={self.trees}, nodes_per_tree={self.num_nodes}"

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        """FFF(x), or ``residual + FFF(x)`` when ``residual`` (shaped like ``x``) is given: the GPU kernel adds it
        while writing its output, which saves the block's separate skip-connection pass."""
        if x.shape[-1] != self.hidden_size:
            raise ValueError(f"FastFeedForward expects inputs with last dimension {self.hidden_size}, got {tuple(x.shape)}")
        if residual is not None and residual.shape != x.shape:
            raise ValueError(f"residual has shape {tuple(residual.shape)} but the input has {tuple(x.shape)}")
        if self.inference not in FFF_INFERENCE_MODES:
            self._check_modes()  # raises, naming the bad value
        if x.dim() == 2:  # the common (tokens, hidden) case skips the reshape round trip
            return self._forward_2d(x, residual)
        residual_2d = None if residual is None else residual.reshape(-1, self.hidden_size)
        return self._forward_2d(x.reshape(-1, self.hidden_size), residual_2d).view(x.shape)

    def _forward_2d(self, x: torch.Tensor, residual: torch.Tensor | None) -> torch.Tensor:
        if self.training or self.inference == "dense":
            return _plus(fff_masked(x, self.in_weight, self.in_bias, self.out_weight), residual)
        return fff_conditional(x, self.in_weight, self.in_bias, self.out_weight, self.kernel, residual)

    @torch.no_grad()
    def paths(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Visited nodes and their logits for each token, (..., K, D+1) each (walked conditionally)."""
        nodes, logits = fff_paths_torch(x.reshape(-1, self.hidden_size), self.in_weight, self.in_bias)
        return nodes.view(*x.shape[:-1], self.trees, self.depth + 1), logits.view(*x.shape[:-1], self.trees, self.depth + 1)
