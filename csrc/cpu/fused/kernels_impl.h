// The fused loops, written once over a vector type S (simd.h) and
// instantiated per ISA by kernels_<isa>.cpp. See kernels.h for the contract.
#pragma once

#include <algorithm>
#include <cstdint>

#include "cpu/fused/kernels.h"
#include "cpu/fused/packing.h"
#include "cpu/fused/simd.h"
#include "cpu/fused/team.h"
#include "cpu/fused/tile.h"

namespace lstm_ext::cpu::fused {

// The element type E of h / y (and the panels the products read) as the
// loops see it: how a tile runs over rows of E and how a vector is stored as
// E. float here; Bf16 in kernels_bf16.h (AVX512-BF16 only).
template <class S, class E>
struct Elements;

template <class S>
struct Elements<S, float> {
  using Weights = Panels;
  static LSTM_EXT_INLINE void store_n(float* p, typename S::Reg v, int n) { S::store_n(p, v, n); }
  static LSTM_EXT_INLINE typename S::Reg load_n(const float* p, int n) { return S::load_n(p, n); }
  template <class Epilogue>
  static LSTM_EXT_INLINE void run_tile_rows(int rows, const Panels& w, int64_t block,
                                            const float* in, int64_t ld_in, const Epilogue& epi) {
    fused::run_tile_rows<S>(rows, w.panel(block), w.K(), in, ld_in, epi);
  }
};

template <class S>
struct Fused {
  using R = typename S::Reg;
  using Act = Activations<S>;
  static constexpr int V = S::V;
  static constexpr int kBlockUnits = kVectors * V;  // units of a plain panel block

  // Valid lanes of the vector starting at unit u of n units.
  static int lanes(int64_t u, int64_t n) { return int(std::clamp<int64_t>(n - u, 0, V)); }

  // Where step t's rows read h_{t-1}: rows [0, continuing) from the previous
  // visited step's rows of `out` (ld), the rest from `initial`.
  template <class E>
  struct PreviousOf {
    const E* continuing_rows;
    const E* initial;
    int64_t continuing, ld;
    const E* row(int64_t r) const { return (r < continuing ? continuing_rows : initial) + r * ld; }
  };
  using Previous = PreviousOf<float>;
  template <class E>
  static PreviousOf<E> previous(const StepLayout& L, int64_t t, bool reverse, const E* out,
                                const E* initial, int64_t ld) {
    const int64_t p = L.previous(t, reverse);
    return {p >= 0 ? out + L.offset(p) * ld : nullptr, initial, L.rows_continuing(t, reverse), ld};
  }

  // Rows [r0, r1) of a step reading h_{t-1} through `prev`: up to two tiles
  // (split where the source changes). epi_at(r) builds the epilogue of a
  // tile whose first row is r.
  template <class E, class MakeEpilogue>
  static void rows_tile(int64_t r0, int64_t r1, const PreviousOf<E>& prev,
                        const typename Elements<S, E>::Weights& w, int64_t block,
                        const MakeEpilogue& epi_at) {
    const int64_t mid = std::clamp(prev.continuing, r0, r1);
    if (mid > r0)
      Elements<S, E>::run_tile_rows(int(mid - r0), w, block, prev.row(r0), prev.ld, epi_at(r0));
    if (r1 > mid)
      Elements<S, E>::run_tile_rows(int(r1 - mid), w, block, prev.row(mid), prev.ld, epi_at(mid));
  }

  // Each thread packs its share of the weights' blocks (into its own
  // cache), then all wait until every block is packed.
  template <class W>
  static void pack_in_team(int rank, int team, StepBarrier& barrier, const W* w,
                           const W* w2 = nullptr) {
    w->pack_share(rank, team);
    if (w2) w2->pack_share(rank, team);
    barrier.wait();
  }

  // ---------------------------------------------------------------- LSTM --

