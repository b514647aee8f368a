// bfloat16 weights packed as k-pair panels for the AVX512-BF16 register tile
// (kernels_bf16.h): the bf16 counterpart of packing.h's Panels.
//
// vdpbf16ps multiplies the two bf16 halves of each 32-bit lane of its two
// operands and adds both products to the float32 lane of the accumulator.
// So a panel stores, per output lane, the weights of two consecutive k in one
// 32-bit word (the lower k in the low half), and the tile broadcasts the pair
// (in[b, k], in[b, k+1]) to every lane. Block j's panel is
//   [K2][NV][V] words = [K2][NV][V][2] bf16,  K2 = ceil(K/2),
// with the same (vector, lane) -> output unit map as Panels for the same
// PackKind (kGates or kRows; kColumns is not needed by the bf16 forward).
// An odd K's last pair and lanes past the last unit hold zeros.
// Torch-free; packs into memory the caller owns.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "cpu/fused/packing.h"

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace lstm_ext::cpu::fused {

// The bits of one bfloat16 (layout-compatible with c10::BFloat16). A class
// type rather than uint16_t so the element type of h / y selects overloads.
struct Bf16 {
  uint16_t bits;
};
static_assert(sizeof(Bf16) == 2);

class PairPanels {
 public:
  static int64_t pairs(int64_t K) { return (K + 1) / 2; }
  // 32-bit words of the packed weights (one float-sized unit each).
  static size_t words(PackKind kind, int64_t N, int64_t K, int V, int gates = kVectors) {
    return size_t(Panels::blocks(kind, N, V) * pairs(K) * panel_vectors(kind, gates) * V);
  }

  PairPanels() = default;
  // w: kGates [gates*N,K] or kRows [N,K], row-major bf16. memory: words(kind,
  // N, K, V, gates) words, 64-byte aligned.
  PairPanels(PackKind kind, const Bf16* w, int64_t N, int64_t K, int V, uint32_t* memory,
             int gates = kVectors)
      : data_(memory), source_(w), kind_(kind), gates_(gates), blocks_(Panels::blocks(kind, N, V)),
        N_(N), K_(K), V_(V), step_(int64_t(panel_vectors(kind, gates)) * V) {}

  // Packs blocks [j0, j1), as Panels::pack.
  void pack(int64_t j0, int64_t j1) const {
    const Bf16* rows[kVectors * 64];  // NV * V rows, NV <= kVectors, V <= 64
    for (int64_t j = j0; j < j1; ++j) {
      block_source_rows(kind_, gates_, source_, N_, K_, V_, j, rows);
      transpose_pairs(rows, step_, data_ + j * pairs(K_) * step_);
    }
  }

  void pack_share(int rank, int team) const {
    pack(blocks_ * rank / team, blocks_ * (rank + 1) / team);
  }

  int64_t blocks() const { return blocks_; }
  int64_t K() const { return K_; }  // in bf16 elements (not pairs)
  const uint32_t* panel(int64_t block) const { return data_ + block * pairs(K_) * step_; }

 private:
  // dst [K2][E] words = the k pairs of rows[e] (null: zeros), as Panels'
  // transpose_rows does for floats: chunks of 16 pairs, 4 x 4 word blocks
  // transposed in registers. An odd K's last pair is (row[K-1], 0): nothing
  // past a row's K elements is read.
  void transpose_pairs(const Bf16* const* rows, int64_t E, uint32_t* dst) const {
    constexpr int64_t kChunk = 16;
    const int64_t K2 = pairs(K_), full = K_ / 2;
    const auto word = [&](const Bf16* row, int64_t k) -> uint32_t {
      if (!row) return 0;
      if (k >= full) return row[2 * k].bits;
      uint32_t w;
      std::memcpy(&w, row + 2 * k, sizeof(w));
      return w;
    };
    for (int64_t k0 = 0; k0 < K2; k0 += kChunk) {
      const int64_t k1 = std::min(K2, k0 + kChunk);
      for (int64_t e = 0; e < E; e += 4) {
        const Bf16* src[4] = {rows[e], rows[e + 1], rows[e + 2], rows[e + 3]};
        int64_t k = k0;
#if defined(__SSE2__)
        if (src[0] && src[1] && src[2] && src[3]) {
          for (; k + 4 <= std::min(k1, full); k += 4) {
            __m128 r[4];
            for (int i = 0; i < 4; ++i)
              r[i] = _mm_castsi128_ps(
                  _mm_loadu_si128(reinterpret_cast<const __m128i*>(src[i] + 2 * k)));
            _MM_TRANSPOSE4_PS(r[0], r[1], r[2], r[3]);
            for (int i = 0; i < 4; ++i)
              _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + (k + i) * E + e),
                               _mm_castps_si128(r[i]));
          }
        }
#endif
        for (; k < k1; ++k)
          for (int i = 0; i < 4; ++i) dst[k * E + e + i] = word(src[i], k);
      }
    }
  }

  uint32_t* data_ = nullptr;
  const Bf16* source_ = nullptr;
  PackKind kind_ = PackKind::kRows;
  int gates_ = kVectors;
  int64_t blocks_ = 0, N_ = 0, K_ = 0;
  int V_ = 0;
  int64_t step_ = 0;  // words per k pair of a panel: NV * V
};

}  // namespace lstm_ext::cpu::fused
