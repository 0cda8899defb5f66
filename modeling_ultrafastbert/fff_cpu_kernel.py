# Copyright 2026 The UltraFastBERT-HF authors. Apache-2.0.
"""Native CPU kernel for conditional fast-feedforward (FFF) inference.

The C++ source is embedded below so that this file also works as flat remote code (``trust_remote_code=True``) in an
environment without this package. It is compiled on first use with the system C++ compiler straight against torch's
headers and libraries (no ninja, no pybind, no Python headers) into a per-machine cache directory
(``$ULTRAFASTBERT_CACHE``, else ``$XDG_CACHE_HOME/ultrafastbert``, else ``~/.cache/ultrafastbert``). The cache key hashes
the source, the flags, the compiler, torch's version and the CPU's feature flags, because the binary is built with
``-march=native`` (vectorised for this CPU) and must not be reused on a different CPU. Builds take a file lock and are
moved into place atomically, so concurrent processes share one build. The library's sha256 is recorded beside it and
checked before every load: a damaged copy is rebuilt under the lock. A library, or a cache directory, that another
user could write is never loaded: the kernel is then compiled privately for the process, with a warning. Prebuild with
``python -m modeling_ultrafastbert.fff_cpu_kernel --build``. All copies of this file in one process (the package's and
each remote-code checkpoint's) share one loaded library and one fake-impl registration.

The compiled library registers the torch operator ``ultrafastbert::fff_forward_cpu(x, in_weight, in_bias, out_weight)``
(with a fake implementation registered here) so ``torch.compile`` / ``torch.export`` see one opaque op. Weights are
repacked once into a node-major layout ``[in_row | out_row]`` (one contiguous 2*H run per node) and cached inside the
library, keyed on the parameters' identity, storage and version counter, so in-place updates or ``.to()`` invalidate
it. Tokens are processed in chunks spread over torch's threads (``at::parallel_for``). Within a chunk the logits are
computed level by level with the tokens kept sorted by their current node, so a row shared by a group of tokens (the
top levels) is loaded once for the whole group, and unshared rows are read by 8 interleaved dot products; then each
token's output is accumulated over its visited nodes in registers and written once. fp32 accumulation throughout.
The AdaptivFloat-8 op (``fff_forward_cpu_af8``) walks the same way over 8-bit rows decoded in registers, decoding each
row once for all the tokens of a chunk that visit its node (see walk_chunk_af8). The same library also holds the
adaptive-span attention inside each head's band (``banded_span_attention_cpu``, used by adaptive_span.py).
"""

import hashlib
import os
import platform
import shutil
import stat
import subprocess
import sys
import sysconfig
import tempfile
import threading
import types
import warnings
from pathlib import Path

import torch

OP_NAME = "ultrafastbert::fff_forward_cpu"
OP_NAME_ADAPTIVFLOAT8 = "ultrafastbert::fff_forward_cpu_af8"
OP_NAME_ADAPTIVFLOAT8_RESIDUAL = "ultrafastbert::fff_forward_cpu_af8_residual"
OP_NAME_QUANTIZE_U8 = "ultrafastbert::quantize_activations_u8"
OP_NAME_BANDED_SPAN = "ultrafastbert::banded_span_attention_cpu"
_SUPPORTED_DTYPES = (torch.float32, torch.bfloat16)

