// The one place where lstm_ext's operator schemas are declared.
//
// Each backend registers its kernels next to them with TORCH_LIBRARY_IMPL
// (csrc/cpu/lstm_cpu.cpp, and the CUDA binding when built with CUDA). Python
// adds the fake (meta) kernels and the autograd formula in lstm_ext/ops.py.
//
// Every op runs ONE layer in ONE direction over the whole sequence.
// Letters: T time steps, B batch, I input features, H hidden units.
#include <torch/library.h>

TORCH_LIBRARY(lstm_ext, m) {
  // x [T,B,I], w_ih [4H,I], w_hh [4H,H], bias [4H] (= b_ih + b_hh) or None,
  // h0 [B,H], c0 [B,H].
  // Returns y [T,B,H] (y[t] is aligned with x[t] in both directions),
  // h_n [B,H], c_n [B,H], and, only when save_for_backward is true,
  // gates [T,B,4H] (activations i, f, g, o) and cells [T,B,H] (c_t for every
  // t); otherwise both are empty tensors of shape [0].
  // reverse=true walks t = T-1 .. 0 (the reverse half of a bidirectional layer)
  // without copying x.
  m.def(
      "lstm_forward(Tensor x, Tensor w_ih, Tensor w_hh, Tensor? bias, Tensor h0, Tensor c0, "
      "bool reverse, bool save_for_backward) -> "
      "(Tensor y, Tensor h_n, Tensor c_n, Tensor gates, Tensor cells)");

  // Gradients of one lstm_forward call. An absent (None) output gradient
  // counts as zero. grad_cells [T,B,H] is the gradient of the `cells` output.
  // Returns grad_x [T,B,I] (an empty [0] tensor when need_grad_x is false),
  // grad_w_ih [4H,I], grad_w_hh [4H,H], grad_bias [4H], grad_h0 [B,H],
  // grad_c0 [B,H].
  m.def(
      "lstm_backward(Tensor? grad_y, Tensor? grad_h_n, Tensor? grad_c_n, Tensor? grad_cells, "
      "Tensor x, Tensor w_ih, Tensor w_hh, Tensor h0, Tensor c0, Tensor y, Tensor gates, "
      "Tensor cells, bool reverse, bool need_grad_x) -> "
      "(Tensor grad_x, Tensor grad_w_ih, Tensor grad_w_hh, Tensor grad_bias, Tensor grad_h0, "
      "Tensor grad_c0)");
}