  // Gate-interleaved tile: acc[b] = i, f, g, o pre-activations of units
  // [j, j+n) of row b; the cell update runs on the registers. h_t is
  // stored as E; everything else is float32.
  template <class E>
  struct LstmCellEpilogueOf {
    static constexpr int NV = 4;  // i, f, g, o
    const float* pre;  // gates row 0 at unit j, stride G
    float* act;        // same place, or null when activations are not saved
    float* c;          // c_state row 0 at j, stride H
    float* c_save;     // cells row 0 at j, or null
    E* h;              // h_t row 0 at j, stride ld_h
    int64_t H, ld_h;
    int n;
    LSTM_EXT_INLINE R init(int b, int g) const { return S::load_n(pre + b * 4 * H + g * H, n); }
    // The lines init and finish touch first in row b, for tiles that fetch
    // them ahead (kernels_bf16.h): pre-activations, h_t.
    LSTM_EXT_INLINE void prefetch(int b) const {
      for (int g = 0; g < NV; ++g) __builtin_prefetch(pre + b * 4 * H + g * H);
      __builtin_prefetch(h + b * ld_h, 1);
    }
    LSTM_EXT_INLINE void finish(int b, const R (&a)[NV]) const {
      const R i = Act::sigmoid(a[0]), f = Act::sigmoid(a[1]);
      const R g = Act::tanh(a[2]), o = Act::sigmoid(a[3]);
      const R c_new = S::fma(f, S::load_n(c + b * H, n), S::mul(i, g));
      S::store_n(c + b * H, c_new, n);
      if (c_save) S::store_n(c_save + b * H, c_new, n);
      Elements<S, E>::store_n(h + b * ld_h, S::mul(o, Act::tanh(c_new)), n);
      if (act) {
        float* row = act + b * 4 * H;
        S::store_n(row, i, n);
        S::store_n(row + H, f, n);
        S::store_n(row + 2 * H, g, n);
        S::store_n(row + 3 * H, o, n);
      }
    }
  };
  using LstmCellEpilogue = LstmCellEpilogueOf<float>;

  // Plain tile written to out (zero-initialised or from `init_from`), with
  // an optional activation: the projection h = h_raw W_hr^T, the RNN step
  // and the linear layer. out is E; init_row and bias float32.
  enum class Apply { kNone, kTanh, kRelu };
  template <Apply A, class E = float>
  struct StoreEpilogue {
    static constexpr int NV = kVectors;
    const float* init_row;  // row 0 at unit u0 (stride ld), or null for zeros
    const float* bias;      // at unit u0, or null (used when init_row is null)
    E* out;                 // row 0 at unit u0, stride ld
    int64_t ld, units_left;  // valid units from u0 on
    LSTM_EXT_INLINE R init(int b, int v) const {
      const int n = lanes(int64_t(v) * V, units_left);
      if (init_row) return S::load_n(init_row + b * ld + v * V, n);
      return bias ? S::load_n(bias + v * V, n) : S::zero();
    }
    LSTM_EXT_INLINE void prefetch(int b) const {  // as LstmCellEpilogueOf's
      for (int v = 0; v < NV; ++v) {
        if (init_row) __builtin_prefetch(init_row + b * ld + v * V);
        __builtin_prefetch(out + b * ld + v * V, 1);
      }
    }
    LSTM_EXT_INLINE void finish(int b, const R (&a)[NV]) const {
      for (int v = 0; v < NV; ++v) {
        const int n = lanes(int64_t(v) * V, units_left);
        if (n <= 0) break;
        R x = a[v];
        if constexpr (A == Apply::kTanh) x = Act::tanh(x);
        if constexpr (A == Apply::kRelu) x = Act::relu(x);
        Elements<S, E>::store_n(out + b * ld + v * V, x, n);
      }
    }
  };

  static void lstm_forward(const LstmForwardArgs& a, int threads) { lstm_forward_of(a, threads); }

