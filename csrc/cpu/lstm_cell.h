// The fused, vectorized elementwise halves of one LSTM time step.
//
// Each function handles rows [row_begin, row_end) of the batch for one step,
// reading the 4H gate pre-activations (or activations) of a row once and
// writing everything the step produces in the same pass, so the gates never
// make a second round trip through memory. Gate order is i, f, g, o.
//
// Letters: B batch rows, H hidden units. Row strides are given explicitly
// where a caller may pass a strided view; otherwise rows are contiguous.
#pragma once

#include <ATen/cpu/vec/vec.h>

#include <cstdint>

namespace lstm_ext::cpu {

template <typename T>
using Vec = at::vec::Vectorized<T>;

template <typename T>
inline Vec<T> sigmoid(Vec<T> x) {
  return (Vec<T>(T(1)) + x.neg().exp()).reciprocal();
}

// Forward cell update.
//   gates   [B,4H] in: pre-activations (x W_ih^T + b + h W_hh^T);
//                  out: activations i, f, g, o if save_gates, else untouched.
//   c_state [B,H]  in: c_{t-1}; out: c_t.
//   c_save  [B,H]  out: c_t as well, or null.
//   h_out   [B,H]  out: o * tanh(c_t).
template <typename T>
void lstm_cell_forward(int64_t row_begin, int64_t row_end, int64_t H, T* gates, T* c_state,
                       T* c_save, T* h_out, bool save_gates) {
  constexpr int64_t W = Vec<T>::size();
  for (int64_t b = row_begin; b < row_end; ++b) {
    T* g = gates + b * 4 * H;
    const int64_t r = b * H;
    for (int64_t j = 0; j < H; j += W) {
      const int64_t n = std::min<int64_t>(W, H - j);
      const Vec<T> i = sigmoid(Vec<T>::loadu(g + j, n));
      const Vec<T> f = sigmoid(Vec<T>::loadu(g + H + j, n));
      const Vec<T> gg = Vec<T>::loadu(g + 2 * H + j, n).tanh();
      const Vec<T> o = sigmoid(Vec<T>::loadu(g + 3 * H + j, n));
      const Vec<T> c = f * Vec<T>::loadu(c_state + r + j, n) + i * gg;
      const Vec<T> h = o * c.tanh();
      c.store(c_state + r + j, n);
      if (c_save) c.store(c_save + r + j, n);
      h.store(h_out + r + j, n);
      if (save_gates) {
        i.store(g + j, n);
        f.store(g + H + j, n);
        gg.store(g + 2 * H + j, n);
        o.store(g + 3 * H + j, n);
      }
    }
  }
}

// Backward gate-gradient pass for one step.
//   gates      [B,4H] activations i, f, g, o of step t.
//   c_t        [B,H]  cell state of step t; c_prev [B,H] that of step t-1.
//   grad_h_out [B,H]  gradient arriving at h_t from the output y[t], or null.
//   grad_h_rec [B,H]  gradient arriving at h_t through step t+1.
//   grad_c_out [B,H]  gradient arriving at c_t from the `cells` output, or null.
//   grad_c     [B,H]  in: gradient at c_t through step t+1; out: at c_{t-1}.
//   grad_gates [B,4H] out: gradients of the gate pre-activations.
//   h_raw      [B,H]  out: o * tanh(c_t), the unprojected h_t, or null.
template <typename T>
void lstm_cell_backward(int64_t row_begin, int64_t row_end, int64_t H, const T* gates,
                        const T* c_t, const T* c_prev, const T* grad_h_out, const T* grad_h_rec,
                        const T* grad_c_out, T* grad_c, T* grad_gates, T* h_raw) {
  constexpr int64_t W = Vec<T>::size();
  const Vec<T> one(T(1));
  for (int64_t b = row_begin; b < row_end; ++b) {
    const T* g = gates + b * 4 * H;
    T* dg = grad_gates + b * 4 * H;
    const int64_t r = b * H;
    for (int64_t j = 0; j < H; j += W) {
      const int64_t n = std::min<int64_t>(W, H - j);
      const Vec<T> i = Vec<T>::loadu(g + j, n);
      const Vec<T> f = Vec<T>::loadu(g + H + j, n);
      const Vec<T> gg = Vec<T>::loadu(g + 2 * H + j, n);
      const Vec<T> o = Vec<T>::loadu(g + 3 * H + j, n);
      const Vec<T> tc = Vec<T>::loadu(c_t + r + j, n).tanh();
      Vec<T> dh = Vec<T>::loadu(grad_h_rec + r + j, n);
      if (grad_h_out) dh = dh + Vec<T>::loadu(grad_h_out + r + j, n);
      Vec<T> dc = Vec<T>::loadu(grad_c + r + j, n) + dh * o * (one - tc * tc);
      if (grad_c_out) dc = dc + Vec<T>::loadu(grad_c_out + r + j, n);
      const Vec<T> cp = Vec<T>::loadu(c_prev + r + j, n);
      (dc * gg * i * (one - i)).store(dg + j, n);
      (dc * cp * f * (one - f)).store(dg + H + j, n);
      (dc * i * (one - gg * gg)).store(dg + 2 * H + j, n);
      (dh * tc * o * (one - o)).store(dg + 3 * H + j, n);
      (dc * f).store(grad_c + r + j, n);
      if (h_raw) (o * tc).store(h_raw + r + j, n);
    }
  }
}

}  // namespace lstm_ext::cpu
