// Activations (elementwise, on one contiguous run of K elements) and softmax / log_softmax along
// one axis of an array viewed as (outer, D, inner); forward and backward, float and double.
// Semantics are the reference backend's (= PyTorch's): the comparison each formula branches on
// decides the value at a kink and where a NaN goes, so the kernels branch on the same ones.
//
// Also here, because dropout.cpp and loss.cpp use them too: the vectorisable scalar math (exp,
// erf, tanh, sigmoid written so that `#pragma omp simd` loops vectorise in float) and the one way
// the elementwise kernels split work among threads.
#pragma once

#include <omp.h>

#include <cmath>
#include <cstring>

#include "common.h"

// Each elementwise chunk kernel is compiled for AVX-512F, AVX2 and baseline x86-64 and picked at
// load time by CPU features (like conv_depthwise.cpp's clones). The parallel regions stay outside the clones:
// GCC outlines an OpenMP region before cloning, so a region inside a clone would run baseline code.
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define FASTCONV_OPS_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define FASTCONV_OPS_CLONES
#endif
// Helpers inlined into every clone, so that each clone vectorises them for its own ISA.
#define FASTCONV_INLINE inline __attribute__((always_inline))

namespace fastconv {

enum class Activation : int { relu, leaky_relu, elu, gelu, gelu_tanh, sigmoid, tanh, softplus, silu };

// The scalar parameters of an activation, in the public op's order:
//   leaky_relu: a = negative_slope;  elu/selu: a = alpha, b = scale (elu: 1);
//   softplus:   a = beta, b = threshold;  the others take none.
struct ActParams {
  double a = 0, b = 0;
};

// y[k] = act(x[k]) and dx[k] = dy[k] * act'(x[k]) for k < n.
template <typename T>
void activation_forward(Activation act, index_t n, const T* x, T* y, ActParams p, int nthreads);
template <typename T>
void activation_backward(Activation act, index_t n, const T* dy, const T* x, T* dx, ActParams p, int nthreads);

// x, y, dy, dx are (outer, D, inner), normalised along D. The backwards take the forward's output
// y: dx = y * (dy - sum(dy * y)) for softmax, dx = dy - exp(y) * sum(dy) for log_softmax.
template <typename T>
void softmax_forward(bool log, index_t outer, index_t D, index_t inner, const T* x, T* y, int nthreads);
template <typename T>
void softmax_backward(bool log, index_t outer, index_t D, index_t inner, const T* dy, const T* y, T* dx,
                      int nthreads);

// ---------------------------------------------------------------------------------------------
// threads: contiguous chunks, one per thread
// ---------------------------------------------------------------------------------------------

// Below this many elements per thread, waking more threads costs more than it saves.
constexpr index_t kElementsPerThread = index_t(1) << 15;

// f(lo, hi) on a partition of [0, n) into one contiguous chunk per thread (multiples of 64
// elements, so no two threads write one cache line). The partition depends only on n and the team
// size, and each element's result on nothing but its inputs, so results never depend on it.
template <class F>
void for_chunks(index_t n, int nthreads, F&& f) {
  const int team = static_cast<int>(min_i(nthreads, max_i(1, n / kElementsPerThread)));
  if (team <= 1) return f(index_t(0), n);
#pragma omp parallel num_threads(team)
  {
    const index_t per = round_up(ceil_div(n, omp_get_num_threads()), 64);
    const index_t lo = min_i(n, omp_get_thread_num() * per), hi = min_i(n, lo + per);
    if (lo < hi) f(lo, hi);
  }
}

// ---------------------------------------------------------------------------------------------
// scalar math that vectorises: branch-free float versions; double uses libm (accuracy first:
// the float32 tolerance is 2e-4, the float64 one 1e-10)
// ---------------------------------------------------------------------------------------------

FASTCONV_INLINE float bits_to_float(std::int32_t i) {
  float f;
  std::memcpy(&f, &i, sizeof f);
  return f;
}

// exp(x) = 2^n exp(r), n = round(x / ln 2), r = x - n ln 2 (Cody-Waite, two parts), exp(r) by
// Cephes' expf polynomial: relative error about 1e-7. 2^n is applied as two exact powers of two,
// so subnormal results and overflow to inf come out as IEEE arithmetic gives them. NaN stays NaN.
FASTCONV_INLINE float exp_(float x) {
  const bool nan = x != x;
  float v = x < -104.0f ? -104.0f : x;  // exp(-104) rounds to 0, exp(89) overflows: nothing is lost
  v = v > 89.0f ? 89.0f : v;
  v = nan ? 0.0f : v;  // a NaN must not reach the float -> int conversion below
  const float magic = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  const float fn = (v * 1.44269504088896341f + magic) - magic;
  const float r = (v - fn * 0.693359375f) - fn * -2.12194440e-4f;
  float q = 1.9875691500e-4f;
  q = q * r + 1.3981999507e-3f;
  q = q * r + 8.3334519073e-3f;
  q = q * r + 4.1665795894e-2f;
  q = q * r + 1.6666665459e-1f;
  q = q * r + 5.0000001201e-1f;
  const float er = q * r * r + r + 1.0f;
  const std::int32_t n = static_cast<std::int32_t>(fn), n1 = n >> 1, n2 = n - n1;  // each in [-75, 65]
  const float y = er * bits_to_float((n1 + 127) << 23) * bits_to_float((n2 + 127) << 23);
  return nan ? x : y;
}
FASTCONV_INLINE double exp_(double x) { return std::exp(x); }

// erf by Abramowitz & Stegun 7.1.26 (PyTorch's vectorised float erf): absolute error <= 1.5e-7.
FASTCONV_INLINE float erf_(float x) {
  const float a = std::fabs(x), t = 1.0f / (1.0f + 0.3275911f * a);
  float q = 1.061405429f;
  q = q * t - 1.453152027f;
  q = q * t + 1.421413741f;
  q = q * t - 0.284496736f;
  q = q * t + 0.254829592f;
  const float e = 1.0f - q * t * exp_(-a * a);
  return x < 0 ? -e : e;  // NaN: e is NaN
}
FASTCONV_INLINE double erf_(double x) { return std::erf(x); }

// tanh: Cephes' tanhf. Below |x| = 0.625 an odd polynomial (relative error ~1e-7, where the
// exp form would cancel); above, sign(x) (1 - 2 / (exp(2|x|) + 1)), +-1 once exp overflows.
FASTCONV_INLINE float tanh_(float x) {
  const float a = std::fabs(x), z = x * x;
  float q = -5.70498872745e-3f;
  q = q * z + 2.06390887954e-2f;
  q = q * z - 5.37397155531e-2f;
  q = q * z + 1.33314422036e-1f;
  q = q * z - 3.33332819422e-1f;
  const float small = q * z * x + x;
  const float e = 1.0f - 2.0f / (exp_(2.0f * a) + 1.0f);
  return a < 0.625f ? small : (x < 0 ? -e : e);  // NaN: e is NaN
}
FASTCONV_INLINE double tanh_(double x) { return std::tanh(x); }

// 1 / (1 + exp(-x)) without overflow: exp is only ever taken of -|x|.
template <typename T>
FASTCONV_INLINE T sigmoid_(T x) {
  const T e = exp_(-std::fabs(x)), r = T(1) / (T(1) + e);
  return x >= 0 ? r : e * r;
}

// The largest entry of a row, as a vectorised max reduction (which lane a NaN lands in is left to
// the ISA). That is safe: a NaN entry makes the sum below NaN (x - m is NaN for it, or for all if
// m is NaN), and so every output of its row, as in PyTorch; so does a row holding +inf or only
// -inf entries, through max - max = inf - inf.
template <typename T>
FASTCONV_INLINE T row_max(index_t D, const T* x) {
  T m = x[0];
#pragma omp simd reduction(max : m)
  for (index_t d = 1; d < D; ++d) m = x[d] > m ? x[d] : m;
  return m;
}

// sum_d exp(x[d] - m)
template <typename T>
FASTCONV_INLINE T row_sum_exp(index_t D, const T* x, T m) {
  T sum = T(0);
#pragma omp simd reduction(+ : sum)
  for (index_t d = 0; d < D; ++d) sum += exp_(x[d] - m);
  return sum;
}

}  // namespace fastconv
