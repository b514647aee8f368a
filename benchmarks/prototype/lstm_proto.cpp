// Prototype: fused LSTM forward recurrence on the CPU (fp32, AVX-512).
//
// Per step t, for every block of 16 hidden units j..j+15 and every tile of
// BT batch rows, one register tile acc[BT][4 gates] (BT*4 zmm) is
//   initialised from gates_x[t] (x W_ih^T + b, precomputed by one big GEMM),
//   accumulated with h_{t-1} @ W_hh_block^T over k = 0..H-1 (broadcast h[b,k],
//   FMA with 4 packed 16-wide weight vectors: i, f, g, o rows of those units),
//   and finished in registers: sigmoid/tanh, c_t = f c + i g, h_t = o tanh(c_t),
// writing h_t into y[t] (which is the next step's h_{t-1}) and c_t in place.
// W_hh is packed once per sequence: Wp[jb][k][gate][u] = W_hh[gate*H + 16 jb + u][k].
// Threads split the unit blocks; one spin barrier per step.
//
// Build: see build.sh (-march=native; -DWITH_TORCH adds Sleef + at::parallel_for
// + MKL comparisons).
#include <immintrin.h>
#include <pthread.h>
#include <sched.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#ifdef WITH_TORCH
#include <ATen/Parallel.h>
extern "C" __m512 Sleef_expf16_u10(__m512);
extern "C" __m512 Sleef_tanhf16_u10(__m512);
extern "C" void sgemm_(const char*, const char*, const int*, const int*, const int*, const float*,
                       const float*, const int*, const float*, const int*, const float*, float*,
                       const int*);
#endif

using clk = std::chrono::steady_clock;

// ---------------------------------------------------------------- math ----
// exp: Cephes-style. n = round(x log2 e), r = x - n ln2 (two-part ln2),
// degree-6 polynomial for e^r on |r| <= ln2/2, then scale by 2^n with vscalefps
// (which handles overflow -> inf and underflow -> 0 exactly, so only a loose clamp).
static inline __m512 exp512(__m512 x) {
  x = _mm512_max_ps(_mm512_min_ps(x, _mm512_set1_ps(100.f)), _mm512_set1_ps(-100.f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500E-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507E-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073E-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894E-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459E-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201E-1f));
  const __m512 r2 = _mm512_mul_ps(r, r);
  p = _mm512_fmadd_ps(p, r2, _mm512_add_ps(r, _mm512_set1_ps(1.f)));
  return _mm512_scalef_ps(p, n);
}

#ifndef EXPF
#define EXPF exp512
#endif

// 1/d: vrcp14ps + one Newton step (~1 ulp), cheaper than vdivps on Zen 4.
static inline __m512 recip512(__m512 d) {
  const __m512 r = _mm512_rcp14_ps(d);
  return _mm512_fmadd_ps(r, _mm512_fnmadd_ps(d, r, _mm512_set1_ps(1.f)), r);
}

template <__m512 (*E)(__m512) = EXPF>
static inline __m512 sigmoid512(__m512 x) {
  return recip512(_mm512_add_ps(_mm512_set1_ps(1.f), E(_mm512_sub_ps(_mm512_setzero_ps(), x))));
}

