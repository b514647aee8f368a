#include "checks.h"

#include "compute_dtype.h"
#include "message.h"

namespace lstm_ext {

namespace check {

std::string shape_str(c10::IntArrayRef sizes) { return message(sizes); }

void shape(const at::Tensor& t, const char* op, const char* name, const char* what,
           const std::vector<int64_t>& expected) {
  LSTM_EXT_CHECK(t.sizes() == c10::IntArrayRef(expected), op, ": ", name, ": expected shape ",
                 what, " = ", shape_str(expected), ", got ", shape_str(t.sizes()));
}

void rank(const at::Tensor& t, const char* op, const char* name, const char* what, int64_t rank) {
  LSTM_EXT_CHECK(t.dim() == rank, op, ": ", name, ": expected a ", rank, "-D tensor of shape ",
                 what, ", got a ", t.dim(), "-D tensor of shape ", shape_str(t.sizes()));
}

void like(const at::Tensor& t, const at::Tensor& x, const char* op, const char* name) {
  LSTM_EXT_CHECK(t.scalar_type() == x.scalar_type(), op, ": ", name, ": expected dtype ",
                 x.scalar_type(), " (the dtype of x), got ", t.scalar_type());
  LSTM_EXT_CHECK(t.device() == x.device(), op, ": ", name, ": expected device ", x.device(),
                 " (the device of x), got ", t.device());
}

void like_compute(const at::Tensor& t, const at::Tensor& x, const char* op, const char* name) {
  const auto expected = compute_dtype(x.scalar_type());
  if (expected == x.scalar_type()) return like(t, x, op, name);
  LSTM_EXT_CHECK(t.scalar_type() == expected, op, ": ", name, ": expected dtype ", expected,
                 " (the compute dtype for x of dtype ", x.scalar_type(), "), got ",
                 t.scalar_type());
  LSTM_EXT_CHECK(t.device() == x.device(), op, ": ", name, ": expected device ", x.device(),
                 " (the device of x), got ", t.device());
}

void bias(const at::Tensor& b, const at::Tensor& x, const char* op, const char* name) {
  const auto storage = x.scalar_type();
  const auto compute = compute_dtype(storage);
  if (compute == storage) return like(b, x, op, name);
  LSTM_EXT_CHECK(b.scalar_type() == storage || b.scalar_type() == compute, op, ": ", name,
                 ": expected dtype ", storage, " (the dtype of x) or ", compute,
                 " (the compute dtype for x of dtype ", storage, "), got ", b.scalar_type());
  LSTM_EXT_CHECK(b.device() == x.device(), op, ": ", name, ": expected device ", x.device(),
                 " (the device of x), got ", b.device());
}

void floating(const at::Tensor& x, const char* op) {
  const auto dt = x.scalar_type();
  const bool ok = dt == at::kFloat || dt == at::kDouble || dt == at::kBFloat16 ||
                  (x.is_cuda() && dt == at::kHalf);
  LSTM_EXT_CHECK(ok, op, ": x: expected dtype float32, float64",
                 (x.is_cuda() ? ", float16 or bfloat16" : " or bfloat16"), ", got ", dt,
                 dt == at::kHalf ? " (float16 is not supported on the CPU: use bfloat16 or float32)"
                                 : "");
}

void optional_grad(const std::optional<at::Tensor>& g, const at::Tensor& x, const char* op,
                   const char* name, const char* what, const std::vector<int64_t>& expected,
                   bool compute) {
  if (!g.has_value() || !g->defined()) return;
  if (compute) {
    like_compute(*g, x, op, name);
  } else {
    like(*g, x, op, name);
  }
  shape(*g, op, name, what, expected);
}

SequenceDims sequence(const at::Tensor& x, const std::optional<at::Tensor>& batch_sizes,
                      const char* op) {
  if (!batch_sizes.has_value() || !batch_sizes->defined()) {
    rank(x, op, "x", "[T, B, I]", 3);
    return {x.size(0), x.size(1), x.size(0) * x.size(1), false};
  }
  const at::Tensor& bs = *batch_sizes;
  rank(x, op, "x", "[N, I] (packed, with batch_sizes)", 2);
  rank(bs, op, "batch_sizes", "[T]", 1);
  LSTM_EXT_CHECK(bs.scalar_type() == at::kLong, op, ": batch_sizes: expected dtype int64, got ",
                 bs.scalar_type());
  LSTM_EXT_CHECK(bs.device().is_cpu(), op, ": batch_sizes: expected a CPU tensor (as in "
                 "PackedSequence), got one on ", bs.device());
  const int64_t T = bs.size(0);
  LSTM_EXT_CHECK(T >= 1, op, ": batch_sizes: expected at least one time step, got none");
  const at::Tensor bsc = bs.contiguous();
  const int64_t* b = bsc.data_ptr<int64_t>();
  int64_t total = 0;
  for (int64_t t = 0; t < T; ++t) {
    LSTM_EXT_CHECK(b[t] >= 1, op, ": batch_sizes: expected positive entries, got ", b[t],
                   " at step ", t);
    LSTM_EXT_CHECK(t == 0 || b[t] <= b[t - 1], op,
                   ": batch_sizes: expected non-increasing entries (sequences sorted by length), "
                   "got ",
                   b[t - 1 >= 0 ? t - 1 : 0], " then ", b[t], " at step ", t);
    total += b[t];
  }
  LSTM_EXT_CHECK(total == x.size(0), op, ": x: expected ", total,
                 " packed rows (the sum of batch_sizes), got ", x.size(0));
  return {T, b[0], total, true};
}

}  // namespace check

StepLayout make_step_layout(const SequenceDims& seq, const std::optional<at::Tensor>& batch_sizes) {
  if (!seq.packed) return StepLayout(seq.T, seq.B);
  const at::Tensor bs = batch_sizes->contiguous();
  return StepLayout(bs.data_ptr<int64_t>(), seq.T);
}

namespace {

// The checks of the inputs both LSTM ops take, with `op` naming the one
// called, so a bad x given to lstm_backward says lstm_backward.
LstmDims check_lstm_inputs(const char* op, const at::Tensor& x, const at::Tensor& w_ih,
                           const at::Tensor& w_hh, const std::optional<at::Tensor>& bias,
                           const at::Tensor& h0, const at::Tensor& c0,
                           const std::optional<at::Tensor>& batch_sizes,
                           const std::optional<at::Tensor>& w_hr) {
  const SequenceDims seq = check::sequence(x, batch_sizes, op);
  check::floating(x, op);
  const int64_t I = x.size(-1);
  const bool projected = w_hr.has_value() && w_hr->defined();
  check::rank(w_hh, op, "w_hh", projected ? "[4H, P]" : "[4H, H]", 2);
  check::like(w_hh, x, op, "w_hh");
  const int64_t H = w_hh.size(0) / 4;
  LSTM_EXT_CHECK(H >= 1 && w_hh.size(0) == 4 * H, op, ": w_hh: expected shape ",
                 projected ? "[4H, P]" : "[4H, H]", " with H >= 1, got ",
                 check::shape_str(w_hh.sizes()));
  int64_t P = H;
  if (projected) {
    check::like(*w_hr, x, op, "w_hr");
    check::rank(*w_hr, op, "w_hr", "[P, H]", 2);
    P = w_hr->size(0);
    LSTM_EXT_CHECK(P >= 1 && P < H, op, ": w_hr: expected shape [P, H] with 1 <= P < H = ", H,
                   ", got ", check::shape_str(w_hr->sizes()));
    check::shape(*w_hr, op, "w_hr", "[P, H]", {P, H});
    check::shape(w_hh, op, "w_hh", "[4H, P]", {4 * H, P});
  } else {
    check::shape(w_hh, op, "w_hh", "[4H, H]", {4 * H, H});
  }
  check::like(w_ih, x, op, "w_ih");
  check::shape(w_ih, op, "w_ih", "[4H, I]", {4 * H, I});
  if (bias.has_value() && bias->defined()) {
    check::bias(*bias, x, op);
    check::shape(*bias, op, "bias", "[4H]", {4 * H});
  }
  check::like(h0, x, op, "h0");
  check::shape(h0, op, "h0", projected ? "[B, P]" : "[B, H]", {seq.B, P});
  check::like(c0, x, op, "c0");
  check::shape(c0, op, "c0", "[B, H]", {seq.B, H});
  return {seq, I, H, P, projected};
}

}  // namespace

LstmDims check_lstm_forward_args(const at::Tensor& x, const at::Tensor& w_ih,
                                 const at::Tensor& w_hh, const std::optional<at::Tensor>& bias,
                                 const at::Tensor& h0, const at::Tensor& c0,
                                 const std::optional<at::Tensor>& batch_sizes,
                                 const std::optional<at::Tensor>& w_hr) {
  return check_lstm_inputs("lstm_forward", x, w_ih, w_hh, bias, h0, c0, batch_sizes, w_hr);
}

LstmDims check_lstm_backward_args(
    const std::optional<at::Tensor>& grad_y, const std::optional<at::Tensor>& grad_h_n,
    const std::optional<at::Tensor>& grad_c_n, const std::optional<at::Tensor>& grad_cells,
    const at::Tensor& x, const at::Tensor& w_ih, const at::Tensor& w_hh, const at::Tensor& h0,
    const at::Tensor& c0, const at::Tensor& y, const at::Tensor& gates, const at::Tensor& cells,
    const std::optional<at::Tensor>& batch_sizes, const std::optional<at::Tensor>& w_hr) {
  constexpr const char* op = "lstm_backward";
  const LstmDims d = check_lstm_inputs(op, x, w_ih, w_hh, std::nullopt, h0, c0, batch_sizes, w_hr);
  const SequenceDims& s = d.seq;
  const char* p_letter = d.projected ? "P" : "H";
  check::like(y, x, op, "y");
  check::shape(y, op, "y", s.letters(p_letter).c_str(), s.shape(d.P));
  LSTM_EXT_CHECK(gates.numel() > 0 || s.N == 0, op,
                 ": gates is empty: the forward ran with save_for_backward=false, so there is "
                 "nothing to differentiate. Run lstm_forward with save_for_backward=true.");
  check::like_compute(gates, x, op, "gates");
  check::shape(gates, op, "gates", s.letters("4H").c_str(), s.shape(4 * d.H));
  check::like_compute(cells, x, op, "cells");
  check::shape(cells, op, "cells", s.letters("H").c_str(), s.shape(d.H));
  check::optional_grad(grad_y, x, op, "grad_y", s.letters(p_letter).c_str(), s.shape(d.P));
  check::optional_grad(grad_h_n, x, op, "grad_h_n", d.projected ? "[B, P]" : "[B, H]",
                       {s.B, d.P});
  check::optional_grad(grad_c_n, x, op, "grad_c_n", "[B, H]", {s.B, d.H});
  check::optional_grad(grad_cells, x, op, "grad_cells", s.letters("H").c_str(), s.shape(d.H),
                       /*compute=*/true);
  return d;
}

}  // namespace lstm_ext
