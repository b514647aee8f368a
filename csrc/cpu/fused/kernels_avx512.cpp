// The fused kernels for avx512: one translation unit per ISA, so they build in
// parallel. Compiled only when the build targets the ISA (setup.py's
// LSTM_EXT_CPU_ISA); otherwise the table is null.
#include "cpu/fused/kernels.h"

// GCC 12's own AVX-512 intrinsics (_mm512_abs_ps, _mm512_scalef_ps, ...) use
// _mm512_undefined_ps(), which -Wmaybe-uninitialized reports once per inlined
// call: a known false positive in the compiler's headers, not in this code.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#if defined(__AVX512F__) && defined(__AVX512DQ__)
#include "cpu/fused/kernels_impl.h"
#endif

namespace lstm_ext::cpu::fused {

const Kernels* avx512_kernels() {
#if defined(__AVX512F__) && defined(__AVX512DQ__)
  return Fused<SimdAvx512>::table();
#else
  return nullptr;
#endif
}

}  // namespace lstm_ext::cpu::fused
