// Definitions of the tensor-core persistent LSTM kernels (tensorcore.h),
// instantiated per dtype by tensorcore_<dtype>.cu with
// LSTM_EXT_INSTANTIATE_TENSORCORE.
//
// Shared memory of a block (regions and sizes: tensorcore_plan.h):
//   weights  forward [4U][w_ld]: row q = g*U + u is gate g of unit u0 + u;
//            backward [U][w_ld]: row u is column u0 + u of W_hh (all 4H
//            gate rows along K). Units past H and columns past K are zero.
//   stage    [tile_rows][s_ld]: K chunk of the staged rows (h_{t-1} forward,
//            dgates of the previously visited step backward); columns past K
//            in the last chunk are zero.
//   acc      [ksplit][..][..] floats: one slot of partial products per K
//            split (summed over the K chunks); forward slot [4U][tile_rows]
//            (gate row, batch row), backward slot [tile_rows][U] (batch row,
//            unit).
//   state    forward c [B][U]; backward dh [B][U], dc [B][U] (floats).
//
// MMA roles: forward A = weights (M = 4U gate rows), B = staged h rows
// (N = batch rows, 8 per n-tile); backward A = staged dgates rows (M = batch
// rows, 16 per m-tile), B = weights (N = U units). Both operands are
// K-contiguous in shared memory, which is what mma.sync .row.col reads.
//
// Data other blocks wrote in the previous step (h_{t-1}, dgates) is read
// through L2 only (cp.async.cg, or __ldcg): L1 is not coherent between SMs;
// the grid barrier orders those writes before the reads.
#pragma once

#include <cooperative_groups.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/cooperative_launch.cuh"
#include "cuda/kernels_impl.cuh"
#include "cuda/persistent_cell.cuh"
#include "cuda/tensorcore.h"

namespace lstm_ext::cuda {
namespace tensorcore_kernels {

namespace cg = cooperative_groups;
using detail::cast_to;
using persistent_cell::first_row;
using persistent_cell::lstm_unit_backward;
using persistent_cell::lstm_unit_forward;
using persistent_cell::step_at;
using persistent_cell::to_float;


// ------------------------------------------------------------ MMA fragments
// Fragment layouts (PTX ISA, "Matrix fragments for mma.m16n8k16 / m16n8k8"):
// lane = 4 * group + tig. A (16 x K, row-major): rows group and group + 8;
// B (K x 8, "col", i.e. stored [n][k]): column group; C (16 x 8): rows group
// and group + 8, columns 2 tig and 2 tig + 1. A and B below point at the
// tile's first row and first K column in shared memory.

__device__ __forceinline__ uint32_t load_pair(const void* p) {
  return *reinterpret_cast<const uint32_t*>(p);
}

// m16n8k16 for bfloat16 / float16: each 32-bit register holds two
// consecutive K elements.
template <typename T>
struct Mma16 {
  static constexpr int kK = 16;
  __device__ static __forceinline__ void load_a(const T* A, int64_t lda, int lane, uint32_t (&a)[4]) {
    const T* p = A + (lane >> 2) * lda + 2 * (lane & 3);
    a[0] = load_pair(p);
    a[1] = load_pair(p + 8 * lda);
    a[2] = load_pair(p + 8);
    a[3] = load_pair(p + 8 * lda + 8);
  }
  __device__ static __forceinline__ void load_b(const T* Bm, int64_t ldb, int lane, uint32_t (&b)[2]) {
    const T* p = Bm + (lane >> 2) * ldb + 2 * (lane & 3);
    b[0] = load_pair(p);
    b[1] = load_pair(p + 8);
  }
};

template <typename T>
struct Mma;

template <>
struct Mma<__nv_bfloat16> : Mma16<__nv_bfloat16> {
  __device__ static __forceinline__ void mma(float (&d)[4], const uint32_t (&a)[4],
                                             const uint32_t (&b)[2]) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
        "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#else
    __trap();  // the binding never launches these kernels below sm_80
#endif
  }
};

template <>
struct Mma<__half> : Mma16<__half> {
  __device__ static __forceinline__ void mma(float (&d)[4], const uint32_t (&a)[4],
                                             const uint32_t (&b)[2]) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
        "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#else
    __trap();
#endif
  }
};

// float32 as TF32, m16n8k8: one element per register, rounded to nearest
// (cvt.rna) rather than left to the MMA, which would truncate the low bits.
__device__ __forceinline__ uint32_t to_tf32(float x) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  uint32_t r;
  asm("cvt.rna.tf32.f32 %0, %1;\n" : "=r"(r) : "f"(x));
  return r;
