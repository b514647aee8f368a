// Which CPU kernel runs the float32 time loops, and on how many threads.
//
// The fused kernels (fused/kernels.h) exist per ISA; the best one this build
// compiled and this CPU supports runs by default. LSTM_EXT_CPU_KERNEL =
// avx512 | avx2 | generic | reference overrides the choice; `reference` is
// the BLAS-per-step loop (lstm_sequence.cpp), the oracle the fused ones are
// checked against. Asking for a kernel that is not available is an error.
//
// The choice is made in one place, select_cpu_kernels(), once per op call:
// each CPU op's binding calls it on entry and hands the result to every loop
// and GEMM of that call, so a call never mixes kernels and nothing below the
// binding reads the environment. Reading it per call (not once per process)
// lets tests run each path in one process.
//
// The build itself targets the machine it is built on (setup.py's
// LSTM_EXT_CPU_ISA flags apply to every file), so the run-time choice is
// among the paths that build compiled, for tests and comparisons; it does not
// make an AVX-512 build run on an AVX2-only CPU. Build with
// LSTM_EXT_CPU_ISA=avx2 (or default) for older machines.
//
// bfloat16 LSTM and GRU forwards run natively on avx512bf16
// (fused/kernels_bf16.h) when this build compiled it and the CPU has it,
// unless LSTM_EXT_CPU_KERNEL names another kernel: then they run that float32
// kernel on upcast arguments, as every other bfloat16 op does. LSTM_EXT_CPU_KERNEL=avx512bf16
// asks for the native path (an error where it is not available) and leaves
// float32 on its default kernel.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <ATen/ATen.h>

#include "cpu/fused/kernels.h"

namespace lstm_ext::cpu {

// The kernels of one op call.
struct CpuKernels {
  const fused::Kernels* f32;       // float32 loops and GEMMs; null: the reference loops
  const fused::Bf16Kernels* bf16;  // native bfloat16 forward; null: bfloat16 runs upcast
};

// Reads LSTM_EXT_CPU_KERNEL (an error names the kernels available here).
CpuKernels select_cpu_kernels();

// A bfloat16 tensor's data as the fused kernels' element type.
inline fused::Bf16* bf16_ptr(const at::Tensor& t) {
  static_assert(sizeof(at::BFloat16) == sizeof(fused::Bf16));
  return reinterpret_cast<fused::Bf16*>(t.data_ptr<at::BFloat16>());
}

// Names of the kernels usable here, best first; the last is "reference".
// "avx512bf16" (bf16 forward only) comes first where it is usable.
std::vector<std::string> available_cpu_kernels();

// Threads for a time loop whose every step does `macs_per_step`
// multiply-adds: torch's intra-op thread count, or 1 when a step is too
// small for a second thread to pay for the per-step barrier.
int loop_threads(int64_t macs_per_step);

}  // namespace lstm_ext::cpu
