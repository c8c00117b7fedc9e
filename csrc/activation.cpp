// Activations and softmax. Each formula is the reference's (backends/reference/activation.py),
// with the same comparisons; constants are converted to T where the reference's NumPy arithmetic
// converts them, so the piecewise-linear ones are bit-identical to it.
#include "activation.h"

#include <algorithm>

namespace fastconv {
namespace {

constexpr double kSqrtHalf = 0.70710678118654752440;
constexpr double kInvSqrt2Pi = 0.39894228040143267794;  // the standard normal density at 0
constexpr double kTanhBeta = 0.79788456080286535588;    // sqrt(2 / pi)
constexpr double kTanhKappa = 0.044715;
// Beyond |x| = 1e4, exp(-x^2/2) is 0 and the tanh-gelu tanh is +-1: clipping x where it is
// squared or cubed changes no result and keeps x^3 finite in float.
constexpr double kSaturated = 1e4;

template <typename T>
FASTCONV_INLINE T saturated(T x) {  // NaN stays NaN
  const T s = T(kSaturated);
  return x > s ? s : (x < -s ? -s : x);
}

template <typename T>
FASTCONV_INLINE T min0(T x) { return x > T(0) ? T(0) : x; }  // NaN stays NaN

template <typename T, class F>
FASTCONV_INLINE void map1(index_t n, const T* __restrict x, T* __restrict y, F f) {
#pragma omp simd
  for (index_t k = 0; k < n; ++k) y[k] = f(x[k]);
}

template <typename T, class F>
FASTCONV_INLINE void map2(index_t n, const T* __restrict dy, const T* __restrict x, T* __restrict dx, F f) {
#pragma omp simd
  for (index_t k = 0; k < n; ++k) dx[k] = f(dy[k], x[k]);
}

template <typename T>
FASTCONV_INLINE void forward_impl(Activation act, index_t n, const T* x, T* y, ActParams p) {
  switch (act) {
    case Activation::relu:
      return map1(n, x, y, [](T v) { return v < T(0) ? T(0) : v; });  // max(x, 0); NaN stays NaN
    case Activation::leaky_relu: {
      const T slope = T(p.a);
      return map1(n, x, y, [=](T v) { return v > T(0) ? v : v * slope; });
    }
    case Activation::elu: {
      const T scale = T(p.b), sa = T(p.b * p.a);
      // exp(x) - 1 for float: the absolute error (~1e-7) is what matters next to alpha
      return map1(n, x, y, [=](T v) {
        const T m = min0(v);
        return v > T(0) ? scale * v : sa * (sizeof(T) == 4 ? exp_(m) - T(1) : T(std::expm1(m)));
      });
    }
    case Activation::gelu:
      return map1(n, x, y, [](T v) { return T(0.5) * v * (T(1) + erf_(v * T(kSqrtHalf))); });
    case Activation::gelu_tanh:
      return map1(n, x, y, [](T v) {
        const T s = saturated(v);
        return T(0.5) * v * (T(1) + tanh_(T(kTanhBeta) * (s + T(kTanhKappa) * s * s * s)));
      });
    case Activation::sigmoid:
      return map1(n, x, y, [](T v) { return sigmoid_(v); });
    case Activation::tanh:
      return map1(n, x, y, [](T v) { return tanh_(v); });
    case Activation::softplus: {
      const T beta = T(p.a), threshold = T(p.b);
      // log(1 + exp(z)) = max(z, 0) + log1p(exp(-|z|)): exp is never taken of a large positive z
      return map1(n, x, y, [=](T v) {
        const T z = v * beta;
        return z > threshold ? v : ((z < T(0) ? T(0) : z) + std::log1p(exp_(-std::fabs(z)))) / beta;
      });
    }
    case Activation::silu:
      return map1(n, x, y, [](T v) { return v * sigmoid_(v); });
  }
}

template <typename T>
FASTCONV_INLINE void backward_impl(Activation act, index_t n, const T* dy, const T* x, T* dx, ActParams p) {
  switch (act) {
    case Activation::relu:  // 0 where x <= 0; dy at NaN (nan <= 0 is false), as PyTorch
      return map2(n, dy, x, dx, [](T g, T v) { return v <= T(0) ? T(0) : g; });
    case Activation::leaky_relu: {
      const T slope = T(p.a);
      return map2(n, dy, x, dx, [=](T g, T v) { return v > T(0) ? g : g * slope; });
    }
    case Activation::elu: {  // scale * alpha * dy at x = 0; NaN at NaN
      const T scale = T(p.b), sa = T(p.b * p.a);
      return map2(n, dy, x, dx, [=](T g, T v) { return v > T(0) ? g * scale : g * sa * exp_(min0(v)); });
    }
    case Activation::gelu:  // x * pdf(x) is inf * 0 = NaN at +-inf, as PyTorch
      return map2(n, dy, x, dx, [](T g, T v) {
        const T s = saturated(v);
        const T cdf = T(0.5) * (T(1) + erf_(v * T(kSqrtHalf)));
        const T pdf = T(kInvSqrt2Pi) * exp_(T(-0.5) * s * s);
        return g * (cdf + v * pdf);
      });
    case Activation::gelu_tanh:
      return map2(n, dy, x, dx, [](T g, T v) {
        const T s = saturated(v);
        const T t = tanh_(T(kTanhBeta) * (s + T(kTanhKappa) * s * s * s));
        return g * (T(0.5) * (T(1) + t) +
                    T(0.5) * v * (T(1) - t * t) * T(kTanhBeta) * (T(1) + T(3 * kTanhKappa) * s * s));
      });
    case Activation::sigmoid:
      return map2(n, dy, x, dx, [](T g, T v) {
        const T s = sigmoid_(v);
        return g * (T(1) - s) * s;
      });
    case Activation::tanh:
      return map2(n, dy, x, dx, [](T g, T v) {
        const T t = tanh_(v);
        return g * (T(1) - t * t);
      });
    case Activation::softplus: {
      const T beta = T(p.a), threshold = T(p.b);
      return map2(n, dy, x, dx, [=](T g, T v) {
        const T z = v * beta;
        return z > threshold ? g : g * sigmoid_(z);
      });
    }
    case Activation::silu:  // x * (1 - s) is inf * 0 = NaN at +inf, as PyTorch
      return map2(n, dy, x, dx, [](T g, T v) {
        const T s = sigmoid_(v);
        return g * s * (T(1) + v * (T(1) - s));
      });
  }
}

FASTCONV_OPS_CLONES void forward_chunk(Activation act, index_t n, const float* x, float* y, ActParams p) {
  forward_impl(act, n, x, y, p);
}
FASTCONV_OPS_CLONES void forward_chunk(Activation act, index_t n, const double* x, double* y, ActParams p) {
  forward_impl(act, n, x, y, p);
}
FASTCONV_OPS_CLONES void backward_chunk(Activation act, index_t n, const float* dy, const float* x, float* dx,
                                        ActParams p) {
  backward_impl(act, n, dy, x, dx, p);
}
FASTCONV_OPS_CLONES void backward_chunk(Activation act, index_t n, const double* dy, const double* x, double* dx,
                                        ActParams p) {
  backward_impl(act, n, dy, x, dx, p);
}

// ---------------------------------------------------------------------------------------------
// softmax on contiguous rows (inner == 1)
// ---------------------------------------------------------------------------------------------

template <typename T>
FASTCONV_INLINE void softmax_row_impl(bool log, index_t D, const T* x, T* y) {
  const T m = row_max(D, x);
  if (log) {
    const T lse = std::log(row_sum_exp(D, x, m));
#pragma omp simd
    for (index_t d = 0; d < D; ++d) y[d] = (x[d] - m) - lse;
  } else {
    T sum = T(0);
#pragma omp simd reduction(+ : sum)
    for (index_t d = 0; d < D; ++d) {
      y[d] = exp_(x[d] - m);
      sum += y[d];
    }
    const T inv = T(1) / sum;
#pragma omp simd
    for (index_t d = 0; d < D; ++d) y[d] *= inv;
  }
}

template <typename T>
FASTCONV_INLINE void softmax_row_backward_impl(bool log, index_t D, const T* dy, const T* y, T* dx) {
  T s = T(0);
  if (log) {
#pragma omp simd reduction(+ : s)
    for (index_t d = 0; d < D; ++d) s += dy[d];
#pragma omp simd
    for (index_t d = 0; d < D; ++d) dx[d] = dy[d] - exp_(y[d]) * s;
  } else {
#pragma omp simd reduction(+ : s)
    for (index_t d = 0; d < D; ++d) s += dy[d] * y[d];
#pragma omp simd
    for (index_t d = 0; d < D; ++d) dx[d] = y[d] * (dy[d] - s);
  }
}

FASTCONV_OPS_CLONES void softmax_row(bool log, index_t D, const float* x, float* y) { softmax_row_impl(log, D, x, y); }
FASTCONV_OPS_CLONES void softmax_row(bool log, index_t D, const double* x, double* y) {
  softmax_row_impl(log, D, x, y);
}
FASTCONV_OPS_CLONES void softmax_row_backward(bool log, index_t D, const float* dy, const float* y, float* dx) {
  softmax_row_backward_impl(log, D, dy, y, dx);
}
FASTCONV_OPS_CLONES void softmax_row_backward(bool log, index_t D, const double* dy, const double* y, double* dx) {
  softmax_row_backward_impl(log, D, dy, y, dx);
}

// ---------------------------------------------------------------------------------------------
// softmax along a strided axis (inner > 1): a block of up to kCols adjacent columns at a time,
// walking the D rows in memory order, with per-column max and sum in a small local array
// ---------------------------------------------------------------------------------------------

constexpr index_t kCols = 256;

template <typename T>
FASTCONV_INLINE void softmax_cols_impl(bool log, index_t D, index_t inner, index_t cols, const T* x, T* y) {
  T m[kCols], sum[kCols];
  for (index_t c = 0; c < cols; ++c) m[c] = x[c], sum[c] = T(0);
  for (index_t d = 1; d < D; ++d) {
    const T* xd = x + d * inner;
#pragma omp simd
    for (index_t c = 0; c < cols; ++c) m[c] = xd[c] > m[c] ? xd[c] : m[c];
  }
  for (index_t d = 0; d < D; ++d) {
    const T* xd = x + d * inner;
#pragma omp simd
    for (index_t c = 0; c < cols; ++c) sum[c] += exp_(xd[c] - m[c]);
  }
  for (index_t c = 0; c < cols; ++c) sum[c] = log ? std::log(sum[c]) : T(1) / sum[c];
  for (index_t d = 0; d < D; ++d) {
    const T* xd = x + d * inner;
    T* yd = y + d * inner;
    if (log) {
#pragma omp simd
      for (index_t c = 0; c < cols; ++c) yd[c] = (xd[c] - m[c]) - sum[c];
    } else {
#pragma omp simd
      for (index_t c = 0; c < cols; ++c) yd[c] = exp_(xd[c] - m[c]) * sum[c];
    }
  }
}

template <typename T>
FASTCONV_INLINE void softmax_cols_backward_impl(bool log, index_t D, index_t inner, index_t cols, const T* dy,
                                                const T* y, T* dx) {
  T s[kCols] = {};
  for (index_t d = 0; d < D; ++d) {
    const T *dyd = dy + d * inner, *yd = y + d * inner;
#pragma omp simd
    for (index_t c = 0; c < cols; ++c) s[c] += log ? dyd[c] : dyd[c] * yd[c];
  }
  for (index_t d = 0; d < D; ++d) {
    const T *dyd = dy + d * inner, *yd = y + d * inner;
    T* dxd = dx + d * inner;
#pragma omp simd
    for (index_t c = 0; c < cols; ++c) dxd[c] = log ? dyd[c] - exp_(yd[c]) * s[c] : yd[c] * (dyd[c] - s[c]);
  }
}

#define FASTCONV_COLS_KERNELS(T)                                                                             \
  FASTCONV_OPS_CLONES void softmax_cols(bool log, index_t D, index_t inner, index_t cols, const T* x, T* y) {  \
    softmax_cols_impl(log, D, inner, cols, x, y);                                                           \
  }                                                                                                         \
  FASTCONV_OPS_CLONES void softmax_cols_backward(bool log, index_t D, index_t inner, index_t cols, const T* dy, \
                                                 const T* y, T* dx) {                                       \
    softmax_cols_backward_impl(log, D, inner, cols, dy, y, dx);                                             \
  }
FASTCONV_COLS_KERNELS(float)
FASTCONV_COLS_KERNELS(double)

// Units of work: rows (inner == 1) or column blocks; f(o, c0, cols) for each, threads sharing them.
template <class F>
void for_softmax_units(index_t outer, index_t D, index_t inner, int nthreads, F&& f) {
  const index_t blocks = ceil_div(inner, kCols), units = outer * blocks;
  const index_t team = max_i(1, min_i(min_i(nthreads, units), outer * D * inner / kElementsPerThread));
#pragma omp parallel for schedule(static) num_threads(static_cast<int>(team))
  for (index_t u = 0; u < units; ++u) {
    const index_t o = u / blocks, c0 = (u % blocks) * kCols;
    f(o, c0, min_i(kCols, inner - c0));
  }
}

}  // namespace

template <typename T>
void activation_forward(Activation act, index_t n, const T* x, T* y, ActParams p, int nthreads) {
  for_chunks(n, nthreads, [&](index_t lo, index_t hi) { forward_chunk(act, hi - lo, x + lo, y + lo, p); });
}

template <typename T>
void activation_backward(Activation act, index_t n, const T* dy, const T* x, T* dx, ActParams p, int nthreads) {
  for_chunks(n, nthreads,
             [&](index_t lo, index_t hi) { backward_chunk(act, hi - lo, dy + lo, x + lo, dx + lo, p); });
}

template <typename T>
void softmax_forward(bool log, index_t outer, index_t D, index_t inner, const T* x, T* y, int nthreads) {
  for_softmax_units(outer, D, inner, nthreads, [&](index_t o, index_t c0, index_t cols) {
    const index_t at = o * D * inner + c0;
    if (inner == 1)
      softmax_row(log, D, x + at, y + at);
    else
      softmax_cols(log, D, inner, cols, x + at, y + at);
  });
}

template <typename T>
void softmax_backward(bool log, index_t outer, index_t D, index_t inner, const T* dy, const T* y, T* dx,
                      int nthreads) {
  for_softmax_units(outer, D, inner, nthreads, [&](index_t o, index_t c0, index_t cols) {
    const index_t at = o * D * inner + c0;
    if (inner == 1)
      softmax_row_backward(log, D, dy + at, y + at, dx + at);
    else
      softmax_cols_backward(log, D, inner, cols, dy + at, y + at, dx + at);
  });
}

#define FASTCONV_INSTANTIATE(T)                                                                          \
  template void activation_forward<T>(Activation, index_t, const T*, T*, ActParams, int);               \
  template void activation_backward<T>(Activation, index_t, const T*, const T*, T*, ActParams, int);    \
  template void softmax_forward<T>(bool, index_t, index_t, index_t, const T*, T*, int);                 \
  template void softmax_backward<T>(bool, index_t, index_t, index_t, const T*, const T*, T*, int);
FASTCONV_INSTANTIATE(float)
FASTCONV_INSTANTIATE(double)

}  // namespace fastconv
