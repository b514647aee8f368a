#include "cpu/input_projection.h"

#include "cpu/fused/workspace.h"
#include "cpu/kernel_select.h"

namespace lstm_ext::cpu {
namespace {

// Packing w costs about one pass over it; below this many rows the GEMM does
// too little work per weight for that to pay, and ATen's runs instead.
constexpr int64_t kMinRowsForPacking = 32;

// The fused kernels' GEMM for float32 with enough rows, else null.
const fused::Kernels* fused_gemm_kernels(const CpuKernels& kernels, const at::Tensor& out,
                                         int64_t rows) {
  return out.scalar_type() == at::kFloat && rows >= kMinRowsForPacking ? kernels.f32 : nullptr;
}

}  // namespace

void input_projection_into(const CpuKernels& kernels, at::Tensor& out, const at::Tensor& x2d,
                           const at::Tensor& w, const OptTensor& bias) {
  const int64_t M = x2d.size(0), N = w.size(0), K = w.size(1);
  const fused::Kernels* k = fused_gemm_kernels(kernels, out, M);
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

namespace {

at::Tensor input_gradient_float(const CpuKernels& kernels, const at::Tensor& grad_pre,
                                const at::Tensor& w) {
  const int64_t M = grad_pre.size(0), G = w.size(0), I = w.size(1);
  at::Tensor out = at::empty({M, I}, grad_pre.options());
  const fused::Kernels* k = fused_gemm_kernels(kernels, out, M);
  if (k == nullptr) return at::mm_out(out, grad_pre, w);
  const fused::Panels packed =
      pack_weights(*k, fused::Slot::kInput, fused::PackKind::kColumns, w.data_ptr<float>(), I, G);
  k->linear({M, I, G, grad_pre.data_ptr<float>(), &packed, nullptr, out.data_ptr<float>()},
            loop_threads(M * I * G));
  return out;
}

at::Tensor input_gradient_bf16(const fused::Bf16Kernels& k, const at::Tensor& grad_pre,
                               const at::Tensor& w) {
  const int64_t M = grad_pre.size(0), G = w.size(0), I = w.size(1);
  const at::Tensor grad_pre16 = grad_pre.to(at::kBFloat16);
  // out = grad_pre w = grad_pre (w^T)^T: the row-packed GEMM of w^T [I,G].
  const at::Tensor w_t = w.t().contiguous();
  at::Tensor out = at::empty({M, I}, grad_pre.options());
  const fused::PairPanels packed =
      pack_weights(k, fused::Slot::kInput, fused::PackKind::kRows, bf16_ptr(w_t), I, G);
  k.linear({M, I, G, bf16_ptr(grad_pre16), &packed, nullptr, out.data_ptr<float>()},
           loop_threads(M * I * G));
  return out;
}

}  // namespace

at::Tensor input_gradient(const CpuKernels& kernels, const at::Tensor& grad_pre,
                          const at::Tensor& w) {
  if (w.scalar_type() == at::kBFloat16 && grad_pre.scalar_type() == at::kFloat && kernels.bf16)
    return input_gradient_bf16(*kernels.bf16, grad_pre, w.contiguous());
  return input_gradient_float(kernels, grad_pre, w.to(grad_pre.scalar_type()).contiguous());
}

}  // namespace lstm_ext::cpu