  template <class E, class W>
  static void lstm_forward_of(const LstmForwardArgsOf<E, W>& a, int threads) {
    const StepLayout& L = *a.layout;
    const int64_t H = a.H, P = a.P, G = 4 * H;
    const W& w = *a.w_hh;
    const W wr = a.w_hr ? *a.w_hr : W();
    const RowTiles tiles(L.batch(), S::kMaxRows);
    const int64_t items = w.blocks() * tiles.count, proj_items = wr.blocks() * tiles.count;
    threads = int(std::min<int64_t>(threads, std::max(items, proj_items)));
    run_team(threads, [&](int rank, int team, StepBarrier& barrier) {
      pack_in_team(rank, team, barrier, &w, a.w_hr);
      const Share mine(items, rank, team), mine_proj(proj_items, rank, team);
      for (int64_t s = 0; s < L.steps(); ++s) {
        const int64_t t = L.time_at(s, a.reverse), rows = L.rows(t), off = L.offset(t);
        const auto prev = previous(L, t, a.reverse, a.y, a.h0, P);
        float* gates_t = a.gates + off * G;
        E* y_t = a.y + off * P;
        E* h_t = a.w_hr ? a.h_raw : y_t;
        const int64_t ld_h = a.w_hr ? H : P;
        for (int64_t item = mine.begin; item < mine.end; ++item) {
          const int64_t block = item / tiles.count, tile = item % tiles.count;
          const int64_t r0 = tiles.begin(tile), r1 = std::min(tiles.end(tile), rows);
          if (r0 >= r1) continue;
          const int64_t j = block * V;
          const int n = lanes(j, H);
          rows_tile(r0, r1, prev, w, block, [&](int64_t r) {
            return LstmCellEpilogueOf<E>{gates_t + r * G + j,
                                    a.save ? gates_t + r * G + j : nullptr,
                                    a.c_state + r * H + j,
                                    a.save ? a.cells + (off + r) * H + j : nullptr,
                                    h_t + r * ld_h + j,
                                    H, ld_h, n};
          });
        }
        if (a.w_hr) {
          barrier.wait();  // the projection reads every unit of h_raw
          project(wr, tiles, mine_proj, rows, a.h_raw, H, y_t, P, nullptr);
        }
        barrier.wait();  // the next step reads every unit of h_t
      }
    });
  }

  // out [rows,N] = in [rows,K] W^T (+ init [rows,N] when non-null) for the
  // owned (block, tile) items.
  template <class E, class W>
  static void project(const W& w, const RowTiles& tiles, const Share& mine, int64_t rows,
                      const E* in, int64_t ld_in, E* out, int64_t N, const float* init) {
    for (int64_t item = mine.begin; item < mine.end; ++item) {
      const int64_t block = item / tiles.count, tile = item % tiles.count;
      const int64_t r0 = tiles.begin(tile), r1 = std::min(tiles.end(tile), rows);
      if (r0 >= r1) continue;
      const int64_t u0 = block * kBlockUnits;
      Elements<S, E>::run_tile_rows(
          int(r1 - r0), w, block, in + r0 * ld_in, ld_in,
          StoreEpilogue<Apply::kNone, E>{init ? init + r0 * N + u0 : nullptr, nullptr,
                                         out + r0 * N + u0, N, N - u0});
    }
  }

