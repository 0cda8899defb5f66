# Copyright 2026 The UltraFastBERT-HF authors. Apache-2.0.
"""AdaptivFloat<n, e> weights (Tambe et al., DAC 2020; EdgeBERT, MICRO 2021) and the modules that hold them.

An AdaptivFloat<n, e> code is ``sign | exponent field (e bits) | mantissa (m = n - 1 - e bits)``. Per tensor, an
integer ``exponent_bias`` (the exponent of the smallest binade) is chosen from the largest magnitude so that it lands in
the top binade::

    exp_max = floor(log2(max |w|)),   exponent_bias = exp_max - (2**e - 1)
    value(code) = (-1)**sign * 2**(exponent_bias + exponent_field) * (1 + mantissa / 2**m)

There are no denormals. Edge choices (public implementations differ here; these are ours, tested on every code):
  * the all-zero magnitude (exponent field 0, mantissa 0) is zero, for both signs: code 0 is +0 and code 2**(n-1) ("-0")
    also decodes to +0 but is never produced; the smallest non-zero magnitude is ``2**exponent_bias * (1 + 2**-m)``;
  * rounding is to the nearest representable magnitude over the whole set {0} U {non-zero magnitudes}; a tie goes to the
    code with the even last bit (IEEE's ties-to-even: the even mantissa inside a binade, up across a binade boundary,
    to zero between zero and the smallest magnitude);
  * magnitudes above the largest representable one, ``2**exp_max * (2 - 2**-m)``, clip to it (when max |w| sits between
    that and 2**(exp_max + 1));
  * an all-zero tensor gets ``exponent_bias = -(2**e - 1)`` (as if max |w| were 1) and all-zero codes;
  * NaN or infinity in a tensor is a ValueError: there is no code for it.

The file also has plain symmetric per-tensor int8 (``scale = max|w| / 127``, round half to even, [-127, 127]) for the
accuracy comparison, and the inference modules that store uint8 codes (``AdaptivFloatLinear``,
``AdaptivFloatEmbedding``, ``AdaptivFloatFastFeedForward``) with ``quantize_model_`` / ``prepare_quantized_modules_``
to convert a model or to build the empty structure a quantized checkpoint loads into.
"""

import math

import torch
from torch import nn

from .fast_feedforward import FFF_INFERENCE_MODES, FFF_KERNELS, fff_conditional, fff_masked, fff_paths_torch

try:  # the compiled CPU kernel with an AdaptivFloat-8 variant; absent without a C++ toolchain
    from .fff_cpu_kernel import fff_forward_adaptivfloat8 as cpu_fff_forward_adaptivfloat8
    from .fff_cpu_kernel import is_available as cpu_kernel_available
    from .fff_cpu_kernel import quantize_activations_u8 as cpu_quantize_activations_u8
except ImportError:  # pragma: no cover - depends on the environment
    cpu_fff_forward_adaptivfloat8 = cpu_kernel_available = cpu_quantize_activations_u8 = None

try:  # the Triton kernels with an AdaptivFloat-8 variant (CUDA); Triton is optional
    from .fff_triton_kernel import GROUPED_MAX_DEPTH as TRITON_AF8_MAX_DEPTH
    from .fff_triton_kernel import fff_forward_adaptivfloat8 as triton_fff_forward_adaptivfloat8
    from .fff_triton_kernel import is_available as triton_kernel_available
except ImportError:  # pragma: no cover - depends on the environment
    triton_fff_forward_adaptivfloat8 = triton_kernel_available = None
    TRITON_AF8_MAX_DEPTH = -1

WEIGHT_QUANTIZATION_FORMATS = ("adaptivfloat",)
PROJECTION_DTYPES = ("float32", "bfloat16", "int8")


def _check_format(bits: int, exponent_bits: int) -> int:
    if isinstance(bits, bool) or not isinstance(bits, int) or not 3 <= bits <= 8:
        raise ValueError(f"AdaptivFloat bits must be an integer in [3, 8] (codes are stored as uint8), got {bits!r}")
    if isinstance(exponent_bits, bool) or not isinstance(exponent_bits, int) or not 1 <= exponent_bits <= bits - 2:
        raise ValueError(
            f"AdaptivFloat exponent_bits must be an integer in [1, bits - 2 = {bits - 2}] (at least one mantissa "
            f"bit), got {exponent_bits!r}"
        )
    return bits - 1 - exponent_bits  # mantissa bits


