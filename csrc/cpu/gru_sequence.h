// The time loops of one GRU layer-direction on the CPU, on raw pointers.
//
// torch.nn's GRU, gates r, z, n in weight order ([W_ir | W_iz | W_in]):
//   r = sigmoid(gi_r + gh_r),  z = sigmoid(gi_z + gh_z),
//   n = tanh(gi_n + r * hn),   h_t = (1 - z) * n + z * h_{t-1},
// with gi = x_t W_ih^T + b_ih and gh = h_{t-1} W_hh^T + b_hh, hn = gh_n.
// r multiplies hn = h_{t-1} W_hn^T + b_hn, so b_hn cannot join the input
// projection; b_hr and b_hz can, and the caller folds them into gi.
//
// The input projection (gi for all rows) and the weight gradients are single
// large GEMMs done by the caller (gru_cpu.cpp); these loops do only what must
// be sequential. float32 runs on the fused kernels (cpu/fused/kernels.h)
// the caller passes (its op call's choice, cpu/kernel_select.h); with null,
// and for float64, the reference loops (the oracle for the fused ones) make
// per step one BLAS call for the recurrent product and one elementwise pass.
// Neither allocates nor calls the dispatcher inside the time loop. A
// bfloat16 forward runs natively on AVX512-BF16 (gru_forward_bf16).
//
// Letters: N rows over all steps (T*B dense, sum(batch_sizes) packed), B the
// widest step, H hidden units. Step t's rows are rows [offset(t), +rows(t))
// of every [N,.] buffer and rows [0, rows(t)) of every [B,.] buffer.
//
// Saved activations, gates [N,4H], per row: r, z, n, hn. hn is saved rather
// than recomputed in backward: recomputing it costs a second H x H product
// per row (half the backward's recurrent FLOPs again) to save H floats.
//
// Gate gradients, grad_gates [N,4H], per row:
//   [ d(gh_r) = d(gi_r), d(gh_z) = d(gi_z), d(hn), d(gi_n) ]
// so columns [0,3H) are the gradient of gh (what the recurrence reads, row
// stride 4H, and what grad W_hh / grad b_hh sum), and columns [0,2H) + [3H,4H)
// are the gradient of gi (grad W_ih, grad b_ih, grad x).
#pragma once

#include <cstdint>

#include "step_layout.h"

namespace lstm_ext::cpu {

namespace fused {
struct Kernels;
struct Bf16Kernels;
struct Bf16;
}  // namespace fused

// kernels the op call's fused float32 kernels, or null for the reference
//         loop (float64 always runs it).
// w_hh   [3H,H]  recurrent weights (read only).
// b_hn   [H]     the n part of b_hh, or null (no bias).
// gi     [N,3H]  x W_ih^T + b_ih + [b_hr, b_hz, 0] (read only).
// h0     [B,H]   initial state (read only; h_n is gathered from y).
// y      [N,H]   out: h_t.
// gates  [N,4H]  out: r, z, n, hn when non-null (training); null otherwise.
// gh     [B,3H]  scratch of the reference loop (the fused kernels keep the
//                recurrent product in registers and ignore it).
template <typename scalar_t>
void gru_forward_loop(const fused::Kernels* kernels, const StepLayout& layout, bool reverse,
                      int64_t H, const scalar_t* w_hh, const scalar_t* b_hn, const scalar_t* gi,
                      const scalar_t* h0, scalar_t* y, scalar_t* gates, scalar_t* gh);

// Visits the steps in the opposite order to the forward.
// kernels            as in forward.
// w_hh        [3H,H] recurrent weights.
// gates       [N,4H] the forward's saved r, z, n, hn.
// y           [N,H]  the forward's output (h_{t-1} of the next visited step).
// h0          [B,H]  initial state.
// grad_y      [N,H]  gradient of y, or null (zero).
// grad_h      [B,H]  in: gradient at h_n; out: at h0.
// grad_gates  [N,4H] out: as described above.
// grad_direct [B,H]  scratch: the part of the gradient at h_{t-1} that flows
//                    through z * h_{t-1}, before the recurrent product adds
//                    the rest.
template <typename scalar_t>
void gru_backward_loop(const fused::Kernels* kernels, const StepLayout& layout, bool reverse,
                       int64_t H, const scalar_t* w_hh, const scalar_t* gates, const scalar_t* y,
                       const scalar_t* h0, const scalar_t* grad_y, scalar_t* grad_h,
                       scalar_t* grad_gates, scalar_t* grad_direct);

// The native bfloat16 forward (AVX512-BF16, the op call's Bf16Kernels k):
// gi = x W_ih^T + gi_bias with bfloat16 operands and float32 accumulation,
// then the fused time loop, whose recurrent product reads h_{t-1} and w_hh as
// bfloat16 too. The gates and h_t's update are float32; h_t is rounded to
// bfloat16 once, into y, from where the next step reads it. Same outputs as
// gru_forward_loop on the upcast arguments, up to that rounding.
// x        [N,I]  bfloat16.
// w_ih     [3H,I] bfloat16.
// w_hh     [3H,H] bfloat16.
// gi_bias  [3H]   float32 b_ih + [b_hr, b_hz, 0], or null.
// b_hn     [H]    float32, or null.
// h0       [B,H]  bfloat16 (h_n is gathered from y).
// gi       [N,3H] float32 scratch.
// y        [N,H]  out: h_t, bfloat16.
// gates    [N,4H] out: float32 r, z, n, hn, or null.
void gru_forward_bf16(const fused::Bf16Kernels& k, const StepLayout& layout, bool reverse,
                      int64_t I, int64_t H, const fused::Bf16* x, const fused::Bf16* w_ih,
                      const fused::Bf16* w_hh, const float* gi_bias, const float* b_hn,
                      const fused::Bf16* h0, float* gi, fused::Bf16* y, float* gates);

}  // namespace lstm_ext::cpu
