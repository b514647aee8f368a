// The persistent LSTM and GRU kernels for __nv_bfloat16 (one translation unit per dtype;
// see persistent_impl.cuh and persistent_gru_impl.cuh).
#include "cuda/persistent_gru_impl.cuh"
#include "cuda/persistent_impl.cuh"

LSTM_EXT_INSTANTIATE_PERSISTENT(__nv_bfloat16)
LSTM_EXT_INSTANTIATE_PERSISTENT_GRU(__nv_bfloat16)
