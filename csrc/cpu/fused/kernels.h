// The fused float32 recurrent kernels: torch-free entry points, one table per
// ISA (kernels_avx512.cpp, kernels_avx2.cpp, kernels_generic.cpp).
//
// The caller packs the weights (packing.h, with this table's vector_width);
// each loop runs the whole sequence in one parallel region (team.h): per
// step, register tiles (tile.h) of the recurrent product with the elementwise
// cell math fused into their epilogue, and one barrier. No allocation and no
// dispatcher call in the time loop.
// Threads split blocks of hidden units (each core keeps its share of the
// weights in its own cache); when there are fewer blocks than threads they
// also split rows.
//
// Letters and buffers are those of lstm_sequence.h / rnn_sequence.h /
// gru_sequence.h: N rows over all steps, B the widest step, H cell size, P
// size of h (H, or the projection size), I input size. Every pointer is
// float32, row-major and dense; no output aliases an input unless stated.
// The bf16 table (AVX512-BF16, kernels_avx512bf16.cpp) takes the same
// arguments with E = Bf16 where the float table has E = float: h / y / x in
// bfloat16, gates, cells and the cell state still float32.
#pragma once

#include <cstdint>

#include "cpu/fused/packing.h"
#include "cpu/fused/packing_bf16.h"
#include "step_layout.h"

namespace lstm_ext::cpu::fused {

// E: element type of h (y, h0, h_raw); W: the panels (Panels for float,
// PairPanels for Bf16).
template <class E, class W>
struct LstmForwardArgsOf {
  const StepLayout* layout;
  bool reverse, save;
  int64_t H, P;
  const W* w_hh;      // kGates of w_hh [4H,P]
  const W* w_hr;      // kRows of w_hr [P,H], or null (then P == H)
  float* gates;       // [N,4H] in: x W_ih^T + b; out: activations i,f,g,o when save
  E* y;               // [N,P]  out: h_t
  float* cells;       // [N,H]  out: c_t when save; else null
  const E* h0;        // [B,P]
  float* c_state;     // [B,H]  in: c0; out: c_n
  E* h_raw;           // [B,H]  scratch when w_hr; else null
};
using LstmForwardArgs = LstmForwardArgsOf<float, Panels>;

// See lstm_backward_loop (lstm_sequence.h).
struct LstmBackwardArgs {
  const StepLayout* layout;
  bool reverse;
  int64_t H, P;
  const Panels* w_hh;       // kColumns of w_hh [4H,P]
  const Panels* w_hr;       // kColumns of w_hr [P,H], or null (then P == H)
  const float* gates;       // [N,4H] saved activations
  const float* cells;       // [N,H]  saved c_t
  const float* c0;          // [B,H]
  const float* grad_y;      // [N,P] or null
  const float* grad_cells;  // [N,H] or null
  float* grad_h;            // [B,P] in: at h_n; out: at h0
  float* grad_c;            // [B,H] in: at c_n; out: at c0
  float* grad_gates;        // [N,4H] out
  // With w_hr only (null otherwise):
  float* grad_h_all;        // [N,P] out: the total gradient at each h_t
  float* h_raw_all;         // [N,H] out: o * tanh(c_t), recomputed
  float* grad_h_raw;        // [B,H] scratch
};

struct RnnForwardArgs {
  const StepLayout* layout;
  bool reverse, relu;
  int64_t H;
  const Panels* w_hh;  // kRows of w_hh [H,H]
  const float* h0;     // [B,H]
  float* y;           // [N,H] in: x W_ih^T + b; out: h_t
};

struct RnnBackwardArgs {
  const StepLayout* layout;
  bool reverse, relu;
  int64_t H;
  const Panels* w_hh;   // kColumns of w_hh [H,H]
  const float* y;       // [N,H]
  const float* grad_y;  // [N,H] or null
  float* grad_h;        // [B,H] in: at h_n; out: at h0
  float* d_pre;         // [N,H] out: gradients of the pre-activations
};

// See gru_forward_loop (gru_sequence.h). E as for the LSTM: h / y / h0 in E,
// everything else float32.
template <class E, class W>
struct GruForwardArgsOf {
  const StepLayout* layout;
  bool reverse;
  int64_t H;
  const W* w_hh;       // kGates (3 gates) of w_hh [3H,H]: r, z, n of the same units
  const float* b_hn;   // [H] or null
  const float* gi;     // [N,3H] x W_ih^T + b_ih + [b_hr, b_hz, 0]
  E* y;                // [N,H] out: h_t
  float* gates;        // [N,4H] out: r, z, n, hn when non-null
  const E* h0;         // [B,H]
};
using GruForwardArgs = GruForwardArgsOf<float, Panels>;

// See gru_backward_loop (gru_sequence.h).
struct GruBackwardArgs {
  const StepLayout* layout;
  bool reverse;
  int64_t H;
  const Panels* w_hh;     // kColumns of w_hh [3H,H] (K = 3H, N = H)
  const float* gates;     // [N,4H] saved r, z, n, hn
  const float* y;         // [N,H]
  const float* h0;        // [B,H]
  const float* grad_y;    // [N,H] or null
  float* grad_h;          // [B,H] in: at h_n; out: at h0
  float* grad_gates;      // [N,4H] out
  float* grad_direct;     // [B,H] scratch
};

// out [M,N] = x [M,K] w^T + bias, w [N,K] as kRows panels, bias [N] or null.
// x in E; bias and out float32.
template <class E, class W>
struct LinearArgsOf {
  int64_t M, N, K;
  const E* x;
  const W* w;
  const float* bias;
  float* out;
};
using LinearArgs = LinearArgsOf<float, Panels>;

struct Kernels {
  int vector_width;  // V of the Panels these kernels take
  void (*lstm_forward)(const LstmForwardArgs&, int threads);
  void (*lstm_backward)(const LstmBackwardArgs&, int threads);
  void (*rnn_forward)(const RnnForwardArgs&, int threads);
  void (*rnn_backward)(const RnnBackwardArgs&, int threads);
  void (*gru_forward)(const GruForwardArgs&, int threads);
  void (*gru_backward)(const GruBackwardArgs&, int threads);
  void (*linear)(const LinearArgs&, int threads);
};

// The table of each ISA if this build compiled it, else null. Whether the
// running CPU supports it is the caller's check (kernel_select.cpp).
const Kernels* avx512_kernels();
const Kernels* avx2_kernels();
const Kernels* generic_kernels();

// The bf16 forward (AVX512-BF16 vdpbf16ps, float32 accumulation): x, h and
// the weights in bfloat16 (PairPanels, vector width 16); gates, cells, the
// cell state, gi and the biases float32. h_t is rounded to bfloat16 when
// written to y, and the next step reads it from there.
using LstmForwardBf16Args = LstmForwardArgsOf<Bf16, PairPanels>;
using GruForwardBf16Args = GruForwardArgsOf<Bf16, PairPanels>;
using LinearBf16Args = LinearArgsOf<Bf16, PairPanels>;
struct Bf16Kernels {
  int vector_width;
  void (*lstm_forward)(const LstmForwardBf16Args&, int threads);
  void (*gru_forward)(const GruForwardBf16Args&, int threads);
  void (*linear)(const LinearBf16Args&, int threads);
};
const Bf16Kernels* avx512bf16_kernels();

}  // namespace lstm_ext::cpu::fused
