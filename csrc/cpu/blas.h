// Row-major GEMM on raw pointers for the per-step recurrent products.
//
// Called inside the time loop, so it must not go through the ATen dispatcher
// or allocate: it calls the BLAS that torch itself links (MKL's sgemm_/dgemm_
// in the x86 wheels) directly. Where torch ships no such symbol, it falls back
// to ATen's addmm on borrowed memory (correct, but with per-call overhead).
#pragma once

#include <cstdint>

namespace lstm_ext::cpu {

// C[M,N] = alpha * op(A) @ op(B) + beta * C, all row-major.
// op(A) is [M,K]: A is [M,K] with row stride lda, or [K,M] if trans_a.
// op(B) is [K,N]: B is [K,N] with row stride ldb, or [N,K] if trans_b.
// C may not alias A or B. Sizes must fit in 32 bits (per-step shapes do).
template <typename T>
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, T alpha, const T* A,
          int64_t lda, const T* B, int64_t ldb, T beta, T* C, int64_t ldc);

}  // namespace lstm_ext::cpu
