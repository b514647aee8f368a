// Persistent GRU kernels: the scheme of persistent.h (one cooperative launch
// per layer-direction, W_hh slice resident in shared memory, one grid barrier
// per step, SIMT fp32 products), for torch.nn.GRU's cell (gru_kernels.h):
//   r = sigmoid(gi_r + b_ir + gh_r + b_hr),  z = sigmoid(gi_z + b_iz + gh_z + b_hz),
//   hn = gh_n + b_hn,  n = tanh(gi_n + b_in + r hn),  h_t = (1 - z) n + z h_{t-1},
// with gh = h_{t-1} W_hh^T. EXPERIMENTAL: never run on a GPU yet, so the
// binding takes it only when LSTM_EXT_CUDA_PATH=persistent forces it.
//
// Work split (as the LSTM's): block b owns hidden units [b*U, b*U + U), i.e.
// the 3U rows of W_hh [3H,H] that compute its units' r, z, n (forward) and the
// 3H x U column slice of W_hh (backward). The forward keeps no state of its
// own: h_{t-1} of every row is staged from the double buffer h_buffers, and a
// unit reads its own h_{t-1} from the staged tile. The backward keeps each
// unit's gradient at h in shared memory across steps.
//
// Letters as in persistent.h (T steps, B rows of the widest step, H hidden
// units, N rows of all steps, `offsets` [T+1] or null for dense input), and
// the layouts of the standard path (gru_kernels.h): gi [N,3H] columns r, z, n;
// saved gates [N,4H] per row r, z, n, hn (hn = gh_n + b_hn) in Compute<T>;
// gate gradients grad_gates [N,4H] per row [dr, dz, d(hn), dn] in T (columns
// [0,3H) are d(gh), the recurrent operand the blocks exchange between steps
// and grad W_hh's afterwards; [0,2H) + [3H,4H) are d(gi)).
//
// h_n (forward) and grad_h0 (backward) hold each packed sequence's state at
// its own last step (rows a step does not reach keep theirs), in both
// directions, as the standard path.
//
// Plan: plan_persistent(..., kGruGates) (persistent.h); the same plan must be
// passed to the launcher and to persistent_gru_fits.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "cuda/kernels.h"
#include "cuda/persistent.h"

namespace lstm_ext::cuda {

// GRU forward over all steps. Reads gi [N,3H] (x W_ih^T of every step, no
// bias, T), b_ih [3H] and b_hh [3H] (Compute<T>, each may be null: zero),
// w_hh [3H,H] and h0 [B,H] (T). Writes y [N,H] and h_n [B,H] (T), and when
// gates is non-null the saved activations [N,4H] (Compute<T>). h_buffers
// [2,B,H] (T) is scratch: the double-buffered h_t that the blocks exchange.
// No argument may alias another; everything is owned by the caller.
template <typename T>
struct PersistentGruForward {
  int64_t T_steps, B, H;
  bool reverse;
  const int64_t* offsets;  // [T+1] device, or null for dense input
  const T* gi;
  const Compute<T>* b_ih;
  const Compute<T>* b_hh;
  const T* w_hh;
  const T* h0;
  T* y;
  T* h_n;
  Compute<T>* gates;
  T* h_buffers;
};

// GRU backward over all steps, for a forward that saved gates [N,4H]
// (Compute<T>) and wrote y [N,H]. Reads y and h0 [B,H] (T: h_{t-1} of each
// row is the forward's previous step's y, else h0), w_hh [3H,H], grad_y [N,H]
// (or null: zero) and grad_h_n [B,H] (or null: zero). Writes grad_gates
// [N,4H] (T, [dr, dz, d(hn), dn] per row; the blocks exchange its first 3H
// columns between steps, and the weight-gradient GEMMs read it afterwards)
// and grad_h0 [B,H] (T). No output may alias an input.
template <typename T>
struct PersistentGruBackward {
  int64_t T_steps, B, H;
  bool reverse;
  const int64_t* offsets;  // [T+1] device, or null for dense input
  const Compute<T>* gates;
  const T* y;
  const T* h0;
  const T* w_hh;
  const T* grad_y;
  const T* grad_h_n;
  T* grad_gates;
  T* grad_h0;
};

// One cooperative launch on `stream` with `plan` (plan_persistent(...,
// kGruGates), which must fit). Returns the launch's error code (cudaSuccess
// when queued).
template <typename T>
cudaError_t persistent_gru_forward(const PersistentGruForward<T>& a, const PersistentPlan& plan,
                                   cudaStream_t stream);
template <typename T>
cudaError_t persistent_gru_backward(const PersistentGruBackward<T>& a,
                                    const PersistentPlan& plan, cudaStream_t stream);

// Whether all plan.blocks blocks of the GRU kernel (forward or backward) with
// plan.smem_bytes can be resident at once on the current device's `sms`
// multiprocessors (a cooperative launch needs it).
template <typename T>
cudaError_t persistent_gru_fits(const PersistentPlan& plan, bool backward, int sms, bool* fits);

}  // namespace lstm_ext::cuda