def adaptivfloat_exponent_bias(tensor: torch.Tensor, bits: int = 8, exponent_bits: int = 3) -> int:
    """The per-tensor exponent bias (exponent of the smallest binade) that puts max |w| in the top binade."""
    _check_format(bits, exponent_bits)
    if not tensor.is_floating_point():
        raise TypeError(f"AdaptivFloat quantizes floating-point tensors, got {tensor.dtype}")
    if tensor.numel() and not bool(torch.isfinite(tensor).all()):
        raise ValueError("cannot quantize a tensor holding NaN or infinity to AdaptivFloat (no code represents them)")
    largest = float(tensor.detach().abs().max()) if tensor.numel() else 0.0
    if largest == 0.0:
        exp_max = 0  # all zeros: any bias decodes them; pick the one of max |w| = 1
    else:
        exp_max = math.frexp(largest)[1] - 1  # exact floor(log2): largest = f * 2**k with f in [0.5, 1)
    return exp_max - (2**exponent_bits - 1)


def adaptivfloat_magnitudes(exponent_bias: int, bits: int = 8, exponent_bits: int = 3) -> torch.Tensor:
    """The 2**(bits-1) magnitudes of the non-negative codes, in code order (increasing), float64."""
    mantissa_bits = _check_format(bits, exponent_bits)
    codes = torch.arange(2 ** (bits - 1), dtype=torch.int64)
    exponent = (codes >> mantissa_bits).double() + exponent_bias
    mantissa = (codes & (2**mantissa_bits - 1)).double()
    magnitudes = torch.ldexp(1.0 + mantissa / 2**mantissa_bits, exponent)
    magnitudes[0] = 0.0  # the smallest code stands for zero (no denormals)
    return magnitudes


