// Pooling: direct loops over each (n, c) plane, planes shared among the threads. Sums run in the
// reference's order (window taps kh-major; adaptive: rows, then columns), so small-integer inputs
// give bit-identical results.
#include "pool.h"

#include <cmath>
#include <vector>

namespace fastconv {
namespace {

// PyTorch's divisor of window (oh, ow): the window is first cut at the end of the padding; its
// size then counts padding, or only real pixels without count_include_pad.
inline index_t window_size(index_t o, index_t stride, index_t pad, index_t k, index_t size, bool include_pad) {
  const index_t start = o * stride - pad, end = min_i(start + k, size + pad);
  return include_pad ? end - start : min_i(end, size) - max_i(start, index_t(0));
}

template <typename T>
std::vector<T> avg_divisors(const PoolShape& s) {  // (OH x OW)
  std::vector<T> d(static_cast<std::size_t>(s.OH * s.OW));
  for (index_t oh = 0; oh < s.OH; ++oh)
    for (index_t ow = 0; ow < s.OW; ++ow)
      d[oh * s.OW + ow] = s.divisor_override
                              ? T(s.divisor_override)
                              : T(window_size(oh, s.stride_h, s.pad_h, s.KH, s.H, s.count_include_pad) *
                                  window_size(ow, s.stride_w, s.pad_w, s.KW, s.W, s.count_include_pad));
  return d;
}

inline index_t adaptive_start(index_t o, index_t out, index_t size) { return o * size / out; }
inline index_t adaptive_end(index_t o, index_t out, index_t size) { return ((o + 1) * size + out - 1) / out; }

}  // namespace

template <typename T>
void max_pool2d_forward(const PoolShape& s, const T* x, T* y, std::int64_t* indices, int nthreads) {
#pragma omp parallel for schedule(static) num_threads(nthreads)
  for (index_t u = 0; u < s.N * s.C; ++u) {
    const T* xp = x + u * s.H * s.W;
    T* yp = y + u * s.OH * s.OW;
    std::int64_t* ip = indices + u * s.OH * s.OW;
    for (index_t oh = 0; oh < s.OH; ++oh)
      for (index_t ow = 0; ow < s.OW; ++ow) {
        T best = -INFINITY;
        index_t where = -1;
        for (index_t kh = 0; kh < s.KH; ++kh) {
          const index_t ih = oh * s.stride_h - s.pad_h + kh * s.dil_h;
          if (ih < 0 || ih >= s.H) continue;
          for (index_t kw = 0; kw < s.KW; ++kw) {
            const index_t iw = ow * s.stride_w - s.pad_w + kw * s.dil_w;
            if (iw < 0 || iw >= s.W) continue;
            const T v = xp[ih * s.W + iw];
            if (where < 0 || v > best || std::isnan(v)) {
              best = v;
              where = ih * s.W + iw;
            }
          }
        }
        yp[oh * s.OW + ow] = best;
        ip[oh * s.OW + ow] = where;
      }
  }
}

template <typename T>
void max_pool2d_backward(const PoolShape& s, const T* dy, const std::int64_t* indices, T* dx, int nthreads) {
#pragma omp parallel for schedule(static) num_threads(nthreads)
  for (index_t u = 0; u < s.N * s.C; ++u) {
    T* dxp = dx + u * s.H * s.W;
    fill_zero(dxp, s.H * s.W);
    const T* dyp = dy + u * s.OH * s.OW;
    const std::int64_t* ip = indices + u * s.OH * s.OW;
    for (index_t o = 0; o < s.OH * s.OW; ++o)
      if (ip[o] >= 0) dxp[ip[o]] += dyp[o];  // -1: a window with no image pixel (PyTorch forbids them)
  }
}

template <typename T>
void avg_pool2d_forward(const PoolShape& s, const T* x, T* y, int nthreads) {
  const std::vector<T> div = avg_divisors<T>(s);
#pragma omp parallel for schedule(static) num_threads(nthreads)
  for (index_t u = 0; u < s.N * s.C; ++u) {
    const T* xp = x + u * s.H * s.W;
    T* yp = y + u * s.OH * s.OW;
    for (index_t oh = 0; oh < s.OH; ++oh)
      for (index_t ow = 0; ow < s.OW; ++ow) {
        T total = T(0);
        for (index_t kh = 0; kh < s.KH; ++kh) {
          const index_t ih = oh * s.stride_h - s.pad_h + kh * s.dil_h;
          if (ih < 0 || ih >= s.H) continue;
          for (index_t kw = 0; kw < s.KW; ++kw) {
            const index_t iw = ow * s.stride_w - s.pad_w + kw * s.dil_w;
            if (iw >= 0 && iw < s.W) total += xp[ih * s.W + iw];
          }
        }
        yp[oh * s.OW + ow] = total / div[oh * s.OW + ow];
      }
  }
}

template <typename T>
void avg_pool2d_backward(const PoolShape& s, const T* dy, T* dx, int nthreads) {
  const std::vector<T> div = avg_divisors<T>(s);
#pragma omp parallel for schedule(static) num_threads(nthreads)
  for (index_t u = 0; u < s.N * s.C; ++u) {
    T* dxp = dx + u * s.H * s.W;
    fill_zero(dxp, s.H * s.W);
    const T* dyp = dy + u * s.OH * s.OW;
    // taps outer, outputs inner: the reference's order of adding overlapping windows' shares
    for (index_t kh = 0; kh < s.KH; ++kh)
      for (index_t kw = 0; kw < s.KW; ++kw)
        for (index_t oh = 0; oh < s.OH; ++oh) {
          const index_t ih = oh * s.stride_h - s.pad_h + kh * s.dil_h;
          if (ih < 0 || ih >= s.H) continue;
          for (index_t ow = 0; ow < s.OW; ++ow) {
            const index_t iw = ow * s.stride_w - s.pad_w + kw * s.dil_w;
            if (iw >= 0 && iw < s.W) dxp[ih * s.W + iw] += dyp[oh * s.OW + ow] / div[oh * s.OW + ow];
          }
        }
  }
}

template <typename T>
void adaptive_avg_pool2d_forward(const PoolShape& s, const T* x, T* y, int nthreads) {
#pragma omp parallel num_threads(nthreads)
  {
    std::vector<T> row(static_cast<std::size_t>(s.W));  // per thread: one window row's column sums
#pragma omp for schedule(static)
    for (index_t u = 0; u < s.N * s.C; ++u) {
      const T* xp = x + u * s.H * s.W;
      T* yp = y + u * s.OH * s.OW;
      for (index_t oh = 0; oh < s.OH; ++oh) {
        const index_t h0 = adaptive_start(oh, s.OH, s.H), h1 = adaptive_end(oh, s.OH, s.H);
        for (index_t w = 0; w < s.W; ++w) row[w] = xp[h0 * s.W + w];
        for (index_t h = h0 + 1; h < h1; ++h)
          for (index_t w = 0; w < s.W; ++w) row[w] += xp[h * s.W + w];
        for (index_t ow = 0; ow < s.OW; ++ow) {
          const index_t w0 = adaptive_start(ow, s.OW, s.W), w1 = adaptive_end(ow, s.OW, s.W);
          T total = row[w0];
          for (index_t w = w0 + 1; w < w1; ++w) total += row[w];
          yp[oh * s.OW + ow] = total / T((h1 - h0) * (w1 - w0));
        }
      }
    }
  }
}

template <typename T>
void adaptive_avg_pool2d_backward(const PoolShape& s, const T* dy, T* dx, int nthreads) {
#pragma omp parallel num_threads(nthreads)
  {
    std::vector<T> cols(static_cast<std::size_t>(s.W));  // per thread: one output row spread over W
#pragma omp for schedule(static)
    for (index_t u = 0; u < s.N * s.C; ++u) {
      T* dxp = dx + u * s.H * s.W;
      fill_zero(dxp, s.H * s.W);
      const T* dyp = dy + u * s.OH * s.OW;
      for (index_t oh = 0; oh < s.OH; ++oh) {
        const index_t h0 = adaptive_start(oh, s.OH, s.H), h1 = adaptive_end(oh, s.OH, s.H);
        for (index_t w = 0; w < s.W; ++w) cols[w] = T(0);
        for (index_t ow = 0; ow < s.OW; ++ow) {
          const index_t w0 = adaptive_start(ow, s.OW, s.W), w1 = adaptive_end(ow, s.OW, s.W);
          const T share = dyp[oh * s.OW + ow] / T((h1 - h0) * (w1 - w0));
          for (index_t w = w0; w < w1; ++w) cols[w] += share;
        }
        for (index_t h = h0; h < h1; ++h)
          for (index_t w = 0; w < s.W; ++w) dxp[h * s.W + w] += cols[w];
      }
    }
  }
}

#define FASTCONV_INSTANTIATE(T)                                                                          \
  template void max_pool2d_forward<T>(const PoolShape&, const T*, T*, std::int64_t*, int);              \
  template void max_pool2d_backward<T>(const PoolShape&, const T*, const std::int64_t*, T*, int);       \
  template void avg_pool2d_forward<T>(const PoolShape&, const T*, T*, int);                             \
  template void avg_pool2d_backward<T>(const PoolShape&, const T*, T*, int);                            \
  template void adaptive_avg_pool2d_forward<T>(const PoolShape&, const T*, T*, int);                    \
  template void adaptive_avg_pool2d_backward<T>(const PoolShape&, const T*, T*, int);
FASTCONV_INSTANTIATE(float)
FASTCONV_INSTANTIATE(double)

}  // namespace fastconv