#else
  return __float_as_uint(x);
#endif
}

template <>
struct Mma<float> {
  static constexpr int kK = 8;
  __device__ static __forceinline__ void load_a(const float* A, int64_t lda, int lane,
                                                uint32_t (&a)[4]) {
    const float* p = A + (lane >> 2) * lda + (lane & 3);
    a[0] = to_tf32(p[0]);
    a[1] = to_tf32(p[8 * lda]);
    a[2] = to_tf32(p[4]);
    a[3] = to_tf32(p[8 * lda + 4]);
  }
  __device__ static __forceinline__ void load_b(const float* Bm, int64_t ldb, int lane,
                                                uint32_t (&b)[2]) {
    const float* p = Bm + (lane >> 2) * ldb + (lane & 3);
    b[0] = to_tf32(p[0]);
    b[1] = to_tf32(p[4]);
  }
  __device__ static __forceinline__ void mma(float (&d)[4], const uint32_t (&a)[4],
                                             const uint32_t (&b)[2]) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile(
        "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 "
        "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#else
    __trap();
#endif
  }
};

// out[ks][m][n] = (accumulate ? out[ks][m][n] : 0) + sum over ks's share of
// k < k_steps * kK of A[m][k] * B[n][k], for m < 16 m_tiles, n < 8 n_tiles;
// out slot ks at out + ks * slot_stride, row stride ldo. A [16 m_tiles][lda],
// B [8 n_tiles][ldb] in shared memory. Each out element belongs to exactly
// one warp item, so the += of a later K chunk races with nothing.
//
// A warp item is up to MW m-tiles x NW n-tiles x one K share: per K step it
// loads MW A fragments and NW B fragments for MW x NW MMAs, so each operand
// is read from shared memory once per item rather than once per MMA (shared
// memory bandwidth, not the tensor cores, bounds a step at B >= 64). An item
// whose K share is empty writes zeros (or adds nothing), so every slot is
// complete.
template <typename T>
__device__ void warp_mma(const T* A, int64_t lda, int m_tiles, const T* Bm, int64_t ldb,
                         int n_tiles, int k_steps, int ksplit, float* out, int64_t ldo,
                         int64_t slot_stride, bool accumulate) {
  using M = Mma<T>;
  constexpr int MW = kTensorCoreMTilesPerWarp, NW = kTensorCoreNTilesPerWarp;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, warps = blockDim.x / 32;
  const int m_groups = (m_tiles + MW - 1) / MW, n_groups = (n_tiles + NW - 1) / NW;
  const int items = m_groups * n_groups * ksplit;
  const int per_split = (k_steps + ksplit - 1) / ksplit;
  for (int item = warp; item < items; item += warps) {
    const int ks = item % ksplit, rest = item / ksplit;
    const int ng = rest % n_groups, mg = rest / n_groups;
    const int k_begin = ks * per_split;
    const int k_end = k_begin + per_split < k_steps ? k_begin + per_split : k_steps;
    float acc[MW][NW][4] = {};
#pragma unroll 2
    for (int kk = k_begin; kk < k_end; ++kk) {
      const int64_t k0 = static_cast<int64_t>(kk) * M::kK;
      uint32_t a[MW][4];
#pragma unroll
      for (int i = 0; i < MW; ++i) {
        const int mt = mg * MW + i;
        if (mt < m_tiles) M::load_a(A + static_cast<int64_t>(mt) * 16 * lda + k0, lda, lane, a[i]);
      }
#pragma unroll
      for (int j = 0; j < NW; ++j) {
        const int nt = ng * NW + j;
        if (nt >= n_tiles) continue;  // uniform across the warp: mma.sync needs every lane
        uint32_t b[2];
        M::load_b(Bm + static_cast<int64_t>(nt) * 8 * ldb + k0, ldb, lane, b);
#pragma unroll
        for (int i = 0; i < MW; ++i) {
          if (mg * MW + i < m_tiles) M::mma(acc[i][j], a[i], b);
        }
      }
    }
    float* o = out + ks * slot_stride;
#pragma unroll
    for (int i = 0; i < MW; ++i) {
      const int mt = mg * MW + i;
      if (mt >= m_tiles) continue;
      const int64_t m = static_cast<int64_t>(mt) * 16 + (lane >> 2);
#pragma unroll
      for (int j = 0; j < NW; ++j) {
        const int nt = ng * NW + j;
        if (nt >= n_tiles) continue;
        const int64_t n = static_cast<int64_t>(nt) * 8 + 2 * (lane & 3);
        float* o0 = o + m * ldo + n;
        float* o8 = o + (m + 8) * ldo + n;
        if (accumulate) {
          o0[0] += acc[i][j][0];
          o0[1] += acc[i][j][1];
          o8[0] += acc[i][j][2];
          o8[1] += acc[i][j][3];
        } else {
          o0[0] = acc[i][j][0];
          o0[1] = acc[i][j][1];
          o8[0] = acc[i][j][2];
          o8[1] = acc[i][j][3];
        }
      }
    }
  }
}

