// The CUDA kernels for __nv_bfloat16 (one translation unit per dtype; see kernels_impl.cuh
// and gru_kernels_impl.cuh).
#include "cuda/gru_kernels_impl.cuh"
#include "cuda/kernels_impl.cuh"

LSTM_EXT_INSTANTIATE_CUDA_KERNELS(__nv_bfloat16)
LSTM_EXT_INSTANTIATE_GRU_KERNELS(__nv_bfloat16)
