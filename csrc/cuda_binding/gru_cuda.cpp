// CUDA binding of the GRU ops (gru_forward, gru_backward), structured like
// rnn_cuda.cpp and lstm_cuda.cpp: one GEMM for the input projection of every
// step, then the recurrence on one of two paths (chosen per call by
// choose_cuda_path, lstm_path.h), and the weight and input gradients as GEMMs
// after the backward recurrence.
//
// Standard path: per step one GEMM for the recurrent product and one fused
// elementwise kernel (csrc/cuda/gru_kernels.h; the loops: step_loop.h).
// Persistent path (csrc/cuda/persistent_gru.h): the whole recurrence in one
// cooperative launch. It has not run on a GPU yet, so only
// LSTM_EXT_CUDA_PATH=persistent takes it; it writes the same outputs (y,
// h_n, the saved gates; grad_gates, grad_h0) in the same layouts.
//
// float32 GEMMs follow torch.backends.cudnn.allow_tf32 (gemm.h), as
// torch.nn.GRU does on cuDNN; float16 / bfloat16 compute in float32 (the
// saved gates and the step arithmetic; the GEMMs read and write the storage
// dtype with float32 accumulation). The persistent kernel's recurrent
// products are strict float32.
//
// h lives in a full-batch state buffer [B,H]: step t reads and writes its
// first rows(t) rows, and rows a packed step does not reach keep their state,
// so the buffer ends as h_n (each sequence's state at its own last step, in
// both directions). The backward's gradient buffer ends as grad_h0 likewise.
//
// Biases: the projection GEMMs carry none. b_ih and b_hh go to the step kernel
// in the compute dtype, because r multiplies hn = gh_n + b_hn (b_hn cannot be
// folded into gi), and adding all of them in float32 there costs nothing.
//
// Gate gradients grad_gates [N,4H], per row [dr, dz, d(hn), dn] (the
// contract shared with the CPU backend): columns [0,3H) are the gradient of
// gh (the per-step recurrent GEMM and grad W_hh / grad b_hh read them at row
// stride 4H, no copy); columns [0,2H) and [3H,4H) are the gradient of gi
// (grad W_ih, grad b_ih and grad x take them as two column blocks).
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "compute_dtype.h"
#include "cuda/gru_kernels.h"
#include "cuda/persistent_gru.h"
#include "cuda_binding/cuda_tensors.h"
#include "cuda_binding/gemm.h"
#include "cuda_binding/lstm_path.h"
#include "cuda_binding/step_loop.h"
#include "rnn_checks.h"
#include "step_layout.h"
#include "tensor_args.h"

