"""How fast could the AdaptivFloat-8 CPU FFF layer be? An all-in-L1 bound beside the measured kernels, one run.

Issue 13 asks the 8-bit FFF layer at 128 tokens to be 2.5x faster than our fp32 kernel, on the grounds that the fp32
kernel is bound by the bytes of the rows it gathers. The 8-bit kernel moves 4x fewer bytes but must decode every
weight it reads (the decode is exact: 6 vector instructions per 32 weights, then the FMAs), so its bound is work, not
bytes. This script measures that work with every operand in L1 (a small C++ program built here) and multiplies it by
the work of the real layer:

1. the layer's work at 128 tokens (UltraFastBERT-1x11's FFF, random weights and inputs as bench_fff_layer_8bit.py),
   in the kernel's chunks of 64 tokens: (token, level) pairs whose node no other token of the chunk visits ("lone":
   a row decoded for one token, in the dot and again in the output) and the others ("shared": the row decoded once
   per node);
2. per 32 weights per token, rows in L1: the fp32 dot and axpy, the 8-bit dot and axpy (decode included), the 8-bit
   shared dot per token (a row decoded once for 8 tokens, the kernel's largest group), a decode into memory (the
   shared output rows), and one exact-erf GELU; where the CPU has AVX512-BF16, also the 8-bit dot with x rounded to
   bf16 (vdpbf16ps), which is not exact and is shown only to say whether giving that up would buy speed;
3. the shipped kernels on the same layer, interleaved medians.

The estimate = lone pairs x (8-bit dot + axpy) + shared pairs x (shared dot + axpy from a decoded row) + shared nodes
x 1 decode + GELUs + a 1-token call (dispatch and checks, plus that token's own small walk). It leaves out every cache
miss and every branch, so a kernel of this design reaches it only with all its operands in L1; fp32 kernel / estimate
is about the most the 2.5x target could get.

    python3 benchmarks/bench_af8_work_bound.py [--seconds 3] [--chunk 64]
"""

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_fff_layer import interleaved_medians, require_native_kernel  # noqa: E402
from bench_fff_layer_8bit import adaptivfloat8_layer  # noqa: E402

from modeling_ultrafastbert import fff_cpu_kernel  # noqa: E402
from modeling_ultrafastbert.adaptivfloat import adaptivfloat_dequantize  # noqa: E402
from modeling_ultrafastbert.fast_feedforward import FastFeedForward  # noqa: E402

