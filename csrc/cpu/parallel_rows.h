// Splitting one step's elementwise pass over the batch rows across threads.
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>

namespace lstm_ext::cpu {

// Below this many elements per thread, forking costs more than the
// elementwise work it would split.
constexpr int64_t kElementsPerThread = 16384;

// f(begin, end) over rows [begin, end) of a step whose rows have `width`
// elements each; small steps run inline on the calling thread.
template <typename F>
void for_rows(int64_t begin, int64_t end, int64_t width, const F& f) {
  if (begin >= end) return;
  at::parallel_for(begin, end, std::max<int64_t>(1, kElementsPerThread / width), f);
}

}  // namespace lstm_ext::cpu
