// The persistent LSTM and GRU kernels for __half (one translation unit per dtype;
// see persistent_impl.cuh and persistent_gru_impl.cuh).
#include "cuda/persistent_gru_impl.cuh"
#include "cuda/persistent_impl.cuh"

LSTM_EXT_INSTANTIATE_PERSISTENT(__half)
LSTM_EXT_INSTANTIATE_PERSISTENT_GRU(__half)