  // Gate gradients of rows [r0, r1) of step t, units [u0, u1): reads the
  // saved activations and cells, the gradient at o * tanh(c_t) (grad_h and
  // grad_y; with a projection, grad_h_raw) and grad_c; writes grad_gates_t,
  // grad_c (now at c_{t-1}) and, with a projection, h_raw_all.
  static void lstm_cell_backward(const LstmBackwardArgs& a, int64_t t, int64_t r0, int64_t r1,
                                 int64_t u0, int64_t u1) {
    const StepLayout& L = *a.layout;
    const int64_t H = a.H, G = 4 * H, off = L.offset(t);
    const int64_t p = L.previous(t, a.reverse), continuing = L.rows_continuing(t, a.reverse);
    const R one = S::set1(1.f);
    for (int64_t r = r0; r < r1; ++r) {
      const float* gate = a.gates + (off + r) * G;
      const float* c_t = a.cells + (off + r) * H;
      const float* c_prev = r < continuing ? a.cells + (L.offset(p) + r) * H : a.c0 + r * H;
      const bool projected = a.w_hr != nullptr;
      const float* gy = a.grad_y && !projected ? a.grad_y + (off + r) * H : nullptr;
      const float* gc_out = a.grad_cells ? a.grad_cells + (off + r) * H : nullptr;
      const float* gh = projected ? a.grad_h_raw + r * H : a.grad_h + r * H;
      float* h_raw = projected ? a.h_raw_all + (off + r) * H : nullptr;
      float* gc = a.grad_c + r * H;
      float* dg = a.grad_gates + (off + r) * G;
      for (int64_t u = u0; u < u1; u += V) {
        const int n = lanes(u, u1);
        const R i = S::load_n(gate + u, n), f = S::load_n(gate + H + u, n);
        const R g = S::load_n(gate + 2 * H + u, n), o = S::load_n(gate + 3 * H + u, n);
        const R tc = Act::tanh(S::load_n(c_t + u, n));
        R dh = S::load_n(gh + u, n);
        if (gy) dh = S::add(dh, S::load_n(gy + u, n));
        R dc = S::fma(S::mul(dh, o), S::sub(one, S::mul(tc, tc)), S::load_n(gc + u, n));
        if (gc_out) dc = S::add(dc, S::load_n(gc_out + u, n));
        const R cp = S::load_n(c_prev + u, n);
        S::store_n(dg + u, S::mul(S::mul(dc, g), S::mul(i, S::sub(one, i))), n);
        S::store_n(dg + H + u, S::mul(S::mul(dc, cp), S::mul(f, S::sub(one, f))), n);
        S::store_n(dg + 2 * H + u, S::mul(S::mul(dc, i), S::sub(one, S::mul(g, g))), n);
        S::store_n(dg + 3 * H + u, S::mul(S::mul(dh, tc), S::mul(o, S::sub(one, o))), n);
        S::store_n(gc + u, S::mul(dc, f), n);
        if (h_raw) S::store_n(h_raw + u, S::mul(o, tc), n);
      }
    }
  }

  // The shared shape of the backward loops (LSTM, RNN, GRU). Per visited
  // step t:
  //   1. elementwise(t, rows, units) for the owned (unit block, row tile)
  //      items: gradients of step t's pre-activations, d_pre_t [rows, K],
  //      and, with `direct` (the GRU), the part of the gradient at h_{t-1}
  //      that bypasses the product, direct [rows, units];
  //   2. barrier: step (3) reads every unit of d_pre_t;
  //   3. grad_h[rows, units] = d_pre_t W (+ direct) for the same owned items.
  // Each thread owns the same (rows, units) in (1) and (3) at every step
  // (tiles are cut over the full batch and clipped to the step's rows), so
  // the grad_h and direct units a thread writes are read only by itself:
  // direct in this step's (3), grad_h in the next step's (1). Only d_pre_t
  // crosses threads, and the next step writes other rows of it: one barrier
  // per step.
  template <class Elementwise>
  static void backward_loop(const StepLayout& L, bool reverse, int64_t H, const Panels& wt,
                            const float* d_pre, int64_t ld_pre, const float* direct, float* grad_h,
                            int threads, const Elementwise& elementwise) {
    const RowTiles tiles(L.batch(), S::kMaxRows);
    const int64_t items = wt.blocks() * tiles.count;
    threads = int(std::min<int64_t>(threads, items));
    run_team(threads, [&](int rank, int team, StepBarrier& barrier) {
      pack_in_team(rank, team, barrier, &wt);
      const Share mine(items, rank, team);
      for (int64_t s = L.steps() - 1; s >= 0; --s) {
        const int64_t t = L.time_at(s, reverse), rows = L.rows(t);
        for (int64_t item = mine.begin; item < mine.end; ++item) {
          const int64_t block = item / tiles.count, tile = item % tiles.count;
          const int64_t r0 = tiles.begin(tile), r1 = std::min(tiles.end(tile), rows);
          if (r0 >= r1) continue;
          const int64_t u0 = block * kBlockUnits;
          elementwise(t, r0, r1, u0, std::min(u0 + kBlockUnits, H));
        }
        barrier.wait();
        project(wt, tiles, mine, rows, d_pre + L.offset(t) * ld_pre, ld_pre, grad_h, H, direct);
      }
    });
  }

