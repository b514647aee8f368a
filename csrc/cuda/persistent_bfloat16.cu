// The persistent LSTM kernels for __nv_bfloat16 (one translation unit per dtype; see persistent_impl.cuh).
#include "cuda/persistent_impl.cuh"

LSTM_EXT_INSTANTIATE_PERSISTENT(__nv_bfloat16)