#ifdef FAST_TANH
// Eigen's generic_fast_tanh_float: odd/even rational on [-7.9, 7.9], ~2-3 ulp.
template <__m512 (*E)(__m512) = EXPF>
static inline __m512 tanh512(__m512 x) {
  x = _mm512_max_ps(_mm512_min_ps(x, _mm512_set1_ps(7.90531110763549805f)), _mm512_set1_ps(-7.90531110763549805f));
  const __m512 x2 = _mm512_mul_ps(x, x);
  __m512 p = _mm512_set1_ps(-2.76076847742355e-16f);
  p = _mm512_fmadd_ps(p, x2, _mm512_set1_ps(2.00018790482477e-13f));
  p = _mm512_fmadd_ps(p, x2, _mm512_set1_ps(-8.60467152213735e-11f));
  p = _mm512_fmadd_ps(p, x2, _mm512_set1_ps(5.12229709037114e-08f));
  p = _mm512_fmadd_ps(p, x2, _mm512_set1_ps(1.48572235717979e-05f));
  p = _mm512_fmadd_ps(p, x2, _mm512_set1_ps(6.37261928875436e-04f));
  p = _mm512_fmadd_ps(p, x2, _mm512_set1_ps(4.89352455891786e-03f));
  p = _mm512_mul_ps(p, x);
  __m512 q = _mm512_set1_ps(1.19825839466702e-06f);
  q = _mm512_fmadd_ps(q, x2, _mm512_set1_ps(1.18534705686654e-04f));
  q = _mm512_fmadd_ps(q, x2, _mm512_set1_ps(2.26843463243900e-03f));
  q = _mm512_fmadd_ps(q, x2, _mm512_set1_ps(4.89352518554385e-03f));
  return _mm512_mul_ps(p, recip512(q));
}
#else
// tanh: |x| < 0.625 Cephes odd polynomial; else sign(x) (1 - 2 / (e^{2|x|} + 1)).
template <__m512 (*E)(__m512) = EXPF>
static inline __m512 tanh512(__m512 x) {
  const __m512 ax = _mm512_abs_ps(x);
  const __m512 z = _mm512_mul_ps(x, x);
  __m512 p = _mm512_set1_ps(-5.70498872745E-3f);
  p = _mm512_fmadd_ps(p, z, _mm512_set1_ps(2.06390887954E-2f));
  p = _mm512_fmadd_ps(p, z, _mm512_set1_ps(-5.37397155531E-2f));
  p = _mm512_fmadd_ps(p, z, _mm512_set1_ps(1.33314422036E-1f));
  p = _mm512_fmadd_ps(p, z, _mm512_set1_ps(-3.33332819422E-1f));
  const __m512 small = _mm512_fmadd_ps(_mm512_mul_ps(p, z), x, x);
  const __m512 e = E(_mm512_add_ps(ax, ax));
  __m512 big = _mm512_fnmadd_ps(_mm512_set1_ps(2.f), recip512(_mm512_add_ps(e, _mm512_set1_ps(1.f))),
                                _mm512_set1_ps(1.f));
  // copy the sign of x
  big = _mm512_castsi512_ps(_mm512_or_si512(
      _mm512_castps_si512(big),
      _mm512_and_si512(_mm512_castps_si512(x), _mm512_set1_epi32(int(0x80000000u)))));
  const __mmask16 m = _mm512_cmp_ps_mask(ax, _mm512_set1_ps(0.625f), _CMP_LT_OQ);
  return _mm512_mask_blend_ps(m, big, small);
}
#endif

// ------------------------------------------------------------- packing ----
// W_hh [4H, H] row-major (torch layout, gate order i f g o) ->
// Wp [H/16][H][4][16]: a block's panel is contiguous, k-major, 64 floats per k.
static std::vector<float, std::allocator<float>> pack_whh(const float* w, int H) {
  std::vector<float> p(size_t(4) * H * H);
  const int NB = H / 16;
  for (int jb = 0; jb < NB; ++jb)
    for (int k = 0; k < H; ++k)
      for (int g = 0; g < 4; ++g)
        for (int u = 0; u < 16; ++u)
          p[((size_t(jb) * H + k) * 4 + g) * 16 + u] = w[size_t(g * H + jb * 16 + u) * H + k];
  return p;
}

