// The bf16 element type for the fused loops (kernels_impl.h), on AVX512-BF16:
// the register tile over k pairs with vdpbf16ps and the float32 -> bf16
// store. Included only by kernels_avx512bf16.cpp, which instantiates
// Fused<SimdAvx512>'s loops with E = Bf16: the loops, the threading, the
// packed-sequence handling and the epilogues (the LSTM and GRU cell updates
// in float32) are the float kernels' own; only the product and the loads and
// stores of h / y differ.
//
// Tile: acc[b][v] (float32) += sum over pairs k2 of
//   in[b, 2k2] * panel[k2][v][:].lo + in[b, 2k2+1] * panel[k2][v][:].hi
// with in [BT, K] bf16 rows (stride ld_in) and a PairPanels block panel
// [K2][NV][16] words (NV from the epilogue, as tile.h). The pair
// (in[b, 2k2], in[b, 2k2+1]) is one 32-bit broadcast; an odd K's last pair is
// (in[b, K-1], 0), read as 16 bits, so nothing past a row's K elements is
// read.
#pragma once

#if !defined(__AVX512BF16__) || !defined(__AVX512F__) || !defined(__AVX512BW__) || \
    !defined(__AVX512VL__) || !defined(__AVX512DQ__)
#error "kernels_bf16.h needs AVX512-BF16 (with F, BW, VL, DQ)"
#endif

#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "cpu/fused/kernels_impl.h"
#include "cpu/fused/packing_bf16.h"

namespace lstm_ext::cpu::fused {

namespace bf16_tile {

using R = __m512;
constexpr int V = 16;

LSTM_EXT_INLINE __m512bh pair(const Bf16* p) {
  int32_t w;
  std::memcpy(&w, p, sizeof(w));
  return (__m512bh)_mm512_set1_epi32(w);
}
LSTM_EXT_INLINE __m512bh single(const Bf16* p) { return (__m512bh)_mm512_set1_epi32(p->bits); }
LSTM_EXT_INLINE __m512bh weights(const uint32_t* p) {
  return (__m512bh)_mm512_loadu_si512(static_cast<const void*>(p));
}

template <int BT, int NV>
LSTM_EXT_INLINE void product(const uint32_t* __restrict panel, int64_t K,
                             const Bf16* __restrict in, int64_t ld_in, R (&acc)[BT][NV]) {
  constexpr int64_t kStep = int64_t(NV) * V;  // words per k pair of a panel
  const int64_t full = K / 2;
  int64_t k2 = 0;
  if constexpr (BT <= 2) {
    // As tile.h: few rows leave too few independent chains to hide the
    // latency, so a second accumulator set takes the odd pairs.
    R odd[BT][NV];
    for (int b = 0; b < BT; ++b)
      for (int v = 0; v < NV; ++v) odd[b][v] = _mm512_setzero_ps();
    for (; k2 + 1 < full; k2 += 2) {
      const uint32_t* w = panel + k2 * kStep;
#pragma GCC unroll 2
      for (int b = 0; b < BT; ++b) {
        const __m512bh h0 = pair(in + b * ld_in + 2 * k2);
        const __m512bh h1 = pair(in + b * ld_in + 2 * k2 + 2);
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v) {
          acc[b][v] = _mm512_dpbf16_ps(acc[b][v], weights(w + v * V), h0);
          odd[b][v] = _mm512_dpbf16_ps(odd[b][v], weights(w + kStep + v * V), h1);
        }
      }
    }
    for (int b = 0; b < BT; ++b)
      for (int v = 0; v < NV; ++v) acc[b][v] = _mm512_add_ps(acc[b][v], odd[b][v]);
  }
#pragma GCC unroll 2
  for (; k2 < full; ++k2) {
    const uint32_t* w = panel + k2 * kStep;
    __m512bh wv[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) wv[v] = weights(w + v * V);
#pragma GCC unroll 8
    for (int b = 0; b < BT; ++b) {
      const __m512bh h = pair(in + b * ld_in + 2 * k2);
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[b][v] = _mm512_dpbf16_ps(acc[b][v], wv[v], h);
    }
  }
  if (K & 1) {  // the last pair: (in[b, K-1], 0) against (w[K-1], 0)
    const uint32_t* w = panel + full * kStep;
#pragma GCC unroll 8
    for (int b = 0; b < BT; ++b) {
      const __m512bh h = single(in + b * ld_in + K - 1);
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v)
        acc[b][v] = _mm512_dpbf16_ps(acc[b][v], weights(w + v * V), h);
    }
  }
}

// One tile, as tile.h's run_tile, but with the memory the epilogue touches
// fetched ahead, since a bf16 tile's product is short: prefetch; acc = 0;
// product; acc += epi.init; epi.finish. The input projection's output rows
// are cold (the [N,4H] gates): +3-5% there (M3200-6400, 2 threads); neutral
// in the recurrence.
template <int BT, class Epilogue>
LSTM_EXT_INLINE void run(const uint32_t* panel, int64_t K, const Bf16* in, int64_t ld_in,
                         const Epilogue& epi) {
  R acc[BT][Epilogue::NV];
#pragma GCC unroll 8
  for (int b = 0; b < BT; ++b) {
    epi.prefetch(b);
#pragma GCC unroll 4
    for (int v = 0; v < Epilogue::NV; ++v) acc[b][v] = _mm512_setzero_ps();
  }
  product(panel, K, in, ld_in, acc);
#pragma GCC unroll 8
  for (int b = 0; b < BT; ++b) {
#pragma GCC unroll 4
    for (int v = 0; v < Epilogue::NV; ++v) acc[b][v] = _mm512_add_ps(epi.init(b, v), acc[b][v]);
    epi.finish(b, acc[b]);
  }
}

}  // namespace bf16_tile

template <>
struct Elements<SimdAvx512, Bf16> {
  using Weights = PairPanels;
  static_assert(SimdAvx512::V == bf16_tile::V && SimdAvx512::kMaxRows == 6);

  // Round to nearest even (vcvtneps2bf16; NaN stays NaN, float32 denormals
  // become zero, which h in [-1, 1] never meets in practice).
  static LSTM_EXT_INLINE void store_n(Bf16* p, __m512 v, int n) {
    const __m256i h = (__m256i)_mm512_cvtneps_pbh(v);
    if (n >= bf16_tile::V) _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), h);
    else _mm256_mask_storeu_epi16(p, SimdAvx512::mask(n), h);
  }
  // Exact: a bfloat16 is the upper half of the float32 it stands for.
  static LSTM_EXT_INLINE __m512 load_n(const Bf16* p, int n) {
    const __m256i h = n >= bf16_tile::V
                          ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))
                          : _mm256_maskz_loadu_epi16(SimdAvx512::mask(n), p);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  }

  template <class Epilogue>
  static LSTM_EXT_INLINE void run_tile_rows(int rows, const PairPanels& w, int64_t block,
                                            const Bf16* in, int64_t ld_in, const Epilogue& epi) {
    const uint32_t* panel = w.panel(block);
    const int64_t K = w.K();
    switch (rows) {
      case 1: return bf16_tile::run<1>(panel, K, in, ld_in, epi);
      case 2: return bf16_tile::run<2>(panel, K, in, ld_in, epi);
      case 3: return bf16_tile::run<3>(panel, K, in, ld_in, epi);
      case 4: return bf16_tile::run<4>(panel, K, in, ld_in, epi);
      case 5: return bf16_tile::run<5>(panel, K, in, ld_in, epi);
      case 6: return bf16_tile::run<6>(panel, K, in, ld_in, epi);
    }
  }
};

}  // namespace lstm_ext::cpu::fused
