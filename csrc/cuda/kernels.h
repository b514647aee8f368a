// The elementwise CUDA kernels of the LSTM and RNN time loops. Torch-free:
// raw device pointers, int64 sizes, an explicit stream.
//
// Each launcher enqueues exactly ONE kernel on `stream` (or none when there
// is nothing to do) and returns without synchronising; the caller checks the
// launch (C10_CUDA_KERNEL_LAUNCH_CHECK in the binding). The GEMMs around them
// (input projection, recurrent product, weight gradients) are the binding's.
//
// Types: T is the storage dtype (float, double, __half, __nv_bfloat16) and
// C = Compute<T> the dtype the arithmetic runs in (float for the 16-bit
// types). The cell state, the saved activations and the cell-state gradient
// are C; everything a GEMM reads or writes is T.
//
// Letters: B rows of the widest step, `rows` the live rows of this step
// (rows <= B; live rows are always the first ones), H hidden units, 4H the
// gates i, f, g, o (torch.nn's order), each H wide. "[rows,4H]" means rows
// rows of 4H contiguous elements, row stride 4H. Every pointer is to device
// memory of the launching device; nothing is owned or freed here.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

namespace lstm_ext::cuda {

template <typename T>
struct ComputeOf {
  using type = T;
};
template <>
struct ComputeOf<__half> {
  using type = float;
};
template <>
struct ComputeOf<__nv_bfloat16> {
  using type = float;
};
template <typename T>
using Compute = typename ComputeOf<T>::type;

// One LSTM step forward: pre = proj + rec + bias for gates i, f, g, o; then
//   c_t = sigmoid(f) c_{t-1} + sigmoid(i) tanh(g),  h_t = sigmoid(o) tanh(c_t).
template <typename T>
struct LstmStepForward {
  int64_t rows, H;
  const T* proj;           // [rows,4H] x_t W_ih^T of this step
  const T* rec;            // [rows,4H] h_{t-1} W_hh^T
  const Compute<T>* bias;  // [4H] b_ih + b_hh, or null
  Compute<T>* c_state;     // [rows,H] in: c_{t-1}, out: c_t (updated in place)
  T* h_out;                // [rows,H] h_t (or o*tanh(c_t) before a projection); row stride ld_h_out
  int64_t ld_h_out;
  T* h_state;              // [rows,H] second copy of h_t (the next step's GEMM input), or null
  Compute<T>* gates;       // [rows,4H] saved activations (i, f, g, o), or null (inference)
  Compute<T>* cells;       // [rows,H] saved c_t, or null (inference)
};
// h_out and h_state must not alias proj/rec; c_state is read and written per element.
template <typename T>
void lstm_step_forward(const LstmStepForward<T>& a, cudaStream_t stream);

// One LSTM step backward, for the step the forward computed with `gates` and
// `cells`:
//   dh = grad_h + grad_y (grad_y optional), dc = grad_c + grad_cells + dh o (1 - tanh^2 c_t),
//   dgates = (dc g i(1-i), dc c_{t-1} f(1-f), dc i (1-g^2), dh tanh(c_t) o(1-o)),
//   grad_c <- dc f  (the gradient at c_{t-1}, in place).
// c_{t-1} of row r is c_prev[r] for r < rows_continuing, else c0[r] (packed,
// reverse: sequences that start at this step).
template <typename T>
struct LstmStepBackward {
  int64_t rows, H, rows_continuing;
  const Compute<T>* gates;       // [rows,4H] activations saved by the forward
  const Compute<T>* cells;       // [rows,H] c_t
  const Compute<T>* c_prev;      // [rows_continuing,H] c_{t-1}, or null when rows_continuing == 0
  const Compute<T>* c0;          // [rows,H] initial cell state (read for rows >= rows_continuing)
  const T* grad_h;               // [rows,H] gradient at h_t from the later steps (or the projection)
  const T* grad_y;               // [rows,H] gradient of this step's output, or null
  const Compute<T>* grad_cells;  // [rows,H] gradient of this step's saved c_t output, or null
  Compute<T>* grad_c;            // [rows,H] in: gradient at c_t from later steps, out: at c_{t-1}
  T* dgates;                     // [rows,4H] out: gradient of the pre-activations
};
// dgates must not alias any input; grad_c is read and written per element.
template <typename T>
void lstm_step_backward(const LstmStepBackward<T>& a, cudaStream_t stream);

// h_raw = o * tanh(c) for n rows at once, from saved activations [n,4H] and
// cells [n,H]: what a projected LSTM multiplied by W_hr^T, recomputed for
// the projection's weight gradient. h_raw [n,H] is written.
template <typename T>
void lstm_hidden_before_projection(int64_t n, int64_t H, const Compute<T>* gates,
                                   const Compute<T>* cells, T* h_raw, cudaStream_t stream);

// One RNN step forward: h_t = act(proj + rec + bias), act = relu or tanh.
template <typename T>
struct RnnStepForward {
  int64_t rows, H;
  bool relu;
  const T* proj;           // [rows,H] x_t W_ih^T
  const T* rec;            // [rows,H] h_{t-1} W_hh^T
  const Compute<T>* bias;  // [H] or null
  T* h_out;                // [rows,H] y_t
  T* h_state;              // [rows,H] second copy (the next step's GEMM input), or null
};
template <typename T>
void rnn_step_forward(const RnnStepForward<T>& a, cudaStream_t stream);

// One RNN step backward: dpre = (grad_h + grad_y) act'(h_t), with act' from
// the output (1 - h^2 for tanh, h > 0 for relu).
template <typename T>
struct RnnStepBackward {
  int64_t rows, H;
  bool relu;
  const T* h;       // [rows,H] this step's output y_t
  const T* grad_h;  // [rows,H] gradient at h_t from the later steps
  const T* grad_y;  // [rows,H] gradient of y_t, or null
  T* dpre;          // [rows,H] out; must not alias the inputs
};
template <typename T>
void rnn_step_backward(const RnnStepBackward<T>& a, cudaStream_t stream);

}  // namespace lstm_ext::cuda