// ----------------------------------------------------------- micro-kernel --
// One [BT rows x 4 gates x 16 units] tile of one step.
//   wp   panel of unit block jb: [H][4][16]
//   hp   h_{t-1} rows (stride H), gx gates_x rows (stride 4H) at column j,
//   c    c state rows (stride H) at column j, y h_t rows (stride H) at column j.
//   act  optional [rows,4H] activations out (training forward), cs optional c_t out.
template <int BT, bool EPI>
static inline void tile(const float* __restrict wp, int H, const float* __restrict hp,
                        const float* __restrict gx, float* __restrict c, float* __restrict y,
                        float* __restrict act, float* __restrict cs) {
  __m512 acc[BT][4];
  const int G = 4 * H;
#pragma GCC unroll 8
  for (int b = 0; b < BT; ++b)
#pragma GCC unroll 4
    for (int g = 0; g < 4; ++g) acc[b][g] = _mm512_loadu_ps(gx + b * G + g * H);
  if constexpr (BT <= 2) {
    // Few rows: a second accumulator set over odd k hides FMA latency.
    __m512 acc2[BT][4];
    for (int b = 0; b < BT; ++b)
      for (int g = 0; g < 4; ++g) acc2[b][g] = _mm512_setzero_ps();
    int k = 0;
    for (; k + 1 < H; k += 2) {
      const float* w = wp + size_t(k) * 64;
      const __m512 w0 = _mm512_load_ps(w), w1 = _mm512_load_ps(w + 16),
                   w2 = _mm512_load_ps(w + 32), w3 = _mm512_load_ps(w + 48);
      const __m512 v0 = _mm512_load_ps(w + 64), v1 = _mm512_load_ps(w + 80),
                   v2 = _mm512_load_ps(w + 96), v3 = _mm512_load_ps(w + 112);
#pragma GCC unroll 2
      for (int b = 0; b < BT; ++b) {
        const __m512 hb = _mm512_set1_ps(hp[b * H + k]);
        const __m512 hc = _mm512_set1_ps(hp[b * H + k + 1]);
        acc[b][0] = _mm512_fmadd_ps(w0, hb, acc[b][0]);
        acc[b][1] = _mm512_fmadd_ps(w1, hb, acc[b][1]);
        acc[b][2] = _mm512_fmadd_ps(w2, hb, acc[b][2]);
        acc[b][3] = _mm512_fmadd_ps(w3, hb, acc[b][3]);
        acc2[b][0] = _mm512_fmadd_ps(v0, hc, acc2[b][0]);
        acc2[b][1] = _mm512_fmadd_ps(v1, hc, acc2[b][1]);
        acc2[b][2] = _mm512_fmadd_ps(v2, hc, acc2[b][2]);
        acc2[b][3] = _mm512_fmadd_ps(v3, hc, acc2[b][3]);
      }
    }
    for (; k < H; ++k) {
      const float* w = wp + size_t(k) * 64;
      for (int b = 0; b < BT; ++b) {
        const __m512 hb = _mm512_set1_ps(hp[b * H + k]);
        for (int g = 0; g < 4; ++g)
          acc[b][g] = _mm512_fmadd_ps(_mm512_load_ps(w + 16 * g), hb, acc[b][g]);
      }
    }
    for (int b = 0; b < BT; ++b)
      for (int g = 0; g < 4; ++g) acc[b][g] = _mm512_add_ps(acc[b][g], acc2[b][g]);
  } else {
#pragma GCC unroll 2
    for (int k = 0; k < H; ++k) {
      const float* w = wp + size_t(k) * 64;
      const __m512 w0 = _mm512_load_ps(w), w1 = _mm512_load_ps(w + 16),
                   w2 = _mm512_load_ps(w + 32), w3 = _mm512_load_ps(w + 48);
#pragma GCC unroll 8
      for (int b = 0; b < BT; ++b) {
        const __m512 hb = _mm512_set1_ps(hp[b * H + k]);
        acc[b][0] = _mm512_fmadd_ps(w0, hb, acc[b][0]);
        acc[b][1] = _mm512_fmadd_ps(w1, hb, acc[b][1]);
        acc[b][2] = _mm512_fmadd_ps(w2, hb, acc[b][2]);
        acc[b][3] = _mm512_fmadd_ps(w3, hb, acc[b][3]);
      }
    }
  }
  if constexpr (!EPI) {
    // GEMM-only timing: keep all four accumulators live (a plain store of
    // each to one address lets the compiler drop three quarters of the FMAs).
    for (int b = 0; b < BT; ++b)
      _mm512_storeu_ps(y + b * H, _mm512_mul_ps(_mm512_set1_ps(1e-3f),
          _mm512_add_ps(_mm512_add_ps(acc[b][0], acc[b][1]), _mm512_add_ps(acc[b][2], acc[b][3]))));
    return;
  }
#pragma GCC unroll 8
  for (int b = 0; b < BT; ++b) {
    const __m512 i = sigmoid512(acc[b][0]);
    const __m512 f = sigmoid512(acc[b][1]);
    const __m512 g = tanh512(acc[b][2]);
    const __m512 o = sigmoid512(acc[b][3]);
    const __m512 cn = _mm512_fmadd_ps(f, _mm512_loadu_ps(c + b * H), _mm512_mul_ps(i, g));
    _mm512_storeu_ps(c + b * H, cn);
    _mm512_storeu_ps(y + b * H, _mm512_mul_ps(o, tanh512(cn)));
    if (act) {
      float* a = act + b * G;
      _mm512_storeu_ps(a, i);
      _mm512_storeu_ps(a + H, f);
      _mm512_storeu_ps(a + 2 * H, g);
      _mm512_storeu_ps(a + 3 * H, o);
    }
    if (cs) _mm512_storeu_ps(cs + b * H, cn);
  }
}

