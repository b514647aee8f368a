// What the persistent GRU kernels (persistent_gru_impl.cuh) do per (row,
// hidden unit) once the recurrent product is summed: the GRU counterpart of
// persistent_cell.cuh (which also provides the step bookkeeping and to_float
// used here). The formulas, their order of operations and the saved / gradient
// layouts are those of the standard path's step kernels (gru_kernels_impl.cuh),
// with the recurrent product gh = h_{t-1} W_hh^T in float32 instead of a GEMM
// result in the storage dtype. Arithmetic in float32 (Compute<T> is float for
// every dtype these kernels have).
//
// Letters as in persistent_gru.h: H hidden units, n the row in the [N, ...]
// buffers, row the row within the step (and the [B, ...] buffers), j the
// hidden unit.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/kernels_impl.cuh"
#include "cuda/persistent_cell.cuh"
#include "cuda/persistent_gru.h"

namespace lstm_ext::cuda::persistent_cell {

__device__ __forceinline__ float bias_or_zero(const float* b, int64_t i) { return b ? b[i] : 0.f; }

// Forward of unit j at row n: rec[g] is gate g's recurrent product (h_{t-1}
// W_hh^T, no bias; g = r, z, n) and hp the unit's h_{t-1} as the storage
// dtype holds it (the staged value). Writes y[n], h_next[row] and, when
// saved, gates[n] = r, z, n, hn.
template <typename T>
__device__ __forceinline__ void gru_unit_forward(const PersistentGruForward<T>& a,
                                                 const float (&rec)[3], float hp, int64_t n,
                                                 int64_t row, int64_t j, int64_t H, T* h_next) {
  const T* gi = a.gi + n * 3 * H;  // unit j's r column is gi[j]
  const float r = detail::sigmoid(to_float(gi[j]) + rec[0] + bias_or_zero(a.b_ih, j) +
                                  bias_or_zero(a.b_hh, j));
  const float z = detail::sigmoid(to_float(gi[H + j]) + rec[1] + bias_or_zero(a.b_ih, H + j) +
                                  bias_or_zero(a.b_hh, H + j));
  const float hn = rec[2] + bias_or_zero(a.b_hh, 2 * H + j);
  const float nv = tanhf(to_float(gi[2 * H + j]) + bias_or_zero(a.b_ih, 2 * H + j) + r * hn);
  // (1 - z) n + z h_{t-1} as the step kernel writes it: one multiply-add,
  // exactly h_{t-1} when z == 1.
  const T h = detail::cast_to<T>(nv + z * (hp - nv));
  a.y[n * H + j] = h;
  h_next[row * H + j] = h;
  if (a.gates) {
    Compute<T>* g = a.gates + n * 4 * H;
    g[j] = r;
    g[H + j] = z;
    g[2 * H + j] = nv;
    g[3 * H + j] = hn;
  }
}

// Backward of unit j at row n: dh is the gradient at h_t from the later
// steps (the direct part dh_{t+1} z_{t+1} plus the recurrent part, before
// grad_y), replaced by the direct part of the gradient at h_{t-1}, dh z.
// h_{t-1} is the forward's previous step's output (rows below prev_rows
// continue from row prev_base + row of y), else h0. Writes the gate
// gradients [dr, dz, d(hn), dn] to grad_gates[n].
template <typename T>
__device__ __forceinline__ void gru_unit_backward(const PersistentGruBackward<T>& a, int64_t n,
                                                  int64_t row, int64_t j, int64_t H,
                                                  int64_t prev_base, int64_t prev_rows,
                                                  float& dh) {
  const Compute<T>* g = a.gates + n * 4 * H;
  const float r = g[j], z = g[H + j], nv = g[2 * H + j], hn = g[3 * H + j];
  const float hp = row < prev_rows ? to_float(a.y[(prev_base + row) * H + j])
                                   : to_float(a.h0[row * H + j]);
  float d = dh;
  if (a.grad_y) d += to_float(a.grad_y[n * H + j]);
  const float dn = d * (1.f - z) * (1.f - nv * nv);
  const float dz = d * (hp - nv) * z * (1.f - z);
  const float dhn = dn * r;
  const float dr = dn * hn * r * (1.f - r);
  T* gg = a.grad_gates + n * 4 * H;
  gg[j] = detail::cast_to<T>(dr);
  gg[H + j] = detail::cast_to<T>(dz);
  gg[2 * H + j] = detail::cast_to<T>(dhn);
  gg[3 * H + j] = detail::cast_to<T>(dn);
  dh = d * z;
}

}  // namespace lstm_ext::cuda::persistent_cell
