// Definitions of the persistent GRU kernels (persistent_gru.h), instantiated
// per dtype by persistent_<dtype>.cu with LSTM_EXT_INSTANTIATE_PERSISTENT_GRU,
// next to the LSTM's. They are the persistent LSTM kernels' scheme with the
// GRU's cell, built from the same pieces (persistent_impl.cuh: carve, weight
// slice loads, staging, block_dots, tiles, recurrent_gradient, cooperative
// launch; persistent_cell.cuh: step bookkeeping) and the GRU's per-unit
// math (persistent_gru_cell.cuh).
//
// Shared memory (persistent_impl.cuh, Gates = 3):
//   weights  forward [3U][H] (row q = g*U + u: gate g of unit u0 + u),
//            backward [U][3H] (row u: column u0 + u of W_hh)
//   state    backward dh [B][U] floats (the forward keeps no state)
//   stage    [tile_rows][H] (h_{t-1}) or [tile_rows][3H] (d(gh) rows)
//   partial  [tile_rows][3U] floats
//
// Forward: h_{t-1} is exchanged through h_buffers [2,B,H] (step s reads
// buffer s&1, writes buffer (s+1)&1), staged with __ldcg after the grid
// barrier; a unit's own h_{t-1} (the z h_{t-1} term) is read from the staged
// tile, so it is the storage-dtype value the product used. Rows a step does
// not reach (packed) are copied forward, so a reverse packed step with more
// rows than the previous one finds h0 in its new rows.
//
// Backward: dh [B][U] holds, per row, the gradient at h_t. After a step it
// holds the direct part of the gradient at h_{t-1} (dh z); at the next visited
// step the block adds the recurrent part d(gh)_{t} W_hh for the previously
// visited step's rows (recurrent_gradient with accumulation, d(gh) the first
// 3H columns of grad_gates, staged with __ldcg after the grid barrier). Rows
// the previously visited step did not reach keep grad_h_n (forward packed:
// sequences that end here); rows past the current step keep what they hold
// (reverse packed: sequences that started at the previous visited step, whose
// dh is then their gradient at h0). After the loop, the first forward step's
// recurrent part is added, and dh is grad_h0.
#pragma once

#include <cooperative_groups.h>
#include <cuda_runtime.h>

#include "cuda/persistent_gru.h"
#include "cuda/persistent_gru_cell.cuh"
#include "cuda/persistent_impl.cuh"

