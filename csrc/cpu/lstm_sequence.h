// The time loops of one LSTM layer-direction on the CPU, on raw pointers.
//
// The input projection (x W_ih^T + b for all steps) and the weight gradients
// are single large GEMMs done by the caller; these loops do only what must be
// sequential: per step one recurrent GEMM and one fused elementwise pass. They
// allocate nothing and make no dispatcher calls.
//
// Letters: T steps, B batch, H hidden. Step s of the loop visits time index
// t = s, or t = T-1-s when reverse; outputs are stored at t.
#pragma once

#include <cstdint>

namespace lstm_ext::cpu {

// w_hh    [4H,H]   recurrent weights (read only).
// gates   [T,B,4H] in: x W_ih^T + bias for every step; out: activations
//                  i, f, g, o when save, otherwise pre-activations (garbage).
// h0, c0  [B,H]    initial state (read only).
// y       [T,B,H]  out: h_t.
// cells   [T,B,H]  out: c_t when save; may be null when !save.
// c_state [B,H]    scratch; holds c_n on return when !save.
template <typename scalar_t>
void lstm_forward_loop(int64_t T, int64_t B, int64_t H, bool reverse, bool save,
                       const scalar_t* w_hh, scalar_t* gates, const scalar_t* h0,
                       const scalar_t* c0, scalar_t* y, scalar_t* cells, scalar_t* c_state);

// w_hh       [4H,H]   recurrent weights.
// gates      [T,B,4H] saved activations; cells [T,B,H] saved c_t.
// c0         [B,H]    initial cell state.
// grad_y     [T,B,H]  or null; grad_cells [T,B,H] or null.
// grad_h     [B,H]    in: gradient at h_n; out: gradient at h0.
// grad_c     [B,H]    in: gradient at c_n; out: gradient at c0.
// grad_gates [T,B,4H] out: gradients of the gate pre-activations.
template <typename scalar_t>
void lstm_backward_loop(int64_t T, int64_t B, int64_t H, bool reverse, const scalar_t* w_hh,
                        const scalar_t* gates, const scalar_t* cells, const scalar_t* c0,
                        const scalar_t* grad_y, const scalar_t* grad_cells, scalar_t* grad_h,
                        scalar_t* grad_c, scalar_t* grad_gates);

}  // namespace lstm_ext::cpu
