#include "cpu/gru_sequence.h"

#include <algorithm>
#include <type_traits>

#include "cpu/blas.h"
#include "cpu/fused/workspace.h"
#include "cpu/gru_cell.h"
#include "cpu/kernel_select.h"
#include "cpu/parallel_rows.h"
#include "cpu/previous_state.h"

namespace lstm_ext::cpu {
namespace {

template <typename scalar_t>
PreviousRows<scalar_t> previous_rows(const StepLayout& L, int64_t t, bool reverse, int64_t H,
                                     const scalar_t* y, const scalar_t* h0) {
  const int64_t p = L.previous(t, reverse);
  return {p >= 0 ? y + L.offset(p) * H : nullptr, h0, L.rows_continuing(t, reverse), H};
}

template <typename scalar_t>
void reference_forward(const StepLayout& L, bool reverse, int64_t H, const scalar_t* w_hh,
                       const scalar_t* b_hn, const scalar_t* gi, const scalar_t* h0, scalar_t* y,
                       scalar_t* gates, scalar_t* gh) {
  const int64_t G = 3 * H;
  for (int64_t s = 0; s < L.steps(); ++s) {
    const int64_t t = L.time_at(s, reverse), rows = L.rows(t), off = L.offset(t);
    // gh = [0, 0, b_hn] + h_{t-1} W_hh^T for the live rows.
    for (int64_t r = 0; r < rows; ++r) {
      std::fill(gh + r * G, gh + r * G + 2 * H, scalar_t(0));
      if (b_hn) {
        std::copy(b_hn, b_hn + H, gh + r * G + 2 * H);
      } else {
        std::fill(gh + r * G + 2 * H, gh + (r + 1) * G, scalar_t(0));
      }
    }
    add_recurrent_product<scalar_t>(L, t, reverse, H, G, y, h0, w_hh, gh);
    const PreviousRows<scalar_t> prev = previous_rows(L, t, reverse, H, y, h0);
    for_rows(0, rows, G, [&](int64_t begin, int64_t end) {
      gru_cell_forward<scalar_t>(begin, end, H, gi + off * G, gh, prev, y + off * H,
                                 gates ? gates + off * 4 * H : nullptr);
    });
  }
}

template <typename scalar_t>
void reference_backward(const StepLayout& L, bool reverse, int64_t H, const scalar_t* w_hh,
                        const scalar_t* gates, const scalar_t* y, const scalar_t* h0,
                        const scalar_t* grad_y, scalar_t* grad_h, scalar_t* grad_gates) {
  for (int64_t s = L.steps() - 1; s >= 0; --s) {
    const int64_t t = L.time_at(s, reverse), rows = L.rows(t), off = L.offset(t);
    const PreviousRows<scalar_t> prev = previous_rows(L, t, reverse, H, y, h0);
    scalar_t* dg = grad_gates + off * 4 * H;
    for_rows(0, rows, 4 * H, [&](int64_t begin, int64_t end) {
      gru_cell_backward<scalar_t>(begin, end, H, gates + off * 4 * H, prev,
                                  grad_y ? grad_y + off * H : nullptr, grad_h, dg);
    });
    // grad_h now holds dh * z for the live rows; add [d r, d z, d hn] W_hh.
    gemm<scalar_t>(false, false, rows, H, 3 * H, scalar_t(1), dg, 4 * H, w_hh, H, scalar_t(1),
                   grad_h, H);
  }
}

}  // namespace

template <typename scalar_t>
void gru_forward_loop(const fused::Kernels* kernels, const StepLayout& layout, bool reverse,
                      int64_t H, const scalar_t* w_hh, const scalar_t* b_hn, const scalar_t* gi,
                      const scalar_t* h0, scalar_t* y, scalar_t* gates, scalar_t* gh) {
  if constexpr (std::is_same_v<scalar_t, float>) {
    if (const fused::Kernels* k = kernels) {
      const fused::Panels w = pack_weights(*k, fused::Slot::kRecurrent, fused::PackKind::kGates,
                                           w_hh, H, H, /*gates=*/3);
      k->gru_forward({&layout, reverse, H, &w, b_hn, gi, y, gates, h0},
                     loop_threads(layout.batch() * 3 * H * H));
      return;
    }
  }
  reference_forward<scalar_t>(layout, reverse, H, w_hh, b_hn, gi, h0, y, gates, gh);
}

template <typename scalar_t>
void gru_backward_loop(const fused::Kernels* kernels, const StepLayout& layout, bool reverse,
                       int64_t H, const scalar_t* w_hh, const scalar_t* gates, const scalar_t* y,
                       const scalar_t* h0, const scalar_t* grad_y, scalar_t* grad_h,
                       scalar_t* grad_gates, scalar_t* grad_direct) {
  if constexpr (std::is_same_v<scalar_t, float>) {
    if (const fused::Kernels* k = kernels) {
      // grad_h_prev = grad_direct + grad_gates[:, 0:3H) W_hh: W_hh [3H,H] as
      // the [K,N] operand, K = 3H.
      const fused::Panels w = pack_weights(*k, fused::Slot::kRecurrent,
                                           fused::PackKind::kColumns, w_hh, H, 3 * H);
      k->gru_backward({&layout, reverse, H, &w, gates, y, h0, grad_y, grad_h, grad_gates,
                       grad_direct},
                      loop_threads(layout.batch() * 3 * H * H));
      return;
    }
  }
  reference_backward<scalar_t>(layout, reverse, H, w_hh, gates, y, h0, grad_y, grad_h,
                               grad_gates);
}

void gru_forward_bf16(const fused::Bf16Kernels& k, const StepLayout& layout, bool reverse,
                      int64_t I, int64_t H, const fused::Bf16* x, const fused::Bf16* w_ih,
                      const fused::Bf16* w_hh, const float* gi_bias, const float* b_hn,
                      const fused::Bf16* h0, float* gi, fused::Bf16* y, float* gates) {
  using fused::PackKind, fused::Slot;
  const int64_t N = layout.total_rows(), G = 3 * H;
  {
    const fused::PairPanels w = pack_weights(k, Slot::kInput, PackKind::kRows, w_ih, G, I);
    k.linear({N, G, I, x, &w, gi_bias, gi}, loop_threads(N * G * I));
  }
  const fused::PairPanels w =
      pack_weights(k, Slot::kRecurrent, PackKind::kGates, w_hh, H, H, /*gates=*/3);
  k.gru_forward({&layout, reverse, H, &w, b_hn, gi, y, gates, h0},
                loop_threads(layout.batch() * G * H));
}

#define LSTM_EXT_INSTANTIATE_GRU_LOOPS(T)                                                       \
  template void gru_forward_loop<T>(const fused::Kernels*, const StepLayout&, bool, int64_t,   \
                                    const T*, const T*, const T*, const T*, T*, T*, T*);        \
  template void gru_backward_loop<T>(const fused::Kernels*, const StepLayout&, bool, int64_t,  \
                                     const T*, const T*, const T*, const T*, const T*, T*, T*,  \
                                     T*);
LSTM_EXT_INSTANTIATE_GRU_LOOPS(float)
LSTM_EXT_INSTANTIATE_GRU_LOOPS(double)
#undef LSTM_EXT_INSTANTIATE_GRU_LOOPS

}  // namespace lstm_ext::cpu
