// Small helpers the bindings share for optional tensor arguments and the
// buffers every layer op allocates once per call (never inside a time loop).
#pragma once

#include <ATen/ATen.h>

#include <optional>

namespace lstm_ext {

using OptTensor = std::optional<at::Tensor>;

inline bool present(const OptTensor& t) { return t.has_value() && t->defined(); }

template <typename scalar_t>
scalar_t* ptr_or_null(const OptTensor& t) {
  return present(t) ? t->data_ptr<scalar_t>() : nullptr;
}

// out [N,G] = x2d [N,I] w_ih^T + bias: the input projection of every step at
// once, as one GEMM.
inline void input_projection_out(at::Tensor& out, const at::Tensor& x2d, const at::Tensor& w_ih,
                                 const OptTensor& bias) {
  if (present(bias)) {
    at::addmm_out(out, *bias, x2d, w_ih.t());
  } else {
    at::mm_out(out, x2d, w_ih.t());
  }
}

// A fresh, writable, contiguous copy of an optional state gradient (zeros
// when absent), shaped like `like`: a backward loop accumulates into it.
inline at::Tensor state_grad_buffer(const OptTensor& g, const at::Tensor& like) {
  at::Tensor buf = at::empty(like.sizes(), like.options());
  if (present(g)) {
    buf.copy_(*g);
  } else {
    buf.zero_();
  }
  return buf;
}

}  // namespace lstm_ext
