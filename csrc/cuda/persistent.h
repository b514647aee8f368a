// Persistent LSTM and GRU kernels: ONE cooperative launch runs every time
// step of a layer-direction, forward or backward. Torch-free: raw device
// pointers, int64 sizes, an explicit stream. This header holds what both
// cells share (the plan) and the LSTM's interface; persistent_gru.h has the
// GRU's.
//
// Why: at small batch a step of the standard path is one GEMM launch plus one
// elementwise launch, and W_hh is streamed from HBM every step. Here each
// block keeps its slice of W_hh in shared memory for the whole sequence and
// the blocks meet at one grid-wide barrier per step.
//
// Work split: block b owns hidden units [b*U, b*U + U) (U = plan.units), i.e.
// the gates x U rows of W_hh that compute its units (gates = kLstmGates: i, f,
// g, o; kGruGates: r, z, n) in the forward and the (gates x H) x U column
// slice in the backward. Its units' cell state (LSTM forward) and h / c
// gradients (backward) stay in shared memory across steps. Each step stages
// the rows the block multiplies (h_{t-1}, or the previous step's gate
// gradients) from global memory into shared memory in row tiles of
// plan.tile_rows, computes its units, writes them, and syncs the grid.
//
// Letters: T steps, B rows of the widest step, H hidden units, N rows of all
// steps (T*B dense). `offsets` [T+1] (device, int64) are the first rows of
// each step (StepLayout's offsets), so packed sequences work; step t has
// offsets[t+1] - offsets[t] rows. Dense input passes offsets = null (step t
// starts at row t*B), which keeps the launch free of host-to-device copies,
// so it can be captured in a CUDA graph; packed input copies its offsets per
// call, and the binding takes the standard path for it while a capture is
// under way. No projection (proj_size) on this path.
//
// Precision: the recurrent products, h_{t-1} as staged and the dh state are
// float32 here (the standard path rounds them to the storage dtype between
// its GEMMs), so float16 / bfloat16 results differ from it within rounding.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "cuda/kernels.h"

