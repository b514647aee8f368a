// Definitions of the persistent LSTM kernels (persistent.h), instantiated per
// dtype by persistent_<dtype>.cu with LSTM_EXT_INSTANTIATE_PERSISTENT, and
// the building blocks the persistent GRU kernels (persistent_gru_impl.cuh)
// share with them: the shared-memory carve, weight slice loads, row staging,
// the register-tiled block products, the per-step tile loop, the recurrent
// gradient and the cooperative launch.
//
// Shared memory of a block, in the order plan_persistent sizes it (Gates = 4
// for the LSTM, 3 for the GRU):
//   weights  [Gates*U][H] (forward: row q = g*U + u is gate g of unit u0 + u) or
//            [U][Gates*H] (backward: row u is column u0 + u of W_hh), T
//   state    [B][U] floats x 2 (LSTM forward: c; LSTM backward: dh, dc; GRU
//            backward: dh; GRU forward: unused)
//   stage    [tile_rows][width] floats (h_{t-1} rows, or dgates rows)
//   partial  [tile_rows][Gates*U] floats (the block's products for the staged rows)
// Rows of units past H (the last block) are zero and never written out.
//
// Data other blocks wrote in the previous step (h_{t-1}, dgates) is read with
// __ldcg (L2, not L1: L1 is not coherent between SMs); the grid barrier
// orders those writes before the reads.
#pragma once

#include <cooperative_groups.h>
#include <cuda_runtime.h>

#include "cuda/cooperative_launch.cuh"
#include "cuda/kernels_impl.cuh"
#include "cuda/persistent.h"
#include "cuda/persistent_cell.cuh"

