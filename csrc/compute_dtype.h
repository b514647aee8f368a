// Storage dtype vs compute dtype.
//
// The ops take and return tensors in the caller's dtype (the storage dtype:
// x, the weights, the states, y, h_n, c_n and the gradients of all of them),
// but a reduced-precision float is computed in float32: the time loops run in
// float32 (the running cell state included), every GEMM accumulates in
// float32, and the activations a forward saves for its backward (`gates`,
// `cells`) stay in float32, so the backward starts from the values the
// forward actually used rather than from bfloat16 roundings of them.
//
// float32 and float64 compute in themselves; bfloat16 and float16 compute in
// float32 (on CUDA the GEMM operands stay in the storage dtype, with float32
// accumulation, as cuDNN's: see csrc/ops.cpp). (One exception: on CPUs with AVX512-BF16 the bfloat16 LSTM forward
// multiplies in bfloat16 with float32 accumulation and a float32 cell state,
// and reads h_{t-1} back as the bfloat16 it returns; see cpu/lstm_cpu.cpp.
// Its outputs and saved tensors have the dtypes described here.) A binding upcasts its arguments with to_compute, runs the float32
// kernels, and casts the results back with to_storage; for float32 and
// float64 both are free (no copy beyond the usual .contiguous()).
#pragma once

#include <ATen/ATen.h>

#include <optional>

namespace lstm_ext {

// The dtype the kernels compute in, and in which `gates` and `cells` are kept,
// for tensors stored in `storage`.
inline at::ScalarType compute_dtype(at::ScalarType storage) {
  return (storage == at::kBFloat16 || storage == at::kHalf) ? at::kFloat : storage;
}

// t in its compute dtype, contiguous. No copy when t already is both.
inline at::Tensor to_compute(const at::Tensor& t) {
  return t.to(compute_dtype(t.scalar_type())).contiguous();
}

inline std::optional<at::Tensor> to_compute(const std::optional<at::Tensor>& t) {
  if (!t.has_value() || !t->defined()) return std::nullopt;
  return to_compute(*t);
}

// A fresh, writable, contiguous copy of t in its compute dtype (one copy, also
// when a conversion is needed), for a buffer a kernel updates in place.
inline at::Tensor compute_copy(const at::Tensor& t) {
  return t.to(compute_dtype(t.scalar_type()), /*non_blocking=*/false, /*copy=*/true,
              at::MemoryFormat::Contiguous);
}

// A result computed in the compute dtype, back in the storage dtype `like`
// has. No copy when the dtypes agree.
inline at::Tensor to_storage(const at::Tensor& t, const at::Tensor& like) {
  return t.to(like.scalar_type());
}

}  // namespace lstm_ext