template <bool EPI>
using TileFn = void (*)(const float*, int, const float*, const float*, float*, float*, float*, float*);
template <bool EPI>
static TileFn<EPI> tile_fn(int bt) {
  switch (bt) {
    case 1: return tile<1, EPI>;
    case 2: return tile<2, EPI>;
    case 3: return tile<3, EPI>;
    case 4: return tile<4, EPI>;
    case 5: return tile<5, EPI>;
    default: return tile<6, EPI>;
  }
}

// ------------------------------------------------------------- barrier ----
static inline void futex_wait(std::atomic<int>* a, int v) {
  syscall(SYS_futex, reinterpret_cast<int*>(a), FUTEX_WAIT_PRIVATE, v, nullptr, nullptr, 0);
}
static inline void futex_wake_all(std::atomic<int>* a) {
  syscall(SYS_futex, reinterpret_cast<int*>(a), FUTEX_WAKE_PRIVATE, 0x7fffffff, nullptr, nullptr, 0);
}
// Spin for ~kSpin pauses, then sleep on a futex: on a shared 2-core machine a
// pure spin barrier whose partner is descheduled burns whole time slices.
static int kSpin = 4000;
struct SpinBarrier {
  alignas(64) std::atomic<int> count{0};
  alignas(64) std::atomic<int> gen{0};
  std::atomic<int> sleepers{0};
  int n;
  explicit SpinBarrier(int n_) : n(n_) {}
  void wait() {
    const int g = gen.load(std::memory_order_relaxed);
    if (count.fetch_add(1, std::memory_order_acq_rel) == n - 1) {
      count.store(0, std::memory_order_relaxed);
      gen.store(g + 1, std::memory_order_seq_cst);
      if (sleepers.load(std::memory_order_seq_cst) > 0) futex_wake_all(&gen);
      return;
    }
    for (int spins = 0; gen.load(std::memory_order_acquire) == g;) {
      if (++spins < kSpin) { _mm_pause(); continue; }
      sleepers.fetch_add(1, std::memory_order_seq_cst);
      while (gen.load(std::memory_order_seq_cst) == g) futex_wait(&gen, g);
      sleepers.fetch_sub(1, std::memory_order_seq_cst);
    }
  }
};

