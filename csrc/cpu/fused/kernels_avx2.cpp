// The fused kernels for avx2: one translation unit per ISA, so they build in
// parallel. Compiled only when the build targets the ISA (setup.py's
// LSTM_EXT_CPU_ISA); otherwise the table is null.
#include "cpu/fused/kernels.h"

#if defined(__AVX2__) && defined(__FMA__)
#include "cpu/fused/kernels_impl.h"
#endif

namespace lstm_ext::cpu::fused {

const Kernels* avx2_kernels() {
#if defined(__AVX2__) && defined(__FMA__)
  return Fused<SimdAvx2>::table();
#else
  return nullptr;
#endif
}

}  // namespace lstm_ext::cpu::fused
