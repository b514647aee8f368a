// The tensor-core persistent LSTM kernels for __nv_bfloat16 (one translation unit per dtype; see
// tensorcore_impl.cuh).
#include "cuda/tensorcore_impl.cuh"

LSTM_EXT_INSTANTIATE_TENSORCORE(__nv_bfloat16)
