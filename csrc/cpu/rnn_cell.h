// The fused, vectorized elementwise halves of one vanilla RNN time step.
//
// Each function handles rows [row_begin, row_end) of one step's live rows,
// reading a row's H values once and writing everything the step produces in
// the same pass. The activation is a template flag (Relu), so the choice is
// made once per call, outside the time loop. H need not be a multiple of the
// vector width: the last chunk of each row is a partial load/store.
//
// Letters: R live rows of the step, H hidden units. All rows are contiguous
// with row stride H.
#pragma once

#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <cstdint>

namespace lstm_ext::cpu {

// Forward activation, in place.
//   y_t     [R,H]  in: pre-activations (x W_ih^T + bias + h_{t-1} W_hh^T);
//                  out: h_t = act(pre).
// act is relu (NaN-propagating, as torch.relu) or tanh.
template <typename T, bool Relu>
void rnn_cell_forward(int64_t row_begin, int64_t row_end, int64_t H, T* y_t) {
  using V = at::vec::Vectorized<T>;
  constexpr int64_t W = V::size();
  const V zero(T(0));
  for (int64_t r = row_begin; r < row_end; ++r) {
    T* y = y_t + r * H;
    for (int64_t j = 0; j < H; j += W) {
      const int64_t n = std::min<int64_t>(W, H - j);
      const V pre = V::loadu(y + j, n);
      V out;
      if constexpr (Relu) {
        out = at::vec::maximum(pre, zero);
      } else {
        out = pre.tanh();
      }
      out.store(y + j, n);
    }
  }
}

// Backward pre-activation gradient for one step.
//   y_t     [R,H]  the step's output h_t (the saved forward output).
//   grad_y  [R,H]  gradient arriving at h_t from the output y[t], or null.
//   grad_h  [R,H]  gradient arriving at h_t through the next visited step
//                  (or from h_n).
//   d_pre   [R,H]  out: dh * act'(pre), with dh = grad_h + grad_y and act'
//                  read off y: tanh' = 1 - y^2; relu' = 0 where y <= 0, else
//                  1 (as torch's threshold_backward, so a NaN y passes dh).
template <typename T, bool Relu>
void rnn_cell_backward(int64_t row_begin, int64_t row_end, int64_t H, const T* y_t,
                       const T* grad_y, const T* grad_h, T* d_pre) {
  using V = at::vec::Vectorized<T>;
  constexpr int64_t W = V::size();
  const V zero(T(0));
  const V one(T(1));
  for (int64_t r = row_begin; r < row_end; ++r) {
    const int64_t o = r * H;
    for (int64_t j = 0; j < H; j += W) {
      const int64_t n = std::min<int64_t>(W, H - j);
      const V y = V::loadu(y_t + o + j, n);
      V dh = V::loadu(grad_h + o + j, n);
      if (grad_y) dh = dh + V::loadu(grad_y + o + j, n);
      V d;
      if constexpr (Relu) {
        d = V::blendv(dh, zero, y <= zero);
      } else {
        d = dh * (one - y * y);
      }
      d.store(d_pre + o + j, n);
    }
  }
}

}  // namespace lstm_ext::cpu
