// Vector types for the fused recurrent kernels, one per ISA, with the same
// static interface so the kernels are written once as templates on them.
//
// Each type S provides: V lanes of float32 in S::Reg; kMaxRows, the most
// batch rows a register tile holds (4 * kMaxRows accumulators + 4 weights +
// broadcasts must fit the register file); load/store (unaligned), load_n /
// store_n for the first n lanes (tails where H is not a multiple of V; other
// lanes read as 0 and are not written), and the activations. min(a, b) and
// max(a, b) return b when either is NaN (the x86 rule): callers put the
// constant first, so NaN inputs propagate as they do in torch.
//
// The transcendentals are our own rather than Sleef's through at::vec: the
// cell update runs on every tile in the time loop, and Sleef's u10 exp/tanh
// plus a true division cost about 1.5x these (benchmarks/NOTES.md).
// Accuracy, measured against double: exp rel 1.2e-7, sigmoid
// abs 9e-8, tanh abs 3.1e-7; a sequence's h_t stays within 1e-6 of double.
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

#define LSTM_EXT_INLINE inline __attribute__((always_inline))

namespace lstm_ext::cpu::fused {

// Coefficients shared by every ISA's exp and tanh (Cephes single precision).
namespace coef {
constexpr float kLog2e = 1.44269504088896341f;
constexpr float kLn2Hi = 0.693359375f, kLn2Lo = -2.12194440e-4f;
constexpr float kExp[6] = {1.9875691500E-4f, 1.3981999507E-3f, 8.3334519073E-3f,
                           4.1665795894E-2f, 1.6666665459E-1f, 5.0000001201E-1f};
// tanh(x) = x P(x^2) / Q(x^2) on |x| <= kTanhClamp, a 13/6 rational
// approximation (the form Eigen uses for float): max error 3.1e-7, no exp, so
// about 30% cheaper than exp-based tanh in the cell update.
constexpr float kTanhP[7] = {-2.76076847742355e-16f, 2.00018790482477e-13f,
                             -8.60467152213735e-11f, 5.12229709037114e-08f,
                             1.48572235717979e-05f,  6.37261928875436e-04f,
                             4.89352455891786e-03f};
constexpr float kTanhQ[4] = {1.19825839466702e-06f, 1.18534705686654e-04f,
                             2.26843463243900e-03f, 4.89352518554385e-03f};
// Beyond it the rational form saturates (at 1 - 2^-22).
constexpr float kTanhClamp = 7.90531110763549805f;
// From here on tanh(x) rounds to +-1 in float (1 - tanh(9) = 3e-8).
constexpr float kTanhOne = 9.f;
// exp's argument range: exp stays finite (so 1 / (1 + exp) never meets inf),
// and sigmoid saturates to 0 / 1 below / above it anyway.
constexpr float kExpMin = -88.f, kExpMax = 88.f;
}  // namespace coef

// Formulas written once over any S with add/sub/mul/fma/min/max/recip/exp.
template <class S>
struct Activations {
  using R = typename S::Reg;
  // Below exp's range sigmoid is exactly 0 (not 1 / (1 + exp(88)), a denormal),
  // so a saturated gate passes no gradient, as torch's sigmoid(-inf) = 0.
  static LSTM_EXT_INLINE R sigmoid(R x) {
    const R s = S::recip(S::add(S::set1(1.f), S::exp(S::sub(S::zero(), x))));
    return S::select_le(x, S::set1(coef::kExpMin), S::zero(), s);
  }
  // Exactly +-1 from kTanhOne on (where float tanh rounds to +-1), so that
  // 1 - tanh^2 is 0 for saturated units; NaN stays NaN.
  static LSTM_EXT_INLINE R tanh(R x) {
    R t = rational_tanh(x);
    t = S::select_le(S::set1(coef::kTanhOne), x, S::set1(1.f), t);
    return S::select_le(x, S::set1(-coef::kTanhOne), S::set1(-1.f), t);
  }
  static LSTM_EXT_INLINE R rational_tanh(R x) {
    x = S::max(S::set1(-coef::kTanhClamp), S::min(S::set1(coef::kTanhClamp), x));
    const R z = S::mul(x, x);
    R p = S::set1(coef::kTanhP[0]);
    for (int i = 1; i < 7; ++i) p = S::fma(p, z, S::set1(coef::kTanhP[i]));
    R q = S::set1(coef::kTanhQ[0]);
    for (int i = 1; i < 4; ++i) q = S::fma(q, z, S::set1(coef::kTanhQ[i]));
    return S::mul(S::mul(p, x), S::recip(q));
  }
  static LSTM_EXT_INLINE R relu(R x) { return S::max(S::zero(), x); }
  // x clamped to exp's range, NaN kept.
  static LSTM_EXT_INLINE R clamp_exp_arg(R x) {
    return S::max(S::set1(coef::kExpMin), S::min(S::set1(coef::kExpMax), x));
  }
  // exp(r) on |r| <= ln2/2 as 1 + r + r^2 P(r).
  static LSTM_EXT_INLINE R exp_reduced(R r) {
    R p = S::set1(coef::kExp[0]);
    for (int i = 1; i < 6; ++i) p = S::fma(p, r, S::set1(coef::kExp[i]));
    return S::fma(p, S::mul(r, r), S::add(r, S::set1(1.f)));
  }
};

#if defined(__AVX512F__) && defined(__AVX512DQ__)
struct SimdAvx512 {
  using Reg = __m512;
  static constexpr int V = 16;
  static constexpr int kMaxRows = 6;  // 24 accumulators + 4 weights + broadcast <= 32 zmm

