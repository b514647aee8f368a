#include "cuda_binding/cuda_tensors.h"

namespace lstm_ext::cuda_binding {

Tensor previous_states(const Tensor& y2d, const Tensor& h0, const StepLayout& L, bool reverse,
                       bool packed) {
  const int64_t T = L.steps(), B = L.batch();
  if (T == 0) return at::empty({0, h0.size(1)}, y2d.options());
  if (!packed) {
    // Forward: [h0, y_0 .. y_{T-2}]; reverse: [y_1 .. y_{T-1}, h0].
    return reverse ? at::cat({row_block(y2d, B, (T - 1) * B), h0})
                   : at::cat({h0, row_block(y2d, 0, (T - 1) * B)});
  }
  Tensor out = at::empty(y2d.sizes(), y2d.options());
  for (int64_t t = 0; t < T; ++t) {
    const int64_t continuing = L.rows_continuing(t, reverse);
    Tensor rows = step_rows(out, L, t);
    if (continuing > 0) {
      row_block(rows, 0, continuing)
          .copy_(row_block(y2d, L.offset(L.previous(t, reverse)), continuing));
    }
    if (continuing < L.rows(t)) {
      row_block(rows, continuing, L.rows(t) - continuing)
          .copy_(row_block(h0, continuing, L.rows(t) - continuing));
    }
  }
  return out;
}

Tensor step_offsets(const StepLayout& L, bool packed, const at::Device& device) {
  if (!packed) return Tensor();
  Tensor host = at::empty({L.steps() + 1}, at::TensorOptions().dtype(at::kLong).pinned_memory(true));
  int64_t* offsets = host.data_ptr<int64_t>();
  for (int64_t t = 0; t < L.steps(); ++t) offsets[t] = L.offset(t);
  offsets[L.steps()] = L.total_rows();
  return host.to(device, /*non_blocking=*/true);
}

Tensor state_buffer(const OptTensor& init, c10::IntArrayRef sizes, const at::TensorOptions& opts) {
  if (!present(init)) return at::zeros(sizes, opts);
  return init->to(opts.dtype().toScalarType(), /*non_blocking=*/false, /*copy=*/true,
                  at::MemoryFormat::Contiguous);
}

}  // namespace lstm_ext::cuda_binding
