// Tensor-core persistent LSTM kernels: ONE cooperative launch runs every time
// step of a layer-direction, forward or backward, with the recurrent product
// on the tensor cores (mma.sync). Torch-free: raw device pointers, int64
// sizes, an explicit stream. EXPERIMENTAL: written and compiled, never run on
// a GPU yet, so the binding takes this path only when LSTM_EXT_CUDA_PATH=
// tensorcore asks for it (never under "auto").
//
// Why: the SIMT persistent kernels (persistent.h) keep W_hh on chip but
// multiply on the CUDA cores in fp32, which at H = 1024 costs more per step
// than the tensor cores need for the whole step. Here each block keeps its
// W_hh slice in shared memory in the storage dtype and runs the recurrent
// product as m16n8k16 (bf16 / fp16) or m16n8k8 (tf32) MMAs, with the batch as
// the MMA's N (forward) or M (backward).
//
// Layout and planning: tensorcore_plan.h (plan_tensorcore, TensorCorePlan),
// which documents the work split, the shared-memory regions and their sizes.
//
// Per forward step, in each block: h_{t-1} rows are staged from global memory
// (L2, written by every block in the previous step) into shared memory with
// cp.async.cg, in tiles of plan.layout.tile_rows rows x kchunk columns; the 8
// warps compute the block's 4U x rows gate pre-activations with MMAs against
// the resident W_hh rows (fp32 accumulation); the fused cell update adds the
// input projection and the bias, updates c (fp32, shared memory), writes h_t
// (y and the exchange buffer) and the saved activations; then one grid-wide
// barrier (cooperative_groups grid sync) publishes h_t to the next step.
// Before the barrier each block asks L2 for the next step's projection of its
// units (backward: gates and cells), which does not depend on the barrier.
//
// Per backward step: dh for the block's U units is the previous visited
// step's dgates rows (staged the same way) times the resident W_hh columns
// (dh_{t-1} = dgates W_hh); the fused gate-gradient update writes dgates
// [N,4H] (which the next step stages, and which the binding's weight-gradient
// GEMMs read after the loop, so those stay large GEMMs) and keeps dh, dc in
// fp32 shared memory; one grid barrier per step.
//
// Arguments: the same structs as the SIMT persistent kernels,
// PersistentForward<T> / PersistentBackward<T> (persistent.h): letters
// T steps, B rows of the widest step, H hidden units, N rows of all steps;
// offsets [T+1] (device, int64) for packed input or null for dense (step t at
// row t*B); `reverse`; saved gates [N,4H] / cells [N,H] in Compute<T>;
// h_buffers [2,B,H] scratch. No argument may alias another; nothing is owned
// or freed here. No projection (proj_size).
//
// Precision: the recurrent product reads h_{t-1} (forward) and dgates
// (backward) in the storage dtype, as cuDNN and the standard path do, and
// accumulates in fp32; for float32 both operands are rounded to TF32 (the
// binding only takes this path for float32 when torch's cuDNN RNN setting
// allows TF32). The cell state, the gate arithmetic and dh / dc are fp32.
// Sums over K are split across warps and added in a fixed order, so repeated
// runs give identical bits.
//
// Devices: compute capability 8.0 or later (mma.sync bf16 / tf32, cp.async);
// the binding refuses older ones before any launch.
#pragma once

#include <cuda_runtime_api.h>

#include "cuda/persistent.h"
#include "cuda/tensorcore_plan.h"

namespace lstm_ext::cuda {

// One cooperative launch of plan.blocks blocks x kTensorCoreThreads threads
// with plan.smem_bytes of dynamic shared memory on `stream`; `plan` must fit
// (plan.fits, and tensorcore_lstm_fits said so). Returns the launch's error
// code (cudaSuccess when queued). T: float, __half or __nv_bfloat16.
template <typename T>
cudaError_t tensorcore_lstm_forward(const PersistentForward<T>& a, const TensorCorePlan& plan,
                                    cudaStream_t stream);
template <typename T>
cudaError_t tensorcore_lstm_backward(const PersistentBackward<T>& a, const TensorCorePlan& plan,
                                     cudaStream_t stream);

// Whether plan.blocks blocks of the forward (or backward) kernel with
// plan.smem_bytes can all be resident at once on the current device, which
// has `sms` multiprocessors (a cooperative launch needs it); also raises the
// kernel's dynamic shared memory limit to plan.smem_limit.
template <typename T>
cudaError_t tensorcore_lstm_fits(const TensorCorePlan& plan, bool backward, int sms, bool* fits);

}  // namespace lstm_ext::cuda
