// Argument validation shared by every backend's binding.
//
// Each check runs before any kernel and raises (LSTM_EXT_CHECK, csrc/message.h) with a message
// that names the argument, what was expected and what came, so a user sees
// "lstm_forward: w_hh: expected shape [4H, H] = [32, 8], got [32, 7]" instead
// of a crash.
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>
#include <string>
#include <vector>

#include "step_layout.h"

namespace lstm_ext {

// The time layout of a sequence argument: dense x [T,B,F], or packed x [N,F]
// with batch_sizes [T].
struct SequenceDims {
  int64_t T;  // time steps
  int64_t B;  // batch (rows of the widest step)
  int64_t N;  // rows of x over all steps (T*B when dense)
  bool packed;

  // The shape of a per-step tensor with F features in this layout.
  std::vector<int64_t> shape(int64_t F) const {
    return packed ? std::vector<int64_t>{N, F} : std::vector<int64_t>{T, B, F};
  }
  // The same shape in letters, for messages: "[T, B, 4H]" or "[N, 4H]".
  std::string letters(const char* F) const {
    return (packed ? std::string("[N, ") : std::string("[T, B, ")) + F + "]";
  }
};

// The sizes of one LSTM layer-direction call, read off validated arguments.
struct LstmDims {
  SequenceDims seq;
  int64_t I;  // input features
  int64_t H;  // hidden units (cell size)
  int64_t P;  // size of h: proj_size with a projection, else H
  bool projected;
};

// The rows of every step of a validated sequence: dense T steps of B rows, or
// packed by batch_sizes.
StepLayout make_step_layout(const SequenceDims& seq, const std::optional<at::Tensor>& batch_sizes);

// Validates lstm_forward's arguments: ranks, shapes, batch_sizes, one
// floating dtype and one device for all tensors, except that the bias may also
// be in x's compute dtype (float32 for a bfloat16 x; check::bias).
LstmDims check_lstm_forward_args(const at::Tensor& x, const at::Tensor& w_ih,
                                 const at::Tensor& w_hh, const std::optional<at::Tensor>& bias,
                                 const at::Tensor& h0, const at::Tensor& c0,
                                 const std::optional<at::Tensor>& batch_sizes,
                                 const std::optional<at::Tensor>& w_hr);

// Validates lstm_backward's arguments against the forward's and the tensors
// the forward saved. gates, cells and grad_cells are in x's compute dtype
// (float32 for a bfloat16 x), like the forward's gates and cells.
LstmDims check_lstm_backward_args(
    const std::optional<at::Tensor>& grad_y, const std::optional<at::Tensor>& grad_h_n,
    const std::optional<at::Tensor>& grad_c_n, const std::optional<at::Tensor>& grad_cells,
    const at::Tensor& x, const at::Tensor& w_ih, const at::Tensor& w_hh, const at::Tensor& h0,
    const at::Tensor& c0, const at::Tensor& y, const at::Tensor& gates, const at::Tensor& cells,
    const std::optional<at::Tensor>& batch_sizes, const std::optional<at::Tensor>& w_hr);

// Building blocks for the checks of other ops (the RNN's). `op` and `name`
// prefix every message; `what` names a shape in letters, e.g. "[4H, I]".
namespace check {

std::string shape_str(c10::IntArrayRef sizes);
void shape(const at::Tensor& t, const char* op, const char* name, const char* what,
           const std::vector<int64_t>& expected);
void rank(const at::Tensor& t, const char* op, const char* name, const char* what, int64_t rank);
// Same dtype and device as x (the reference argument).
void like(const at::Tensor& t, const at::Tensor& x, const char* op, const char* name);
// x's device, and x's compute dtype (compute_dtype.h): float32 for a bfloat16
// x, else x's dtype. For the activations a forward saves (gates, cells).
void like_compute(const at::Tensor& t, const at::Tensor& x, const char* op, const char* name);
// The combined bias (b_ih + b_hh): x's device, and x's dtype or x's compute
// dtype. For a bfloat16 x both bfloat16 and float32 are accepted; a float32
// bias (the sum of two bfloat16 biases taken in float32, as torch.nn does) is
// used as is, without a rounding to bfloat16.
void bias(const at::Tensor& b, const at::Tensor& x, const char* op, const char* name = "bias");
// x's dtype is one the backend computes in: float32, float64 or bfloat16
// (bfloat16 computed in float32); on CUDA also float16.
void floating(const at::Tensor& x, const char* op);
// An optional gradient, when present: like x (like_compute(x) when `compute`)
// and of the expected shape.
void optional_grad(const std::optional<at::Tensor>& g, const at::Tensor& x, const char* op,
                   const char* name, const char* what, const std::vector<int64_t>& expected,
                   bool compute = false);
// x [T,B,F] without batch_sizes, or x [N,F] with batch_sizes [T] (int64, CPU,
// positive, non-increasing, summing to N). B comes from x or batch_sizes[0].
SequenceDims sequence(const at::Tensor& x, const std::optional<at::Tensor>& batch_sizes,
                      const char* op);

}  // namespace check
}  // namespace lstm_ext
