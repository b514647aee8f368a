// CPU binding: tensors in, raw pointers to the time loops, tensors out.
//
// The two GEMMs that cover every time step at once (the input projection in
// forward, the weight and input gradients in backward) go through ATen here;
// everything sequential happens in lstm_sequence.cpp.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <torch/library.h>

#include "checks.h"
#include "cpu/lstm_sequence.h"

namespace lstm_ext::cpu {
namespace {

using at::Tensor;

// Time index of the last step the loop visits: where h_n and c_n come from.
int64_t last_time_index(int64_t T, bool reverse) { return reverse ? 0 : T - 1; }

// x W_ih^T + bias for all T*B rows at once, into a fresh [T,B,4H] buffer that
// the time loop then accumulates the recurrent product into.
Tensor input_projection(const Tensor& x, const Tensor& w_ih, const std::optional<Tensor>& bias,
                        const LstmDims& d) {
  Tensor gates = at::empty({d.T, d.B, 4 * d.H}, x.options());
  Tensor gates2d = gates.view({d.T * d.B, 4 * d.H});
  const Tensor x2d = x.view({d.T * d.B, d.I});
  if (bias.has_value() && bias->defined()) {
    at::addmm_out(gates2d, *bias, x2d, w_ih.t());
  } else {
    at::mm_out(gates2d, x2d, w_ih.t());
  }
  return gates;
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> lstm_forward_cpu(
    const Tensor& x_in, const Tensor& w_ih_in, const Tensor& w_hh_in,
    const std::optional<Tensor>& bias, const Tensor& h0_in, const Tensor& c0_in, bool reverse,
    bool save_for_backward) {
  const LstmDims d = check_forward_args(x_in, w_ih_in, w_hh_in, bias, h0_in, c0_in);
  const Tensor x = x_in.contiguous(), w_ih = w_ih_in.contiguous(), w_hh = w_hh_in.contiguous();
  const Tensor h0 = h0_in.contiguous(), c0 = c0_in.contiguous();
  const auto opts = x.options();

  Tensor gates = input_projection(x, w_ih, bias, d);
  Tensor y = at::empty({d.T, d.B, d.H}, opts);
  Tensor cells = save_for_backward ? at::empty({d.T, d.B, d.H}, opts) : at::empty({0}, opts);
  Tensor c_state = save_for_backward ? Tensor() : at::empty({d.B, d.H}, opts);

  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "lstm_forward_cpu", [&] {
    lstm_forward_loop<scalar_t>(
        d.T, d.B, d.H, reverse, save_for_backward, w_hh.data_ptr<scalar_t>(),
        gates.data_ptr<scalar_t>(), h0.data_ptr<scalar_t>(), c0.data_ptr<scalar_t>(),
        y.data_ptr<scalar_t>(), save_for_backward ? cells.data_ptr<scalar_t>() : nullptr,
        save_for_backward ? nullptr : c_state.data_ptr<scalar_t>());
  });

  Tensor h_n, c_n;
  if (d.T == 0) {
    h_n = h0.clone();
    c_n = c0.clone();
  } else {
    const int64_t last = last_time_index(d.T, reverse);
    h_n = y[last].clone();
    c_n = save_for_backward ? cells[last].clone() : c_state;
  }
  if (!save_for_backward) gates = at::empty({0}, opts);
  return {y, h_n, c_n, gates, cells};
}

// A fresh, writable [B,H] copy of an optional gradient (zeros when absent):
// the backward loop accumulates into it in place.
Tensor state_grad_buffer(const std::optional<Tensor>& g, const Tensor& like) {
  Tensor buf = at::empty_like(like, at::MemoryFormat::Contiguous);
  if (g.has_value() && g->defined()) {
    buf.copy_(*g);
  } else {
    buf.zero_();
  }
  return buf;
}

std::optional<Tensor> contiguous_or_none(const std::optional<Tensor>& t) {
  if (!t.has_value() || !t->defined()) return std::nullopt;
  return t->contiguous();
}

// grad W_hh = sum_t grad_gates[t]^T h_{t-1}. h_{t-1} is y at the previous
// visited time index, or h0 for the first visited step, so this is one GEMM
// over the T-1 shifted steps plus one over the first, with no copy of y.
Tensor recurrent_weight_grad(const Tensor& grad_gates, const Tensor& y, const Tensor& h0,
                             const LstmDims& d, bool reverse) {
  const int64_t G = 4 * d.H;
  Tensor grad_w_hh = at::mm(grad_gates[reverse ? d.T - 1 : 0].t(), h0);
  if (d.T > 1) {
    const Tensor dg = reverse ? grad_gates.slice(0, 0, d.T - 1) : grad_gates.slice(0, 1, d.T);
    const Tensor h_prev = reverse ? y.slice(0, 1, d.T) : y.slice(0, 0, d.T - 1);
    grad_w_hh.addmm_(dg.reshape({-1, G}).t(), h_prev.reshape({-1, d.H}));
  }
  return grad_w_hh;
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> lstm_backward_cpu(
    const std::optional<Tensor>& grad_y_in, const std::optional<Tensor>& grad_h_n,
    const std::optional<Tensor>& grad_c_n, const std::optional<Tensor>& grad_cells_in,
    const Tensor& x_in, const Tensor& w_ih_in, const Tensor& w_hh_in, const Tensor& h0_in,
    const Tensor& c0_in, const Tensor& y_in, const Tensor& gates_in, const Tensor& cells_in,
    bool reverse, bool need_grad_x) {
  const LstmDims d = check_backward_args(grad_y_in, grad_h_n, grad_c_n, grad_cells_in, x_in,
                                         w_ih_in, w_hh_in, h0_in, c0_in, y_in, gates_in, cells_in);
  const Tensor x = x_in.contiguous(), w_ih = w_ih_in.contiguous(), w_hh = w_hh_in.contiguous();
  const Tensor h0 = h0_in.contiguous(), c0 = c0_in.contiguous(), y = y_in.contiguous();
  const Tensor gates = gates_in.contiguous(), cells = cells_in.contiguous();
  const auto grad_y = contiguous_or_none(grad_y_in);
  const auto grad_cells = contiguous_or_none(grad_cells_in);
  const int64_t G = 4 * d.H;

  Tensor grad_h = state_grad_buffer(grad_h_n, h0);
  Tensor grad_c = state_grad_buffer(grad_c_n, c0);
  Tensor grad_gates = at::empty({d.T, d.B, G}, x.options());

  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "lstm_backward_cpu", [&] {
    lstm_backward_loop<scalar_t>(
        d.T, d.B, d.H, reverse, w_hh.data_ptr<scalar_t>(), gates.data_ptr<scalar_t>(),
        cells.data_ptr<scalar_t>(), c0.data_ptr<scalar_t>(),
        grad_y ? grad_y->data_ptr<scalar_t>() : nullptr,
        grad_cells ? grad_cells->data_ptr<scalar_t>() : nullptr, grad_h.data_ptr<scalar_t>(),
        grad_c.data_ptr<scalar_t>(), grad_gates.data_ptr<scalar_t>());
  });

  if (d.T == 0) {
    return {need_grad_x ? at::zeros_like(x) : at::empty({0}, x.options()), at::zeros_like(w_ih),
            at::zeros_like(w_hh), at::zeros({G}, x.options()), grad_h, grad_c};
  }
  const Tensor grad_gates2d = grad_gates.view({d.T * d.B, G});
  Tensor grad_w_ih = at::mm(grad_gates2d.t(), x.view({d.T * d.B, d.I}));
  Tensor grad_w_hh = recurrent_weight_grad(grad_gates, y, h0, d, reverse);
  Tensor grad_bias = grad_gates2d.sum(0);
  Tensor grad_x = need_grad_x ? at::mm(grad_gates2d, w_ih).view({d.T, d.B, d.I})
                              : at::empty({0}, x.options());
  return {grad_x, grad_w_ih, grad_w_hh, grad_bias, grad_h, grad_c};
}

}  // namespace

TORCH_LIBRARY_IMPL(lstm_ext, CPU, m) {
  m.impl("lstm_forward", &lstm_forward_cpu);
  m.impl("lstm_backward", &lstm_backward_cpu);
}

}  // namespace lstm_ext::cpu