// ------------------------------------------------------------ sequence ----
struct Problem {
  int T, B, H;
  std::vector<float> w;     // [4H,H]
  std::vector<float> gx;    // [T,B,4H]
  std::vector<float> h0, c0;
};

struct Work {
  int T, B, H;
  const float* wp;
  const float* gx;
  const float* h0;
  float* c;      // [B,H] in/out
  float* y;      // [T,B,H]
  float* act;    // [T,B,4H] or null
  float* cells;  // [T,B,H] or null
  std::vector<int> row_tiles;  // tile starts, balanced, <= 6 rows each
};

static std::vector<int> make_tiles(int B) {
  const int nt = (B + 5) / 6;
  std::vector<int> s;
  for (int i = 0; i <= nt; ++i) s.push_back(int((int64_t)B * i / nt));
  return s;
}

// Blocks [jb0, jb1) of step t.
template <bool EPI>
static inline void run_blocks(const Work& w, int t, int jb0, int jb1) {
  const int H = w.H, B = w.B, G = 4 * H;
  const float* hp = t == 0 ? w.h0 : w.y + size_t(t - 1) * B * H;
  const float* gxt = w.gx + size_t(t) * B * G;
  float* yt = w.y + size_t(t) * B * H;
  float* at = w.act ? w.act + size_t(t) * B * G : nullptr;
  float* ct = w.cells ? w.cells + size_t(t) * B * H : nullptr;
  const int ntile = int(w.row_tiles.size()) - 1;
  for (int jb = jb0; jb < jb1; ++jb) {
    const int j = jb * 16;
    const float* panel = w.wp + size_t(jb) * H * 64;
    for (int ti = 0; ti < ntile; ++ti) {
      const int b0 = w.row_tiles[ti], bt = w.row_tiles[ti + 1] - b0;
      tile_fn<EPI>(bt)(panel, H, hp + b0 * H, gxt + size_t(b0) * G + j, w.c + b0 * H + j,
                       yt + b0 * H + j, at ? at + size_t(b0) * G + j : nullptr,
                       ct ? ct + b0 * H + j : nullptr);
    }
  }
}

// std::thread workers (spawned per call) + spin barrier per step.
template <bool EPI>
static void run_threads(const Work& w, int nthr) {
  const int NB = w.H / 16;
  if (nthr <= 1) {
    for (int t = 0; t < w.T; ++t) run_blocks<EPI>(w, t, 0, NB);
    return;
  }
  SpinBarrier bar(nthr);
  auto body = [&](int p) {
    const int jb0 = NB * p / nthr, jb1 = NB * (p + 1) / nthr;
    for (int t = 0; t < w.T; ++t) {
      run_blocks<EPI>(w, t, jb0, jb1);
      bar.wait();
    }
  };
  std::vector<std::thread> th;
  for (int p = 1; p < nthr; ++p) th.emplace_back(body, p);
  body(0);
  for (auto& x : th) x.join();
}

// Persistent pool: like run_threads but workers live across calls (what a
// production kernel would keep), woken by a generation counter.
struct Pool {
  int n;
  std::vector<std::thread> th;
  alignas(64) std::atomic<int> job{0};
  alignas(64) std::atomic<int> done{0};
  std::function<void(int)> fn;
  bool stop = false;
  explicit Pool(int n_) : n(n_) {
    for (int p = 1; p < n; ++p)
      th.emplace_back([this, p] {
        int seen = 0;
        for (;;) {
          for (int spins = 0; job.load(std::memory_order_acquire) == seen;) {
            if (++spins < kSpin) { _mm_pause(); continue; }
            futex_wait(&job, seen);
          }
          seen = job.load(std::memory_order_acquire);
          if (stop) return;
          fn(p);
          done.fetch_add(1, std::memory_order_acq_rel);
        }
      });
  }
  void run(std::function<void(int)> f) {
    fn = std::move(f);
    done.store(0);
    job.fetch_add(1, std::memory_order_seq_cst);
    futex_wake_all(&job);  // (a production pool would skip this when no worker sleeps)
    fn(0);
    while (done.load(std::memory_order_acquire) != n - 1) _mm_pause();
  }
  ~Pool() {
    stop = true;
    job.fetch_add(1);
    futex_wake_all(&job);
    for (auto& x : th) x.join();
  }
};

