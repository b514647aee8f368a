// Cooperative launches of the persistent kernels (persistent_impl.cuh,
// tensorcore_impl.cuh): every block resident at once, so the kernels may sync
// the whole grid once per step.
//
// The dynamic shared memory attribute is always set to the device's opt-in
// limit (smem_limit, not one plan's bytes), so concurrent callers with
// different plans never lower it under each other.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace lstm_ext::cuda::cooperative {

// Whether `blocks` blocks of `kernel` (`threads` threads, smem_bytes of
// dynamic shared memory each) can all be resident on `sms` multiprocessors.
inline cudaError_t fits(const void* kernel, int threads, size_t smem_limit, size_t smem_bytes,
                        int blocks, int sms, bool* fits_out) {
  *fits_out = false;
  cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         static_cast<int>(smem_limit));
  if (err != cudaSuccess) return err;
  int per_sm = 0;
  err = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, threads, smem_bytes);
  if (err != cudaSuccess) return err;
  *fits_out = static_cast<int64_t>(per_sm) * sms >= blocks;
  return cudaSuccess;
}

// Launches `kernel` with `params` (cudaLaunchCooperativeKernel's argument
// array) on `blocks` blocks of `threads` threads.
inline cudaError_t launch(const void* kernel, int blocks, int threads, void** params,
                          size_t smem_limit, size_t smem_bytes, cudaStream_t stream) {
  const cudaError_t err = cudaFuncSetAttribute(
      kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem_limit));
  if (err != cudaSuccess) return err;
  return cudaLaunchCooperativeKernel(kernel, dim3(blocks), dim3(threads), params, smem_bytes,
                                     stream);
}

}  // namespace lstm_ext::cuda::cooperative
