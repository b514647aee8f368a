#include "rnn_checks.h"

#include "message.h"

namespace lstm_ext {
namespace {

RnnDims check_rnn_args(const char* op, const at::Tensor& x, const at::Tensor& w_ih,
                       const at::Tensor& w_hh, const std::optional<at::Tensor>& bias,
                       const at::Tensor& h0, const std::optional<at::Tensor>& batch_sizes) {
  const SequenceDims seq = check::sequence(x, batch_sizes, op);
  check::floating(x, op);
  const int64_t I = x.size(-1);
  check::like(w_hh, x, op, "w_hh");
  check::rank(w_hh, op, "w_hh", "[H, H]", 2);
  const int64_t H = w_hh.size(0);
  LSTM_EXT_CHECK(H >= 1, op, ": w_hh: expected shape [H, H] with H >= 1, got ",
                 check::shape_str(w_hh.sizes()));
  check::shape(w_hh, op, "w_hh", "[H, H]", {H, H});
  check::like(w_ih, x, op, "w_ih");
  check::shape(w_ih, op, "w_ih", "[H, I]", {H, I});
  if (bias.has_value() && bias->defined()) {
    check::bias(*bias, x, op);
    check::shape(*bias, op, "bias", "[H]", {H});
  }
  check::like(h0, x, op, "h0");
  check::shape(h0, op, "h0", "[B, H]", {seq.B, H});
  return {seq, I, H};
}

}  // namespace

RnnDims check_rnn_forward_args(const at::Tensor& x, const at::Tensor& w_ih,
                               const at::Tensor& w_hh, const std::optional<at::Tensor>& bias,
                               const at::Tensor& h0,
                               const std::optional<at::Tensor>& batch_sizes) {
  return check_rnn_args("rnn_forward", x, w_ih, w_hh, bias, h0, batch_sizes);
}

RnnDims check_rnn_backward_args(const std::optional<at::Tensor>& grad_y,
                                const std::optional<at::Tensor>& grad_h_n, const at::Tensor& x,
                                const at::Tensor& w_ih, const at::Tensor& w_hh,
                                const at::Tensor& h0, const at::Tensor& y,
                                const std::optional<at::Tensor>& batch_sizes) {
  constexpr const char* op = "rnn_backward";
  const RnnDims d = check_rnn_args(op, x, w_ih, w_hh, std::nullopt, h0, batch_sizes);
  const SequenceDims& s = d.seq;
  check::like(y, x, op, "y");
  check::shape(y, op, "y", s.letters("H").c_str(), s.shape(d.H));
  check::optional_grad(grad_y, x, op, "grad_y", s.letters("H").c_str(), s.shape(d.H));
  check::optional_grad(grad_h_n, x, op, "grad_h_n", "[B, H]", {s.B, d.H});
  return d;
}

}  // namespace lstm_ext
