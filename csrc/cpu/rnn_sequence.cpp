#include "cpu/rnn_sequence.h"


#include <algorithm>
#include <type_traits>

#include "cpu/blas.h"
#include "cpu/fused/workspace.h"
#include "cpu/kernel_select.h"
#include "cpu/parallel_rows.h"
#include "cpu/previous_state.h"
#include "cpu/rnn_cell.h"

namespace lstm_ext::cpu {
namespace {

template <typename scalar_t, bool Relu>
void forward_loop(const StepLayout& L, int64_t H, bool reverse, const scalar_t* w_hh,
                  const scalar_t* h0, scalar_t* y) {
  for (int64_t s = 0; s < L.steps(); ++s) {
    const int64_t t = L.time_at(s, reverse);
    const int64_t rows = L.rows(t);
    scalar_t* y_t = y + L.offset(t) * H;
    // y_t += h_{t-1} W_hh^T for the live rows, h_{t-1} read where it lives.
    add_recurrent_product<scalar_t>(L, t, reverse, H, H, y, h0, w_hh, y_t);
    for_rows(0, rows, H, [&](int64_t begin, int64_t end) {
      rnn_cell_forward<scalar_t, Relu>(begin, end, H, y_t);
    });
  }
}

template <typename scalar_t, bool Relu>
void backward_loop(const StepLayout& L, int64_t H, bool reverse, const scalar_t* w_hh,
                   const scalar_t* y, const scalar_t* grad_y, scalar_t* grad_h,
                   scalar_t* d_pre) {
  for (int64_t s = L.steps() - 1; s >= 0; --s) {
    const int64_t t = L.time_at(s, reverse);
    const int64_t rows = L.rows(t);
    const int64_t off = L.offset(t) * H;
    scalar_t* d_pre_t = d_pre + off;
    for_rows(0, rows, H, [&](int64_t begin, int64_t end) {
      rnn_cell_backward<scalar_t, Relu>(begin, end, H, y + off, grad_y ? grad_y + off : nullptr,
                                        grad_h, d_pre_t);
    });
    // Gradient at h_{t-1} (or h0) through this step: d_pre_t W_hh. The pass
    // above has consumed grad_h's live rows, so the product may overwrite them.
    gemm<scalar_t>(false, false, rows, H, H, scalar_t(1), d_pre_t, H, w_hh, H, scalar_t(0), grad_h,
                   H);
  }
}

}  // namespace

template <typename scalar_t>
void rnn_forward_loop(const fused::Kernels* kernels, const StepLayout& L, int64_t H, bool reverse,
                      bool relu, const scalar_t* w_hh, const scalar_t* h0, scalar_t* y) {
  if constexpr (std::is_same_v<scalar_t, float>) {
    if (const fused::Kernels* k = kernels) {
      const fused::Panels w =
          pack_weights(*k, fused::Slot::kRecurrent, fused::PackKind::kRows, w_hh, H, H);
      k->rnn_forward({&L, reverse, relu, H, &w, h0, y}, loop_threads(L.batch() * H * H));
      return;
    }
  }
  if (relu) {
    forward_loop<scalar_t, true>(L, H, reverse, w_hh, h0, y);
  } else {
    forward_loop<scalar_t, false>(L, H, reverse, w_hh, h0, y);
  }
}

template <typename scalar_t>
void rnn_backward_loop(const fused::Kernels* kernels, const StepLayout& L, int64_t H,
                       bool reverse, bool relu, const scalar_t* w_hh, const scalar_t* y,
                       const scalar_t* grad_y, scalar_t* grad_h, scalar_t* d_pre) {
  if constexpr (std::is_same_v<scalar_t, float>) {
    if (const fused::Kernels* k = kernels) {
      const fused::Panels w =
          pack_weights(*k, fused::Slot::kRecurrent, fused::PackKind::kColumns, w_hh, H, H);
      k->rnn_backward({&L, reverse, relu, H, &w, y, grad_y, grad_h, d_pre},
                      loop_threads(L.batch() * H * H));
      return;
    }
  }
  if (relu) {
    backward_loop<scalar_t, true>(L, H, reverse, w_hh, y, grad_y, grad_h, d_pre);
  } else {
    backward_loop<scalar_t, false>(L, H, reverse, w_hh, y, grad_y, grad_h, d_pre);
  }
}

template void rnn_forward_loop<float>(const fused::Kernels*, const StepLayout&, int64_t, bool,
                                      bool, const float*, const float*, float*);
template void rnn_forward_loop<double>(const fused::Kernels*, const StepLayout&, int64_t, bool,
                                       bool, const double*, const double*, double*);
template void rnn_backward_loop<float>(const fused::Kernels*, const StepLayout&, int64_t, bool,
                                       bool, const float*, const float*, const float*, float*,
                                       float*);
template void rnn_backward_loop<double>(const fused::Kernels*, const StepLayout&, int64_t, bool,
                                        bool, const double*, const double*, const double*,
                                        double*, double*);

}  // namespace lstm_ext::cpu
