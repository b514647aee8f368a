// CPU binding of the GRU ops: tensors in, raw pointers to the time loops
// (gru_sequence.cpp), tensors out.
//
// The GEMMs that cover every row at once (the input projection in forward;
// the weight and input gradients in backward) run here; everything
// sequential happens in gru_sequence.cpp. bfloat16 runs the float32 kernels
// as the LSTM's binding does (lstm_cpu.cpp, compute_dtype.h): upcast on
// entry, gates kept in float32, y, h_n and the gradients rounded to bfloat16
// on return.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <torch/library.h>

#include "compute_dtype.h"
#include "cpu/gru_sequence.h"
#include "cpu/input_projection.h"
#include "cpu/kernel_select.h"
#include "cpu/previous_state.h"
#include "cpu/scratch.h"
#include "cpu/weight_gradients.h"
#include "rnn_checks.h"
#include "step_layout.h"
#include "tensor_args.h"

namespace lstm_ext::cpu {
namespace {

using at::Tensor;

// The biases as the loops take them, in the compute dtype: b_ih + [b_hr,
// b_hz, 0] joins the input projection, and b_hn stays apart, since r
// multiplies it. Either may be absent (then None).
std::pair<OptTensor, OptTensor> split_biases(const OptTensor& b_ih_in, const OptTensor& b_hh_in,
                                             int64_t H, at::ScalarType compute) {
  OptTensor projected, b_hn;
  if (present(b_ih_in))
    projected = b_ih_in->to(compute, /*non_blocking=*/false, /*copy=*/true).contiguous();
  if (present(b_hh_in)) {
    const Tensor b_hh = b_hh_in->to(compute);
    if (!projected) projected = at::zeros({3 * H}, b_hh.options());
    projected->narrow(0, 0, 2 * H).add_(b_hh.narrow(0, 0, 2 * H));
    b_hn = b_hh.narrow(0, 2 * H, H).contiguous();
  }
  return {projected, b_hn};
}

// The native bfloat16 forward on AVX512-BF16 (gru_forward_bf16): arguments
// as gru_forward_cpu's, x, the weights and h0 bfloat16; same results.
std::tuple<Tensor, Tensor, Tensor> gru_forward_native_bf16(
    const fused::Bf16Kernels& k, const GruDims& d, const StepLayout& L, const Tensor& x_in,
    const Tensor& w_ih_in, const Tensor& w_hh_in, const OptTensor& b_ih, const OptTensor& b_hh,
    const Tensor& h0_in, bool reverse, bool save) {
  const SequenceDims& s = d.seq;
  const int64_t N = s.N, H = d.H;
  const Tensor x = x_in.contiguous(), w_ih = w_ih_in.contiguous(), w_hh = w_hh_in.contiguous();
  const Tensor h0 = h0_in.contiguous();
  const auto opts = x.options(), opts32 = opts.dtype(at::kFloat);
  const auto [gi_bias, b_hn] = split_biases(b_ih, b_hh, H, at::kFloat);
  Tensor gi = scratch(ScratchRole::kGates, {N, 3 * H}, opts32);
  Tensor y = at::empty(s.shape(H), opts);
  Tensor gates = save ? at::empty(s.shape(4 * H), opts32) : at::empty({0}, opts32);
  Tensor h_n = at::empty({s.B, H}, opts);
  gru_forward_bf16(k, L, reverse, d.I, H, bf16_ptr(x), bf16_ptr(w_ih), bf16_ptr(w_hh),
                   ptr_or_null<float>(gi_bias), ptr_or_null<float>(b_hn), bf16_ptr(h0),
                   gi.data_ptr<float>(), bf16_ptr(y), save ? gates.data_ptr<float>() : nullptr);
  gather_final_state<at::BFloat16>(L, reverse, H, y.data_ptr<at::BFloat16>(),
                                   h0.data_ptr<at::BFloat16>(), h_n.data_ptr<at::BFloat16>());
  return {y, h_n, gates};
}

std::tuple<Tensor, Tensor, Tensor> gru_forward_cpu(const Tensor& x_in, const Tensor& w_ih_in,
                                                   const Tensor& w_hh_in, const OptTensor& b_ih,
                                                   const OptTensor& b_hh, const Tensor& h0_in,
                                                   bool reverse, bool save,
                                                   const OptTensor& batch_sizes) {
  const GruDims d = check_gru_forward_args(x_in, w_ih_in, w_hh_in, b_ih, b_hh, h0_in, batch_sizes);
  const SequenceDims& s = d.seq;
  const int64_t N = s.N, H = d.H;
  const StepLayout L = make_step_layout(s, batch_sizes);
  const CpuKernels kernels = select_cpu_kernels();
  if (x_in.scalar_type() == at::kBFloat16 && kernels.bf16)
    return gru_forward_native_bf16(*kernels.bf16, d, L, x_in, w_ih_in, w_hh_in, b_ih, b_hh, h0_in,
                                   reverse, save);
  const Tensor x = to_compute(x_in), w_ih = to_compute(w_ih_in), w_hh = to_compute(w_hh_in);
  const Tensor h0 = to_compute(h0_in);
  const auto opts = x.options();
  const auto [gi_bias, b_hn] = split_biases(b_ih, b_hh, H, x.scalar_type());

  // gi [N,3H] = x W_ih^T + b_ih + [b_hr, b_hz, 0] for all rows (one GEMM);
  // it never leaves the call, so it lives in this thread's scratch.
  Tensor gi = scratch(ScratchRole::kGates, {N, 3 * H}, opts);
  input_projection_into(kernels, gi, x.view({N, d.I}), w_ih, gi_bias);
  Tensor y = at::empty(s.shape(H), opts);
  Tensor gates = save ? at::empty(s.shape(4 * H), opts) : at::empty({0}, opts);
  Tensor gh = at::empty({s.B, 3 * H}, opts);
  Tensor h_n = at::empty({s.B, H}, opts);

  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "gru_forward_cpu", [&] {
    gru_forward_loop<scalar_t>(kernels.f32, L, reverse, H, w_hh.data_ptr<scalar_t>(),
                               ptr_or_null<scalar_t>(b_hn), gi.data_ptr<scalar_t>(),
                               h0.data_ptr<scalar_t>(), y.data_ptr<scalar_t>(),
                               save ? gates.data_ptr<scalar_t>() : nullptr,
                               gh.data_ptr<scalar_t>());
    gather_final_state<scalar_t>(L, reverse, H, y.data_ptr<scalar_t>(), h0.data_ptr<scalar_t>(),
                                 h_n.data_ptr<scalar_t>());
  });
  return {to_storage(y, x_in), to_storage(h_n, x_in), gates};
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> gru_backward_cpu(
    const OptTensor& grad_y_in, const OptTensor& grad_h_n, const Tensor& x_in,
    const Tensor& w_ih_in, const Tensor& w_hh_in, const Tensor& h0_in, const Tensor& y_in,
    const Tensor& gates_in, bool reverse, bool need_grad_x, const OptTensor& batch_sizes) {
  const GruDims d = check_gru_backward_args(grad_y_in, grad_h_n, x_in, w_ih_in, w_hh_in, h0_in,
                                            y_in, gates_in, batch_sizes);
  const SequenceDims& s = d.seq;
  const int64_t N = s.N, H = d.H;
  const StepLayout L = make_step_layout(s, batch_sizes);
  const CpuKernels kernels = select_cpu_kernels();
  // x and w_ih are read in their storage dtype (weight_gradients, input_gradient).
  const Tensor w_hh = to_compute(w_hh_in), h0 = to_compute(h0_in), y = to_compute(y_in);
  const Tensor gates = gates_in.contiguous();
  const OptTensor grad_y = to_compute(grad_y_in);
  const auto opts = h0.options();

  Tensor grad_h = state_grad_buffer(grad_h_n, h0);  // ends as grad_h0
  Tensor grad_gates = scratch(ScratchRole::kGradGates, {N, 4 * H}, opts);
  Tensor grad_direct = at::empty({s.B, H}, opts);

  AT_DISPATCH_FLOATING_TYPES(h0.scalar_type(), "gru_backward_cpu", [&] {
    gru_backward_loop<scalar_t>(kernels.f32, L, reverse, H, w_hh.data_ptr<scalar_t>(),
                                gates.data_ptr<scalar_t>(), y.data_ptr<scalar_t>(),
                                h0.data_ptr<scalar_t>(), ptr_or_null<scalar_t>(grad_y),
                                grad_h.data_ptr<scalar_t>(), grad_gates.data_ptr<scalar_t>(),
                                grad_direct.data_ptr<scalar_t>());
  });

  // grad_gates rows are [d r, d z, d hn, d n]: one GEMM against [x | h_{t-1}]
  // gives both weight gradients. Its blocks d hn^T x and d n^T h_{t-1} are
  // not needed (a third more multiply-adds than the minimum), which one call
  // to the wider GEMM still beats two calls (weight_gradients.h).
  auto [wide_ih, wide_hh] = weight_gradients(grad_gates, x_in.reshape({N, d.I}), L, reverse, y, h0);
  const auto gi_rows = [&](const Tensor& t) {  // rows / entries of d r, d z, d n
    return at::cat({t.narrow(0, 0, 2 * H), t.narrow(0, 3 * H, H)}, 0);
  };
  Tensor grad_w_ih = gi_rows(wide_ih);
  Tensor grad_w_hh = wide_hh.narrow(0, 0, 3 * H).contiguous();
  const Tensor bias_sums = grad_gates.sum(0);
  Tensor grad_b_ih = gi_rows(bias_sums);
  Tensor grad_b_hh = bias_sums.narrow(0, 0, 3 * H).contiguous();
  Tensor grad_x = at::empty({0}, opts);
  if (need_grad_x) {
    const Tensor grad_gi = at::cat({grad_gates.narrow(1, 0, 2 * H), grad_gates.narrow(1, 3 * H, H)}, 1);
    grad_x = input_gradient(kernels, grad_gi, w_ih_in).view(x_in.sizes());
  }
  const auto out = [&](const Tensor& g) { return to_storage(g, x_in); };
  // The bias gradients stay in the compute dtype (ops.cpp).
  return {out(grad_x), out(grad_w_ih), out(grad_w_hh), grad_b_ih, grad_b_hh, out(grad_h)};
}

}  // namespace

TORCH_LIBRARY_IMPL(lstm_ext, CPU, m) {
  m.impl("gru_forward", &gru_forward_cpu);
  m.impl("gru_backward", &gru_backward_cpu);
}

}  // namespace lstm_ext::cpu