namespace lstm_ext::cuda {
namespace persistent_detail {

namespace cg = cooperative_groups;
using detail::cast_to;
using persistent_cell::first_row;
using persistent_cell::lstm_unit_backward;
using persistent_cell::lstm_unit_forward;
using persistent_cell::rows_of;
using persistent_cell::step_at;
using persistent_cell::StepRows;
using persistent_cell::to_float;

constexpr int kRowGroup = 4;  // rows per warp work item (register tile)
constexpr int kColGroup = 8;  // matrix rows per warp work item

__host__ __device__ inline size_t align16(size_t n) { return (n + 15) / 16 * 16; }


__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

// out[r][p] = sum_k rows[r][k] * mat[p][k] for r < nr, p < np: rows [nr][len]
// floats and mat [np][len] in shared memory, out [nr][np]. Each warp item is a
// kRowGroup x kColGroup register tile, so mat is read once per row group.
template <typename T>
__device__ void block_dots(const float* rows, int nr, int64_t len, const T* mat, int np,
                           float* out) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, warps = blockDim.x / 32;
  const int row_groups = (nr + kRowGroup - 1) / kRowGroup;
  const int col_groups = (np + kColGroup - 1) / kColGroup;
  for (int item = warp; item < row_groups * col_groups; item += warps) {
    const int r0 = (item / col_groups) * kRowGroup, p0 = (item % col_groups) * kColGroup;
    float acc[kRowGroup][kColGroup] = {};
    for (int64_t k = lane; k < len; k += 32) {
      float x[kRowGroup];
#pragma unroll
      for (int r = 0; r < kRowGroup; ++r) x[r] = r0 + r < nr ? rows[(r0 + r) * len + k] : 0.f;
#pragma unroll
      for (int p = 0; p < kColGroup; ++p) {
        const float w = p0 + p < np ? to_float(mat[(p0 + p) * len + k]) : 0.f;
#pragma unroll
        for (int r = 0; r < kRowGroup; ++r) acc[r][p] += x[r] * w;
      }
    }
#pragma unroll
    for (int r = 0; r < kRowGroup; ++r) {
#pragma unroll
      for (int p = 0; p < kColGroup; ++p) {
        const float v = warp_sum(acc[r][p]);
        if (lane == 0 && r0 + r < nr && p0 + p < np) out[(r0 + r) * np + p0 + p] = v;
      }
    }
  }
}

// rows [nr][width] floats <- src rows (row stride width), written by other blocks.
template <typename T>
__device__ void stage_rows(float* rows, const T* src, int nr, int64_t width) {
  for (int64_t e = threadIdx.x; e < nr * width; e += blockDim.x) rows[e] = to_float(__ldcg(src + e));
}

// The same for the first `width` columns of rows of stride ld > width (the
// GRU's d(gh) columns of its [N,4H] gate gradients).
template <typename T>
__device__ void stage_rows_strided(float* rows, const T* src, int nr, int64_t width, int64_t ld) {
  for (int r = 0; r < nr; ++r) {
    for (int64_t k = threadIdx.x; k < width; k += blockDim.x) {
      rows[r * width + k] = to_float(__ldcg(src + r * ld + k));
    }
  }
}

struct Smem {
  unsigned char* weights;
  float* state;
  float* stage;
  float* partial;
};

template <typename T, int Gates>
__device__ Smem carve(unsigned char* base, int64_t B, int64_t H, int U, int tile_rows,
                      int64_t width) {
  Smem s;
  s.weights = base;
  s.state = reinterpret_cast<float*>(base + align16(static_cast<size_t>(Gates * U * H) * sizeof(T)));
  s.stage = reinterpret_cast<float*>(reinterpret_cast<unsigned char*>(s.state) +
                                     align16(static_cast<size_t>(2 * B * U) * sizeof(float)));
  s.partial = s.stage + tile_rows * width;
  return s;
}

// The forward's weight slice: w [Gates*U][H], row q = g*U + u is row
// g*H + u0 + u of w_hh [Gates*H, H] (zero for units past H).
template <int Gates, typename T>
__device__ void load_gate_rows(T* w, const T* w_hh, int64_t H, int U, int64_t u0, int units) {
  const int Q = Gates * U;
  for (int64_t e = threadIdx.x; e < Q * H; e += blockDim.x) {
    const int64_t q = e / H, k = e - q * H, g = q / U, u = q - g * U;
    w[e] = u < units ? w_hh[(g * H + u0 + u) * H + k] : cast_to<T>(0.f);
  }
}

// The backward's weight slice: wc [U][Gates*H], row u is column u0 + u of
// w_hh [Gates*H, H] (zero for units past H).
template <int Gates, typename T>
__device__ void load_unit_columns(T* wc, const T* w_hh, int64_t H, int U, int64_t u0, int units) {
  const int64_t G = Gates * H;
  for (int64_t e = threadIdx.x; e < U * G; e += blockDim.x) {
    const int64_t u = e / G, q = e - u * G;
    wc[e] = u < units ? w_hh[q * H + u0 + u] : cast_to<T>(0.f);
  }
}

// h_buffers[0] <- h0 [B,H] for the block's units (the first step's h_{t-1}).
template <typename T>
__device__ void load_first_h(T* h_first, const T* h0, int64_t B, int64_t H, int64_t u0,
                             int units) {
  for (int64_t e = threadIdx.x; e < B * units; e += blockDim.x) {
    const int64_t r = e / units, j = u0 + (e - r * units);
    h_first[r * H + j] = h0[r * H + j];
  }
}

// Rows in the tile at r0 of a step of `rows` rows.
__device__ __forceinline__ int tile_size(int64_t rows, int64_t r0, int tile_rows) {
  return static_cast<int>(rows - r0 < tile_rows ? rows - r0 : tile_rows);
}

// One tile of a step's recurrent products: stages nr rows of `src` (row
// stride width, written by other blocks) into sm.stage [nr][width] and leaves
// their products with the np rows of mat [np][width] in sm.partial [nr][np];
// the block is synchronised after both, so every thread may read either.
template <typename T>
__device__ __forceinline__ void tile_products(const Smem& sm, const T* src, int nr, int64_t width,
                                              const T* mat, int np) {
  stage_rows(sm.stage, src, nr, width);
  __syncthreads();
  block_dots(sm.stage, nr, width, mat, np, sm.partial);
  __syncthreads();
}

// Rows a (packed) step does not reach keep their h: h_next <- h_prev for rows
// [rows, B) of the block's units.
template <typename T>
__device__ void keep_rows(const T* h_prev, T* h_next, int64_t rows, int64_t B, int64_t H,
                          int64_t u0, int units) {
  for (int64_t e = threadIdx.x; e < (B - rows) * units; e += blockDim.x) {
    const int64_t row = rows + e / units, j = u0 + e % units;
    h_next[row * H + j] = h_prev[row * H + j];
  }
}

template <typename T>
__global__ void __launch_bounds__(kPersistentThreads)
    forward_kernel(PersistentForward<T> a, int U, int tile_rows) {
  extern __shared__ __align__(16) unsigned char smem_base[];
  cg::grid_group grid = cg::this_grid();
  const int64_t T_steps = a.T_steps, B = a.B, H = a.H;
  const int64_t u0 = static_cast<int64_t>(blockIdx.x) * U;
  const int units = static_cast<int>(H - u0 < U ? H - u0 : U);
  const int Q = kLstmGates * U;
  const Smem sm = carve<T, kLstmGates>(smem_base, B, H, U, tile_rows, H);
  T* w = reinterpret_cast<T*>(sm.weights);
  float* c = sm.state;  // [B][U]

  load_gate_rows<kLstmGates>(w, a.w_hh, H, U, u0, units);
  T* h_first = a.h_buffers;
  for (int64_t e = threadIdx.x; e < B * units; e += blockDim.x) {
    const int64_t r = e / units, j = u0 + (e - r * units);
    c[r * U + (j - u0)] = static_cast<float>(a.c0[r * H + j]);
    h_first[r * H + j] = a.h0[r * H + j];
  }
  grid.sync();

  for (int64_t s = 0; s < T_steps; ++s) {
    const int64_t t = step_at(T_steps, s, a.reverse);
    const StepRows step = rows_of(a.offsets, t, B);
    const T* h_prev = a.h_buffers + (s & 1) * B * H;
    T* h_next = a.h_buffers + ((s + 1) & 1) * B * H;
    for (int64_t r0 = 0; r0 < step.rows; r0 += tile_rows) {
      const int nr = tile_size(step.rows, r0, tile_rows);
      tile_products(sm, h_prev + r0 * H, nr, H, w, Q);
      for (int64_t e = threadIdx.x; e < nr * units; e += blockDim.x) {
        const int64_t r = e / units, u = e - r * units, row = r0 + r, j = u0 + u, n = step.base + row;
        float rec[4];
#pragma unroll
        for (int g = 0; g < 4; ++g) rec[g] = sm.partial[r * Q + g * U + u];
        lstm_unit_forward(a, rec, n, row, j, H, c[row * U + u], h_next);
      }
      __syncthreads();
    }
    keep_rows(h_prev, h_next, step.rows, B, H, u0, units);
    grid.sync();
  }

  const T* h_last = a.h_buffers + (T_steps & 1) * B * H;
  for (int64_t e = threadIdx.x; e < B * units; e += blockDim.x) {
    const int64_t r = e / units, u = e - r * units, j = u0 + u;
    a.h_n[r * H + j] = h_last[r * H + j];
    a.c_n[r * H + j] = c[r * U + u];
  }
}

// How a cell's backward exchanges its gate gradients: the block multiplies
// the first kGates*H columns of each row of the [N, kStride*H] gradient
// buffer with its W_hh columns, and stores (or, kAccumulate, adds) the
// product into its dh state.
struct LstmGradients {
  static constexpr int kGates = kLstmGates;  // dgates [N,4H]: all 4H columns
  static constexpr int kStride = kLstmGates;
  static constexpr bool kAccumulate = false;  // dh_{t-1} is the product alone
};

// dh[row][u] <- (or +=) (the gradient rows [0, rows) of the step at `base`) . W_hh[:, u0 + u]
template <typename Grad, typename T>
__device__ void recurrent_gradient(const Smem& sm, const T* wc, const T* dgates, int64_t base,
                                   int64_t rows, int64_t H, int U, int units, int tile_rows,
                                   float* dh) {
  const int64_t G = Grad::kGates * H;
  for (int64_t r0 = 0; r0 < rows; r0 += tile_rows) {
    const int nr = tile_size(rows, r0, tile_rows);
    if constexpr (Grad::kGates == Grad::kStride) {
      stage_rows(sm.stage, dgates + (base + r0) * G, nr, G);
    } else {
      const int64_t ld = Grad::kStride * H;
      stage_rows_strided(sm.stage, dgates + (base + r0) * ld, nr, G, ld);
    }
    __syncthreads();
    block_dots(sm.stage, nr, G, wc, U, sm.partial);
    __syncthreads();
    for (int64_t e = threadIdx.x; e < nr * units; e += blockDim.x) {
      const int64_t r = e / units, u = e - r * units;
      if constexpr (Grad::kAccumulate) {
        dh[(r0 + r) * U + u] += sm.partial[r * U + u];
      } else {
        dh[(r0 + r) * U + u] = sm.partial[r * U + u];
      }
    }
    __syncthreads();
  }
}

template <typename T>
__global__ void __launch_bounds__(kPersistentThreads)
    backward_kernel(PersistentBackward<T> a, int U, int tile_rows) {
  extern __shared__ __align__(16) unsigned char smem_base[];
  cg::grid_group grid = cg::this_grid();
  const int64_t T_steps = a.T_steps, B = a.B, H = a.H, G = kLstmGates * H;
  const int64_t u0 = static_cast<int64_t>(blockIdx.x) * U;
  const int units = static_cast<int>(H - u0 < U ? H - u0 : U);
  const Smem sm = carve<T, kLstmGates>(smem_base, B, H, U, tile_rows, G);
  T* wc = reinterpret_cast<T*>(sm.weights);  // [U][4H]
  float* dh = sm.state;                      // [B][U]
  float* dc = sm.state + B * U;              // [B][U]

  load_unit_columns<kLstmGates>(wc, a.w_hh, H, U, u0, units);
  for (int64_t e = threadIdx.x; e < B * units; e += blockDim.x) {
    const int64_t r = e / units, u = e - r * units, j = u0 + u;
    dh[r * U + u] = a.grad_h_n ? to_float(a.grad_h_n[r * H + j]) : 0.f;
    dc[r * U + u] = a.grad_c_n ? static_cast<float>(a.grad_c_n[r * H + j]) : 0.f;
  }
  __syncthreads();

  // Visit the forward's steps last to first: forward step index sf = T-1-s.
  for (int64_t s = 0; s < T_steps; ++s) {
    const int64_t sf = T_steps - 1 - s;
    const StepRows step = rows_of(a.offsets, step_at(T_steps, sf, a.reverse), B);
    if (s > 0) {  // the gradient at h_t from the step visited just before
      const StepRows later = rows_of(a.offsets, step_at(T_steps, sf + 1, a.reverse), B);
      recurrent_gradient<LstmGradients>(sm, wc, a.dgates, later.base, later.rows, H, U, units,
                                        tile_rows, dh);
    }
    // c_{t-1}: the forward's previous step (prev.rows rows continue), else c0.
    const StepRows prev =
        sf > 0 ? rows_of(a.offsets, step_at(T_steps, sf - 1, a.reverse), B) : StepRows{0, 0};
    for (int64_t e = threadIdx.x; e < step.rows * units; e += blockDim.x) {
      const int64_t row = e / units, u = e - row * units, j = u0 + u, n = step.base + row;
      lstm_unit_backward(a, n, row, j, H, prev.base, prev.rows, dh[row * U + u], dc[row * U + u]);
    }
    grid.sync();
  }

  if (T_steps > 0) {  // the gradient at h0 from the first forward step
    const StepRows first = rows_of(a.offsets, step_at(T_steps, 0, a.reverse), B);
    recurrent_gradient<LstmGradients>(sm, wc, a.dgates, first.base, first.rows, H, U, units,
                                      tile_rows, dh);
  }
  for (int64_t e = threadIdx.x; e < B * units; e += blockDim.x) {
    const int64_t r = e / units, u = e - r * units, j = u0 + u;
    a.grad_h0[r * H + j] = cast_to<T>(dh[r * U + u]);
    a.grad_c0[r * H + j] = dc[r * U + u];
  }
}

// Launches kernel(args, plan.units, plan.tile_rows) cooperatively: one block
// per plan.blocks, all resident, with the plan's shared memory.
template <typename Args>
cudaError_t launch_cooperative(void (*kernel)(Args, int, int), const Args& args_in,
                               const PersistentPlan& plan, cudaStream_t stream) {
  Args args = args_in;
  int U = plan.units, tile_rows = plan.tile_rows;
  void* params[] = {&args, &U, &tile_rows};
  return cooperative::launch(reinterpret_cast<const void*>(kernel), plan.blocks, kPersistentThreads,
                             params, plan.smem_limit, plan.smem_bytes, stream);
}

}  // namespace persistent_detail

