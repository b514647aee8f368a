// CPU binding: tensors in, raw pointers to the time loops, tensors out.
//
// The GEMMs that cover every time step at once (the input projection in
// forward and the input gradient in backward, input_projection.h; the weight
// gradients, weight_gradients.h) run here; everything sequential happens in
// lstm_sequence.cpp.
//
// bfloat16 runs the float32 kernels (compute_dtype.h): the arguments are
// upcast (exactly) on entry, y, h_n, c_n and the gradients are rounded to
// bfloat16 on return, and gates and cells stay float32. The input projection
// is therefore a float32 GEMM of the upcast x and w_ih: ATen's CPU bfloat16
// GEMM would round the [N,4H] pre-activations to bfloat16 (it has no float32
// output on the CPU), an error as large as the one the float32 state avoids.
//
// On CPUs with AVX512-BF16 the bfloat16 forward instead runs natively
// (lstm_forward_bf16): the input projection and the recurrent product read
// x, h and the weights as bfloat16 and accumulate in float32 (vdpbf16ps),
// the pre-activations, the cell state and the saved gates / cells are
// float32, and each h_t is rounded to bfloat16 once, into y, from where the
// next step reads it. Same outputs, dtypes and shapes as the upcast path; the
// backward is unchanged (it upcasts).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <torch/library.h>

#include "checks.h"
#include "compute_dtype.h"
#include "tensor_args.h"
#include "cpu/fused/workspace.h"
#include "cpu/input_projection.h"
#include "cpu/kernel_select.h"
#include "cpu/lstm_sequence.h"
#include "cpu/previous_state.h"
#include "cpu/scratch.h"
#include "cpu/weight_gradients.h"
#include "step_layout.h"