template <bool EPI>
static void run_pool(Pool& pool, const Work& w) {
  const int NB = w.H / 16, nthr = pool.n;
  SpinBarrier bar(nthr);
  pool.run([&](int p) {
    const int jb0 = NB * p / nthr, jb1 = NB * (p + 1) / nthr;
    for (int t = 0; t < w.T; ++t) {
      run_blocks<EPI>(w, t, jb0, jb1);
      bar.wait();
    }
  });
}

#ifdef WITH_TORCH
// at::parallel_for ONCE per sequence (torch's OpenMP pool), spin barrier per step.
// Needs -fopenmp at compile time (else at::parallel_for is inline-serial).
static void run_atpf_once(const Work& w, int nthr) {
  const int NB = w.H / 16;
  SpinBarrier bar(nthr);
  at::parallel_for(0, nthr, 1, [&](int64_t p0, int64_t p1) {
    if (p1 - p0 != 1) {  // fewer threads than parts: run serially, no barrier
      for (int t = 0; t < w.T; ++t) run_blocks<true>(w, t, 0, NB);
      return;
    }
    const int jb0 = NB * p0 / nthr, jb1 = NB * (p0 + 1) / nthr;
    for (int t = 0; t < w.T; ++t) {
      run_blocks<true>(w, t, jb0, jb1);
      bar.wait();
    }
  });
}
// at::parallel_for PER STEP (fork/join per step, no barrier).
static void run_atpf_step(const Work& w, int nthr) {
  const int NB = w.H / 16;
  for (int t = 0; t < w.T; ++t)
    at::parallel_for(0, NB, std::max(1, NB / nthr), [&](int64_t b0, int64_t b1) {
      run_blocks<true>(w, t, int(b0), int(b1));
    });
}
#endif

// ----------------------------------------------------------- reference ----
static void reference(const Problem& P, std::vector<double>& y) {
  const int T = P.T, B = P.B, H = P.H, G = 4 * H;
  std::vector<double> h(P.h0.begin(), P.h0.end()), c(P.c0.begin(), P.c0.end()), g(G);
  y.assign(size_t(T) * B * H, 0);
  auto sg = [](double x) { return 1 / (1 + std::exp(-x)); };
  for (int t = 0; t < T; ++t) {
    std::vector<double> hn(size_t(B) * H);
    for (int b = 0; b < B; ++b) {
      for (int r = 0; r < G; ++r) {
        double s = P.gx[(size_t(t) * B + b) * G + r];
        for (int k = 0; k < H; ++k) s += double(P.w[size_t(r) * H + k]) * h[b * H + k];
        g[r] = s;
      }
      for (int j = 0; j < H; ++j) {
        const double i = sg(g[j]), f = sg(g[H + j]), gg = std::tanh(g[2 * H + j]), o = sg(g[3 * H + j]);
        c[b * H + j] = f * c[b * H + j] + i * gg;
        hn[b * H + j] = o * std::tanh(c[b * H + j]);
        y[(size_t(t) * B + b) * H + j] = hn[b * H + j];
      }
    }
    h = hn;
  }
}

static Problem make_problem(int T, int B, int H, unsigned seed) {
  Problem P{T, B, H};
  std::mt19937 rng(seed);
  const float s = 1.f / std::sqrt(float(H));  // torch's init range
  std::uniform_real_distribution<float> U(-s, s), X(-2.f, 2.f), N(-1.f, 1.f);
  P.w.resize(size_t(4) * H * H);
  for (auto& x : P.w) x = U(rng);
  P.gx.resize(size_t(T) * B * 4 * H);
  for (auto& x : P.gx) x = X(rng);  // input projection + bias, O(1)
  P.h0.resize(size_t(B) * H);
  P.c0.resize(size_t(B) * H);
  for (auto& x : P.h0) x = N(rng);
  for (auto& x : P.c0) x = N(rng);
  return P;
}

