"""AdaptivFloat<n, e>: every code against a plain-Python reference, the bias at the edges, the quantized modules and
checkpoints (== the dequantized-weights model), the 8-bit CPU FFF kernel (== the fp32 kernel on decoded weights)."""

import json
import math
import warnings

import pytest
import torch
from conftest import run_in_clean_env, tiny_config

from modeling_ultrafastbert import UltraFastBertForMaskedLM, UltraFastBertForSequenceClassification
from modeling_ultrafastbert.adaptivfloat import (
    AdaptivFloatFastFeedForward,
    AdaptivFloatLinear,
    adaptivfloat_decode_table,
    adaptivfloat_dequantize,
    adaptivfloat_exponent_bias,
    adaptivfloat_quantize,
    int8_symmetric_dequantize,
    int8_symmetric_quantize,
    quantize_model_,
)

warnings.filterwarnings("ignore", message="UltraFastBERT: no native FFF kernel")


def reference_value(code: int, exponent_bias: int, bits: int, exponent_bits: int) -> float:
    """Straight from the definition: sign | exponent field | mantissa, no denormals, magnitude 0 is zero."""
    mantissa_bits = bits - 1 - exponent_bits
    sign = -1.0 if code >> (bits - 1) else 1.0
    field = (code >> mantissa_bits) & (2**exponent_bits - 1)
    mantissa = code & (2**mantissa_bits - 1)
    if field == 0 and mantissa == 0:
        return 0.0
    return sign * 2.0 ** (exponent_bias + field) * (1 + mantissa / 2**mantissa_bits)


def reference_quantize(value: float, exponent_bias: int, bits: int, exponent_bits: int) -> int:
    """Nearest code by brute force over all non-negative codes; ties to the even code; clip to the largest."""
    half = 2 ** (bits - 1)
    best = min(range(half), key=lambda c: (abs(abs(value) - reference_value(c, exponent_bias, bits, exponent_bits)),
                                           c % 2))
    return best + half if value < 0 and best != 0 else best


@pytest.mark.parametrize("bits,exponent_bits", [(8, 3), (8, 4), (6, 2)])
@pytest.mark.parametrize("exponent_bias", [-12, -7, 0, 3])
def test_every_code_decodes_as_the_definition_and_round_trips(bits, exponent_bits, exponent_bias):
    table = adaptivfloat_decode_table(exponent_bias, bits, exponent_bits, torch.float64)
    assert table.shape == (2**bits,)
    for code in range(2**bits):
        assert table[code].item() == reference_value(code, exponent_bias, bits, exponent_bits), code
    codes = torch.arange(2**bits, dtype=torch.uint8)
    values = adaptivfloat_dequantize(codes, exponent_bias, bits, exponent_bits, torch.float64)
    back, bias = adaptivfloat_quantize(values, bits, exponent_bits, exponent_bias=exponent_bias)
    expected = codes.clone()
    expected[2 ** (bits - 1)] = 0  # "-0" decodes to +0, which encodes as code 0
    assert torch.equal(back, expected)


@pytest.mark.parametrize("bits,exponent_bits", [(8, 3), (6, 2)])
def test_rounding_matches_brute_force_nearest_including_ties_and_clipping(bits, exponent_bits):
    exponent_bias = -5
    magnitudes = sorted({abs(reference_value(c, exponent_bias, bits, exponent_bits)) for c in range(2**bits)})
    midpoints = [(a + b) / 2 for a, b in zip(magnitudes, magnitudes[1:])]
    top = magnitudes[-1]
    probes = magnitudes + midpoints + [m * (1 + 1e-6) for m in midpoints] + [m * (1 - 1e-6) for m in midpoints]
    probes += [top * 1.01, top * 1.5, magnitudes[1] * 0.3, 1e-30]
    probes += [-p for p in probes]
    values = torch.tensor(probes, dtype=torch.float64)
    codes, _ = adaptivfloat_quantize(values, bits, exponent_bits, exponent_bias=exponent_bias)
    for value, code in zip(probes, codes.tolist()):
        assert code == reference_quantize(value, exponent_bias, bits, exponent_bits), value
    # ties: between zero and the smallest magnitude -> zero; inside a binade -> even mantissa
    smallest = magnitudes[1]
    assert adaptivfloat_quantize(torch.tensor([smallest / 2], dtype=torch.float64), bits, exponent_bits,
                                 exponent_bias=exponent_bias)[0].item() == 0


