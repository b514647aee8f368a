// Weights packed for the register tile (tile.h), once per op call, by the
// threads of the loop that uses them (each packs the blocks it will read).
//
// A product out[b, n] = sum_k in[b, k] * W(n, k) is cut into blocks of NV
// vectors of V output units. Block j's panel is [K][NV][V], contiguous and
// k-major, so one k step of the tile reads NV aligned vectors; lanes past the
// last unit are zero. Which source element feeds which (vector, lane) is the
// PackKind:
//   kGates   w [G*H,K] of G gates (the LSTM's w_hh, G = 4; the GRU's, G = 3):
//            NV = G, block j = units [jV, jV+V), vector g = gate g, so a
//            tile holds every gate of the same units and the cell update
//            runs on the registers;
//   kRows    w [N,K] (out = in w^T: w_ih, the RNN's w_hh, w_hr): NV =
//            kVectors, block j = units [4jV, 4jV+4V), vector v = units
//            [4jV+vV, +V);
//   kColumns w [K,N] (out = in w: the backward's product with w_hh), blocked
//            like kRows.
// Torch-free; packs into memory the caller owns.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>

#if defined(__SSE__)
#include <xmmintrin.h>
#endif

namespace lstm_ext::cpu::fused {

// Vectors per k step of a kRows / kColumns panel, and the most of any panel
// (the LSTM's 4 gates): 4 weight vectors and 4 x kMaxRows accumulators fill
// the register file (simd.h).
constexpr int kVectors = 4;

enum class PackKind { kGates, kRows, kColumns };

// Vectors per k step (NV) of a panel of `kind`; `gates` counts kGates'.
constexpr int panel_vectors(PackKind kind, int gates) {
  return kind == PackKind::kGates ? gates : kVectors;
}

// rows[e] = the source row of w [.,K] (row-major, element type T) that feeds
// element e = v * V + l (vector v, lane l) of block j's panel, or null for a
// lane past the last of the N units; kGates (of `gates` gates) or kRows only
// (see above).
template <class T>
void block_source_rows(PackKind kind, int gates, const T* w, int64_t N, int64_t K, int V,
                       int64_t j, const T** rows) {
  const bool gated = kind == PackKind::kGates;
  const int vectors = panel_vectors(kind, gates);
  const int64_t per_block = gated ? V : int64_t(vectors) * V;
  for (int v = 0; v < vectors; ++v) {
    for (int l = 0; l < V; ++l) {
      const int64_t unit = j * per_block + (gated ? l : int64_t(v) * V + l);
      const int64_t n = gated ? v * N + unit : unit;
      rows[v * V + l] = unit < N ? w + n * K : nullptr;
    }
  }
}

class Panels {
 public:
  // Output units N and reduction length K of the product: kGates has N = H
  // (w is [gates*H,K]), kRows N = rows of w, kColumns N = columns of w.
  // `gates` (at most kVectors) matters for kGates only.
  static int64_t blocks(PackKind kind, int64_t N, int V) {
    const int64_t per_block = kind == PackKind::kGates ? V : int64_t(kVectors) * V;
    return (N + per_block - 1) / per_block;
  }
  static size_t floats(PackKind kind, int64_t N, int64_t K, int V, int gates = kVectors) {
    return size_t(blocks(kind, N, V) * K * panel_vectors(kind, gates) * V);
  }

  Panels() = default;
  // Lays out the panels of w in memory (floats(kind, N, K, V, gates) floats,
  // 64-byte aligned); pack() fills them, so the threads that will read a
  // block can pack it into their own caches.
  Panels(PackKind kind, const float* w, int64_t N, int64_t K, int V, float* memory,
         int gates = kVectors)
      : data_(memory), source_(w), kind_(kind), gates_(gates), blocks_(blocks(kind, N, V)), N_(N),
        K_(K), V_(V), step_(int64_t(panel_vectors(kind, gates)) * V) {}

  // Packs blocks [j0, j1). Different threads may pack disjoint ranges.
  void pack(int64_t j0, int64_t j1) const {
    if (kind_ == PackKind::kColumns) {
      pack_columns(j0, j1);
      return;
    }
    const float* rows[kVectors * 64];  // NV * V rows, NV <= kVectors, V <= 64
    for (int64_t j = j0; j < j1; ++j) {
      block_source_rows(kind_, gates_, source_, N_, K_, V_, j, rows);
      transpose_rows(rows, data_ + j * K_ * step_);
    }
  }

  // This thread's even share of the blocks, of `team` threads.
  void pack_share(int rank, int team) const {
    pack(blocks_ * rank / team, blocks_ * (rank + 1) / team);
  }

  int64_t blocks() const { return blocks_; }
  int64_t K() const { return K_; }
  const float* panel(int64_t block) const { return data_ + block * K_ * step_; }

 private:
  // dst [K][E] = rows[e][k] for E = NV * V source rows (null: zeros).
  // Chunks of 16 k keep the chunk's source lines and its 16 destination rows
  // in L1; within a chunk, 4 x 4 blocks are transposed in registers.
  void transpose_rows(const float* const* rows, float* dst) const {
    constexpr int64_t kChunk = 16;
    const int64_t E = step_;  // a multiple of 4
    for (int64_t k0 = 0; k0 < K_; k0 += kChunk) {
      const int64_t k1 = std::min(K_, k0 + kChunk);
      for (int64_t e = 0; e < E; e += 4) {
        const float* src[4] = {rows[e], rows[e + 1], rows[e + 2], rows[e + 3]};
        int64_t k = k0;
#if defined(__SSE__)
        if (src[0] && src[1] && src[2] && src[3]) {
          for (; k + 4 <= k1; k += 4) {
            __m128 r0 = _mm_loadu_ps(src[0] + k), r1 = _mm_loadu_ps(src[1] + k);
            __m128 r2 = _mm_loadu_ps(src[2] + k), r3 = _mm_loadu_ps(src[3] + k);
            _MM_TRANSPOSE4_PS(r0, r1, r2, r3);
            _mm_storeu_ps(dst + k * E + e, r0);
            _mm_storeu_ps(dst + (k + 1) * E + e, r1);
            _mm_storeu_ps(dst + (k + 2) * E + e, r2);
            _mm_storeu_ps(dst + (k + 3) * E + e, r3);
          }
        }
#endif
        for (; k < k1; ++k)
          for (int i = 0; i < 4; ++i) dst[k * E + e + i] = src[i] ? src[i][k] : 0.f;
      }
    }
  }

  // w [K,N]: block j's panel row k is w[k, 4jV .. 4jV+4V), already contiguous.
  void pack_columns(int64_t j0, int64_t j1) const {
    const int64_t per_block = int64_t(kVectors) * V_;
    for (int64_t j = j0; j < j1; ++j) {
      const int64_t n0 = j * per_block, n = std::min(per_block, N_ - n0);
      float* dst = data_ + j * K_ * per_block;
      for (int64_t k = 0; k < K_; ++k) {
        std::memcpy(dst + k * per_block, source_ + k * N_ + n0, sizeof(float) * n);
        std::fill(dst + k * per_block + n, dst + (k + 1) * per_block, 0.f);
      }
    }
  }

  float* data_ = nullptr;
  const float* source_ = nullptr;
  PackKind kind_ = PackKind::kRows;
  int gates_ = kVectors;
  int64_t blocks_ = 0, N_ = 0, K_ = 0;
  int V_ = 0;
  int64_t step_ = 0;  // floats per k step of a panel: NV * V
};

}  // namespace lstm_ext::cpu::fused
