// The layout planner of the tensor-core persistent LSTM kernels
// (csrc/cuda/tensorcore.h). Plain host C++, no CUDA header: the CPU build
// compiles it too (csrc/tensorcore_plan_op.cpp), so its invariants are unit
// tested on machines without a GPU (tests/test_tensorcore.py).
//
// Letters: B rows of the widest step, H hidden units, U hidden units per
// block, K the reduction length of the recurrent product (H forward: h_{t-1}
// W_hh^T; 4H backward: dgates W_hh).
//
// What the plan decides, for one layer-direction on one device:
//   - units U per block, whole gate quartets: forward block b owns the 4U rows
//     (i, f, g, o of units [bU, bU + U)) of W_hh, so its cell update needs no
//     other block; U is a multiple of 4 so those 4U rows are whole 16-row MMA
//     tiles. Backward block b owns the U columns [bU, bU + U) of W_hh (all 4H
//     rows), U a multiple of 8 (the MMA's N), so its dh is whole n-tiles.
//     blocks = ceil(H / U) <= the multiprocessors: one block per SM (shared
//     memory bound), all resident (a cooperative launch).
//   - the W_hh slice, resident in shared memory for the whole sequence, in
//     the storage dtype (bf16 / fp16; fp32 operands are rounded to TF32 when
//     loaded into MMA fragments), with rows padded by 16 bytes so that the
//     8 rows one fragment load touches fall in distinct banks.
//   - the batch padded to the MMA granule: 8 forward (the batch is the MMA's
//     N), 16 backward (the batch is the MMA's M). Padding rows are never
//     loaded: an MMA's output column (row) depends only on its own input
//     column (row), so stale padding only reaches outputs nobody reads.
//   - tile_rows: batch rows staged per pass (a multiple of the granule), and
//     kchunk: columns of K staged per pass (all of K when it fits). The largest
//     K chunk is preferred, then the largest row tile.
//   - ksplit: warps that split one output tile's K range, so that small
//     batches still keep all 8 warps busy; their partial sums go to separate
//     shared-memory slots and are added in a fixed order (deterministic).
//     Halved when its slots would cost a larger row tile.
//
// Shared memory of a block, in this order, each region 16-byte aligned:
//   weights  w_rows x w_ld elements     (forward w_rows = 4U, backward U)
//   stage    tile_rows x s_ld elements  (h_{t-1} rows, or dgates rows)
//   acc      ksplit x tile_rows x w_rows floats (partial products; the K
//            chunks of one tile add into the same slots)
//   state    B x U floats x (1 forward: c; 2 backward: dh, dc)
// with w_ld = k_pad + 16 / elem_bytes and s_ld = kchunk + 16 / elem_bytes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace lstm_ext::cuda {

constexpr int kTensorCoreThreads = 256;  // 8 warps per block
constexpr int kTensorCoreWarps = kTensorCoreThreads / 32;
// One warp item covers up to 2 m-tiles (of 16) x 4 n-tiles (of 8): each A
// fragment serves 4 MMAs and each B fragment 2.
constexpr int kTensorCoreMTilesPerWarp = 2;
constexpr int kTensorCoreNTilesPerWarp = 4;

// Everything the kernels need from the plan: plain integers, so it can be a
// kernel argument.
struct TensorCoreLayout {
  int units = 0;          // U
  int w_rows = 0;         // rows of the resident weight slice: 4U forward, U backward
  int mma_k = 0;          // K of one MMA: 16 (bf16 / fp16), 8 (tf32)
  int64_t k_pad = 0;      // K (H or 4H) rounded up to 16; weight columns past K are zero
  int64_t w_ld = 0;       // row stride of the weight slice, elements
  int64_t kchunk = 0;     // columns of K staged per pass (a multiple of 16)
  int64_t s_ld = 0;       // row stride of the staging buffer, elements
  int chunks = 0;         // ceil(k_pad / kchunk)
  int tile_rows = 0;      // batch rows staged per pass
  int ksplit = 0;         // warps splitting one tile's K range
  size_t stage_offset = 0, acc_offset = 0, state_offset = 0;  // bytes from the start
};

struct TensorCorePlan {
  bool fits = false;
  bool backward = false;
  int elem_bytes = 0;
  int blocks = 0;         // ceil(H / U) <= sms
  int batch_pad = 0;      // B rounded up to the granule (8 forward, 16 backward)
  TensorCoreLayout layout;
  size_t weight_bytes = 0;  // the resident W_hh slice, padding included
  size_t smem_bytes = 0;    // dynamic shared memory per block
  size_t smem_limit = 0;    // the device's opt-in limit: the kernels' attribute is set to it
  std::string why_not;      // when !fits: the reason, for the path report and errors
};

namespace tensorcore_detail {

inline int64_t round_up(int64_t n, int64_t m) { return (n + m - 1) / m * m; }
inline size_t align16(size_t n) { return (n + 15) / 16 * 16; }
inline std::string kib(size_t bytes) { return std::to_string((bytes + 1023) / 1024) + " KiB"; }

// Warps per tile's K range: the largest power of two that keeps the work
// items (m-groups x n-groups x ksplit) within the block's warps and leaves
// every warp at least one MMA step.
inline int choose_ksplit(int64_t m_tiles, int64_t n_tiles, int64_t k_steps) {
  const int64_t m_groups = (m_tiles + kTensorCoreMTilesPerWarp - 1) / kTensorCoreMTilesPerWarp;
  const int64_t n_groups = (n_tiles + kTensorCoreNTilesPerWarp - 1) / kTensorCoreNTilesPerWarp;
  const int64_t base = m_groups * n_groups;
  int ksplit = 1;
  while (base * ksplit * 2 <= kTensorCoreWarps && ksplit * 2 <= k_steps) ksplit *= 2;
  return ksplit;
}

}  // namespace tensorcore_detail

