#include "cpu/lstm_sequence.h"


#include <algorithm>
#include <cstring>
#include <type_traits>

#include "cpu/blas.h"
#include "cpu/fused/workspace.h"
#include "cpu/kernel_select.h"
#include "cpu/lstm_cell.h"
#include "cpu/parallel_rows.h"
#include "cpu/previous_state.h"

namespace lstm_ext::cpu {

template <typename scalar_t>
void lstm_forward_loop(const fused::Kernels* kernels, const StepLayout& layout, bool reverse,
                       bool save, int64_t H, int64_t P, const scalar_t* w_hh, const scalar_t* w_hr,
                       scalar_t* gates, scalar_t* y, scalar_t* cells, const scalar_t* h0,
                       scalar_t* c_state, scalar_t* h_raw) {
  if constexpr (std::is_same_v<scalar_t, float>) {
    if (const fused::Kernels* k = kernels) {
      using fused::PackKind, fused::Slot;
      const fused::Panels w = pack_weights(*k, Slot::kRecurrent, PackKind::kGates, w_hh, H, P);
      const fused::Panels wr = w_hr ? pack_weights(*k, Slot::kProjection, PackKind::kRows, w_hr, P, H)
                                    : fused::Panels();
      k->lstm_forward({&layout, reverse, save, H, P, &w, w_hr ? &wr : nullptr, gates, y, cells, h0,
                       c_state, h_raw},
                      loop_threads(layout.batch() * 4 * H * P));
      return;
    }
  }
  const int64_t G = 4 * H;
  for (int64_t s = 0; s < layout.steps(); ++s) {
    const int64_t t = layout.time_at(s, reverse);
    const int64_t rows = layout.rows(t), off = layout.offset(t);
    scalar_t* gates_t = gates + off * G;
    scalar_t* y_t = y + off * P;
    // gates_t += h_{t-1} W_hh^T, h_{t-1} read where it lives (y or h0).
    add_recurrent_product<scalar_t>(layout, t, reverse, P, G, y, h0, w_hh, gates_t);
    scalar_t* c_save = save ? cells + off * H : nullptr;
    scalar_t* h_out = w_hr ? h_raw : y_t;
    for_rows(0, rows, H, [&](int64_t begin, int64_t end) {
      lstm_cell_forward<scalar_t>(begin, end, H, gates_t, c_state, c_save, h_out, save);
    });
    if (w_hr) {
      // h_t = h_raw W_hr^T
      gemm<scalar_t>(false, true, rows, P, H, scalar_t(1), h_raw, H, w_hr, H, scalar_t(0), y_t, P);
    }
  }
}

template <typename scalar_t>
void lstm_backward_loop(const fused::Kernels* kernels, const StepLayout& layout, bool reverse,
                        int64_t H, int64_t P, const scalar_t* w_hh, const scalar_t* w_hr,
                        const scalar_t* gates, const scalar_t* cells, const scalar_t* c0,
                        const scalar_t* grad_y, const scalar_t* grad_cells, scalar_t* grad_h,
                        scalar_t* grad_c, scalar_t* grad_gates, scalar_t* grad_h_all,
                        scalar_t* h_raw_all, scalar_t* grad_h_raw) {
  if constexpr (std::is_same_v<scalar_t, float>) {
    if (const fused::Kernels* k = kernels) {
      using fused::PackKind, fused::Slot;
      const fused::Panels w = pack_weights(*k, Slot::kRecurrent, PackKind::kColumns, w_hh, P, 4 * H);
      const fused::Panels wr =
          w_hr ? pack_weights(*k, Slot::kProjection, PackKind::kColumns, w_hr, H, P)
               : fused::Panels();
      k->lstm_backward({&layout, reverse, H, P, &w, w_hr ? &wr : nullptr, gates, cells, c0, grad_y,
                        grad_cells, grad_h, grad_c, grad_gates, grad_h_all, h_raw_all, grad_h_raw},
                       loop_threads(layout.batch() * 4 * H * P));
      return;
    }
  }
  const int64_t G = 4 * H;
  for (int64_t s = layout.steps() - 1; s >= 0; --s) {
    const int64_t t = layout.time_at(s, reverse);
    const int64_t rows = layout.rows(t), off = layout.offset(t);
    const scalar_t* grad_y_t = grad_y ? grad_y + off * P : nullptr;
    const scalar_t* grad_cells_t = grad_cells ? grad_cells + off * H : nullptr;
    scalar_t* grad_gates_t = grad_gates + off * G;
    const scalar_t* grad_h_in = grad_h;  // gradient reaching o * tanh(c_t)
    scalar_t* h_raw_t = nullptr;
    if (w_hr) {
      // Total gradient at h_t (kept for grad W_hr), then back through the
      // projection: grad h_raw = grad h_t W_hr.
      scalar_t* gh = grad_h_all + off * P;
      for (int64_t k = 0; k < rows * P; ++k) gh[k] = grad_h[k] + (grad_y_t ? grad_y_t[k] : 0);
      gemm<scalar_t>(false, false, rows, H, P, scalar_t(1), gh, P, w_hr, H, scalar_t(0),
                     grad_h_raw, H);
      grad_h_in = grad_h_raw;
      grad_y_t = nullptr;
      h_raw_t = h_raw_all + off * H;
    }
    // Rows continuing from the previous visited step read their c_{t-1} from
    // it; rows starting at t (reverse direction only) read c0.
    const int64_t p = layout.previous(t, reverse);
    const int64_t continuing = layout.rows_continuing(t, reverse);
    const scalar_t* c_prev_cont = p >= 0 ? cells + layout.offset(p) * H : c0;
    const scalar_t* gates_t = gates + off * G;
    const scalar_t* cells_t = cells + off * H;
    for_rows(0, rows, H, [&](int64_t begin, int64_t end) {
      const int64_t mid = std::clamp(continuing, begin, end);
      lstm_cell_backward<scalar_t>(begin, mid, H, gates_t, cells_t, c_prev_cont, grad_y_t,
                                   grad_h_in, grad_cells_t, grad_c, grad_gates_t, h_raw_t);
      lstm_cell_backward<scalar_t>(mid, end, H, gates_t, cells_t, c0, grad_y_t, grad_h_in,
                                   grad_cells_t, grad_c, grad_gates_t, h_raw_t);
    });
    // Gradient at h_{t-1} through this step: grad_gates_t W_hh. The pass above
    // has consumed grad_h's rows, so the product may overwrite them.
    gemm<scalar_t>(false, false, rows, P, G, scalar_t(1), grad_gates_t, G, w_hh, P, scalar_t(0),
                   grad_h, P);
  }
}

#define LSTM_EXT_INSTANTIATE(T)                                                                  \
  template void lstm_forward_loop<T>(const fused::Kernels*, const StepLayout&, bool, bool,      \
                                     int64_t, int64_t, const T*, const T*, T*, T*, T*, const T*, \
                                     T*, T*);                                                    \
  template void lstm_backward_loop<T>(const fused::Kernels*, const StepLayout&, bool, int64_t,  \
                                      int64_t, const T*, const T*, const T*, const T*,          \
                                      const T*, const T*, const T*, T*, T*, T*, T*, T*, T*);
LSTM_EXT_INSTANTIATE(float)
LSTM_EXT_INSTANTIATE(double)
#undef LSTM_EXT_INSTANTIATE

}  // namespace lstm_ext::cpu
