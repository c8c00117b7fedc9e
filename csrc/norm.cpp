// Batch norm. The reductions run one channel per unit of work (its N planes of L values, in order,
// summed in double; the backward's in runs of 512 in the input dtype first, see dy_sums_impl), so
// statistics never depend on the thread count; the elementwise passes run
// one (n, c) plane per unit, with the reference's operation order, so they are bit-identical to it
// given the same (C,) vectors.
//
// Batch norm followed by a hardtanh (ReLU6 is hardtanh(0, 6)), fused: the forward clamps as it
// writes y, and the backward masks dy where the clamp was flat, so nothing of the activation
// touches memory of its own (unfused: a copy and a clamp forward, a masked dy written and read
// back, ~6 of the ~14 passes over a (N, C, L) tensor). The mask needs the forward's value before
// the clamp, z, exactly: the backward recomputes it from x with the forward's expression
// (normalised(), inlined into every loop; its one multiply-add is contracted, or not, alike in
// all of them, as the same expression with a single-use product), so the same rounding gives the
// same z, bit for bit; tests check the mask against the forward's y on every run.
#include "norm.h"

#include "activation.h"

#include <type_traits>

namespace fastconv {
namespace {

template <typename T>
FASTCONV_INLINE double sum_impl(index_t L, const T* x) {
  double s = 0;
#pragma omp simd reduction(+ : s)
  for (index_t l = 0; l < L; ++l) s += x[l];
  return s;
}

template <typename T>
FASTCONV_INLINE double squared_deviation_impl(index_t L, const T* x, double mean) {
  double s = 0;
#pragma omp simd reduction(+ : s)
  for (index_t l = 0; l < L; ++l) s += (x[l] - mean) * (x[l] - mean);
  return s;
}

// sum (x - k) and sum (x - k)^2 in one pass, in double: float32 statistics in one read of x
// instead of two. Shifted by k, a value of the channel, so the variance S2/n - (S/n)^2 cancels
// only (mean - k)^2 / var, a few units for any k drawn from the data (unshifted it would cancel
// mean^2 / var, unbounded); float32 values and their differences are exact in double.
struct Moments {
  double s, s2;
};

template <typename T>
FASTCONV_INLINE Moments shifted_moments_impl(index_t L, const T* x, double k) {
  double s = 0, s2 = 0;
#pragma omp simd reduction(+ : s, s2)
  for (index_t l = 0; l < L; ++l) {
    const double d = double(x[l]) - k;
    s += d;
    s2 += d * d;
  }
  return {s, s2};
}

// sum dy and sum dy * (x - mean), in one pass over dy
struct Sums {
  double dy, dy_centred;
};

template <typename T>
FASTCONV_INLINE Sums dy_sums_impl(index_t L, const T* dy, const T* x, T mean) {
  // in T within runs of 512 (8-16 lanes of 32-64 terms each, as accurate as a pairwise sum),
  // the runs in double: float32 -> double conversions per element made the pass compute-bound
  constexpr index_t kRun = 512;
  double s = 0, sc = 0;
  for (index_t at = 0; at < L; at += kRun) {
    const index_t len = min_i(kRun, L - at);
    T rs = 0, rsc = 0;
#pragma omp simd reduction(+ : rs, rsc)
    for (index_t l = 0; l < len; ++l) {
      rs += dy[at + l];
      rsc += dy[at + l] * (x[at + l] - mean);
    }
    s += rs;
    sc += rsc;
  }
  return {s, sc};
}

// z = ((x - mean) * invstd) * w + b (w = 1, b = 0 when absent: exact no-ops): the batch norm's
// output, and the value a fused hardtanh clamps
template <typename T>
FASTCONV_INLINE T normalised(T x, T mean, T invstd, T w, T b) {
  return ((x - mean) * invstd) * w + b;
}

template <typename T>
FASTCONV_INLINE void affine_impl(index_t L, const T* x, T mean, T invstd, T w, T b, T* y) {
#pragma omp simd
  for (index_t l = 0; l < L; ++l) y[l] = normalised(x[l], mean, invstd, w, b);
}

// Where PyTorch's hardtanh_backward zeroes the gradient: z <= lo or z >= hi, the bounds
// themselves included; a NaN z passes it (no comparison holds)
template <typename T>
FASTCONV_INLINE bool flat(T z, T lo, T hi) {
  return (z <= lo) | (z >= hi);
}

// y = clamp(z, lo, hi), PyTorch's hardtanh forward (NaN stays NaN: both comparisons false)
template <typename T>
FASTCONV_INLINE void affine_clamp_impl(index_t L, const T* x, T mean, T invstd, T w, T b, T lo, T hi, T* y) {
#pragma omp simd
  for (index_t l = 0; l < L; ++l) {
    const T z = normalised(x[l], mean, invstd, w, b);
    y[l] = z < lo ? lo : (z > hi ? hi : z);
  }
}

// The masked dy, g = flat(z) ? 0 : dy. dy is read whatever the mask: a conditional read
// vectorises as a masked load (vmaskmovps), which made the whole backward 2x slower on AMD Zen.
template <typename T>
FASTCONV_INLINE T masked(T dy, T x, T mean, T invstd, T w, T b, T lo, T hi) {
  return flat(normalised(x, mean, invstd, w, b), lo, hi) ? T(0) : dy;
}

// dy_sums_impl of the masked dy. The masked values go through a chunk buffer in L1: with the
// select inside the double reductions GCC gave up vectorising (a scalar loop with branches, 13x slower).
constexpr index_t kChunk = 512;

template <typename T>
FASTCONV_INLINE Sums masked_sums_impl(index_t L, const T* dy, const T* x, T mean, T invstd, T w, T b, T lo, T hi) {
  alignas(64) T g[kChunk];
  Sums total{0, 0};
  for (index_t at = 0; at < L; at += kChunk) {
    const index_t len = min_i(kChunk, L - at);
#pragma omp simd
    for (index_t l = 0; l < len; ++l) g[l] = masked(dy[at + l], x[at + l], mean, invstd, w, b, lo, hi);
    const Sums p = dy_sums_impl(len, g, x + at, mean);
    total.dy += p.dy;
    total.dy_centred += p.dy_centred;
  }
  return total;
}

// dx_impl of the masked dy (training)
template <typename T>
FASTCONV_INLINE void masked_dx_impl(index_t L, const T* dy, const T* x, T mean, T invstd, T w, T b, T lo, T hi,
                                    T a, T bb, T k, T* dx) {
#pragma omp simd
  for (index_t l = 0; l < L; ++l) {
    const T g = masked(dy[l], x[l], mean, invstd, w, b, lo, hi);
    dx[l] = ((g - a) - ((x[l] - mean) * invstd) * bb) * k;
  }
}

// inference: the per-channel affine map's derivative of the masked dy, as the unfused backward
// computes it (the forward on dy with a zero mean and no bias: ((g - 0) * invstd) * w + 0)
template <typename T>
FASTCONV_INLINE void masked_scale_impl(index_t L, const T* dy, const T* x, T mean, T invstd, T w, T b, T lo, T hi,
                                       T* dx) {
#pragma omp simd
  for (index_t l = 0; l < L; ++l) dx[l] = (masked(dy[l], x[l], mean, invstd, w, b, lo, hi) * invstd) * w;
}

// dx = ((dy - a) - ((x - mean) * invstd) * b) * k
template <typename T>
FASTCONV_INLINE void dx_impl(index_t L, const T* dy, const T* x, T mean, T invstd, T a, T b, T k, T* dx) {
#pragma omp simd
  for (index_t l = 0; l < L; ++l) dx[l] = ((dy[l] - a) - ((x[l] - mean) * invstd) * b) * k;
}

FASTCONV_OPS_CLONES double plane_sum(index_t L, const float* x) { return sum_impl(L, x); }
FASTCONV_OPS_CLONES double plane_sum(index_t L, const double* x) { return sum_impl(L, x); }
FASTCONV_OPS_CLONES double plane_squared_deviation(index_t L, const float* x, double mean) {
  return squared_deviation_impl(L, x, mean);
}
FASTCONV_OPS_CLONES double plane_squared_deviation(index_t L, const double* x, double mean) {
  return squared_deviation_impl(L, x, mean);
}
FASTCONV_OPS_CLONES Moments plane_shifted_moments(index_t L, const float* x, double k) {
  return shifted_moments_impl(L, x, k);
}
FASTCONV_OPS_CLONES Sums plane_dy_sums(index_t L, const float* dy, const float* x, float mean) {
  return dy_sums_impl(L, dy, x, mean);
}
FASTCONV_OPS_CLONES Sums plane_dy_sums(index_t L, const double* dy, const double* x, double mean) {
  return dy_sums_impl(L, dy, x, mean);
}
FASTCONV_OPS_CLONES void plane_affine(index_t L, const float* x, float mean, float invstd, float w, float b, float* y) {
  affine_impl(L, x, mean, invstd, w, b, y);
}
FASTCONV_OPS_CLONES void plane_affine(index_t L, const double* x, double mean, double invstd, double w, double b,
                                     double* y) {
  affine_impl(L, x, mean, invstd, w, b, y);
}
FASTCONV_OPS_CLONES void plane_dx(index_t L, const float* dy, const float* x, float mean, float invstd, float a,
                                 float b, float k, float* dx) {
  dx_impl(L, dy, x, mean, invstd, a, b, k, dx);
}
FASTCONV_OPS_CLONES void plane_dx(index_t L, const double* dy, const double* x, double mean, double invstd, double a,
                                 double b, double k, double* dx) {
  dx_impl(L, dy, x, mean, invstd, a, b, k, dx);
}

// The fused passes, one (n, c) plane (or channel-plane) per call, float and double
#define FASTCONV_FUSED_CLONES(T)                                                                                \
  FASTCONV_OPS_CLONES void plane_affine_clamp(index_t L, const T* x, T mean, T invstd, T w, T b, T lo, T hi,      \
                                              T* y) {                                                            \
    affine_clamp_impl(L, x, mean, invstd, w, b, lo, hi, y);                                                      \
  }                                                                                                              \
  FASTCONV_OPS_CLONES Sums plane_masked_sums(index_t L, const T* dy, const T* x, T mean, T invstd, T w, T b, T lo, \
                                             T hi) {                                                             \
    return masked_sums_impl(L, dy, x, mean, invstd, w, b, lo, hi);                                               \
  }                                                                                                              \
  FASTCONV_OPS_CLONES void plane_masked_dx(index_t L, const T* dy, const T* x, T mean, T invstd, T w, T b, T lo,  \
                                           T hi, T a, T bb, T k, T* dx) {                                        \
    masked_dx_impl(L, dy, x, mean, invstd, w, b, lo, hi, a, bb, k, dx);                                          \
  }                                                                                                              \
  FASTCONV_OPS_CLONES void plane_masked_scale(index_t L, const T* dy, const T* x, T mean, T invstd, T w, T b, T lo, \
                                              T hi, T* dx) {                                                     \
    masked_scale_impl(L, dy, x, mean, invstd, w, b, lo, hi, dx);                                                 \
  }
FASTCONV_FUSED_CLONES(float)
FASTCONV_FUSED_CLONES(double)
#undef FASTCONV_FUSED_CLONES

int team(const NormShape& s, index_t units, int nthreads) {
  return static_cast<int>(max_i(1, min_i(min_i(nthreads, units), s.N * s.C * s.L / kElementsPerThread)));
}

}  // namespace

template <typename T>
void batch_norm_stats(const NormShape& s, const T* x, T* mean, T* var, int nthreads) {
  const double n = double(s.N * s.L);
  if constexpr (std::is_same_v<T, float>) {
    // one pass (see shifted_moments_impl); float64 keeps two passes, whose accuracy a double
    // accumulator cannot give its values' squares
#pragma omp parallel for schedule(static) num_threads(team(s, s.C, nthreads))
    for (index_t c = 0; c < s.C; ++c) {
      // the channel's first value; 0 if it is not finite (a shift by inf would make an inf mean NaN)
      const double first = x[c * s.L];
      const double k = std::isfinite(first) ? first : 0.0;
      double total = 0, squares = 0;
      for (index_t i = 0; i < s.N; ++i) {
        const Moments p = plane_shifted_moments(s.L, x + (i * s.C + c) * s.L, k);
        total += p.s;
        squares += p.s2;
      }
      const double shift = total / n;
      const double v = squares / n - shift * shift;
      mean[c] = T(k + shift);
      var[c] = T(v < 0 ? 0 : v);  // rounding may leave a variance of ~0 below 0 (NaN stays NaN)
    }
    return;
  }
#pragma omp parallel for schedule(static) num_threads(team(s, s.C, nthreads))
  for (index_t c = 0; c < s.C; ++c) {
    double total = 0;
    for (index_t i = 0; i < s.N; ++i) total += plane_sum(s.L, x + (i * s.C + c) * s.L);
    const double m = total / n;
    double dev = 0;
    for (index_t i = 0; i < s.N; ++i) dev += plane_squared_deviation(s.L, x + (i * s.C + c) * s.L, m);
    mean[c] = T(m);
    var[c] = T(dev / n);
  }
}

template <typename T>
void batch_norm_forward(const NormShape& s, const T* x, const T* mean, const T* invstd, const T* weight,
                        const T* bias, T* y, int nthreads) {
#pragma omp parallel for schedule(static) num_threads(team(s, s.N * s.C, nthreads))
  for (index_t u = 0; u < s.N * s.C; ++u) {
    const index_t c = u % s.C;
    plane_affine(s.L, x + u * s.L, mean[c], invstd[c], weight ? weight[c] : T(1), bias ? bias[c] : T(0),
                 y + u * s.L);
  }
}

template <typename T>
void batch_norm_backward_reduce(const NormShape& s, const T* dy, const T* x, const T* mean, const T* invstd,
                                T* sum_dy, T* sum_dy_xhat, int nthreads) {
#pragma omp parallel for schedule(static) num_threads(team(s, s.C, nthreads))
  for (index_t c = 0; c < s.C; ++c) {
    double total = 0, dot = 0;
    for (index_t i = 0; i < s.N; ++i) {
      const index_t at = (i * s.C + c) * s.L;
      const Sums p = plane_dy_sums(s.L, dy + at, x + at, mean[c]);
      total += p.dy;
      dot += p.dy_centred;
    }
    sum_dy[c] = T(total);
    sum_dy_xhat[c] = T(dot * double(invstd[c]));
  }
}

template <typename T>
void batch_norm_backward_input(const NormShape& s, const T* dy, const T* x, const T* mean, const T* invstd,
                               const T* weight, const T* sum_dy, const T* sum_dy_xhat, T* dx, int nthreads) {
  const T n = T(s.N * s.L);
#pragma omp parallel for schedule(static) num_threads(team(s, s.N * s.C, nthreads))
  for (index_t u = 0; u < s.N * s.C; ++u) {
    const index_t c = u % s.C;
    const T k = weight ? invstd[c] * weight[c] : invstd[c];
    plane_dx(s.L, dy + u * s.L, x + u * s.L, mean[c], invstd[c], sum_dy[c] / n, sum_dy_xhat[c] / n, k, dx + u * s.L);
  }
}

template <typename T>
void batch_norm_forward_hardtanh(const NormShape& s, const T* x, const T* mean, const T* invstd, const T* weight,
                                 const T* bias, T lo, T hi, T* y, int nthreads) {
#pragma omp parallel for schedule(static) num_threads(team(s, s.N * s.C, nthreads))
  for (index_t u = 0; u < s.N * s.C; ++u) {
    const index_t c = u % s.C;
    plane_affine_clamp(s.L, x + u * s.L, mean[c], invstd[c], weight ? weight[c] : T(1), bias ? bias[c] : T(0), lo,
                       hi, y + u * s.L);
  }
}

template <typename T>
void batch_norm_backward_reduce_hardtanh(const NormShape& s, const T* dy, const T* x, const T* mean,
                                         const T* invstd, const T* weight, const T* bias, T lo, T hi, T* sum_dy,
                                         T* sum_dy_xhat, int nthreads) {
#pragma omp parallel for schedule(static) num_threads(team(s, s.C, nthreads))
  for (index_t c = 0; c < s.C; ++c) {
    const T w = weight ? weight[c] : T(1), b = bias ? bias[c] : T(0);
    double total = 0, dot = 0;
    for (index_t i = 0; i < s.N; ++i) {
      const index_t at = (i * s.C + c) * s.L;
      const Sums p = plane_masked_sums(s.L, dy + at, x + at, mean[c], invstd[c], w, b, lo, hi);
      total += p.dy;
      dot += p.dy_centred;
    }
    sum_dy[c] = T(total);
    sum_dy_xhat[c] = T(dot * double(invstd[c]));
  }
}

template <typename T>
void batch_norm_backward_input_hardtanh(const NormShape& s, const T* dy, const T* x, const T* mean, const T* invstd,
                                        const T* weight, const T* bias, T lo, T hi, const T* sum_dy,
                                        const T* sum_dy_xhat, bool training, T* dx, int nthreads) {
  const T n = T(s.N * s.L);
#pragma omp parallel for schedule(static) num_threads(team(s, s.N * s.C, nthreads))
  for (index_t u = 0; u < s.N * s.C; ++u) {
    const index_t c = u % s.C;
    const T w = weight ? weight[c] : T(1), b = bias ? bias[c] : T(0);
    if (training) {
      const T k = weight ? invstd[c] * weight[c] : invstd[c];
      plane_masked_dx(s.L, dy + u * s.L, x + u * s.L, mean[c], invstd[c], w, b, lo, hi, sum_dy[c] / n,
                      sum_dy_xhat[c] / n, k, dx + u * s.L);
    } else {
      plane_masked_scale(s.L, dy + u * s.L, x + u * s.L, mean[c], invstd[c], w, b, lo, hi, dx + u * s.L);
    }
  }
}

#define FASTCONV_INSTANTIATE(T)                                                                                  \
  template void batch_norm_stats<T>(const NormShape&, const T*, T*, T*, int);                                   \
  template void batch_norm_forward<T>(const NormShape&, const T*, const T*, const T*, const T*, const T*, T*, int); \
  template void batch_norm_backward_reduce<T>(const NormShape&, const T*, const T*, const T*, const T*, T*, T*, int); \
  template void batch_norm_backward_input<T>(const NormShape&, const T*, const T*, const T*, const T*, const T*,   \
                                             const T*, const T*, T*, int);                                  \
  template void batch_norm_forward_hardtanh<T>(const NormShape&, const T*, const T*, const T*, const T*, const T*, T, \
                                               T, T*, int);                                                     \
  template void batch_norm_backward_reduce_hardtanh<T>(const NormShape&, const T*, const T*, const T*, const T*,  \
                                                       const T*, const T*, T, T, T*, T*, int);                  \
  template void batch_norm_backward_input_hardtanh<T>(const NormShape&, const T*, const T*, const T*, const T*,   \
                                                      const T*, const T*, T, T, const T*, const T*, bool, T*, int);
FASTCONV_INSTANTIATE(float)
FASTCONV_INSTANTIATE(double)

}  // namespace fastconv