  static void lstm_backward(const LstmBackwardArgs& a, int threads) {
    if (a.w_hr) return lstm_backward_projected(a, threads);
    // grad_h = grad_gates_t w_hh.
    backward_loop(*a.layout, a.reverse, a.H, *a.w_hh, a.grad_gates, 4 * a.H, nullptr, a.grad_h,
                  threads, [&](int64_t t, int64_t r0, int64_t r1, int64_t u0, int64_t u1) {
                    lstm_cell_backward(a, t, r0, r1, u0, u1);
                  });
  }

  // With h_t = h_raw_t W_hr^T, per visited step t:
  //   1. grad_h_all_t = grad_h + grad_y_t   (owned P-unit items)
  //   2. barrier: (3) reads every unit of grad_h_all_t
  //   3. grad_h_raw = grad_h_all_t W_hr     (owned H-unit items), then the
  //      cell backward of the same items
  //   4. barrier: (5) reads every unit of grad_gates_t
  //   5. grad_h = grad_gates_t W_hh         (owned P-unit items)
  // (5) and the next step's (1), like (3) and the cell backward, touch the
  // same units on the same thread, so two barriers per step suffice.
  static void lstm_backward_projected(const LstmBackwardArgs& a, int threads) {
    const StepLayout& L = *a.layout;
    const int64_t H = a.H, P = a.P, G = 4 * H;
    const RowTiles tiles(L.batch(), S::kMaxRows);
    const int64_t items_h = a.w_hr->blocks() * tiles.count, items_p = a.w_hh->blocks() * tiles.count;
    threads = int(std::min<int64_t>(threads, std::max(items_h, items_p)));
    run_team(threads, [&](int rank, int team, StepBarrier& barrier) {
      pack_in_team(rank, team, barrier, a.w_hh, a.w_hr);
      const Share mine_h(items_h, rank, team), mine_p(items_p, rank, team);
      for (int64_t s = L.steps() - 1; s >= 0; --s) {
        const int64_t t = L.time_at(s, a.reverse), rows = L.rows(t), off = L.offset(t);
        float* grad_h_all_t = a.grad_h_all + off * P;
        for (int64_t item = mine_p.begin; item < mine_p.end; ++item) {
          const int64_t block = item / tiles.count, tile = item % tiles.count;
          const int64_t r1 = std::min(tiles.end(tile), rows), u0 = block * kBlockUnits;
          const int64_t u1 = std::min(u0 + kBlockUnits, P);
          for (int64_t r = tiles.begin(tile); r < r1; ++r) {
            for (int64_t u = u0; u < u1; u += V) {
              const int n = lanes(u, u1);
              R g = S::load_n(a.grad_h + r * P + u, n);
              if (a.grad_y) g = S::add(g, S::load_n(a.grad_y + (off + r) * P + u, n));
              S::store_n(grad_h_all_t + r * P + u, g, n);
            }
          }
        }
        barrier.wait();
        project(*a.w_hr, tiles, mine_h, rows, grad_h_all_t, P, a.grad_h_raw, H, nullptr);
        for (int64_t item = mine_h.begin; item < mine_h.end; ++item) {
          const int64_t block = item / tiles.count, tile = item % tiles.count;
          const int64_t r0 = tiles.begin(tile), r1 = std::min(tiles.end(tile), rows);
          if (r0 >= r1) continue;
          const int64_t u0 = block * kBlockUnits;
          lstm_cell_backward(a, t, r0, r1, u0, std::min(u0 + kBlockUnits, H));
        }
        barrier.wait();
        project(*a.w_hh, tiles, mine_p, rows, a.grad_gates + off * G, G, a.grad_h, P, nullptr);
      }
    });
  }

  // ----------------------------------------------------------------- RNN --

