// Part 1: where the per-step time of the current lstm_ext forward goes.
// Times, per step shape (B, H), with the production code's calls:
//   (a) sgemm_ alone: gates_t[B,4H] += h[B,H] @ W_hh[4H,H]^T (as blas.cpp calls it)
//   (b) the at::vec fused cell pass alone (csrc/cpu/lstm_cell.h, inline,
//       as for_rows runs it for these shapes: grain 16384/H rows > B)
//   (c) the full step (a)+(b) as in lstm_forward_loop
//   (d) at::parallel_for overhead: empty body, range 2 grain 1 (forces a fork)
// at 1 and 2 threads (at::set_num_threads, which also sets MKL's threads).
// Each figure: median over `reps` repetitions of a T-step loop.
#include <ATen/Parallel.h>
#include <ATen/ATen.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include "cpu/lstm_cell.h"

extern "C" void sgemm_(const char*, const char*, const int*, const int*, const int*, const float*,
                       const float*, const int*, const float*, const int*, const float*, float*,
                       const int*);

using clk = std::chrono::steady_clock;

static void gemm_rm_nt(int M, int N, int K, const float* A, const float* B, float* C) {
  // Row-major C[M,N] += A[M,K] B[N,K]^T, exactly as lstm_ext::cpu::gemm does it.
  const char ta = 'N', tb = 'T';
  const float one = 1.f;
  sgemm_(&tb, &ta, &N, &M, &K, &one, B, &K, A, &K, &one, C, &N);
}

template <typename F>
static double median_us_per_step(int reps, int T, F&& body) {
  std::vector<double> v;
  body();  // warm
  for (int r = 0; r < reps; ++r) {
    auto t0 = clk::now();
    body();
    v.push_back(std::chrono::duration<double, std::micro>(clk::now() - t0).count() / T);
  }
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

int main(int argc, char** argv) {
  const int reps = argc > 1 ? atoi(argv[1]) : 21;
  struct Shape { int T, B, H; };
  std::vector<Shape> shapes = {{200, 1, 64}, {200, 8, 64}, {100, 4, 128}, {50, 1, 256},
                               {100, 32, 256}, {100, 64, 512}};
  std::mt19937 rng(0);
  std::uniform_real_distribution<float> U(-0.1f, 0.1f);
  printf("%-16s %3s %10s %10s %10s %10s %10s\n", "shape", "thr", "sgemm_us", "cell_us", "step_us",
         "sum_us", "pfor_us");
  for (int thr : {1, 2}) {
    at::set_num_threads(thr);
    // parallel_for overhead (empty body, forced fork when thr == 2)
    const int PF = 2000;
    double pfor = median_us_per_step(reps, PF, [&] {
      for (int i = 0; i < PF; ++i)
        at::parallel_for(0, 2, 1, [&](int64_t b, int64_t e) { asm volatile("" ::: "memory"); });
    });
    for (auto s : shapes) {
      const int T = s.T, B = s.B, H = s.H, G = 4 * H;
      std::vector<float> w(size_t(G) * H), h(size_t(B) * H), c(size_t(B) * H), y(size_t(T) * B * H);
      std::vector<float> gx(size_t(T) * B * G), g(size_t(T) * B * G);
      for (auto& x : w) x = U(rng);
      for (auto& x : h) x = U(rng);
      for (auto& x : c) x = U(rng);
      for (auto& x : gx) x = U(rng) * 10;
      auto reset = [&] { std::copy(gx.begin(), gx.end(), g.begin()); };
      // (a) sgemm alone over the T gate slices
      double t_gemm = median_us_per_step(reps, T, [&] {
        for (int t = 0; t < T; ++t) gemm_rm_nt(B, G, H, h.data(), w.data(), g.data() + size_t(t) * B * G);
      });
      reset();
      // (b) cell pass alone (inline, save_gates=false: inference)
      double t_cell = median_us_per_step(reps, T, [&] {
        for (int t = 0; t < T; ++t)
          lstm_ext::cpu::lstm_cell_forward<float>(0, B, H, g.data() + size_t(t) * B * G, c.data(),
                                                  nullptr, y.data() + size_t(t) * B * H, h.data(), false);
        std::copy(gx.begin(), gx.begin() + B * G, g.begin());  // keep values bounded
      });
      // (c) the full step as lstm_forward_loop does it (with for_rows' parallel_for)
      double t_step = median_us_per_step(reps, T, [&] {
        for (int t = 0; t < T; ++t) {
          float* gt = g.data() + size_t(t) * B * G;
          gemm_rm_nt(B, G, H, h.data(), w.data(), gt);
          at::parallel_for(0, B, std::max<int64_t>(1, 16384 / H), [&](int64_t b0, int64_t b1) {
            lstm_ext::cpu::lstm_cell_forward<float>(b0, b1, H, gt, c.data(), nullptr,
                                                    y.data() + size_t(t) * B * H, h.data(), false);
          });
        }
      });
      char name[64];
      snprintf(name, sizeof name, "T%d B%d H%d", T, B, H);
      printf("%-16s %3d %10.2f %10.2f %10.2f %10.2f %10.3f\n", name, thr, t_gemm, t_cell, t_step,
             t_gemm + t_cell, pfor);
      fflush(stdout);
    }
  }
}
