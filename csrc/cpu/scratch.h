// Large per-call buffers that never leave an op call (the inference gates,
// the backward's gate gradients and gathered h_{t-1}), reused across calls.
//
// A fresh large allocation is returned to the OS when freed, and the next
// call pays a page fault per 4 KB page on first touch: ~500 us per MB on the
// VM this project is measured on, ~26 ms for the [N,4H] gates of T100 B64
// H512. Keeping one grow-only buffer per role and calling thread makes those
// pages warm. Buffers above kMaxScratchBytes are not kept, so a one-off huge
// call does not pin its memory for the life of the thread.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

namespace lstm_ext::cpu {

enum class ScratchRole { kGates = 0, kGradGates = 1, kPrevState = 2 };

// An uninitialised contiguous tensor of `sizes` with `options`, backed by
// this thread's buffer for `role`: valid until the next call with the same
// role on this thread, so it must not be returned or saved.
at::Tensor scratch(ScratchRole role, at::IntArrayRef sizes, const at::TensorOptions& options);

}  // namespace lstm_ext::cpu
