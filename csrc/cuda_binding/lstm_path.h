// Which CUDA path an LSTM or GRU layer-direction takes: the standard one (a
// cuBLAS GEMM and a fused kernel per step), the persistent kernel (one
// cooperative launch for the whole sequence, W_hh resident in shared memory,
// fp32 SIMT arithmetic: cuda/persistent.h, cuda/persistent_gru.h), or, for
// the LSTM, the tensor-core persistent kernel (the same, with the recurrent
// product on the tensor cores: csrc/cuda/tensorcore.h). One rule and one
// variable for both cells; the vanilla RNN always takes the standard path.
//
// LSTM_EXT_CUDA_PATH chooses: "auto" (default), "standard", "persistent" or
// "tensorcore".
// auto takes the persistent path for an LSTM when
//   - the dtype is float32, float16 or bfloat16 (float64: standard),
//   - there is no projection (proj_size),
//   - the batch (rows of the widest step) is at most kPersistentMaxBatch, where
//     the per-step launches and the re-reading of W_hh dominate the standard path,
//   - and the plan fits this device: the W_hh slice and a row tile of at
//     least min(B, 4) rows per block in shared memory, all blocks resident at
//     once, cooperative launches supported.
// auto never takes it for a GRU: the persistent GRU kernel has not run on a
// GPU yet (the description says so), so GRUs run the standard path unless
// forced.
// "persistent" forces it, for either cell (a tile of one row suffices), and
// raises when the configuration cannot run it. Either way an empty batch,
// and packed input while the current stream is capturing a CUDA graph (its
// per-call offsets copy cannot be replayed), take the standard path.
// "tensorcore" is experimental (it has not run on a GPU yet), so auto never
// takes it; when asked for, it runs float16, bfloat16, and float32 as TF32
// (only while torch's cuDNN RNN setting allows it: rnn_gemm_precision),
// on compute capability 8.0 or later, without a projection, when the plan
// (cuda/tensorcore_plan.h) fits and its blocks can all be resident; anything
// else raises, before any kernel runs. Empty batches and packed input during
// a CUDA graph capture take the standard path, as above. There is no
// tensor-core GRU kernel: "tensorcore" raises for every GRU call.
// torch.ops.lstm_ext.cuda_lstm_path reports the choice (lstm_ext.cuda_path).
#pragma once

#include <c10/core/ScalarType.h>

#include <cstdint>
#include <string>

#include "cuda/persistent.h"
#include "cuda/tensorcore_plan.h"

namespace lstm_ext::cuda_binding {

constexpr int64_t kPersistentMaxBatch = 16;

// The cells with a persistent kernel.
enum class PathCell { kLstm, kGru };

struct CudaPath {
  bool persistent = false;        // the SIMT persistent kernel of the cell, with `plan`
  bool tensorcore = false;        // the tensor-core persistent kernel (LSTM only), with `tc_plan`
  cuda::PersistentPlan plan;
  cuda::TensorCorePlan tc_plan;
  std::string description;  // "persistent (...)", "tensorcore (...)" or "standard (why)"
};

// The path of one forward (backward = false) or backward call of `cell` on
// CUDA device `device`. Raises for an invalid LSTM_EXT_CUDA_PATH, when
// "persistent" or "tensorcore" is forced for a configuration that cannot run
// it, and for "tensorcore" with a GRU. `projected` (proj_size) is LSTM only.
CudaPath choose_cuda_path(PathCell cell, int64_t batch, int64_t hidden, at::ScalarType dtype,
                          bool projected, bool packed, bool backward, int device);

}  // namespace lstm_ext::cuda_binding