namespace lstm_ext::cuda {

// How a persistent launch is laid out, and whether it fits the device.
struct PersistentPlan {
  bool fits = false;
  int units = 0;            // U: hidden units per block
  int blocks = 0;           // ceil(H / U) <= the device's multiprocessors
  int tile_rows = 0;        // rows staged per tile
  size_t smem_bytes = 0;    // dynamic shared memory per block
  size_t smem_limit = 0;    // the device's opt-in limit: the kernels' attribute is set to it
                            // (always the same value, so concurrent callers cannot race)
  const char* why_not = ""; // when !fits: the reason, for the path report
};

constexpr int kPersistentThreads = 256;

// Recurrent gate rows per hidden unit: the `gates` argument of plan_persistent.
constexpr int kLstmGates = 4;  // i, f, g, o
constexpr int kGruGates = 3;   // r, z, n

// Shared memory: the weight slice (gates x U x H elements of `elem_bytes`),
// the per-unit state (2 x B x U floats: the LSTM's c, or dh and dc; the GRU
// uses one of the two, for dh), and tiles of staged rows in float (tile_rows x
// width, width = H forward, gates x H backward) with their partial products
// (tile_rows x gates x U floats). The largest tile that fits is chosen, up to
// B rows. `gates` is kLstmGates or kGruGates.
inline PersistentPlan plan_persistent(int64_t B, int64_t H, int64_t elem_bytes, int sms,
                                      size_t smem_optin, bool backward, int gates) {
  PersistentPlan p;
  p.smem_limit = smem_optin;
  if (B < 1 || H < 1 || sms < 1) {
    p.why_not = "empty batch or hidden size";
    return p;
  }
  p.units = static_cast<int>((H + sms - 1) / sms);
  p.blocks = static_cast<int>((H + p.units - 1) / p.units);
  const int64_t U = p.units;
  auto align = [](size_t n) { return (n + 15) / 16 * 16; };
  const size_t weights = align(static_cast<size_t>(gates * U * H * elem_bytes));
  const size_t state = align(static_cast<size_t>(2 * B * U) * sizeof(float));
  const int64_t width = backward ? gates * H : H;
  const size_t per_row = static_cast<size_t>(width + gates * U) * sizeof(float);
  if (weights + state + per_row > smem_optin) {
    p.why_not = "the W_hh slice per block does not fit in shared memory";
    return p;
  }
  const int64_t rows = static_cast<int64_t>((smem_optin - weights - state) / per_row);
  p.tile_rows = static_cast<int>(rows < B ? rows : B);
  p.smem_bytes = weights + state + align(static_cast<size_t>(p.tile_rows) * per_row);
  if (p.smem_bytes > smem_optin) {
    p.tile_rows -= 1;
    p.smem_bytes = weights + state + align(static_cast<size_t>(p.tile_rows) * per_row);
  }
  p.fits = p.tile_rows >= 1;
  if (!p.fits) p.why_not = "no row tile fits next to the W_hh slice";
  return p;
}

// LSTM forward over all steps. Reads proj [N,4H] (x W_ih^T of every step, T dtype),
// bias [4H] (Compute<T>) or null, w_hh [4H,H], h0 [B,H], c0 [B,H]
// (Compute<T>). Writes y [N,H], h_n [B,H], c_n [B,H] (Compute<T>), and when
// gates/cells are non-null the saved activations [N,4H] and c_t [N,H]
// (Compute<T>). h_buffers [2,B,H] is scratch (double-buffered h_t that the
// blocks exchange). No argument may alias another.
template <typename T>
struct PersistentForward {
  int64_t T_steps, B, H;
  bool reverse;
  const int64_t* offsets;  // [T+1] device, or null for dense input
  const T* proj;
  const Compute<T>* bias;
  const T* w_hh;
  const T* h0;
  const Compute<T>* c0;
  T* y;
  T* h_n;
  Compute<T>* c_n;
  Compute<T>* gates;
  Compute<T>* cells;
  T* h_buffers;
};

// LSTM backward over all steps, for a forward that saved gates [N,4H] and cells
// [N,H] (Compute<T>). Reads grad_y [N,H] (or null), grad_cells [N,H]
// (Compute<T>, or null), grad_h_n [B,H] (or null: zero), grad_c_n [B,H]
// (Compute<T>, or null), c0 [B,H] (Compute<T>), w_hh [4H,H]. Writes dgates
// [N,4H] (T, the pre-activation gradients, which the blocks exchange between
// steps and the weight-gradient GEMMs read afterwards), grad_h0 [B,H] and
// grad_c0 [B,H] (Compute<T>).
template <typename T>
struct PersistentBackward {
  int64_t T_steps, B, H;
  bool reverse;
  const int64_t* offsets;  // [T+1] device, or null for dense input
  const Compute<T>* gates;
  const Compute<T>* cells;
  const Compute<T>* c0;
  const T* w_hh;
  const T* grad_y;
  const Compute<T>* grad_cells;
  const T* grad_h_n;
  const Compute<T>* grad_c_n;
  T* dgates;
  T* grad_h0;
  Compute<T>* grad_c0;
};

// One cooperative launch on `stream` with `plan` (which must fit). Returns
// the launch's error code (cudaSuccess when queued).
template <typename T>
cudaError_t persistent_lstm_forward(const PersistentForward<T>& a, const PersistentPlan& plan,
                                    cudaStream_t stream);
template <typename T>
cudaError_t persistent_lstm_backward(const PersistentBackward<T>& a, const PersistentPlan& plan,
                                     cudaStream_t stream);

// Whether `blocks` blocks of this kernel with `smem_bytes` can all be resident
// at once on the current device (a cooperative launch needs it); also raises
// the kernel's dynamic shared memory limit to smem_bytes.
template <typename T>
cudaError_t persistent_lstm_fits(const PersistentPlan& plan, bool backward, int sms, bool* fits);

}  // namespace lstm_ext::cuda