_CPP_SOURCE = r"""
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/intrusive_ptr.h>
#include <torch/library.h>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <mutex>
#include <tuple>
#include <type_traits>
#include <vector>

namespace {

// GCC/Clang vector extensions: explicit 16-lane SIMD that the compiler lowers to whatever -march provides
typedef float f32x16 __attribute__((vector_size(64)));
typedef uint32_t u32x16 __attribute__((vector_size(64)));
typedef uint16_t u16x16 __attribute__((vector_size(32)));
typedef float f32x8 __attribute__((vector_size(32)));
typedef float f32x4 __attribute__((vector_size(16)));

inline float bf16_to_float(uint16_t v) {
  uint32_t u = uint32_t(v) << 16;
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
}
inline float load_w(const float* p, int64_t i) { return p[i]; }
inline float load_w(const uint16_t* p, int64_t i) { return bf16_to_float(p[i]); }

inline f32x16 load16(const float* p) {
  f32x16 v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
inline f32x16 load16(const uint16_t* p) {  // bf16 -> fp32 is a 16-bit left shift
  u16x16 h;
  std::memcpy(&h, p, sizeof(h));
  u32x16 u = __builtin_convertvector(h, u32x16) << 16;
  f32x16 v;
  std::memcpy(&v, &u, sizeof(v));
  return v;
}
inline void store16(float* p, f32x16 v) { std::memcpy(p, &v, sizeof(v)); }

inline float hsum(f32x16 v) {  // tree reduction in vector registers
  f32x8 lo, hi;
  std::memcpy(&lo, &v, sizeof(lo));
  std::memcpy(&hi, reinterpret_cast<const char*>(&v) + sizeof(lo), sizeof(hi));
  const f32x8 s8 = lo + hi;
  f32x4 l4, h4;
  std::memcpy(&l4, &s8, sizeof(l4));
  std::memcpy(&h4, reinterpret_cast<const char*>(&s8) + sizeof(l4), sizeof(h4));
  const f32x4 s4 = l4 + h4;
  return (s4[0] + s4[2]) + (s4[1] + s4[3]);
}

// G dot products at once (G tokens, each with its own row): independent chains keep the FMA units and the memory
// system busy where one walk alone would wait on latency
template <typename W, int G>
inline void dot_group(const float* const* x, const W* const* w, int64_t H, float* out) {
  f32x16 a[G], b[G];
  for (int g = 0; g < G; ++g) { a[g] = f32x16{0}; b[g] = f32x16{0}; }
  int64_t h = 0;
  for (; h + 32 <= H; h += 32) {
#pragma GCC unroll 8
    for (int g = 0; g < G; ++g) {
      a[g] += load16(x[g] + h) * load16(w[g] + h);
      b[g] += load16(x[g] + h + 16) * load16(w[g] + h + 16);
    }
  }
  if (h + 16 <= H) {
    for (int g = 0; g < G; ++g) a[g] += load16(x[g] + h) * load16(w[g] + h);
    h += 16;
  }
  for (int g = 0; g < G; ++g) {
    float tail = 0.f;
    for (int64_t t = h; t < H; ++t) tail += x[g][t] * load_w(w[g], t);
    out[g] = hsum(a[g] + b[g]) + tail;
  }
}

template <typename W>
inline void axpy(float* __restrict y, float a, const W* __restrict w, int64_t H) {
  int64_t h = 0;
  for (; h + 16 <= H; h += 16) store16(y + h, load16(y + h) + a * load16(w + h));
  for (; h < H; ++h) y[h] += a * load_w(w, h);
}

template <int Locality>
inline void prefetch_bytes(const void* p, int64_t bytes) {
  const char* c = static_cast<const char*>(p);
  for (int64_t off = 0; off < bytes; off += 64) __builtin_prefetch(c + off, 0, Locality);
}

inline float gelu(float z) {  // exact erf GELU, as torch.nn.functional.gelu
  return 0.5f * z * (1.0f + std::erf(z * 0.70710678118654752440f));
}

constexpr int kGroup = 8;

// G tokens against one shared row (the top levels): each weight vector is loaded once for all G tokens
template <typename W, int G>
inline void dot_shared(const float* const* x, const W* w, int64_t H, float* out) {
  f32x16 a[G];
  for (int g = 0; g < G; ++g) a[g] = f32x16{0};
  int64_t h = 0;
  for (; h + 16 <= H; h += 16) {
    const f32x16 wv = load16(w + h);
#pragma GCC unroll 8
    for (int g = 0; g < G; ++g) a[g] += load16(x[g] + h) * wv;
  }
  for (int g = 0; g < G; ++g) {
    float tail = 0.f;
    for (int64_t t = h; t < H; ++t) tail += x[g][t] * load_w(w, t);
    out[g] = hsum(a[g]) + tail;
  }
}

// Tokens order[j .. j+G) at the current level: dots, GELU, next nodes. The output rows are added later, per token
// (accumulate_outputs), so the level-by-level pass only streams x and the input rows.
template <typename W, int G>
inline void walk_group(const float* x, int64_t xs, const W* tree, const float* tree_bias, int64_t row,
                       int64_t in_bytes, int64_t H, int64_t C, int64_t j, const int64_t* order, int64_t* node,
                       bool last, int64_t level, int64_t levels, float* gates, int64_t* path) {
  const float* xg[G];
  const W* rg[G];
  int64_t ng[G];
  for (int g = 0; g < G; ++g) {
    const int64_t i = order[j + g];
    ng[g] = node[i];
    xg[g] = x + i * xs;
    rg[g] = tree + ng[g] * row;
  }
  // prefetch the next group's distinct input rows while this group computes
  for (int64_t m = j + G; m < std::min(C, j + 2 * G); ++m) {
    const int64_t nn = node[order[m]];
    if (nn != node[order[m - 1]]) prefetch_bytes<3>(tree + nn * row, in_bytes);
  }
  if (C <= 2 && !last) {
    // a lone walk cannot know its next row before its dot is done; fetch both children's input rows meanwhile
    for (int g = 0; g < G; ++g) {
      prefetch_bytes<3>(tree + (2 * ng[g] + 1) * row, in_bytes);
      prefetch_bytes<3>(tree + (2 * ng[g] + 2) * row, in_bytes);
    }
  }
  float z[G];
  if (G > 1 && rg[0] == rg[G - 1]) {
    dot_shared<W, G>(xg, rg[0], H, z);  // sorted by node: first == last means the whole group shares one row
  } else {
    dot_group<W, G>(xg, rg, H, z);
  }
  for (int g = 0; g < G; ++g) {
    const int64_t i = order[j + g];
    z[g] += tree_bias[ng[g]];
    gates[i * levels + level] = gelu(z[g]);
    path[i * levels + level] = ng[g];
    node[i] = 2 * ng[g] + 1 + (z[g] > 0.f ? 1 : 0);  // ties (and NaN) go left
  }
}

// y_i (+)= sum over levels of gate * output row, one token at a time: blocks of 256 outputs live in registers across
// the levels, so y is written once per tree instead of read and written at every level.
template <typename W>
inline void accumulate_outputs(float* yi, const W* tree, int64_t row, int64_t H, const float* gate,
                               const int64_t* path, int64_t levels, bool first) {
  constexpr int V = 16;
  int64_t b = 0;
  for (; b + V * 16 <= H; b += V * 16) {
    f32x16 acc[V];
    for (int v = 0; v < V; ++v) acc[v] = first ? f32x16{0} : load16(yi + b + 16 * v);
    for (int64_t l = 0; l < levels; ++l) {
      const W* w = tree + path[l] * row + H + b;
      const float a = gate[l];
#pragma GCC unroll 16
      for (int v = 0; v < V; ++v) acc[v] += a * load16(w + 16 * v);
    }
    for (int v = 0; v < V; ++v) store16(yi + b + 16 * v, acc[v]);
  }
  for (; b + 16 <= H; b += 16) {
    f32x16 acc = first ? f32x16{0} : load16(yi + b);
    for (int64_t l = 0; l < levels; ++l) acc += gate[l] * load16(tree + path[l] * row + H + b);
    store16(yi + b, acc);
  }
  for (; b < H; ++b) {
    float s = first ? 0.f : yi[b];
    for (int64_t l = 0; l < levels; ++l) s += gate[l] * load_w(tree + path[l] * row + H, b);
    yi[b] = s;
  }
}

// After a level: the tokens were sorted by their parent node; children of one parent are 2p+1 < 2p+2, so a stable
// partition of each parent's run (left child first) keeps them sorted by node
inline void sort_by_child(std::vector<int64_t>& order, std::vector<int64_t>& next, const std::vector<int64_t>& node) {
  const int64_t C = int64_t(order.size());
  int64_t out = 0;
  for (int64_t j = 0; j < C;) {
    const int64_t parent = (node[order[j]] - 1) / 2;
    int64_t e = j;
    while (e < C && (node[order[e]] - 1) / 2 == parent) ++e;
    for (int64_t m = j; m < e; ++m) if ((node[order[m]] & 1) == 1) next[out++] = order[m];
    for (int64_t m = j; m < e; ++m) if ((node[order[m]] & 1) == 0) next[out++] = order[m];
    j = e;
  }
  std::swap(order, next);
}

// One chunk of tokens [t0, t1): for every tree, all the chunk's tokens advance one level at a time, kept sorted by
// their current node, so a row shared by several tokens (the top levels) is read once and then hit in L1, and the
// rows are visited in address order. Groups of kGroup tokens run their dots together to overlap memory latency.
template <typename W>
void walk_chunk(const float* x, int64_t xs, float* y, int64_t t0, int64_t t1, const W* packed, const float* bias,
                int64_t K, int64_t N, int64_t levels, int64_t H) {
  const int64_t C = t1 - t0;
  const int64_t row = 2 * H;
  const int64_t in_bytes = H * int64_t(sizeof(W));
  std::vector<int64_t> node(C), order(C), next(C), path(C * levels);
  std::vector<float> gates(C * levels);
  const float* xc = x + t0 * xs;
  for (int64_t k = 0; k < K; ++k) {
    const W* tree = packed + k * N * row;
    const float* tree_bias = bias + k * N;
    for (int64_t i = 0; i < C; ++i) { node[i] = 0; order[i] = i; }
    for (int64_t level = 0; level < levels; ++level) {
      const bool last = level + 1 == levels;
      int64_t j = 0;
      for (; j + kGroup <= C; j += kGroup)
        walk_group<W, kGroup>(xc, xs, tree, tree_bias, row, in_bytes, H, C, j, order.data(), node.data(), last, level,
                              levels, gates.data(), path.data());
      for (; j < C; ++j)
        walk_group<W, 1>(xc, xs, tree, tree_bias, row, in_bytes, H, C, j, order.data(), node.data(), last, level,
                         levels, gates.data(), path.data());
      if (last || C < 2) continue;
      sort_by_child(order, next, node);
    }
    for (int64_t i = 0; i < C; ++i)
      accumulate_outputs(y + (t0 + i) * H, tree, row, H, gates.data() + i * levels, path.data() + i * levels, levels,
                         k == 0);
  }
}

// ------------------------------------------------------------------------------------------- AdaptivFloat-8 rows
// AdaptivFloat<8, 3> codes (sign | 3 exponent bits | 4 mantissa bits) are decoded to twice their "unit" value,
// 2 * 2**field * (1 + mantissa/16): its fp32 exponent 128 + field has the bits 1000 0fff, so the decode needs no
// addition, only the 7 magnitude bits shifted under the exponent, the sign at bit 31 and the constant bit 30 (one
// vpternlogd: (bits & keep) | set). The magnitude-0 codes are zero. The tensor's scale 2**(exponent_bias - 1) is applied
// to the dot product and to the gate instead, which is exact (a power of two): the result equals the fp32 kernel on the
// decoded weights to fp32 rounding (mostly bit for bit: the same products, summed in the same order).
constexpr uint32_t kAf8Shift = 19;                                // magnitude bits 6..0 -> fp32 bits 25..19
constexpr uint32_t kAf8Keep = 0x80000000u | (0x7Fu << kAf8Shift);  // sign and magnitude
constexpr uint32_t kAf8Set = 1u << 30;                            // the exponent's top bit (128)
constexpr int64_t kAf8Block = 32;                                 // weights per packed block

inline float af8_value2(uint8_t c) {
  const uint32_t mag = c & 0x7Fu;
  const uint32_t u = mag == 0 ? 0u : (uint32_t(c & 0x80u) << 24) | kAf8Set | (mag << kAf8Shift);
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
}

// Packed layout of the 8-bit rows (pack_af8): per node [in codes (H) | out codes (H)], as the fp32 kernel packs its
// rows, except that each full block of 32 weights is interleaved, weight j at byte 2j and weight 16 + j at byte 2j + 1:
// one sign extension to 16-bit lanes then puts weight j in the low and weight 16 + j in the high half of dword j, and a
// shift by 19 or by 3 moves either under the fp32 exponent, in natural order. The H % 32 codes after the last full
// block stay in natural order.
struct Af8Rows {
  const uint8_t* base;  // node 0 of tree 0
  int64_t H, blocks, half, row;  // row: bytes per node; half: offset of the out codes

  static Af8Rows layout(int64_t H) { return {nullptr, H, H / kAf8Block, H, 2 * H}; }
  int64_t in_bytes() const { return H; }  // what the walk reads of a node (prefetched)
};

#if defined(__AVX512F__) && defined(__AVX512BW__)
#define UFB_AF8_AVX512 1
inline __m512 to_m512(f32x16 v) { __m512 r; std::memcpy(&r, &v, sizeof(r)); return r; }
inline f32x16 from_m512(__m512 v) { f32x16 r; std::memcpy(&r, &v, sizeof(r)); return r; }
// One full block -> lo (weights 0..15), hi (16..31), the zero codes exactly zero: 6 instructions per 32 weights (the
// old decode took 7, plus the masks of its FMAs), and the FMAs need no mask. Each 16-bit half of
// the sign-extended dword becomes its weight's bfloat16 (sign at bit 15 from the sign extension, exponent 1000 0fff,
// mantissa; a word shift by 3 moves the code under it, masked to zero for the zero codes), and bf16 -> fp32 is a shift
// of the low half (weight j) or a mask of the high half (weight 16 + j): the values of af8_value2.
inline void af8_decode32_exact(const uint8_t* p, f32x16& lo, f32x16& hi) {
  const __m512i s = _mm512_cvtepi8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  const __mmask32 nz = _mm512_test_epi16_mask(s, _mm512_set1_epi16(0x7F));
  // before the shift: sign at bit 12, the exponent's top bit at 11, the 7 magnitude bits at 6..0
  const __m512i t = _mm512_ternarylogic_epi32(s, _mm512_set1_epi16(0x107F), _mm512_set1_epi16(0x0800), 0xEA);
  const __m512i bf = _mm512_maskz_slli_epi16(nz, t, 3);
  lo = from_m512(_mm512_castsi512_ps(_mm512_slli_epi32(bf, 16)));
  hi = from_m512(_mm512_castsi512_ps(_mm512_and_si512(bf, _mm512_set1_epi32(int32_t(0xFFFF0000u)))));
}
// 16 codes in natural order (the part after the last full block), zeros exact: 4 instructions per 16 weights
inline f32x16 af8_load16(const uint8_t* p) {
  const __m512i s = _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  const __mmask16 nonzero = _mm512_test_epi32_mask(s, _mm512_set1_epi32(0x7F));
  return from_m512(_mm512_castsi512_ps(_mm512_maskz_ternarylogic_epi32(
      nonzero, _mm512_slli_epi32(s, kAf8Shift), _mm512_set1_epi32(int32_t(kAf8Keep)),
      _mm512_set1_epi32(int32_t(kAf8Set)), 0xEA)));
}
#else
// portable: element by element, the zeros decoded exactly, so the masks are not needed
inline void af8_decode32_exact(const uint8_t* p, f32x16& lo, f32x16& hi) {
  for (int j = 0; j < 16; ++j) { lo[j] = af8_value2(p[2 * j]); hi[j] = af8_value2(p[2 * j + 1]); }
}
inline f32x16 af8_load16(const uint8_t* p) {
  f32x16 v;
  for (int i = 0; i < 16; ++i) v[i] = af8_value2(p[i]);
  return v;
}
#endif

// the weights after the last full block: 16 at a time in natural order, then one by one
__attribute__((always_inline)) inline void af8_dot_rest(const float* x, const uint8_t* w, const Af8Rows& R,
                                                       f32x16& a, float& tail) {
  int64_t h = R.blocks * kAf8Block;
  if (h == R.H) return;
  if (h + 16 <= R.H) {
    a += load16(x + h) * af8_load16(w + h);
    h += 16;
  }
  for (; h < R.H; ++h) tail += x[h] * af8_value2(w[h]);
}

// out[g] = hsum(v[g]) for G <= 8 tokens at once, with hsum's additions in hsum's order (so the same sums): the
// halves of two tokens' vectors are added in one instruction, then the quarters of four, then within each quarter
template <int G>
inline void hsum_group(const f32x16* v, float* out) {
  static_assert(G >= 1 && G <= 8, "at most 8 tokens");
#if defined(UFB_AF8_AVX512)
  constexpr int P = (G + 1) / 2, Q = (P + 1) / 2;
  __m512 u[4], r[2];
  for (int p = 0; p < P; ++p) {
    const __m512 a = to_m512(v[2 * p]), b = 2 * p + 1 < G ? to_m512(v[2 * p + 1]) : _mm512_setzero_ps();
    // lanes 0..7: a's lo8 + hi8; lanes 8..15: b's
    u[p] = _mm512_add_ps(_mm512_shuffle_f32x4(a, b, 0x44), _mm512_shuffle_f32x4(a, b, 0xEE));
  }
  for (int q = 0; q < Q; ++q) {
    const __m512 a = u[2 * q], b = 2 * q + 1 < P ? u[2 * q + 1] : _mm512_setzero_ps();
    // quarter k: the lo4 + hi4 of token 4q + k
    const __m512 w = _mm512_add_ps(_mm512_shuffle_f32x4(a, b, 0x88), _mm512_shuffle_f32x4(a, b, 0xDD));
    const __m512 t = _mm512_add_ps(w, _mm512_permute_ps(w, 0x4E));  // (s0 + s2, s1 + s3, ...)
    r[q] = _mm512_add_ps(t, _mm512_permute_ps(t, 0xB1));            // (s0 + s2) + (s1 + s3) in lane 0
  }
  if (Q == 1) r[1] = _mm512_setzero_ps();
  const __m512 all = _mm512_permutex2var_ps(r[0], _mm512_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28, 0, 0, 0, 0, 0, 0, 0, 0), r[1]);
  _mm512_mask_storeu_ps(out, __mmask16((1u << G) - 1), all);
#else
  for (int g = 0; g < G; ++g) out[g] = hsum(v[g]);
#endif
}

// The G dot products from their two accumulators, plus the codes after the last full block (row(g): token g's row):
// the same additions in the same order as the fp32 kernel's dot_group
template <int G, typename RowOf>
inline void finish_dots_af8(f32x16* a, const f32x16* b, const float* const* x, RowOf row, const Af8Rows& R,
                            float* out) {
  if (R.blocks * kAf8Block == R.H) {  // no rest: tail 0
    for (int g = 0; g < G; ++g) a[g] += b[g];
    hsum_group<G>(a, out);
    for (int g = 0; g < G; ++g) out[g] += 0.f;
    return;
  }
  for (int g = 0; g < G; ++g) {
    float tail = 0.f;
    af8_dot_rest(x[g], row(g), R, a[g], tail);
    out[g] = hsum(a[g] + b[g]) + tail;
  }
}

// G dot products, each token with its own row (the rows of the deep levels): as dot_group, a and b summing the even
// and odd 16-weight slices, so the sums are those of the fp32 kernel's dot_group
template <int G>
inline void dot_group_af8(const float* const* x, const uint8_t* const* w, const Af8Rows& R, float* out) {
  f32x16 a[G], b[G];
  for (int g = 0; g < G; ++g) { a[g] = f32x16{0}; b[g] = f32x16{0}; }
  for (int64_t k = 0; k < R.blocks; ++k) {
    const int64_t h = k * kAf8Block;
#pragma GCC unroll 8
    for (int g = 0; g < G; ++g) {
      f32x16 lo, hi;
      af8_decode32_exact(w[g] + h, lo, hi);
      a[g] += load16(x[g] + h) * lo;
      b[g] += load16(x[g] + h + 16) * hi;
    }
  }
  finish_dots_af8<G>(a, b, x, [w](int g) { return w[g]; }, R, out);
}

// G tokens at one node (a run of the sorted order): the row is decoded once for all of them
template <int G>
inline void dot_shared_af8(const float* const* x, const uint8_t* w, const Af8Rows& R, float* out) {
  f32x16 a[G], b[G];
  for (int g = 0; g < G; ++g) { a[g] = f32x16{0}; b[g] = f32x16{0}; }
  for (int64_t k = 0; k < R.blocks; ++k) {
    const int64_t h = k * kAf8Block;
    f32x16 lo, hi;
    af8_decode32_exact(w + h, lo, hi);
#pragma GCC unroll 8
    for (int g = 0; g < G; ++g) {
      a[g] += load16(x[g] + h) * lo;
      b[g] += load16(x[g] + h + 16) * hi;
    }
  }
  finish_dots_af8<G>(a, b, x, [w](int) { return w; }, R, out);
}

// lone tokens (each with its own row) per dot_group_af8: 6 rows and 6 x rows keep their pointers in registers
constexpr int kAf8Lone = 6;

// runtime group size -> template (a run is cut into groups of at most kGroup)
template <bool Shared>
inline void dot_af8(int g, const float* const* x, const uint8_t* const* w, const Af8Rows& R, float* out) {
  switch (g) {
#define UFB_AF8_CASE(G) \
    case G: if (Shared) dot_shared_af8<G>(x, w[0], R, out); else dot_group_af8<G>(x, w, R, out); break;
    UFB_AF8_CASE(1) UFB_AF8_CASE(2) UFB_AF8_CASE(3) UFB_AF8_CASE(4)
    UFB_AF8_CASE(5) UFB_AF8_CASE(6) UFB_AF8_CASE(7) UFB_AF8_CASE(8)
#undef UFB_AF8_CASE
    default: break;
  }
}

// One token's outputs [b, b + 16 V) of one tree, accumulated in registers over the levels as accumulate_outputs: the
// first `shared` levels from rows already decoded into `scratch` (their nodes are visited by several tokens of the
// chunk), the others decoded here. gate: the gates times the out scale.
template <int V>
inline void accumulate_block_af8(float* yi, const float* ri, bool first, const uint8_t* tree, const Af8Rows& R,
                                 int64_t b, const float* gate, const int64_t* path, const int32_t* slot,
                                 int64_t shared, int64_t levels, const float* scratch) {
  static_assert(V % 2 == 0, "blocks of 32 weights");
  f32x16 acc[V];
  for (int v = 0; v < V; ++v) acc[v] = first ? f32x16{0} : load16(yi + b + 16 * v);
  for (int64_t l = 0; l < shared; ++l) {
    const float* w = scratch + int64_t(slot[l]) * (16 * V);
    const f32x16 a = f32x16{0} + gate[l];
#pragma GCC unroll 16
    for (int v = 0; v < V; ++v) acc[v] += a * load16(w + 16 * v);
  }
  for (int64_t l = shared; l < levels; ++l) {
    const uint8_t* half = tree + path[l] * R.row + R.half;
    const f32x16 a = f32x16{0} + gate[l];
#pragma GCC unroll 8
    for (int v = 0; v < V; v += 2) {
      f32x16 lo, hi;
      af8_decode32_exact(half + b + 16 * v, lo, hi);
      acc[v] += a * lo;
      acc[v + 1] += a * hi;
    }
  }
  if (ri != nullptr) {
    for (int v = 0; v < V; ++v) store16(yi + b + 16 * v, load16(ri + b + 16 * v) + acc[v]);
  } else {
    for (int v = 0; v < V; ++v) store16(yi + b + 16 * v, acc[v]);
  }
}

// the outputs after the last full block, for one token: 16 at a time in natural order, then one by one
inline void accumulate_rest_af8(float* yi, const float* ri, bool first, const uint8_t* tree, const Af8Rows& R,
                                const float* gate, const int64_t* path, int64_t levels) {
  int64_t b = R.blocks * kAf8Block;
  for (; b + 16 <= R.H; b += 16) {
    f32x16 acc = first ? f32x16{0} : load16(yi + b);
    for (int64_t l = 0; l < levels; ++l) acc += gate[l] * af8_load16(tree + path[l] * R.row + R.half + b);
    store16(yi + b, ri != nullptr ? load16(ri + b) + acc : acc);
  }
  for (; b < R.H; ++b) {
    float s = first ? 0.f : yi[b];
    for (int64_t l = 0; l < levels; ++l) s += gate[l] * af8_value2(tree[path[l] * R.row + R.half + b]);
    yi[b] = ri != nullptr ? ri[b] + s : s;
  }
}

// walk_chunk for 8-bit rows. Decoding costs more than the FMA it feeds, so a row is decoded once for all the tokens of
// the chunk that visit its node: at each level the tokens (sorted by node) are cut into runs of one node; a run of
// several tokens reads its input row with dot_shared_af8 (one decode per up to 8 tokens), lone tokens are gathered into
// groups of kAf8Lone for dot_group_af8 (independent rows in flight). A node visited by several tokens gets a slot; its
// output row is decoded once per block of outputs into `scratch` (in L1), and every token adds it from there. A node
// is shared only when its parent is, so each token's shared levels are its first ones.
void walk_chunk_af8(const float* x, int64_t xs, float* y, int64_t t0, int64_t t1, const Af8Rows& R, const float* bias,
                    int64_t K, int64_t N, int64_t levels, float in_scale, float out_scale, const float* residual,
                    int64_t rs) {
  const int64_t C = t1 - t0;
  const int64_t in_bytes = R.in_bytes();
  std::vector<int64_t> node(C), order(C), next(C), path(C * levels), shared(C);
  std::vector<int32_t> slot(C * levels);
  std::vector<int64_t> slot_node;
  std::vector<float> gates(C * levels), dots(C), scratch;
  const float* xc = x + t0 * xs;
  for (int64_t k = 0; k < K; ++k) {
    const uint8_t* tree = R.base + k * N * R.row;
    const float* tree_bias = bias + k * N;
    for (int64_t i = 0; i < C; ++i) { node[i] = 0; order[i] = i; shared[i] = 0; }
    slot_node.clear();
    for (int64_t level = 0; level < levels; ++level) {
      const bool last = level + 1 == levels;
      const float* xg[kGroup];
      const uint8_t* wg[kGroup];
      int64_t lone[kGroup];
      int lone_count = 0;
      auto flush_lone = [&]() {
        for (int g = 0; g < lone_count; ++g) { xg[g] = xc + lone[g] * xs; wg[g] = tree + node[lone[g]] * R.row; }
        float z[kGroup];
        dot_af8<false>(lone_count, xg, wg, R, z);
        for (int g = 0; g < lone_count; ++g) dots[lone[g]] = z[g];
        lone_count = 0;
      };
      int64_t prefetched = 0;  // order positions whose rows were prefetched
      for (int64_t j = 0; j < C;) {
        const int64_t n = node[order[j]];
        int64_t e = j + 1;
        while (e < C && node[order[e]] == n) ++e;
        // prefetch the distinct rows of the next tokens while this run computes
        for (; prefetched < std::min(C, e + kGroup); ++prefetched) {
          const int64_t nn = node[order[prefetched]];
          if (prefetched == 0 || nn != node[order[prefetched - 1]]) prefetch_bytes<3>(tree + nn * R.row, in_bytes);
        }
        if (C <= 2 && !last) {
          // a lone walk cannot know its next row before its dot is done; fetch both children's input rows meanwhile
          prefetch_bytes<3>(tree + (2 * n + 1) * R.row, in_bytes);
          prefetch_bytes<3>(tree + (2 * n + 2) * R.row, in_bytes);
        }
        if (e - j == 1) {
          lone[lone_count++] = order[j];
          if (lone_count == kAf8Lone) flush_lone();
        } else {
          const int32_t s = int32_t(slot_node.size());
          slot_node.push_back(n);
          for (int64_t m = j; m < e; ++m) {
            slot[order[m] * levels + level] = s;
            shared[order[m]] = level + 1;
          }
          const uint8_t* w = tree + n * R.row;
          for (int64_t m = j; m < e; m += kGroup) {
            const int g = int(std::min<int64_t>(kGroup, e - m));
            for (int q = 0; q < g; ++q) xg[q] = xc + order[m + q] * xs;
            float z[kGroup];
            dot_af8<true>(g, xg, &w, R, z);
            for (int q = 0; q < g; ++q) dots[order[m + q]] = z[q];
          }
        }
        j = e;
      }
      if (lone_count > 0) flush_lone();
      for (int64_t i = 0; i < C; ++i) {
        const int64_t nd = node[i];
        const float z = dots[i] * in_scale + tree_bias[nd];  // in_scale: 2**(exponent_bias - 1), exact
        gates[i * levels + level] = gelu(z) * out_scale;    // out_scale: likewise, exact
        path[i * levels + level] = nd;
        node[i] = 2 * nd + 1 + (z > 0.f ? 1 : 0);  // ties (and NaN) go left
      }
      if (last || C < 2) continue;
      sort_by_child(order, next, node);
    }
    // outputs: blocks of 64 (then 32) outputs, each block for all the chunk's tokens in turn, so that the shared nodes'
    // pieces of output rows, decoded once per block into scratch, stay in L1 (a few KB) while every token adds them
    const bool first = k == 0;
    const float* rk = residual != nullptr && k + 1 == K ? residual + t0 * rs : nullptr;
    const int64_t slots = int64_t(slot_node.size());
    auto pass = [&](auto width, int64_t b) {
      constexpr int V = decltype(width)::value;
      scratch.resize(std::max<size_t>(scratch.size(), size_t(slots * 16 * V)));
      for (int64_t s = 0; s < slots; ++s) {
        const uint8_t* half = tree + slot_node[s] * R.row + R.half;
        for (int v = 0; v < V; v += 2) {
          f32x16 lo, hi;
          af8_decode32_exact(half + b + 16 * v, lo, hi);
          store16(scratch.data() + s * 16 * V + 16 * v, lo);
          store16(scratch.data() + s * 16 * V + 16 * v + 16, hi);
        }
      }
      for (int64_t i = 0; i < C; ++i) {
        if (i + 1 < C) {  // the next token's pieces of its own (unshared) output rows, into L1
          for (int64_t l = shared[i + 1]; l < levels; ++l) {
            const uint8_t* half = tree + path[(i + 1) * levels + l] * R.row + R.half;
            prefetch_bytes<3>(half + b, 16 * V);
          }
        }
        accumulate_block_af8<V>(y + (t0 + i) * R.H, rk != nullptr ? rk + i * rs : nullptr, first, tree, R, b,
                                gates.data() + i * levels, path.data() + i * levels, slot.data() + i * levels,
                                shared[i], levels, scratch.data());
      }
    };
    const int64_t full = R.blocks * kAf8Block;
    int64_t b = 0;
    for (; b + 64 <= full; b += 64) pass(std::integral_constant<int, 4>(), b);
    for (; b + 32 <= full; b += 32) pass(std::integral_constant<int, 2>(), b);
    if (full < R.H) {
      for (int64_t i = 0; i < C; ++i)
        accumulate_rest_af8(y + (t0 + i) * R.H, rk != nullptr ? rk + i * rs : nullptr, first, tree, R,
                            gates.data() + i * levels, path.data() + i * levels, levels);
    }
  }
}

// tokens per chunk of the 8-bit walk (more tokens share more rows; the chunk's x rows stay in L2)
constexpr int64_t kAf8Chunk = 64;

// Packs in_codes / out_codes (K, N, H) uint8 into the layout of Af8Rows, node-major (one contiguous row per node)
at::Tensor pack_af8(const at::Tensor& w1, const at::Tensor& w2) {
  const int64_t K = w1.size(0), N = w1.size(1), H = w1.size(2);
  const Af8Rows R = Af8Rows::layout(H);
  at::Tensor packed = at::empty({K, N, R.row}, w1.options().dtype(at::kByte));
  const at::Tensor c1 = w1.contiguous(), c2 = w2.contiguous();
  const uint8_t* s1 = c1.data_ptr<uint8_t>();
  const uint8_t* s2 = c2.data_ptr<uint8_t>();
  uint8_t* dst = packed.data_ptr<uint8_t>();
  at::parallel_for(0, K * N, 256, [&](int64_t n0, int64_t n1) {
    for (int64_t n = n0; n < n1; ++n) {
      for (int h2 = 0; h2 < 2; ++h2) {
        const uint8_t* src = (h2 == 0 ? s1 : s2) + n * H;
        uint8_t* d = dst + n * R.row + h2 * R.half;
        for (int64_t k = 0; k < R.blocks; ++k)
          for (int j = 0; j < 32; ++j) d[k * kAf8Block + (j < 16 ? 2 * j : 2 * (j - 16) + 1)] = src[k * kAf8Block + j];
        for (int64_t h = R.blocks * kAf8Block; h < H; ++h) d[h] = src[h];
      }
    }
  });
  return packed;
}

struct PackedEntry {
  c10::weak_intrusive_ptr<c10::TensorImpl> w1, b, w2;
  const c10::TensorImpl *i1, *ib, *i2;
  const void *p1, *pb, *p2;
  int64_t v1, vb, v2;
  bool af8;  // packed by pack_af8
  at::Tensor packed, bias;
};

std::mutex cache_mutex;
std::vector<PackedEntry> cache;

int64_t version_of(const at::Tensor& t) {
  // inference tensors carry no version counter; they can only change in place inside inference_mode
  return t.is_inference() ? -1 : int64_t(t._version());
}

std::tuple<at::Tensor, at::Tensor> packed_weights(const at::Tensor& w1, const at::Tensor& b, const at::Tensor& w2,
                                                  bool af8 = false) {
  std::lock_guard<std::mutex> guard(cache_mutex);
  const int64_t v1 = version_of(w1), vb = version_of(b), v2 = version_of(w2);
  for (auto& e : cache) {
    if (e.i1 == w1.unsafeGetTensorImpl() && e.ib == b.unsafeGetTensorImpl() && e.i2 == w2.unsafeGetTensorImpl() &&
        !e.w1.expired() && !e.b.expired() && !e.w2.expired() && e.p1 == w1.data_ptr() && e.pb == b.data_ptr() &&
        e.p2 == w2.data_ptr() && e.v1 == v1 && e.vb == vb && e.v2 == v2 && e.af8 == af8 &&
        e.packed.scalar_type() == w1.scalar_type()) {
      return {e.packed, e.bias};
    }
  }
  // drop entries of freed or changed parameters before adding the new one
  cache.erase(std::remove_if(cache.begin(), cache.end(), [&](const PackedEntry& e) {
    return e.w1.expired() || e.b.expired() || e.w2.expired() || e.i1 == w1.unsafeGetTensorImpl();
  }), cache.end());
  at::Tensor packed = af8 ? pack_af8(w1, w2) : at::cat({w1, w2}, 2).contiguous();
  at::Tensor bias = b.to(at::kFloat).contiguous();
  PackedEntry e{c10::weak_intrusive_ptr<c10::TensorImpl>(w1.getIntrusivePtr()),
                c10::weak_intrusive_ptr<c10::TensorImpl>(b.getIntrusivePtr()),
                c10::weak_intrusive_ptr<c10::TensorImpl>(w2.getIntrusivePtr()),
                w1.unsafeGetTensorImpl(), b.unsafeGetTensorImpl(), w2.unsafeGetTensorImpl(),
                w1.data_ptr(), b.data_ptr(), w2.data_ptr(), v1, vb, v2, af8, packed, bias};
  cache.push_back(e);
  return {packed, bias};
}

at::Tensor fff_forward_cpu(const at::Tensor& x, const at::Tensor& w1, const at::Tensor& b, const at::Tensor& w2) {
  TORCH_CHECK(x.device().is_cpu() && w1.device().is_cpu() && b.device().is_cpu() && w2.device().is_cpu(),
              "fff_forward_cpu: all tensors must be on the CPU");
  TORCH_CHECK(x.dim() == 2, "fff_forward_cpu: x must be (tokens, hidden), got ", x.dim(), " dims");
  TORCH_CHECK(w1.dim() == 3 && w2.dim() == 3 && b.dim() == 2,
              "fff_forward_cpu: expected in_weight (K, N, H), in_bias (K, N), out_weight (K, N, H)");
  TORCH_CHECK(w1.sizes() == w2.sizes(), "fff_forward_cpu: in_weight ", w1.sizes(), " and out_weight ", w2.sizes(),
              " differ in shape");
  TORCH_CHECK(b.size(0) == w1.size(0) && b.size(1) == w1.size(1), "fff_forward_cpu: in_bias ", b.sizes(),
              " does not match in_weight ", w1.sizes());
  TORCH_CHECK(x.size(1) == w1.size(2), "fff_forward_cpu: x has hidden size ", x.size(1), " but the weights have ",
              w1.size(2));
  const auto dt = w1.scalar_type();
  TORCH_CHECK(dt == at::kFloat || dt == at::kBFloat16, "fff_forward_cpu: weights must be float32 or bfloat16, got ",
              dt);
  TORCH_CHECK(w2.scalar_type() == dt && x.scalar_type() == dt, "fff_forward_cpu: x (", x.scalar_type(),
              "), in_weight (", dt, ") and out_weight (", w2.scalar_type(), ") must share one dtype");
  TORCH_CHECK(b.is_floating_point(), "fff_forward_cpu: in_bias must be floating point");
  const int64_t K = w1.size(0), N = w1.size(1), H = w1.size(2), T = x.size(0);
  TORCH_CHECK(N >= 1 && ((N + 1) & N) == 0, "fff_forward_cpu: nodes per tree must be 2**(D+1)-1, got ", N);
  int64_t levels = 0;
  while ((int64_t(1) << levels) - 1 < N) ++levels;

  if (T == 0 || H == 0) return at::zeros({T, H}, x.options());
  at::Tensor y = at::empty({T, H}, x.options().dtype(at::kFloat));
  at::Tensor packed, bias;
  std::tie(packed, bias) = packed_weights(w1, b, w2);
  at::Tensor xf = x;
  if (x.scalar_type() != at::kFloat || x.stride(1) != 1) xf = x.to(at::kFloat).contiguous();
  const float* xp = xf.data_ptr<float>();
  const int64_t xs = xf.stride(0);
  float* yp = y.data_ptr<float>();
  const float* bp = bias.data_ptr<float>();

  // chunks small enough that a chunk's x and y rows stay in L2, and at least one chunk per thread
  const int64_t threads = std::max<int64_t>(1, at::get_num_threads());
  const int64_t chunk = std::max<int64_t>(1, std::min<int64_t>(32, (T + threads - 1) / threads));
  const int64_t chunks = (T + chunk - 1) / chunk;
  at::parallel_for(0, chunks, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      const int64_t t0 = c * chunk, t1 = std::min(T, t0 + chunk);
      if (dt == at::kFloat) {
        walk_chunk<float>(xp, xs, yp, t0, t1, packed.data_ptr<float>(), bp, K, N, levels, H);
      } else {
        walk_chunk<uint16_t>(xp, xs, yp, t0, t1, reinterpret_cast<const uint16_t*>(packed.data_ptr()), bp, K, N,
                             levels, H);
      }
    }
  });
  return dt == at::kFloat ? y : y.to(x.scalar_type());
}

// The FFF with AdaptivFloat<8, 3> rows: in_codes / out_codes (K, N, H) uint8 with one exponent bias each. Packed
// node-major like the fp32 weights (2*H bytes per node) and cached the same way.
at::Tensor fff_af8_impl(const at::Tensor& x, const at::Tensor& w1, int64_t in_exponent_bias, const at::Tensor& b,
                        const at::Tensor& w2, int64_t out_exponent_bias, const at::Tensor* residual) {
  TORCH_CHECK(x.device().is_cpu() && w1.device().is_cpu() && b.device().is_cpu() && w2.device().is_cpu(),
              "fff_forward_cpu_af8: all tensors must be on the CPU");
  TORCH_CHECK(x.dim() == 2, "fff_forward_cpu_af8: x must be (tokens, hidden), got ", x.dim(), " dims");
  TORCH_CHECK(w1.dim() == 3 && w2.dim() == 3 && b.dim() == 2 && w1.sizes() == w2.sizes() &&
              b.size(0) == w1.size(0) && b.size(1) == w1.size(1),
              "fff_forward_cpu_af8: expected in_codes (K, N, H), in_bias (K, N), out_codes (K, N, H); got ",
              w1.sizes(), ", ", b.sizes(), ", ", w2.sizes());
  TORCH_CHECK(w1.scalar_type() == at::kByte && w2.scalar_type() == at::kByte,
              "fff_forward_cpu_af8: the codes must be uint8");
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kBFloat16,
              "fff_forward_cpu_af8: x must be float32 or bfloat16, got ", x.scalar_type());
  TORCH_CHECK(b.is_floating_point(), "fff_forward_cpu_af8: in_bias must be floating point");
  TORCH_CHECK(x.size(1) == w1.size(2), "fff_forward_cpu_af8: x has hidden size ", x.size(1),
              " but the codes have ", w1.size(2));
  // the scales and the largest unit value (2**8 > 2**7 * 1.9375) must stay normal fp32 numbers for exactness
  for (int64_t e : {in_exponent_bias, out_exponent_bias})
    TORCH_CHECK(e >= -126 && e + 8 <= 127, "fff_forward_cpu_af8: exponent bias ", e, " is outside [-126, 119]");
  const int64_t K = w1.size(0), N = w1.size(1), H = w1.size(2), T = x.size(0);
  TORCH_CHECK(N >= 1 && ((N + 1) & N) == 0, "fff_forward_cpu_af8: nodes per tree must be 2**(D+1)-1, got ", N);
  int64_t levels = 0;
  while ((int64_t(1) << levels) - 1 < N) ++levels;

  at::Tensor rf;  // the residual as fp32 rows with unit stride (a view when it already is)
  if (residual != nullptr) {
    TORCH_CHECK(residual->device().is_cpu() && residual->dim() == 2 && residual->size(0) == T &&
                residual->size(1) == x.size(1), "fff_forward_cpu_af8_residual: residual must be a CPU tensor of "
                "x's shape ", x.sizes(), ", got ", residual->sizes());
    TORCH_CHECK(residual->scalar_type() == x.scalar_type(), "fff_forward_cpu_af8_residual: residual (",
                residual->scalar_type(), ") and x (", x.scalar_type(), ") must share one dtype");
    rf = *residual;
    if (rf.scalar_type() != at::kFloat || rf.stride(1) != 1) rf = rf.to(at::kFloat).contiguous();
  }
  if (T == 0 || H == 0) return residual != nullptr ? residual->clone() : at::zeros({T, H}, x.options());
  at::Tensor y = at::empty({T, H}, x.options().dtype(at::kFloat));
  at::Tensor packed, bias;
  std::tie(packed, bias) = packed_weights(w1, b, w2, /*af8=*/true);
  at::Tensor xf = x;
  if (x.scalar_type() != at::kFloat || x.stride(1) != 1) xf = x.to(at::kFloat).contiguous();
  const float* xp = xf.data_ptr<float>();
  const int64_t xs = xf.stride(0);
  const float* rp = residual != nullptr ? rf.data_ptr<float>() : nullptr;
  const int64_t rs = residual != nullptr ? rf.stride(0) : 0;
  float* yp = y.data_ptr<float>();
  const float* bp = bias.data_ptr<float>();
  Af8Rows R = Af8Rows::layout(H);
  R.base = packed.data_ptr<uint8_t>();
  // the rows decode to twice their unit values (see af8_value2): scales 2**(exponent_bias - 1)
  const float in_scale = std::ldexp(1.f, int(in_exponent_bias) - 1);
  const float out_scale = std::ldexp(1.f, int(out_exponent_bias) - 1);

  const int64_t threads = std::max<int64_t>(1, at::get_num_threads());
  const int64_t chunk = std::max<int64_t>(1, std::min<int64_t>(kAf8Chunk, (T + threads - 1) / threads));
  const int64_t chunks = (T + chunk - 1) / chunk;
  at::parallel_for(0, chunks, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      const int64_t t0 = c * chunk, t1 = std::min(T, t0 + chunk);
      walk_chunk_af8(xp, xs, yp, t0, t1, R, bp, K, N, levels, in_scale, out_scale, rp, rs);
    }
  });
  return x.scalar_type() == at::kFloat ? y : y.to(x.scalar_type());
}

at::Tensor fff_forward_cpu_af8(const at::Tensor& x, const at::Tensor& w1, int64_t in_exponent_bias, const at::Tensor& b,
                               const at::Tensor& w2, int64_t out_exponent_bias) {
  return fff_af8_impl(x, w1, in_exponent_bias, b, w2, out_exponent_bias, nullptr);
}

// residual + FFF(x) in one pass: the kernel adds the residual row while it writes each token's output (fp32 inputs:
// bit for bit the kernel's output plus the residual; bf16: the sum is rounded to bf16 once)
at::Tensor fff_forward_cpu_af8_residual(const at::Tensor& x, const at::Tensor& w1, int64_t in_exponent_bias,
                                        const at::Tensor& b, const at::Tensor& w2, int64_t out_exponent_bias,
                                        const at::Tensor& residual) {
  return fff_af8_impl(x, w1, in_exponent_bias, b, w2, out_exponent_bias, &residual);
}

// Dynamic per-tensor asymmetric uint8 quantization of activations (what PyTorch's dynamic int8 linear does inside,
// with its choice of scale and zero point): x (T, K) float32 or bfloat16 -> (codes uint8 (T, K), scale float32 [],
// zero point int64 []). Lets the int8 product read bf16 activations directly and write bf16 (or add a residual).
typedef int32_t i32x16 __attribute__((vector_size(64)));

template <typename T>
void range_of(const T* x, int64_t n, float& lo, float& hi) {  // min / max of x and 0; NaN when x holds one
  f32x16 vlo = f32x16{0}, vhi = f32x16{0};
  i32x16 nan = i32x16{0};
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const f32x16 v = load16(x + i);
    vlo = v < vlo ? v : vlo;
    vhi = v > vhi ? v : vhi;
    nan |= v != v;
  }
  lo = 0.f, hi = 0.f;
  bool any_nan = false;
  for (int k = 0; k < 16; ++k) { lo = std::min(lo, vlo[k]); hi = std::max(hi, vhi[k]); any_nan |= nan[k] != 0; }
  for (; i < n; ++i) {
    const float v = load_w(x, i);
    lo = std::min(lo, v);
    hi = std::max(hi, v);
    any_nan |= v != v;
  }
  if (any_nan) lo = hi = std::numeric_limits<float>::quiet_NaN();
}

inline uint8_t quantize_one(float v, float scale, float zp) {  // clamp(round_half_even(v / scale) + zp, 0, 255)
  return uint8_t(std::min(255.f, std::max(0.f, std::nearbyint(v / scale) + zp)));
}

// v / scale correctly rounded without a division (its throughput bounds the pass): y = v * (1/scale) is within an ulp,
// and one Markstein step y + (v - y * scale) * (1/scale), with the remainder exact in an FMA, rounds to the quotient

template <typename T>
void quantize_u8(const T* x, uint8_t* q, int64_t n, float scale, float zp) {
  int64_t i = 0;
#if defined(__AVX512F__)
  const __m512 vs = _mm512_set1_ps(scale), vi = _mm512_set1_ps(1.0f / scale), vz = _mm512_set1_ps(zp),
               v0 = _mm512_setzero_ps(), v255 = _mm512_set1_ps(255.f);
  for (; i + 16 <= n; i += 16) {
    const f32x16 v = load16(x + i);
    __m512 a;
    std::memcpy(&a, &v, sizeof(a));
    const __m512 y = _mm512_mul_ps(a, vi);
    const __m512 quotient = _mm512_fmadd_ps(_mm512_fnmadd_ps(y, vs, a), vi, y);
    __m512 r = _mm512_add_ps(_mm512_roundscale_ps(quotient, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC), vz);
    r = _mm512_min_ps(_mm512_max_ps(r, v0), v255);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(q + i), _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(r)));
  }
#endif
  for (; i < n; ++i) q[i] = quantize_one(load_w(x, i), scale, zp);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> quantize_activations_u8(const at::Tensor& x_in) {
  TORCH_CHECK(x_in.device().is_cpu() && x_in.dim() == 2, "quantize_activations_u8: x must be a 2-d CPU tensor");
  TORCH_CHECK(x_in.scalar_type() == at::kFloat || x_in.scalar_type() == at::kBFloat16,
              "quantize_activations_u8: x must be float32 or bfloat16, got ", x_in.scalar_type());
  const at::Tensor x = x_in.contiguous();
  const int64_t n = x.numel();
  const bool bf16 = x.scalar_type() == at::kBFloat16;
  const float* xf = bf16 ? nullptr : x.data_ptr<float>();
  const uint16_t* xb = bf16 ? reinterpret_cast<const uint16_t*>(x.data_ptr()) : nullptr;
  // the range always holds 0, as in PyTorch's ChooseQuantizationParams; blocks of 16384 values, spread over the
  // threads only from 8 blocks up (a fork/join costs more than a pass over a 128 x 768 batch, and much more when
  // another process holds a core)
  constexpr int64_t kBlock = 16384, kParallelBlocks = 8;
  const int64_t blocks = (n + kBlock - 1) / kBlock;
  std::vector<float> block_lo(std::max<int64_t>(blocks, 1), 0.f), block_hi(std::max<int64_t>(blocks, 1), 0.f);
  at::parallel_for(0, blocks, kParallelBlocks, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t i0 = b * kBlock, len = std::min(kBlock, n - i0);
      if (bf16) range_of(xb + i0, len, block_lo[b], block_hi[b]); else range_of(xf + i0, len, block_lo[b], block_hi[b]);
    }
  });
  float lo = 0.f, hi = 0.f;
  bool finite = true;
  for (int64_t b = 0; b < blocks; ++b) {
    finite = finite && std::isfinite(block_lo[b]) && std::isfinite(block_hi[b]);
    lo = std::min(lo, block_lo[b]);
    hi = std::max(hi, block_hi[b]);
  }
  TORCH_CHECK(finite, "quantize_activations_u8: x holds NaN or infinity (no uint8 code represents it)");
  constexpr int32_t qmin = 0, qmax = 255;
  double scale = (double(hi) - double(lo)) / (qmax - qmin);
  if (float(scale) == 0.0f || std::isinf(1.0f / float(scale))) scale = 0.1;
  const float fscale = float(scale);
  const double zp_from_min = qmin - lo / double(fscale), zp_from_max = qmax - hi / double(fscale);
  const double err_min = std::abs(double(qmin)) - std::abs(lo / double(fscale));
  const double err_max = std::abs(double(qmax)) - std::abs(hi / double(fscale));
  const double initial = err_min < err_max ? zp_from_min : zp_from_max;
  const int32_t zp = initial < qmin ? qmin : initial > qmax ? qmax : int32_t(std::nearbyint(initial));
  at::Tensor q = at::empty(x.sizes(), x.options().dtype(at::kByte));
  uint8_t* qp = q.data_ptr<uint8_t>();
  at::parallel_for(0, blocks, kParallelBlocks, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t i0 = b * kBlock, len = std::min(kBlock, n - i0);
      if (bf16) quantize_u8(xb + i0, qp + i0, len, fscale, float(zp));
      else quantize_u8(xf + i0, qp + i0, len, fscale, float(zp));
    }
  });
  return {q, at::scalar_tensor(fscale, x.options().dtype(at::kFloat)),
          at::scalar_tensor(int64_t(zp), x.options().dtype(at::kLong))};
}

// ---- adaptive attention span: attention inside each head's band (see adaptive_span.py) ------------------------------
// Everything is transposed, so that 16 consecutive queries fill one vector and no step needs a horizontal sum:
// qkv_t (heads, 3, head_dim, batch, seq), any strides with the sequence contiguous, is what a GEMM of the compact
// projection weights with the transposed activations writes (queries, keys, values of each head, element-major; the
// caller's batched GEMM writes it batch-major); the context comes back in the same order of dimensions, (heads,
// head_dim, batch, seq), and the output projection reads it transposed. z (heads,) the heads' spans minus the ramp;
// key_bias (batch * seq) additive padding bias, or empty.
// Query i of head h sees keys j with |i - j| <= width, weighted by m(d) = clamp((ramp + z_h - d) / ramp, 0, 1):
// p_j = exp(s_j) m_j / sum_k exp(s_k) m_k, the soft form's masked and renormalised softmax without the keys whose
// weight is 0. A work item is 16 queries of one head of one row and the window of keys they see.
constexpr int64_t kMaxBandWidth = 512;
constexpr int64_t kBandQueries = 16;
typedef int32_t i32x16 __attribute__((vector_size(64)));

inline f32x16 splat16(float v) {
  f32x16 r = {};
  return r + v;
}

// exp(x) for x <= 0 (a score minus the largest): 2^n * P(r) with n = round(x / ln 2) and Cephes' expf polynomial on
// |r| <= ln 2 / 2 (relative error ~2e-7); 0 below -87 (and for -inf)
inline f32x16 exp16_nonpositive(f32x16 x) {
  const auto below = x < -87.f;
  x = below ? splat16(-87.f) : x;
  const f32x16 n = (x * 1.44269504088896341f + 12582912.f) - 12582912.f;  // round to nearest
  const f32x16 r = (x - n * 0.693359375f) - n * -2.12194440e-4f;
  f32x16 p = splat16(1.9875691500e-4f);
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.f;
  const i32x16 e = (__builtin_convertvector(n, i32x16) + 127) << 23;
  f32x16 scale;
  std::memcpy(&scale, &e, sizeof(scale));
  return below ? splat16(0.f) : p * scale;
}

at::Tensor banded_span_attention_cpu(const at::Tensor& qkv_t_in, const at::Tensor& z_in, double ramp, double scaling,
                                     int64_t width, const at::Tensor& key_bias_in) {
  TORCH_CHECK(qkv_t_in.device().is_cpu() && qkv_t_in.scalar_type() == at::kFloat && qkv_t_in.dim() == 5 &&
              qkv_t_in.size(1) == 3, "banded_span_attention_cpu: qkv_t must be a float32 CPU tensor (heads, 3, "
              "head_dim, batch, seq), got ", qkv_t_in.scalar_type(), " ", qkv_t_in.sizes());
  const int64_t heads = qkv_t_in.size(0), dim = qkv_t_in.size(2), batch = qkv_t_in.size(3), seq = qkv_t_in.size(4);
  TORCH_CHECK(z_in.dim() == 1 && z_in.size(0) == heads && z_in.scalar_type() == at::kFloat,
              "banded_span_attention_cpu: z must be float32 (heads,)");
  TORCH_CHECK(ramp > 0, "banded_span_attention_cpu: ramp must be > 0");
  TORCH_CHECK(width >= 0 && width <= kMaxBandWidth, "banded_span_attention_cpu: width must be in [0, ",
              kMaxBandWidth, "], got ", width);
  const bool has_bias = key_bias_in.numel() > 0;
  TORCH_CHECK(!has_bias || (key_bias_in.scalar_type() == at::kFloat && key_bias_in.numel() == batch * seq),
              "banded_span_attention_cpu: key_bias must be float32 with batch * seq elements");
  // any layout whose sequence dimension is contiguous (the GEMM's output viewed either way), else a copy
  const at::Tensor qkv_t = qkv_t_in.stride(4) == 1 ? qkv_t_in : qkv_t_in.contiguous();
  const at::Tensor zc = z_in.contiguous();
  const at::Tensor key_bias = has_bias ? key_bias_in.contiguous() : key_bias_in;
  // the context in the layout of the input (batch-major or element-major), so that the caller's view matches
  const bool batch_major = qkv_t.stride(3) > qkv_t.stride(0);
  at::Tensor out = batch_major ? at::empty({batch, heads, dim, seq}, qkv_t.options()).permute({1, 2, 0, 3})
                               : at::empty({heads, dim, batch, seq}, qkv_t.options());
  if (out.numel() == 0) return out;
  const float* src = qkv_t.data_ptr<float>();
  const float* zp = zc.data_ptr<float>();
  const float* bias = has_bias ? key_bias.data_ptr<float>() : nullptr;
  float* dst = out.data_ptr<float>();
  const int64_t sh = qkv_t.stride(0), sc = qkv_t.stride(1), sd = qkv_t.stride(2), sb = qkv_t.stride(3);
  const int64_t oh = out.stride(0), od = out.stride(1), ob = out.stride(2);
  const float fr = float(ramp), fs = float(scaling), inf = std::numeric_limits<float>::infinity();
  const float inv_ramp = 1.f / fr;  // a multiply per key, not a vector division
  const int64_t blocks = (seq + kBandQueries - 1) / kBandQueries;
  f32x16 lane;
  for (int l = 0; l < 16; ++l) lane[l] = float(l);
  at::parallel_for(0, heads * batch * blocks, 1, [&](int64_t w0, int64_t w1) {
    std::vector<float> probs((kBandQueries + 2 * width) * 16), weights(probs.size()), tail(dim * 16),
        key_tile(dim * 16), staged(16);
    for (int64_t w = w0; w < w1; ++w) {
      const int64_t blk = w % blocks, b = (w / blocks) % batch, h = w / (blocks * batch);
      const float* qt = src + h * sh + b * sb;  // element d of query i: qt[d * sd + i]
      const float* kt = qt + sc;
      const float* vt = qt + 2 * sc;
      const float* row_bias = has_bias ? bias + b * seq : nullptr;
      const float zh = zp[h];
      const int64_t i0 = blk * kBandQueries, queries = std::min(seq - i0, kBandQueries);
      const int64_t klo = std::max<int64_t>(0, i0 - width);
      const int64_t khi = std::min<int64_t>(seq - 1, i0 + queries - 1 + width);
      const int64_t nwin = khi - klo + 1;
      // the block's queries, one vector per element (a short last block is zero-padded into `tail`)
      const float* q = qt + i0;
      int64_t q_stride = sd;
      if (queries < kBandQueries) {
        for (int64_t d = 0; d < dim; ++d)
          for (int64_t l = 0; l < 16; ++l) tail[d * 16 + l] = l < queries ? qt[d * sd + i0 + l] : 0.f;
        q = tail.data();
        q_stride = 16;
      }
      const f32x16 query_pos = lane + float(i0);
      const auto query_valid = lane < float(queries);
      f32x16 top = splat16(-inf);
      // scores of 16 keys at a time against the 16 queries: key elements broadcast times query vectors
      for (int64_t j0 = 0; j0 < nwin; j0 += 16) {
        // the tile's keys: read in place, or (a short last tile) from a copy padded with repeats of its last key
        const float* kp = kt + klo + j0;
        int64_t k_stride = sd;
        if (j0 + 16 > nwin) {
          for (int64_t d = 0; d < dim; ++d)
            for (int64_t u = 0; u < 16; ++u) key_tile[d * 16 + u] = kt[d * sd + klo + std::min(j0 + u, nwin - 1)];
          kp = key_tile.data();
          k_stride = 16;
        }
        f32x16 acc[16];
        for (int u = 0; u < 16; ++u) acc[u] = splat16(0.f);
        for (int64_t d = 0; d < dim; ++d) {
          const f32x16 qd = load16(q + d * q_stride);
          const float* kd = kp + d * k_stride;
          for (int u = 0; u < 16; ++u) acc[u] += kd[u] * qd;
        }
        for (int64_t u = 0; u < std::min<int64_t>(16, nwin - j0); ++u) {
          const int64_t j = klo + j0 + u;
          f32x16 distance = query_pos - float(j);
          distance = distance < 0.f ? -distance : distance;
          f32x16 m = (fr + zh - distance) * inv_ramp;
          f32x16 s = acc[u] * fs + (row_bias ? row_bias[j] : 0.f);
          s = (distance <= float(width)) & (m > 0.f) & query_valid ? s : splat16(-inf);
          store16(probs.data() + (j0 + u) * 16, s);
          m = m > 1.f ? splat16(1.f) : m;  // the band weight, kept for the softmax pass
          store16(weights.data() + (j0 + u) * 16, m < 0.f ? splat16(0.f) : m);
          top = s > top ? s : top;
        }
      }
      // softmax over the window, per query lane (a lane that sees nothing keeps zeros)
      const auto seen = top > -inf;
      top = seen ? top : splat16(0.f);
      f32x16 total = splat16(0.f);
      for (int64_t jj = 0; jj < nwin; ++jj) {
        const f32x16 p = exp16_nonpositive(load16(probs.data() + jj * 16) - top) * load16(weights.data() + jj * 16);
        total += p;
        store16(probs.data() + jj * 16, p);
      }
      const f32x16 inv = total > 0.f ? 1.f / total : splat16(0.f);
      // context, 8 elements at a time: value elements broadcast times the probability vectors
      for (int64_t d0 = 0; d0 < dim; d0 += 8) {
        f32x16 acc[8];
        const float* vd[8];
        for (int e = 0; e < 8; ++e) {
          acc[e] = splat16(0.f);
          vd[e] = vt + std::min<int64_t>(d0 + e, dim - 1) * sd + klo;  // past head_dim: a repeat, not stored
        }
        for (int64_t jj = 0; jj < nwin; ++jj) {
          const f32x16 p = load16(probs.data() + jj * 16);
          for (int e = 0; e < 8; ++e) acc[e] += vd[e][jj] * p;
        }
        for (int64_t e = 0; e < std::min<int64_t>(8, dim - d0); ++e) {
          float* o = dst + h * oh + (d0 + e) * od + b * ob + i0;
          const f32x16 value = acc[e] * inv;
          if (queries == kBandQueries) {
            store16(o, value);
          } else {
            store16(staged.data(), value);
            std::copy(staged.begin(), staged.begin() + queries, o);
          }
        }
      }
    }
  });
  return out;
}

int64_t packed_cache_size() {
  std::lock_guard<std::mutex> guard(cache_mutex);
  return int64_t(cache.size());
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(ultrafastbert, m) {
  m.def("fff_forward_cpu(Tensor x, Tensor in_weight, Tensor in_bias, Tensor out_weight) -> Tensor");
  m.def("fff_cpu_packed_cache_size() -> int", &packed_cache_size);
  m.def("fff_forward_cpu_af8(Tensor x, Tensor in_codes, int in_exponent_bias, Tensor in_bias, Tensor out_codes, "
        "int out_exponent_bias) -> Tensor");
  m.def("fff_forward_cpu_af8_residual(Tensor x, Tensor in_codes, int in_exponent_bias, Tensor in_bias, "
        "Tensor out_codes, int out_exponent_bias, Tensor residual) -> Tensor");
  m.def("quantize_activations_u8(Tensor x) -> (Tensor, Tensor, Tensor)");
  m.def("banded_span_attention_cpu(Tensor qkv_t, Tensor z, float ramp, float scaling, int width, Tensor key_bias) "
        "-> Tensor");
}

TORCH_LIBRARY_IMPL(ultrafastbert, CPU, m) {
  m.impl("fff_forward_cpu", &fff_forward_cpu);
  m.impl("fff_forward_cpu_af8", &fff_forward_cpu_af8);
  m.impl("fff_forward_cpu_af8_residual", &fff_forward_cpu_af8_residual);
  m.impl("quantize_activations_u8", &quantize_activations_u8);
  m.impl("banded_span_attention_cpu", &banded_span_attention_cpu);
}
"""

