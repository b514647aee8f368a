// The standard path's time loops, written once for the LSTM, RNN and GRU
// bindings: each binding passes only its cell-specific part (fill the step
// kernel's arguments and launch it) as a callable.
//
// Forward: for every step in visiting order (reverse: last to first), one
// GEMM for the recurrent product of the step's rows, rec[0, rows) =
// state[0, rows) W_hh^T, then the cell's step kernel, whose launch is checked.
// Backward: for every step from the last visited to the first, the cell's
// gate-gradient kernel (checked), then one GEMM for the recurrent part of the
// gradient at h_{t-1}: grad_h[0, rows) = (or, accumulate, +=) the step's rows
// of the gate gradients times W_hh.
//
// The state buffers are full-batch ([B,.]): step t touches their first
// rows(t) rows, so rows a packed step does not reach keep their state (h_n,
// grad_h0 per sequence). Everything is allocated by the caller, once per op
// call: the loops add no allocation (the row blocks are views).
#pragma once

#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>

#include <cstdint>

#include "cuda_binding/cuda_tensors.h"
#include "cuda_binding/gemm.h"
#include "step_layout.h"

namespace lstm_ext::cuda_binding {

// The step being computed: time index t, its rows(t) rows starting at row
// off of the [N,.] sequence buffers.
struct Step {
  int64_t t, rows, off;
};

// rec [B,G] (its first rows(t) rows <- h_state[0, rows(t)) w_hh^T, G = w_hh's
// rows), then launch(step), which enqueues the step kernel reading them; then
// after(step), for work that follows the kernel (the LSTM's projection).
template <typename Launch, typename After>
void forward_steps(const StepLayout& L, bool reverse, Tensor& rec, const Tensor& h_state,
                   const Tensor& w_hh, GemmPrecision prec, Launch&& launch, After&& after) {
  const Tensor w_hh_t = w_hh.t();
  for (int64_t s = 0; s < L.steps(); ++s) {
    const int64_t t = L.time_at(s, reverse);
    const Step st{t, L.rows(t), L.offset(t)};
    Tensor rec_rows = row_block(rec, 0, st.rows);
    mm_out(rec_rows, row_block(h_state, 0, st.rows), w_hh_t, prec);
    launch(st);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    after(st);
  }
}

template <typename Launch>
void forward_steps(const StepLayout& L, bool reverse, Tensor& rec, const Tensor& h_state,
                   const Tensor& w_hh, GemmPrecision prec, Launch&& launch) {
  forward_steps(L, reverse, rec, h_state, w_hh, prec, launch, [](const Step&) {});
}

// How the backward's GEMM writes the gradient at h_{t-1}.
enum class GradH { kOverwrite, kAccumulate };

// Last visited step to first: launch(step) enqueues the step's gate-gradient
// kernel (writing the step's rows of dgrad and, for kAccumulate, the direct
// part of the gradient at h_{t-1} into grad_h); then grad_h[0, rows(t)) =
// (or +=) dgrad's rows of step t times w_hh. dgrad [N,G] may be a column
// block of a wider buffer (row stride > G): its rows are views.
template <typename Launch>
void backward_steps(const StepLayout& L, bool reverse, Tensor& grad_h, const Tensor& dgrad,
                    const Tensor& w_hh, GradH mode, GemmPrecision prec, Launch&& launch) {
  for (int64_t s = L.steps() - 1; s >= 0; --s) {
    const int64_t t = L.time_at(s, reverse);
    const Step st{t, L.rows(t), L.offset(t)};
    launch(st);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    Tensor grad_h_rows = row_block(grad_h, 0, st.rows);
    if (mode == GradH::kAccumulate) {
      mm_add_out(grad_h_rows, step_rows(dgrad, L, t), w_hh, prec);
    } else {
      mm_out(grad_h_rows, step_rows(dgrad, L, t), w_hh, prec);
    }
  }
}

}  // namespace lstm_ext::cuda_binding
