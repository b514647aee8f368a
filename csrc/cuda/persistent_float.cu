// The persistent LSTM and GRU kernels for float (one translation unit per dtype;
// see persistent_impl.cuh and persistent_gru_impl.cuh).
#include "cuda/persistent_gru_impl.cuh"
#include "cuda/persistent_impl.cuh"

LSTM_EXT_INSTANTIATE_PERSISTENT(float)
LSTM_EXT_INSTANTIATE_PERSISTENT_GRU(float)
