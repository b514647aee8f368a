#include "cpu/scratch.h"

namespace lstm_ext::cpu {
namespace {

constexpr int64_t kMaxScratchBytes = int64_t(256) << 20;
constexpr int kRoles = 3;

}  // namespace

at::Tensor scratch(ScratchRole role, at::IntArrayRef sizes, const at::TensorOptions& options) {
  thread_local at::Tensor buffers[kRoles];
  int64_t numel = 1;
  for (const int64_t s : sizes) numel *= s;
  const int64_t bytes = numel * int64_t(c10::elementSize(options.dtype().toScalarType()));
  if (bytes > kMaxScratchBytes) return at::empty(sizes, options);
  at::Tensor& buf = buffers[static_cast<int>(role)];
  // Raw bytes, so one buffer serves float and double calls alike.
  if (!buf.defined() || buf.numel() < bytes) buf = at::empty({bytes}, options.dtype(at::kByte));
  return at::from_blob(buf.data_ptr(), sizes, options.dtype());
}

}  // namespace lstm_ext::cpu
