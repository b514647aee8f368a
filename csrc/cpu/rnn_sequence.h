// The time loops of one vanilla RNN layer-direction on the CPU, on raw
// pointers.
//
// The input projection (x W_ih^T + bias for all rows) and the weight
// gradients are single large GEMMs done by the caller (rnn_cpu.cpp); these
// loops do only what must be sequential. float32 runs on the fused kernels
// (cpu/fused/kernels.h) the caller passes (its op call's choice,
// cpu/kernel_select.h); with null, and for float64, the reference loops here
// make per step one recurrent GEMM and one fused elementwise pass. They
// allocate nothing and make no dispatcher calls.
//
// Letters: T steps, B batch (rows of the widest step), N rows over all steps
// (T*B when dense), H hidden units. Steps and their rows come from a
// StepLayout (dense or packed); step t's live rows are the first rows(t) of
// the batch. Visiting order is t = 0 .. T-1, or T-1 .. 0 when reverse;
// outputs are stored at t.
#pragma once

#include <cstdint>

#include "step_layout.h"

namespace lstm_ext::cpu {

namespace fused {
struct Kernels;
}  // namespace fused

// kernels  the op call's fused float32 kernels, or null for the reference
//          loop (float64 always runs it).
// w_hh    [H,H]  recurrent weights (read only).
// y       [N,H]  in: x W_ih^T + bias for every row; out: h_t.
// h0      [B,H]  initial state (read only); h_{t-1} is read from y or h0
//                where it lives (cpu/previous_state.h), and h_n is gathered
//                from y afterwards.
template <typename scalar_t>
void rnn_forward_loop(const fused::Kernels* kernels, const StepLayout& L, int64_t H, bool reverse,
                      bool relu, const scalar_t* w_hh, const scalar_t* h0, scalar_t* y);

// Visits the steps in the opposite order to the forward.
// kernels        as in forward.
// w_hh    [H,H]  recurrent weights.
// y       [N,H]  the forward's output.
// grad_y  [N,H]  gradient of y, or null (zero).
// grad_h  [B,H]  in: gradient at h_n; out: gradient at h0.
// d_pre   [N,H]  out: gradients of the pre-activations.
template <typename scalar_t>
void rnn_backward_loop(const fused::Kernels* kernels, const StepLayout& L, int64_t H,
                       bool reverse, bool relu, const scalar_t* w_hh, const scalar_t* y,
                       const scalar_t* grad_y, scalar_t* grad_h, scalar_t* d_pre);

}  // namespace lstm_ext::cpu