# The per-weight work, operands in L1. decode32 is the kernel's af8_decode32_exact (fff_cpu_kernel.py): sign-extend
# the 32 interleaved codes to 16-bit lanes, ternary-logic them into bfloat16 under the exponent 1000 0fff, shift with
# the zero codes masked out, then split the halves into fp32. "check" prints its values for all 256 codes.
MICRO_SOURCE = r"""
#include <immintrin.h>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

static inline void decode32(const uint8_t* p, __m512& lo, __m512& hi) {
  const __m512i s = _mm512_cvtepi8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  const __mmask32 nz = _mm512_test_epi16_mask(s, _mm512_set1_epi16(0x7F));
  const __m512i t = _mm512_ternarylogic_epi32(s, _mm512_set1_epi16(0x107F), _mm512_set1_epi16(0x0800), 0xEA);
  const __m512i bf = _mm512_maskz_slli_epi16(nz, t, 3);
  lo = _mm512_castsi512_ps(_mm512_slli_epi32(bf, 16));
  hi = _mm512_castsi512_ps(_mm512_and_si512(bf, _mm512_set1_epi32(int32_t(0xFFFF0000u))));
}

constexpr int H = 768, G = 6, S = 8;  // hidden; lone tokens in flight; tokens sharing a row (the most per group)

__attribute__((noinline)) void dot_f32(const float* const* x, const float* const* w, float* out) {
  __m512 a[G], b[G];
  for (int g = 0; g < G; ++g) { a[g] = _mm512_setzero_ps(); b[g] = _mm512_setzero_ps(); }
  for (int h = 0; h < H; h += 32)
    for (int g = 0; g < G; ++g) {
      a[g] = _mm512_fmadd_ps(_mm512_loadu_ps(x[g] + h), _mm512_loadu_ps(w[g] + h), a[g]);
      b[g] = _mm512_fmadd_ps(_mm512_loadu_ps(x[g] + h + 16), _mm512_loadu_ps(w[g] + h + 16), b[g]);
    }
  for (int g = 0; g < G; ++g) out[g] = _mm512_reduce_add_ps(_mm512_add_ps(a[g], b[g]));
}
__attribute__((noinline)) void dot_af8(const float* const* x, const uint8_t* const* w, float* out) {
  __m512 a[G], b[G];
  for (int g = 0; g < G; ++g) { a[g] = _mm512_setzero_ps(); b[g] = _mm512_setzero_ps(); }
  for (int h = 0; h < H; h += 32)
    for (int g = 0; g < G; ++g) {
      __m512 lo, hi;
      decode32(w[g] + h, lo, hi);
      a[g] = _mm512_fmadd_ps(_mm512_loadu_ps(x[g] + h), lo, a[g]);
      b[g] = _mm512_fmadd_ps(_mm512_loadu_ps(x[g] + h + 16), hi, b[g]);
    }
  for (int g = 0; g < G; ++g) out[g] = _mm512_reduce_add_ps(_mm512_add_ps(a[g], b[g]));
}
#if defined(__AVX512BF16__)
// the same dot with x rounded to bfloat16 (pairs in the codes' interleaved order) and vdpbf16ps: not exact, here only
// to show whether giving up the fp32 arithmetic would buy speed on this CPU
__attribute__((noinline)) void dot_af8_bf16x(const uint16_t* const* x, const uint8_t* const* w, float* out) {
  __m512 a[G];
  for (int g = 0; g < G; ++g) a[g] = _mm512_setzero_ps();
  for (int h = 0; h < H; h += 32)
    for (int g = 0; g < G; ++g) {
      const __m512i s = _mm512_cvtepi8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(w[g] + h)));
      const __mmask32 nz = _mm512_test_epi16_mask(s, _mm512_set1_epi16(0x7F));
      const __m512i t = _mm512_ternarylogic_epi32(s, _mm512_set1_epi16(0x107F), _mm512_set1_epi16(0x0800), 0xEA);
      const __m512i bf = _mm512_maskz_slli_epi16(nz, t, 3);
      a[g] = _mm512_dpbf16_ps(a[g], (__m512bh)_mm512_loadu_si512(x[g] + h), (__m512bh)bf);
    }
  for (int g = 0; g < G; ++g) out[g] = _mm512_reduce_add_ps(a[g]);
}
#endif
__attribute__((noinline)) void dot_af8_shared(const float* const* x, const uint8_t* w, float* out) {
  __m512 a[S], b[S];
  for (int g = 0; g < S; ++g) { a[g] = _mm512_setzero_ps(); b[g] = _mm512_setzero_ps(); }
  for (int h = 0; h < H; h += 32) {
    __m512 lo, hi;
    decode32(w + h, lo, hi);
    for (int g = 0; g < S; ++g) {
      a[g] = _mm512_fmadd_ps(_mm512_loadu_ps(x[g] + h), lo, a[g]);
      b[g] = _mm512_fmadd_ps(_mm512_loadu_ps(x[g] + h + 16), hi, b[g]);
    }
  }
  for (int g = 0; g < S; ++g) out[g] = _mm512_reduce_add_ps(_mm512_add_ps(a[g], b[g]));
}
// one token's outputs over G levels, 64 outputs at a time in registers (as the kernels accumulate)
__attribute__((noinline)) void axpy_f32(float* y, const float* const* w, const float* gate) {
  for (int h = 0; h < H; h += 64) {
    __m512 acc[4];
    for (int v = 0; v < 4; ++v) acc[v] = _mm512_loadu_ps(y + h + 16 * v);
    for (int g = 0; g < G; ++g) {
      const __m512 a = _mm512_set1_ps(gate[g]);
      for (int v = 0; v < 4; ++v) acc[v] = _mm512_fmadd_ps(a, _mm512_loadu_ps(w[g] + h + 16 * v), acc[v]);
    }
    for (int v = 0; v < 4; ++v) _mm512_storeu_ps(y + h + 16 * v, acc[v]);
  }
}
__attribute__((noinline)) void axpy_af8(float* y, const uint8_t* const* w, const float* gate) {
  for (int h = 0; h < H; h += 64) {
    __m512 acc[4];
    for (int v = 0; v < 4; ++v) acc[v] = _mm512_loadu_ps(y + h + 16 * v);
    for (int g = 0; g < G; ++g) {
      const __m512 a = _mm512_set1_ps(gate[g]);
      for (int v = 0; v < 4; v += 2) {
        __m512 lo, hi;
        decode32(w[g] + h + 16 * v, lo, hi);
        acc[v] = _mm512_fmadd_ps(a, lo, acc[v]);
        acc[v + 1] = _mm512_fmadd_ps(a, hi, acc[v + 1]);
      }
    }
    for (int v = 0; v < 4; ++v) _mm512_storeu_ps(y + h + 16 * v, acc[v]);
  }
}
__attribute__((noinline)) void decode_row(const uint8_t* w, float* out) {
  for (int h = 0; h < H; h += 32) {
    __m512 lo, hi;
    decode32(w + h, lo, hi);
    _mm512_storeu_ps(out + h, lo);
    _mm512_storeu_ps(out + h + 16, hi);
  }
}
__attribute__((noinline)) float gelus(const float* z, int n) {
  float s = 0.f;
  for (int i = 0; i < n; ++i) s += 0.5f * z[i] * (1.0f + std::erf(z[i] * 0.70710678118654752440f));
  return s;
}

template <typename F>
double best_ns(F f, int calls) {  // the best of 7 medians-of-nothing: the least disturbed slice
  double best = 1e30;
  for (int r = 0; r < 7; ++r) {
    const auto t = std::chrono::steady_clock::now();
    for (int i = 0; i < calls; ++i) f();
    const double ns = std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - t).count() / calls;
    if (ns < best) best = ns;
  }
  return best;
}

int main(int argc, char** argv) {
  if (argc > 1 && std::strcmp(argv[1], "check") == 0) {  // the decode of every code, weight j of block 0
    uint8_t block[32];
    for (int c = 0; c < 256; ++c) {
      std::memset(block, 0, sizeof(block));
      block[0] = uint8_t(c);  // interleaved layout: byte 0 is weight 0
      __m512 lo, hi;
      decode32(block, lo, hi);
      float v[16];
      _mm512_storeu_ps(v, lo);
      std::printf("%d %.9g\n", c, v[0]);
    }
    return 0;
  }
  std::srand(1);
  std::vector<float> xf(G * H), wf(G * H), y(H), scratch(H), z(1024);
  std::vector<uint8_t> wc(G * H);
  for (auto& v : xf) v = float(std::rand()) / RAND_MAX - 0.5f;
  for (auto& v : wf) v = float(std::rand()) / RAND_MAX - 0.5f;
  for (auto& c : wc) c = uint8_t(std::rand());
  for (auto& v : z) v = 4.f * float(std::rand()) / RAND_MAX - 2.f;
  const float* xs[G]; const float* ws[G]; const uint8_t* cs[G]; float gate[G], out[G];
  for (int g = 0; g < G; ++g) { xs[g] = xf.data() + g * H; ws[g] = wf.data() + g * H; cs[g] = wc.data() + g * H;
                                gate[g] = 0.01f * (g + 1); }
  volatile float sink = 0.f;
  const double per = double(G) * H / 32, per_s = double(S) * H / 32, blocks = H / 32.0;
  std::printf("dot_f32 %.4f\n", best_ns([&] { dot_f32(xs, ws, out); sink = sink + out[0]; }, 20000) / per);
  std::printf("dot_af8 %.4f\n", best_ns([&] { dot_af8(xs, cs, out); sink = sink + out[0]; }, 20000) / per);
#if defined(__AVX512BF16__)
  std::vector<uint16_t> xb(G * H);
  for (int i = 0; i < G * H; ++i) { uint32_t u; std::memcpy(&u, &xf[i], 4); xb[i] = uint16_t(u >> 16); }
  const uint16_t* xbs[G];
  for (int g = 0; g < G; ++g) xbs[g] = xb.data() + g * H;
  std::printf("dot_af8_bf16x %.4f\n", best_ns([&] { dot_af8_bf16x(xbs, cs, out); sink = sink + out[0]; }, 20000) / per);
#endif
  std::printf("dot_af8_shared %.4f\n",
              best_ns([&] { dot_af8_shared(xs, cs[0], out); sink = sink + out[0]; }, 20000) / per_s);
  std::printf("axpy_f32 %.4f\n", best_ns([&] { axpy_f32(y.data(), ws, gate); }, 20000) / per);
  std::printf("axpy_af8 %.4f\n", best_ns([&] { axpy_af8(y.data(), cs, gate); }, 20000) / per);
  std::printf("decode %.4f\n", best_ns([&] { decode_row(cs[0], scratch.data()); }, 100000) / blocks);
  std::printf("gelu %.4f\n", best_ns([&] { sink = sink + gelus(z.data(), 1024); }, 2000) / 1024);
  return 0;
}
"""


