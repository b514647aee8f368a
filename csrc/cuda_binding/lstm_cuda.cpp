// CUDA binding of the LSTM ops: validation, buffers, GEMMs (cuBLAS on the
// current stream, through cuda_binding/gemm.h) and the torch-free step
// kernels of csrc/cuda/kernels.h.
//
// float32 GEMMs follow torch.backends.cudnn.allow_tf32 (TF32 when it is on,
// the default), as torch.nn.LSTM does on cuDNN; turn it off for strict fp32.
// The SIMT persistent kernels compute in strict fp32 either way; the
// tensor-core ones (LSTM_EXT_CUDA_PATH=tensorcore, experimental) run float32
// as TF32 and are only chosen while that flag allows TF32.
//
// Forward: one GEMM projects every step's input (x W_ih^T, [N,4H]); then per
// step one GEMM (h_{t-1} W_hh^T) and one fused elementwise kernel that adds
// projection, recurrent product and bias in the compute dtype and updates
// c and h. Backward: per step one fused gate-gradient kernel and one GEMM
// (dgates W_hh, the gradient at h_{t-1}); the weight and input gradients are
// one GEMM each over all N rows after the loop. The step loops of both are
// step_loop.h's, shared with the RNN and GRU bindings.
//
// h and c live in full-batch state buffers [B,P] / [B,H]; step t reads and
// writes their first rows(t) rows. Rows a packed step does not reach keep
// their state, so the buffers end as h_n / c_n in both directions, and the
// backward's gradient buffers end as grad_h0 / grad_c0.
//
// float16 and bfloat16 compute in float32: the cell state, the saved gates
// and cells and the cell-state gradient are float32; the GEMMs read and write
// the storage dtype with float32 accumulation (cuBLAS), as cuDNN does.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "checks.h"
#include "compute_dtype.h"
#include "cuda/kernels.h"
#include "cuda/persistent.h"
#include "cuda/tensorcore.h"
#include "cuda_binding/cuda_tensors.h"
#include "cuda_binding/gemm.h"
#include "cuda_binding/lstm_path.h"
#include "cuda_binding/step_loop.h"
#include "step_layout.h"
#include "tensor_args.h"

