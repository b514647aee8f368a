// CPU binding of the vanilla RNN ops: tensors in, raw pointers to the time
// loops (rnn_sequence.cpp), tensors out.
//
// The GEMMs that cover every row at once (the input projection in forward;
// the weight and input gradients in backward) go through ATen here;
// everything sequential happens in rnn_sequence.cpp.
//
// bfloat16 runs the float32 kernels, as the LSTM's binding does (see
// lstm_cpu.cpp and compute_dtype.h): upcast on entry, y, h_n and the
// gradients rounded to bfloat16 on return.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <torch/library.h>

#include "compute_dtype.h"
#include "cpu/input_projection.h"
#include "cpu/rnn_sequence.h"
#include "cpu/scratch.h"
#include "rnn_checks.h"
#include "tensor_args.h"
#include "cpu/previous_state.h"
#include "cpu/weight_gradients.h"
#include "step_layout.h"

namespace lstm_ext::cpu {
namespace {

using at::Tensor;

std::tuple<Tensor, Tensor> rnn_forward_cpu(const Tensor& x_in, const Tensor& w_ih_in,
                                           const Tensor& w_hh_in,
                                           const std::optional<Tensor>& bias, const Tensor& h0,
                                           bool reverse, bool relu,
                                           const std::optional<Tensor>& batch_sizes) {
  const RnnDims d = check_rnn_forward_args(x_in, w_ih_in, w_hh_in, bias, h0, batch_sizes);
  const SequenceDims& s = d.seq;
  const Tensor x = to_compute(x_in), w_ih = to_compute(w_ih_in), w_hh = to_compute(w_hh_in);
  const StepLayout L = make_step_layout(s, batch_sizes);
  const CpuKernels kernels = select_cpu_kernels();

  // y starts as x W_ih^T + bias for all N rows (one GEMM); the time loop adds
  // the recurrent product and applies the activation in place.
  Tensor y = at::empty(s.shape(d.H), x.options());
  Tensor y2d = y.view({s.N, d.H});
  input_projection_into(kernels, y2d, x.view({s.N, d.I}), w_ih, to_compute(bias));
  const Tensor h0c = to_compute(h0);
  Tensor h_n = at::empty({s.B, d.H}, x.options());

  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "rnn_forward_cpu", [&] {
    rnn_forward_loop<scalar_t>(kernels.f32, L, d.H, reverse, relu, w_hh.data_ptr<scalar_t>(),
                               h0c.data_ptr<scalar_t>(), y.data_ptr<scalar_t>());
    gather_final_state<scalar_t>(L, reverse, d.H, y.data_ptr<scalar_t>(), h0c.data_ptr<scalar_t>(),
                                 h_n.data_ptr<scalar_t>());
  });
  return {to_storage(y, x_in), to_storage(h_n, x_in)};
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> rnn_backward_cpu(
    const std::optional<Tensor>& grad_y_in, const std::optional<Tensor>& grad_h_n,
    const Tensor& x_in, const Tensor& w_ih_in, const Tensor& w_hh_in, const Tensor& h0_in,
    const Tensor& y_in, bool reverse, bool relu, bool need_grad_x,
    const std::optional<Tensor>& batch_sizes) {
  const RnnDims d =
      check_rnn_backward_args(grad_y_in, grad_h_n, x_in, w_ih_in, w_hh_in, h0_in, y_in,
                              batch_sizes);
  const SequenceDims& s = d.seq;
  // x and w_ih are read in their storage dtype (weight_gradients, input_gradient).
  const Tensor w_hh = to_compute(w_hh_in);
  const Tensor h0 = to_compute(h0_in), y = to_compute(y_in);
  const auto grad_y = to_compute(grad_y_in);
  const StepLayout L = make_step_layout(s, batch_sizes);
  const CpuKernels kernels = select_cpu_kernels();
  const auto opts = h0.options();

  // Gradient at the carried state: starts as grad_h_n (zero when absent),
  // ends as grad_h0.
  Tensor grad_h = state_grad_buffer(grad_h_n, h0);
  Tensor d_pre = scratch(ScratchRole::kGradGates, {s.N, d.H}, opts);

  AT_DISPATCH_FLOATING_TYPES(h0.scalar_type(), "rnn_backward_cpu", [&] {
    rnn_backward_loop<scalar_t>(kernels.f32, L, d.H, reverse, relu, w_hh.data_ptr<scalar_t>(),
                                y.data_ptr<scalar_t>(),
                                grad_y ? grad_y->data_ptr<scalar_t>() : nullptr,
                                grad_h.data_ptr<scalar_t>(), d_pre.data_ptr<scalar_t>());
  });

  // One GEMM for both weight gradients over all N rows (zeros when N == 0).
  auto [grad_w_ih, grad_w_hh] = weight_gradients(d_pre, x_in.reshape({s.N, d.I}), L, reverse, y, h0);
  Tensor grad_bias = d_pre.sum(0);
  Tensor grad_x = need_grad_x ? input_gradient(kernels, d_pre, w_ih_in).view(s.shape(d.I))
                               : at::empty({0}, opts);
  const auto out = [&](const Tensor& g) { return to_storage(g, x_in); };
  // grad_bias stays in the compute dtype (ops.cpp); autograd casts it to the bias's dtype.
  return {out(grad_x), out(grad_w_ih), out(grad_w_hh), grad_bias, out(grad_h)};
}

}  // namespace

TORCH_LIBRARY_IMPL(lstm_ext, CPU, m) {
  m.impl("rnn_forward", &rnn_forward_cpu);
  m.impl("rnn_backward", &rnn_backward_cpu);
}

}  // namespace lstm_ext::cpu