// ------------------------------------------------------------------ staging

__device__ __forceinline__ void copy16_async(void* smem, const void* gmem) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(s), "l"(gmem) : "memory");
#else
  *reinterpret_cast<int4*>(smem) = __ldcg(reinterpret_cast<const int4*>(gmem));
#endif
}

__device__ __forceinline__ void wait_async_copies() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.wait_all;\n" ::: "memory");
#endif
}

// dst[r][k] = src[r * ld_src + c0 + k] for r < nr and k < len = min(kchunk,
// valid - c0), and 0 for len <= k < kchunk (K padding: zeros, so that padding
// never turns a product into NaN). 16-byte cp.async.cg copies when every row
// start is 16-byte aligned, else element loads through L2. Ends with a block
// barrier: the stage is complete and visible to every warp.
template <typename T>
__device__ void stage_chunk(T* dst, int64_t ld_dst, const T* src, int64_t ld_src, int nr,
                            int64_t c0, int64_t kchunk, int64_t valid) {
  constexpr int64_t V = 16 / sizeof(T);
  const int64_t left = valid - c0;
  const int64_t len = left < kchunk ? (left > 0 ? left : 0) : kchunk;
  const bool vector = ld_src % V == 0 && len % V == 0 && c0 % V == 0 &&
                      reinterpret_cast<uintptr_t>(src) % 16 == 0;
  if (vector) {
    const int64_t per_row = len / V;
    for (int64_t e = threadIdx.x; e < nr * per_row; e += blockDim.x) {
      const int64_t r = e / per_row, v = (e - r * per_row) * V;
      copy16_async(dst + r * ld_dst + v, src + r * ld_src + c0 + v);
    }
  } else {
    for (int64_t e = threadIdx.x; e < nr * len; e += blockDim.x) {
      const int64_t r = e / len, k = e - r * len;
      dst[r * ld_dst + k] = __ldcg(src + r * ld_src + c0 + k);
    }
  }
  const int64_t tail = kchunk - len;
  for (int64_t e = threadIdx.x; e < nr * tail; e += blockDim.x) {
    const int64_t r = e / tail, k = len + (e - r * tail);
    dst[r * ld_dst + k] = cast_to<T>(0.f);
  }
  wait_async_copies();
  __syncthreads();
}

// For rows [0, nr) of `src` (row stride ld_src = valid K): every K chunk is
// staged and multiplied, later chunks adding to the first's slots (in chunk
// order: deterministic); afterwards acc holds ksplit complete slots.
// forward: A = weights, B = stage; backward: A = stage, B = weights.
template <typename T, bool kBackward>
__device__ void recurrent_product(const TensorCoreLayout& l, T* weights, T* stage, float* acc,
                                  const T* src, int64_t ld_src, int nr) {
  const int64_t slot = static_cast<int64_t>(l.tile_rows) * l.w_rows;
  for (int c = 0; c < l.chunks; ++c) {
    const int64_t c0 = static_cast<int64_t>(c) * l.kchunk;
    const int64_t cols = l.k_pad - c0 < l.kchunk ? l.k_pad - c0 : l.kchunk;
    stage_chunk(stage, l.s_ld, src, ld_src, nr, c0, cols, ld_src);
    const int k_steps = static_cast<int>(cols / Mma<T>::kK);
    if (kBackward) {
      warp_mma(stage, l.s_ld, (nr + 15) / 16, weights + c0, l.w_ld, l.w_rows / 8, k_steps,
               l.ksplit, acc, l.w_rows, slot, c > 0);
    } else {
      warp_mma(weights + c0, l.w_ld, l.w_rows / 16, stage, l.s_ld, (nr + 7) / 8, k_steps,
               l.ksplit, acc, l.tile_rows, slot, c > 0);
    }
    __syncthreads();  // acc complete; the stage may be overwritten
  }
}

