// rnn_forward as a composite of differentiable ATen ops, for double backward
// (see lstm_composite.cpp).
#include <ATen/ATen.h>
#include <torch/library.h>

#include <vector>

#include "composite/running_state.h"
#include "rnn_checks.h"

namespace lstm_ext {
namespace {

using at::Tensor;

std::tuple<Tensor, Tensor> rnn_forward_composite(const Tensor& x, const Tensor& w_ih,
                                                 const Tensor& w_hh, const OptTensor& bias,
                                                 const Tensor& h0, bool reverse, bool relu,
                                                 const OptTensor& batch_sizes) {
  const RnnDims d = check_rnn_forward_args(x, w_ih, w_hh, bias, h0, batch_sizes);
  if (d.seq.T == 0) {  // nothing to loop over (and at::cat takes no empty list)
    return {x.new_empty(d.seq.shape(d.H)), h0.clone()};
  }
  const StepLayout layout = make_step_layout(d.seq, batch_sizes);
  const Tensor x2d = x.reshape({d.seq.N, d.I});
  const Tensor projected_x = present(bias) ? at::addmm(*bias, x2d, w_ih.t()) : at::mm(x2d, w_ih.t());

  Tensor h = h0;
  std::vector<Tensor> ys(layout.steps());
  for (int64_t s = 0; s < layout.steps(); ++s) {
    const int64_t t = layout.time_at(s, reverse);
    const int64_t rows = layout.rows(t);
    const Tensor pre =
        at::addmm(projected_x.narrow(0, layout.offset(t), rows), h.narrow(0, 0, rows), w_hh.t());
    ys[t] = relu ? at::relu(pre) : at::tanh(pre);
    h = with_first_rows(ys[t], h, rows);
  }
  return {at::cat(ys, 0).view(d.seq.shape(d.H)), h};
}

}  // namespace

TORCH_LIBRARY_IMPL(lstm_ext, CompositeImplicitAutograd, m) {
  m.impl("rnn_forward_composite", &rnn_forward_composite);
}

}  // namespace lstm_ext