  // The shared shape of the single-product forward loops (RNN, GRU): per
  // visited step t, item = step(t) (what the step reads and writes, worked
  // out once per step), then item(block, r0, r1) for each owned (unit block,
  // row tile) item with live rows, then one barrier: the next step reads
  // every unit of h_t. (The LSTM's loop adds the projection between
  // barriers, so it keeps its own.)
  template <class W, class Step>
  static void forward_loop(const StepLayout& L, bool reverse, const W& w, int threads,
                           const Step& step) {
    const RowTiles tiles(L.batch(), S::kMaxRows);
    const int64_t items = w.blocks() * tiles.count;
    threads = int(std::min<int64_t>(threads, items));
    run_team(threads, [&](int rank, int team, StepBarrier& barrier) {
      pack_in_team(rank, team, barrier, &w);
      const Share mine(items, rank, team);
      for (int64_t s = 0; s < L.steps(); ++s) {
        const int64_t t = L.time_at(s, reverse), rows = L.rows(t);
        const auto item = step(t);
        for (int64_t i = mine.begin; i < mine.end; ++i) {
          const int64_t block = i / tiles.count, tile = i % tiles.count;
          const int64_t r0 = tiles.begin(tile), r1 = std::min(tiles.end(tile), rows);
          if (r0 < r1) item(block, r0, r1);
        }
        barrier.wait();
      }
    });
  }

  template <Apply A>
  static void rnn_forward_impl(const RnnForwardArgs& a, int threads) {
    const StepLayout& L = *a.layout;
    const int64_t H = a.H;
    const Panels& w = *a.w_hh;
    forward_loop(L, a.reverse, w, threads, [&](int64_t t) {
      const Previous prev = previous(L, t, a.reverse, a.y, a.h0, H);
      float* y_t = a.y + L.offset(t) * H;
      return [&w, prev, y_t, H](int64_t block, int64_t r0, int64_t r1) {
        const int64_t u0 = block * kBlockUnits;
        rows_tile(r0, r1, prev, w, block, [&](int64_t r) {
          float* row = y_t + r * H + u0;
          return StoreEpilogue<A>{row, nullptr, row, H, H - u0};
        });
      };
    });
  }

  static void rnn_forward(const RnnForwardArgs& a, int threads) {
    if (a.relu) rnn_forward_impl<Apply::kRelu>(a, threads);
    else rnn_forward_impl<Apply::kTanh>(a, threads);
  }

  static void rnn_backward(const RnnBackwardArgs& a, int threads) {
    const StepLayout& L = *a.layout;
    const int64_t H = a.H;
    const R one = S::set1(1.f);
    backward_loop(L, a.reverse, H, *a.w_hh, a.d_pre, H, nullptr, a.grad_h, threads,
                  [&](int64_t t, int64_t r0, int64_t r1, int64_t u0, int64_t u1) {
                    const int64_t off = L.offset(t);
                    for (int64_t r = r0; r < r1; ++r) {
                      const float* y = a.y + (off + r) * H;
                      const float* gy = a.grad_y ? a.grad_y + (off + r) * H : nullptr;
                      const float* gh = a.grad_h + r * H;
                      float* d = a.d_pre + (off + r) * H;
                      for (int64_t u = u0; u < u1; u += V) {
                        const int n = lanes(u, u1);
                        R dh = S::load_n(gh + u, n);
                        if (gy) dh = S::add(dh, S::load_n(gy + u, n));
                        const R h = S::load_n(y + u, n);
                        // tanh: dh (1 - h^2). relu, as torch's threshold_backward:
                        // 0 where h <= 0, else dh unchanged (a NaN h passes dh;
                        // an inf dh at h <= 0 gives 0, not inf * 0).
                        const R d_h = a.relu ? S::select_le(h, S::zero(), S::zero(), dh)
                                             : S::mul(dh, S::sub(one, S::mul(h, h)));
                        S::store_n(d + u, d_h, n);
                      }
                    }
                  });
  }

  // ----------------------------------------------------------------- GRU --

