// bfloat16 weights packed as k-pair panels for the AVX512-BF16 register tile
// (tile_bf16.h): the bf16 counterpart of packing.h's Panels.
//
// vdpbf16ps multiplies the two bf16 halves of each 32-bit lane of its two
// operands and adds both products to the float32 lane of the accumulator.
// So a panel stores, per output lane, the weights of two consecutive k in one
// 32-bit word (the lower k in the low half), and the tile broadcasts the pair
// (in[b, k], in[b, k+1]) to every lane. Block j's panel is
//   [K2][kVectors][V] words = [K2][kVectors][V][2] bf16,  K2 = ceil(K/2),
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
  static size_t words(PackKind kind, int64_t N, int64_t K, int V) {
    return size_t(Panels::blocks(kind, N, V) * pairs(K) * kVectors * V);
  }

  PairPanels() = default;
  // w: kGates [4N,K] or kRows [N,K], row-major bf16. memory: words(kind, N,
  // K, V) words, 64-byte aligned.
  PairPanels(PackKind kind, const Bf16* w, int64_t N, int64_t K, int V, uint32_t* memory)
      : data_(memory), blocks_(Panels::blocks(kind, N, V)), K_(K), V_(V) {
    const bool gates = kind == PackKind::kGates;
    const int64_t per_block = gates ? V : int64_t(kVectors) * V;
    const int64_t K2 = pairs(K), E = int64_t(kVectors) * V, full = K / 2;
    constexpr int64_t kChunk = 32;  // pairs per chunk: 2 cache lines of each source row
    for (int64_t j = 0; j < blocks_; ++j) {
      uint32_t* dst = data_ + j * K2 * E;
      for (int64_t k0 = 0; k0 < K2; k0 += kChunk) {
        const int64_t k1 = std::min(K2, k0 + kChunk);
        for (int64_t e = 0; e < E; ++e) {
          const int v = int(e / V), l = int(e % V);
          const int64_t unit = j * per_block + (gates ? l : int64_t(v) * V + l);
          const Bf16* row = unit < N ? w + (gates ? v * N + unit : unit) * K : nullptr;
          for (int64_t k = k0; k < k1; ++k) {
            uint32_t word = 0;
            if (row && k < full) {
              std::memcpy(&word, row + 2 * k, sizeof(word));
            } else if (row) {  // odd K: (w[K-1], 0)
              word = row[2 * k].bits;
            }
            dst[k * E + e] = word;
          }
        }
      }
    }
  }

  int64_t blocks() const { return blocks_; }
  int64_t K() const { return K_; }  // in bf16 elements (not pairs)
  int vector_width() const { return V_; }
  const uint32_t* panel(int64_t block) const { return data_ + block * pairs(K_) * kVectors * V_; }

 private:
  uint32_t* data_ = nullptr;
  int64_t blocks_ = 0, K_ = 0;
  int V_ = 0;
};

}  // namespace lstm_ext::cpu::fused
