// gru_forward as a composite of differentiable ATen ops, for double backward
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

std::tuple<Tensor, Tensor> gru_forward_composite(const Tensor& x_in, const Tensor& w_ih_in,
                                                 const Tensor& w_hh_in, const OptTensor& b_ih_in,
                                                 const OptTensor& b_hh_in, const Tensor& h0_in,
                                                 bool reverse, const OptTensor& batch_sizes) {
  const GruDims d =
      check_gru_forward_args(x_in, w_ih_in, w_hh_in, b_ih_in, b_hh_in, h0_in, batch_sizes);
  if (d.seq.T == 0) {  // nothing to loop over (and at::cat takes no empty list)
    return {x_in.new_empty(d.seq.shape(d.H)), h0_in.clone()};
  }
  const auto compute = compute_dtype(x_in.scalar_type());
  const Tensor x = x_in.to(compute), w_ih = w_ih_in.to(compute), w_hh = w_hh_in.to(compute);
  const int64_t H = d.H;
  const StepLayout layout = make_step_layout(d.seq, batch_sizes);
  const Tensor x2d = x.reshape({d.seq.N, d.I});
  const Tensor gi_all =
      present(b_ih_in) ? at::addmm(b_ih_in->to(compute), x2d, w_ih.t()) : at::mm(x2d, w_ih.t());
  const OptTensor b_hh = present(b_hh_in) ? OptTensor(b_hh_in->to(compute)) : std::nullopt;

  Tensor h = h0_in.to(compute);
  std::vector<Tensor> ys(layout.steps());
  for (int64_t s = 0; s < layout.steps(); ++s) {
    const int64_t t = layout.time_at(s, reverse);
    const int64_t rows = layout.rows(t);
    const Tensor h_prev = h.narrow(0, 0, rows);
    const Tensor gi = gi_all.narrow(0, layout.offset(t), rows);
    const Tensor gh = b_hh ? at::addmm(*b_hh, h_prev, w_hh.t()) : at::mm(h_prev, w_hh.t());
    const Tensor r = at::sigmoid(gi.narrow(1, 0, H) + gh.narrow(1, 0, H));
    const Tensor z = at::sigmoid(gi.narrow(1, H, H) + gh.narrow(1, H, H));
    const Tensor n = at::tanh(gi.narrow(1, 2 * H, H) + r * gh.narrow(1, 2 * H, H));
    ys[t] = n + z * (h_prev - n);
    h = with_first_rows(ys[t], h, rows);
  }
  const auto st = x_in.scalar_type();
  return {at::cat(ys, 0).view(d.seq.shape(H)).to(st), h.to(st)};
}

}  // namespace

TORCH_LIBRARY_IMPL(lstm_ext, CompositeImplicitAutograd, m) {
  m.impl("gru_forward_composite", &gru_forward_composite);
}

}  // namespace lstm_ext
