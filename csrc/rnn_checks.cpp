#include "rnn_checks.h"

#include <string>

#include "message.h"

namespace lstm_ext {
namespace {

// "[H, I]" for one gate block, "[3H, I]" for three.
std::string rows_of(int gates, const char* columns) {
  return std::string("[") + (gates == 1 ? "" : std::to_string(gates)) + "H, " + columns + "]";
}

// x, the weights and h0 of a layer whose weights hold `gates` blocks of H
// rows; the biases are the caller's (their number differs).
RnnDims check_common(const char* op, int gates, const at::Tensor& x, const at::Tensor& w_ih,
                     const at::Tensor& w_hh, const at::Tensor& h0,
                     const std::optional<at::Tensor>& batch_sizes) {
  const SequenceDims seq = check::sequence(x, batch_sizes, op);
  check::floating(x, op);
  const int64_t I = x.size(-1);
  const std::string w_hh_what = rows_of(gates, "H");
  check::like(w_hh, x, op, "w_hh");
  check::rank(w_hh, op, "w_hh", w_hh_what.c_str(), 2);
  // H from w_hh's columns; the RNN reads its rows, as it always has, so that
  // a bad w_hh reports "[H, H] = [rows, rows]" against what came.
  const int64_t H = gates == 1 ? w_hh.size(0) : w_hh.size(1);
  LSTM_EXT_CHECK(H >= 1, op, ": w_hh: expected shape ", w_hh_what, " with H >= 1, got ",
                 check::shape_str(w_hh.sizes()));
  check::shape(w_hh, op, "w_hh", w_hh_what.c_str(), {gates * H, H});
  check::like(w_ih, x, op, "w_ih");
  check::shape(w_ih, op, "w_ih", rows_of(gates, "I").c_str(), {gates * H, I});
  check::like(h0, x, op, "h0");
  check::shape(h0, op, "h0", "[B, H]", {seq.B, H});
  return {seq, I, H};
}

void check_bias(const std::optional<at::Tensor>& bias, const at::Tensor& x, const char* op,
                const char* name, int gates, int64_t H) {
  if (!bias.has_value() || !bias->defined()) return;
  check::bias(*bias, x, op, name);
  const std::string what = gates == 1 ? std::string("[H]") : "[" + std::to_string(gates) + "H]";
  check::shape(*bias, op, name, what.c_str(), {gates * H});
}

// The forward's output y and the optional output gradients of a backward op.
void check_outputs(const char* op, const RnnDims& d, const at::Tensor& x, const at::Tensor& y,
                   const std::optional<at::Tensor>& grad_y,
                   const std::optional<at::Tensor>& grad_h_n) {
  const SequenceDims& s = d.seq;
  check::like(y, x, op, "y");
  check::shape(y, op, "y", s.letters("H").c_str(), s.shape(d.H));
  check::optional_grad(grad_y, x, op, "grad_y", s.letters("H").c_str(), s.shape(d.H));
  check::optional_grad(grad_h_n, x, op, "grad_h_n", "[B, H]", {s.B, d.H});
}

}  // namespace

RnnDims check_rnn_forward_args(const at::Tensor& x, const at::Tensor& w_ih,
                               const at::Tensor& w_hh, const std::optional<at::Tensor>& bias,
                               const at::Tensor& h0,
                               const std::optional<at::Tensor>& batch_sizes) {
  constexpr const char* op = "rnn_forward";
  const RnnDims d = check_common(op, 1, x, w_ih, w_hh, h0, batch_sizes);
  check_bias(bias, x, op, "bias", 1, d.H);
  return d;
}

RnnDims check_rnn_backward_args(const std::optional<at::Tensor>& grad_y,
                                const std::optional<at::Tensor>& grad_h_n, const at::Tensor& x,
                                const at::Tensor& w_ih, const at::Tensor& w_hh,
                                const at::Tensor& h0, const at::Tensor& y,
                                const std::optional<at::Tensor>& batch_sizes) {
  constexpr const char* op = "rnn_backward";
  const RnnDims d = check_common(op, 1, x, w_ih, w_hh, h0, batch_sizes);
  check_outputs(op, d, x, y, grad_y, grad_h_n);
  return d;
}

GruDims check_gru_forward_args(const at::Tensor& x, const at::Tensor& w_ih,
                               const at::Tensor& w_hh, const std::optional<at::Tensor>& b_ih,
                               const std::optional<at::Tensor>& b_hh, const at::Tensor& h0,
                               const std::optional<at::Tensor>& batch_sizes) {
  constexpr const char* op = "gru_forward";
  const GruDims d = check_common(op, 3, x, w_ih, w_hh, h0, batch_sizes);
  check_bias(b_ih, x, op, "b_ih", 3, d.H);
  check_bias(b_hh, x, op, "b_hh", 3, d.H);
  return d;
}

GruDims check_gru_backward_args(const std::optional<at::Tensor>& grad_y,
                                const std::optional<at::Tensor>& grad_h_n, const at::Tensor& x,
                                const at::Tensor& w_ih, const at::Tensor& w_hh,
                                const at::Tensor& h0, const at::Tensor& y,
                                const at::Tensor& gates,
                                const std::optional<at::Tensor>& batch_sizes) {
  constexpr const char* op = "gru_backward";
  const GruDims d = check_common(op, 3, x, w_ih, w_hh, h0, batch_sizes);
  check_outputs(op, d, x, y, grad_y, grad_h_n);
  check::like_compute(gates, x, op, "gates");
  check::shape(gates, op, "gates", d.seq.letters("4H").c_str(), d.seq.shape(4 * d.H));
  return d;
}

}  // namespace lstm_ext
