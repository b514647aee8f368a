// lstm_ext::tensorcore_plan: the tensor-core kernels' planner
// (csrc/cuda/tensorcore_plan.h, plain C++) as an op, in every build, so its
// invariants are tested without a GPU (tests/test_tensorcore.py). The CUDA
// binding calls the same function with the device's figures
// (csrc/cuda_binding/lstm_path.cpp).
#include <c10/core/ScalarType.h>
#include <torch/library.h>

#include <string>
#include <tuple>

#include "cuda/tensorcore_plan.h"
#include "message.h"

namespace lstm_ext {
namespace {

using PlanTuple = std::tuple<bool, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t,
                             int64_t, int64_t, std::string>;

PlanTuple tensorcore_plan(int64_t batch, int64_t hidden, at::ScalarType dtype, bool backward,
                          int64_t sms, int64_t smem_optin) {
  LSTM_EXT_CHECK(sms >= 0 && sms <= (1 << 20), "tensorcore_plan: sms must be in [0, 2^20], got ",
                 sms);
  LSTM_EXT_CHECK(smem_optin >= 0, "tensorcore_plan: smem_optin must be >= 0, got ", smem_optin);
  cuda::TensorCorePlan p;
  if (dtype == at::kFloat || dtype == at::kHalf || dtype == at::kBFloat16) {
    p = cuda::plan_tensorcore(batch, hidden, static_cast<int>(c10::elementSize(dtype)),
                              static_cast<int>(sms), static_cast<size_t>(smem_optin), backward);
  } else {
    p.why_not = message("the tensor-core kernels have no ", dtype, " kernel");
  }
  const cuda::TensorCoreLayout& l = p.layout;
  return {p.fits,
          p.blocks,
          l.units,
          p.batch_pad,
          l.tile_rows,
          l.kchunk,
          l.chunks,
          l.ksplit,
          static_cast<int64_t>(p.weight_bytes),
          static_cast<int64_t>(p.smem_bytes),
          p.why_not};
}

}  // namespace
}  // namespace lstm_ext

TORCH_LIBRARY_IMPL(lstm_ext, CompositeImplicitAutograd, m) {
  m.impl("tensorcore_plan", &lstm_ext::tensorcore_plan);
}