def test_bias_puts_the_largest_magnitude_in_the_top_binade():
    # max exactly a power of two: it is the top binade's first value, exactly representable
    w = torch.tensor([0.25, -0.1, 0.03])
    assert adaptivfloat_exponent_bias(w) == -2 - 7
    codes, bias = adaptivfloat_quantize(w)
    assert adaptivfloat_dequantize(codes, bias)[0].item() == 0.25
    # just below a power of two: one binade lower, and it clips to the largest value 2**-3 * (2 - 1/16)
    w = torch.tensor([0.2499999, 0.01])
    assert adaptivfloat_exponent_bias(w) == -3 - 7
    codes, bias = adaptivfloat_quantize(w)
    assert adaptivfloat_dequantize(codes, bias)[0].item() == 2.0**-3 * (2 - 1 / 16)
    # negative-only tensors use the magnitude, and keep their sign
    w = -torch.tensor([3.0, 0.5, 1e-4])
    codes, bias = adaptivfloat_quantize(w)
    assert bias == 1 - 7
    decoded = adaptivfloat_dequantize(codes, bias)
    assert decoded[0].item() == -3.0 and decoded[1].item() == -0.5 and decoded[2].item() == 0.0
    # all zeros: codes are zero, bias as for max |w| = 1
    codes, bias = adaptivfloat_quantize(torch.zeros(5))
    assert bias == -7 and not codes.any()
    # in general the largest magnitude lands in the top binade (exponent field all ones)
    for seed in range(5):
        w = torch.randn(100, generator=torch.Generator().manual_seed(seed)) * 10.0 ** (seed - 2)
        codes, bias = adaptivfloat_quantize(w)
        top = codes[w.abs().argmax()].item() & 0x7F
        assert top >> 4 == 7
        assert bias == math.floor(math.log2(w.abs().max().item())) - 7


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_nan_or_inf_is_a_clear_error(bad):
    with pytest.raises(ValueError, match="NaN or infinity"):
        adaptivfloat_quantize(torch.tensor([0.5, bad]))
    with pytest.raises(ValueError, match="NaN or infinity"):
        int8_symmetric_quantize(torch.tensor([0.5, bad]))


def test_bad_formats_and_dtypes_raise():
    with pytest.raises(ValueError, match="exponent_bits"):
        adaptivfloat_quantize(torch.ones(3), bits=8, exponent_bits=7)
    with pytest.raises(ValueError, match="bits"):
        adaptivfloat_quantize(torch.ones(3), bits=9)
    with pytest.raises(TypeError, match="floating-point"):
        adaptivfloat_quantize(torch.ones(3, dtype=torch.int32))
    with pytest.raises(TypeError, match="uint8"):
        adaptivfloat_dequantize(torch.ones(3, dtype=torch.int8), 0)


def test_int8_symmetric_per_tensor():
    w = torch.tensor([-2.54, 0.0, 0.01, 1.27, 2.54])
    codes, scale = int8_symmetric_quantize(w)
    assert scale == pytest.approx(0.02)
    assert codes.tolist() == [-127, 0, 0, 64, 127]  # 0.01/0.02 = 0.5 rounds to even; 1.27/0.02 = 63.5 -> 64
    assert torch.allclose(int8_symmetric_dequantize(codes, scale), torch.tensor([-2.54, 0, 0, 1.28, 2.54]))


def test_quantization_error_is_within_half_a_step():
    w = torch.randn(4096, generator=torch.Generator().manual_seed(0))
    codes, bias = adaptivfloat_quantize(w)
    decoded = adaptivfloat_dequantize(codes, bias)
    # inside the representable range (above the lowest binade, below the largest value) the step is 1/16 of the
    # binade: the error is at most half of it
    top = 2.0 ** (bias + 7) * (2 - 1 / 16)
    inside = (w.abs() >= 2.0 ** (bias + 1)) & (w.abs() <= top)
    exponent = torch.floor(torch.log2(w.abs()))
    assert bool(((decoded - w).abs() <= 2.0**exponent / 32)[inside].all())
    assert int(inside.sum()) > 3500  # 8 binades hold most of a Gaussian
    # below: zero or the smallest magnitude, whichever is nearer
    smallest = 2.0**bias * (1 + 1 / 16)
    assert bool(((decoded - w).abs() <= smallest / 2)[w.abs() < 2.0 ** (bias + 1)].all())


