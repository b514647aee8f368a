#include "cuda_binding/lstm_path.h"

#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGuard.h>
#include <cuda_runtime_api.h>
#include <torch/library.h>

#include <cstdlib>
#include <mutex>
#include <vector>

#include "cuda/persistent_gru.h"
#include "cuda/tensorcore.h"
#include "cuda_binding/cuda_tensors.h"
#include "cuda_binding/gemm.h"
#include "message.h"

namespace lstm_ext::cuda_binding {
namespace {

struct DeviceLimits {
  int sms = 0;
  size_t smem_optin = 0;
  bool cooperative = false;
  int major = 0, minor = 0;  // compute capability
};

DeviceLimits limits_of(int device) {
  static std::mutex mutex;
  static std::vector<DeviceLimits> cache;
  std::lock_guard<std::mutex> lock(mutex);
  if (cache.size() <= static_cast<size_t>(device)) cache.resize(device + 1);
  DeviceLimits& l = cache[device];
  if (l.sms == 0) {
    int smem = 0, cooperative = 0;
    C10_CUDA_CHECK(cudaDeviceGetAttribute(&l.sms, cudaDevAttrMultiProcessorCount, device));
    C10_CUDA_CHECK(cudaDeviceGetAttribute(&smem, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
    C10_CUDA_CHECK(cudaDeviceGetAttribute(&cooperative, cudaDevAttrCooperativeLaunch, device));
    C10_CUDA_CHECK(cudaDeviceGetAttribute(&l.major, cudaDevAttrComputeCapabilityMajor, device));
    C10_CUDA_CHECK(cudaDeviceGetAttribute(&l.minor, cudaDevAttrComputeCapabilityMinor, device));
    l.smem_optin = static_cast<size_t>(smem);
    l.cooperative = cooperative != 0;
  }
  return l;
}

enum class Choice { kAuto, kStandard, kPersistent, kTensorCore };

Choice requested_path() {
  const char* env = std::getenv("LSTM_EXT_CUDA_PATH");
  const std::string v = env ? env : "";
  if (v.empty() || v == "auto") return Choice::kAuto;
  if (v == "standard") return Choice::kStandard;
  if (v == "persistent") return Choice::kPersistent;
  if (v == "tensorcore") return Choice::kTensorCore;
  LSTM_EXT_CHECK(false, "LSTM_EXT_CUDA_PATH: expected auto, standard, persistent or tensorcore ",
                 "(experimental), got '", v, "'");
}

const char* cell_name(PathCell cell) { return cell == PathCell::kGru ? "GRU" : "LSTM"; }

// The residency query of each persistent kernel, by its plan type and cell.
template <typename T>
cudaError_t kernel_fits(const cuda::PersistentPlan& plan, PathCell cell, bool backward, int sms,
                        bool* fits) {
  return cell == PathCell::kGru ? cuda::persistent_gru_fits<T>(plan, backward, sms, fits)
                                : cuda::persistent_lstm_fits<T>(plan, backward, sms, fits);
}
template <typename T>
cudaError_t kernel_fits(const cuda::TensorCorePlan& plan, PathCell /*LSTM only*/, bool backward,
                        int sms, bool* fits) {
  return cuda::tensorcore_lstm_fits<T>(plan, backward, sms, fits);
}

// Whether every block of the plan can be resident at once (cooperative launch).
template <typename Plan>
bool all_blocks_resident(const Plan& plan, PathCell cell, at::ScalarType dtype, bool backward,
                         int device, int sms) {
  const c10::cuda::CUDAGuard guard(static_cast<c10::DeviceIndex>(device));
  bool fits = false;
  cudaError_t err = cudaSuccess;
  dispatch_persistent(dtype, "cuda_lstm_path", [&](auto tag) {
    using T = typename decltype(tag)::type;
    err = kernel_fits<T>(plan, cell, backward, sms, &fits);
  });
  C10_CUDA_CHECK(err);
  return fits;
}

CudaPath standard(const std::string& why) {
  CudaPath p;
  p.description = "standard (" + why + ")";
  return p;
}

bool capturing(int device) {
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  C10_CUDA_CHECK(cudaStreamIsCapturing(
      c10::cuda::getCurrentCUDAStream(static_cast<c10::DeviceIndex>(device)), &status));
  return status != cudaStreamCaptureStatusNone;
}

std::string kib(size_t bytes) { return std::to_string((bytes + 1023) / 1024) + " KiB"; }

// LSTM_EXT_CUDA_PATH=tensorcore: the tensor-core kernel, or an error saying
// why not (never a silent fallback: whoever asks for an experimental kernel
// wants to know when it does not run).
CudaPath tensorcore_path(int64_t batch, int64_t hidden, at::ScalarType dtype, bool projected,
                         bool backward, int device) {
  auto refuse = [&](const std::string& why) {
    LSTM_EXT_CHECK(false,
                   "LSTM_EXT_CUDA_PATH=tensorcore: this LSTM cannot run the tensor-core kernel: ",
                   why, " (batch ", batch, ", hidden ", hidden, ", dtype ", dtype,
                   projected ? ", with proj_size" : "", backward ? ", backward" : ", forward",
                   ")");
  };
  if (dtype != at::kFloat && dtype != at::kHalf && dtype != at::kBFloat16) {
    refuse("it has no float64 kernel (LSTM_EXT_CUDA_PATH=standard computes float64)");
  }
  if (projected) refuse("proj_size runs the standard path");
  // float32 on the tensor cores is TF32; strict float32 (allow_tf32 = False)
  // must not silently lose precision.
  if (dtype == at::kFloat && !rnn_gemm_precision(dtype).tf32) {
    refuse("float32 runs on the tensor cores only as TF32, which torch's cuDNN RNN setting "
           "forbids (torch.backends.cudnn.allow_tf32 = False); LSTM_EXT_CUDA_PATH=persistent "
           "computes strict float32");
  }
  const DeviceLimits l = limits_of(device);
  if (l.major < 8) {
    refuse("it needs compute capability 8.0 or later (mma.sync bf16 / tf32, cp.async); this "
           "device has " + std::to_string(l.major) + "." + std::to_string(l.minor));
  }
  if (!l.cooperative) refuse("the device does not support cooperative launches");
  CudaPath p;
  p.tc_plan = cuda::plan_tensorcore(batch, hidden, static_cast<int>(c10::elementSize(dtype)),
                                    l.sms, l.smem_optin, backward);
  if (!p.tc_plan.fits) refuse(p.tc_plan.why_not);
  if (!all_blocks_resident(p.tc_plan, PathCell::kLstm, dtype, backward, device, l.sms)) {
    refuse("its blocks cannot all be resident at once on this device");
  }
  const cuda::TensorCoreLayout& t = p.tc_plan.layout;
  p.tensorcore = true;
  p.description = "tensorcore (" + std::to_string(p.tc_plan.blocks) + " blocks x " +
                  std::to_string(t.units) + " units, " +
                  (dtype == at::kFloat ? "tf32 m16n8k8" : "m16n8k16") + ", " +
                  std::to_string(t.tile_rows) + " rows per tile, " + std::to_string(t.chunks) +
                  (t.chunks == 1 ? " K chunk" : " K chunks") + ", K split " +
                  std::to_string(t.ksplit) + ", " + kib(p.tc_plan.smem_bytes) +
                  " shared memory)";
  return p;
}

}  // namespace

CudaPath choose_cuda_path(PathCell cell, int64_t batch, int64_t hidden, at::ScalarType dtype,
                          bool projected, bool packed, bool backward, int device) {
  const Choice choice = requested_path();
  const bool gru = cell == PathCell::kGru;
  LSTM_EXT_CHECK(!(gru && choice == Choice::kTensorCore),
                 "LSTM_EXT_CUDA_PATH=tensorcore: there is no tensor-core GRU kernel (only the LSTM "
                 "has one); a GRU takes LSTM_EXT_CUDA_PATH=auto, standard or persistent");
  const bool forced = choice == Choice::kPersistent;
  if (batch == 0) return standard("empty batch");
  if (packed && capturing(device)) return standard("packed input during CUDA graph capture");
  auto refuse = [&](const std::string& why) {
    LSTM_EXT_CHECK(!forced, "LSTM_EXT_CUDA_PATH=persistent: this ", cell_name(cell),
                   " cannot run the persistent kernel: ", why, " (batch ", batch, ", hidden ",
                   hidden, ", dtype ", dtype, projected ? ", with proj_size" : "", ")");
    return standard(why);
  };
  if (choice == Choice::kStandard) return standard("LSTM_EXT_CUDA_PATH=standard");
  if (choice == Choice::kTensorCore) {
    return tensorcore_path(batch, hidden, dtype, projected, backward, device);
  }
  // Until the persistent GRU kernel has run on a GPU, only a forced path takes it.
  if (gru && !forced) return standard("persistent GRU kernel not yet verified on a GPU");
  if (dtype != at::kFloat && dtype != at::kHalf && dtype != at::kBFloat16) {
    return refuse("float64 runs the standard path");
  }
  if (projected) return refuse("proj_size runs the standard path");
  if (!forced && batch > kPersistentMaxBatch) {
    return standard("batch " + std::to_string(batch) + " > " + std::to_string(kPersistentMaxBatch));
  }
  const DeviceLimits l = limits_of(device);
  if (!l.cooperative) return refuse("the device does not support cooperative launches");
  CudaPath p;
  p.plan = cuda::plan_persistent(batch, hidden, c10::elementSize(dtype), l.sms, l.smem_optin,
                                 backward, gru ? cuda::kGruGates : cuda::kLstmGates);
  if (!p.plan.fits) return refuse(p.plan.why_not);
  // Fewer rows per tile than a warp's row group re-reads the W_hh slice per row.
  const int64_t min_tile = batch < 4 ? batch : 4;
  if (!forced && p.plan.tile_rows < min_tile) {
    return standard("only " + std::to_string(p.plan.tile_rows) + " rows per tile fit next to W_hh");
  }
  if (!all_blocks_resident(p.plan, cell, dtype, backward, device, l.sms)) {
    return refuse("its blocks cannot all be resident at once on this device");
  }
  p.persistent = true;
  p.description = "persistent (" + std::to_string(p.plan.blocks) + " blocks x " +
                  std::to_string(p.plan.units) + " units, " + std::to_string(p.plan.tile_rows) +
                  " rows per tile, " + std::to_string(p.plan.smem_bytes / 1024) +
                  " KiB shared memory)";
  return p;
}

TORCH_LIBRARY_IMPL(lstm_ext, CompositeImplicitAutograd, m) {
  m.impl("cuda_lstm_path", [](int64_t batch, int64_t hidden, at::ScalarType dtype, bool projected,
                              bool backward, int64_t device, c10::string_view cell) {
    LSTM_EXT_CHECK(cell == "lstm" || cell == "gru",
                   "cuda_lstm_path: cell must be 'lstm' or 'gru', got '", std::string(cell), "'");
    const int index = device >= 0 ? static_cast<int>(device) : c10::cuda::current_device();
    return choose_cuda_path(cell == "gru" ? PathCell::kGru : PathCell::kLstm, batch, hidden,
                            dtype, projected, /*packed=*/false, backward, index)
        .description;
  });
}

}  // namespace lstm_ext::cuda_binding
