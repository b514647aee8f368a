// The register-tile micro-kernel shared by every fused loop.
//
// acc[b][v] += sum_k in[b, k] * panel[k][v][:] for BT rows b and the NV
// vectors v of one panel (packing.h): per k, NV weight loads, BT broadcasts
// and BT * NV FMAs, with all accumulators in registers. NV is a compile-time
// constant of the epilogue (kVectors = 4 for the LSTM's gates and the plain
// blocks, 3 for the GRU's gates), so each tile is unrolled for exactly the
// vectors its panel holds. The caller initialises acc (gate pre-activations,
// a bias, zeros) and consumes it in registers (the cell update), so the
// product's result never makes a round trip through memory.
#pragma once

#include <cstdint>

#include "cpu/fused/packing.h"
#include "cpu/fused/simd.h"

namespace lstm_ext::cpu::fused {

// in [BT, K] with row stride ld_in; panel [K][NV][V].
template <class S, int BT, int NV>
LSTM_EXT_INLINE void tile_product(const float* __restrict panel, int64_t K,
                                  const float* __restrict in, int64_t ld_in,
                                  typename S::Reg (&acc)[BT][NV]) {
  using R = typename S::Reg;
  constexpr int V = S::V;
  constexpr int64_t step = int64_t(NV) * V;
  int64_t k = 0;
  if constexpr (BT <= 2) {
    // Few rows leave too few independent FMA chains to hide the FMA latency:
    // a second accumulator set takes the odd k.
    R odd[BT][NV];
    for (int b = 0; b < BT; ++b)
      for (int v = 0; v < NV; ++v) odd[b][v] = S::zero();
    for (; k + 1 < K; k += 2) {
      const float* w = panel + k * step;
#pragma GCC unroll 2
      for (int b = 0; b < BT; ++b) {
        const R h0 = S::set1(in[b * ld_in + k]);
        const R h1 = S::set1(in[b * ld_in + k + 1]);
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v) {
          acc[b][v] = S::fma(S::load(w + v * V), h0, acc[b][v]);
          odd[b][v] = S::fma(S::load(w + step + v * V), h1, odd[b][v]);
        }
      }
    }
    for (int b = 0; b < BT; ++b)
      for (int v = 0; v < NV; ++v) acc[b][v] = S::add(acc[b][v], odd[b][v]);
  }
#pragma GCC unroll 2
  for (; k < K; ++k) {
    const float* w = panel + k * step;
    R wv[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) wv[v] = S::load(w + v * V);
#pragma GCC unroll 8
    for (int b = 0; b < BT; ++b) {
      const R h = S::set1(in[b * ld_in + k]);
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[b][v] = S::fma(wv[v], h, acc[b][v]);
    }
  }
}

// One tile: acc = epi.init(b, v); product; epi.finish(b, acc[b]). The
// panel holds Epilogue::NV vectors per k step.
template <class S, int BT, class Epilogue>
LSTM_EXT_INLINE void run_tile(const float* panel, int64_t K, const float* in, int64_t ld_in,
                              const Epilogue& epi) {
  typename S::Reg acc[BT][Epilogue::NV];
#pragma GCC unroll 8
  for (int b = 0; b < BT; ++b)
#pragma GCC unroll 4
    for (int v = 0; v < Epilogue::NV; ++v) acc[b][v] = epi.init(b, v);
  tile_product<S, BT>(panel, K, in, ld_in, acc);
#pragma GCC unroll 8
  for (int b = 0; b < BT; ++b) epi.finish(b, acc[b]);
}

// run_tile with a run-time row count 1 <= rows <= S::kMaxRows.
template <class S, class Epilogue>
inline void run_tile_rows(int rows, const float* panel, int64_t K, const float* in,
                          int64_t ld_in, const Epilogue& epi) {
  switch (rows) {
    case 1: return run_tile<S, 1>(panel, K, in, ld_in, epi);
    case 2: return run_tile<S, 2>(panel, K, in, ld_in, epi);
    case 3: return run_tile<S, 3>(panel, K, in, ld_in, epi);
  }
  if constexpr (S::kMaxRows >= 6) {
    switch (rows) {
      case 4: return run_tile<S, 4>(panel, K, in, ld_in, epi);
      case 5: return run_tile<S, 5>(panel, K, in, ld_in, epi);
      case 6: return run_tile<S, 6>(panel, K, in, ld_in, epi);
    }
  } else if constexpr (S::kMaxRows >= 4) {
    if (rows == 4) return run_tile<S, 4>(panel, K, in, ld_in, epi);
  }
}

// Batch rows cut into `count` balanced tiles of at most max_rows rows.
struct RowTiles {
  RowTiles(int64_t rows, int max_rows) : rows(rows), count((rows + max_rows - 1) / max_rows) {}
  int64_t begin(int64_t i) const { return rows * i / count; }
  int64_t end(int64_t i) const { return rows * (i + 1) / count; }
  int64_t rows, count;
};

// The contiguous share [begin, end) of `items` work items owned by `rank`.
struct Share {
  Share(int64_t items, int rank, int team)
      : begin(items * rank / team), end(items * (rank + 1) / team) {}
  int64_t begin, end;
};

}  // namespace lstm_ext::cpu::fused