def adaptivfloat_decode_table(exponent_bias: int, bits: int = 8, exponent_bits: int = 3,
                              dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The 2**bits values of all codes (index = code), for one exponent bias."""
    magnitudes = adaptivfloat_magnitudes(exponent_bias, bits, exponent_bits)
    return torch.cat([magnitudes, -magnitudes]).to(dtype) + 0.0  # "+ 0.0" turns the "-0" entry into +0


def adaptivfloat_quantize(tensor: torch.Tensor, bits: int = 8, exponent_bits: int = 3,
                          exponent_bias: int | None = None) -> tuple[torch.Tensor, int]:
    """Round ``tensor`` to AdaptivFloat<bits, exponent_bits>. Returns ``(codes, exponent_bias)``, codes uint8."""
    bias = adaptivfloat_exponent_bias(tensor, bits, exponent_bits)
    if exponent_bias is not None:
        bias = int(exponent_bias)
    magnitudes = adaptivfloat_magnitudes(bias, bits, exponent_bits).to(tensor.device)
    midpoints = (magnitudes[1:] + magnitudes[:-1]) / 2  # exact in float64 (one more bit than the magnitudes need)
    values = tensor.detach().double()
    absolute = values.abs()
    # number of midpoints strictly below |w| = nearest code, rounding ties down; then ties to the even code
    codes = torch.bucketize(absolute, midpoints, right=False)
    tie = (codes < len(midpoints)) & (absolute == midpoints[codes.clamp(max=len(midpoints) - 1)]) & (codes % 2 == 1)
    codes = codes + tie.long()  # above the last midpoint, bucketize already gives the largest code: clipping
    sign = (values < 0) & (codes > 0)  # zero is always code 0
    codes = codes + sign.long() * 2 ** (bits - 1)
    return codes.to(torch.uint8), bias


def adaptivfloat_dequantize(codes: torch.Tensor, exponent_bias: int, bits: int = 8, exponent_bits: int = 3,
                            dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Values of ``codes`` (uint8) under ``exponent_bias``, as ``dtype``."""
    if codes.dtype != torch.uint8:
        raise TypeError(f"AdaptivFloat codes must be uint8, got {codes.dtype}")
    table = adaptivfloat_decode_table(int(exponent_bias), bits, exponent_bits, dtype).to(codes.device)
    return table[codes.long()]


def int8_symmetric_quantize(tensor: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Plain symmetric per-tensor int8: ``q = round(w / s)`` in [-127, 127], ``s = max|w| / 127``. Returns (q, s)."""
    if not tensor.is_floating_point():
        raise TypeError(f"int8 quantization takes floating-point tensors, got {tensor.dtype}")
    if tensor.numel() and not bool(torch.isfinite(tensor).all()):
        raise ValueError("cannot quantize a tensor holding NaN or infinity to int8")
    largest = float(tensor.detach().abs().max()) if tensor.numel() else 0.0
    scale = largest / 127 if largest > 0 else 1.0
    codes = torch.round(tensor.detach().double() / scale).clamp(-127, 127).to(torch.int8)
    return codes, scale


def int8_symmetric_dequantize(codes: torch.Tensor, scale: float, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return (codes.double() * scale).to(dtype)


# ------------------------------------------------------------------------------------------------------------------
# Modules holding AdaptivFloat codes (inference only: the codes are buffers, only the small fp32 biases are parameters)
# ------------------------------------------------------------------------------------------------------------------


class _AdaptivFloatWeight:
    """Helpers shared by the modules: a (codes, exponent bias) pair registered as buffers under one prefix, and a
    decoded copy cached per dtype/device that is dropped when the codes change (in place, by loading, or .to())."""

    def _register_codes(self, name: str, shape: tuple, bits: int, exponent_bits: int) -> None:
        self.register_buffer(f"{name}_codes", torch.zeros(shape, dtype=torch.uint8))
        self.register_buffer(f"{name}_exponent_bias", torch.zeros((), dtype=torch.int32))
        self._decoded = {}

    def _set_codes(self, name: str, weight: torch.Tensor) -> None:
        codes, bias = adaptivfloat_quantize(weight, self.bits, self.exponent_bits)
        getattr(self, f"{name}_codes").copy_(codes)
        getattr(self, f"{name}_exponent_bias").fill_(bias)

    def decoded(self, name: str, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        codes = getattr(self, f"{name}_codes")
        exponent_bias = getattr(self, f"{name}_exponent_bias")
        key = (name, dtype, codes.device, codes.data_ptr(), codes._version, exponent_bias._version)
        cached = self._decoded.get(name)
        if cached is None or cached[0] != key:
            table = adaptivfloat_decode_table(int(exponent_bias), self.bits, self.exponent_bits, dtype)
            cached = (key, table.to(codes.device)[codes.long()])
            self._decoded[name] = cached
        return cached[1]


class AdaptivFloatLinear(_AdaptivFloatWeight, nn.Module):
    """``nn.Linear`` whose weight is stored as AdaptivFloat codes. The product runs on the weight decoded once (exactly:
    an AdaptivFloat-8 value with up to 4 mantissa bits is a bfloat16) in ``projection_dtype``: "bfloat16" casts the
    activations to bf16 for the matmul (fp32 accumulation; AMX/AVX512-BF16 on recent CPUs), "float32" keeps them,
    "int8" (CPU) rounds the decoded weight once more to per-channel int8 and runs a dynamic int8 product
    (activations quantized per call, per tensor, as PyTorch's dynamic int8 linear does; oneDNN AMX/VNNI kernels):
    fastest here, but no longer exact AdaptivFloat. With the compiled CPU kernel's activation quantizer it calls
    oneDNN's int8 matmul directly, reading bf16 or fp32 activations and writing the requested dtype (optionally adding
    a residual); else PyTorch's ``quantized.linear_dynamic`` (fp32 in and out)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, bits: int = 8, exponent_bits: int = 3,
                 projection_dtype: str = "bfloat16"):
        super().__init__()
        _check_format(bits, exponent_bits)
        self.in_features, self.out_features = in_features, out_features
        self.bits, self.exponent_bits = bits, exponent_bits
        self.projection_dtype = projection_dtype
        self.output_dtype = None  # None: the input's dtype
        self._register_codes("weight", (out_features, in_features), bits, exponent_bits)
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    @classmethod
    def from_linear(cls, linear: nn.Linear, bits: int = 8, exponent_bits: int = 3,
                    projection_dtype: str = "bfloat16") -> "AdaptivFloatLinear":
        module = cls(linear.in_features, linear.out_features, linear.bias is not None, bits, exponent_bits,
                     projection_dtype)
        module.to(linear.weight.device)
        with torch.no_grad():
            module._set_codes("weight", linear.weight)
            if linear.bias is not None:
                module.bias.copy_(linear.bias)
        return module

    def _int8_packed(self):
        """The decoded weight rounded to per-output-channel int8 and prepacked for PyTorch's dynamic int8 linear
        (oneDNN: AMX/VNNI int8), cached like the decoded weights; None where that path is unavailable."""
        codes = self.weight_codes
        key = ("int8", codes.data_ptr(), codes._version, self.weight_exponent_bias._version)
        cached = self._decoded.get("int8")
        if cached is None or cached[0] != key:
            cached = (key, _prepack_int8(self.decoded("weight", torch.float32)))
            self._decoded["int8"] = cached
        return cached[1]

    def _int8_onednn(self):
        """The same per-channel int8 weight prepacked for oneDNN's int8 matmul (``onednn.qlinear_pointwise``), with its
        scales and zero points; cached like the decoded weights; None where that op or the compiled activation
        quantizer is unavailable."""
        codes = self.weight_codes
        key = ("int8_onednn", codes.data_ptr(), codes._version, self.weight_exponent_bias._version)
        cached = self._decoded.get("int8_onednn")
        if cached is None or cached[0] != key:
            cached = (key, _prepack_int8_onednn(self.decoded("weight", torch.float32)))
            self._decoded["int8_onednn"] = cached
        return cached[1]

    def forward(self, x: torch.Tensor, output_dtype: torch.dtype | None = None,
                residual: torch.Tensor | None = None) -> torch.Tensor:
        """``output_dtype``: the dtype to return (else the module's ``output_dtype``, else the input's). The attention
        passes its residual stream's dtype for the output projection of a bf16 attention: the int8 product is fp32,
        so it then reaches the fp32 residual add without a round trip through bf16. With ``residual`` (the output's
        shape) it returns ``residual + linear(x)``; the int8 product adds it while writing (oneDNN's add post-op)."""
        if residual is not None and residual.shape != (*x.shape[:-1], self.out_features):
            raise ValueError(f"residual has shape {tuple(residual.shape)}, the output {(*x.shape[:-1], self.out_features)}")
        projection_dtype = self.projection_dtype
        y = None
        if projection_dtype == "int8" and x.is_cpu and not (torch.is_grad_enabled() and x.requires_grad):
            target = output_dtype or self.output_dtype or x.dtype
            fused = self._int8_onednn() if x.dtype in _FLOAT_DTYPES else None
            if fused is not None:
                # the activations quantized as linear_dynamic does (read as bf16 or fp32, no cast), the product written
                # straight in the dtype the caller wants (bf16 q/k/v: no fp32 copy to cast)
                qweight, scales, zero_points = fused
                codes, scale, zero_point = cpu_quantize_activations_u8(x.reshape(-1, self.in_features))
                out = target if self.bias is None and target in _FLOAT_DTYPES else torch.float32
                if residual is not None and out == torch.float32 and target == residual.dtype == torch.float32:
                    y = torch.ops.onednn.qlinear_pointwise.binary_tensor(
                        codes, scale, zero_point, qweight, scales, zero_points,
                        residual.reshape(-1, self.out_features), None, 1.0, 0, out, 1.0, 0, "add", 1.0, "none", [], "",
                    )
                    residual = None  # added
                else:
                    y = torch.ops.onednn.qlinear_pointwise.tensor(codes, scale, zero_point, qweight, scales,
                                                                  zero_points, None, 1.0, 0, out, "none", [], "")
                y = y.view(*x.shape[:-1], self.out_features)
            else:
                packed = self._int8_packed()
                if packed is not None:
                    y = torch.ops.quantized.linear_dynamic(x.reshape(-1, self.in_features).float(), packed, False)
                    y = y.view(*x.shape[:-1], self.out_features)
        if y is None:
            if projection_dtype not in PROJECTION_DTYPES:
                raise ValueError(f"projection_dtype must be one of {PROJECTION_DTYPES}, got {projection_dtype!r}")
            if projection_dtype != "float32" and x.dtype in (torch.float32, torch.bfloat16):
                y = nn.functional.linear(x.to(torch.bfloat16), self.decoded("weight", torch.bfloat16))
            else:
                y = nn.functional.linear(x, self.decoded("weight", x.dtype))
        if self.bias is not None:
            y = y + self.bias.to(y.dtype)
        # the attention's q/k/v may stay bf16 (attention in bf16); everything else returns in the input's dtype
        y = y.to(output_dtype or self.output_dtype or x.dtype)
        return y if residual is None else residual + y

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"weight=AdaptivFloat<{self.bits},{self.exponent_bits}>, projection_dtype={self.projection_dtype}")