template <typename T>
cudaError_t persistent_lstm_forward(const PersistentForward<T>& a, const PersistentPlan& plan,
                                    cudaStream_t stream) {
  return persistent_detail::launch_cooperative(persistent_detail::forward_kernel<T>, a, plan,
                                               stream);
}

template <typename T>
cudaError_t persistent_lstm_backward(const PersistentBackward<T>& a, const PersistentPlan& plan,
                                     cudaStream_t stream) {
  return persistent_detail::launch_cooperative(persistent_detail::backward_kernel<T>, a, plan,
                                               stream);
}

template <typename T>
cudaError_t persistent_lstm_fits(const PersistentPlan& plan, bool backward, int sms, bool* fits) {
  const void* kernel = backward ? reinterpret_cast<const void*>(persistent_detail::backward_kernel<T>)
                                : reinterpret_cast<const void*>(persistent_detail::forward_kernel<T>);
  return cooperative::fits(kernel, kPersistentThreads, plan.smem_limit, plan.smem_bytes,
                           plan.blocks, sms, fits);
}

}  // namespace lstm_ext::cuda

#define LSTM_EXT_INSTANTIATE_PERSISTENT(T)                                                     \
  namespace lstm_ext::cuda {                                                                   \
  template cudaError_t persistent_lstm_forward<T>(const PersistentForward<T>&,                 \
                                                  const PersistentPlan&, cudaStream_t);        \
  template cudaError_t persistent_lstm_backward<T>(const PersistentBackward<T>&,               \
                                                   const PersistentPlan&, cudaStream_t);       \
  template cudaError_t persistent_lstm_fits<T>(const PersistentPlan&, bool, int, bool*);       \
  }
