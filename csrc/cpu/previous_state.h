// Where each row's h_{t-1} lives, for the recurrent product of every step, the
// final state h_n, and the weight gradient.
//
// Step t's rows start from the previous visited step's output rows in y, or,
// for rows that start at t (the first visited step; in reverse, also the
// sequences shorter than the step before), from h0. Reading y in place means
// the time loops keep no separate h state buffer and write each h_t once.
#pragma once

#include <cstdint>
#include <cstring>
#include <vector>

#include "cpu/blas.h"
#include "step_layout.h"

namespace lstm_ext::cpu {

// h_prev out, row r at h_prev + r * ld (ld >= F): for each row of step t,
// the state that row started step t from: its row of y [N,F] at the
// previously visited step, or of h0 [B,F] for rows that start at t (the
// first visited step; in reverse, also sequences shorter than the step
// before). Feeds the GEMM for grad W_hh (weight_gradients.h), which reads the
// rows beside x's. Raw copies, no allocation.
template <typename scalar_t>
void gather_previous_state(const StepLayout& layout, bool reverse, int64_t F, const scalar_t* y,
                           const scalar_t* h0, scalar_t* h_prev, int64_t ld) {
  // Empty tensors may have null data pointers, and memcpy from or to null is
  // undefined even for 0 bytes (UBSan found it with B = 0): copy only rows.
  if (layout.total_rows() == 0 || F == 0) return;
  const auto copy_rows = [&](scalar_t* out, const scalar_t* src, int64_t rows) {
    for (int64_t r = 0; r < rows; ++r) std::memcpy(out + r * ld, src + r * F, sizeof(scalar_t) * F);
  };
  for (int64_t t = 0; t < layout.steps(); ++t) {
    const int64_t continuing = layout.rows_continuing(t, reverse);
    const int64_t starting = layout.rows(t) - continuing;
    scalar_t* out = h_prev + layout.offset(t) * ld;
    if (continuing > 0) copy_rows(out, y + layout.offset(layout.previous(t, reverse)) * F, continuing);
    if (starting > 0) copy_rows(out + continuing * ld, h0 + continuing * F, starting);
  }
}

// out [rows(t),G] += h_{t-1} w^T for the rows of step t, w [G,F]; h_{t-1} is
// read from y [N,F] and h0 [B,F] where it lives (at most two BLAS calls).
template <typename scalar_t>
void add_recurrent_product(const StepLayout& layout, int64_t t, bool reverse, int64_t F, int64_t G,
                           const scalar_t* y, const scalar_t* h0, const scalar_t* w,
                           scalar_t* out) {
  const int64_t continuing = layout.rows_continuing(t, reverse);
  const int64_t starting = layout.rows(t) - continuing;
  if (continuing > 0) {
    const scalar_t* y_prev = y + layout.offset(layout.previous(t, reverse)) * F;
    gemm<scalar_t>(false, true, continuing, G, F, scalar_t(1), y_prev, F, w, F, scalar_t(1), out, G);
  }
  if (starting > 0) {
    gemm<scalar_t>(false, true, starting, G, F, scalar_t(1), h0 + continuing * F, F, w, F,
                   scalar_t(1), out + continuing * G, G);
  }
}

// h_n [B,F] out: each row's h after its last visited step (h0 for a row no
// step visits, which only happens with no steps at all).
template <typename scalar_t>
void gather_final_state(const StepLayout& layout, bool reverse, int64_t F, const scalar_t* y,
                        const scalar_t* h0, scalar_t* h_n) {
  std::vector<int64_t> last_row(layout.batch(), -1);
  for (int64_t s = 0; s < layout.steps(); ++s) {
    const int64_t t = layout.time_at(s, reverse);
    for (int64_t b = 0; b < layout.rows(t); ++b) last_row[b] = layout.offset(t) + b;
  }
  for (int64_t b = 0; b < layout.batch(); ++b) {
    const scalar_t* src = last_row[b] >= 0 ? y + last_row[b] * F : h0 + b * F;
    std::memcpy(h_n + b * F, src, sizeof(scalar_t) * F);
  }
}

}  // namespace lstm_ext::cpu
