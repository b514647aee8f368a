// Functional (autograd-friendly) update of a full-batch running state, for
// the composite ops.
#pragma once

#include <ATen/ATen.h>

#include "tensor_args.h"

namespace lstm_ext {

// The running state [B,·] after a step that updated only its first `rows`
// rows to `updated`; the other rows (finished or not yet started sequences)
// keep their state.
inline at::Tensor with_first_rows(const at::Tensor& updated, const at::Tensor& state, int64_t rows) {
  const int64_t B = state.size(0);
  return rows == B ? updated : at::cat({updated, state.narrow(0, rows, B - rows)}, 0);
}

}  // namespace lstm_ext
