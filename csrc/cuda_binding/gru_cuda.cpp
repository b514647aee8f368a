// CUDA binding of the GRU ops (gru_forward, gru_backward), structured like
// rnn_cuda.cpp and lstm_cuda.cpp: one GEMM for the input projection of every
// step, per step one GEMM for the recurrent product and one fused elementwise
// kernel (csrc/cuda/gru_kernels.h), and the weight and input gradients as
// GEMMs after the backward loop.
//
// float32 GEMMs follow torch.backends.cudnn.allow_tf32 (gemm.h), as
// torch.nn.GRU does on cuDNN; float16 / bfloat16 compute in float32 (the
// saved gates and the step arithmetic; the GEMMs read and write the storage
// dtype with float32 accumulation).
//
// h lives in a full-batch state buffer [B,H]: step t reads and writes its
// first rows(t) rows, and rows a packed step does not reach keep their state,
// so the buffer ends as h_n (each sequence's state at its own last step, in
// both directions). The backward's gradient buffer ends as grad_h0 likewise.
//
// Biases: the projection GEMMs carry none. b_ih and b_hh go to the step kernel
// in the compute dtype, because r multiplies hn = gh_n + b_hn (b_hn cannot be
// folded into gi), and adding all of them in float32 there costs nothing.
//
// Gate gradients grad_gates [N,4H], per row [dr, dz, d(hn), dn] (the
// contract shared with the CPU backend): columns [0,3H) are the gradient of
// gh (the per-step recurrent GEMM and grad W_hh / grad b_hh read them at row
// stride 4H, no copy); columns [0,2H) and [3H,4H) are the gradient of gi
// (grad W_ih, grad b_ih and grad x take them as two column blocks).
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "compute_dtype.h"
#include "cuda/gru_kernels.h"
#include "cuda_binding/cuda_tensors.h"
#include "cuda_binding/gemm.h"
#include "rnn_checks.h"
#include "step_layout.h"
#include "tensor_args.h"

