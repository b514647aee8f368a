// The one place where lstm_ext's operator schemas are declared.
//
// Each backend registers its kernels next to them with TORCH_LIBRARY_IMPL
// (csrc/cpu/lstm_cpu.cpp, and the CUDA binding when built with CUDA). Python
// adds the fake (meta) kernels and the autograd formula in lstm_ext/ops.py.
//
// Every op runs ONE layer in ONE direction over the whole sequence.
// Letters: T time steps, B batch, I input features, H hidden units, P the
// size of h (proj_size, or H without a projection), N packed rows.
//
// Dtypes: every tensor argument and result has x's dtype (float32, float64,
// or bfloat16, which is computed in float32), except
//  - the LSTM's and GRU's saved activations `gates` (and the LSTM's `cells`) and the gradient
//    `grad_cells`: these are in the compute dtype, float32 for a bfloat16 x
//    (csrc/compute_dtype.h);
//  - `bias`, which may be in x's dtype or in its compute dtype: the modules
//    pass b_ih + b_hh summed in float32 for bfloat16 parameters, as torch.nn
//    does, since a bfloat16 sum can flip the sign of a pre-activation near 0;
//  - the backward ops' `grad_bias`, which is in the compute dtype (the float32
//    sum over rows, unrounded); the autograd formula casts it to the bias's
//    dtype.
// On CUDA, float16 and bfloat16 (float16 exists only there) keep the
// elementwise math, the cell state and the saved activations in float32, but
// the GEMMs read and write the storage dtype with float32 accumulation, as
// cuDNN does: the input projection, each step's recurrent product and h_t, and
// the gate gradients that the recurrence and the weight-gradient GEMMs read
// (so grad_bias is the float32 sum of those rounded gate gradients). The
// persistent small-batch kernels keep the recurrent products and the state
// between steps in float32 (csrc/cuda/persistent.h).
#include <torch/library.h>

