// Which CUDA path an LSTM layer-direction takes: the standard one (a cuBLAS
// GEMM and a fused kernel per step), the persistent kernel (one cooperative
// launch for the whole sequence, W_hh resident in shared memory, fp32 SIMT
// arithmetic), or the tensor-core persistent kernel (the same, with the
// recurrent product on the tensor cores: csrc/cuda/tensorcore.h).
//
// LSTM_EXT_CUDA_PATH chooses: "auto" (default), "standard", "persistent" or
// "tensorcore".
// auto takes the persistent path when
//   - the dtype is float32, float16 or bfloat16 (float64: standard),
//   - there is no projection (proj_size),
//   - the batch (rows of the widest step) is at most kPersistentMaxBatch, where
//     the per-step launches and the re-reading of W_hh dominate the standard path,
//   - and the plan fits this device: the W_hh slice and a row tile of at
//     least min(B, 4) rows per block in shared memory, all blocks resident at
//     once, cooperative launches supported.
// "persistent" forces it (a tile of one row suffices) and raises when the
// configuration cannot run it. Either way an empty batch, and packed input
// while the current stream is capturing a CUDA graph (its per-call offsets
// copy cannot be replayed), take the standard path.
// "tensorcore" is experimental (it has not run on a GPU yet), so auto never
// takes it; when asked for, it runs float16, bfloat16, and float32 as TF32
// (only while torch's cuDNN RNN setting allows TF32: rnn_gemm_precision),
// on compute capability 8.0 or later, without a projection, when the plan
// (cuda/tensorcore_plan.h) fits and its blocks can all be resident; anything
// else raises, before any kernel runs. Empty batches and packed input during
// a CUDA graph capture take the standard path, as above.
// torch.ops.lstm_ext.cuda_lstm_path reports the choice (lstm_ext.cuda_path).
#pragma once

#include <c10/core/ScalarType.h>

#include <cstdint>
#include <string>

#include "cuda/persistent.h"
#include "cuda/tensorcore_plan.h"

namespace lstm_ext::cuda_binding {

constexpr int64_t kPersistentMaxBatch = 16;

struct LstmPath {
  bool persistent = false;        // the SIMT persistent kernel, with `plan`
  bool tensorcore = false;        // the tensor-core persistent kernel, with `tc_plan`
  cuda::PersistentPlan plan;
  cuda::TensorCorePlan tc_plan;
  std::string description;  // "persistent (...)", "tensorcore (...)" or "standard (why)"
};

// The path of one forward (backward = false) or backward call on CUDA device
// `device`. Raises for an invalid LSTM_EXT_CUDA_PATH, or when "persistent" or
// "tensorcore" is forced for a configuration that cannot run it.
LstmPath choose_lstm_path(int64_t batch, int64_t hidden, at::ScalarType dtype, bool projected,
                          bool packed, bool backward, int device);

}  // namespace lstm_ext::cuda_binding