def build_micro(directory: str) -> str:
    source = os.path.join(directory, "micro.cpp")
    binary = os.path.join(directory, "micro")
    with open(source, "w") as f:
        f.write(MICRO_SOURCE)
    errors = []
    for compiler in fff_cpu_kernel._compilers():
        result = subprocess.run(compiler.split() + ["-O3", "-march=native", "-std=c++17", source, "-o", binary],
                                capture_output=True, text=True)
        if result.returncode == 0:
            return binary
        errors.append(f"{compiler}: {result.stderr.strip()[-300:]}")
    sys.exit("could not build the micro-benchmark:\n" + "\n".join(errors))


def layer_work(layer: FastFeedForward, x: torch.Tensor, chunk: int) -> dict:
    """Lone and shared (token, level) pairs and distinct shared nodes, over chunks of ``chunk`` tokens."""
    w1, b1 = layer.in_weight[0], layer.in_bias[0]
    levels = layer.depth + 1
    node = torch.zeros(x.shape[0], dtype=torch.long)
    paths = []
    for _ in range(levels):
        paths.append(node)
        z = (x * w1[node]).sum(-1) + b1[node]
        node = 2 * node + 1 + (z > 0).long()
    lone = shared = shared_nodes = 0
    for start in range(0, x.shape[0], chunk):
        for level_nodes in paths:
            _, counts = torch.unique(level_nodes[start:start + chunk], return_counts=True)
            lone += int((counts == 1).sum())
            shared += int(counts[counts > 1].sum())
            shared_nodes += int((counts > 1).sum())
    return {"lone": lone, "shared": shared, "shared_nodes": shared_nodes, "levels": levels}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0, help="time budget per contender")
    parser.add_argument("--chunk", type=int, default=64, help="tokens per chunk of the 8-bit walk (kAf8Chunk)")
    args = parser.parse_args()
    require_native_kernel()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    layer, in_codes, in_exp, out_codes, out_exp = adaptivfloat8_layer()
    w1, w2 = adaptivfloat_dequantize(in_codes, in_exp), adaptivfloat_dequantize(out_codes, out_exp)
    x = torch.randn(128, 768)

    with tempfile.TemporaryDirectory() as directory:
        binary = build_micro(directory)
        check = subprocess.run([binary, "check"], capture_output=True, text=True, check=True).stdout.split("\n")
        decoded = torch.tensor([float(line.split()[1]) for line in check if line])
        # the kernel decodes to 2 * 2**field * (1 + m/16) and scales by 2**(bias - 1); bias 1 makes that the value
        expected = adaptivfloat_dequantize(torch.arange(256, dtype=torch.uint8), 1)
        torch.testing.assert_close(decoded, expected, rtol=0, atol=0)
        micro = {}
        for line in subprocess.run([binary], capture_output=True, text=True, check=True).stdout.split("\n"):
            if line:
                name, value = line.split()
                micro[name] = float(value)
    print("check: the micro-benchmark's decode gives AdaptivFloat<8,3>'s value for all 256 codes\n")

    work = layer_work(layer, x, args.chunk)
    blocks = 768 // 32
    print(f"work at 128 tokens, chunks of {args.chunk}: {work['lone']} lone and {work['shared']} shared (token, level) "
          f"pairs, {work['shared_nodes']} shared nodes, {128 * work['levels']} GELUs")
    print("per 32 weights per token, operands in L1 (ns, best of 7 slices):")
    print(f"  fp32 dot {micro['dot_f32']:.3f}  axpy {micro['axpy_f32']:.3f} | 8-bit dot {micro['dot_af8']:.3f}  "
          f"axpy {micro['axpy_af8']:.3f}  shared dot {micro['dot_af8_shared']:.3f}  decode {micro['decode']:.3f}; "
          f"GELU {micro['gelu']:.2f} ns")
    if "dot_af8_bf16x" in micro:
        print(f"  not exact, for comparison: 8-bit dot with x in bf16 (vdpbf16ps) {micro['dot_af8_bf16x']:.3f}")

    with torch.inference_mode():
        one = torch.randn(1, 768)
        args8 = (in_codes, in_exp, layer.in_bias, out_codes, out_exp)
        us = interleaved_medians({
            "fp32": (lambda: fff_cpu_kernel.fff_forward(x, w1, layer.in_bias, w2), 1.0),
            "af8": (lambda: fff_cpu_kernel.fff_forward_adaptivfloat8(x, *args8), 1.0),
            "af8, 1 token": (lambda: fff_cpu_kernel.fff_forward_adaptivfloat8(one, *args8), 0.3),
        }, args.seconds)
    ns = (work["lone"] * blocks * (micro["dot_af8"] + micro["axpy_af8"])
          + work["shared"] * blocks * (micro["dot_af8_shared"] + micro["axpy_f32"])
          + work["shared_nodes"] * blocks * micro["decode"] + 128 * work["levels"] * micro["gelu"])
    bound = ns / 1000 + us["af8, 1 token"]
    print("\n128 tokens, 1 thread (µs)   | fp32 kernel | 8-bit kernel | 8-bit, all in L1 | fp32 / 8-bit")
    print(f"  measured                  | {us['fp32']:11.1f} | {us['af8']:12.1f} |"
          f" {'':16} | {us['fp32'] / us['af8']:11.2f}x")
    print(f"  estimate                  | {'':11} | {'':12} | {bound:16.1f} | {us['fp32'] / bound:11.2f}x")
    print(f"  (estimate = {ns / 1000:.1f} µs of work + {us['af8, 1 token']:.1f} µs for a 1-token call; the kernel runs at "
          f"{100 * bound / us['af8']:.0f}% of that speed)")


if __name__ == "__main__":
    main()