// The sum over every slot of acc at `index` (fixed order: deterministic).
__device__ __forceinline__ float sum_slots(const TensorCoreLayout& l, const float* acc,
                                           int64_t index) {
  const int64_t slot = static_cast<int64_t>(l.tile_rows) * l.w_rows;
  float v = 0.f;
  for (int s = 0; s < l.ksplit; ++s) v += acc[s * slot + index];
  return v;
}

// A hint: bring the line holding p into L2. The next step's projection (or
// saved activations) does not depend on the barrier, so asking for it before
// the barrier takes its HBM latency off the next cell update's critical path.
__device__ __forceinline__ void prefetch_l2(const void* p) {
#if defined(__CUDA_ARCH__)
  asm volatile("prefetch.global.L2 [%0];\n" ::"l"(p));
#endif
}

// ------------------------------------------------------------------ forward

template <typename T>
__global__ void __launch_bounds__(kTensorCoreThreads, 1)
    forward_kernel(PersistentForward<T> a, TensorCoreLayout l) {
  extern __shared__ __align__(16) unsigned char smem_base[];
  cg::grid_group grid = cg::this_grid();
  const int64_t T_steps = a.T_steps, B = a.B, H = a.H, G = 4 * H;
  const int U = l.units;
  const int64_t u0 = static_cast<int64_t>(blockIdx.x) * U;
  const int units = static_cast<int>(H - u0 < U ? H - u0 : U);
  T* w = reinterpret_cast<T*>(smem_base);
  T* stage = reinterpret_cast<T*>(smem_base + l.stage_offset);
  float* acc = reinterpret_cast<float*>(smem_base + l.acc_offset);
  float* c = reinterpret_cast<float*>(smem_base + l.state_offset);  // [B][U]

  // The block's W_hh rows, once for the whole sequence.
  for (int64_t e = threadIdx.x; e < l.w_rows * l.w_ld; e += blockDim.x) {
    const int64_t q = e / l.w_ld, k = e - q * l.w_ld, g = q / U, u = q - g * U;
    w[e] = u < units && k < H ? a.w_hh[(g * H + u0 + u) * H + k] : cast_to<T>(0.f);
  }
  T* h_first = a.h_buffers;
  for (int64_t e = threadIdx.x; e < B * units; e += blockDim.x) {
    const int64_t r = e / units, u = e - r * units, j = u0 + u;
    c[r * U + u] = static_cast<float>(a.c0[r * H + j]);
    h_first[r * H + j] = a.h0[r * H + j];
  }
  grid.sync();

  for (int64_t s = 0; s < T_steps; ++s) {
    const int64_t t = step_at(T_steps, s, a.reverse);
    const int64_t base = first_row(a.offsets, t, B), rows = first_row(a.offsets, t + 1, B) - base;
    const T* h_prev = a.h_buffers + (s & 1) * B * H;
    T* h_next = a.h_buffers + ((s + 1) & 1) * B * H;
    for (int64_t r0 = 0; r0 < rows; r0 += l.tile_rows) {
      const int nr = static_cast<int>(rows - r0 < l.tile_rows ? rows - r0 : l.tile_rows);
      recurrent_product<T, false>(l, w, stage, acc, h_prev + r0 * H, H, nr);
      for (int64_t e = threadIdx.x; e < nr * units; e += blockDim.x) {
        const int64_t r = e / units, u = e - r * units, row = r0 + r, j = u0 + u, n = base + row;
        float rec[4];
#pragma unroll
        for (int g = 0; g < 4; ++g) rec[g] = sum_slots(l, acc, (g * U + u) * l.tile_rows + r);
        lstm_unit_forward(a, rec, n, row, j, H, c[row * U + u], h_next);
      }
      __syncthreads();  // acc is read before the next tile's products overwrite it
    }
    // Rows this step does not reach (packed) keep their h.
    for (int64_t e = threadIdx.x; e < (B - rows) * units; e += blockDim.x) {
      const int64_t row = rows + e / units, j = u0 + e % units;
      h_next[row * H + j] = h_prev[row * H + j];
    }
    if (s + 1 < T_steps) {  // the next step's projection of this block's units, into L2
      const int64_t tn = step_at(T_steps, s + 1, a.reverse);
      const int64_t nbase = first_row(a.offsets, tn, B);
      const int64_t nrows = first_row(a.offsets, tn + 1, B) - nbase;
      for (int64_t e = threadIdx.x; e < nrows * 4; e += blockDim.x) {
        prefetch_l2(a.proj + (nbase + e / 4) * G + (e % 4) * H + u0);
      }
    }
    grid.sync();
  }

  const T* h_last = a.h_buffers + (T_steps & 1) * B * H;
  for (int64_t e = threadIdx.x; e < B * units; e += blockDim.x) {
    const int64_t r = e / units, u = e - r * units, j = u0 + u;
    a.h_n[r * H + j] = h_last[r * H + j];
    a.c_n[r * H + j] = c[r * U + u];
  }
}

