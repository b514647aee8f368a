#include "cpu/fused/workspace.h"

#include <cstdlib>
#include <memory>
#include <new>

namespace lstm_ext::cpu::fused {
namespace {

struct FreeFloats {
  void operator()(float* p) const { std::free(p); }
};

struct Buffer {
  std::unique_ptr<float, FreeFloats> data;
  size_t floats = 0;
};

}  // namespace

float* workspace(Slot slot, size_t floats) {
  thread_local Buffer buffers[kSlots];
  Buffer& b = buffers[static_cast<int>(slot)];
  if (b.floats < floats) {
    const size_t bytes = (floats * sizeof(float) + 63) / 64 * 64;
    // Allocate before letting go of the old buffer, so a failure leaves the
    // slot as it was (still valid for the sizes it already serves).
    float* grown = static_cast<float*>(std::aligned_alloc(64, bytes));
    if (grown == nullptr) throw std::bad_alloc();
    b.data.reset(grown);
    b.floats = floats;
  }
  return b.data.get();
}

Panels pack_weights(const Kernels& k, Slot slot, PackKind kind, const float* w, int64_t N,
                    int64_t K, int gates) {
  const int V = k.vector_width;
  return Panels(kind, w, N, K, V, workspace(slot, Panels::floats(kind, N, K, V, gates)), gates);
}

PairPanels pack_weights(const Bf16Kernels& k, Slot slot, PackKind kind, const Bf16* w, int64_t N,
                        int64_t K, int gates) {
  const int V = k.vector_width;
  // A word is float-sized; the buffer is only ever used as words.
  float* memory = workspace(slot, PairPanels::words(kind, N, K, V, gates));
  return PairPanels(kind, w, N, K, V, reinterpret_cast<uint32_t*>(memory), gates);
}

}  // namespace lstm_ext::cpu::fused
