#include "cuda_binding/gemm.h"

#include <ATen/Context.h>
#include <ATen/cuda/CUDAContext.h>
#include <cublas_v2.h>
#include <torch/version.h>

#include <climits>

#include "message.h"

namespace lstm_ext::cuda_binding {
namespace {

// One operand of C^T = B^T A^T as cuBLAS (column-major) sees it: a row-major
// X [r,c] with row stride ld is the column-major X^T [c,r] with leading
// dimension ld (op N); a transposed view X = W^T of a row-major W is the
// column-major X [r,c] of W's storage, used transposed (op T).
struct Operand {
  at::Tensor t;  // keeps a contiguous copy alive when one was needed
  cublasOperation_t op = CUBLAS_OP_N;
  int64_t ld = 1;
};

// `x` [r,c] as a cuBLAS operand that yields x^T (c x r, column-major).
Operand as_operand(const at::Tensor& x) {
  const int64_t r = x.size(0), c = x.size(1);
  if (x.stride(1) == 1 && x.stride(0) >= std::max<int64_t>(c, 1)) {
    return {x, CUBLAS_OP_N, x.stride(0)};
  }
  if (x.stride(0) == 1 && x.stride(1) >= std::max<int64_t>(r, 1)) {
    return {x, CUBLAS_OP_T, x.stride(1)};
  }
  const at::Tensor contiguous = x.contiguous();
  return {contiguous, CUBLAS_OP_N, std::max<int64_t>(c, 1)};
}

bool fits_int(int64_t v) { return v <= INT_MAX; }

void check_cublas(cublasStatus_t status, const char* what) {
  LSTM_EXT_CHECK(status == CUBLAS_STATUS_SUCCESS, "lstm_ext: ", what, " failed: ",
                 cublasGetStatusString(status));
}

// out = a b (beta 0) or out += a b (beta 1) in float32 through cuBLAS, TF32
// or strict as `p` says. Returns false (nothing done) when a size exceeds
// cuBLAS's int range.
bool sgemm(at::Tensor& out, const at::Tensor& a, const at::Tensor& b, GemmPrecision p,
           float beta) {
  const int64_t m = a.size(0), k = a.size(1), n = b.size(1);
  const Operand pa = as_operand(a), pb = as_operand(b);
  const int64_t ldc = std::max<int64_t>(out.stride(0), std::max<int64_t>(n, 1));
  for (int64_t v : {m, n, k, pa.ld, pb.ld, ldc}) {
    if (!fits_int(v)) return false;
  }
  cublasHandle_t handle = at::cuda::getCurrentCUDABlasHandle();  // on the current stream
  cublasMath_t torch_mode = CUBLAS_DEFAULT_MATH;
  check_cublas(cublasGetMathMode(handle, &torch_mode), "cublasGetMathMode");
  check_cublas(cublasSetMathMode(handle, p.tf32 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH),
               "cublasSetMathMode");
  const float alpha = 1.f;
  // Column-major: out^T [n,m] = b^T [n,k] a^T [k,m].
  const cublasStatus_t status = cublasGemmEx(
      handle, pb.op, pa.op, static_cast<int>(n), static_cast<int>(m), static_cast<int>(k), &alpha,
      pb.t.data_ptr(), CUDA_R_32F, static_cast<int>(pb.ld), pa.t.data_ptr(), CUDA_R_32F,
      static_cast<int>(pa.ld), &beta, out.data_ptr(), CUDA_R_32F, static_cast<int>(ldc),
      p.tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
  // Give the handle back as torch set it, whatever happened.
  cublasSetMathMode(handle, torch_mode);
  check_cublas(status, "cublasGemmEx (float32)");
  return true;
}

}  // namespace

GemmPrecision rnn_gemm_precision(at::ScalarType dtype) {
  GemmPrecision p;
  if (dtype != at::kFloat) return p;
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 9)
  p.tf32 = at::globalContext().allowTF32CuDNN(at::Float32Op::RNN);
#else
  p.tf32 = at::globalContext().allowTF32CuDNN();
#endif
  return p;
}

void mm_out(at::Tensor& out, const at::Tensor& a, const at::Tensor& b, GemmPrecision p) {
  const int64_t m = a.size(0), k = a.size(1), n = b.size(1);
  if (m == 0 || n == 0) return;
  if (k == 0) {
    out.zero_();
    return;
  }
  const bool out_rows = out.stride(1) == 1 || n == 1;
  if (a.scalar_type() == at::kFloat && out_rows && sgemm(out, a, b, p, 0.f)) return;
  at::mm_out(out, a, b);
}

void mm_add_out(at::Tensor& out, const at::Tensor& a, const at::Tensor& b, GemmPrecision p) {
  const int64_t m = a.size(0), k = a.size(1), n = b.size(1);
  if (m == 0 || n == 0 || k == 0) return;  // adds nothing
  const bool out_rows = out.stride(1) == 1 || n == 1;
  if (a.scalar_type() == at::kFloat && out_rows && sgemm(out, a, b, p, 1.f)) return;
  // Other dtypes (and float32 past cuBLAS's int range): ATen's GEMM with
  // beta = 1, alpha = 1, in place.
  out.addmm_(a, b);
}

at::Tensor mm(const at::Tensor& a, const at::Tensor& b, GemmPrecision p) {
  at::Tensor out = at::empty({a.size(0), b.size(1)}, a.options());
  mm_out(out, a, b, p);
  return out;
}

}  // namespace lstm_ext::cuda_binding