namespace lstm_ext::cuda_binding {
namespace {

using Grads6 = std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor>;

// The forward's inputs to the recurrence, shared by both paths: gi [N,3H] (x
// W_ih^T), the biases in the compute dtype (undefined: none), y2d [N,H] and
// gates [N,4H] (empty unless save) to fill.
struct ForwardInputs {
  const StepLayout& L;
  const GruDims& d;
  bool reverse, save;
  Tensor gi, b_ih_c, b_hh_c, w_hh, y2d, gates;
};

// Per step: gh = h_{t-1} W_hh^T (cuBLAS), then the fused cell update. Returns h_n.
Tensor standard_forward(const ForwardInputs& in, const Tensor& h0, GemmPrecision prec) {
  const int64_t B = in.d.seq.B, H = in.d.H, G3 = 3 * H, G4 = 4 * H;
  const auto opts = in.y2d.options();
  Tensor h_state = state_buffer(h0, {B, H}, opts);  // ends as h_n
  Tensor gh = at::empty({B, G3}, opts);
  const cudaStream_t stream = current_stream();
  LSTM_EXT_DISPATCH_CUDA(in.y2d.scalar_type(), "gru_forward_cuda", [&] {
    using C = cuda::Compute<T>;
    auto step_kernel = [&](const Step& st) {
      cuda::GruStepForward<T> a{};
      a.rows = st.rows;
      a.H = H;
      a.gi = ptr<T>(in.gi) + st.off * G3;
      a.gh = ptr<T>(gh);
      a.b_ih = ptr_or_null<C>(in.b_ih_c);
      a.b_hh = ptr_or_null<C>(in.b_hh_c);
      // In place (gru_kernels.h allows exactly this alias): rows [0, rows) of
      // the state buffer are h_{t-1} of this step's rows, including packed
      // reverse rows that start here and still hold h0.
      a.h_prev = ptr<T>(h_state);
      a.h_out = ptr<T>(in.y2d) + st.off * H;
      a.h_state = ptr<T>(h_state);
      a.gates = in.save ? ptr<C>(in.gates) + st.off * G4 : nullptr;
      cuda::gru_step_forward<T>(a, stream);
    };
    forward_steps(in.L, in.reverse, gh, h_state, in.w_hh, prec, step_kernel);
  });
  return h_state;
}

// The whole forward recurrence in one cooperative launch. Returns h_n.
Tensor persistent_forward(const CudaPath& path, const ForwardInputs& in, const Tensor& h0) {
  const int64_t B = in.d.seq.B, H = in.d.H;
  const auto opts = in.y2d.options();
  const Tensor offsets = step_offsets(in.L, in.d.seq.packed, in.y2d.device());
  const Tensor h0c = h0.contiguous();
  Tensor h_n = at::empty({B, H}, opts);
  Tensor h_buffers = at::empty({2, B, H}, opts);
  dispatch_persistent(in.y2d.scalar_type(), "gru_forward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    using C = cuda::Compute<T>;
    cuda::PersistentGruForward<T> a{};
    a.T_steps = in.L.steps();
    a.B = B;
    a.H = H;
    a.reverse = in.reverse;
    a.offsets = ptr_or_null<int64_t>(offsets);
    a.gi = ptr<T>(in.gi);
    a.b_ih = ptr_or_null<C>(in.b_ih_c);
    a.b_hh = ptr_or_null<C>(in.b_hh_c);
    a.w_hh = ptr<T>(in.w_hh);
    a.h0 = ptr<T>(h0c);
    a.y = ptr<T>(in.y2d);
    a.h_n = ptr<T>(h_n);
    a.gates = in.save ? ptr<C>(in.gates) : nullptr;
    a.h_buffers = ptr<T>(h_buffers);
    C10_CUDA_CHECK(cuda::persistent_gru_forward<T>(a, path.plan, current_stream()));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return h_n;
}

std::tuple<Tensor, Tensor, Tensor> gru_forward_cuda(const Tensor& x_in, const Tensor& w_ih_in,
                                                    const Tensor& w_hh_in, const OptTensor& b_ih,
                                                    const OptTensor& b_hh, const Tensor& h0,
                                                    bool reverse, bool save,
                                                    const OptTensor& batch_sizes) {
  const GruDims d = check_gru_forward_args(x_in, w_ih_in, w_hh_in, b_ih, b_hh, h0, batch_sizes);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const int64_t N = d.seq.N, B = d.seq.B, H = d.H, G4 = 4 * H;
  // The path choice may refuse (a forced path): before any work, copies included.
  const CudaPath path = choose_cuda_path(PathCell::kGru, B, H, x_in.scalar_type(),
                                         /*projected=*/false, d.seq.packed, /*backward=*/false,
                                         x_in.get_device());
  const StepLayout L = make_step_layout(d.seq, batch_sizes);
  const Tensor x = x_in.contiguous(), w_ih = w_ih_in.contiguous(), w_hh = w_hh_in.contiguous();
  const auto opts = x.options();
  const auto compute = compute_dtype(x.scalar_type());
  const auto copts = opts.dtype(compute);
  const GemmPrecision prec = rnn_gemm_precision(x.scalar_type());

  // Everything the recurrence touches is allocated here or in its path, once per call.
  const Tensor gi = mm(x.view({N, d.I}), w_ih.t(), prec);  // [N,3H]
  const Tensor b_ih_c = present(b_ih) ? b_ih->to(compute).contiguous() : Tensor();
  const Tensor b_hh_c = present(b_hh) ? b_hh->to(compute).contiguous() : Tensor();
  Tensor y = at::empty(d.seq.shape(H), opts);
  Tensor gates = save ? at::empty({N, G4}, copts) : at::empty({0}, copts);
  const ForwardInputs in{L, d, reverse, save, gi, b_ih_c, b_hh_c, w_hh, y.view({N, H}), gates};
  const Tensor h_n = path.persistent ? persistent_forward(path, in, h0)
                                     : standard_forward(in, h0, prec);
  return {y, h_n, save ? gates.view(d.seq.shape(G4)) : gates};
}

// The backward's inputs to the recurrence, shared by both paths; grad_gates
// [N,4H] is filled by it.
struct BackwardInputs {
  const StepLayout& L;
  const GruDims& d;
  bool reverse;
  Tensor gates, y2d, h0, w_hh, grad_y;  // grad_y [N,H] may be undefined
  OptTensor grad_h_n;
};

// Per step: the fused gate-gradient kernel, then grad_h += d(gh)_t W_hh
// (cuBLAS, beta = 1). Returns grad_h0.
Tensor standard_backward(const BackwardInputs& in, Tensor& grad_gates, GemmPrecision prec) {
  const int64_t B = in.d.seq.B, H = in.d.H, G3 = 3 * H, G4 = 4 * H;
  const StepLayout& L = in.L;
  const Tensor d_gh = grad_gates.narrow(1, 0, G3);  // [dr, dz, d(hn)]: the recurrence's operand
  Tensor grad_h = state_buffer(in.grad_h_n, {B, H}, in.y2d.options());  // ends as grad_h0
  const cudaStream_t stream = current_stream();
  LSTM_EXT_DISPATCH_CUDA(in.y2d.scalar_type(), "gru_backward_cuda", [&] {
    using C = cuda::Compute<T>;
    auto step_kernel = [&](const Step& st) {
      const int64_t prev = L.previous(st.t, in.reverse);
      cuda::GruStepBackward<T> a{};
      a.rows = st.rows;
      a.H = H;
      a.rows_continuing = L.rows_continuing(st.t, in.reverse);
      a.gates = ptr<C>(in.gates) + st.off * G4;
      // h_{t-1}: the forward's previously visited step's output, else h0.
      a.h_prev = prev >= 0 ? ptr<T>(in.y2d) + L.offset(prev) * H : nullptr;
      a.h0 = ptr<T>(in.h0);
      a.grad_y = in.grad_y.defined() ? ptr<T>(in.grad_y) + st.off * H : nullptr;
      a.grad_h = ptr<T>(grad_h);  // left holding dh z, to which the GEMM adds d(gh) W_hh
      a.grad_gates = ptr<T>(grad_gates) + st.off * G4;
      cuda::gru_step_backward<T>(a, stream);
    };
    backward_steps(L, in.reverse, grad_h, d_gh, in.w_hh, GradH::kAccumulate, prec, step_kernel);
  });
  return grad_h;
}

// The whole backward recurrence in one cooperative launch. Returns grad_h0.
Tensor persistent_backward(const CudaPath& path, const BackwardInputs& in, Tensor& grad_gates) {
  const int64_t B = in.d.seq.B, H = in.d.H;
  const Tensor offsets = step_offsets(in.L, in.d.seq.packed, grad_gates.device());
  const Tensor grad_h_n = present(in.grad_h_n) ? in.grad_h_n->contiguous() : Tensor();
  Tensor grad_h0 = at::empty({B, H}, in.y2d.options());
  dispatch_persistent(grad_gates.scalar_type(), "gru_backward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    using C = cuda::Compute<T>;
    cuda::PersistentGruBackward<T> a{};
    a.T_steps = in.L.steps();
    a.B = B;
    a.H = H;
    a.reverse = in.reverse;
    a.offsets = ptr_or_null<int64_t>(offsets);
    a.gates = ptr<C>(in.gates);
    a.y = ptr<T>(in.y2d);
    a.h0 = ptr<T>(in.h0);
    a.w_hh = ptr<T>(in.w_hh);
    a.grad_y = ptr_or_null<T>(in.grad_y);
    a.grad_h_n = ptr_or_null<T>(grad_h_n);
    a.grad_gates = ptr<T>(grad_gates);
    a.grad_h0 = ptr<T>(grad_h0);
    C10_CUDA_CHECK(cuda::persistent_gru_backward<T>(a, path.plan, current_stream()));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return grad_h0;
}

Grads6 gru_backward_cuda(const OptTensor& grad_y_in, const OptTensor& grad_h_n,
                         const Tensor& x_in, const Tensor& w_ih_in, const Tensor& w_hh_in,
                         const Tensor& h0_in, const Tensor& y_in, const Tensor& gates_in,
                         bool reverse, bool need_grad_x, const OptTensor& batch_sizes) {
  const GruDims d = check_gru_backward_args(grad_y_in, grad_h_n, x_in, w_ih_in, w_hh_in, h0_in,
                                            y_in, gates_in, batch_sizes);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const int64_t N = d.seq.N, H = d.H, G3 = 3 * H, G4 = 4 * H;
  // The path choice may refuse (a forced path): before any work, copies included.
  const CudaPath path = choose_cuda_path(PathCell::kGru, d.seq.B, H, x_in.scalar_type(),
                                         /*projected=*/false, d.seq.packed, /*backward=*/true,
                                         x_in.get_device());
  const StepLayout L = make_step_layout(d.seq, batch_sizes);
  const Tensor x = x_in.contiguous(), w_ih = w_ih_in.contiguous();
  const auto opts = x.options();
  const auto compute = compute_dtype(x.scalar_type());
  const GemmPrecision prec = rnn_gemm_precision(x.scalar_type());
  const BackwardInputs in{
      L,
      d,
      reverse,
      gates_in.contiguous().view({N, G4}),
      y_in.contiguous().view({N, H}),
      h0_in.contiguous(),
      w_hh_in.contiguous(),
      present(grad_y_in) ? grad_y_in->contiguous().view({N, H}) : Tensor(),
      grad_h_n};

  Tensor grad_gates = at::empty({N, G4}, opts);
  Tensor grad_h0 = path.persistent ? persistent_backward(path, in, grad_gates)
                                   : standard_backward(in, grad_gates, prec);

  // The weight gradients: over all N rows at once, each a GEMM on column
  // blocks of grad_gates (strided views, no copies).
  const Tensor x2d = x.view({N, d.I});
  const Tensor d_gh = grad_gates.narrow(1, 0, G3);        // [dr, dz, d(hn)]
  const Tensor d_gi_rz = grad_gates.narrow(1, 0, 2 * H);  // [dr, dz]
  const Tensor d_gi_n = grad_gates.narrow(1, G3, H);      // dn
  const Tensor h_prev = previous_states(in.y2d, in.h0, L, reverse, d.seq.packed);
  Tensor grad_w_hh = mm(d_gh.t(), h_prev, prec);
  Tensor grad_w_ih = at::empty({G3, d.I}, opts);
  Tensor grad_w_ih_rz = row_block(grad_w_ih, 0, 2 * H), grad_w_ih_n = row_block(grad_w_ih, 2 * H, H);
  mm_out(grad_w_ih_rz, d_gi_rz.t(), x2d, prec);
  mm_out(grad_w_ih_n, d_gi_n.t(), x2d, prec);
  // Bias gradients: float sums in the compute dtype. Fresh tensors, not views
  // of one buffer, so the op's outputs never alias each other.
  const Tensor sums = at::sum(grad_gates, {0}, /*keepdim=*/false, compute);  // [4H]
  Tensor grad_b_hh = sums.narrow(0, 0, G3).clone();
  Tensor grad_b_ih = at::cat({sums.narrow(0, 0, 2 * H), sums.narrow(0, G3, H)});
  Tensor grad_x = at::empty({0}, opts);
  if (need_grad_x) {
    grad_x = at::empty({N, d.I}, opts);
    mm_out(grad_x, d_gi_rz, w_ih.narrow(0, 0, 2 * H), prec);
    mm_add_out(grad_x, d_gi_n, w_ih.narrow(0, 2 * H, H), prec);
    grad_x = grad_x.view(x.sizes());
  }
  return {grad_x, grad_w_ih, grad_w_hh, grad_b_ih, grad_b_hh, grad_h0};
}

}  // namespace

TORCH_LIBRARY_IMPL(lstm_ext, CUDA, m) {
  m.impl("gru_forward", &gru_forward_cuda);
  m.impl("gru_backward", &gru_backward_cuda);
}

}  // namespace lstm_ext::cuda_binding
