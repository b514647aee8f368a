// Definitions of the GRU step launchers declared in gru_kernels.h. Included
// by the one-translation-unit-per-dtype files (kernels_<dtype>.cu), which
// instantiate them with LSTM_EXT_INSTANTIATE_GRU_KERNELS next to the LSTM and
// RNN kernels, so the dtypes compile in parallel.
//
// As kernels_impl.cuh (whose helpers these reuse: load, cast_to, sigmoid,
// blocks_for): a 64-bit grid-stride loop over rows x H elements, one thread
// per (row, unit) reading that unit's gate columns (coalesced across the
// warp's consecutive units), arithmetic in C = Compute<T>. rows * 4H passes
// 2^31 at, e.g., 2^20 rows of H = 512, hence int64 indices throughout.
#pragma once

#include <cuda_runtime.h>

#include "cuda/gru_kernels.h"
#include "cuda/kernels_impl.cuh"

namespace lstm_ext::cuda {
namespace gru_detail {

using detail::cast_to;
using detail::load;
using detail::sigmoid;

template <typename C>
__device__ __forceinline__ C bias_at(const C* b, int64_t i) {
  return b ? b[i] : C(0);
}

template <typename T>
__global__ void gru_step_forward_kernel(GruStepForward<T> a) {
  using C = Compute<T>;
  const int64_t H = a.H;
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < a.rows * H;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t row = e / H, j = e - row * H;
    const int64_t g0 = row * 3 * H + j;  // unit j's r column in gi / gh
    const C r = sigmoid(load<C>(a.gi, g0) + load<C>(a.gh, g0) + bias_at(a.b_ih, j) +
                        bias_at(a.b_hh, j));
    const C z = sigmoid(load<C>(a.gi, g0 + H) + load<C>(a.gh, g0 + H) + bias_at(a.b_ih, H + j) +
                        bias_at(a.b_hh, H + j));
    const C hn = load<C>(a.gh, g0 + 2 * H) + bias_at(a.b_hh, 2 * H + j);
    const C n = tanh(load<C>(a.gi, g0 + 2 * H) + bias_at(a.b_ih, 2 * H + j) + r * hn);
    // Read before the (possibly aliasing) h_state write below.
    const C hp = load<C>(a.h_prev, e);
    // (1 - z) n + z h_{t-1}, written as ATen's fused GRU cell does: one
    // multiply-add, and exactly h_{t-1} when z == 1.
    const T h = cast_to<T>(n + z * (hp - n));
    a.h_out[e] = h;
    if (a.h_state) a.h_state[e] = h;
    if (a.gates) {
      const int64_t s0 = row * 4 * H + j;
      a.gates[s0] = r;
      a.gates[s0 + H] = z;
      a.gates[s0 + 2 * H] = n;
      a.gates[s0 + 3 * H] = hn;
    }
  }
}

template <typename T>
__global__ void gru_step_backward_kernel(GruStepBackward<T> a) {
  using C = Compute<T>;
  const int64_t H = a.H;
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < a.rows * H;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t row = e / H;
    const int64_t s0 = row * 4 * H + (e - row * H);  // unit j's column 0 in gates / grad_gates
    const C r = a.gates[s0], z = a.gates[s0 + H], n = a.gates[s0 + 2 * H],
            hn = a.gates[s0 + 3 * H];
    // Row `row` of h_prev and of h0 is element e of either: both are [.,H]
    // with the step's rows first.
    const C hp = row < a.rows_continuing ? load<C>(a.h_prev, e) : load<C>(a.h0, e);
    C dh = load<C>(a.grad_h, e);
    if (a.grad_y) dh += load<C>(a.grad_y, e);
    const C dn = dh * (C(1) - z) * (C(1) - n * n);
    const C dz = dh * (hp - n) * z * (C(1) - z);
    const C dhn = dn * r;
    const C dr = dn * hn * r * (C(1) - r);
    a.grad_gates[s0] = cast_to<T>(dr);
    a.grad_gates[s0 + H] = cast_to<T>(dz);
    a.grad_gates[s0 + 2 * H] = cast_to<T>(dhn);
    a.grad_gates[s0 + 3 * H] = cast_to<T>(dn);
    a.grad_h[e] = cast_to<T>(dh * z);
  }
}

}  // namespace gru_detail

template <typename T>
void gru_step_forward(const GruStepForward<T>& a, cudaStream_t stream) {
  const int64_t n = a.rows * a.H;
  if (n == 0) return;
  gru_detail::gru_step_forward_kernel<T>
      <<<detail::blocks_for(n), detail::kThreads, 0, stream>>>(a);
}

template <typename T>
void gru_step_backward(const GruStepBackward<T>& a, cudaStream_t stream) {
  const int64_t n = a.rows * a.H;
  if (n == 0) return;
  gru_detail::gru_step_backward_kernel<T>
      <<<detail::blocks_for(n), detail::kThreads, 0, stream>>>(a);
}

}  // namespace lstm_ext::cuda

#define LSTM_EXT_INSTANTIATE_GRU_KERNELS(T)                                   \
  namespace lstm_ext::cuda {                                                  \
  template void gru_step_forward<T>(const GruStepForward<T>&, cudaStream_t);   \
  template void gru_step_backward<T>(const GruStepBackward<T>&, cudaStream_t); \
  }