namespace lstm_ext::cuda {
namespace persistent_detail {

using persistent_cell::gru_unit_backward;
using persistent_cell::gru_unit_forward;

// grad_gates [N,4H] per row [dr, dz, d(hn), dn]: the recurrence's operand is
// d(gh) = the first 3H columns, at row stride 4H; the product is added to the
// direct part dh z that the step left in dh.
struct GruGradients {
  static constexpr int kGates = kGruGates;
  static constexpr int kStride = 4;
  static constexpr bool kAccumulate = true;
};

template <typename T>
__global__ void __launch_bounds__(kPersistentThreads)
    gru_forward_kernel(PersistentGruForward<T> a, int U, int tile_rows) {
  extern __shared__ __align__(16) unsigned char smem_base[];
  cg::grid_group grid = cg::this_grid();
  const int64_t T_steps = a.T_steps, B = a.B, H = a.H;
  const int64_t u0 = static_cast<int64_t>(blockIdx.x) * U;
  const int units = static_cast<int>(H - u0 < U ? H - u0 : U);
  const int Q = kGruGates * U;
  const Smem sm = carve<T, kGruGates>(smem_base, B, H, U, tile_rows, H);
  T* w = reinterpret_cast<T*>(sm.weights);  // [3U][H]

  load_gate_rows<kGruGates>(w, a.w_hh, H, U, u0, units);
  load_first_h(a.h_buffers, a.h0, B, H, u0, units);
  grid.sync();

  for (int64_t s = 0; s < T_steps; ++s) {
    const StepRows step = rows_of(a.offsets, step_at(T_steps, s, a.reverse), B);
    const T* h_prev = a.h_buffers + (s & 1) * B * H;
    T* h_next = a.h_buffers + ((s + 1) & 1) * B * H;
    for (int64_t r0 = 0; r0 < step.rows; r0 += tile_rows) {
      const int nr = tile_size(step.rows, r0, tile_rows);
      tile_products(sm, h_prev + r0 * H, nr, H, w, Q);
      for (int64_t e = threadIdx.x; e < nr * units; e += blockDim.x) {
        const int64_t r = e / units, u = e - r * units, row = r0 + r, j = u0 + u;
        float rec[kGruGates];
#pragma unroll
        for (int g = 0; g < kGruGates; ++g) rec[g] = sm.partial[r * Q + g * U + u];
        gru_unit_forward(a, rec, sm.stage[r * H + j], step.base + row, row, j, H, h_next);
      }
      __syncthreads();  // before the next tile overwrites stage and partial
    }
    keep_rows(h_prev, h_next, step.rows, B, H, u0, units);
    grid.sync();
  }

  const T* h_last = a.h_buffers + (T_steps & 1) * B * H;
  for (int64_t e = threadIdx.x; e < B * units; e += blockDim.x) {
    const int64_t r = e / units, j = u0 + (e - r * units);
    a.h_n[r * H + j] = h_last[r * H + j];
  }
}

template <typename T>
__global__ void __launch_bounds__(kPersistentThreads)
    gru_backward_kernel(PersistentGruBackward<T> a, int U, int tile_rows) {
  extern __shared__ __align__(16) unsigned char smem_base[];
  cg::grid_group grid = cg::this_grid();
  const int64_t T_steps = a.T_steps, B = a.B, H = a.H, G = kGruGates * H;
  const int64_t u0 = static_cast<int64_t>(blockIdx.x) * U;
  const int units = static_cast<int>(H - u0 < U ? H - u0 : U);
  const Smem sm = carve<T, kGruGates>(smem_base, B, H, U, tile_rows, G);
  T* wc = reinterpret_cast<T*>(sm.weights);  // [U][3H]
  float* dh = sm.state;                      // [B][U]

  load_unit_columns<kGruGates>(wc, a.w_hh, H, U, u0, units);
  for (int64_t e = threadIdx.x; e < B * units; e += blockDim.x) {
    const int64_t r = e / units, u = e - r * units, j = u0 + u;
    dh[r * U + u] = a.grad_h_n ? to_float(a.grad_h_n[r * H + j]) : 0.f;
  }
  __syncthreads();

  // Visit the forward's steps last to first: forward step index sf = T-1-s.
  for (int64_t s = 0; s < T_steps; ++s) {
    const int64_t sf = T_steps - 1 - s;
    const StepRows step = rows_of(a.offsets, step_at(T_steps, sf, a.reverse), B);
    if (s > 0) {  // add the recurrent part of the gradient at h_t from the step visited before
      const StepRows later = rows_of(a.offsets, step_at(T_steps, sf + 1, a.reverse), B);
      recurrent_gradient<GruGradients>(sm, wc, a.grad_gates, later.base, later.rows, H, U,
                                       units, tile_rows, dh);
    }
    // h_{t-1}: the forward's previous step's y (prev.rows rows continue), else h0.
    const StepRows prev =
        sf > 0 ? rows_of(a.offsets, step_at(T_steps, sf - 1, a.reverse), B) : StepRows{0, 0};
    for (int64_t e = threadIdx.x; e < step.rows * units; e += blockDim.x) {
      const int64_t row = e / units, u = e - row * units;
      gru_unit_backward(a, step.base + row, row, u0 + u, H, prev.base, prev.rows, dh[row * U + u]);
    }
    grid.sync();  // grad_gates of this step, for every block's next recurrent_gradient
  }

  if (T_steps > 0) {  // the recurrent part of the gradient at h0, from the first forward step
    const StepRows first = rows_of(a.offsets, step_at(T_steps, 0, a.reverse), B);
    recurrent_gradient<GruGradients>(sm, wc, a.grad_gates, first.base, first.rows, H, U, units,
                                     tile_rows, dh);
  }
  for (int64_t e = threadIdx.x; e < B * units; e += blockDim.x) {
    const int64_t r = e / units, u = e - r * units;
    a.grad_h0[r * H + u0 + u] = cast_to<T>(dh[r * U + u]);
  }
}

}  // namespace persistent_detail

template <typename T>
cudaError_t persistent_gru_forward(const PersistentGruForward<T>& a, const PersistentPlan& plan,
                                   cudaStream_t stream) {
  return persistent_detail::launch_cooperative(persistent_detail::gru_forward_kernel<T>, a, plan,
                                               stream);
}

template <typename T>
cudaError_t persistent_gru_backward(const PersistentGruBackward<T>& a,
                                    const PersistentPlan& plan, cudaStream_t stream) {
  return persistent_detail::launch_cooperative(persistent_detail::gru_backward_kernel<T>, a, plan,
                                               stream);
}

template <typename T>
cudaError_t persistent_gru_fits(const PersistentPlan& plan, bool backward, int sms, bool* fits) {
  const void* kernel =
      backward ? reinterpret_cast<const void*>(persistent_detail::gru_backward_kernel<T>)
               : reinterpret_cast<const void*>(persistent_detail::gru_forward_kernel<T>);
  return cooperative::fits(kernel, kPersistentThreads, plan.smem_limit, plan.smem_bytes,
                           plan.blocks, sms, fits);
}

}  // namespace lstm_ext::cuda

#define LSTM_EXT_INSTANTIATE_PERSISTENT_GRU(T)                                               \
  namespace lstm_ext::cuda {                                                                 \
  template cudaError_t persistent_gru_forward<T>(const PersistentGruForward<T>&,             \
                                                 const PersistentPlan&, cudaStream_t);       \
  template cudaError_t persistent_gru_backward<T>(const PersistentGruBackward<T>&,           \
                                                  const PersistentPlan&, cudaStream_t);      \
  template cudaError_t persistent_gru_fits<T>(const PersistentPlan&, bool, int, bool*);      \
  }
