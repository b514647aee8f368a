// The recurrent layers' weight gradients, after the reverse time loop:
//   grad W_ih [G,I] = grad_pre^T x,   grad W_hh [G,P] = grad_pre^T h_prev,
// summed over all N rows, as one GEMM of grad_pre^T [G,N] and [x | h_prev]
// [N, I+P] (x and every row's h_{t-1} side by side).
//
// Why one GEMM: MKL runs the wider right-hand side much closer to the
// machine's sgemm peak. Measured here (2 threads, fp32): N3200 G1024 I=P=256,
// two GEMMs 17.7 ms each, one over [x | h] 20.7 ms (95 -> 162 GFLOP/s);
// N6400 G2048 I=P=512, 98.9 ms each vs 147.6 ms (136 -> 182 GFLOP/s). The
// price is one copy of x into the buffer, which the bfloat16 path pays anyway
// to upcast it (benchmarks/NOTES.md, v0.5).
#pragma once

#include <ATen/ATen.h>

#include <utility>

#include "step_layout.h"

namespace lstm_ext::cpu {

// grad_pre [N,G] (contiguous, compute dtype), x2d [N,I] (any float dtype and
// strides; cast to grad_pre's), y [N,P] and h0 [B,P] (contiguous, compute
// dtype) as the forward returned them -> (grad W_ih [G,I], grad W_hh [G,P]),
// contiguous, in the compute dtype. The [N, I+P] buffer is this thread's
// scratch (ScratchRole::kPrevState).
std::pair<at::Tensor, at::Tensor> weight_gradients(const at::Tensor& grad_pre,
                                                   const at::Tensor& x2d,
                                                   const StepLayout& layout, bool reverse,
                                                   const at::Tensor& y, const at::Tensor& h0);

}  // namespace lstm_ext::cpu