namespace lstm_ext::cuda_binding {
namespace {

using Outputs5 = std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor>;
using Grads7 = std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor>;

// Per step: rec = h_{t-1} W_hh^T (cuBLAS), then the fused cell update. h and c
// live in full-batch state buffers, which end as h_n and c_n.
std::pair<Tensor, Tensor> standard_forward(const StepLayout& L, const LstmDims& d, bool reverse,
                                           const Tensor& proj, const Tensor& bias_c,
                                           const Tensor& w_hh, const Tensor& w_hr,
                                           const Tensor& h0, const Tensor& c0, const Tensor& y2d,
                                           const Tensor& gates, const Tensor& cells, bool save,
                                           const at::TensorOptions& copts, GemmPrecision prec) {
  const int64_t B = d.seq.B, H = d.H, P = d.P, G = 4 * H;
  const auto opts = y2d.options();
  Tensor h_state = state_buffer(h0, {B, P}, opts);
  Tensor c_state = state_buffer(c0, {B, H}, copts);
  Tensor rec = at::empty({B, G}, opts);
  Tensor h_raw = d.projected ? at::empty({B, H}, opts) : Tensor();
  const cudaStream_t stream = current_stream();
  LSTM_EXT_DISPATCH_CUDA(y2d.scalar_type(), "lstm_forward_cuda", [&] {
    using C = cuda::Compute<T>;
    auto step_kernel = [&](const Step& st) {
      cuda::LstmStepForward<T> a{};
      a.rows = st.rows;
      a.H = H;
      a.proj = ptr<T>(proj) + st.off * G;
      a.rec = ptr<T>(rec);
      a.bias = ptr_or_null<C>(bias_c);
      a.c_state = ptr<C>(c_state);
      a.h_out = d.projected ? ptr<T>(h_raw) : ptr<T>(y2d) + st.off * P;
      a.ld_h_out = H;
      a.h_state = d.projected ? nullptr : ptr<T>(h_state);
      a.gates = save ? ptr<C>(gates) + st.off * G : nullptr;
      a.cells = save ? ptr<C>(cells) + st.off * H : nullptr;
      cuda::lstm_step_forward<T>(a, stream);
    };
    auto projection = [&](const Step& st) {  // y_t = h_raw W_hr^T, also the next step's h
      if (!d.projected) return;
      Tensor y_rows = step_rows(y2d, L, st.t);
      mm_out(y_rows, row_block(h_raw, 0, st.rows), w_hr.t(), prec);
      row_block(h_state, 0, st.rows).copy_(y_rows);
    };
    forward_steps(L, reverse, rec, h_state, w_hh, prec, step_kernel, projection);
  });
  return {h_state, c_state};
}

// The whole sequence in one cooperative launch: the SIMT persistent kernel
// (csrc/cuda/persistent.h) or, when path.tensorcore, the tensor-core one
// (csrc/cuda/tensorcore.h), which take the same arguments.
std::pair<Tensor, Tensor> persistent_forward(const CudaPath& path,
                                             const StepLayout& L, const LstmDims& d, bool reverse,
                                             const Tensor& proj, const Tensor& bias_c,
                                             const Tensor& w_hh, const Tensor& h0,
                                             const Tensor& c0, const Tensor& y2d,
                                             const Tensor& gates, const Tensor& cells, bool save,
                                             const at::TensorOptions& copts) {
  const int64_t B = d.seq.B, H = d.H;
  const auto opts = y2d.options();
  const Tensor offsets = step_offsets(L, d.seq.packed, y2d.device());
  const Tensor h0c = h0.contiguous(), c0c = c0.to(copts.dtype().toScalarType()).contiguous();
  Tensor h_n = at::empty({B, H}, opts);
  Tensor c_n = at::empty({B, H}, copts);
  Tensor h_buffers = at::empty({2, B, H}, opts);
  dispatch_persistent(y2d.scalar_type(), "lstm_forward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    using C = cuda::Compute<T>;
    cuda::PersistentForward<T> a{};
    a.T_steps = L.steps();
    a.B = B;
    a.H = H;
    a.reverse = reverse;
    a.offsets = ptr_or_null<int64_t>(offsets);
    a.proj = ptr<T>(proj);
    a.bias = ptr_or_null<C>(bias_c);
    a.w_hh = ptr<T>(w_hh);
    a.h0 = ptr<T>(h0c);
    a.c0 = ptr<C>(c0c);
    a.y = ptr<T>(y2d);
    a.h_n = ptr<T>(h_n);
    a.c_n = ptr<C>(c_n);
    a.gates = save ? ptr<C>(gates) : nullptr;
    a.cells = save ? ptr<C>(cells) : nullptr;
    a.h_buffers = ptr<T>(h_buffers);
    C10_CUDA_CHECK(path.tensorcore
                       ? cuda::tensorcore_lstm_forward<T>(a, path.tc_plan, current_stream())
                       : cuda::persistent_lstm_forward<T>(a, path.plan, current_stream()));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {h_n, c_n};
}

Outputs5 lstm_forward_cuda(const Tensor& x_in, const Tensor& w_ih_in, const Tensor& w_hh_in,
                           const OptTensor& bias, const Tensor& h0, const Tensor& c0,
                           bool reverse, bool save, const OptTensor& batch_sizes,
                           const OptTensor& w_hr_in) {
  const LstmDims d =
      check_lstm_forward_args(x_in, w_ih_in, w_hh_in, bias, h0, c0, batch_sizes, w_hr_in);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const int64_t N = d.seq.N, B = d.seq.B, H = d.H, P = d.P, G = 4 * H;
  // The path choice may refuse (a forced path): before any work, copies included.
  const CudaPath path = choose_cuda_path(PathCell::kLstm, B, H, x_in.scalar_type(), d.projected,
                                         d.seq.packed, /*backward=*/false, x_in.get_device());
  const StepLayout L = make_step_layout(d.seq, batch_sizes);
  const Tensor x = x_in.contiguous(), w_ih = w_ih_in.contiguous(), w_hh = w_hh_in.contiguous();
  const Tensor w_hr = present(w_hr_in) ? w_hr_in->contiguous() : Tensor();
  const auto opts = x.options();
  const auto copts = opts.dtype(compute_dtype(x.scalar_type()));
  const GemmPrecision prec = rnn_gemm_precision(x.scalar_type());

  const Tensor proj = mm(x.view({N, d.I}), w_ih.t(), prec);
  const Tensor bias_c = present(bias) ? bias->to(copts.dtype().toScalarType()).contiguous() : Tensor();
  Tensor y = at::empty(d.seq.shape(P), opts);
  const Tensor y2d = y.view({N, P});
  Tensor gates = save ? at::empty({N, G}, copts) : at::empty({0}, copts);
  Tensor cells = save ? at::empty({N, H}, copts) : at::empty({0}, copts);
  Tensor h_n, c_n;
  if (path.persistent || path.tensorcore) {
    std::tie(h_n, c_n) =
        persistent_forward(path, L, d, reverse, proj, bias_c, w_hh, h0, c0, y2d, gates, cells,
                           save, copts);
  } else {
    std::tie(h_n, c_n) = standard_forward(L, d, reverse, proj, bias_c, w_hh, w_hr, h0, c0, y2d,
                                          gates, cells, save, copts, prec);
  }
  return {y, h_n, to_storage(c_n, x_in), save ? gates.view(d.seq.shape(G)) : gates,
          save ? cells.view(d.seq.shape(H)) : cells};
}

// Inputs of the backward recurrence, shared by both paths.
struct BackwardInputs {
  const StepLayout& L;
  const LstmDims& d;
  bool reverse;
  Tensor gates, cells, c0c, w_hh, w_hr, grad_y, grad_cells;  // grad_y [N,P], may be undefined
  OptTensor grad_h_n, grad_c_n;
  at::TensorOptions opts, copts;
  GemmPrecision prec;
};

// What the recurrence leaves for the GEMMs after it: dgates [N,4H] is filled;
// returns grad_h0 [B,P] and grad_c0 [B,H] (compute dtype), and with a
// projection the gradient at every h_t [N,P] and o*tanh(c_t) [N,H].
struct BackwardState {
  Tensor grad_h0, grad_c0, grad_h_all, h_raw_all;
};

// Per step: the fused gate-gradient kernel, then grad_h = dgates_t W_hh
// (cuBLAS). The gradient buffers are full-batch, so they end as grad_h0 / grad_c0.
BackwardState standard_backward(const BackwardInputs& in, Tensor& dgates) {
  const StepLayout& L = in.L;
  const int64_t N = in.d.seq.N, B = in.d.seq.B, H = in.d.H, P = in.d.P, G = 4 * H;
  BackwardState out;
  Tensor grad_h = state_buffer(in.grad_h_n, {B, P}, in.opts);
  Tensor grad_c = state_buffer(in.grad_c_n, {B, H}, in.copts);
  // With a projection: the gradient at o*tanh(c_t) of the current step.
  Tensor grad_h_raw;
  if (in.d.projected) {
    out.grad_h_all = at::empty({N, P}, in.opts);
    out.h_raw_all = at::empty({N, H}, in.opts);
    grad_h_raw = at::empty({B, H}, in.opts);
  }
  const cudaStream_t stream = current_stream();
  LSTM_EXT_DISPATCH_CUDA(dgates.scalar_type(), "lstm_backward_cuda", [&] {
    using C = cuda::Compute<T>;
    if (in.d.projected) {
      cuda::lstm_hidden_before_projection<T>(N, H, ptr<C>(in.gates), ptr<C>(in.cells),
                                             ptr<T>(out.h_raw_all), stream);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
    auto step_kernel = [&](const Step& st) {
      const int64_t prev = L.previous(st.t, in.reverse);
      cuda::LstmStepBackward<T> a{};
      a.rows = st.rows;
      a.H = H;
      a.rows_continuing = L.rows_continuing(st.t, in.reverse);
      a.gates = ptr<C>(in.gates) + st.off * G;
      a.cells = ptr<C>(in.cells) + st.off * H;
      a.c_prev = prev >= 0 ? ptr<C>(in.cells) + L.offset(prev) * H : nullptr;
      a.c0 = ptr<C>(in.c0c);
      a.grad_cells = in.grad_cells.defined() ? ptr<C>(in.grad_cells) + st.off * H : nullptr;
      a.grad_c = ptr<C>(grad_c);
      a.dgates = ptr<T>(dgates) + st.off * G;
      if (in.d.projected) {
        // dL/dh_t = grad_h + grad_y[t] (P wide), then through h_t = h_raw W_hr^T.
        const Tensor grad_h_rows = row_block(grad_h, 0, st.rows);
        Tensor grad_h_t = step_rows(out.grad_h_all, L, st.t);
        if (in.grad_y.defined()) {
          at::add_out(grad_h_t, grad_h_rows, step_rows(in.grad_y, L, st.t));
        } else {
          grad_h_t.copy_(grad_h_rows);
        }
        Tensor grad_h_raw_rows = row_block(grad_h_raw, 0, st.rows);
        mm_out(grad_h_raw_rows, grad_h_t, in.w_hr, in.prec);
        a.grad_h = ptr<T>(grad_h_raw);
        a.grad_y = nullptr;
      } else {
        a.grad_h = ptr<T>(grad_h);
        a.grad_y = in.grad_y.defined() ? ptr<T>(in.grad_y) + st.off * P : nullptr;
      }
      cuda::lstm_step_backward<T>(a, stream);
    };
    backward_steps(L, in.reverse, grad_h, dgates, in.w_hh, GradH::kOverwrite, in.prec,
                   step_kernel);
  });
  out.grad_h0 = grad_h;
  out.grad_c0 = grad_c;
  return out;
}

// The whole backward recurrence in one cooperative launch (no projection):
// SIMT persistent, or tensor-core when path.tensorcore.
BackwardState persistent_backward(const CudaPath& path, const BackwardInputs& in,
                                  Tensor& dgates) {
  const int64_t B = in.d.seq.B, H = in.d.H;
  BackwardState out;
  out.grad_h0 = at::empty({B, H}, in.opts);
  out.grad_c0 = at::empty({B, H}, in.copts);
  const Tensor offsets = step_offsets(in.L, in.d.seq.packed, dgates.device());
  const Tensor grad_h_n = present(in.grad_h_n) ? in.grad_h_n->contiguous() : Tensor();
  const Tensor grad_c_n =
      present(in.grad_c_n) ? in.grad_c_n->to(in.copts.dtype().toScalarType()).contiguous() : Tensor();
  dispatch_persistent(dgates.scalar_type(), "lstm_backward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    using C = cuda::Compute<T>;
    cuda::PersistentBackward<T> a{};
    a.T_steps = in.L.steps();
    a.B = B;
    a.H = H;
    a.reverse = in.reverse;
    a.offsets = ptr_or_null<int64_t>(offsets);
    a.gates = ptr<C>(in.gates);
    a.cells = ptr<C>(in.cells);
    a.c0 = ptr<C>(in.c0c);
    a.w_hh = ptr<T>(in.w_hh);
    a.grad_y = ptr_or_null<T>(in.grad_y);
    a.grad_cells = ptr_or_null<C>(in.grad_cells);
    a.grad_h_n = ptr_or_null<T>(grad_h_n);
    a.grad_c_n = ptr_or_null<C>(grad_c_n);
    a.dgates = ptr<T>(dgates);
    a.grad_h0 = ptr<T>(out.grad_h0);
    a.grad_c0 = ptr<C>(out.grad_c0);
    C10_CUDA_CHECK(path.tensorcore
                       ? cuda::tensorcore_lstm_backward<T>(a, path.tc_plan, current_stream())
                       : cuda::persistent_lstm_backward<T>(a, path.plan, current_stream()));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

Grads7 lstm_backward_cuda(const OptTensor& grad_y_in, const OptTensor& grad_h_n,
                          const OptTensor& grad_c_n, const OptTensor& grad_cells_in,
                          const Tensor& x_in, const Tensor& w_ih_in, const Tensor& w_hh_in,
                          const Tensor& h0, const Tensor& c0, const Tensor& y_in,
                          const Tensor& gates_in, const Tensor& cells_in, bool reverse,
                          bool need_grad_x, const OptTensor& batch_sizes,
                          const OptTensor& w_hr_in) {
  const LstmDims d =
      check_lstm_backward_args(grad_y_in, grad_h_n, grad_c_n, grad_cells_in, x_in, w_ih_in,
                               w_hh_in, h0, c0, y_in, gates_in, cells_in, batch_sizes, w_hr_in);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const int64_t N = d.seq.N, B = d.seq.B, H = d.H, P = d.P, G = 4 * H;
  // The path choice may refuse (a forced path): before any work, copies included.
  const CudaPath path = choose_cuda_path(PathCell::kLstm, B, H, x_in.scalar_type(), d.projected,
                                         d.seq.packed, /*backward=*/true, x_in.get_device());
  const StepLayout L = make_step_layout(d.seq, batch_sizes);
  const GemmPrecision prec = rnn_gemm_precision(x_in.scalar_type());
  const Tensor x = x_in.contiguous(), w_ih = w_ih_in.contiguous();
  const auto opts = x.options();
  const auto copts = opts.dtype(compute_dtype(x.scalar_type()));
  const BackwardInputs in{
      L,
      d,
      reverse,
      gates_in.contiguous(),
      cells_in.contiguous(),
      c0.to(copts.dtype().toScalarType()).contiguous(),
      w_hh_in.contiguous(),
      present(w_hr_in) ? w_hr_in->contiguous() : Tensor(),
      present(grad_y_in) ? grad_y_in->contiguous().view({N, P}) : Tensor(),
      present(grad_cells_in) ? grad_cells_in->contiguous() : Tensor(),
      grad_h_n,
      grad_c_n,
      opts,
      copts,
      prec};

  Tensor dgates = at::empty({N, G}, opts);
  const BackwardState st =
      path.persistent || path.tensorcore ? persistent_backward(path, in, dgates)
                                         : standard_backward(in, dgates);

  // Every weight gradient is one GEMM over all N rows.
  const Tensor y2d = y_in.contiguous().view({N, P});
  const Tensor h_prev = previous_states(y2d, h0.contiguous(), L, reverse, d.seq.packed);
  Tensor grad_w_ih = mm(dgates.t(), x.view({N, d.I}), prec);
  Tensor grad_w_hh = mm(dgates.t(), h_prev, prec);
  Tensor grad_bias = at::sum(dgates, {0}, /*keepdim=*/false, copts.dtype().toScalarType());
  Tensor grad_w_hr =
      d.projected ? mm(st.grad_h_all.t(), st.h_raw_all, prec) : at::empty({0}, opts);
  Tensor grad_x = need_grad_x ? mm(dgates, w_ih, prec).view(x.sizes()) : at::empty({0}, opts);
  return {grad_x,     grad_w_ih, grad_w_hh, grad_bias, st.grad_h0, to_storage(st.grad_c0, x_in),
          grad_w_hr};
}

}  // namespace

TORCH_LIBRARY_IMPL(lstm_ext, CUDA, m) {
  m.impl("lstm_forward", &lstm_forward_cuda);
  m.impl("lstm_backward", &lstm_backward_cuda);
}

}  // namespace lstm_ext::cuda_binding
