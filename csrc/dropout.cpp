// Dropout: the mask is a pure function of (seed, element index), so chunks can be drawn by any
// thread in any order and give the same mask (see dropout.h for the generator).
#include "dropout.h"

#include <cmath>

#include "activation.h"

namespace fastconv {
namespace {

constexpr std::uint64_t kGamma = 0x9e3779b97f4a7c15ull;  // splitmix64's increment

// splitmix64's output function (Stafford's Mix13)
FASTCONV_INLINE std::uint64_t mix64(std::uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// Element k is kept iff its 53-bit draw u*2^53 >= ceil(p * 2^53), i.e. iff u >= p exactly
// (p * 2^53 is exact in double): p = 0 keeps all, p = 1 none.
std::uint64_t keep_threshold(double p) { return static_cast<std::uint64_t>(std::ceil(std::ldexp(p, 53))); }

template <typename T>
T keep_scale(double p) { return p < 1 ? T(1) / T(1 - p) : T(0); }  // the reference's noise value

template <typename T>
FASTCONV_INLINE void forward_impl(index_t lo, index_t hi, const T* x, std::uint64_t key, std::uint64_t threshold,
                                  T scale, T* y, std::uint8_t* mask) {
#pragma omp simd
  for (index_t k = lo; k < hi; ++k) {
    const bool keep = (mix64(key + std::uint64_t(k + 1) * kGamma) >> 11) >= threshold;
    mask[k] = keep;
    y[k] = x[k] * (keep ? scale : T(0));  // not a select of x: a dropped NaN/Inf gives NaN, as PyTorch
  }
}

template <typename T>
FASTCONV_INLINE void backward_impl(index_t lo, index_t hi, const T* dy, const std::uint8_t* mask, T scale, T* dx) {
#pragma omp simd
  for (index_t k = lo; k < hi; ++k) dx[k] = dy[k] * (mask[k] ? scale : T(0));
}

FASTCONV_OPS_CLONES void forward_chunk(index_t lo, index_t hi, const float* x, std::uint64_t key,
                                       std::uint64_t threshold, float scale, float* y, std::uint8_t* mask) {
  forward_impl(lo, hi, x, key, threshold, scale, y, mask);
}
FASTCONV_OPS_CLONES void forward_chunk(index_t lo, index_t hi, const double* x, std::uint64_t key,
                                       std::uint64_t threshold, double scale, double* y, std::uint8_t* mask) {
  forward_impl(lo, hi, x, key, threshold, scale, y, mask);
}
FASTCONV_OPS_CLONES void backward_chunk(index_t lo, index_t hi, const float* dy, const std::uint8_t* mask, float scale,
                                        float* dx) {
  backward_impl(lo, hi, dy, mask, scale, dx);
}
FASTCONV_OPS_CLONES void backward_chunk(index_t lo, index_t hi, const double* dy, const std::uint8_t* mask,
                                        double scale, double* dx) {
  backward_impl(lo, hi, dy, mask, scale, dx);
}

}  // namespace

template <typename T>
void dropout_forward(index_t n, const T* x, double p, std::uint64_t seed, T* y, std::uint8_t* mask, int nthreads) {
  const std::uint64_t key = mix64(seed), threshold = keep_threshold(p);
  const T scale = keep_scale<T>(p);
  for_chunks(n, nthreads, [&](index_t lo, index_t hi) { forward_chunk(lo, hi, x, key, threshold, scale, y, mask); });
}

template <typename T>
void dropout_backward(index_t n, const T* dy, const std::uint8_t* mask, double p, T* dx, int nthreads) {
  const T scale = keep_scale<T>(p);
  for_chunks(n, nthreads, [&](index_t lo, index_t hi) { backward_chunk(lo, hi, dy, mask, scale, dx); });
}

#define FASTCONV_INSTANTIATE(T)                                                                              \
  template void dropout_forward<T>(index_t, const T*, double, std::uint64_t, T*, std::uint8_t*, int);       \
  template void dropout_backward<T>(index_t, const T*, const std::uint8_t*, double, T*, int);
FASTCONV_INSTANTIATE(float)
FASTCONV_INSTANTIATE(double)

}  // namespace fastconv
