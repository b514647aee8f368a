// Per-thread, grow-only memory for packed weights, reused across op calls.
//
// Fresh pages are expensive: on the 2-core VM this project is measured on, a
// first touch costs ~2 us per 4 KB page (~500 us per MB, measured), more
// than packing the weights and, at B=1 H=256, more than the whole time loop.
// Reusing the same pages call after call keeps packing a cache-speed copy.
// Each calling thread owns its buffers, so concurrent calls from several
// threads never share one; a buffer only grows to the largest packed weight
// this thread has used in its slot.
#pragma once

#include <cstddef>
#include <cstdint>

#include "cpu/fused/kernels.h"

namespace lstm_ext::cpu::fused {

// Which of a thread's buffers; one op call uses each at most once at a time.
enum class Slot { kRecurrent = 0, kProjection = 1, kInput = 2 };
constexpr int kSlots = 3;

// 64-byte aligned space for `floats` floats, valid until the next call with
// the same slot on the same thread. Contents are unspecified.
float* workspace(Slot slot, size_t floats);

// w packed (packing.h) for kernels k, into this thread's `slot`; `gates`
// counts kGates' gates (4 for the LSTM, 3 for the GRU).
Panels pack_weights(const Kernels& k, Slot slot, PackKind kind, const float* w, int64_t N,
                    int64_t K, int gates = kVectors);

// bf16 w packed as k pairs (packing_bf16.h) for the bf16 kernels k.
PairPanels pack_weights(const Bf16Kernels& k, Slot slot, PackKind kind, const Bf16* w, int64_t N,
                        int64_t K, int gates = kVectors);

}  // namespace lstm_ext::cpu::fused