namespace lstm_ext::cuda_binding {
namespace {

using Grads6 = std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor>;

std::tuple<Tensor, Tensor, Tensor> gru_forward_cuda(const Tensor& x_in, const Tensor& w_ih_in,
                                                    const Tensor& w_hh_in, const OptTensor& b_ih,
                                                    const OptTensor& b_hh, const Tensor& h0,
                                                    bool reverse, bool save,
                                                    const OptTensor& batch_sizes) {
  const GruDims d = check_gru_forward_args(x_in, w_ih_in, w_hh_in, b_ih, b_hh, h0, batch_sizes);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const StepLayout L = make_step_layout(d.seq, batch_sizes);
  const int64_t N = d.seq.N, B = d.seq.B, H = d.H, G3 = 3 * H, G4 = 4 * H;
  const Tensor x = x_in.contiguous(), w_ih = w_ih_in.contiguous(), w_hh = w_hh_in.contiguous();
  const auto opts = x.options();
  const auto compute = compute_dtype(x.scalar_type());
  const auto copts = opts.dtype(compute);
  const GemmPrecision prec = rnn_gemm_precision(x.scalar_type());

  // Everything the loop touches is allocated here, once per call.
  const Tensor gi = mm(x.view({N, d.I}), w_ih.t(), prec);  // [N,3H]
  const Tensor b_ih_c = present(b_ih) ? b_ih->to(compute).contiguous() : Tensor();
  const Tensor b_hh_c = present(b_hh) ? b_hh->to(compute).contiguous() : Tensor();
  Tensor y = at::empty(d.seq.shape(H), opts);
  const Tensor y2d = y.view({N, H});
  Tensor gates = save ? at::empty({N, G4}, copts) : at::empty({0}, copts);
  Tensor h_state = state_buffer(h0, {B, H}, opts);  // ends as h_n
  Tensor gh = at::empty({B, G3}, opts);
  const cudaStream_t stream = current_stream();

  LSTM_EXT_DISPATCH_CUDA(x.scalar_type(), "gru_forward_cuda", [&] {
    using C = cuda::Compute<T>;
    for (int64_t s = 0; s < L.steps(); ++s) {
      const int64_t t = L.time_at(s, reverse), rows = L.rows(t), off = L.offset(t);
      Tensor gh_rows = row_block(gh, 0, rows);
      mm_out(gh_rows, row_block(h_state, 0, rows), w_hh.t(), prec);
      cuda::GruStepForward<T> a{};
      a.rows = rows;
      a.H = H;
      a.gi = ptr<T>(gi) + off * G3;
      a.gh = ptr<T>(gh);
      a.b_ih = ptr_or_null<C>(b_ih_c);
      a.b_hh = ptr_or_null<C>(b_hh_c);
      // In place (gru_kernels.h allows exactly this alias): rows [0, rows) of
      // the state buffer are h_{t-1} of this step's rows, including packed
      // reverse rows that start here and still hold h0.
      a.h_prev = ptr<T>(h_state);
      a.h_out = ptr<T>(y2d) + off * H;
      a.h_state = ptr<T>(h_state);
      a.gates = save ? ptr<C>(gates) + off * G4 : nullptr;
      cuda::gru_step_forward<T>(a, stream);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
  });
  return {y, h_state, save ? gates.view(d.seq.shape(G4)) : gates};
}

Grads6 gru_backward_cuda(const OptTensor& grad_y_in, const OptTensor& grad_h_n,
                         const Tensor& x_in, const Tensor& w_ih_in, const Tensor& w_hh_in,
                         const Tensor& h0_in, const Tensor& y_in, const Tensor& gates_in,
                         bool reverse, bool need_grad_x, const OptTensor& batch_sizes) {
  const GruDims d = check_gru_backward_args(grad_y_in, grad_h_n, x_in, w_ih_in, w_hh_in, h0_in,
                                            y_in, gates_in, batch_sizes);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const StepLayout L = make_step_layout(d.seq, batch_sizes);
  const int64_t N = d.seq.N, B = d.seq.B, H = d.H, G3 = 3 * H, G4 = 4 * H;
  const Tensor x = x_in.contiguous(), w_ih = w_ih_in.contiguous(), w_hh = w_hh_in.contiguous();
  const Tensor h0 = h0_in.contiguous();
  const Tensor y2d = y_in.contiguous().view({N, H});
  const Tensor gates = gates_in.contiguous().view({N, G4});
  const Tensor grad_y = present(grad_y_in) ? grad_y_in->contiguous().view({N, H}) : Tensor();
  const auto opts = x.options();
  const auto compute = compute_dtype(x.scalar_type());
  const GemmPrecision prec = rnn_gemm_precision(x.scalar_type());

  Tensor grad_gates = at::empty({N, G4}, opts);
  const Tensor d_gh = grad_gates.narrow(1, 0, G3);  // [dr, dz, d(hn)]: the recurrence's operand
  Tensor grad_h = state_buffer(grad_h_n, {B, H}, opts);  // ends as grad_h0
  const cudaStream_t stream = current_stream();

  LSTM_EXT_DISPATCH_CUDA(x.scalar_type(), "gru_backward_cuda", [&] {
    using C = cuda::Compute<T>;
    for (int64_t s = L.steps() - 1; s >= 0; --s) {
      const int64_t t = L.time_at(s, reverse), rows = L.rows(t), off = L.offset(t);
      const int64_t prev = L.previous(t, reverse);
      cuda::GruStepBackward<T> a{};
      a.rows = rows;
      a.H = H;
      a.rows_continuing = L.rows_continuing(t, reverse);
      a.gates = ptr<C>(gates) + off * G4;
      // h_{t-1}: the forward's previously visited step's output, else h0.
      a.h_prev = prev >= 0 ? ptr<T>(y2d) + L.offset(prev) * H : nullptr;
      a.h0 = ptr<T>(h0);
      a.grad_y = grad_y.defined() ? ptr<T>(grad_y) + off * H : nullptr;
      a.grad_h = ptr<T>(grad_h);
      a.grad_gates = ptr<T>(grad_gates) + off * G4;
      cuda::gru_step_backward<T>(a, stream);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      // grad_h rows now hold dh z; add [dr, dz, d(hn)] W_hh (beta = 1).
      Tensor grad_h_rows = row_block(grad_h, 0, rows);
      mm_add_out(grad_h_rows, step_rows(d_gh, L, t), w_hh, prec);
    }
  });

  // The weight gradients: over all N rows at once, each a GEMM on column
  // blocks of grad_gates (strided views, no copies).
  const Tensor x2d = x.view({N, d.I});
  const Tensor d_gi_rz = grad_gates.narrow(1, 0, 2 * H);  // [dr, dz]
  const Tensor d_gi_n = grad_gates.narrow(1, G3, H);      // dn
  const Tensor h_prev = previous_states(y2d, h0, L, reverse, d.seq.packed);
  Tensor grad_w_hh = mm(d_gh.t(), h_prev, prec);
  Tensor grad_w_ih = at::empty({G3, d.I}, opts);
  Tensor grad_w_ih_rz = row_block(grad_w_ih, 0, 2 * H), grad_w_ih_n = row_block(grad_w_ih, 2 * H, H);
  mm_out(grad_w_ih_rz, d_gi_rz.t(), x2d, prec);
  mm_out(grad_w_ih_n, d_gi_n.t(), x2d, prec);
  // Bias gradients: float sums in the compute dtype. Fresh tensors, not views
  // of one buffer, so the op's outputs never alias each other.
  const Tensor sums = at::sum(grad_gates, {0}, /*keepdim=*/false, compute);  // [4H]
  Tensor grad_b_hh = sums.narrow(0, 0, G3).clone();
  Tensor grad_b_ih = at::cat({sums.narrow(0, 0, 2 * H), sums.narrow(0, G3, H)});
  Tensor grad_x = at::empty({0}, opts);
  if (need_grad_x) {
    grad_x = at::empty({N, d.I}, opts);
    mm_out(grad_x, d_gi_rz, w_ih.narrow(0, 0, 2 * H), prec);
    mm_add_out(grad_x, d_gi_n, w_ih.narrow(0, 2 * H, H), prec);
    grad_x = grad_x.view(x.sizes());
  }
  return {grad_x, grad_w_ih, grad_w_hh, grad_b_ih, grad_b_hh, grad_h};
}

}  // namespace

TORCH_LIBRARY_IMPL(lstm_ext, CUDA, m) {
  m.impl("gru_forward", &gru_forward_cuda);
  m.impl("gru_backward", &gru_backward_cuda);
}

}  // namespace lstm_ext::cuda_binding
