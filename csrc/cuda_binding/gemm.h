// The CUDA binding's matrix products, at the precision torch.nn.LSTM uses.
//
// nn.LSTM on CUDA is cuDNN, whose float32 GEMMs run on the tensor cores in
// TF32 unless torch.backends.cudnn.allow_tf32 is False (the default is True;
// torch >= 2.9 also reads torch.backends.cudnn.rnn.fp32_precision). ATen's
// at::mm follows another flag, torch.backends.cuda.matmul.allow_tf32 (False by
// default), so a binding built on at::mm alone computes strict float32 where
// nn.LSTM computes TF32: slower, and not the function it replaces. The float32
// products here therefore call cuBLAS directly, with TF32 exactly when the
// cuDNN RNN flag allows it, so lstm_ext computes what nn.LSTM computes under
// the same settings, and `torch.backends.cudnn.allow_tf32 = False` makes both
// strict. float64 never uses TF32; float16 and bfloat16 go through at::mm
// (float32 accumulation, torch's reduced-precision-reduction settings).
//
// Every product runs on the current stream with torch's cuBLAS handle and
// workspace, so it may be captured in a CUDA graph.
#pragma once

#include <ATen/ATen.h>

namespace lstm_ext::cuda_binding {

// How an op call's float32 products are computed; read once per op call.
struct GemmPrecision {
  bool tf32 = false;
};

// TF32 iff `dtype` is float32 and torch's cuDNN RNN setting allows it.
GemmPrecision rnn_gemm_precision(at::ScalarType dtype);

// out [m,n] = a [m,k] b [k,n]. a and b may be transposed views (either stride
// 1); out is written in place and must have unit column stride (a row block of
// a contiguous buffer is fine). No aliasing between out and a or b.
void mm_out(at::Tensor& out, const at::Tensor& a, const at::Tensor& b, GemmPrecision p);

// out [m,n] += a [m,k] b [k,n] (cuBLAS beta = 1), same operand rules and
// precision as mm_out: the GRU backward adds the recurrent part of the
// gradient at h_{t-1} to the direct part its step kernel left in `out`, and
// its input gradient sums two column blocks, each without a temporary.
void mm_add_out(at::Tensor& out, const at::Tensor& a, const at::Tensor& b, GemmPrecision p);

// A fresh contiguous a b.
at::Tensor mm(const at::Tensor& a, const at::Tensor& b, GemmPrecision p);

}  // namespace lstm_ext::cuda_binding
