// What the CUDA bindings share: ATen scalar types to the CUDA types the
// torch-free kernels take, typed device pointers, row views, and the
// per-step state buffers. Host code only (compiled by the C++ compiler).
#pragma once

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "message.h"
#include "step_layout.h"
#include "tensor_args.h"

namespace lstm_ext::cuda_binding {

using at::Tensor;

// The kernels' element type for an ATen scalar type (same size and bits).
template <typename S>
struct CudaType {
  using type = S;
};
template <>
struct CudaType<at::Half> {
  using type = __half;
};
template <>
struct CudaType<at::BFloat16> {
  using type = __nv_bfloat16;
};

template <typename T>
T* ptr(const Tensor& t) {
  return reinterpret_cast<T*>(t.data_ptr());
}

template <typename T>
T* ptr_or_null(const Tensor& t) {
  return t.defined() ? ptr<T>(t) : nullptr;
}

template <typename T>
T* ptr_or_null(const OptTensor& t) {
  return present(t) ? ptr<T>(*t) : nullptr;
}

// Runs body<T>() with T the CUDA element type of `dtype` (float, double,
// __half, __nv_bfloat16).
#define LSTM_EXT_DISPATCH_CUDA(dtype, name, ...)                                          \
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, name, [&] {            \
    using T = typename ::lstm_ext::cuda_binding::CudaType<scalar_t>::type;                \
    __VA_ARGS__();                                                                        \
  })

template <typename T>
struct TypeTag {
  using type = T;
};

// Calls body(TypeTag<T>{}) with T the CUDA element type of `dtype` for the
// dtypes the persistent kernels have (float, __half, __nv_bfloat16); body is
// a generic lambda, so nothing is instantiated for the others.
template <typename Body>
void dispatch_persistent(at::ScalarType dtype, const char* op, Body&& body) {
  switch (dtype) {
    case at::kFloat: return body(TypeTag<float>{});
    case at::kHalf: return body(TypeTag<__half>{});
    case at::kBFloat16: return body(TypeTag<__nv_bfloat16>{});
    default: LSTM_EXT_CHECK(false, op, ": the persistent CUDA path has no ", dtype, " kernel");
  }
}

inline cudaStream_t current_stream() { return c10::cuda::getCurrentCUDAStream(); }

// Rows [offset, offset + n) of a row-major 2-D tensor: a contiguous view.
inline Tensor row_block(const Tensor& t2d, int64_t offset, int64_t n) {
  return t2d.narrow(0, offset, n);
}

// The rows of step t of a [N,F] sequence tensor.
inline Tensor step_rows(const Tensor& t2d, const StepLayout& L, int64_t t) {
  return row_block(t2d, L.offset(t), L.rows(t));
}

// h_prev [N,F]: for each row of each step, the h it started that step from
// (y at the previously visited step, or h0), the left operand of grad W_hh's
// one GEMM. Dense input takes one concatenation; packed input two copies per
// step.
Tensor previous_states(const Tensor& y2d, const Tensor& h0, const StepLayout& L, bool reverse,
                       bool packed);

// The step offsets a persistent kernel takes: none (an undefined tensor, so
// a null pointer) for dense input, else StepLayout's [T+1] offsets on
// `device` (int64), copied from pinned memory without blocking. The path
// choice (lstm_path.h) keeps packed input off the persistent kernels during a
// CUDA graph capture, whose replays would re-read the recycled host buffer.
Tensor step_offsets(const StepLayout& L, bool packed, const at::Device& device);

// A fresh contiguous [rows, F] copy of an optional state (or gradient) in
// `dtype`, zeros when absent: the running buffer a time loop updates in place.
Tensor state_buffer(const OptTensor& init, c10::IntArrayRef sizes, const at::TensorOptions& opts);

}  // namespace lstm_ext::cuda_binding
