#include "cpu/lstm_sequence.h"

#include <ATen/Parallel.h>

#include "cpu/blas.h"
#include "cpu/lstm_cell.h"

namespace lstm_ext::cpu {
namespace {

// Below this many elements per thread, forking costs more than the
// elementwise work it would split.
constexpr int64_t kElementsPerThread = 16384;

int64_t rows_per_task(int64_t H) { return std::max<int64_t>(1, kElementsPerThread / H); }

int64_t time_index(int64_t step, int64_t T, bool reverse) { return reverse ? T - 1 - step : step; }

}  // namespace

template <typename scalar_t>
void lstm_forward_loop(int64_t T, int64_t B, int64_t H, bool reverse, bool save,
                       const scalar_t* w_hh, scalar_t* gates, const scalar_t* h0,
                       const scalar_t* c0, scalar_t* y, scalar_t* cells, scalar_t* c_state) {
  const int64_t G = 4 * H;
  const scalar_t* h_prev = h0;
  const scalar_t* c_prev = c0;
  for (int64_t s = 0; s < T; ++s) {
    const int64_t t = time_index(s, T, reverse);
    scalar_t* gates_t = gates + t * B * G;
    scalar_t* h_t = y + t * B * H;
    scalar_t* c_t = save ? cells + t * B * H : c_state;
    // gates_t += h_{t-1} W_hh^T
    gemm<scalar_t>(false, true, B, G, H, scalar_t(1), h_prev, H, w_hh, H, scalar_t(1), gates_t, G);
    at::parallel_for(0, B, rows_per_task(H), [&](int64_t begin, int64_t end) {
      lstm_cell_forward<scalar_t>(begin, end, H, gates_t, c_prev, c_t, h_t, H, save);
    });
    h_prev = h_t;
    c_prev = c_t;
  }
}

template <typename scalar_t>
void lstm_backward_loop(int64_t T, int64_t B, int64_t H, bool reverse, const scalar_t* w_hh,
                        const scalar_t* gates, const scalar_t* cells, const scalar_t* c0,
                        const scalar_t* grad_y, const scalar_t* grad_cells, scalar_t* grad_h,
                        scalar_t* grad_c, scalar_t* grad_gates) {
  const int64_t G = 4 * H;
  for (int64_t s = T - 1; s >= 0; --s) {
    const int64_t t = time_index(s, T, reverse);
    const int64_t offset = t * B * H;
    const scalar_t* c_prev = s > 0 ? cells + time_index(s - 1, T, reverse) * B * H : c0;
    scalar_t* grad_gates_t = grad_gates + t * B * G;
    at::parallel_for(0, B, rows_per_task(H), [&](int64_t begin, int64_t end) {
      lstm_cell_backward<scalar_t>(begin, end, H, gates + t * B * G, cells + offset, c_prev,
                                   grad_y ? grad_y + offset : nullptr, grad_h,
                                   grad_cells ? grad_cells + offset : nullptr, grad_c,
                                   grad_gates_t);
    });
    // grad at h_{t-1} through this step: grad_gates_t W_hh. The elementwise
    // pass above has consumed grad_h, so the product may overwrite it.
    gemm<scalar_t>(false, false, B, H, G, scalar_t(1), grad_gates_t, G, w_hh, H, scalar_t(0),
                   grad_h, H);
  }
}

template void lstm_forward_loop<float>(int64_t, int64_t, int64_t, bool, bool, const float*, float*,
                                       const float*, const float*, float*, float*, float*);
template void lstm_forward_loop<double>(int64_t, int64_t, int64_t, bool, bool, const double*,
                                        double*, const double*, const double*, double*, double*,
                                        double*);
template void lstm_backward_loop<float>(int64_t, int64_t, int64_t, bool, const float*, const float*,
                                        const float*, const float*, const float*, const float*,
                                        float*, float*, float*);
template void lstm_backward_loop<double>(int64_t, int64_t, int64_t, bool, const double*,
                                         const double*, const double*, const double*,
                                         const double*, const double*, double*, double*, double*);

}  // namespace lstm_ext::cpu
