// The CUDA kernels for float (one translation unit per dtype; see kernels_impl.cuh
// and gru_kernels_impl.cuh).
#include "cuda/gru_kernels_impl.cuh"
#include "cuda/kernels_impl.cuh"

LSTM_EXT_INSTANTIATE_CUDA_KERNELS(float)
LSTM_EXT_INSTANTIATE_GRU_KERNELS(float)
