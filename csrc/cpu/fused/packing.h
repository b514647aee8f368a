// Weights packed for the register tile (tile.h), once per op call, before
// the time loop.
//
// A product out[b, n] = sum_k in[b, k] * W(n, k) is cut into blocks of
// kVectors vectors of V output units. Block j's panel is [K][kVectors][V],
// contiguous and k-major, so one k step of the tile reads kVectors aligned
// vectors; lanes past the last unit are zero. Which source row feeds which
// (vector, lane) is the caller's choice:
//   gate-interleaved (LSTM forward): block j = units [jV, jV+V), vector g =
//     gate g, so a tile holds i, f, g, o of the same units and the cell
//     update runs on the registers;
//   plain: block j = units [4jV, 4jV+4V), vector v = units [4jV+vV, +V).
// Torch-free; owns its memory.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <vector>

namespace lstm_ext::cpu::fused {

constexpr int kVectors = 4;  // vectors per k step of a panel (= LSTM gates)

struct AlignedFree {
  void operator()(float* p) const { std::free(p); }
};

class Panels {
 public:
  Panels() = default;
  // W(n, k) = w[n * ld_n + k * ld_k] for n < N; `gates` selects the
  // gate-interleaved layout, where N = 4H and n = gate * H + unit.
  Panels(const float* w, int64_t N, int64_t K, int64_t ld_n, int64_t ld_k, int V, bool gates)
      : K_(K), V_(V) {
    const int64_t units = gates ? N / kVectors : N;
    const int64_t per_block = gates ? V : int64_t(kVectors) * V;
    blocks_ = (units + per_block - 1) / per_block;
    const int64_t panel = K * kVectors * V;
    const size_t bytes = size_t(blocks_ * panel) * sizeof(float);
    data_.reset(static_cast<float*>(std::aligned_alloc(64, (bytes + 63) / 64 * 64 + 64)));
    // Source rows of one block: one per (vector, lane), null past the end.
    std::vector<const float*> rows(size_t(kVectors) * V);
    for (int64_t j = 0; j < blocks_; ++j) {
      for (int v = 0; v < kVectors; ++v) {
        for (int l = 0; l < V; ++l) {
          const int64_t unit = j * per_block + (gates ? l : int64_t(v) * V + l);
          const int64_t n = gates ? v * units + unit : unit;
          rows[v * V + l] = unit < units ? w + n * ld_n : nullptr;
        }
      }
      // k in chunks of one cache line: each source row is read a line at a
      // time and the chunk's destination (16 k steps) stays in L1.
      float* dst = data_.get() + j * panel;
      constexpr int64_t kChunk = 16;
      for (int64_t k0 = 0; k0 < K; k0 += kChunk) {
        const int64_t k1 = std::min(K, k0 + kChunk);
        for (int64_t e = 0; e < int64_t(kVectors) * V; ++e) {
          const float* src = rows[e];
          float* d = dst + e;
          for (int64_t k = k0; k < k1; ++k) d[k * kVectors * V] = src ? src[k * ld_k] : 0.f;
        }
      }
    }
  }

  int64_t blocks() const { return blocks_; }
  int64_t K() const { return K_; }
  const float* panel(int64_t block) const { return data_.get() + block * K_ * kVectors * V_; }

 private:
  std::unique_ptr<float, AlignedFree> data_;
  int64_t blocks_ = 0, K_ = 0;
  int V_ = 0;
};

}  // namespace lstm_ext::cpu::fused
