// Argument validation shared by every backend's binding.
//
// Each check runs before any kernel and raises (TORCH_CHECK) with a message
// that names the argument, what was expected and what came, so a user sees
// "w_hh: expected shape [4H, H] = [32, 8], got [32, 7]" instead of a crash.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Optional.h>

namespace lstm_ext {

// The sizes of one layer-direction call, read off validated arguments.
struct LstmDims {
  int64_t T;  // time steps
  int64_t B;  // batch
  int64_t I;  // input features
  int64_t H;  // hidden units
};

// Validates lstm_forward's arguments: ranks, shapes, one floating dtype
// (float32 or float64 on the CPU), and one device for all of them.
LstmDims check_forward_args(const at::Tensor& x, const at::Tensor& w_ih, const at::Tensor& w_hh,
                            const std::optional<at::Tensor>& bias, const at::Tensor& h0,
                            const at::Tensor& c0);

// Validates lstm_backward's arguments against the forward's (x, weights,
// states) and the saved tensors it produced.
LstmDims check_backward_args(const std::optional<at::Tensor>& grad_y,
                             const std::optional<at::Tensor>& grad_h_n,
                             const std::optional<at::Tensor>& grad_c_n,
                             const std::optional<at::Tensor>& grad_cells, const at::Tensor& x,
                             const at::Tensor& w_ih, const at::Tensor& w_hh, const at::Tensor& h0,
                             const at::Tensor& c0, const at::Tensor& y, const at::Tensor& gates,
                             const at::Tensor& cells);

}  // namespace lstm_ext
