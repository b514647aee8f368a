#include "checks.h"

#include <c10/util/Exception.h>

#include <string>
#include <vector>

namespace lstm_ext {
namespace {

std::string shape_str(c10::IntArrayRef sizes) {
  std::string s = "[";
  for (size_t i = 0; i < sizes.size(); ++i) {
    s += (i ? ", " : "") + std::to_string(sizes[i]);
  }
  return s + "]";
}

// `what` names the shape in letters, e.g. "[4H, I]", so the message shows
// both the symbolic and the numeric expectation.
void check_shape(const at::Tensor& t, const char* op, const char* name, const char* what,
                 std::vector<int64_t> expected) {
  TORCH_CHECK(t.sizes() == c10::IntArrayRef(expected), op, ": ", name, ": expected shape ", what,
              " = ", shape_str(expected), ", got ", shape_str(t.sizes()));
}

void check_like(const at::Tensor& t, const at::Tensor& x, const char* op, const char* name) {
  TORCH_CHECK(t.scalar_type() == x.scalar_type(), op, ": ", name, ": expected dtype ",
              x.scalar_type(), " (the dtype of x), got ", t.scalar_type());
  TORCH_CHECK(t.device() == x.device(), op, ": ", name, ": expected device ", x.device(),
              " (the device of x), got ", t.device());
}

void check_rank(const at::Tensor& t, const char* op, const char* name, const char* what,
                int64_t rank) {
  TORCH_CHECK(t.dim() == rank, op, ": ", name, ": expected a ", rank, "-D tensor of shape ", what,
              ", got a ", t.dim(), "-D tensor of shape ", shape_str(t.sizes()));
}

void check_floating(const at::Tensor& x, const char* op) {
  const auto dt = x.scalar_type();
  const bool ok = dt == at::kFloat || dt == at::kDouble ||
                  (x.is_cuda() && (dt == at::kHalf || dt == at::kBFloat16));
  TORCH_CHECK(ok, op, ": x: expected dtype float32 or float64", (x.is_cuda() ? ", float16 or bfloat16" : ""),
              ", got ", dt);
}

void check_optional_grad(const std::optional<at::Tensor>& g, const at::Tensor& x, const char* name,
                         const char* what, std::vector<int64_t> expected) {
  if (!g.has_value() || !g->defined()) return;
  check_like(*g, x, "lstm_backward", name);
  check_shape(*g, "lstm_backward", name, what, std::move(expected));
}

}  // namespace

LstmDims check_forward_args(const at::Tensor& x, const at::Tensor& w_ih, const at::Tensor& w_hh,
                            const std::optional<at::Tensor>& bias, const at::Tensor& h0,
                            const at::Tensor& c0) {
  constexpr const char* op = "lstm_forward";
  check_rank(x, op, "x", "[T, B, I]", 3);
  check_rank(w_hh, op, "w_hh", "[4H, H]", 2);
  check_floating(x, op);
  const int64_t T = x.size(0), B = x.size(1), I = x.size(2), H = w_hh.size(1);
  TORCH_CHECK(H >= 1, op, ": w_hh: expected shape [4H, H] with H >= 1, got ", shape_str(w_hh.sizes()));
  check_like(w_hh, x, op, "w_hh");
  check_shape(w_hh, op, "w_hh", "[4H, H]", {4 * H, H});
  check_like(w_ih, x, op, "w_ih");
  check_shape(w_ih, op, "w_ih", "[4H, I]", {4 * H, I});
  if (bias.has_value() && bias->defined()) {
    check_like(*bias, x, op, "bias");
    check_shape(*bias, op, "bias", "[4H]", {4 * H});
  }
  check_like(h0, x, op, "h0");
  check_shape(h0, op, "h0", "[B, H]", {B, H});
  check_like(c0, x, op, "c0");
  check_shape(c0, op, "c0", "[B, H]", {B, H});
  return {T, B, I, H};
}

LstmDims check_backward_args(const std::optional<at::Tensor>& grad_y,
                             const std::optional<at::Tensor>& grad_h_n,
                             const std::optional<at::Tensor>& grad_c_n,
                             const std::optional<at::Tensor>& grad_cells, const at::Tensor& x,
                             const at::Tensor& w_ih, const at::Tensor& w_hh, const at::Tensor& h0,
                             const at::Tensor& c0, const at::Tensor& y, const at::Tensor& gates,
                             const at::Tensor& cells) {
  constexpr const char* op = "lstm_backward";
  const LstmDims d = check_forward_args(x, w_ih, w_hh, std::nullopt, h0, c0);
  const int64_t T = d.T, B = d.B, H = d.H;
  check_like(y, x, op, "y");
  check_shape(y, op, "y", "[T, B, H]", {T, B, H});
  TORCH_CHECK(gates.numel() > 0 || T * B == 0, op,
              ": gates is empty: the forward ran with save_for_backward=false, so there is "
              "nothing to differentiate. Run lstm_forward with save_for_backward=true.");
  check_like(gates, x, op, "gates");
  check_shape(gates, op, "gates", "[T, B, 4H]", {T, B, 4 * H});
  check_like(cells, x, op, "cells");
  check_shape(cells, op, "cells", "[T, B, H]", {T, B, H});
  check_optional_grad(grad_y, x, "grad_y", "[T, B, H]", {T, B, H});
  check_optional_grad(grad_h_n, x, "grad_h_n", "[B, H]", {B, H});
  check_optional_grad(grad_c_n, x, "grad_c_n", "[B, H]", {B, H});
  check_optional_grad(grad_cells, x, "grad_cells", "[T, B, H]", {T, B, H});
  return d;
}

}  // namespace lstm_ext
