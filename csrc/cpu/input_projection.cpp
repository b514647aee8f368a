#include "cpu/input_projection.h"

#include "cpu/fused/workspace.h"
#include "cpu/kernel_select.h"

namespace lstm_ext::cpu {
namespace {

// Packing w costs about one pass over it; below this many rows the GEMM does
// too little work per weight for that to pay, and ATen's runs instead.
constexpr int64_t kMinRowsForPacking = 32;

}  // namespace

void input_projection_into(at::Tensor& out, const at::Tensor& x2d, const at::Tensor& w,
                           const OptTensor& bias) {
  const int64_t M = x2d.size(0), N = w.size(0), K = w.size(1);
  const fused::Kernels* k = out.scalar_type() == at::kFloat && M >= kMinRowsForPacking
                                ? selected_fused_kernels()
                                : nullptr;
  if (k == nullptr) {
    input_projection_out(out, x2d, w, bias);
    return;
  }
  const fused::Panels packed =
      pack_weights(*k, fused::Slot::kInput, fused::PackKind::kRows, w.data_ptr<float>(), N, K);
  k->linear({M, N, K, x2d.data_ptr<float>(), &packed,
             present(bias) ? bias->data_ptr<float>() : nullptr, out.data_ptr<float>()},
            loop_threads(M * N * K));
}

}  // namespace lstm_ext::cpu
