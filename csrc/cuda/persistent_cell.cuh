// What both persistent LSTM kernels do per (row, hidden unit) once their
// recurrent product is summed: the SIMT one (persistent_impl.cuh) and the
// tensor-core one (tensorcore_impl.cuh) differ only in how they compute that
// product, so the cell update, the gate gradients and the step bookkeeping
// live here once (the bookkeeping, step_at / first_row / rows_of, and
// to_float also serve the persistent GRU kernels: persistent_gru_cell.cuh).
// Arithmetic in float32 whatever T, as the standard path's step kernels
// (kernels_impl.cuh).
//
// Letters as in persistent.h: H hidden units, G = 4H gate rows, n the row in
// the [N, ...] buffers, row the row within the step (and the state buffers),
// j the hidden unit.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/kernels_impl.cuh"
#include "cuda/persistent.h"

namespace lstm_ext::cuda::persistent_cell {

template <typename T>
__device__ __forceinline__ float to_float(T v) {
  return static_cast<float>(v);
}
template <>
__device__ __forceinline__ float to_float<__half>(__half v) {
  return __half2float(v);
}
template <>
__device__ __forceinline__ float to_float<__nv_bfloat16>(__nv_bfloat16 v) {
  return __bfloat162float(v);
}

// The forward's time of visit s (the backward visits them last to first).
__device__ __forceinline__ int64_t step_at(int64_t T, int64_t s, bool reverse) {
  return reverse ? T - 1 - s : s;
}

// First row of step t: offsets[t], or t*B for dense input (offsets null).
__device__ __forceinline__ int64_t first_row(const int64_t* offsets, int64_t t, int64_t B) {
  return offsets ? offsets[t] : t * B;
}

// The rows of the forward's step t: [base, base + rows) in the [N, ...] buffers.
struct StepRows {
  int64_t base, rows;
};
__device__ __forceinline__ StepRows rows_of(const int64_t* offsets, int64_t t, int64_t B) {
  const int64_t base = first_row(offsets, t, B);
  return {base, first_row(offsets, t + 1, B) - base};
}

// Forward of unit j at row n: rec[g] is gate g's recurrent product
// (h_{t-1} W_hh^T); adds the projection and bias, updates the unit's cell
// state c in place, and writes y, h_next[row] and (when saved) gates, cells.
template <typename T>
__device__ __forceinline__ void lstm_unit_forward(const PersistentForward<T>& a, const float (&rec)[4],
                                                  int64_t n, int64_t row, int64_t j, int64_t H,
                                                  float& c, T* h_next) {
  const int64_t G = 4 * H;
  float pre[4];
#pragma unroll
  for (int g = 0; g < 4; ++g) {
    pre[g] = rec[g] + to_float(a.proj[n * G + g * H + j]) +
             (a.bias ? static_cast<float>(a.bias[g * H + j]) : 0.f);
  }
  const float i = detail::sigmoid(pre[0]), f = detail::sigmoid(pre[1]), gg = tanhf(pre[2]),
              o = detail::sigmoid(pre[3]);
  const float cn = f * c + i * gg;
  const T h = detail::cast_to<T>(o * tanhf(cn));
  c = cn;
  a.y[n * H + j] = h;
  h_next[row * H + j] = h;
  if (a.gates) {
    a.gates[n * G + j] = i;
    a.gates[n * G + H + j] = f;
    a.gates[n * G + 2 * H + j] = gg;
    a.gates[n * G + 3 * H + j] = o;
  }
  if (a.cells) a.cells[n * H + j] = cn;
}

// Backward of unit j at row n: dh is the gradient at h_t from the later step
// (before grad_y), dc the unit's cell-state gradient, updated in place to the
// gradient at c_{t-1}. c_{t-1} is the forward's previous step's cell
// (rows below prev_rows continue from row prev_base + row), else c0. Writes
// the four pre-activation gradients to dgates[n].
template <typename T>
__device__ __forceinline__ void lstm_unit_backward(const PersistentBackward<T>& a, int64_t n,
                                                   int64_t row, int64_t j, int64_t H,
                                                   int64_t prev_base, int64_t prev_rows, float dh,
                                                   float& dc) {
  const int64_t G = 4 * H;
  const float i = a.gates[n * G + j], f = a.gates[n * G + H + j], gg = a.gates[n * G + 2 * H + j],
              o = a.gates[n * G + 3 * H + j];
  const float cell = a.cells[n * H + j];
  const float c_prev = row < prev_rows ? static_cast<float>(a.cells[(prev_base + row) * H + j])
                                       : static_cast<float>(a.c0[row * H + j]);
  if (a.grad_y) dh += to_float(a.grad_y[n * H + j]);
  float dct = dc;
  if (a.grad_cells) dct += static_cast<float>(a.grad_cells[n * H + j]);
  const float tc = tanhf(cell);
  dct += dh * o * (1.f - tc * tc);
  a.dgates[n * G + j] = detail::cast_to<T>(dct * gg * i * (1.f - i));
  a.dgates[n * G + H + j] = detail::cast_to<T>(dct * c_prev * f * (1.f - f));
  a.dgates[n * G + 2 * H + j] = detail::cast_to<T>(dct * i * (1.f - gg * gg));
  a.dgates[n * G + 3 * H + j] = detail::cast_to<T>(dh * tc * o * (1.f - o));
  dc = dct * f;
}

}  // namespace lstm_ext::cuda::persistent_cell
