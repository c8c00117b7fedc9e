// Pooling: direct loops over each (n, c) plane, planes shared among the threads. Sums run in the
// reference's order (window taps kh-major; adaptive: rows, then columns), so small-integer inputs
// give bit-identical results.
#include "pool.h"

#include <cmath>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "gemm.h"

#include <immintrin.h>

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

// ---------------------------------------------------------------------------------------------
// max pooling forward: vectors of output columns
// ---------------------------------------------------------------------------------------------

// Window (oh, ow) scanned as PyTorch's CPU kernel does: the first in-image tap starts it, then a
// tap wins when value > max or value is NaN. Used for the border columns the vectors leave. Here
// and below, null indices: the caller wants none. Their stores are 2/3 of the bytes written
// (8-byte indices beside 4-byte values): without them a 2x2 stride-2 pooling of 64 x 224 x 224 ran
// in 0.82-0.86x the time; 3x3 stride 2 at 112 x 112, batch 16 (reads bound), 0.96-1.01x.
template <typename T>
inline void max_window(const PoolShape& s, const T* xp, index_t oh, index_t ow, T* y, std::int64_t* index) {
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
  *y = best;
  if (index) *index = where;
}

// indices + k, or null when no indices are wanted
inline std::int64_t* index_at(std::int64_t* indices, index_t k) { return indices ? indices + k : nullptr; }

// Fetches, while output row oh is computed, the stride_h input rows that output row oh + 2 is the
// first to read: the hardware prefetcher alone left the kernels waiting on those loads. At a
// plane's end they are the next plane's first rows (planes are contiguous). Measured (AVX-512, 2
// threads, time): 0.62-0.73x on a 2x2 stride-2 pooling of 64 x 224 x 224 and 0.80-0.93x on 3x3
// stride 2 of 64 x 112 x 112, batch 16, against none; stopped at the plane's end, 0.77-0.82x and
// 0.90-0.92x.
template <typename T>
inline void prefetch_rows_ahead(const PoolShape& s, const T* xp, index_t oh) {
  constexpr index_t kAhead = 2;  // output rows; 1 and 3 measured the same
  const index_t row = (oh + kAhead) * s.stride_h - s.pad_h + (s.KH - 1) * s.dil_h;
  prefetch_span(xp, row * s.W * index_t(sizeof(T)), s.stride_h * s.W * index_t(sizeof(T)));
}

// Output columns [lo, hi) whose windows lie inside the image horizontally (every kw tap reads a
// real pixel): the vector kernel's range.
struct InteriorCols {
  index_t lo, hi;
  explicit InteriorCols(const PoolShape& s) {
    lo = min_i(s.OW, ceil_div(s.pad_w, s.stride_w));
    const index_t last = s.W - 1 + s.pad_w - (s.KW - 1) * s.dil_w;  // ow*sw <= last
    hi = last < 0 ? lo : max_i(lo, min_i(s.OW, last / s.stride_w + 1));
  }
};

// The vector kernels (pool_max_vec.h), compiled for AVX-512F and for AVX2 in regions of their own
// and called only where the CPU has the instruction set (and the GEMM kernel set in use is that
// one, so tests can force the portable path). On AVX2 CPUs the scalar scan ran 10x behind PyTorch's
// channels_last kernel (2-core AMD EPYC, 2x2 stride 2 of 64 x 224 x 224).
#pragma GCC push_options
#pragma GCC target("avx512f")
namespace avx512 {
constexpr int kVectorBytes = 64;
#include "pool_max_vec.h"
}  // namespace avx512
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx2")
namespace avx2 {
constexpr int kVectorBytes = 32;
#include "pool_max_vec.h"
}  // namespace avx2
#pragma GCC pop_options

// One dx plane of a max-pool backward, zeroed and then scattered into (cache-hot) in output order.
// Returns whether every index lay in the plane; one that does not is skipped (the caller raises).
template <typename T>
bool max_backward_plane(const PoolShape& s, const T* dy, const std::int64_t* indices, T* dx) {
  fill_zero(dx, s.H * s.W);
  const auto size = static_cast<std::uint64_t>(s.H * s.W);
  bool inside = true;
  for (index_t o = 0; o < s.OH * s.OW; ++o) {
    const auto i = static_cast<std::uint64_t>(indices[o]);  // a negative index is huge unsigned
    if (i < size)
      dx[i] += dy[o];
    else
      inside = false;
  }
  return inside;
}

#pragma GCC push_options
#pragma GCC target("avx512f")

// The rows ih of a max-pool backward whose windows do not overlap vertically: the output row oh
// whose window holds row ih, or -1 where none does (padding rows, gaps, rows past the last window).
inline index_t window_row(const PoolShape& s, index_t ih) {
  const index_t t = ih + s.pad_h, oh = t / s.stride_h, tap = t - oh * s.stride_h;
  return oh < s.OH && tap % s.dil_h == 0 && tap / s.dil_h < s.KH ? oh : -1;
}