namespace lstm_ext::cpu {
namespace {

using at::Tensor;

// The [N,4H] buffer the input projection fills and the time loop accumulates
// the recurrent product into: a fresh tensor when it is saved for backward,
// this thread's reused scratch otherwise.
Tensor gates_buffer(const LstmDims& d, const at::TensorOptions& opts, bool saved) {
  const std::vector<int64_t> sizes{d.seq.N, 4 * d.H};
  return saved ? at::empty(sizes, opts) : scratch(ScratchRole::kGates, sizes, opts);
}

// The gates output: the activations [T,B,4H] (packed: [N,4H]) when saved,
// else an empty tensor (the buffer was scratch).
Tensor gates_output(const Tensor& gates, const LstmDims& d, bool saved) {
  return saved ? gates.view(d.seq.shape(4 * d.H)) : at::empty({0}, gates.options());
}

// x W_ih^T + bias for all N rows at once, into gates_buffer.
Tensor input_projection(const CpuKernels& kernels, const Tensor& x, const Tensor& w_ih,
                        const OptTensor& bias, const LstmDims& d, bool saved) {
  Tensor gates = gates_buffer(d, x.options(), saved);
  input_projection_into(kernels, gates, x.view({d.seq.N, d.I}), w_ih, bias);
  return gates;
}

// The native bfloat16 forward on kernels k: arguments as lstm_forward_cpu's,
// all bfloat16; returns what it returns.
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> lstm_forward_bf16(
    const fused::Bf16Kernels& k, const LstmDims& d, const StepLayout& layout, const Tensor& x_in,
    const Tensor& w_ih_in, const Tensor& w_hh_in, const OptTensor& bias, const Tensor& h0_in,
    const Tensor& c0, bool reverse, bool save, const OptTensor& w_hr_in) {
  using fused::PackKind, fused::Slot;
  const Tensor x = x_in.contiguous(), w_ih = w_ih_in.contiguous(), w_hh = w_hh_in.contiguous();
  const Tensor h0 = h0_in.contiguous();
  const OptTensor b32 = to_compute(bias);  // float32
  const auto opts = x.options(), opts32 = opts.dtype(at::kFloat);
  const int64_t N = d.seq.N, H = d.H, P = d.P, G = 4 * H;

  // gates [N,4H] float32 = x W_ih^T + b.
  Tensor gates = gates_buffer(d, opts32, save);
  {
    const fused::PairPanels wp =
        pack_weights(k, Slot::kInput, PackKind::kRows, bf16_ptr(w_ih), G, d.I);
    k.linear({N, G, d.I, bf16_ptr(x), &wp, b32 ? b32->data_ptr<float>() : nullptr,
              gates.data_ptr<float>()},
             loop_threads(N * G * d.I));
  }

  Tensor y = at::empty(d.seq.shape(P), opts);
  Tensor cells = save ? at::empty(d.seq.shape(H), opts32) : at::empty({0}, opts32);
  Tensor c_state = compute_copy(c0);
  Tensor h_n = at::empty({d.seq.B, P}, opts);
  Tensor w_hr, h_raw;
  fused::PairPanels wr;
  if (d.projected) {
    w_hr = w_hr_in->contiguous();
    h_raw = at::empty({d.seq.B, H}, opts);
    wr = pack_weights(k, Slot::kProjection, PackKind::kRows, bf16_ptr(w_hr), P, H);
  }
  const fused::PairPanels w = pack_weights(k, Slot::kRecurrent, PackKind::kGates, bf16_ptr(w_hh), H, P);
  k.lstm_forward({&layout, reverse, save, H, P, &w, d.projected ? &wr : nullptr,
                  gates.data_ptr<float>(), bf16_ptr(y), save ? cells.data_ptr<float>() : nullptr,
                  bf16_ptr(h0), c_state.data_ptr<float>(), d.projected ? bf16_ptr(h_raw) : nullptr},
                 loop_threads(layout.batch() * G * P));
  gather_final_state<at::BFloat16>(layout, reverse, P, y.data_ptr<at::BFloat16>(),
                                   h0.data_ptr<at::BFloat16>(), h_n.data_ptr<at::BFloat16>());

  return {y, h_n, to_storage(c_state, x_in), gates_output(gates, d, save), cells};
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> lstm_forward_cpu(
    const Tensor& x_in, const Tensor& w_ih_in, const Tensor& w_hh_in, const OptTensor& bias,
    const Tensor& h0, const Tensor& c0, bool reverse, bool save_for_backward,
    const OptTensor& batch_sizes, const OptTensor& w_hr_in) {
  const LstmDims d =
      check_lstm_forward_args(x_in, w_ih_in, w_hh_in, bias, h0, c0, batch_sizes, w_hr_in);
  const StepLayout layout = make_step_layout(d.seq, batch_sizes);
  const CpuKernels kernels = select_cpu_kernels();
  if (x_in.scalar_type() == at::kBFloat16 && kernels.bf16)
    return lstm_forward_bf16(*kernels.bf16, d, layout, x_in, w_ih_in, w_hh_in, bias, h0, c0,
                             reverse, save_for_backward, w_hr_in);
  const Tensor x = to_compute(x_in), w_ih = to_compute(w_ih_in), w_hh = to_compute(w_hh_in);
  const OptTensor w_hr = to_compute(w_hr_in);
  const auto opts = x.options();

  Tensor gates = input_projection(kernels, x, w_ih, to_compute(bias), d, save_for_backward);
  Tensor y = at::empty(d.seq.shape(d.P), opts);
  Tensor cells = save_for_backward ? at::empty(d.seq.shape(d.H), opts) : at::empty({0}, opts);
  // c_state starts as c0 and ends as c_n; h_n is gathered from y afterwards.
  const Tensor h0c = to_compute(h0);
  Tensor c_state = compute_copy(c0);
  Tensor h_n = at::empty({d.seq.B, d.P}, opts);
  Tensor h_raw = d.projected ? at::empty({d.seq.B, d.H}, opts) : Tensor();

  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "lstm_forward_cpu", [&] {
    lstm_forward_loop<scalar_t>(
        kernels.f32, layout, reverse, save_for_backward, d.H, d.P, w_hh.data_ptr<scalar_t>(),
        ptr_or_null<scalar_t>(w_hr), gates.data_ptr<scalar_t>(), y.data_ptr<scalar_t>(),
        save_for_backward ? cells.data_ptr<scalar_t>() : nullptr, h0c.data_ptr<scalar_t>(),
        c_state.data_ptr<scalar_t>(), d.projected ? h_raw.data_ptr<scalar_t>() : nullptr);
    gather_final_state<scalar_t>(layout, reverse, d.P, y.data_ptr<scalar_t>(),
                                 h0c.data_ptr<scalar_t>(), h_n.data_ptr<scalar_t>());
  });

  return {to_storage(y, x_in), to_storage(h_n, x_in), to_storage(c_state, x_in),
          gates_output(gates, d, save_for_backward), cells};
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> lstm_backward_cpu(
    const OptTensor& grad_y_in, const OptTensor& grad_h_n, const OptTensor& grad_c_n,
    const OptTensor& grad_cells_in, const Tensor& x_in, const Tensor& w_ih_in,
    const Tensor& w_hh_in, const Tensor& h0_in, const Tensor& c0_in, const Tensor& y_in,
    const Tensor& gates_in, const Tensor& cells_in, bool reverse, bool need_grad_x,
    const OptTensor& batch_sizes, const OptTensor& w_hr_in) {
  const LstmDims d =
      check_lstm_backward_args(grad_y_in, grad_h_n, grad_c_n, grad_cells_in, x_in, w_ih_in,
                               w_hh_in, h0_in, c0_in, y_in, gates_in, cells_in, batch_sizes,
                               w_hr_in);
  const StepLayout layout = make_step_layout(d.seq, batch_sizes);
  const CpuKernels kernels = select_cpu_kernels();
  // x and w_ih are read in their storage dtype (weight_gradients, input_gradient).
  const Tensor w_hh = to_compute(w_hh_in);
  const Tensor h0 = to_compute(h0_in), c0 = to_compute(c0_in), y = to_compute(y_in);
  const Tensor gates = gates_in.contiguous(), cells = cells_in.contiguous();
  const OptTensor w_hr = to_compute(w_hr_in);
  const OptTensor grad_y = to_compute(grad_y_in);
  const OptTensor grad_cells = to_compute(grad_cells_in);
  const auto opts = h0.options();
  const int64_t N = d.seq.N, G = 4 * d.H;

  Tensor grad_h = state_grad_buffer(grad_h_n, h0);
  Tensor grad_c = state_grad_buffer(grad_c_n, c0);
  Tensor grad_gates = scratch(ScratchRole::kGradGates, {N, G}, opts);
  Tensor grad_h_all, h_raw_all, grad_h_raw;
  if (d.projected) {
    grad_h_all = at::empty({N, d.P}, opts);
    h_raw_all = at::empty({N, d.H}, opts);
    grad_h_raw = at::empty({d.seq.B, d.H}, opts);
  }

  AT_DISPATCH_FLOATING_TYPES(h0.scalar_type(), "lstm_backward_cpu", [&] {
    auto opt_ptr = [](const Tensor& t) { return t.defined() ? t.data_ptr<scalar_t>() : nullptr; };
    lstm_backward_loop<scalar_t>(
        kernels.f32, layout, reverse, d.H, d.P, w_hh.data_ptr<scalar_t>(),
        ptr_or_null<scalar_t>(w_hr), gates.data_ptr<scalar_t>(), cells.data_ptr<scalar_t>(),
        c0.data_ptr<scalar_t>(),
        ptr_or_null<scalar_t>(grad_y), ptr_or_null<scalar_t>(grad_cells),
        grad_h.data_ptr<scalar_t>(), grad_c.data_ptr<scalar_t>(), grad_gates.data_ptr<scalar_t>(),
        opt_ptr(grad_h_all), opt_ptr(h_raw_all), opt_ptr(grad_h_raw));
  });

  // Every weight gradient is one GEMM over all N rows (W_ih and W_hh together).
  auto [grad_w_ih, grad_w_hh] =
      weight_gradients(grad_gates, x_in.reshape({N, d.I}), layout, reverse, y, h0);
  Tensor grad_bias = grad_gates.sum(0);
  Tensor grad_w_hr = d.projected ? at::mm(grad_h_all.t(), h_raw_all) : at::empty({0}, opts);
  Tensor grad_x = need_grad_x ? input_gradient(kernels, grad_gates, w_ih_in).view(x_in.sizes())
                               : at::empty({0}, opts);
  const auto out = [&](const Tensor& g) { return to_storage(g, x_in); };
  // grad_bias stays in the compute dtype (ops.cpp); autograd casts it to the bias's dtype.
  return {out(grad_x), out(grad_w_ih), out(grad_w_hh), grad_bias,
          out(grad_h),  out(grad_c),    out(grad_w_hr)};
}

}  // namespace

TORCH_LIBRARY_IMPL(lstm_ext, CPU, m) {
  m.impl("lstm_forward", &lstm_forward_cpu);
  m.impl("lstm_backward", &lstm_backward_cpu);
}

}  // namespace lstm_ext::cpu
