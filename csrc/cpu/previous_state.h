// The state each row started a step from, gathered for the weight gradient.
#pragma once

#include <cstdint>
#include <cstring>

#include "step_layout.h"

namespace lstm_ext::cpu {

// h_prev [N,F] out: for each row of step t, the state that row started step t
// from: its row of y [N,F] at the previously visited step, or of h0 [B,F] for
// rows that start at t (the first visited step; in reverse, also sequences
// shorter than the step before). Feeds the one GEMM for grad W_hh. Raw
// copies, no allocation.
template <typename scalar_t>
void gather_previous_state(const StepLayout& layout, bool reverse, int64_t F, const scalar_t* y,
                           const scalar_t* h0, scalar_t* h_prev) {
  for (int64_t t = 0; t < layout.steps(); ++t) {
    const int64_t continuing = layout.rows_continuing(t, reverse);
    scalar_t* out = h_prev + layout.offset(t) * F;
    if (continuing > 0) {
      const int64_t p = layout.previous(t, reverse);
      std::memcpy(out, y + layout.offset(p) * F, sizeof(scalar_t) * continuing * F);
    }
    std::memcpy(out + continuing * F, h0 + continuing * F,
                sizeof(scalar_t) * (layout.rows(t) - continuing) * F);
  }
}

}  // namespace lstm_ext::cpu