// One fp32 dx plane of a 2-wide, stride-2, unpadded max pool whose windows do not overlap: every
// dx pixel lies in at most one window, so it is that window's dy where the window's argmax is it,
// else 0, and the plane is written in one pass, row by row, with no zeroing pass and no scattered
// read-modify-write. 16 columns (8 windows) per vector: the 8 argmax offsets, made relative to
// each window's left column, are compared with 0 (even column) and 1 (odd column).
// Returns whether every index lay in its own window (each then hits exactly once): indices a
// caller made up may point anywhere in the plane, and then the plane must be scattered instead.
bool max_backward_plane_w2s2_avx512(const PoolShape& s, const float* dy, const std::int64_t* indices, float* dx) {
  const __m512i pairs = _mm512_set_epi32(7, 7, 6, 6, 5, 5, 4, 4, 3, 3, 2, 2, 1, 1, 0, 0);
  const __m512i parity = _mm512_set_epi32(1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0);
  const __m512i left = _mm512_set_epi64(14, 12, 10, 8, 6, 4, 2, 0);  // window l's left column - 2*ow0
  const index_t vec_end = s.OW / 8 * 8;
  index_t hits = 0;
  for (index_t ih = 0; ih < s.H; ++ih) {
    float* dxr = dx + ih * s.W;
    const index_t oh = window_row(s, ih);
    if (oh < 0) {
      fill_zero(dxr, s.W);
      continue;
    }
    const float* dyr = dy + oh * s.OW;
    const std::int64_t* ir = indices + oh * s.OW;
    for (index_t ow0 = 0; ow0 < vec_end; ow0 += 8) {
      const __m512i origin = _mm512_add_epi64(left, _mm512_set1_epi64(ih * s.W + 2 * ow0));
      const __m512i rel = _mm512_sub_epi64(_mm512_loadu_si512(ir + ow0), origin);  // 0 or 1 where in this row
      const __m512i rel2 = _mm512_permutexvar_epi32(pairs, _mm512_castsi256_si512(_mm512_cvtepi64_epi32(rel)));
      const __mmask16 hit = _mm512_cmpeq_epi32_mask(rel2, parity);
      hits += __builtin_popcount(hit);
      const __m512 d = _mm512_permutexvar_ps(pairs, _mm512_castps256_ps512(_mm256_loadu_ps(dyr + ow0)));
      // + 0: the reference adds dy to a zero, turning -0 into +0
      _mm512_storeu_ps(dxr + 2 * ow0, _mm512_maskz_add_ps(hit, d, _mm512_setzero_ps()));
    }
    for (index_t iw = 2 * vec_end; iw < s.W; ++iw) {
      const index_t ow = iw / 2;
      const bool hit = ow < s.OW && ir[ow] == ih * s.W + iw;
      hits += hit;
      dxr[iw] = hit ? dyr[ow] + 0.0f : 0.0f;
    }
  }
  return hits == s.OH * s.OW;
}

#pragma GCC pop_options

// Whether the vector backward applies: fp32, AVX-512, windows 2 columns wide at stride 2 without
// padding, not overlapping vertically, offsets within int32.
bool vector_backward_applies(const PoolShape& s, const float*) {
  return s.KW == 2 && s.stride_w == 2 && s.dil_w == 1 && s.pad_w == 0 && s.stride_h >= (s.KH - 1) * s.dil_h + 1 &&
         s.H * s.W < (index_t(1) << 31) && gemm_isa_is("avx512");
}
bool vector_backward_applies(const PoolShape&, const double*) { return false; }

// The portable kernel: the scalar scan of every window (the vector kernels' signature: it needs no
// interior columns).
template <typename T>
void max_plane_scalar(const PoolShape& s, const InteriorCols&, const T* xp, T* y, std::int64_t* indices) {
  for (index_t oh = 0; oh < s.OH; ++oh) {
    prefetch_rows_ahead(s, xp, oh);
    for (index_t ow = 0; ow < s.OW; ++ow)
      max_window(s, xp, oh, ow, y + oh * s.OW + ow, index_at(indices, oh * s.OW + ow));
  }
}

}  // namespace

template <typename T>
void max_pool2d_forward(const PoolShape& s, const T* x, T* y, std::int64_t* indices, int nthreads) {
  const InteriorCols ic(s);
  using PlaneFn = void (*)(const PoolShape&, const InteriorCols&, const T*, T*, std::int64_t*);
  // static_cast picks the overload of T and checks the signature (a C-style cast would not)
  const PlaneFn plane = gemm_isa_is("avx512") ? static_cast<PlaneFn>(avx512::max_plane)
                        : gemm_isa_is("avx2") ? static_cast<PlaneFn>(avx2::max_plane)
                                              : static_cast<PlaneFn>(max_plane_scalar<T>);
#pragma omp parallel for schedule(static) num_threads(nthreads)
  for (index_t u = 0; u < s.N * s.C; ++u)
    plane(s, ic, x + u * s.H * s.W, y + u * s.OH * s.OW, index_at(indices, u * s.OH * s.OW));
}

template <typename T>
bool max_pool2d_backward(const PoolShape& s, const T* dy, const std::int64_t* indices, T* dx, int nthreads) {
  const bool vector = vector_backward_applies(s, dy);
  bool inside = true;
#pragma omp parallel for schedule(static) num_threads(nthreads) reduction(&& : inside)
  for (index_t u = 0; u < s.N * s.C; ++u) {
    const T* dyp = dy + u * s.OH * s.OW;
    const std::int64_t* ip = indices + u * s.OH * s.OW;
    T* dxp = dx + u * s.H * s.W;
    if constexpr (std::is_same_v<T, float>)
      if (vector && max_backward_plane_w2s2_avx512(s, dyp, ip, dxp)) continue;
    inside = max_backward_plane(s, dyp, ip, dxp) && inside;
  }
  return inside;
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
  template bool max_pool2d_backward<T>(const PoolShape&, const T*, const std::int64_t*, T*, int);       \
  template void avg_pool2d_forward<T>(const PoolShape&, const T*, T*, int);                             \
  template void avg_pool2d_backward<T>(const PoolShape&, const T*, T*, int);                            \
  template void adaptive_avg_pool2d_forward<T>(const PoolShape&, const T*, T*, int);                    \
  template void adaptive_avg_pool2d_backward<T>(const PoolShape&, const T*, T*, int);
FASTCONV_INSTANTIATE(float)
FASTCONV_INSTANTIATE(double)

}  // namespace fastconv