// ----------------------------------------------------------------- backward

// dh[row][u] <- (dgates rows [0, rows) of the step at `base`) . W_hh[:, u0 + u]
// for u < units; rows past `rows` keep their value.
template <typename T>
__device__ void recurrent_gradient(const TensorCoreLayout& l, T* wc, T* stage, float* acc,
                                   const T* dgates, int64_t base, int64_t rows, int64_t H,
                                   int units, float* dh) {
  const int64_t G = 4 * H;
  const int U = l.units;
  for (int64_t r0 = 0; r0 < rows; r0 += l.tile_rows) {
    const int nr = static_cast<int>(rows - r0 < l.tile_rows ? rows - r0 : l.tile_rows);
    recurrent_product<T, true>(l, wc, stage, acc, dgates + (base + r0) * G, G, nr);
    for (int64_t e = threadIdx.x; e < nr * units; e += blockDim.x) {
      const int64_t r = e / units, u = e - r * units;
      dh[(r0 + r) * U + u] = sum_slots(l, acc, r * l.w_rows + u);
    }
    __syncthreads();
  }
}

template <typename T>
__global__ void __launch_bounds__(kTensorCoreThreads, 1)
    backward_kernel(PersistentBackward<T> a, TensorCoreLayout l) {
  extern __shared__ __align__(16) unsigned char smem_base[];
  cg::grid_group grid = cg::this_grid();
  const int64_t T_steps = a.T_steps, B = a.B, H = a.H, G = 4 * H;
  const int U = l.units;
  const int64_t u0 = static_cast<int64_t>(blockIdx.x) * U;
  const int units = static_cast<int>(H - u0 < U ? H - u0 : U);
  T* wc = reinterpret_cast<T*>(smem_base);  // [U][w_ld]
  T* stage = reinterpret_cast<T*>(smem_base + l.stage_offset);
  float* acc = reinterpret_cast<float*>(smem_base + l.acc_offset);
  float* dh = reinterpret_cast<float*>(smem_base + l.state_offset);  // [B][U]
  float* dc = dh + B * U;                                             // [B][U]

  for (int64_t e = threadIdx.x; e < l.w_rows * l.w_ld; e += blockDim.x) {
    const int64_t u = e / l.w_ld, q = e - u * l.w_ld;
    wc[e] = u < units && q < G ? a.w_hh[q * H + u0 + u] : cast_to<T>(0.f);
  }
  for (int64_t e = threadIdx.x; e < B * units; e += blockDim.x) {
    const int64_t r = e / units, u = e - r * units, j = u0 + u;
    dh[r * U + u] = a.grad_h_n ? to_float(a.grad_h_n[r * H + j]) : 0.f;
    dc[r * U + u] = a.grad_c_n ? static_cast<float>(a.grad_c_n[r * H + j]) : 0.f;
  }
  __syncthreads();

  // Visit the forward's steps last to first: forward step index sf = T-1-s.
  for (int64_t s = 0; s < T_steps; ++s) {
    const int64_t sf = T_steps - 1 - s;
    const int64_t t = step_at(T_steps, sf, a.reverse);
    const int64_t base = first_row(a.offsets, t, B), rows = first_row(a.offsets, t + 1, B) - base;
    if (s > 0) {  // the gradient at h_t from the step visited just before
      const int64_t tp = step_at(T_steps, sf + 1, a.reverse);
      const int64_t tp_base = first_row(a.offsets, tp, B);
      recurrent_gradient(l, wc, stage, acc, a.dgates, tp_base,
                         first_row(a.offsets, tp + 1, B) - tp_base, H, units, dh);
    }
    // c_{t-1}: the forward's previous step (prev_rows rows continue), else c0.
    const bool has_prev = sf > 0;
    const int64_t tf = has_prev ? step_at(T_steps, sf - 1, a.reverse) : 0;
    const int64_t prev_base = has_prev ? first_row(a.offsets, tf, B) : 0;
    const int64_t prev_rows = has_prev ? first_row(a.offsets, tf + 1, B) - prev_base : 0;
    for (int64_t e = threadIdx.x; e < rows * units; e += blockDim.x) {
      const int64_t row = e / units, u = e - row * units, j = u0 + u, n = base + row;
      lstm_unit_backward(a, n, row, j, H, prev_base, prev_rows, dh[row * U + u], dc[row * U + u]);
    }
    if (s + 1 < T_steps) {  // the next visited step's gates and cells of these units, into L2
      const int64_t tn = step_at(T_steps, sf - 1, a.reverse);
      const int64_t nbase = first_row(a.offsets, tn, B);
      const int64_t nrows = first_row(a.offsets, tn + 1, B) - nbase;
      for (int64_t e = threadIdx.x; e < nrows * 5; e += blockDim.x) {
        const int64_t n = nbase + e / 5, g = e % 5;
        prefetch_l2(g < 4 ? a.gates + n * G + g * H + u0 : a.cells + n * H + u0);
      }
    }
    grid.sync();
  }

  if (T_steps > 0) {  // the gradient at h0 from the first forward step
    const int64_t t0 = step_at(T_steps, 0, a.reverse);
    const int64_t t0_base = first_row(a.offsets, t0, B);
    recurrent_gradient(l, wc, stage, acc, a.dgates, t0_base,
                       first_row(a.offsets, t0 + 1, B) - t0_base, H, units, dh);
  }
  for (int64_t e = threadIdx.x; e < B * units; e += blockDim.x) {
    const int64_t r = e / units, u = e - r * units, j = u0 + u;
    a.grad_h0[r * H + j] = cast_to<T>(dh[r * U + u]);
    a.grad_c0[r * H + j] = dc[r * U + u];
  }
}