_FLOAT_DTYPES = (torch.float32, torch.bfloat16)


def _int8_per_channel(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-output-channel symmetric int8 of ``weight``: (quantized tensor, float64 scales)."""
    scales = (weight.abs().amax(dim=1).clamp(min=1e-12) / 127).double()
    return torch.quantize_per_channel(weight, scales, torch.zeros_like(scales, dtype=torch.long), 0, torch.qint8), scales


def _prepack_int8_onednn(weight: torch.Tensor):
    """(oneDNN-prepacked int8 weight, fp32 scales, zero points) of the same per-channel int8 as _prepack_int8, for
    ``torch.ops.onednn.qlinear_pointwise``; None where that op or the compiled activation quantizer is missing."""
    import warnings

    if cpu_quantize_activations_u8 is None or not weight.is_cpu:
        return None
    try:
        if not (torch.backends.mkldnn.is_available() and cpu_kernel_available()[0]):
            return None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # quantized tensor creation warns that it is deprecated
            qweight, scales = _int8_per_channel(weight)
        packed = torch.ops.onednn.qlinear_prepack(qweight.int_repr(), None)
        scales, zero_points = scales.float(), torch.zeros(weight.shape[0], dtype=torch.long)
        # one tiny product: the op and the quantizer both run here (an older library may lack the quantizer)
        codes, scale, zero_point = cpu_quantize_activations_u8(torch.zeros(1, weight.shape[1]))
        torch.ops.onednn.qlinear_pointwise.tensor(codes, scale, zero_point, packed, scales, zero_points, None, 1.0, 0,
                                                  torch.float32, "none", [], "")
        return packed, scales, zero_points
    except (RuntimeError, AttributeError, NotImplementedError):
        return None


def _prepack_int8(weight: torch.Tensor):
    """Per-output-channel symmetric int8 of ``weight``, prepacked by oneDNN (else the default engine); None if the
    quantized CPU ops are missing from this torch build."""
    import warnings

    try:
        engines = torch.backends.quantized.supported_engines
        previous = torch.backends.quantized.engine
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # quantized tensor creation warns that it is deprecated
            qweight, _ = _int8_per_channel(weight)
            try:
                if "onednn" in engines:
                    torch.backends.quantized.engine = "onednn"  # the engine is chosen at prepack time
                return torch.ops.quantized.linear_prepack(qweight, None)
            finally:
                torch.backends.quantized.engine = previous
    except (RuntimeError, AttributeError):
        return None


class AdaptivFloatEmbedding(_AdaptivFloatWeight, nn.Module):
    """``nn.Embedding`` stored as AdaptivFloat codes: looks up the uint8 rows, then decodes only those."""

    def __init__(self, num_embeddings: int, embedding_dim: int, bits: int = 8, exponent_bits: int = 3):
        super().__init__()
        _check_format(bits, exponent_bits)
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.bits, self.exponent_bits = bits, exponent_bits
        self._register_codes("weight", (num_embeddings, embedding_dim), bits, exponent_bits)

    @classmethod
    def from_embedding(cls, embedding: nn.Embedding, bits: int = 8, exponent_bits: int = 3) -> "AdaptivFloatEmbedding":
        module = cls(embedding.num_embeddings, embedding.embedding_dim, bits, exponent_bits).to(embedding.weight.device)
        with torch.no_grad():
            module._set_codes("weight", embedding.weight)
        return module

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        rows = nn.functional.embedding(input_ids, self.weight_codes)
        return self._decode_table(rows.device)[rows.long()]

    def _decode_table(self, device: torch.device) -> torch.Tensor:
        """The 2**bits values of the codes under the current exponent bias, cached until the bias changes."""
        exponent_bias = self.weight_exponent_bias
        key = (int(exponent_bias), self.bits, self.exponent_bits, device)
        cached = self._decoded.get("table")
        if cached is None or cached[0] != key:
            cached = (key, adaptivfloat_decode_table(key[0], self.bits, self.exponent_bits).to(device))
            self._decoded["table"] = cached
        return cached[1]

    def extra_repr(self) -> str:
        return (f"{self.num_embeddings}, {self.embedding_dim}, "
                f"weight=AdaptivFloat<{self.bits},{self.exponent_bits}>")


class AdaptivFloatFastFeedForward(_AdaptivFloatWeight, nn.Module):
    """A ``FastFeedForward`` whose input and output rows are AdaptivFloat codes (one exponent bias per tensor); the
    node biases stay fp32. Eval-mode conditional inference runs kernels that read the 8-bit rows and decode them in
    registers: the compiled CPU kernel, and on CUDA the grouped Triton kernel (one tree, depth <= 11); elsewhere
    (other formats or shapes, "dense", training) it runs on decoded weights."""

    def __init__(self, hidden_size: int, depth: int, trees: int = 1, bits: int = 8, exponent_bits: int = 3,
                 inference: str = "conditional", kernel: str = "auto"):
        super().__init__()
        _check_format(bits, exponent_bits)
        self.hidden_size, self.depth, self.trees = hidden_size, depth, trees
        self.num_nodes = 2 ** (depth + 1) - 1
        self.bits, self.exponent_bits = bits, exponent_bits
        self.inference, self.kernel = inference, kernel
        self._register_codes("in_weight", (trees, self.num_nodes, hidden_size), bits, exponent_bits)
        self._register_codes("out_weight", (trees, self.num_nodes, hidden_size), bits, exponent_bits)
        self.in_bias = nn.Parameter(torch.zeros(trees, self.num_nodes))

    @classmethod
    def from_fff(cls, fff: nn.Module, bits: int = 8, exponent_bits: int = 3) -> "AdaptivFloatFastFeedForward":
        module = cls(fff.hidden_size, fff.depth, fff.trees, bits, exponent_bits, fff.inference, fff.kernel)
        module.to(fff.in_weight.device)
        with torch.no_grad():
            module._set_codes("in_weight", fff.in_weight)
            module._set_codes("out_weight", fff.out_weight)
            module.in_bias.copy_(fff.in_bias)
        return module

    def extra_repr(self) -> str:
        return (f"hidden_size={self.hidden_size}, depth={self.depth}, trees={self.trees}, "
                f"nodes_per_tree={self.num_nodes}, weights=AdaptivFloat<{self.bits},{self.exponent_bits}>")

    def _uses_cpu_kernel(self, x: torch.Tensor) -> bool:
        if self.kernel == "torch" or not x.is_cpu or (self.bits, self.exponent_bits) != (8, 3):
            return False
        if cpu_fff_forward_adaptivfloat8 is None:
            return False
        if torch.is_grad_enabled() and (x.requires_grad or self.in_bias.requires_grad):
            return False  # the kernel is forward-only; the decoded-weight path below is differentiable in x
        return cpu_kernel_available()[0]

    def _uses_triton_kernel(self, x: torch.Tensor) -> bool:
        if self.kernel == "torch" or not x.is_cuda or (self.bits, self.exponent_bits) != (8, 3):
            return False
        if self.trees != 1 or not 1 <= self.depth <= TRITON_AF8_MAX_DEPTH or triton_fff_forward_adaptivfloat8 is None:
            return False
        if torch.is_grad_enabled() and (x.requires_grad or self.in_bias.requires_grad):
            return False
        return triton_kernel_available()[0]

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        if x.shape[-1] != self.hidden_size:
            raise ValueError(f"FastFeedForward expects inputs with last dimension {self.hidden_size}, got {tuple(x.shape)}")
        if residual is not None and residual.shape != x.shape:
            raise ValueError(f"residual has shape {tuple(residual.shape)} but the input has {tuple(x.shape)}")
        if self.inference not in FFF_INFERENCE_MODES or self.kernel not in FFF_KERNELS:
            raise ValueError(f"fff_inference must be one of {FFF_INFERENCE_MODES} and fff_kernel one of "
                             f"{FFF_KERNELS}, got {self.inference!r} / {self.kernel!r}")
        x2d = x.reshape(-1, self.hidden_size)
        residual_2d = None if residual is None else residual.reshape(-1, self.hidden_size)
        if self.training or self.inference == "dense":
            y = fff_masked(x2d, self.decoded("in_weight", x.dtype), self.in_bias.to(x.dtype),
                           self.decoded("out_weight", x.dtype))
            y = y if residual_2d is None else residual_2d + y
        elif self._uses_cpu_kernel(x2d):
            # the kernel adds a skip connection of its own dtype while writing its output (fp32: bit for bit
            # kernel + add); one of another dtype is added here
            fused = residual_2d is not None and residual_2d.dtype == x2d.dtype
            y = cpu_fff_forward_adaptivfloat8(
                x2d, self.in_weight_codes, int(self.in_weight_exponent_bias), self.in_bias,
                self.out_weight_codes, int(self.out_weight_exponent_bias), residual=residual_2d if fused else None,
            )
            y = y if residual_2d is None or fused else residual_2d + y
        elif self._uses_triton_kernel(x2d):
            y = triton_fff_forward_adaptivfloat8(
                x2d, self.in_weight_codes, int(self.in_weight_exponent_bias), self.in_bias.to(x.dtype),
                self.out_weight_codes, int(self.out_weight_exponent_bias), residual=residual_2d,
            )
        else:
            if self.kernel == "native" and x.is_cpu:
                raise RuntimeError("fff_kernel='native' was requested, but the AdaptivFloat-8 CPU kernel cannot run "
                                   f"here (format <{self.bits},{self.exponent_bits}>, or the kernel is unavailable)")
            y = fff_conditional(x2d, self.decoded("in_weight", x.dtype), self.in_bias.to(x.dtype),
                                self.decoded("out_weight", x.dtype), self.kernel, residual_2d)
        return y.view(x.shape)

    @torch.no_grad()
    def paths(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        nodes, logits = fff_paths_torch(x.reshape(-1, self.hidden_size), self.decoded("in_weight", x.dtype),
                                        self.in_bias.to(x.dtype))
        shape = (*x.shape[:-1], self.trees, self.depth + 1)
        return nodes.view(shape), logits.view(shape)


def check_weight_quantization(spec) -> dict:
    """Validate a ``config.weight_quantization`` entry; returns it with defaults filled in."""
    if not isinstance(spec, dict):
        raise TypeError(f"weight_quantization must be a dict such as {{'format': 'adaptivfloat', 'bits': 8, "
                        f"'exponent_bits': 3}}, got {type(spec).__name__}")
    unknown = set(spec) - {"format", "bits", "exponent_bits", "projection_dtype"}
    if unknown:
        raise ValueError(f"weight_quantization has unknown keys {sorted(unknown)}")
    if spec.get("format") not in WEIGHT_QUANTIZATION_FORMATS:
        raise ValueError(f"weight_quantization['format'] must be one of {WEIGHT_QUANTIZATION_FORMATS}, "
                         f"got {spec.get('format')!r}")
    full = {"format": "adaptivfloat", "bits": 8, "exponent_bits": 3, "projection_dtype": "bfloat16", **spec}
    _check_format(full["bits"], full["exponent_bits"])
    if full["projection_dtype"] not in PROJECTION_DTYPES:
        raise ValueError(f"weight_quantization['projection_dtype'] must be one of {PROJECTION_DTYPES}, "
                         f"got {full['projection_dtype']!r}")
    return full


def _swap_modules_(model: nn.Module, spec: dict, convert: bool) -> nn.Module:
    """Replace every nn.Linear, nn.Embedding and FastFeedForward under ``model`` by its AdaptivFloat module: filled
    with the rounded weights (``convert``) or empty, to load a quantized checkpoint into."""
    from .fast_feedforward import FastFeedForward

    bits, exponent_bits, projection_dtype = spec["bits"], spec["exponent_bits"], spec["projection_dtype"]
    tied = getattr(model, "_tied_weights_keys", None) or {}
    if tied and getattr(model.config, "tie_word_embeddings", False):
        raise ValueError(f"{type(model).__name__} ties {sorted(tied)} to the word embeddings; AdaptivFloat "
                         "checkpoints are for models without a tied output layer (use a task head or the bare model)")
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, FastFeedForward):
                new = (AdaptivFloatFastFeedForward.from_fff(child, bits, exponent_bits) if convert else
                       AdaptivFloatFastFeedForward(child.hidden_size, child.depth, child.trees, bits, exponent_bits,
                                                   child.inference, child.kernel))
            elif isinstance(child, nn.Linear):
                new = (AdaptivFloatLinear.from_linear(child, bits, exponent_bits, projection_dtype) if convert else
                       AdaptivFloatLinear(child.in_features, child.out_features, child.bias is not None, bits,
                                          exponent_bits, projection_dtype))
            elif isinstance(child, nn.Embedding):
                new = (AdaptivFloatEmbedding.from_embedding(child, bits, exponent_bits) if convert else
                       AdaptivFloatEmbedding(child.num_embeddings, child.embedding_dim, bits, exponent_bits))
            else:
                continue
            if child_name == "query_key_value" and projection_dtype != "float32":
                # q/k/v leave the projection in bf16, so that attention runs in bf16 too (AMX on recent CPUs)
                new.output_dtype = torch.bfloat16
            setattr(module, child_name, new.train(child.training))
    return model


def prepare_quantized_modules_(model: nn.Module, spec: dict) -> nn.Module:
    """Give ``model`` the empty AdaptivFloat modules its config's ``weight_quantization`` describes (for loading)."""
    return _swap_modules_(model, check_weight_quantization(spec), convert=False)


@torch.no_grad()
def quantize_model_(model: nn.Module, bits: int = 8, exponent_bits: int = 3,
                    projection_dtype: str = "bfloat16") -> nn.Module:
    """Round every weight matrix of ``model`` (projections, classifier, embeddings, FFF rows) to AdaptivFloat, in place,
    and record it in ``model.config.weight_quantization``. LayerNorms and biases stay fp32."""
    spec = check_weight_quantization(
        {"format": "adaptivfloat", "bits": bits, "exponent_bits": exponent_bits, "projection_dtype": projection_dtype}
    )
    if getattr(model.config, "weight_quantization", None):
        raise ValueError("the model is already quantized")
    _swap_modules_(model, spec, convert=True)
    model.config.weight_quantization = spec
    return model


def set_projection_dtype_(model: nn.Module, projection_dtype: str) -> nn.Module:
    """Switch how every AdaptivFloatLinear of ``model`` computes (see AdaptivFloatLinear), recording it in the config."""
    if projection_dtype not in PROJECTION_DTYPES:
        raise ValueError(f"projection_dtype must be one of {PROJECTION_DTYPES}, got {projection_dtype!r}")
    for name, module in model.named_modules():
        if isinstance(module, AdaptivFloatLinear):
            module.projection_dtype = projection_dtype
            if name.endswith("query_key_value"):
                module.output_dtype = None if projection_dtype == "float32" else torch.bfloat16
    if getattr(model.config, "weight_quantization", None):
        model.config.weight_quantization = {**model.config.weight_quantization, "projection_dtype": projection_dtype}
    return model