# ---------------------------------------------------------------------------------------------------- kernel


@pytest.fixture(scope="module")
def cpu_kernel():
    from modeling_ultrafastbert import fff_cpu_kernel

    ok, reason = fff_cpu_kernel.is_available()
    if not ok:
        pytest.skip(reason)
    return fff_cpu_kernel


@pytest.mark.parametrize("trees,depth,hidden,tokens", [(1, 11, 768, 128), (2, 3, 48, 37), (3, 5, 100, 9), (1, 0, 16, 1)])
def test_8bit_kernel_equals_fp32_kernel_on_decoded_weights(cpu_kernel, trees, depth, hidden, tokens):
    generator = torch.Generator().manual_seed(depth)
    nodes = 2 ** (depth + 1) - 1
    in_weight = torch.randn(trees, nodes, hidden, generator=generator) / hidden**0.5
    in_bias = torch.randn(trees, nodes, generator=generator) * 0.1
    out_weight = torch.randn(trees, nodes, hidden, generator=generator) * 0.3
    in_codes, in_exp = adaptivfloat_quantize(in_weight)
    out_codes, out_exp = adaptivfloat_quantize(out_weight)
    x = torch.randn(tokens, hidden, generator=generator)
    with torch.inference_mode():
        expected = cpu_kernel.fff_forward(x, adaptivfloat_dequantize(in_codes, in_exp), in_bias,
                                          adaptivfloat_dequantize(out_codes, out_exp))
        got = cpu_kernel.fff_forward_adaptivfloat8(x, in_codes, in_exp, in_bias, out_codes, out_exp)
        # the tensor scales are powers of two applied exactly; the sums may round differently in the last bit
        torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)
        # the same decisions: both match the pure-PyTorch walk on the decoded weights
        from modeling_ultrafastbert.fast_feedforward import fff_conditional_torch

        walked = fff_conditional_torch(x.double(), adaptivfloat_dequantize(in_codes, in_exp, dtype=torch.float64),
                                       in_bias.double(), adaptivfloat_dequantize(out_codes, out_exp,
                                                                                 dtype=torch.float64))
        torch.testing.assert_close(got.double(), walked, rtol=1e-4, atol=1e-4)
        bf16 = cpu_kernel.fff_forward_adaptivfloat8(x.bfloat16(), in_codes, in_exp, in_bias, out_codes, out_exp)
        assert bf16.dtype == torch.bfloat16


