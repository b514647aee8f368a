// The bf16 forward kernels (AVX512-BF16): Fused<SimdAvx512>'s loops with
// bfloat16 h / x and k-pair panels (kernels_bf16.h). Compiled only when the
// build targets avx512bf16 (setup.py adds -mavx512bf16 when the build
// machine has it); otherwise the table is null. Whether the running CPU has
// it is checked by kernel_select.cpp.
#include "cpu/fused/kernels.h"

// See kernels_avx512.cpp: a false positive in GCC 12's AVX-512 headers.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#if defined(__AVX512BF16__) && defined(__AVX512F__) && defined(__AVX512BW__) && \
    defined(__AVX512VL__) && defined(__AVX512DQ__)
#include "cpu/fused/kernels_bf16.h"
#define LSTM_EXT_BUILD_BF16 1
#endif

namespace lstm_ext::cpu::fused {

const Bf16Kernels* avx512bf16_kernels() {
#if defined(LSTM_EXT_BUILD_BF16)
  using F = Fused<SimdAvx512>;
  static const Bf16Kernels k{SimdAvx512::V, &F::lstm_forward_of<Bf16, PairPanels>,
                             &F::gru_forward_of<Bf16, PairPanels>,
                             &F::linear_of<Bf16, PairPanels>};
  return &k;
#else
  return nullptr;
#endif
}

}  // namespace lstm_ext::cpu::fused
