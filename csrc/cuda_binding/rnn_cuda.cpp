// CUDA binding of the vanilla RNN ops, structured like lstm_cuda.cpp: one
// GEMM for the input projection of every step, per step one GEMM and one
// fused elementwise kernel (csrc/cuda/kernels.h; the loops: step_loop.h), and
// the weight and input gradients as one GEMM each after the backward loop. h
// lives in a full-batch state buffer that ends as h_n (and its gradient as
// grad_h0).
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "compute_dtype.h"
#include "cuda/kernels.h"
#include "cuda_binding/cuda_tensors.h"
#include "cuda_binding/gemm.h"
#include "cuda_binding/step_loop.h"
#include "rnn_checks.h"
#include "step_layout.h"
#include "tensor_args.h"

namespace lstm_ext::cuda_binding {
namespace {

std::tuple<Tensor, Tensor> rnn_forward_cuda(const Tensor& x_in, const Tensor& w_ih_in,
                                            const Tensor& w_hh_in, const OptTensor& bias,
                                            const Tensor& h0, bool reverse, bool relu,
                                            const OptTensor& batch_sizes) {
  const RnnDims d = check_rnn_forward_args(x_in, w_ih_in, w_hh_in, bias, h0, batch_sizes);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const StepLayout L = make_step_layout(d.seq, batch_sizes);
  const int64_t N = d.seq.N, B = d.seq.B, H = d.H;
  const Tensor x = x_in.contiguous(), w_ih = w_ih_in.contiguous(), w_hh = w_hh_in.contiguous();
  const auto opts = x.options();
  const auto compute = compute_dtype(x.scalar_type());
  const GemmPrecision prec = rnn_gemm_precision(x.scalar_type());

  const Tensor proj = mm(x.view({N, d.I}), w_ih.t(), prec);
  const Tensor bias_c = present(bias) ? bias->to(compute).contiguous() : Tensor();
  Tensor y = at::empty(d.seq.shape(H), opts);
  const Tensor y2d = y.view({N, H});
  Tensor h_state = state_buffer(h0, {B, H}, opts);
  Tensor rec = at::empty({B, H}, opts);
  const cudaStream_t stream = current_stream();

  LSTM_EXT_DISPATCH_CUDA(x.scalar_type(), "rnn_forward_cuda", [&] {
    using C = cuda::Compute<T>;
    auto step_kernel = [&](const Step& st) {
      cuda::RnnStepForward<T> a{};
      a.rows = st.rows;
      a.H = H;
      a.relu = relu;
      a.proj = ptr<T>(proj) + st.off * H;
      a.rec = ptr<T>(rec);
      a.bias = ptr_or_null<C>(bias_c);
      a.h_out = ptr<T>(y2d) + st.off * H;
      a.h_state = ptr<T>(h_state);
      cuda::rnn_step_forward<T>(a, stream);
    };
    forward_steps(L, reverse, rec, h_state, w_hh, prec, step_kernel);
  });
  return {y, h_state};
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> rnn_backward_cuda(
    const OptTensor& grad_y_in, const OptTensor& grad_h_n, const Tensor& x_in,
    const Tensor& w_ih_in, const Tensor& w_hh_in, const Tensor& h0, const Tensor& y_in,
    bool reverse, bool relu, bool need_grad_x, const OptTensor& batch_sizes) {
  const RnnDims d = check_rnn_backward_args(grad_y_in, grad_h_n, x_in, w_ih_in, w_hh_in, h0, y_in,
                                            batch_sizes);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const StepLayout L = make_step_layout(d.seq, batch_sizes);
  const int64_t N = d.seq.N, B = d.seq.B, H = d.H;
  const Tensor x = x_in.contiguous(), w_ih = w_ih_in.contiguous(), w_hh = w_hh_in.contiguous();
  const Tensor y2d = y_in.contiguous().view({N, H});
  const Tensor grad_y = present(grad_y_in) ? grad_y_in->contiguous().view({N, H}) : Tensor();
  const auto opts = x.options();
  const GemmPrecision prec = rnn_gemm_precision(x.scalar_type());

  Tensor d_pre = at::empty({N, H}, opts);
  Tensor grad_h = state_buffer(grad_h_n, {B, H}, opts);  // ends as grad_h0
  const cudaStream_t stream = current_stream();

  LSTM_EXT_DISPATCH_CUDA(x.scalar_type(), "rnn_backward_cuda", [&] {
    auto step_kernel = [&](const Step& st) {
      cuda::RnnStepBackward<T> a{};
      a.rows = st.rows;
      a.H = H;
      a.relu = relu;
      a.h = ptr<T>(y2d) + st.off * H;
      a.grad_h = ptr<T>(grad_h);
      a.grad_y = grad_y.defined() ? ptr<T>(grad_y) + st.off * H : nullptr;
      a.dpre = ptr<T>(d_pre) + st.off * H;
      cuda::rnn_step_backward<T>(a, stream);
    };
    backward_steps(L, reverse, grad_h, d_pre, w_hh, GradH::kOverwrite, prec, step_kernel);
  });

  const Tensor h_prev = previous_states(y2d, h0.contiguous(), L, reverse, d.seq.packed);
  Tensor grad_w_ih = mm(d_pre.t(), x.view({N, d.I}), prec);
  Tensor grad_w_hh = mm(d_pre.t(), h_prev, prec);
  Tensor grad_bias = at::sum(d_pre, {0}, /*keepdim=*/false, compute_dtype(x.scalar_type()));
  Tensor grad_x = need_grad_x ? mm(d_pre, w_ih, prec).view(x.sizes()) : at::empty({0}, opts);
  return {grad_x, grad_w_ih, grad_w_hh, grad_bias, grad_h};
}

}  // namespace

TORCH_LIBRARY_IMPL(lstm_ext, CUDA, m) {
  m.impl("rnn_forward", &rnn_forward_cuda);
  m.impl("rnn_backward", &rnn_backward_cuda);
}

}  // namespace lstm_ext::cuda_binding
