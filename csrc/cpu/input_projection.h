// The input projection of every step at once: out [N,G] = x2d [N,I] w^T +
// bias, one GEMM before the time loop.
//
// float32 runs on the fused kernels' own GEMM (fused/kernels.h `linear`):
// the same register tile as the recurrence, at ~the machine's FMA peak on
// these skinny shapes, where ATen's addmm (MKL) reached 112-148 of ~190
// GFLOP/s on 2 cores (benchmarks/prototype/FINDINGS.md). Other dtypes, few
// rows, and the reference kernel use ATen.
#pragma once

#include <ATen/ATen.h>

#include "tensor_args.h"

namespace lstm_ext::cpu {

// x2d, w and bias contiguous and in out's dtype.
void input_projection_into(at::Tensor& out, const at::Tensor& x2d, const at::Tensor& w,
                           const OptTensor& bias);

}  // namespace lstm_ext::cpu
