// The elementwise CUDA kernels of the GRU time loop. Torch-free: raw device
// pointers, int64 sizes, an explicit stream; same conventions as kernels.h
// (each launcher enqueues exactly ONE kernel on `stream`, or none when there
// is nothing to do, and returns without synchronising; the binding checks the
// launch and owns the GEMMs around it).
//
// torch.nn.GRU, gates r, z, n in weight order:
//   gi = x_t W_ih^T + b_ih,  gh = h_{t-1} W_hh^T + b_hh,  hn = gh_n,
//   r = sigmoid(gi_r + gh_r),  z = sigmoid(gi_z + gh_z),
//   n = tanh(gi_n + r hn),     h_t = (1 - z) n + z h_{t-1}.
// r multiplies hn, which includes b_hn, so the biases cannot all be folded
// into one vector as the LSTM's are: both come in, and the kernel adds them.
//
// Types: T the storage dtype (float, double, __half, __nv_bfloat16), C =
// Compute<T> (float for the 16-bit types). The saved activations are C;
// everything a GEMM reads or writes (gi, gh, h, the gate gradients, the
// gradient at h) is T.
//
// Letters: `rows` the live rows of this step (always the first rows of the
// [B,.] state buffers), H hidden units, 3H the gate columns r, z, n of gi / gh
// (each H wide), 4H the saved columns r, z, n, hn. "[rows,3H]" means rows
// rows of 3H contiguous elements, row stride 3H. Every pointer is to device
// memory of the launching device; nothing is owned or freed here.
#pragma once

#include <cstdint>

#include "cuda/kernels.h"

namespace lstm_ext::cuda {

// One GRU step forward (the formulas above).
//
// Aliasing: h_state may be exactly h_prev (the same pointer), which lets the
// binding update its full-batch state buffer in place: thread e reads
// h_prev[e] and then writes h_state[e], and no thread touches another's
// element of either. Nothing else may overlap: the [rows,3H] gi / gh rows are
// read by all H threads of a row, so a write of h_out, h_state or gates into
// them would race.
template <typename T>
struct GruStepForward {
  int64_t rows, H;
  const T* gi;              // [rows,3H] x_t W_ih^T of this step, no bias
  const T* gh;              // [rows,3H] h_{t-1} W_hh^T, no bias
  const Compute<T>* b_ih;   // [3H] or null (zero)
  const Compute<T>* b_hh;   // [3H] or null (zero)
  const T* h_prev;          // [rows,H] h_{t-1}
  T* h_out;                 // [rows,H] h_t (this step's rows of y)
  T* h_state;               // [rows,H] second copy of h_t (next step's GEMM input), or null
  Compute<T>* gates;        // [rows,4H] saved r, z, n, hn (hn = gh_n + b_hn), or null (inference)
};
template <typename T>
void gru_step_forward(const GruStepForward<T>& a, cudaStream_t stream);

// One GRU step backward, for the step the forward computed with `gates`:
//   dh    = grad_h + grad_y (grad_y optional),
//   dn    = dh (1 - z) (1 - n^2)          d(gi_n)
//   dz    = dh (h_{t-1} - n) z (1 - z)    d(gi_z) = d(gh_z)
//   d(hn) = dn r                          d(gh_n)
//   dr    = dn hn r (1 - r)               d(gi_r) = d(gh_r)
// written as grad_gates rows [dr, dz, d(hn), dn] (the contract's layout:
// columns [0,3H) are d(gh), the recurrent GEMM's and grad W_hh's operand at
// row stride 4H; columns [0,2H) + [3H,4H) are d(gi)). grad_h is overwritten
// in place with the direct part of the gradient at h_{t-1}, dh z; the binding
// then adds grad_gates[:, :3H] W_hh into it with one accumulating GEMM.
//
// h_{t-1} of row r is h_prev[r] for r < rows_continuing (the previously
// visited step's output), else h0[r] (packed, reverse: sequences that start
// at this step).
//
// Aliasing: grad_h is read and written per element by one thread (in place);
// grad_gates must not overlap any other argument.
template <typename T>
struct GruStepBackward {
  int64_t rows, H, rows_continuing;
  const Compute<T>* gates;  // [rows,4H] r, z, n, hn saved by the forward
  const T* h_prev;          // [rows_continuing,H] h_{t-1}, or null when rows_continuing == 0
  const T* h0;              // [rows,H] initial state (read for rows >= rows_continuing)
  const T* grad_y;          // [rows,H] gradient of this step's output, or null
  T* grad_h;                // [rows,H] in: gradient at h_t from later steps; out: dh z
  T* grad_gates;            // [rows,4H] out: dr, dz, d(hn), dn
};
template <typename T>
void gru_step_backward(const GruStepBackward<T>& a, cudaStream_t stream);

}  // namespace lstm_ext::cuda
