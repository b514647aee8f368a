// The persistent LSTM kernels for __half (one translation unit per dtype; see persistent_impl.cuh).
#include "cuda/persistent_impl.cuh"

LSTM_EXT_INSTANTIATE_PERSISTENT(__half)
