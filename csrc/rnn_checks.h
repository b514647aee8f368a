// Argument validation for the single-state recurrent ops, the vanilla RNN
// (rnn_forward, rnn_backward) and the GRU (gru_forward, gru_backward), built
// from the lstm_ext::check blocks in checks.h. They differ only in the number
// of gate blocks of the weights (1 for the RNN, 3 for the GRU), the biases
// (one combined bias, or b_ih and b_hh) and what the backward saved.
//
// Every check runs before any kernel and names the argument, what was
// expected and what came: "rnn_forward: w_ih: expected shape [H, I] =
// [8, 5], got [8, 4]".
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>

#include "checks.h"

namespace lstm_ext {

// The sizes of one RNN or GRU layer-direction call, read off validated
// arguments.
struct RnnDims {
  SequenceDims seq;
  int64_t I;  // input features
  int64_t H;  // hidden units (= size of h)
};
using GruDims = RnnDims;

// Validates rnn_forward's arguments: x [T,B,I] (or packed [N,I] with
// batch_sizes), w_ih [H,I], w_hh [H,H], bias [H] or None, h0 [B,H]; one
// floating dtype and one device for all tensors, except that the bias may also
// be in x's compute dtype (float32 for a bfloat16 x; check::bias).
RnnDims check_rnn_forward_args(const at::Tensor& x, const at::Tensor& w_ih,
                               const at::Tensor& w_hh, const std::optional<at::Tensor>& bias,
                               const at::Tensor& h0,
                               const std::optional<at::Tensor>& batch_sizes);

// Validates rnn_backward's arguments: the forward's, its output y ([T,B,H] or
// [N,H]), and the optional output gradients grad_y (like y) and grad_h_n [B,H].
RnnDims check_rnn_backward_args(const std::optional<at::Tensor>& grad_y,
                                const std::optional<at::Tensor>& grad_h_n, const at::Tensor& x,
                                const at::Tensor& w_ih, const at::Tensor& w_hh,
                                const at::Tensor& h0, const at::Tensor& y,
                                const std::optional<at::Tensor>& batch_sizes);

// gru_forward's arguments: as rnn_forward's with w_ih [3H,I], w_hh [3H,H],
// and two biases b_ih, b_hh [3H] (each optional, each checked as the RNN's
// bias).
GruDims check_gru_forward_args(const at::Tensor& x, const at::Tensor& w_ih,
                               const at::Tensor& w_hh, const std::optional<at::Tensor>& b_ih,
                               const std::optional<at::Tensor>& b_hh, const at::Tensor& h0,
                               const std::optional<at::Tensor>& batch_sizes);

// gru_backward's arguments: the forward's (without the biases), its output
// y, its saved gates ([T,B,4H] or [N,4H], in x's compute dtype), and the
// optional output gradients grad_y (like y) and grad_h_n [B,H].
GruDims check_gru_backward_args(const std::optional<at::Tensor>& grad_y,
                                const std::optional<at::Tensor>& grad_h_n, const at::Tensor& x,
                                const at::Tensor& w_ih, const at::Tensor& w_hh,
                                const at::Tensor& h0, const at::Tensor& y,
                                const at::Tensor& gates,
                                const std::optional<at::Tensor>& batch_sizes);

}  // namespace lstm_ext