// The plan for B rows, H hidden units, elements of `elem_bytes` (2: bf16 /
// fp16, 4: fp32 computed as TF32) on a device with `sms` multiprocessors and
// `smem_optin` bytes of opt-in shared memory per block, for the forward or
// the backward kernel. Whether the blocks can all be resident is checked on
// the device (tensorcore_lstm_fits); everything else is decided here.
inline TensorCorePlan plan_tensorcore(int64_t B, int64_t H, int elem_bytes, int sms,
                                      size_t smem_optin, bool backward) {
  using namespace tensorcore_detail;
  TensorCorePlan p;
  p.backward = backward;
  p.elem_bytes = elem_bytes;
  p.smem_limit = smem_optin;
  if (B < 1 || H < 1) {
    p.why_not = "empty batch or hidden size";
    return p;
  }
  if (sms < 1) {
    p.why_not = "the device reports no multiprocessors";
    return p;
  }
  if (elem_bytes != 2 && elem_bytes != 4) {
    p.why_not = "the tensor-core kernels take 2-byte (bfloat16, float16) or 4-byte (float32 as TF32) elements";
    return p;
  }
  TensorCoreLayout& l = p.layout;
  const int64_t quantum = backward ? 8 : 4;
  const int64_t U = round_up((H + sms - 1) / sms, quantum);
  l.units = static_cast<int>(U);
  p.blocks = static_cast<int>((H + U - 1) / U);
  l.w_rows = static_cast<int>(backward ? U : 4 * U);
  l.mma_k = elem_bytes == 2 ? 16 : 8;
  const int64_t K = backward ? 4 * H : H;
  const int64_t pad = 16 / elem_bytes;
  l.k_pad = round_up(K, 16);
  l.w_ld = l.k_pad + pad;
  const int64_t granule = backward ? 16 : 8;
  p.batch_pad = static_cast<int>(round_up(B, granule));
  const size_t eb = static_cast<size_t>(elem_bytes);
  p.weight_bytes = align16(static_cast<size_t>(l.w_rows) * l.w_ld * eb);
  const size_t state = align16(static_cast<size_t>(B * U) * sizeof(float) * (backward ? 2 : 1));
  if (p.weight_bytes + state > smem_optin) {
    p.why_not = "the W_hh slice per block (" + kib(p.weight_bytes) + " for " + std::to_string(U) +
                " units) does not fit in shared memory (" + kib(smem_optin) + " per block)";
    return p;
  }
  // The shared memory of a (kchunk, tile) choice, or 0 when it does not fit;
  // sets the layout's fields when it does. A smaller K split (fewer partial
  // slots) is tried before the caller gives up the tile: a larger tile means
  // fewer staging rounds (each a full L2 round trip) per step.
  auto place = [&](int64_t kchunk, int64_t tile) -> size_t {
    const int64_t chunks = (l.k_pad + kchunk - 1) / kchunk;
    const int64_t m_tiles = backward ? tile / 16 : l.w_rows / 16;
    const int64_t n_tiles = backward ? l.w_rows / 8 : tile / 8;
    const size_t stage = align16(static_cast<size_t>(tile) * (kchunk + pad) * eb);
    int ksplit = choose_ksplit(m_tiles, n_tiles, kchunk / l.mma_k);
    size_t total = 0;
    for (;; ksplit /= 2) {
      const size_t acc = align16(static_cast<size_t>(ksplit * tile * l.w_rows) * sizeof(float));
      total = p.weight_bytes + stage + acc + state;
      if (total <= smem_optin) break;
      if (ksplit == 1) return 0;
    }
    l.kchunk = kchunk;
    l.s_ld = kchunk + pad;
    l.chunks = static_cast<int>(chunks);
    l.tile_rows = static_cast<int>(tile);
    l.ksplit = ksplit;
    l.stage_offset = p.weight_bytes;
    l.acc_offset = l.stage_offset + stage;
    l.state_offset = total - state;
    return total;
  };
  // Largest K chunk first, then the largest row tile that fits beside it;
  // then the same number of passes over the batch with equal tiles (256 rows
  // in tiles of 72 become 4 x 64: same staging, all warps busy in every pass).
  for (int64_t kchunk = l.k_pad; kchunk >= 16;) {
    for (int64_t tile = p.batch_pad; tile >= granule; tile -= granule) {
      size_t total = place(kchunk, tile);
      if (total == 0) continue;
      const int64_t passes = (p.batch_pad + tile - 1) / tile;
      const int64_t even = round_up((p.batch_pad + passes - 1) / passes, granule);
      if (even < tile) {
        const size_t even_total = place(kchunk, even);
        if (even_total != 0) {
          total = even_total;
        } else {
          place(kchunk, tile);  // (a larger K split can make the smaller tile bigger)
        }
      }
      p.smem_bytes = total;
      p.fits = true;
      return p;
    }
    if (kchunk == 16) break;
    kchunk = round_up(kchunk / 2, 16);
  }
  p.why_not = "no row tile of " + std::to_string(granule) + " rows fits next to the W_hh slice (" +
              kib(p.weight_bytes) + ") in shared memory (" + kib(smem_optin) + " per block)";
  return p;
}

}  // namespace lstm_ext::cuda
