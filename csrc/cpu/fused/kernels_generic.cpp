// The portable fused kernels (no intrinsics): every build has them.
#include "cpu/fused/kernels.h"

#include "cpu/fused/kernels_impl.h"

namespace lstm_ext::cpu::fused {

const Kernels* generic_kernels() {
  return Fused<SimdGeneric>::table();
}

}  // namespace lstm_ext::cpu::fused