template <typename F>
static double med_us(int reps, F&& f) {
  std::vector<double> v;
  f();
  for (int r = 0; r < reps; ++r) {
    auto t0 = clk::now();
    f();
    v.push_back(std::chrono::duration<double, std::micro>(clk::now() - t0).count());
  }
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// ----------------------------------------------------------- accuracy -----
static double ulp_rel(float a, double ref) { return std::fabs(a - ref) / std::max(std::fabs(ref), 1e-30); }

template <__m512 (*E)(__m512)>
static void accuracy(const char* name) {
  double e_rel = 0, s_abs = 0, s_rel = 0, t_abs = 0, t_rel = 0;
  alignas(64) float in[16], out[16];
  for (double x0 = -87.0; x0 < 88.0; x0 += 16 * 1.37e-4) {
    for (int l = 0; l < 16; ++l) in[l] = float(x0 + l * 1.37e-4);
    _mm512_store_ps(out, E(_mm512_load_ps(in)));
    for (int l = 0; l < 16; ++l) e_rel = std::max(e_rel, ulp_rel(out[l], std::exp(double(in[l]))));
  }
  for (double x0 = -20.0; x0 < 20.0; x0 += 16 * 1.1e-5) {
    for (int l = 0; l < 16; ++l) in[l] = float(x0 + l * 1.1e-5);
    _mm512_store_ps(out, sigmoid512<E>(_mm512_load_ps(in)));
    for (int l = 0; l < 16; ++l) {
      const double r = 1 / (1 + std::exp(-double(in[l])));
      s_abs = std::max(s_abs, std::fabs(out[l] - r));
      s_rel = std::max(s_rel, ulp_rel(out[l], r));
    }
    _mm512_store_ps(out, tanh512<E>(_mm512_load_ps(in)));
    for (int l = 0; l < 16; ++l) {
      const double r = std::tanh(double(in[l]));
      t_abs = std::max(t_abs, std::fabs(out[l] - r));
      if (in[l] != 0) t_rel = std::max(t_rel, ulp_rel(out[l], r));
    }
  }
  // throughput: sigmoid+tanh of 64K floats
  std::vector<float> buf(1 << 16, 0.3f);
  const double us = med_us(51, [&] {
    for (size_t i = 0; i < buf.size(); i += 16) {
      __m512 v = _mm512_loadu_ps(&buf[i]);
      v = _mm512_add_ps(sigmoid512<E>(v), tanh512<E>(v));
      _mm512_storeu_ps(&buf[i], _mm512_mul_ps(v, _mm512_set1_ps(0.25f)));
    }
  });
  printf("%-14s exp max rel %.2e | sigmoid max abs %.2e rel %.2e | tanh max abs %.2e rel %.2e |"
         " sigmoid+tanh %.2f ns/vec16\n",
         name, e_rel, s_abs, s_rel, t_abs, t_rel, us * 1e3 / (buf.size() / 16));
}

// ----------------------------------------------------------------- main ----
int main(int argc, char** argv) {
  const int reps = argc > 1 ? atoi(argv[1]) : 21;
  const bool quick = argc > 2 && std::string(argv[2]) == "quick";
  if (argc > 3) kSpin = atoi(argv[3]);
  accuracy<exp512>("exp512");
#ifdef WITH_TORCH
  accuracy<Sleef_expf16_u10>("Sleef_u10");
#endif
  struct S { int T, B, H; };
  std::vector<S> shapes = {{200, 1, 64}, {200, 8, 64}, {100, 4, 128}, {50, 1, 256},
                           {100, 32, 256}, {100, 64, 512}};
  printf("\nper-step us (median of %d sequence runs / T)\n", reps);
  printf("%-14s %9s %8s %8s %8s %8s %8s %8s %8s %9s %8s\n", "shape", "maxdiff", "1t", "1t_gemm",
         "1t_save", "2t_thr", "2t_pool", "2t_save", "GF/s_2t", "atpf_once", "atpf_stp");
  Pool pool(2);
  {
    // Cost of one step barrier alone (2 threads, no work), and of at::parallel_for
    // fork/join with an empty body.
    const int N = 20000;
    const double us = med_us(reps, [&] {
      SpinBarrier bar(2);
      pool.run([&](int) { for (int i = 0; i < N; ++i) bar.wait(); });
    }) / N;
    double pf = 0;
#ifdef WITH_TORCH
    at::set_num_threads(2);
    pf = med_us(reps, [&] {
      for (int i = 0; i < N; ++i) at::parallel_for(0, 2, 1, [&](int64_t, int64_t) { asm volatile("" ::: "memory"); });
    }) / N;
#endif
    printf("barrier alone: %.3f us/step (spin-then-futex, 2 threads); at::parallel_for fork/join: %.3f us\n", us, pf);
  }
  for (auto s : shapes) {
    const int T = s.T, B = s.B, H = s.H, G = 4 * H;
    Problem P = make_problem(T, B, H, 1234);
    auto wpv = pack_whh(P.w.data(), H);
    float* wp = static_cast<float*>(std::aligned_alloc(64, wpv.size() * 4));
    std::memcpy(wp, wpv.data(), wpv.size() * 4);
    std::vector<float> c(P.c0), y(size_t(T) * B * H), act(size_t(T) * B * G), cells(size_t(T) * B * H);
    Work w{T, B, H, wp, P.gx.data(), P.h0.data(), c.data(), y.data(), nullptr, nullptr, make_tiles(B)};
    // correctness (2 threads via pool, then 1 thread), vs double reference
    std::vector<double> ref;
    double maxdiff = 0;
    if (!quick || H <= 256) {
      reference(P, ref);
      for (int mode = 0; mode < 2; ++mode) {
        std::copy(P.c0.begin(), P.c0.end(), c.begin());
        if (mode == 0) run_threads<true>(w, 1); else run_pool<true>(pool, w);
        for (size_t i = 0; i < y.size(); ++i) maxdiff = std::max(maxdiff, std::fabs(y[i] - ref[i]));
      }
    }
    auto timed = [&](auto&& f) {
      return med_us(reps, [&] {
               std::copy(P.c0.begin(), P.c0.end(), c.begin());
               f();
             }) / T;
    };
    const double t1 = timed([&] { run_threads<true>(w, 1); });
    const double t1g = timed([&] { run_threads<false>(w, 1); });
    Work ws = w;
    ws.act = act.data();
    ws.cells = cells.data();
    const double t1s = timed([&] { run_threads<true>(ws, 1); });
    const double t2 = timed([&] { run_threads<true>(w, 2); });
    const double t2p = timed([&] { run_pool<true>(pool, w); });
    const double t2s = timed([&] { run_pool<true>(pool, ws); });
    double tpo = 0, tps = 0;
#ifdef WITH_TORCH
    at::set_num_threads(2);
    tpo = timed([&] { run_atpf_once(w, 2); });
    tps = timed([&] { run_atpf_step(w, 2); });
#endif
    const double gf = 2.0 * B * G * H / (std::min(t2, t2p) * 1e3);
    char name[64];
    snprintf(name, sizeof name, "T%d B%d H%d", T, B, H);
    printf("%-14s %9.2e %8.2f %8.2f %8.2f %8.2f %8.2f %8.2f %8.1f %9.2f %8.2f\n", name, maxdiff, t1,
           t1g, t1s, t2, t2p, t2s, gf, tpo, tps);
    fflush(stdout);
    std::free(wp);
  }
}