TORCH_LIBRARY(lstm_ext, m) {
  // ---------------------------------------------------------------- LSTM
  // x [T,B,I], w_ih [4H,I], w_hh [4H,P], bias [4H] (= b_ih + b_hh) or None,
  // h0 [B,P], c0 [B,H], where P = H without a projection, and with one
  // (w_hr [P,H], proj_size P < H) h_t = (o * tanh(c_t)) w_hr^T.
  // Returns y [T,B,P] (y[t] is aligned with x[t] in both directions),
  // h_n [B,P], c_n [B,H], and, only when save_for_backward is true,
  // gates [T,B,4H] (activations i, f, g, o) and cells [T,B,H] (c_t for every
  // t); otherwise both are empty tensors of shape [0].
  // reverse=true walks t = T-1 .. 0 (the reverse half of a bidirectional
  // layer) without copying x.
  //
  // Packed sequences: with batch_sizes (int64 [T] on the CPU, non-increasing,
  // batch_sizes[0] = B, as in PackedSequence), x is the packed data [N,I] with
  // N = sum(batch_sizes), and y, gates and cells are packed the same way
  // ([N,P], [N,4H], [N,H]). Step t only computes its batch_sizes[t] live rows;
  // h_n and c_n hold each sequence's state at its own last step (its first
  // step when reverse).
  m.def(
      "lstm_forward(Tensor x, Tensor w_ih, Tensor w_hh, Tensor? bias, Tensor h0, Tensor c0, "
      "bool reverse, bool save_for_backward, Tensor? batch_sizes=None, Tensor? w_hr=None) -> "
      "(Tensor y, Tensor h_n, Tensor c_n, Tensor gates, Tensor cells)");

  // Gradients of one lstm_forward call, with the same x, weights, states,
  // batch_sizes and w_hr, and its saved y, gates and cells. An absent (None)
  // output gradient counts as zero. grad_cells is the gradient of `cells`.
  // Returns grad_x (an empty [0] tensor when need_grad_x is false),
  // grad_w_ih [4H,I], grad_w_hh [4H,P], grad_bias [4H] (in the compute
  // dtype), grad_h0 [B,P], grad_c0 [B,H], and grad_w_hr [P,H] (an empty [0]
  // tensor without w_hr).
  m.def(
      "lstm_backward(Tensor? grad_y, Tensor? grad_h_n, Tensor? grad_c_n, Tensor? grad_cells, "
      "Tensor x, Tensor w_ih, Tensor w_hh, Tensor h0, Tensor c0, Tensor y, Tensor gates, "
      "Tensor cells, bool reverse, bool need_grad_x, Tensor? batch_sizes=None, "
      "Tensor? w_hr=None) -> "
      "(Tensor grad_x, Tensor grad_w_ih, Tensor grad_w_hh, Tensor grad_bias, Tensor grad_h0, "
      "Tensor grad_c0, Tensor grad_w_hr)");

  // The same function as lstm_forward (y, h_n, c_n, cells), written as a
  // composite of differentiable ATen ops: a C++ loop over the steps that
  // autograd records. Slow, and used for one thing only: double backward,
  // where the first-order gradients must themselves be differentiable. The
  // fused ops serve every other call.
  m.def(
      "lstm_forward_composite(Tensor x, Tensor w_ih, Tensor w_hh, Tensor? bias, Tensor h0, "
      "Tensor c0, bool reverse, Tensor? batch_sizes=None, Tensor? w_hr=None) -> "
      "(Tensor y, Tensor h_n, Tensor c_n, Tensor cells)");

  // ----------------------------------------------------------------- RNN
  // h_t = act(x_t w_ih^T + bias + h_{t-1} w_hh^T), act = relu if relu else
  // tanh. x [T,B,I] (or packed [N,I] with batch_sizes, as for the LSTM),
  // w_ih [H,I], w_hh [H,H], bias [H] or None, h0 [B,H].
  // Returns y [T,B,H] (or [N,H]) and h_n [B,H]. Backward needs only y.
  m.def(
      "rnn_forward(Tensor x, Tensor w_ih, Tensor w_hh, Tensor? bias, Tensor h0, bool reverse, "
      "bool relu, Tensor? batch_sizes=None) -> (Tensor y, Tensor h_n)");

  // rnn_forward as differentiable ATen ops, for double backward only (see
  // lstm_forward_composite).
  m.def(
      "rnn_forward_composite(Tensor x, Tensor w_ih, Tensor w_hh, Tensor? bias, Tensor h0, "
      "bool reverse, bool relu, Tensor? batch_sizes=None) -> (Tensor y, Tensor h_n)");

  // Gradients of one rnn_forward call given its inputs and its output y.
  // Returns grad_x (empty [0] when need_grad_x is false), grad_w_ih [H,I],
  // grad_w_hh [H,H], grad_bias [H] (in the compute dtype), grad_h0 [B,H].
  m.def(
      "rnn_backward(Tensor? grad_y, Tensor? grad_h_n, Tensor x, Tensor w_ih, Tensor w_hh, "
      "Tensor h0, Tensor y, bool reverse, bool relu, bool need_grad_x, "
      "Tensor? batch_sizes=None) -> "
      "(Tensor grad_x, Tensor grad_w_ih, Tensor grad_w_hh, Tensor grad_bias, Tensor grad_h0)");

  // ----------------------------------------------------------------- GRU
  // torch.nn's GRU, gates r, z, n in weight order:
  //   gi = x_t w_ih^T + b_ih, gh = h_{t-1} w_hh^T + b_hh (each [B,3H]),
  //   r = sigmoid(gi_r + gh_r), z = sigmoid(gi_z + gh_z),
  //   n = tanh(gi_n + r * gh_n), h_t = (1 - z) * n + z * h_{t-1}.
  // The two biases stay separate because r multiplies gh_n, b_hn included.
  // x [T,B,I] (or packed [N,I] with batch_sizes, as for the LSTM), w_ih
  // [3H,I], w_hh [3H,H], b_ih and b_hh [3H] or None, h0 [B,H].
  // Returns y [T,B,H] (or [N,H]), h_n [B,H] and, only when save_for_backward
  // is true, gates [T,B,4H] (or [N,4H], in the compute dtype): per row r, z,
  // n and hn = gh_n, what the backward reads; otherwise an empty [0] tensor.
  m.def(
      "gru_forward(Tensor x, Tensor w_ih, Tensor w_hh, Tensor? b_ih, Tensor? b_hh, Tensor h0, "
      "bool reverse, bool save_for_backward, Tensor? batch_sizes=None) -> "
      "(Tensor y, Tensor h_n, Tensor gates)");

  // gru_forward as differentiable ATen ops, for double backward only (see
  // lstm_forward_composite).
  m.def(
      "gru_forward_composite(Tensor x, Tensor w_ih, Tensor w_hh, Tensor? b_ih, Tensor? b_hh, "
      "Tensor h0, bool reverse, Tensor? batch_sizes=None) -> (Tensor y, Tensor h_n)");

  // Gradients of one gru_forward call given its inputs, its output y and its
  // saved gates. Returns grad_x (empty [0] when need_grad_x is false),
  // grad_w_ih [3H,I], grad_w_hh [3H,H], grad_b_ih and grad_b_hh [3H] (in the
  // compute dtype), grad_h0 [B,H].
  m.def(
      "gru_backward(Tensor? grad_y, Tensor? grad_h_n, Tensor x, Tensor w_ih, Tensor w_hh, "
      "Tensor h0, Tensor y, Tensor gates, bool reverse, bool need_grad_x, "
      "Tensor? batch_sizes=None) -> "
      "(Tensor grad_x, Tensor grad_w_ih, Tensor grad_w_hh, Tensor grad_b_ih, Tensor grad_b_hh, "
      "Tensor grad_h0)");

  // ------------------------------------------------------------- kernels
  // Names of the CPU kernels usable in this build on this CPU, best (the
  // default) first; the last is always "reference". LSTM_EXT_CPU_KERNEL
  // picks one of them (csrc/cpu/kernel_select.h).
  m.def("cpu_kernels() -> str[]");

  // The CUDA path an LSTM (or, cell="gru", a GRU) layer-direction of this
  // batch (rows of the widest step), hidden size and dtype takes on CUDA
  // device `device` (-1: the current one), forward or backward:
  // "persistent (...)", "tensorcore (...)" or "standard (why)".
  // LSTM_EXT_CUDA_PATH=auto|standard|persistent|tensorcore steers it
  // (csrc/cuda_binding/lstm_path.h). Implemented only in CUDA builds.
  m.def(
      "cuda_lstm_path(int batch, int hidden, ScalarType dtype, bool projected=False, "
      "bool backward=False, int device=-1, str cell=\"lstm\") -> str");

  // The layout the tensor-core persistent LSTM kernels (LSTM_EXT_CUDA_PATH=
  // tensorcore, csrc/cuda/tensorcore.h) would use for this batch, hidden size
  // and dtype on a device with `sms` multiprocessors and `smem_optin` bytes of
  // opt-in shared memory per block, forward or backward: pure arithmetic
  // (csrc/cuda/tensorcore_plan.h), no device needed, in every build, so the
  // planner is tested on machines without a GPU. Returns whether it fits,
  // blocks, units per block (U), the padded batch, rows per staged tile, the
  // staged K chunk and their count, the warps splitting K, the bytes of the
  // resident W_hh slice and of all shared memory per block, and, when it does
  // not fit, why.
  m.def(
      "tensorcore_plan(int batch, int hidden, ScalarType dtype, bool backward, int sms, "
      "int smem_optin) -> (bool fits, int blocks, int units, int batch_pad, int tile_rows, "
      "int kchunk, int chunks, int ksplit, int weight_bytes, int smem_bytes, str why_not)");
}