  static LSTM_EXT_INLINE Reg zero() { return _mm512_setzero_ps(); }
  static LSTM_EXT_INLINE Reg set1(float v) { return _mm512_set1_ps(v); }
  static LSTM_EXT_INLINE Reg load(const float* p) { return _mm512_loadu_ps(p); }
  static LSTM_EXT_INLINE void store(float* p, Reg v) { _mm512_storeu_ps(p, v); }
  static LSTM_EXT_INLINE __mmask16 mask(int n) {
    return n >= V ? __mmask16(0xffff) : __mmask16((1u << (n > 0 ? n : 0)) - 1u);
  }
  static LSTM_EXT_INLINE Reg load_n(const float* p, int n) {
    return n >= V ? load(p) : _mm512_maskz_loadu_ps(mask(n), p);
  }
  static LSTM_EXT_INLINE void store_n(float* p, Reg v, int n) {
    if (n >= V) store(p, v);
    else _mm512_mask_storeu_ps(p, mask(n), v);
  }
  static LSTM_EXT_INLINE Reg add(Reg a, Reg b) { return _mm512_add_ps(a, b); }
  static LSTM_EXT_INLINE Reg sub(Reg a, Reg b) { return _mm512_sub_ps(a, b); }
  static LSTM_EXT_INLINE Reg mul(Reg a, Reg b) { return _mm512_mul_ps(a, b); }
  static LSTM_EXT_INLINE Reg fma(Reg a, Reg b, Reg c) { return _mm512_fmadd_ps(a, b, c); }
  static LSTM_EXT_INLINE Reg max(Reg a, Reg b) { return _mm512_max_ps(a, b); }
  static LSTM_EXT_INLINE Reg min(Reg a, Reg b) { return _mm512_min_ps(a, b); }
  // a <= b ? if_le : otherwise, lanewise (NaN compares false).
  static LSTM_EXT_INLINE Reg select_le(Reg a, Reg b, Reg if_le, Reg otherwise) {
    return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(a, b, _CMP_LE_OQ), otherwise, if_le);
  }
  // rcp14 plus one Newton step: ~1 ulp, and cheaper than vdivps on Zen 4.
  static LSTM_EXT_INLINE Reg recip(Reg d) {
    const Reg r = _mm512_rcp14_ps(d);
    return fma(r, _mm512_fnmadd_ps(d, r, set1(1.f)), r);
  }
  // 2^n scaling by vscalefps.
  static LSTM_EXT_INLINE Reg exp(Reg x) {
    x = Activations<SimdAvx512>::clamp_exp_arg(x);
    const Reg n = _mm512_roundscale_ps(mul(x, set1(coef::kLog2e)),
                                       _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    Reg r = _mm512_fnmadd_ps(n, set1(coef::kLn2Hi), x);
    r = _mm512_fnmadd_ps(n, set1(coef::kLn2Lo), r);
    return _mm512_scalef_ps(Activations<SimdAvx512>::exp_reduced(r), n);
  }
};
#endif

#if defined(__AVX2__) && defined(__FMA__)
struct SimdAvx2 {
  using Reg = __m256;
  static constexpr int V = 8;
  // 16 ymm: 12 accumulators + broadcast; the weights are FMA memory operands.
  static constexpr int kMaxRows = 3;

