// Where each time step's rows live in a sequence tensor, dense or packed.
//
// Dense  [T,B,F]: step t has B rows starting at row t*B.
// Packed [N,F] (PackedSequence data): step t has batch_sizes[t] rows starting
// at row sum(batch_sizes[0..t)); batch_sizes never increases, so the rows of
// step t are the first batch_sizes[t] sequences, and a finished sequence just
// stops appearing. Kernels loop over steps and touch only live rows, so
// finished sequences cost nothing.
//
// Torch-free, shared by the CPU loops and the CUDA host code. Built once per
// op call, before the time loop.
#pragma once

#include <cstdint>
#include <vector>

namespace lstm_ext {

class StepLayout {
 public:
  // Dense: T steps of B rows.
  StepLayout(int64_t T, int64_t B) : batch_(B), offsets_(T + 1) {
    for (int64_t t = 0; t <= T; ++t) offsets_[t] = t * B;
  }

  // Packed: batch_sizes [T], validated by the caller (positive, non-increasing).
  StepLayout(const int64_t* batch_sizes, int64_t T)
      : batch_(T > 0 ? batch_sizes[0] : 0), offsets_(T + 1) {
    offsets_[0] = 0;
    for (int64_t t = 0; t < T; ++t) offsets_[t + 1] = offsets_[t] + batch_sizes[t];
  }

  int64_t steps() const { return static_cast<int64_t>(offsets_.size()) - 1; }
  int64_t batch() const { return batch_; }            // rows of the widest step
  int64_t total_rows() const { return offsets_.back(); }
  int64_t offset(int64_t t) const { return offsets_[t]; }
  int64_t rows(int64_t t) const { return offsets_[t + 1] - offsets_[t]; }

  // Time index visited at loop step s (s = 0 .. T-1).
  int64_t time_at(int64_t s, bool reverse) const { return reverse ? steps() - 1 - s : s; }

  // The time index visited just before t, or -1 if t is visited first.
  int64_t previous(int64_t t, bool reverse) const {
    const int64_t p = reverse ? t + 1 : t - 1;
    return (p < 0 || p >= steps()) ? -1 : p;
  }

  // Rows of t whose previous state comes from the previous visited step; the
  // rest (only when reverse, where sequences start at their own last step)
  // start from the initial state h0/c0.
  int64_t rows_continuing(int64_t t, bool reverse) const {
    const int64_t p = previous(t, reverse);
    if (p < 0) return 0;
    return rows(p) < rows(t) ? rows(p) : rows(t);
  }

 private:
  int64_t batch_;
  std::vector<int64_t> offsets_;  // [T+1]
};

}  // namespace lstm_ext
