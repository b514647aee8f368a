// The tensor-core persistent LSTM kernels for float (one translation unit per dtype; see
// tensorcore_impl.cuh).
#include "cuda/tensorcore_impl.cuh"

LSTM_EXT_INSTANTIATE_TENSORCORE(float)
