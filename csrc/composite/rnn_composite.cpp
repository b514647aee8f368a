// rnn_forward as a composite of differentiable ATen ops, for double backward
// (see lstm_composite.cpp). A bfloat16 call is computed in float32 and returns
// y and h_n in bfloat16, as the fused op does.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <vector>

#include "composite/running_state.h"
#include "compute_dtype.h"
#include "rnn_checks.h"

namespace lstm_ext {
namespace {

using at::Tensor;

std::tuple<Tensor, Tensor> rnn_forward_composite(const Tensor& x_in, const Tensor& w_ih_in,
                                                 const Tensor& w_hh_in, const OptTensor& bias_in,
                                                 const Tensor& h0_in, bool reverse, bool relu,
                                                 const OptTensor& batch_sizes) {
  const RnnDims d = check_rnn_forward_args(x_in, w_ih_in, w_hh_in, bias_in, h0_in, batch_sizes);
  if (d.seq.T == 0) {  // nothing to loop over (and at::cat takes no empty list)
    return {x_in.new_empty(d.seq.shape(d.H)), h0_in.clone()};
  }
  // Upcasts (no-ops unless x is bfloat16) that autograd records.
  const auto compute = compute_dtype(x_in.scalar_type());
  const Tensor x = x_in.to(compute), w_ih = w_ih_in.to(compute), w_hh = w_hh_in.to(compute);
  const OptTensor bias = present(bias_in) ? OptTensor(bias_in->to(compute)) : std::nullopt;
  const StepLayout layout = make_step_layout(d.seq, batch_sizes);
  const Tensor x2d = x.reshape({d.seq.N, d.I});
  const Tensor projected_x = present(bias) ? at::addmm(*bias, x2d, w_ih.t()) : at::mm(x2d, w_ih.t());

  Tensor h = h0_in.to(compute);
  std::vector<Tensor> ys(layout.steps());
  for (int64_t s = 0; s < layout.steps(); ++s) {
    const int64_t t = layout.time_at(s, reverse);
    const int64_t rows = layout.rows(t);
    const Tensor pre =
        at::addmm(projected_x.narrow(0, layout.offset(t), rows), h.narrow(0, 0, rows), w_hh.t());
    ys[t] = relu ? at::relu(pre) : at::tanh(pre);
    h = with_first_rows(ys[t], h, rows);
  }
  const auto st = x_in.scalar_type();
  return {at::cat(ys, 0).view(d.seq.shape(d.H)).to(st), h.to(st)};
}

}  // namespace

TORCH_LIBRARY_IMPL(lstm_ext, CompositeImplicitAutograd, m) {
  m.impl("rnn_forward_composite", &rnn_forward_composite);
}

}  // namespace lstm_ext
