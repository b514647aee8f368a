// The time loops of one LSTM layer-direction on the CPU, on raw pointers.
//
// The input projection (x W_ih^T + b for all steps) and the weight gradients
// are single large GEMMs done by the caller; these loops do only what must be
// sequential. float32 runs on the fused kernels (cpu/fused/kernels.h) the
// caller passes (its op call's choice, cpu/kernel_select.h); with null, and
// for float64, the reference loops
// here (float64, and the oracle for the fused ones) make per step one BLAS
// call for the recurrent GEMM (and the projection's, with w_hr) and one
// fused at::vec elementwise pass. Neither allocates nor calls the
// dispatcher inside the time loop.
//
// Letters: N rows over all steps (T*B dense, sum(batch_sizes) packed), B the
// widest step, H cell size, P size of h (H, or proj_size with w_hr). Rows of
// step t are rows [layout.offset(t), +layout.rows(t)) of every [N,·] buffer,
// and rows [0, layout.rows(t)) of every [B,·] state buffer.
#pragma once

#include <cstdint>

#include "step_layout.h"

namespace lstm_ext::cpu {

namespace fused {
struct Kernels;
}  // namespace fused

// kernels  the op call's fused float32 kernels, or null for the reference
//          loop (float64 always runs it).
// w_hh    [4H,P]  recurrent weights; w_hr [P,H] projection or null (P == H).
// gates   [N,4H]  in: x W_ih^T + bias; out: activations i, f, g, o when save,
//                 otherwise clobbered.
// y       [N,P]   out: h_t.
// cells   [N,H]   out: c_t when save; null otherwise.
// h0      [B,P]   initial hidden state (read only; h_n is gathered from y).
// c_state [B,H]   in: c0; out: c_n.
// h_raw   [B,H]   scratch for o * tanh(c_t) before projection; null without w_hr.
template <typename scalar_t>
void lstm_forward_loop(const fused::Kernels* kernels, const StepLayout& layout, bool reverse,
                       bool save, int64_t H, int64_t P, const scalar_t* w_hh, const scalar_t* w_hr,
                       scalar_t* gates, scalar_t* y, scalar_t* cells, const scalar_t* h0,
                       scalar_t* c_state, scalar_t* h_raw);

// kernels, w_hh, w_hr  as in forward.
// gates       [N,4H] saved activations; cells [N,H] saved c_t; c0 [B,H].
// grad_y      [N,P] or null; grad_cells [N,H] or null.
// grad_h      [B,P]  in: gradient at h_n (zeros if none); out: at h0.
// grad_c      [B,H]  in: gradient at c_n; out: at c0.
// grad_gates  [N,4H] out: gradients of the gate pre-activations.
// With w_hr only (null otherwise):
//   grad_h_all [N,P] out: the total gradient at each h_t.
//   h_raw_all  [N,H] out: o * tanh(c_t), recomputed.
//   grad_h_raw [B,H] scratch.
template <typename scalar_t>
void lstm_backward_loop(const fused::Kernels* kernels, const StepLayout& layout, bool reverse,
                        int64_t H, int64_t P, const scalar_t* w_hh, const scalar_t* w_hr,
                        const scalar_t* gates, const scalar_t* cells, const scalar_t* c0,
                        const scalar_t* grad_y, const scalar_t* grad_cells, scalar_t* grad_h,
                        scalar_t* grad_c, scalar_t* grad_gates, scalar_t* grad_h_all,
                        scalar_t* h_raw_all, scalar_t* grad_h_raw);

}  // namespace lstm_ext::cpu
