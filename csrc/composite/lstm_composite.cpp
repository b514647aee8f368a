// lstm_forward as a composite of differentiable ATen ops, for double backward.
//
// Registered as CompositeImplicitAutograd, so autograd sees (and can
// differentiate twice) every per-step op. It follows the fused kernels' time
// layout exactly (StepLayout, reverse, packed rows, projection), but keeps the
// running state functional (no in-place updates) so the graph stays valid.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <vector>

#include "checks.h"
#include "composite/running_state.h"

namespace lstm_ext {
namespace {

using at::Tensor;

std::tuple<Tensor, Tensor, Tensor, Tensor> lstm_forward_composite(
    const Tensor& x, const Tensor& w_ih, const Tensor& w_hh, const OptTensor& bias,
    const Tensor& h0, const Tensor& c0, bool reverse, const OptTensor& batch_sizes,
    const OptTensor& w_hr) {
  const LstmDims d = check_lstm_forward_args(x, w_ih, w_hh, bias, h0, c0, batch_sizes, w_hr);
  if (d.seq.T == 0) {  // nothing to loop over (and at::cat takes no empty list)
    return {x.new_empty(d.seq.shape(d.P)), h0.clone(), c0.clone(), x.new_empty(d.seq.shape(d.H))};
  }
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

}  // namespace

TORCH_LIBRARY_IMPL(lstm_ext, CompositeImplicitAutograd, m) {
  m.impl("lstm_forward_composite", &lstm_forward_composite);
}

}  // namespace lstm_ext
