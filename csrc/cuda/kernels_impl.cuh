// Definitions of the launchers declared in kernels.h. Included by one
// translation unit per dtype (kernels_<dtype>.cu), which instantiates them
// with LSTM_EXT_INSTANTIATE_CUDA_KERNELS, so the dtypes compile in parallel.
//
// Every kernel is a grid-stride loop over rows x H elements with 64-bit
// indices (rows * 4H passes 2^31 at, e.g., N = 2^20 packed rows of H = 512
// for the projection helper). One thread owns one (row, unit): it reads that
// unit's four gates (4 coalesced loads across the warp's consecutive units)
// and computes in C = Compute<T>.
#pragma once

#include <cuda_runtime.h>

#include "cuda/kernels.h"

namespace lstm_ext::cuda {
namespace detail {

constexpr int kThreads = 256;
// Enough blocks to fill any current GPU several times over; larger grids only
// add scheduling work, the grid-stride loop covers the rest.
constexpr int64_t kMaxBlocks = 8192;

inline int blocks_for(int64_t n) {
  const int64_t b = (n + kThreads - 1) / kThreads;
  return static_cast<int>(b < kMaxBlocks ? b : kMaxBlocks);
}

// Explicit conversions: torch's CUDAExtension builds with
// __CUDA_NO_HALF_CONVERSIONS__ / __CUDA_NO_BFLOAT16_CONVERSIONS__, which
// remove the implicit ones (scripts/cuda_compile_check.sh uses the same flags).
template <typename C, typename T>
__device__ __forceinline__ C load(const T* p, int64_t i) {
  return static_cast<C>(p[i]);
}
template <>
__device__ __forceinline__ float load<float, __half>(const __half* p, int64_t i) {
  return __half2float(p[i]);
}
template <>
__device__ __forceinline__ float load<float, __nv_bfloat16>(const __nv_bfloat16* p, int64_t i) {
  return __bfloat162float(p[i]);
}

template <typename T, typename C>
__device__ __forceinline__ T cast_to(C v) {
  return static_cast<T>(v);
}
template <>
__device__ __forceinline__ __half cast_to<__half, float>(float v) {
  return __float2half_rn(v);
}
template <>
__device__ __forceinline__ __nv_bfloat16 cast_to<__nv_bfloat16, float>(float v) {
  return __float2bfloat16_rn(v);
}

// Accurate (libdevice) exp and tanh: the fp32 outputs must match cuDNN's to
// ~1e-6, which the fast intrinsics (__expf) do not. NaN propagates; +-inf
// saturate to 0 and 1.
template <typename C>
__device__ __forceinline__ C sigmoid(C x) {
  return C(1) / (C(1) + exp(-x));
}

#define LSTM_EXT_GRID_STRIDE(i, n)                                                   \
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < (n); \
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)

template <typename T>
__global__ void lstm_step_forward_kernel(LstmStepForward<T> a) {
  using C = Compute<T>;
  const int64_t H = a.H;
  LSTM_EXT_GRID_STRIDE(e, a.rows * H) {
    const int64_t r = e / H, j = e - r * H;
    const int64_t g0 = r * 4 * H + j;
    C pre[4];
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      pre[k] = load<C>(a.proj, g0 + k * H) + load<C>(a.rec, g0 + k * H) +
               (a.bias ? a.bias[k * H + j] : C(0));
    }
    const C i = sigmoid(pre[0]), f = sigmoid(pre[1]), g = tanh(pre[2]), o = sigmoid(pre[3]);
    const C c = f * a.c_state[e] + i * g;
    const C h = o * tanh(c);
    a.c_state[e] = c;
    a.h_out[r * a.ld_h_out + j] = cast_to<T>(h);
    if (a.h_state) a.h_state[e] = cast_to<T>(h);
    if (a.gates) {
      a.gates[g0] = i;
      a.gates[g0 + H] = f;
      a.gates[g0 + 2 * H] = g;
      a.gates[g0 + 3 * H] = o;
    }
    if (a.cells) a.cells[e] = c;
  }
}

template <typename T>
__global__ void lstm_step_backward_kernel(LstmStepBackward<T> a) {
  using C = Compute<T>;
  const int64_t H = a.H;
  LSTM_EXT_GRID_STRIDE(e, a.rows * H) {
    const int64_t r = e / H, j = e - r * H;
    const int64_t g0 = r * 4 * H + j;
    const C i = a.gates[g0], f = a.gates[g0 + H], g = a.gates[g0 + 2 * H], o = a.gates[g0 + 3 * H];
    const C c = a.cells[e];
    const C c_prev = r < a.rows_continuing ? a.c_prev[e] : a.c0[e];
    C dh = load<C>(a.grad_h, e);
    if (a.grad_y) dh += load<C>(a.grad_y, e);
    C dc = a.grad_c[e];
    if (a.grad_cells) dc += a.grad_cells[e];
    const C tc = tanh(c);
    dc += dh * o * (C(1) - tc * tc);
    a.dgates[g0] = cast_to<T>(dc * g * i * (C(1) - i));
    a.dgates[g0 + H] = cast_to<T>(dc * c_prev * f * (C(1) - f));
    a.dgates[g0 + 2 * H] = cast_to<T>(dc * i * (C(1) - g * g));
    a.dgates[g0 + 3 * H] = cast_to<T>(dh * tc * o * (C(1) - o));
    a.grad_c[e] = dc * f;
  }
}

