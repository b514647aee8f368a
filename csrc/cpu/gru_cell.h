// The fused, vectorized elementwise halves of one GRU time step, for the
// reference loops (gru_sequence.cpp); the fused kernels run the same math in
// their register tiles' epilogue (cpu/fused/kernels_impl.h).
//
// Each function handles rows [row_begin, row_end) of one step's live rows,
// reading a row's gate values once and writing everything the step produces
// in the same pass. Gate order is r, z, n (torch.nn's); layouts are those of
// gru_sequence.h. Letters: H hidden units; row strides are 3H (gi, gh), 4H
// (gates, grad_gates) and H (states).
#pragma once

#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <cstdint>

#include "cpu/lstm_cell.h"

namespace lstm_ext::cpu {

// Where row r of a step reads h_{t-1}: rows [0, continuing) from the previous
// visited step's rows of y, the rest from h0 (cpu/previous_state.h).
template <typename T>
struct PreviousRows {
  const T* continuing_rows;  // y rows of the previous visited step, or null
  const T* initial;          // h0 [B,H]
  int64_t continuing, H;
  const T* row(int64_t r) const {
    return r < continuing ? continuing_rows + r * H : initial + r * H;
  }
};

// Forward.
//   gi     [R,3H] x W_ih^T + b_ih + [b_hr, b_hz, 0] of the step's rows.
//   gh     [R,3H] h_{t-1} W_hh^T + [0, 0, b_hn].
//   y_t    [R,H]  out: h_t = (1 - z) n + z h_{t-1}.
//   gates  [R,4H] out: r, z, n, hn, or null.
template <typename T>
void gru_cell_forward(int64_t row_begin, int64_t row_end, int64_t H, const T* gi, const T* gh,
                      const PreviousRows<T>& prev, T* y_t, T* gates) {
  using V = Vec<T>;
  constexpr int64_t W = V::size();
  const V one(T(1));
  for (int64_t b = row_begin; b < row_end; ++b) {
    const T* i_row = gi + b * 3 * H;
    const T* h_row = gh + b * 3 * H;
    const T* h_prev = prev.row(b);
    T* g = gates ? gates + b * 4 * H : nullptr;
    for (int64_t j = 0; j < H; j += W) {
      const int64_t n = std::min<int64_t>(W, H - j);
      const V r = sigmoid(V::loadu(i_row + j, n) + V::loadu(h_row + j, n));
      const V z = sigmoid(V::loadu(i_row + H + j, n) + V::loadu(h_row + H + j, n));
      const V hn = V::loadu(h_row + 2 * H + j, n);
      const V cand = (V::loadu(i_row + 2 * H + j, n) + r * hn).tanh();
      const V hp = V::loadu(h_prev + j, n);
      (cand + z * (hp - cand)).store(y_t + b * H + j, n);
      if (g) {
        r.store(g + j, n);
        z.store(g + H + j, n);
        cand.store(g + 2 * H + j, n);
        hn.store(g + 3 * H + j, n);
      }
    }
  }
}

// Backward gate gradients for one step.
//   gates      [R,4H] the forward's r, z, n, hn.
//   grad_y     [R,H]  gradient arriving at h_t from y[t], or null.
//   grad_h     [R,H]  in: gradient at h_t through the later steps; out: the
//                     part of the gradient at h_{t-1} that passes through
//                     z * h_{t-1} (the recurrent product adds the rest).
//   grad_gates [R,4H] out: d(r pre), d(z pre), d(hn), d(n pre).
template <typename T>
void gru_cell_backward(int64_t row_begin, int64_t row_end, int64_t H, const T* gates,
                       const PreviousRows<T>& prev, const T* grad_y, T* grad_h, T* grad_gates) {
  using V = Vec<T>;
  constexpr int64_t W = V::size();
  const V one(T(1));
  for (int64_t b = row_begin; b < row_end; ++b) {
    const T* g = gates + b * 4 * H;
    const T* h_prev = prev.row(b);
    T* dg = grad_gates + b * 4 * H;
    T* gh = grad_h + b * H;
    for (int64_t j = 0; j < H; j += W) {
      const int64_t n = std::min<int64_t>(W, H - j);
      const V r = V::loadu(g + j, n), z = V::loadu(g + H + j, n);
      const V cand = V::loadu(g + 2 * H + j, n), hn = V::loadu(g + 3 * H + j, n);
      V dh = V::loadu(gh + j, n);
      if (grad_y) dh = dh + V::loadu(grad_y + b * H + j, n);
      const V d_n = dh * (one - z) * (one - cand * cand);
      const V d_z = dh * (V::loadu(h_prev + j, n) - cand) * z * (one - z);
      const V d_hn = d_n * r;
      const V d_r = d_n * hn * r * (one - r);
      d_r.store(dg + j, n);
      d_z.store(dg + H + j, n);
      d_hn.store(dg + 2 * H + j, n);
      d_n.store(dg + 3 * H + j, n);
      (dh * z).store(gh + j, n);
    }
  }
}

}  // namespace lstm_ext::cpu
