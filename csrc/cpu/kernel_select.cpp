#include "cpu/kernel_select.h"

#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cstdlib>

#include "message.h"

namespace lstm_ext::cpu {
namespace {

bool cpu_supports(const std::string& name) {
#if defined(__x86_64__) || defined(__i386__)
  if (name == "avx512") return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq");
  if (name == "avx2") return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  if (name == "avx512bf16")
    return cpu_supports("avx512") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bf16");
#else
  if (name == "avx512" || name == "avx2" || name == "avx512bf16") return false;
#endif
  return true;
}

struct Candidate {
  const char* name;
  const fused::Kernels* (*table)();
};
constexpr Candidate kCandidates[] = {
    {"avx512", &fused::avx512_kernels},
    {"avx2", &fused::avx2_kernels},
    {"generic", &fused::generic_kernels},
};

const fused::Kernels* usable(const Candidate& c) {
  const fused::Kernels* k = c.table();
  return k != nullptr && cpu_supports(c.name) ? k : nullptr;
}

// The best float32 kernels usable here, or null (then the reference loops).
const fused::Kernels* best_float() {
  for (const auto& c : kCandidates)
    if (const auto* k = usable(c)) return k;
  return nullptr;
}

constexpr const char* kBf16Name = "avx512bf16";

const fused::Bf16Kernels* usable_bf16() {
  const fused::Bf16Kernels* k = fused::avx512bf16_kernels();
  return k != nullptr && cpu_supports(kBf16Name) ? k : nullptr;
}

std::string joined(const std::vector<std::string>& names) {
  std::string s;
  for (const auto& n : names) s += (s.empty() ? "" : ", ") + n;
  return s;
}

// Below this many multiply-adds per step, one thread's share would take
// about as long as the barrier that a second thread adds (~0.1 us).
constexpr int64_t kMinMacsPerStepForThreads = 8192;

}  // namespace

std::vector<std::string> available_cpu_kernels() {
  std::vector<std::string> names;
  if (usable_bf16()) names.emplace_back(kBf16Name);
  for (const auto& c : kCandidates)
    if (usable(c)) names.emplace_back(c.name);
  names.emplace_back("reference");
  return names;
}

CpuKernels select_cpu_kernels() {
  const char* env = std::getenv("LSTM_EXT_CPU_KERNEL");
  const std::string want = env ? env : "";
  if (want.empty() || want == "auto") return {best_float(), usable_bf16()};
  if (want == "reference") return {nullptr, nullptr};
  const bool bf16 = want == kBf16Name;
  const fused::Kernels* named = nullptr;
  bool known = bf16;
  for (const auto& c : kCandidates) {
    if (want != c.name) continue;
    named = usable(c);
    known = true;
  }
  LSTM_EXT_CHECK(known, "LSTM_EXT_CPU_KERNEL=", want, ": expected one of auto, ",
                 joined(available_cpu_kernels()));
  LSTM_EXT_CHECK(bf16 ? usable_bf16() != nullptr : named != nullptr, "LSTM_EXT_CPU_KERNEL=", want,
                 ": this kernel is not available here (available: ",
                 joined(available_cpu_kernels()), ")");
  // avx512bf16 asks for the native bfloat16 path and leaves float32 on its
  // default; a float32 kernel's name keeps bfloat16 on the upcast path.
  return bf16 ? CpuKernels{best_float(), usable_bf16()} : CpuKernels{named, nullptr};
}

int loop_threads(int64_t macs_per_step) {
  if (macs_per_step < kMinMacsPerStepForThreads) return 1;
  return at::get_num_threads();
}

}  // namespace lstm_ext::cpu

TORCH_LIBRARY_IMPL(lstm_ext, CompositeImplicitAutograd, m) {
  m.impl("cpu_kernels", [] {
    const auto names = lstm_ext::cpu::available_cpu_kernels();
    return std::vector<std::string>(names.begin(), names.end());
  });
}