template <typename T>
__global__ void lstm_hidden_before_projection_kernel(int64_t n, int64_t H,
                                                     const Compute<T>* gates,
                                                     const Compute<T>* cells, T* h_raw) {
  LSTM_EXT_GRID_STRIDE(e, n * H) {
    const int64_t r = e / H, j = e - r * H;
    h_raw[e] = cast_to<T>(gates[r * 4 * H + 3 * H + j] * tanh(cells[e]));
  }
}

template <typename C>
__device__ __forceinline__ C activate(C x, bool relu) {
  // relu keeps NaN (x > 0 is false for NaN, so test the other way round).
  return relu ? (x < C(0) ? C(0) : x) : tanh(x);
}

template <typename T>
__global__ void rnn_step_forward_kernel(RnnStepForward<T> a) {
  using C = Compute<T>;
  const int64_t H = a.H;
  LSTM_EXT_GRID_STRIDE(e, a.rows * H) {
    const int64_t j = e % H;
    const C pre =
        load<C>(a.proj, e) + load<C>(a.rec, e) + (a.bias ? a.bias[j] : C(0));
    const T h = cast_to<T>(activate(pre, a.relu));
    a.h_out[e] = h;
    if (a.h_state) a.h_state[e] = h;
  }
}

template <typename T>
__global__ void rnn_step_backward_kernel(RnnStepBackward<T> a) {
  using C = Compute<T>;
  LSTM_EXT_GRID_STRIDE(e, a.rows * a.H) {
    C dh = load<C>(a.grad_h, e);
    if (a.grad_y) dh += load<C>(a.grad_y, e);
    const C h = load<C>(a.h, e);
    // relu: as threshold_backward (and the CPU kernel), zero where h <= 0 and
    // dh itself elsewhere (NaN h passes dh; no inf * 0).
    a.dpre[e] = cast_to<T>(a.relu ? (h <= C(0) ? C(0) : dh) : dh * (C(1) - h * h));
  }
}

#undef LSTM_EXT_GRID_STRIDE

}  // namespace detail

template <typename T>
void lstm_step_forward(const LstmStepForward<T>& a, cudaStream_t stream) {
  const int64_t n = a.rows * a.H;
  if (n == 0) return;
  detail::lstm_step_forward_kernel<T><<<detail::blocks_for(n), detail::kThreads, 0, stream>>>(a);
}

template <typename T>
void lstm_step_backward(const LstmStepBackward<T>& a, cudaStream_t stream) {
  const int64_t n = a.rows * a.H;
  if (n == 0) return;
  detail::lstm_step_backward_kernel<T><<<detail::blocks_for(n), detail::kThreads, 0, stream>>>(a);
}

template <typename T>
void lstm_hidden_before_projection(int64_t n, int64_t H, const Compute<T>* gates,
                                   const Compute<T>* cells, T* h_raw, cudaStream_t stream) {
  if (n * H == 0) return;
  detail::lstm_hidden_before_projection_kernel<T>
      <<<detail::blocks_for(n * H), detail::kThreads, 0, stream>>>(n, H, gates, cells, h_raw);
}

template <typename T>
void rnn_step_forward(const RnnStepForward<T>& a, cudaStream_t stream) {
  const int64_t n = a.rows * a.H;
  if (n == 0) return;
  detail::rnn_step_forward_kernel<T><<<detail::blocks_for(n), detail::kThreads, 0, stream>>>(a);
}

template <typename T>
void rnn_step_backward(const RnnStepBackward<T>& a, cudaStream_t stream) {
  const int64_t n = a.rows * a.H;
  if (n == 0) return;
  detail::rnn_step_backward_kernel<T><<<detail::blocks_for(n), detail::kThreads, 0, stream>>>(a);
}

}  // namespace lstm_ext::cuda

#define LSTM_EXT_INSTANTIATE_CUDA_KERNELS(T)                                                  \
  namespace lstm_ext::cuda {                                                                  \
  template void lstm_step_forward<T>(const LstmStepForward<T>&, cudaStream_t);                \
  template void lstm_step_backward<T>(const LstmStepBackward<T>&, cudaStream_t);              \
  template void lstm_hidden_before_projection<T>(int64_t, int64_t, const Compute<T>*,         \
                                                 const Compute<T>*, T*, cudaStream_t);        \
  template void rnn_step_forward<T>(const RnnStepForward<T>&, cudaStream_t);                  \
  template void rnn_step_backward<T>(const RnnStepBackward<T>&, cudaStream_t);                \
  }