// Launches kernel(args, plan.layout) cooperatively: plan.blocks blocks, all
// resident, with the plan's shared memory.
template <typename Args>
cudaError_t launch_cooperative(void (*kernel)(Args, TensorCoreLayout), const Args& args_in,
                               const TensorCorePlan& plan, cudaStream_t stream) {
  Args args = args_in;
  TensorCoreLayout layout = plan.layout;
  void* params[] = {&args, &layout};
  return cooperative::launch(reinterpret_cast<const void*>(kernel), plan.blocks, kTensorCoreThreads,
                             params, plan.smem_limit, plan.smem_bytes, stream);
}

}  // namespace tensorcore_kernels

template <typename T>
cudaError_t tensorcore_lstm_forward(const PersistentForward<T>& a, const TensorCorePlan& plan,
                                    cudaStream_t stream) {
  if (!plan.fits || plan.backward) return cudaErrorInvalidValue;
  return tensorcore_kernels::launch_cooperative(tensorcore_kernels::forward_kernel<T>, a, plan,
                                                stream);
}

template <typename T>
cudaError_t tensorcore_lstm_backward(const PersistentBackward<T>& a, const TensorCorePlan& plan,
                                     cudaStream_t stream) {
  if (!plan.fits || !plan.backward) return cudaErrorInvalidValue;
  return tensorcore_kernels::launch_cooperative(tensorcore_kernels::backward_kernel<T>, a, plan,
                                                stream);
}

template <typename T>
cudaError_t tensorcore_lstm_fits(const TensorCorePlan& plan, bool backward, int sms, bool* fits) {
  const void* kernel =
      backward ? reinterpret_cast<const void*>(tensorcore_kernels::backward_kernel<T>)
               : reinterpret_cast<const void*>(tensorcore_kernels::forward_kernel<T>);
  return cooperative::fits(kernel, kTensorCoreThreads, plan.smem_limit, plan.smem_bytes,
                           plan.blocks, sms, fits);
}

}  // namespace lstm_ext::cuda

#define LSTM_EXT_INSTANTIATE_TENSORCORE(T)                                                     \
  namespace lstm_ext::cuda {                                                                   \
  template cudaError_t tensorcore_lstm_forward<T>(const PersistentForward<T>&,                 \
                                                  const TensorCorePlan&, cudaStream_t);        \
  template cudaError_t tensorcore_lstm_backward<T>(const PersistentBackward<T>&,               \
                                                   const TensorCorePlan&, cudaStream_t);       \
  template cudaError_t tensorcore_lstm_fits<T>(const TensorCorePlan&, bool, int, bool*);       \
  }
