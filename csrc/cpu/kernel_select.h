// Which CPU kernel runs the float32 time loops, and on how many threads.
//
// The fused kernels (fused/kernels.h) exist per ISA; the best one this build
// compiled and this CPU supports runs by default. LSTM_EXT_CPU_KERNEL =
// avx512 | avx2 | generic | reference overrides the choice, read at every op
// call so tests can run each path in one process; `reference` is the
// BLAS-per-step loop (lstm_sequence.cpp), the oracle the fused ones are
// checked against. Asking for a kernel that is not available is an error.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "cpu/fused/kernels.h"

namespace lstm_ext::cpu {

// The fused kernels to use now, or null for the reference loops.
const fused::Kernels* selected_fused_kernels();

// Names of the kernels usable here, best first; the last is "reference".
std::vector<std::string> available_cpu_kernels();

// Threads for a time loop whose every step does `macs_per_step`
// multiply-adds: torch's intra-op thread count, or 1 when a step is too
// small for a second thread to pay for the per-step barrier.
int loop_threads(int64_t macs_per_step);

}  // namespace lstm_ext::cpu