def test_8bit_kernel_decisions_equal_the_torch_walk(cpu_kernel):
    layer = AdaptivFloatFastFeedForward(32, 4, 2)
    with torch.no_grad():
        for name in ("in_weight", "out_weight"):
            layer._set_codes(name, torch.randn(2, 31, 32, generator=torch.Generator().manual_seed(1)))
        layer.in_bias.normal_()
    layer.eval()
    x = torch.randn(50, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        native = layer(x)
        layer.kernel = "torch"
        walked = layer(x)
    torch.testing.assert_close(native, walked, rtol=1e-5, atol=1e-5)


def test_8bit_kernel_rejects_bad_inputs(cpu_kernel):
    codes = torch.zeros(1, 7, 16, dtype=torch.uint8)
    bias = torch.zeros(1, 7)
    with pytest.raises(TypeError, match="uint8"):
        cpu_kernel.fff_forward_adaptivfloat8(torch.zeros(2, 16), codes.float(), 0, bias, codes, 0)
    with pytest.raises(ValueError, match="hidden size"):
        cpu_kernel.fff_forward_adaptivfloat8(torch.zeros(2, 15), codes, 0, bias, codes, 0)
    with pytest.raises(ValueError, match="in_exponent_bias -200 is outside"):
        cpu_kernel.fff_forward_adaptivfloat8(torch.zeros(2, 16), codes, -200, bias, codes, 0)
    with pytest.raises(ValueError, match="out_exponent_bias 120 is outside"):
        cpu_kernel.fff_forward_adaptivfloat8(torch.zeros(2, 16), codes, 0, bias, codes, 120)
    with pytest.raises(ValueError, match="nodes per tree"):
        cpu_kernel.fff_forward_adaptivfloat8(torch.zeros(2, 16), codes[:, :6], 0, bias[:, :6], codes[:, :6], 0)
    with pytest.raises(TypeError, match="in_bias must be floating point"):
        cpu_kernel.fff_forward_adaptivfloat8(torch.zeros(2, 16), codes, 0, bias.long(), codes, 0)
    with pytest.raises(ValueError, match="in_bias is on meta"):
        cpu_kernel.fff_forward_adaptivfloat8(torch.zeros(2, 16), codes, 0, bias.to("meta"), codes, 0)


# ----------------------------------------------------------------------------------------------- models


def _pair(seed=0, projection_dtype="float32", **overrides):
    """A float model, its AdaptivFloat twin, and a float model holding the twin's decoded weights."""
    config = tiny_config(num_labels=3, **overrides)
    torch.manual_seed(seed)
    model = UltraFastBertForSequenceClassification(config).eval()
    quantized = UltraFastBertForSequenceClassification(config).eval()
    quantized.load_state_dict(model.state_dict())
    quantize_model_(quantized, projection_dtype=projection_dtype)
    dequantized = UltraFastBertForSequenceClassification(tiny_config(num_labels=3, **overrides)).eval()
    state = model.state_dict()
    with torch.no_grad():
        for name, parameter in dequantized.named_parameters():
            if parameter.dim() >= 2 and name.endswith("weight"):  # not the FFF node biases
                codes, bias = adaptivfloat_quantize(state[name])
                parameter.copy_(adaptivfloat_dequantize(codes, bias))
            else:
                parameter.copy_(state[name])
    return model, quantized, dequantized


def test_quantized_model_equals_dequantized_weights_model():
    _, quantized, dequantized = _pair()
    ids = torch.randint(1, 211, (3, 17), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[1, 9:] = 0
    with torch.no_grad():
        expected = dequantized(ids, attention_mask=mask).logits
        torch.testing.assert_close(quantized(ids, attention_mask=mask).logits, expected, rtol=1e-5, atol=1e-6)
        for mode in ("dense",):
            quantized.config.fff_inference = dequantized.config.fff_inference = mode
            torch.testing.assert_close(quantized(ids, attention_mask=mask).logits,
                                       dequantized(ids, attention_mask=mask).logits, rtol=1e-5, atol=1e-6)


def test_quantized_model_says_what_it_is_and_holds_uint8_codes():
    _, quantized, _ = _pair(projection_dtype="bfloat16")
    assert quantized.weight_quantization["format"] == "adaptivfloat"
    assert quantized.config.weight_quantization == {"format": "adaptivfloat", "bits": 8, "exponent_bits": 3,
                                                    "projection_dtype": "bfloat16"}
    assert "AdaptivFloat<8,3>" in repr(quantized)
    floats = [name for name, p in quantized.named_parameters() if p.dim() >= 2 and name.endswith("weight")]
    assert floats == [], floats  # every weight matrix is codes now
    layer = quantized.ultrafastbert.layers[0]
    assert isinstance(layer.feedforward, AdaptivFloatFastFeedForward)
    assert isinstance(layer.attention.query_key_value, AdaptivFloatLinear)
    assert layer.feedforward.in_weight_codes.dtype == torch.uint8
    with pytest.raises(ValueError, match="already quantized"):
        quantize_model_(quantized)
    with pytest.raises(ValueError, match="tie"):
        quantize_model_(UltraFastBertForMaskedLM(tiny_config()))


def test_bf16_projections_stay_close():
    model, quantized, dequantized = _pair(projection_dtype="bfloat16")
    ids = torch.randint(1, 211, (2, 20), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(quantized(ids).logits, dequantized(ids).logits, rtol=0.05, atol=0.05)


def test_quantized_checkpoint_is_small_and_loads_in_a_clean_environment(tmp_path):
    from conversion.quantize_adaptivfloat import quantize_checkpoint

    config = tiny_config(num_labels=2, vocab_size=2000, hidden_size=64, fff_depth=5)
    torch.manual_seed(0)
    model = UltraFastBertForSequenceClassification(config).eval()
    source, out = tmp_path / "fp32", tmp_path / "af8"
    model.save_pretrained(source)
    quantize_checkpoint(source, out, projection_dtype="float32")
    saved = json.loads((out / "config.json").read_text())
    assert saved["weight_quantization"]["format"] == "adaptivfloat"
    assert (out / "adaptivfloat.py").exists()
    ratio = (out / "model.safetensors").stat().st_size / (source / "model.safetensors").stat().st_size
    assert ratio <= 0.3, ratio
    assert not list(tmp_path.glob(".af8.tmp-*"))

    from safetensors.torch import load_file

    state = load_file(out / "model.safetensors")
    assert state["ultrafastbert.layers.0.feedforward.in_weight_codes"].dtype == torch.uint8
    dequantized = UltraFastBertForSequenceClassification(config).eval()
    with torch.no_grad():
        for name, parameter in dequantized.named_parameters():
            if parameter.dim() >= 2 and name.endswith("weight"):  # not the FFF node biases
                parameter.copy_(adaptivfloat_dequantize(state[name + "_codes"], int(state[name + "_exponent_bias"])))
            else:
                parameter.copy_(state[name])
    ids = torch.randint(1, config.vocab_size, (2, 13))
    with torch.no_grad():
        expected = dequantized(ids).logits
    torch.save({"ids": ids, "expected": expected}, tmp_path / "io.pt")
    output = run_in_clean_env(
        f"""
        import warnings, torch
        warnings.simplefilter("ignore")
        from transformers import AutoModelForSequenceClassification
        io = torch.load({str(tmp_path / 'io.pt')!r})
        model = AutoModelForSequenceClassification.from_pretrained({str(out)!r}, trust_remote_code=True).eval()
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        print(model.config.weight_quantization["format"], type(model.ultrafastbert.layers[0].feedforward).__name__)
        with torch.no_grad():
            torch.testing.assert_close(model(io["ids"]).logits, io["expected"], rtol=1e-5, atol=1e-6)
        print("same logits")
        """,
        tmp_path,
    )
    assert "adaptivfloat AdaptivFloatFastFeedForward" in output
    assert "same logits" in output


def test_int8_projections_stay_close_and_switch_back():
    from modeling_ultrafastbert.adaptivfloat import set_projection_dtype_

    _, quantized, dequantized = _pair(projection_dtype="float32")
    ids = torch.randint(1, 211, (2, 20), generator=torch.Generator().manual_seed(3))
    mask = torch.ones_like(ids)
    mask[0, 12:] = 0
    with torch.no_grad():
        expected = dequantized(ids, attention_mask=mask).logits
        set_projection_dtype_(quantized, "int8")
        assert quantized.config.weight_quantization["projection_dtype"] == "int8"
        qkv = quantized.ultrafastbert.layers[0].attention.query_key_value
        assert qkv.output_dtype == torch.bfloat16  # attention runs in bf16 with the 8-bit projections
        torch.testing.assert_close(quantized(ids, attention_mask=mask).logits, expected, rtol=0.05, atol=0.05)
        set_projection_dtype_(quantized, "float32")
        torch.testing.assert_close(quantized(ids, attention_mask=mask).logits, expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="projection_dtype"):
        set_projection_dtype_(quantized, "int4")


def test_triton_8bit_kernel_in_the_interpreter_equals_grouped_kernel_on_decoded_weights(tmp_path):
    """TRITON_INTERPRET=1 runs the Triton kernels on CPU tensors (a fresh interpreter: the flag is read at import)."""
    import os
    import subprocess
    import sys
    import textwrap

    pytest.importorskip("triton")
    from conftest import REPO_ROOT, require_triton_interpreter

    require_triton_interpreter()

    code = textwrap.dedent(
        """
        import torch
        from modeling_ultrafastbert import fff_triton_kernel as tk
        from modeling_ultrafastbert.adaptivfloat import adaptivfloat_dequantize, adaptivfloat_quantize
        from modeling_ultrafastbert.fast_feedforward import fff_conditional_torch
        g = torch.Generator().manual_seed(0)
        for tokens, hidden, depth in [(40, 32, 3), (70, 48, 4)]:
            nodes = 2 ** (depth + 1) - 1
            w1 = torch.randn(1, nodes, hidden, generator=g) / hidden**0.5
            b = torch.randn(1, nodes, generator=g) * 0.1
            w2 = torch.randn(1, nodes, hidden, generator=g) * 0.3
            c1, e1 = adaptivfloat_quantize(w1)
            c2, e2 = adaptivfloat_quantize(w2)
            d1, d2 = adaptivfloat_dequantize(c1, e1), adaptivfloat_dequantize(c2, e2)
            x = torch.randn(tokens, hidden, generator=g)
            res = torch.randn(tokens, hidden, generator=g)
            got = tk.fff_forward_adaptivfloat8(x, c1, e1, b, c2, e2, residual=res)
            assert torch.equal(got, tk.fff_forward(x, d1, b, d2, strategy="grouped", residual=res))
            torch.testing.assert_close(got, res + fff_conditional_torch(x, d1, b, d2), rtol=1e-5, atol=1e-5)
        # every one of the 256 codes in both matrices, exponent biases apart from 0, bf16 activations (codes decoded
        # through fp32, and straight into bf16 bits) and fp32 activations
        for tokens, hidden, depth, e1, e2 in [(40, 32, 3, -3, -2), (70, 48, 4, -20, 5)]:
            nodes = 2 ** (depth + 1) - 1
            c1 = (torch.randperm(nodes * hidden, generator=g) % 256).to(torch.uint8).view(1, nodes, hidden)
            c2 = (torch.randperm(nodes * hidden, generator=g) % 256).to(torch.uint8).view(1, nodes, hidden)
            b = torch.randn(1, nodes, generator=g) * 0.1
            for dtype, direct in [(torch.bfloat16, False), (torch.bfloat16, True), (torch.float32, True)]:
                tk.AF8_DIRECT_BF16_DECODE = direct
                d1, d2 = adaptivfloat_dequantize(c1, e1).to(dtype), adaptivfloat_dequantize(c2, e2).to(dtype)
                x = (torch.randn(tokens, hidden, generator=g) * 2.0**-e1 / hidden).to(dtype)
                res = torch.randn(tokens, hidden, generator=g).to(dtype)
                got = tk.fff_forward_adaptivfloat8(x, c1, e1, b.to(dtype), c2, e2, residual=res)
                assert got.dtype == dtype
                assert torch.equal(got, tk.fff_forward(x, d1, b.to(dtype), d2, strategy="grouped", residual=res))
        print("interpreter ok")
        """
    )
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=str(REPO_ROOT))
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "interpreter ok" in result.stdout


# ------------------------------------------------------------------------- fused paths of the int8 model


@pytest.mark.parametrize("trees,depth,hidden,tokens", [(1, 11, 768, 128), (2, 3, 48, 37), (1, 0, 16, 1), (1, 3, 16, 0)])
def test_8bit_kernel_with_residual_equals_kernel_then_add(cpu_kernel, trees, depth, hidden, tokens):
    generator = torch.Generator().manual_seed(depth + 7)
    nodes = 2 ** (depth + 1) - 1
    in_codes, in_exp = adaptivfloat_quantize(torch.randn(trees, nodes, hidden, generator=generator) / hidden**0.5)
    out_codes, out_exp = adaptivfloat_quantize(torch.randn(trees, nodes, hidden, generator=generator))
    in_bias = torch.randn(trees, nodes, generator=generator) * 0.1
    x = torch.randn(tokens, hidden, generator=generator)
    residual = torch.randn(tokens, hidden, generator=generator)
    strided = torch.randn(hidden, tokens, generator=generator).t()  # rows not contiguous
    with torch.inference_mode():
        for r in (residual, strided):
            plain = cpu_kernel.fff_forward_adaptivfloat8(x, in_codes, in_exp, in_bias, out_codes, out_exp)
            fused = cpu_kernel.fff_forward_adaptivfloat8(x, in_codes, in_exp, in_bias, out_codes, out_exp, residual=r)
            assert torch.equal(fused, r + plain)  # fp32: the same single addition, bit for bit
        bf16 = cpu_kernel.fff_forward_adaptivfloat8(x.bfloat16(), in_codes, in_exp, in_bias, out_codes, out_exp,
                                                    residual=residual.bfloat16())
        assert bf16.dtype == torch.bfloat16
        expected = residual.bfloat16().float() + cpu_kernel.fff_forward_adaptivfloat8(
            x.bfloat16().float(), in_codes, in_exp, in_bias, out_codes, out_exp)
        torch.testing.assert_close(bf16.float(), expected, rtol=1e-2, atol=1e-2)  # one bf16 rounding of the sum
        with pytest.raises(ValueError, match="residual"):
            cpu_kernel.fff_forward_adaptivfloat8(x, in_codes, in_exp, in_bias, out_codes, out_exp,
                                                 residual=residual.double())


# The 8-bit walk decodes a node's input row once for each run of tokens at that node (groups of up to 8), gathers lone
# tokens into groups of 8, decodes the output rows of nodes visited by several tokens once per block of outputs, and
# handles the weights after the last full block of 32 apart (16 at a time, then one by one). Inputs that exercise each
# path: repeated tokens (runs longer than 8, shared at every level), 1, 2, 9 and more tokens than a chunk, 1 and 2
# threads, hidden sizes with and without a tail, many zero codes of both signs.
@pytest.mark.parametrize("hidden", [32, 64, 80, 100, 307])
@pytest.mark.parametrize("threads", [1, 2])
def test_8bit_kernel_shared_rows_and_tails_equal_fp32_kernel(cpu_kernel, hidden, threads):
    from modeling_ultrafastbert.fast_feedforward import fff_conditional_torch

    generator = torch.Generator().manual_seed(hidden)
    trees, depth = 2, 6
    nodes = 2 ** (depth + 1) - 1
    in_weight = torch.randn(trees, nodes, hidden, generator=generator) / hidden**0.5
    out_weight = torch.randn(trees, nodes, hidden, generator=generator)
    for w in (in_weight, out_weight):
        w[torch.rand(w.shape, generator=generator) < 0.2] = 0.0
    in_codes, in_exp = adaptivfloat_quantize(in_weight)
    out_codes, out_exp = adaptivfloat_quantize(out_weight)
    for codes in (in_codes, out_codes):  # "-0" codes, never produced by the quantizer, also decode to zero
        codes[(codes == 0) & (torch.rand(codes.shape, generator=generator) < 0.5)] = 128
    assert bool((in_codes == 128).any()) and bool((out_codes == 0).any())
    in_bias = torch.randn(trees, nodes, generator=generator) * 0.1
    w1, w2 = adaptivfloat_dequantize(in_codes, in_exp), adaptivfloat_dequantize(out_codes, out_exp)
    base = torch.randn(40, hidden, generator=generator)
    x = torch.cat([base[:1].repeat(20, 1), base[1:3].repeat_interleave(9, 0), base[3:]])
    x = x[torch.randperm(len(x), generator=generator)]
    residual = torch.randn(len(x), hidden, generator=generator)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            for n in (len(x), 1, 2, 9):
                got = cpu_kernel.fff_forward_adaptivfloat8(x[:n], in_codes, in_exp, in_bias, out_codes, out_exp)
                torch.testing.assert_close(got, cpu_kernel.fff_forward(x[:n], w1, in_bias, w2), rtol=1e-6, atol=1e-6)
                walked = fff_conditional_torch(x[:n].double(), w1.double(), in_bias.double(), w2.double())
                torch.testing.assert_close(got.double(), walked, rtol=1e-4, atol=1e-4)  # the same decisions
                fused = cpu_kernel.fff_forward_adaptivfloat8(x[:n], in_codes, in_exp, in_bias, out_codes, out_exp,
                                                             residual=residual[:n])
                assert torch.equal(fused, residual[:n] + got)
            # repeated tokens get the same outputs as when they come alone (shared rows change nothing)
            alone = cpu_kernel.fff_forward_adaptivfloat8(base[:3], in_codes, in_exp, in_bias, out_codes, out_exp)
            together = cpu_kernel.fff_forward_adaptivfloat8(x, in_codes, in_exp, in_bias, out_codes, out_exp)
            for row in range(3):
                torch.testing.assert_close(together[(x == base[row]).all(1)], alone[row].expand(
                    int((x == base[row]).all(1).sum()), hidden), rtol=1e-6, atol=1e-6)
    finally:
        torch.set_num_threads(previous)


def test_8bit_layer_adds_the_residual_in_the_kernel(cpu_kernel):
    layer = AdaptivFloatFastFeedForward(48, 4).eval()
    with torch.no_grad():
        for name in ("in_weight", "out_weight"):
            layer._set_codes(name, torch.randn(1, 31, 48, generator=torch.Generator().manual_seed(3)))
        layer.in_bias.normal_()
    x = torch.randn(2, 9, 48, generator=torch.Generator().manual_seed(4))
    residual = torch.randn(2, 9, 48, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        assert torch.equal(layer(x, residual=residual), residual + layer(x))
        # a residual of another dtype still works (added after the kernel, with type promotion)
        mixed = layer(x.bfloat16(), residual=residual)
        assert mixed.dtype == torch.float32


def test_activation_quantizer_matches_pytorchs_dynamic_quantization(cpu_kernel):
    generator = torch.Generator().manual_seed(0)
    for shape, shift in [((128, 768), 0.5), ((3, 5), -2.0), ((1, 768), 0.0), ((7, 33), 10.0)]:
        x = torch.randn(*shape, generator=generator) * 3 + shift
        for source in (x, x.bfloat16()):
            codes, scale, zero_point = cpu_kernel.quantize_activations_u8(source)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # quantized tensors are deprecated; the reference still runs
                reference = torch.quantize_per_tensor_dynamic(source.float(), torch.quint8, False)
            assert codes.dtype == torch.uint8 and scale.dtype == torch.float32 and zero_point.dtype == torch.int64
            assert float(scale) == pytest.approx(reference.q_scale(), rel=1e-7)  # the same scale, as fp32
            assert int(zero_point) == reference.q_zero_point()
            # clamp(round_half_even(x / scale) + zero_point), with the fp32 scale and a correctly rounded quotient
            expected = (torch.round(source.float() / scale) + zero_point).clamp(0, 255).to(torch.uint8)
            assert torch.equal(codes, expected)
    # values half-way between two codes round to the even one
    _, scale, zero_point = cpu_kernel.quantize_activations_u8(torch.tensor([[-1.0, 3.0]]))
    halves = ((torch.arange(-40, 40).float() + 0.5) * scale).view(1, -1)
    codes, scale2, zero_point2 = cpu_kernel.quantize_activations_u8(torch.cat([halves, torch.tensor([[-1.0, 3.0]])], 1))
    assert torch.equal(codes, (torch.round(torch.cat([halves, torch.tensor([[-1.0, 3.0]])], 1) / scale2)
                               + zero_point2).clamp(0, 255).to(torch.uint8))
    empty = cpu_kernel.quantize_activations_u8(torch.zeros(0, 4))
    assert empty[0].shape == (0, 4)
    with pytest.raises(RuntimeError, match="NaN"):
        cpu_kernel.quantize_activations_u8(torch.tensor([[1.0, float("nan")]]))


def test_int8_projection_fused_path_equals_dynamic_int8_linear(cpu_kernel):
    from modeling_ultrafastbert import adaptivfloat as af

    torch.manual_seed(0)
    for bias in (False, True):
        linear = torch.nn.Linear(96, 80, bias=bias)
        module = AdaptivFloatLinear.from_linear(linear, projection_dtype="int8").eval()
        if module._int8_onednn() is None:
            pytest.skip("oneDNN's int8 matmul is not available in this torch build")
        x = torch.randn(2, 7, 96)
        residual = torch.randn(2, 7, 80)
        with torch.inference_mode():
            fused = module(x)
            module._decoded["int8_onednn"] = (module._decoded["int8_onednn"][0], None)  # force linear_dynamic
            reference = module(x)
            del module._decoded["int8_onednn"]
            # the same activation and weight quantization: equal to fp32 rounding
            torch.testing.assert_close(fused, reference, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(module(x, residual=residual), residual + reference, rtol=1e-5, atol=1e-5)
            # bf16 in (a bf16 attention's context), bf16 or fp32 out
            xb = x.bfloat16()
            torch.testing.assert_close(module(xb, output_dtype=torch.float32), module(xb.float()), rtol=1e-5,
                                       atol=1e-5)
            assert module(xb).dtype == torch.bfloat16
            module.output_dtype = torch.bfloat16
            torch.testing.assert_close(module(x), fused.bfloat16(), rtol=1e-2, atol=1e-2)
            module.output_dtype = None
            with pytest.raises(ValueError, match="residual"):
                module(x, residual=residual[:, :3])
    assert af._prepack_int8_onednn(torch.randn(4, 8)) is not None


def test_int8_model_adds_the_attention_residual_in_the_projection():
    from modeling_ultrafastbert.adaptivfloat import set_projection_dtype_

    _, quantized, _ = _pair(projection_dtype="float32")
    set_projection_dtype_(quantized, "int8")
    layer = quantized.ultrafastbert.layers[0]
    hidden = torch.randn(2, 11, quantized.config.hidden_size)
    with torch.no_grad():
        normed = layer.attention_norm(hidden)
        fused, _ = layer.attention(normed, None, residual=hidden)
        plain, _ = layer.attention(normed, None)
        assert plain.dtype == torch.float32  # the bf16 attention's projection returns to the fp32 stream
        torch.testing.assert_close(fused, hidden + plain, rtol=1e-5, atol=1e-5)