_BASE_FLAGS = ["-O3", "-std=c++17", "-shared", "-fPIC", "-fvisibility=hidden", "-Wno-psabi", "-fopenmp"]
# -fopenmp: ATen's inline at::parallel_for is an OpenMP region in OpenMP builds of torch (serial without the flag)
_ARCH_FLAGS = ["-march=native"]  # vectorise for this CPU; the cache key includes the CPU flags

# the op's schema is its contract: copies of this file that declare the same schema may share one loaded library
OP_SCHEMA = "fff_forward_cpu(Tensor x, Tensor in_weight, Tensor in_bias, Tensor out_weight) -> Tensor"

_state_lock = threading.Lock()
_status: tuple[bool, str] | None = None
_op = None
_op_adaptivfloat8 = None
_op_adaptivfloat8_residual = None  # None: not looked up yet; False: the loaded library predates it
_op_quantize_u8 = None  # the same
_op_banded_span = None  # the same

# One process can hold several copies of this file: the package's, and one per checkpoint loaded as remote code
# (transformers_modules/<checkpoint>/<hash>/fff_cpu_kernel.py). torch's operator registry is process-wide: loading a
# second library that defines the op aborts the process, and registering a second fake impl raises on some torch
# versions (2.11). So every copy keeps the record of what was loaded in one place they all see: a module object in
# sys.modules under this fixed private name. Its fields (lock, library, build_key, fake_registered) are a contract
# between versions of this file; add fields, never change their meaning.
_SHARED_STATE_NAME = "_ultrafastbert_fff_cpu_kernel_state_v1"