  // Gate-interleaved tile of w_hh [3H,H]: acc[b] = the r, z, n parts of
  // h_{t-1} W_hh^T for units [j, j+n) of row b, started from gi_r, gi_z (which
  // hold b_hr, b_hz) and b_hn, so that acc_r, acc_z are r's and z's
  // pre-activations and acc_n is hn. The cell update runs on the registers:
  // h_t is stored as E, the saved gates float32.
  template <class E>
  struct GruCellEpilogueOf {
    static constexpr int NV = 3;  // r, z, n
    const float* gi;              // gi row 0 at unit j, stride 3H
    const float* b_hn;            // at j, or null
    const E* h_prev;              // h_{t-1} row 0 at j, stride H
    E* h;                         // h_t row 0 at j, stride H
    float* save;                  // gates row 0 at j (stride 4H), or null
    int64_t H;
    int n;
    LSTM_EXT_INLINE R init(int b, int g) const {
      if (g < 2) return S::load_n(gi + b * 3 * H + g * H, n);
      return b_hn ? S::load_n(b_hn, n) : S::zero();
    }
    LSTM_EXT_INLINE void prefetch(int b) const {  // as LstmCellEpilogueOf's
      for (int g = 0; g < NV; ++g) __builtin_prefetch(gi + b * 3 * H + g * H);
      __builtin_prefetch(h_prev + b * H);
      __builtin_prefetch(h + b * H, 1);
    }
    LSTM_EXT_INLINE void finish(int b, const R (&a)[NV]) const {
      const R r = Act::sigmoid(a[0]), z = Act::sigmoid(a[1]), hn = a[2];
      const R cand = Act::tanh(S::fma(r, hn, S::load_n(gi + b * 3 * H + 2 * H, n)));
      // h_t = (1 - z) n + z h_{t-1}, in ATen's form n + z (h_{t-1} - n).
      const R hp = Elements<S, E>::load_n(h_prev + b * H, n);
      Elements<S, E>::store_n(h + b * H, S::fma(z, S::sub(hp, cand), cand), n);
      if (save) {
        float* row = save + b * 4 * H;
        S::store_n(row, r, n);
        S::store_n(row + H, z, n);
        S::store_n(row + 2 * H, cand, n);
        S::store_n(row + 3 * H, hn, n);
      }
    }
  };

  static void gru_forward(const GruForwardArgs& a, int threads) { gru_forward_of(a, threads); }

  // forward_loop over the gate-interleaved product, each tile finished by the
  // cell update. A tile's rows read h_{t-1} from one place (rows_tile splits
  // where it changes), and the epilogue reads the same rows for z h_{t-1}.
  template <class E, class W>
  static void gru_forward_of(const GruForwardArgsOf<E, W>& a, int threads) {
    const StepLayout& L = *a.layout;
    const int64_t H = a.H, G = 3 * H;
    const W& w = *a.w_hh;
    forward_loop(L, a.reverse, w, threads, [&](int64_t t) {
      const int64_t off = L.offset(t);
      const auto prev = previous(L, t, a.reverse, a.y, a.h0, H);
      const float* gi_t = a.gi + off * G;
      float* gates_t = a.gates ? a.gates + off * 4 * H : nullptr;
      E* y_t = a.y + off * H;
      return [&a, &w, prev, gi_t, gates_t, y_t, H, G](int64_t block, int64_t r0, int64_t r1) {
        const int64_t j = block * V;
        const int n = lanes(j, H);
        rows_tile(r0, r1, prev, w, block, [&](int64_t r) {
          return GruCellEpilogueOf<E>{gi_t + r * G + j,
                                      a.b_hn ? a.b_hn + j : nullptr,
                                      prev.row(r) + j,
                                      y_t + r * H + j,
                                      gates_t ? gates_t + r * 4 * H + j : nullptr,
                                      H, n};
        });
      };
    });
  }