  static LSTM_EXT_INLINE Reg zero() { return _mm256_setzero_ps(); }
  static LSTM_EXT_INLINE Reg set1(float v) { return _mm256_set1_ps(v); }
  static LSTM_EXT_INLINE Reg load(const float* p) { return _mm256_loadu_ps(p); }
  static LSTM_EXT_INLINE void store(float* p, Reg v) { _mm256_storeu_ps(p, v); }
  static LSTM_EXT_INLINE __m256i mask(int n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  }
  static LSTM_EXT_INLINE Reg load_n(const float* p, int n) {
    return n >= V ? load(p) : _mm256_maskload_ps(p, mask(n));
  }
  static LSTM_EXT_INLINE void store_n(float* p, Reg v, int n) {
    if (n >= V) store(p, v);
    else _mm256_maskstore_ps(p, mask(n), v);
  }
  static LSTM_EXT_INLINE Reg add(Reg a, Reg b) { return _mm256_add_ps(a, b); }
  static LSTM_EXT_INLINE Reg sub(Reg a, Reg b) { return _mm256_sub_ps(a, b); }
  static LSTM_EXT_INLINE Reg mul(Reg a, Reg b) { return _mm256_mul_ps(a, b); }
  static LSTM_EXT_INLINE Reg fma(Reg a, Reg b, Reg c) { return _mm256_fmadd_ps(a, b, c); }
  static LSTM_EXT_INLINE Reg max(Reg a, Reg b) { return _mm256_max_ps(a, b); }
  static LSTM_EXT_INLINE Reg min(Reg a, Reg b) { return _mm256_min_ps(a, b); }
  static LSTM_EXT_INLINE Reg select_le(Reg a, Reg b, Reg if_le, Reg otherwise) {
    return _mm256_blendv_ps(otherwise, if_le, _mm256_cmp_ps(a, b, _CMP_LE_OQ));
  }
  static LSTM_EXT_INLINE Reg recip(Reg d) { return _mm256_div_ps(set1(1.f), d); }
  // 2^n built in the exponent field; the clamp keeps n within float's range.
  static LSTM_EXT_INLINE Reg exp(Reg x) {
    x = Activations<SimdAvx2>::clamp_exp_arg(x);
    const Reg n = _mm256_round_ps(mul(x, set1(coef::kLog2e)),
                                  _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    Reg r = _mm256_fnmadd_ps(n, set1(coef::kLn2Hi), x);
    r = _mm256_fnmadd_ps(n, set1(coef::kLn2Lo), r);
    const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n),
                                                         _mm256_set1_epi32(127)), 23);
    return mul(Activations<SimdAvx2>::exp_reduced(r), _mm256_castsi256_ps(e));
  }
};
#endif

// Portable fallback: plain arrays that the compiler may vectorize for
// whatever the build targets; libm for exp.
struct SimdGeneric {
  static constexpr int V = 8;
  static constexpr int kMaxRows = 4;
  struct Reg {
    float v[V];
  };
  template <class F>
  static LSTM_EXT_INLINE Reg map(F f) {
    Reg r;
    for (int l = 0; l < V; ++l) r.v[l] = f(l);
    return r;
  }
  static LSTM_EXT_INLINE Reg zero() { return set1(0.f); }
  static LSTM_EXT_INLINE Reg set1(float s) { return map([&](int) { return s; }); }
  static LSTM_EXT_INLINE Reg load(const float* p) { return map([&](int l) { return p[l]; }); }
  static LSTM_EXT_INLINE void store(float* p, Reg a) {
    for (int l = 0; l < V; ++l) p[l] = a.v[l];
  }
  static LSTM_EXT_INLINE Reg load_n(const float* p, int n) {
    return map([&](int l) { return l < n ? p[l] : 0.f; });
  }
  static LSTM_EXT_INLINE void store_n(float* p, Reg a, int n) {
    for (int l = 0; l < V && l < n; ++l) p[l] = a.v[l];
  }
  static LSTM_EXT_INLINE Reg add(Reg a, Reg b) { return map([&](int l) { return a.v[l] + b.v[l]; }); }
  static LSTM_EXT_INLINE Reg sub(Reg a, Reg b) { return map([&](int l) { return a.v[l] - b.v[l]; }); }
  static LSTM_EXT_INLINE Reg mul(Reg a, Reg b) { return map([&](int l) { return a.v[l] * b.v[l]; }); }
  static LSTM_EXT_INLINE Reg fma(Reg a, Reg b, Reg c) {
    return map([&](int l) { return std::fma(a.v[l], b.v[l], c.v[l]); });
  }
  static LSTM_EXT_INLINE Reg max(Reg a, Reg b) {
    return map([&](int l) { return a.v[l] > b.v[l] ? a.v[l] : b.v[l]; });
  }
  static LSTM_EXT_INLINE Reg min(Reg a, Reg b) {
    return map([&](int l) { return a.v[l] < b.v[l] ? a.v[l] : b.v[l]; });
  }
  static LSTM_EXT_INLINE Reg select_le(Reg a, Reg b, Reg if_le, Reg otherwise) {
    return map([&](int l) { return a.v[l] <= b.v[l] ? if_le.v[l] : otherwise.v[l]; });
  }
  static LSTM_EXT_INLINE Reg recip(Reg d) { return map([&](int l) { return 1.f / d.v[l]; }); }
  static LSTM_EXT_INLINE Reg exp(Reg x) {
    x = Activations<SimdGeneric>::clamp_exp_arg(x);
    return map([&](int l) { return std::exp(x.v[l]); });
  }
};

}  // namespace lstm_ext::cpu::fused
