#include "cpu/weight_gradients.h"

#include <ATen/Dispatch.h>

#include "cpu/previous_state.h"
#include "cpu/scratch.h"

namespace lstm_ext::cpu {

std::pair<at::Tensor, at::Tensor> weight_gradients(const at::Tensor& grad_pre,
                                                   const at::Tensor& x2d,
                                                   const StepLayout& layout, bool reverse,
                                                   const at::Tensor& y, const at::Tensor& h0) {
  const int64_t N = grad_pre.size(0), I = x2d.size(1), P = h0.size(-1);
  at::Tensor inputs = scratch(ScratchRole::kPrevState, {N, I + P}, grad_pre.options());
  inputs.narrow(1, 0, I).copy_(x2d);
  AT_DISPATCH_FLOATING_TYPES(grad_pre.scalar_type(), "weight_gradients", [&] {
    gather_previous_state<scalar_t>(layout, reverse, P, y.data_ptr<scalar_t>(),
                                    h0.data_ptr<scalar_t>(), inputs.data_ptr<scalar_t>() + I,
                                    I + P);
  });
  const at::Tensor both = at::mm(grad_pre.t(), inputs);
  return {both.narrow(1, 0, I).contiguous(), both.narrow(1, I, P).contiguous()};
}

}  // namespace lstm_ext::cpu