  // Gate gradients of rows [r0, r1) of step t, units [u0, u1) (layout in
  // gru_sequence.h): reads the saved r, z, n, hn, h_{t-1} (where it lives:
  // the previous visited step's rows of y, or h0) and the gradient at h_t
  // (grad_h + grad_y); writes grad_gates_t and grad_direct = dh z, the
  // gradient at h_{t-1} through z h_{t-1}.
  static void gru_cell_backward(const GruBackwardArgs& a, int64_t t, int64_t r0, int64_t r1,
                                int64_t u0, int64_t u1) {
    const StepLayout& L = *a.layout;
    const int64_t H = a.H, G = 4 * H, off = L.offset(t);
    const int64_t p = L.previous(t, a.reverse), continuing = L.rows_continuing(t, a.reverse);
    const R one = S::set1(1.f);
    for (int64_t r = r0; r < r1; ++r) {
      const float* gate = a.gates + (off + r) * G;
      const float* h_prev = r < continuing ? a.y + (L.offset(p) + r) * H : a.h0 + r * H;
      const float* gy = a.grad_y ? a.grad_y + (off + r) * H : nullptr;
      const float* gh = a.grad_h + r * H;
      float* dg = a.grad_gates + (off + r) * G;
      float* direct = a.grad_direct + r * H;
      for (int64_t u = u0; u < u1; u += V) {
        const int n = lanes(u, u1);
        const R rg = S::load_n(gate + u, n), z = S::load_n(gate + H + u, n);
        const R cand = S::load_n(gate + 2 * H + u, n), hn = S::load_n(gate + 3 * H + u, n);
        R dh = S::load_n(gh + u, n);
        if (gy) dh = S::add(dh, S::load_n(gy + u, n));
        const R d_n = S::mul(S::mul(dh, S::sub(one, z)), S::sub(one, S::mul(cand, cand)));
        const R d_z = S::mul(S::mul(dh, S::sub(S::load_n(h_prev + u, n), cand)),
                             S::mul(z, S::sub(one, z)));
        const R d_hn = S::mul(d_n, rg);
        const R d_r = S::mul(S::mul(d_n, hn), S::mul(rg, S::sub(one, rg)));
        S::store_n(dg + u, d_r, n);
        S::store_n(dg + H + u, d_z, n);
        S::store_n(dg + 2 * H + u, d_hn, n);
        S::store_n(dg + 3 * H + u, d_n, n);
        S::store_n(direct + u, S::mul(dh, z), n);
      }
    }
  }

  // grad_h = grad_direct + grad_gates_t[:, 0:3H) W_hh: backward_loop with the
  // direct term as the product's initial value.
  static void gru_backward(const GruBackwardArgs& a, int threads) {
    backward_loop(*a.layout, a.reverse, a.H, *a.w_hh, a.grad_gates, 4 * a.H, a.grad_direct,
                  a.grad_h, threads,
                  [&](int64_t t, int64_t r0, int64_t r1, int64_t u0, int64_t u1) {
                    gru_cell_backward(a, t, r0, r1, u0, u1);
                  });
  }

  // -------------------------------------------------------------- linear --

  // Rows are cut into chunks that stay in L2 while every weight block
  // streams past them; threads take whole chunks.
  static void linear(const LinearArgs& a, int threads) { linear_of(a, threads); }

  template <class E, class W>
  static void linear_of(const LinearArgsOf<E, W>& a, int threads) {
    constexpr int64_t kChunkRows = 96;
    const W& w = *a.w;
    const int64_t chunks = (a.M + kChunkRows - 1) / kChunkRows;
    threads = int(std::min<int64_t>(threads, chunks * w.blocks()));
    run_team(threads, [&](int rank, int team, StepBarrier& barrier) {
      pack_in_team(rank, team, barrier, &w);
      const Share mine(chunks * w.blocks(), rank, team);
      for (int64_t item = mine.begin; item < mine.end; ++item) {
        const int64_t chunk = item / w.blocks(), block = item % w.blocks();
        const int64_t m0 = chunk * kChunkRows, m1 = std::min(m0 + kChunkRows, a.M);
        const int64_t u0 = block * kBlockUnits;
        const RowTiles tiles(m1 - m0, S::kMaxRows);
        for (int64_t i = 0; i < tiles.count; ++i) {
          const int64_t r = m0 + tiles.begin(i);
          Elements<S, E>::run_tile_rows(
              int(tiles.end(i) - tiles.begin(i)), w, block, a.x + r * a.K, a.K,
              StoreEpilogue<Apply::kNone>{nullptr, a.bias ? a.bias + u0 : nullptr,
                                          a.out + r * a.N + u0, a.N, a.N - u0});
        }
      }
    });
  }

  static const Kernels* table() {
    static const Kernels k{V, &lstm_forward, &lstm_backward, &rnn_forward, &rnn_backward,
                           &gru_forward, &gru_backward, &linear};
    return &k;
  }
};

}  // namespace lstm_ext::cpu::fused
