// lstm_forward as a composite of differentiable ATen ops, for double backward.
//
// Registered as CompositeImplicitAutograd, so autograd sees (and can
// differentiate twice) every per-step op. It follows the fused kernels' time
// layout exactly (StepLayout, reverse, packed rows, projection), but keeps the
// running state functional (no in-place updates) so the graph stays valid.
//
// Dtypes as the fused op's (compute_dtype.h): a bfloat16 call is computed in
// float32 (differentiable upcasts of the arguments), returns y, h_n and c_n in
// bfloat16 and cells in float32, so the gradients the fused op's autograd
// passes in (grad_cells is float32) line up with these outputs.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <vector>

#include "checks.h"
#include "compute_dtype.h"
#include "composite/running_state.h"

namespace lstm_ext {
namespace {

using at::Tensor;

// The loop in x's compute dtype.
std::tuple<Tensor, Tensor, Tensor, Tensor> lstm_composite_loop(
    const LstmDims& d, const Tensor& x, const Tensor& w_ih, const Tensor& w_hh,
    const OptTensor& bias, const Tensor& h0, const Tensor& c0, bool reverse,
    const OptTensor& batch_sizes, const OptTensor& w_hr) {
  const StepLayout layout = make_step_layout(d.seq, batch_sizes);
  const Tensor x2d = x.reshape({d.seq.N, d.I});
  const Tensor projected_x = present(bias) ? at::addmm(*bias, x2d, w_ih.t()) : at::mm(x2d, w_ih.t());

  Tensor h = h0, c = c0;
  std::vector<Tensor> ys(layout.steps()), cs(layout.steps());
  for (int64_t s = 0; s < layout.steps(); ++s) {
    const int64_t t = layout.time_at(s, reverse);
    const int64_t rows = layout.rows(t);
    const Tensor gates =
        at::addmm(projected_x.narrow(0, layout.offset(t), rows), h.narrow(0, 0, rows), w_hh.t());
    const auto g = gates.chunk(4, 1);
    const Tensor c_t = at::sigmoid(g[1]) * c.narrow(0, 0, rows) + at::sigmoid(g[0]) * at::tanh(g[2]);
    Tensor h_t = at::sigmoid(g[3]) * at::tanh(c_t);
    if (present(w_hr)) h_t = at::mm(h_t, w_hr->t());
    ys[t] = h_t;
    cs[t] = c_t;
    h = with_first_rows(h_t, h, rows);
    c = with_first_rows(c_t, c, rows);
  }
  return {at::cat(ys, 0).view(d.seq.shape(d.P)), h, c, at::cat(cs, 0).view(d.seq.shape(d.H))};
}

std::tuple<Tensor, Tensor, Tensor, Tensor> lstm_forward_composite(
    const Tensor& x, const Tensor& w_ih, const Tensor& w_hh, const OptTensor& bias,
    const Tensor& h0, const Tensor& c0, bool reverse, const OptTensor& batch_sizes,
    const OptTensor& w_hr) {
  const LstmDims d = check_lstm_forward_args(x, w_ih, w_hh, bias, h0, c0, batch_sizes, w_hr);
  const auto compute = compute_dtype(x.scalar_type());
  if (d.seq.T == 0) {  // nothing to loop over (and at::cat takes no empty list)
    return {x.new_empty(d.seq.shape(d.P)), h0.clone(), c0.clone(),
            x.new_empty(d.seq.shape(d.H), x.options().dtype(compute))};
  }
  // Upcasts (no-ops unless x is bfloat16) that autograd records.
  const auto up = [&](const Tensor& t) { return t.to(compute); };
  const OptTensor bias_c = present(bias) ? OptTensor(up(*bias)) : std::nullopt;
  const OptTensor w_hr_c = present(w_hr) ? OptTensor(up(*w_hr)) : std::nullopt;
  auto [y, h_n, c_n, cells] = lstm_composite_loop(d, up(x), up(w_ih), up(w_hh), bias_c, up(h0),
                                                  up(c0), reverse, batch_sizes, w_hr_c);
  const auto st = x.scalar_type();
  return {y.to(st), h_n.to(st), c_n.to(st), cells};
}

}  // namespace

TORCH_LIBRARY_IMPL(lstm_ext, CompositeImplicitAutograd, m) {
  m.impl("lstm_forward_composite", &lstm_forward_composite);
}

}  // namespace lstm_ext