def _shared_state() -> types.ModuleType:
    state = sys.modules.get(_SHARED_STATE_NAME)
    if state is None:
        fresh = types.ModuleType(_SHARED_STATE_NAME, "Process-wide state of the UltraFastBERT FFF CPU kernel.")
        fresh.lock = threading.RLock()  # held while a copy loads the library and registers the fake impl
        fresh.library = None  # where the library that defines the op in this process was loaded from
        fresh.build_key = None  # the cache key (source, flags, compiler, torch, CPU) of that library
        fresh.fake_registered = False
        state = sys.modules.setdefault(_SHARED_STATE_NAME, fresh)  # atomic: two racing copies still get one record
    return state


def _cache_root() -> Path:
    if os.environ.get("ULTRAFASTBERT_CACHE"):
        return Path(os.environ["ULTRAFASTBERT_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "ultrafastbert"


def _cpu_signature() -> str:
    # the feature flags decide what -march=native emits; a binary built for one CPU may crash on another
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features", "model name")):
                    return platform.machine() + ":" + line.strip()
    except OSError:
        pass
    return platform.machine() + ":" + platform.processor()


def _compilers() -> list[str]:
    """The compilers to try, in order: $CXX, then Python's own C++ compiler, then c++."""
    candidates = [os.environ.get("CXX"), sysconfig.get_config_var("CXX"), "c++"]
    return [c for i, c in enumerate(candidates) if c and c not in candidates[:i]]


def _compiler() -> str:
    """The compiler asked for (the first one tried)."""
    return _compilers()[0]


def _compile_command(output: str, source: str, arch_flags: list[str], compiler: str | None = None) -> list[str]:
    from torch.utils import cpp_extension

    cmd = (compiler or _compiler()).split() + [source, "-o", output] + _BASE_FLAGS + arch_flags
    cmd += [f"-D_GLIBCXX_USE_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}"]
    for path in cpp_extension.include_paths():
        cmd += ["-isystem", path]
    for path in cpp_extension.library_paths():
        cmd += ["-L" + path, "-Wl,-rpath," + path]
    cmd += ["-lc10", "-ltorch_cpu"]
    return cmd


def _build_key() -> str:
    # "exception self-test": libraries cached before the build checked that errors raise are built again
    key = "\n".join([_CPP_SOURCE, " ".join(_BASE_FLAGS + _ARCH_FLAGS), "exception self-test", _compiler(),
                     torch.__version__, _cpu_signature()])
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def library_path() -> Path:
    """Where the compiled library for this machine, source and torch version lives (it may not exist yet)."""
    return _cache_root() / f"fff_cpu_{_build_key()}" / "fff_cpu_kernel.so"


def digest_path(library: Path) -> Path:
    """The sha256 of the library as built, recorded beside it and checked before every load."""
    return library.with_name(library.name + ".sha256")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _private_group(gid: int) -> bool:
    """Whether ``gid`` is this user's own group (user-private groups, as Debian/Ubuntu create with umask 002, where
    "group-writable" means writable by this user only)."""
    try:
        import grp
        import pwd

        user, group = pwd.getpwuid(os.getuid()), grp.getgrgid(gid)
    except (ImportError, KeyError):
        return False
    return gid == user.pw_gid and group.gr_name == user.pw_name and set(group.gr_mem) <= {user.pw_name}


def _writable_by_others(info: os.stat_result) -> bool:
    if info.st_mode & stat.S_IWOTH:
        return True
    return bool(info.st_mode & stat.S_IWGRP) and not _private_group(info.st_gid)


def _untrusted_location(directory: Path, strict_levels: int = 2) -> str | None:
    """Why another user could change the files in ``directory`` (None when only this user, or root, can).

    The directory and the ``strict_levels - 1`` above it (by default the library's folder and the cache root) must be
    this user's and writable by no one else. Every directory further up must belong to this user or root and be
    writable by no one else, unless it is sticky like /tmp (others may add entries there but cannot rename or replace
    ours)."""
    uid = os.getuid()
    directory = directory.resolve()
    for level, path in enumerate([directory, *directory.parents]):
        info = os.stat(path)
        strict = level < strict_levels
        if info.st_uid != uid and (strict or info.st_uid != 0):
            return f"{path} belongs to another user (uid {info.st_uid})"
        if _writable_by_others(info) and (strict or not info.st_mode & stat.S_ISVTX):
            return f"{path} is writable by group or others (mode {stat.S_IMODE(info.st_mode):o})"
    return None


def _library_problem(library: Path) -> str | None:
    """Why the cached library must not be loaded (None when it may): missing, not this user's, writable by others,
    or not the bytes that were built (a truncated library can kill the process with SIGBUS when it is loaded)."""
    uid = os.getuid()
    for path in (library, digest_path(library)):
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            return f"{path.name} is missing"
        if not stat.S_ISREG(info.st_mode):
            return f"{path} is not a regular file"
        if info.st_uid != uid:
            return f"{path} belongs to another user (uid {info.st_uid})"
        if _writable_by_others(info):
            return f"{path} is writable by group or others (mode {stat.S_IMODE(info.st_mode):o})"
    if _sha256(library).encode() != digest_path(library).read_bytes().strip():
        return f"{library} is not the library that was built (its sha256 differs from the recorded one)"
    return None


# Run in a fresh interpreter on a just-built library: an op whose input check fails must raise RuntimeError. A
# toolchain can build libraries whose C++ exceptions kill the process instead (seen: a relocated GCC 13 behind $CXX,
# with torch 2.11, where every failing TORCH_CHECK was a SIGSEGV), and then any bad input would crash the user's Python.
_EXCEPTION_PROBE = """
import sys, torch
torch.ops.load_library(sys.argv[1])
try:
    torch.ops.ultrafastbert.fff_forward_cpu(torch.zeros(2, 3), torch.zeros(1, 1, 4), torch.zeros(1, 1),
                                            torch.zeros(1, 1, 4))
except RuntimeError:
    print("raised")
"""


def _exception_self_test(library: Path) -> str | None:
    """None if a failing check inside ``library`` reaches Python as an exception, else what went wrong."""
    try:
        proc = subprocess.run([sys.executable, "-c", _EXCEPTION_PROBE, str(library)], capture_output=True, text=True,
                              timeout=300)
    except subprocess.TimeoutExpired:
        return "its error check did not return within 300 s"
    if proc.returncode == 0 and proc.stdout.strip().endswith("raised"):
        return None
    how = f"signal {-proc.returncode}" if proc.returncode < 0 else f"exit {proc.returncode}"
    return f"an error raised inside it ended the process ({how}) instead of reaching Python"


def _compile(output: Path, workdir: str) -> None:
    source = os.path.join(workdir, "fff_cpu_kernel.cpp")
    with open(source, "w") as f:
        f.write(_CPP_SOURCE)
    errors = []
    for compiler in _compilers():
        for arch in (_ARCH_FLAGS, []):  # a compiler without -march=native still gets a portable build
            try:
                proc = subprocess.run(_compile_command(str(output), source, arch, compiler), capture_output=True,
                                      text=True)
            except OSError as error:  # no such compiler
                errors.append(f"{compiler}: {error}")
                break
            if proc.returncode != 0:
                errors.append(f"{compiler}: {proc.stderr.strip()[-2000:]}")
                continue
            problem = _exception_self_test(output)
            if problem is None:
                os.chmod(output, 0o755)  # whatever the umask: no one else may write the library
                if errors:  # say why the first choice was not used, once per build
                    failed = "; ".join(e.splitlines()[0][:200] for e in errors)
                    warnings.warn(f"the FFF CPU kernel was built with {compiler}"
                                  f"{'' if arch else ' without -march=native'} after: {failed}", stacklevel=2)
                return
            errors.append(f"{compiler}: the library it built fails its self-test: {problem}")
            break  # the flags do not change how this toolchain handles exceptions: next compiler
    raise RuntimeError("compiling the FFF CPU kernel failed:\n" + "\n---\n".join(errors))


def _build(target: Path) -> None:
    """Compile into ``target`` and record its sha256 beside it, each moved into place atomically (the library first:
    a reader that sees a new library with the old digest finds a mismatch and waits for this build's lock)."""
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        output = Path(tmp) / target.name
        _compile(output, tmp)
        digest = Path(tmp) / digest_path(target).name
        digest.write_text(_sha256(output) + "\n")
        os.chmod(digest, 0o644)
        os.replace(output, target)
        os.replace(digest, digest_path(target))


class _CacheUnusable(Exception):
    """The cache directory cannot be trusted or written; the kernel is compiled privately instead."""


def _cached_library() -> tuple[Path, str]:
    """The cached library, checked (built, or rebuilt under the build lock when missing or damaged), and a note on
    what was rebuilt."""
    target = library_path()
    try:
        os.makedirs(_cache_root(), mode=0o700, exist_ok=True)
        problem = _untrusted_location(_cache_root(), strict_levels=1)  # checked before anything is created inside
        if problem is None:
            os.makedirs(target.parent, mode=0o700, exist_ok=True)
            problem = _untrusted_location(target.parent)
    except OSError as error:
        raise _CacheUnusable(f"it cannot be created ({error})") from error
    if problem is not None:
        raise _CacheUnusable(problem)
    if _library_problem(target) is None:
        return target, ""
    existed = target.exists()
    import fcntl  # POSIX only; on other systems the build raises and the dispatch falls back

    try:
        lock = open(target.parent / "build.lock", "w")
    except OSError as error:
        raise _CacheUnusable(f"it is not writable ({error})") from error
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one process builds, the others wait and reuse its result
        damage = _library_problem(target)
        if damage is None:
            return target, ""
        _build(target)
        problem = _library_problem(target)
        if problem is not None:
            raise RuntimeError(f"the freshly built library fails its own check: {problem}")
    return target, f" (rebuilt: {damage})" if existed else ""


def _load_private_build() -> None:
    """Compile into a fresh private temporary directory, load, and delete the files (the mapping outlives them)."""
    tmp = tempfile.mkdtemp(prefix="ultrafastbert-fff-")  # mode 0700, this user's
    try:
        problem = _untrusted_location(Path(tmp), strict_levels=1)  # the temp folder above is usually sticky /tmp
        if problem is not None:
            raise RuntimeError(f"no private place to build the FFF CPU kernel either: {problem}")
        library = Path(tmp) / "fff_cpu_kernel.so"
        _compile(library, tmp)
        torch.ops.load_library(str(library))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _load_library_once(state: types.ModuleType) -> str:
    """Load the library unless a copy of this file already did (a second library defining the op aborts the process);
    returns where it came from. Runs under the shared lock."""
    key = _build_key()
    if state.library is not None:
        if state.build_key == key:
            return f"compiled FFF CPU kernel loaded from {state.library} (shared by every copy of this code)"
        return (f"compiled FFF CPU kernel loaded from {state.library} (shared; built from another version of this "
                f"code, with the same op schema)")
    if hasattr(torch.ops.ultrafastbert, "fff_forward_cpu"):
        # defined by a copy of this file that predates the shared record
        state.library, state.build_key = "a library loaded earlier in this process", None
        return "compiled FFF CPU kernel already loaded in this process (reused)"
    try:
        target, note = _cached_library()
        torch.ops.load_library(str(target))
        where = str(target) + note
    except _CacheUnusable as problem:
        _load_private_build()
        where = f"a private build for this process (the cache {_cache_root()} cannot be used: {problem})"
        warnings.warn(
            f"UltraFastBERT: the FFF CPU kernel cache {_cache_root()} cannot be used ({problem}); the kernel was "
            f"compiled privately for this process instead (~12 s each time). Set ULTRAFASTBERT_CACHE to a writable "
            f"directory that only you can write to.",
            RuntimeWarning,
            stacklevel=2,
        )
    state.library, state.build_key = where, key
    return "compiled FFF CPU kernel loaded from " + where


def _register_fake() -> None:
    @torch.library.register_fake(OP_NAME)
    def _(x, in_weight, in_bias, out_weight):
        torch._check(x.dim() == 2, lambda: "fff_forward_cpu: x must be (tokens, hidden)")
        torch._check(x.shape[1] == in_weight.shape[2], lambda: "fff_forward_cpu: hidden size mismatch")
        return x.new_empty(x.shape)


def _torch_has_fake_impl(op_name: str = OP_NAME) -> bool:
    """Whether torch already holds a fake (or Meta) kernel for the op, e.g. from a copy of this file that predates
    the shared record. The registry is a torch internal, so this is checked defensively."""
    if torch._C._dispatch_has_kernel_for_dispatch_key(op_name, "Meta"):
        return True
    try:
        from torch._library.simple_registry import singleton

        return singleton.find(op_name).fake_impl.kernel is not None
    except Exception:  # a torch whose registry looks different: register and let torch decide
        return False


def _load() -> tuple[bool, str]:
    global _op
    if sys.platform == "win32":
        return False, "the FFF CPU kernel is built with a POSIX C++ toolchain, not available on Windows"
    state = _shared_state()
    try:
        with state.lock:
            reason = _load_library_once(state)
            schema = str(torch.ops.ultrafastbert.fff_forward_cpu.default._schema)
            if schema != "ultrafastbert::" + OP_SCHEMA:
                raise RuntimeError(f"the op loaded in this process has the schema {schema!r}, this code needs "
                                   f"{OP_SCHEMA!r}")
            if not state.fake_registered:
                if not _torch_has_fake_impl(OP_NAME):
                    _register_fake()
                if not _torch_has_fake_impl(OP_NAME_ADAPTIVFLOAT8):
                    _register_fake_adaptivfloat8()
            state.fake_registered = True
            # the residual op came later: a library built by an older copy lacks it (the caller then adds instead)
            if hasattr(torch.ops.ultrafastbert, "fff_forward_cpu_af8_residual") and not getattr(
                    state, "fake_registered_af8_residual", False):
                if not _torch_has_fake_impl(OP_NAME_ADAPTIVFLOAT8_RESIDUAL):
                    _register_fake_adaptivfloat8_residual()
                state.fake_registered_af8_residual = True
            if hasattr(torch.ops.ultrafastbert, "quantize_activations_u8") and not getattr(
                    state, "fake_registered_quantize_u8", False):
                if not _torch_has_fake_impl(OP_NAME_QUANTIZE_U8):
                    _register_fake_quantize_u8()
                state.fake_registered_quantize_u8 = True
            if hasattr(torch.ops.ultrafastbert, "banded_span_attention_cpu") and not getattr(
                    state, "fake_registered_banded_span", False):
                if not _torch_has_fake_impl(OP_NAME_BANDED_SPAN):
                    _register_fake_banded_span()
                state.fake_registered_banded_span = True
            _op = torch.ops.ultrafastbert.fff_forward_cpu.default
    except Exception as error:  # no compiler, no headers, read-only cache, ... -> fall back, saying why
        return False, f"the FFF CPU kernel could not be built or loaded ({type(error).__name__}: {error})"
    return True, reason


def is_available() -> tuple[bool, str]:
    """Compile (first call only, cached on disk) and load the kernel. Returns ``(ok, reason)``."""
    global _status
    if _status is None:
        with _state_lock:
            if _status is None:
                _status = _load()
    return _status


def _check_inputs(x, in_weight, in_bias, out_weight) -> None:
    if x.dim() != 2:
        raise ValueError(f"fff_forward: x must be (tokens, hidden), got shape {tuple(x.shape)}")
    dtype = in_weight.dtype
    if dtype not in _SUPPORTED_DTYPES:
        raise TypeError(f"fff_forward: weights must be float32 or bfloat16, got {dtype}")
    if x.dtype != dtype or out_weight.dtype != dtype:
        raise TypeError(
            f"fff_forward: x ({x.dtype}), in_weight ({dtype}) and out_weight ({out_weight.dtype}) must share one dtype"
        )
    if in_weight.dim() != 3 or in_weight.shape != out_weight.shape or in_bias.shape != in_weight.shape[:2]:
        raise ValueError(
            f"fff_forward: expected in_weight (K, N, H), in_bias (K, N), out_weight (K, N, H); got "
            f"{tuple(in_weight.shape)}, {tuple(in_bias.shape)}, {tuple(out_weight.shape)}"
        )
    if x.shape[1] != in_weight.shape[2]:
        raise ValueError(f"fff_forward: x has hidden size {x.shape[1]} but the weights have {in_weight.shape[2]}")
    _check_on_cpu("fff_forward", x=x, in_weight=in_weight, in_bias=in_bias, out_weight=out_weight)


def _check_on_cpu(op: str, **tensors: torch.Tensor) -> None:
    for name, t in tensors.items():
        if t.device.type != "cpu":
            raise ValueError(f"{op}: {name} is on {t.device}, the CPU kernel needs every tensor on the CPU")


def fff_forward(
    x: torch.Tensor, in_weight: torch.Tensor, in_bias: torch.Tensor, out_weight: torch.Tensor
) -> torch.Tensor:
    """Conditional FFF forward on the CPU. ``x`` (T, H), weights (K, N, H) / (K, N); returns (T, H) in x's dtype."""
    if _op is None:
        ok, reason = is_available()
        if not ok:
            raise RuntimeError(reason)
    # one cheap combined test on the hot path (a single token costs a few µs in all); the detailed check only runs
    # to name the problem when something is off
    dtype = in_weight.dtype
    if not (
        x.is_cpu and in_weight.is_cpu and in_bias.is_cpu and out_weight.is_cpu
        and x.dtype is dtype and out_weight.dtype is dtype and dtype in _SUPPORTED_DTYPES
        and x.dim() == 2 and in_weight.dim() == 3 and in_bias.dim() == 2
        and x.shape[1] == in_weight.shape[2] and in_weight.shape == out_weight.shape
        and in_bias.shape == in_weight.shape[:2]
    ):
        _check_inputs(x, in_weight, in_bias, out_weight)
    return _op(x, in_weight, in_bias, out_weight)


def _register_fake_adaptivfloat8() -> None:
    @torch.library.register_fake(OP_NAME_ADAPTIVFLOAT8)
    def _(x, in_codes, in_exponent_bias, in_bias, out_codes, out_exponent_bias):
        torch._check(x.dim() == 2, lambda: "fff_forward_cpu_af8: x must be (tokens, hidden)")
        torch._check(x.shape[1] == in_codes.shape[2], lambda: "fff_forward_cpu_af8: hidden size mismatch")
        return x.new_empty(x.shape)


def _register_fake_adaptivfloat8_residual() -> None:
    @torch.library.register_fake(OP_NAME_ADAPTIVFLOAT8_RESIDUAL)
    def _(x, in_codes, in_exponent_bias, in_bias, out_codes, out_exponent_bias, residual):
        torch._check(x.dim() == 2, lambda: "fff_forward_cpu_af8_residual: x must be (tokens, hidden)")
        torch._check(x.shape[1] == in_codes.shape[2], lambda: "fff_forward_cpu_af8_residual: hidden size mismatch")
        return x.new_empty(x.shape)


def _is_tree_size(nodes: int) -> bool:
    return nodes >= 1 and not (nodes + 1) & nodes


def _check_adaptivfloat8_inputs(x, in_codes, in_exponent_bias: int, in_bias, out_codes, out_exponent_bias: int) -> None:
    """Every check the C++ op makes, made first here, so that bad input gets a Python error naming the argument."""
    if x.dim() != 2 or x.dtype not in _SUPPORTED_DTYPES:
        raise ValueError(f"fff_forward_adaptivfloat8: x must be (tokens, hidden) float32/bfloat16, got "
                         f"{x.dtype} {tuple(x.shape)}")
    if in_codes.dtype != torch.uint8 or out_codes.dtype != torch.uint8:
        raise TypeError(f"fff_forward_adaptivfloat8: codes must be uint8, got {in_codes.dtype} / {out_codes.dtype}")
    if in_codes.dim() != 3 or in_codes.shape != out_codes.shape or in_bias.shape != in_codes.shape[:2]:
        raise ValueError(
            f"fff_forward_adaptivfloat8: expected in_codes (K, N, H), in_bias (K, N), out_codes (K, N, H); got "
            f"{tuple(in_codes.shape)}, {tuple(in_bias.shape)}, {tuple(out_codes.shape)}"
        )
    if x.shape[1] != in_codes.shape[2]:
        raise ValueError(f"fff_forward_adaptivfloat8: x has hidden size {x.shape[1]}, the codes {in_codes.shape[2]}")
    if not _is_tree_size(in_codes.shape[1]):
        raise ValueError(f"fff_forward_adaptivfloat8: nodes per tree must be 2**(D+1)-1, got {in_codes.shape[1]}")
    if not in_bias.is_floating_point():
        raise TypeError(f"fff_forward_adaptivfloat8: in_bias must be floating point, got {in_bias.dtype}")
    _check_on_cpu("fff_forward_adaptivfloat8", x=x, in_codes=in_codes, in_bias=in_bias, out_codes=out_codes)
    for name, bias in (("in_exponent_bias", in_exponent_bias), ("out_exponent_bias", out_exponent_bias)):
        if not -126 <= bias <= 119:  # the scales and the largest decoded value must stay normal fp32 numbers
            raise ValueError(f"fff_forward_adaptivfloat8: {name} {bias} is outside [-126, 119]")


def fff_forward_adaptivfloat8(
    x: torch.Tensor,
    in_codes: torch.Tensor,
    in_exponent_bias: int,
    in_bias: torch.Tensor,
    out_codes: torch.Tensor,
    out_exponent_bias: int,
    residual: torch.Tensor | None = None,
) -> torch.Tensor:
    """Conditional FFF on the CPU with AdaptivFloat<8, 3> rows: ``in_codes`` / ``out_codes`` (K, N, H) uint8, each with
    its per-tensor exponent bias (see adaptivfloat.py); ``in_bias`` (K, N) float; ``x`` (T, H) float32 or bfloat16.
    Equals the fp32 kernel on the decoded weights to fp32 rounding (the tensor scales are powers of two).

    With ``residual`` (x's shape and dtype) it returns ``residual + FFF(x)``, the kernel adding each residual row while
    it writes the token's output (no separate pass over the activations): for float32, bit for bit the same as adding
    after the kernel; for bfloat16 the fp32 sum is rounded once."""
    global _op_adaptivfloat8, _op_adaptivfloat8_residual
    if _op_adaptivfloat8 is None:
        ok, reason = is_available()
        if not ok:
            raise RuntimeError(reason)
        if not hasattr(torch.ops.ultrafastbert, "fff_forward_cpu_af8"):  # a library built by an older copy
            raise RuntimeError("the FFF CPU kernel loaded in this process has no 8-bit AdaptivFloat op; it was "
                               "built from an older copy of fff_cpu_kernel.py")
        _op_adaptivfloat8_residual = (torch.ops.ultrafastbert.fff_forward_cpu_af8_residual.default
                                      if hasattr(torch.ops.ultrafastbert, "fff_forward_cpu_af8_residual") else False)
        _op_adaptivfloat8 = torch.ops.ultrafastbert.fff_forward_cpu_af8.default
    in_exponent_bias, out_exponent_bias = int(in_exponent_bias), int(out_exponent_bias)
    # one cheap combined test on the hot path, as in fff_forward; the detailed checks only run to name the problem
    if not (
        x.is_cpu and in_codes.is_cpu and in_bias.is_cpu and out_codes.is_cpu
        and x.dtype in _SUPPORTED_DTYPES and in_codes.dtype is torch.uint8 and out_codes.dtype is torch.uint8
        and in_bias.is_floating_point() and x.dim() == 2 and in_codes.dim() == 3
        and in_codes.shape == out_codes.shape and in_bias.shape == in_codes.shape[:2]
        and x.shape[1] == in_codes.shape[2] and _is_tree_size(in_codes.shape[1])
        and -126 <= in_exponent_bias <= 119 and -126 <= out_exponent_bias <= 119
    ):
        _check_adaptivfloat8_inputs(x, in_codes, in_exponent_bias, in_bias, out_codes, out_exponent_bias)
    if residual is None:
        return _op_adaptivfloat8(x, in_codes, in_exponent_bias, in_bias, out_codes, out_exponent_bias)
    if residual.shape != x.shape or residual.dtype != x.dtype:
        raise ValueError(f"fff_forward_adaptivfloat8: residual must have x's shape and dtype {tuple(x.shape)} "
                         f"{x.dtype}, got {tuple(residual.shape)} {residual.dtype}")
    if _op_adaptivfloat8_residual:
        return _op_adaptivfloat8_residual(x, in_codes, in_exponent_bias, in_bias, out_codes,
                                          out_exponent_bias, residual)
    return residual + _op_adaptivfloat8(x, in_codes, in_exponent_bias, in_bias, out_codes, out_exponent_bias)


def _register_fake_quantize_u8() -> None:
    @torch.library.register_fake(OP_NAME_QUANTIZE_U8)
    def _(x):
        torch._check(x.dim() == 2, lambda: "quantize_activations_u8: x must be 2-d")
        return (x.new_empty(x.shape, dtype=torch.uint8), x.new_empty((), dtype=torch.float32),
                x.new_empty((), dtype=torch.int64))


def quantize_activations_u8(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Dynamic per-tensor asymmetric uint8 quantization of ``x`` (T, K), float32 or bfloat16, as PyTorch's dynamic int8
    linear quantizes its input (range widened to hold 0, then its choice of scale and zero point; codes
    ``clamp(round(x / scale) + zero_point, 0, 255)``): returns (codes uint8 (T, K), scale float32 [], zero point
    int64 []), for oneDNN's int8 matmul (``torch.ops.onednn.qlinear_pointwise.tensor``)."""
    global _op_quantize_u8
    if _op_quantize_u8 is None:
        ok, reason = is_available()
        if not ok:
            raise RuntimeError(reason)
        _op_quantize_u8 = (torch.ops.ultrafastbert.quantize_activations_u8.default
                           if hasattr(torch.ops.ultrafastbert, "quantize_activations_u8") else False)
    if not _op_quantize_u8:
        raise RuntimeError("the FFF CPU kernel loaded in this process has no quantize_activations_u8 op; it was built "
                           "from an older copy of fff_cpu_kernel.py")
    return _op_quantize_u8(x)


def _register_fake_banded_span() -> None:
    @torch.library.register_fake(OP_NAME_BANDED_SPAN)
    def _(qkv_t, z, ramp, scaling, width, key_bias):
        torch._check(qkv_t.dim() == 5, lambda: "banded_span_attention_cpu: qkv_t must be (heads, 3, dim, batch, seq)")
        return qkv_t.new_empty((qkv_t.shape[0], qkv_t.shape[2], qkv_t.shape[3], qkv_t.shape[4]))


BANDED_SPAN_MAX_WIDTH = 512  # kMaxBandWidth in the C++ source


def banded_span_attention_available() -> bool:
    """Whether the loaded library has the banded adaptive-span attention op (one built by an older copy of this file
    lacks it)."""
    global _op_banded_span
    if _op_banded_span is None:
        ok, _ = is_available()
        _op_banded_span = (torch.ops.ultrafastbert.banded_span_attention_cpu.default
                           if ok and hasattr(torch.ops.ultrafastbert, "banded_span_attention_cpu") else False)
    return bool(_op_banded_span)


def banded_span_attention_op():
    """The op itself (after `banded_span_attention_available()` returned True), for callers that validated their
    inputs once and call it many times: ``op(qkv_t, z, ramp, scaling, width, key_bias_or_empty)``."""
    return _op_banded_span


def banded_span_attention(qkv_t: torch.Tensor, z: torch.Tensor, ramp: float, scaling: float, width: int,
                          key_bias: torch.Tensor | None = None) -> torch.Tensor:
    """Adaptive-span attention inside the band, on the CPU, fp32, in transposed layouts. ``qkv_t`` (heads, 3, head_dim,
    batch, seq): each head's queries, keys and values element-major (one GEMM of the compact projection weights with
    the transposed activations writes this); ``z`` (heads,) the spans minus the ramp; ``width`` the farthest distance
    any head sees (<= BANDED_SPAN_MAX_WIDTH); ``key_bias`` None or the additive padding bias of each key (batch * seq
    values). Returns the context transposed, (heads, head_dim, batch, seq). Query i of head h weighs key j by
    exp(score) * m(|i - j|), m(d) = clamp((ramp + z_h - d) / ramp, 0, 1), renormalised: the soft form's result computed
    over the band only; a query that sees nothing (only padding keys) gets zeros."""
    if not banded_span_attention_available():
        raise RuntimeError("the FFF CPU kernel loaded in this process has no banded_span_attention_cpu op (it could "
                           "not be built, or was built from an older copy of fff_cpu_kernel.py)")
    if qkv_t.dtype != torch.float32 or qkv_t.device.type != "cpu" or qkv_t.dim() != 5 or qkv_t.shape[1] != 3:
        raise ValueError(f"banded_span_attention: qkv_t must be a float32 CPU tensor (heads, 3, head_dim, batch, seq), "
                         f"got {qkv_t.dtype} {tuple(qkv_t.shape)} on {qkv_t.device}")
    if not 0 <= width <= BANDED_SPAN_MAX_WIDTH:
        raise ValueError(f"banded_span_attention: width must be in [0, {BANDED_SPAN_MAX_WIDTH}], got {width}")
    bias = qkv_t.new_empty(0) if key_bias is None else key_bias.to(torch.float32)
    return _op_banded_span(qkv_t, z.to(torch.float32), float(ramp), float(scaling), int(width), bias)


def packed_cache_size() -> int:
    """How many packed weight sets the kernel currently caches (for tests and diagnostics)."""
    is_available()
    return torch.ops.ultrafastbert.fff_cpu_packed_cache_size()


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Build / check the UltraFastBERT native CPU FFF kernel.")
    parser.add_argument("--build", action="store_true", help="compile the kernel into the cache now")
    args = parser.parse_args()
    ok, reason = is_available()
    print(reason)
    sys.exit(0 if ok else 1)
