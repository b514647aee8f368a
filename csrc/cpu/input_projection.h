// The input projection of every step at once: out [N,G] = x2d [N,I] w^T +
// bias, one GEMM before the time loop; and, in backward, the gradient it
// passes to x.
//
// float32 runs on the fused kernels' own GEMM (fused/kernels.h `linear`):
// the same register tile as the recurrence, at ~the machine's FMA peak on
// these skinny shapes, where ATen's addmm (MKL) reached 112-148 of ~190
// GFLOP/s on 2 cores (benchmarks/NOTES.md). Other dtypes, few rows, and the
// reference kernel use ATen. `kernels` is the op call's choice
// (kernel_select.h).
#pragma once

#include <ATen/ATen.h>

#include "cpu/kernel_select.h"
#include "tensor_args.h"

namespace lstm_ext::cpu {

// x2d, w and bias contiguous and in out's dtype.
void input_projection_into(const CpuKernels& kernels, at::Tensor& out, const at::Tensor& x2d,
                           const at::Tensor& w, const OptTensor& bias);

// Its gradient with respect to x2d: grad_pre [N,G] w [G,I] -> [N,I] in
// grad_pre's dtype (the compute dtype). grad_pre contiguous; w in the
// storage dtype.
//
// float32 w runs on the same GEMM as the projection. A bfloat16 w runs on the
// native bf16 GEMM where it is available: grad_pre (float32) is rounded to
// bfloat16 once, as the GEMM operand (as oneDNN's bf16 backward does), and
// the products accumulate in float32. Only the input gradient does this: each
// of its elements sums G products, as the forward's bf16 projection does,
// while the weight gradients sum over all N rows and stay float32 GEMMs
// (benchmarks/NOTES.md, v0.3). Elsewhere w is upcast.
at::Tensor input_gradient(const CpuKernels& kernels, const at::Tensor& grad_pre,
                          const at::Tensor& w);

}  // namespace lstm_ext::cpu
