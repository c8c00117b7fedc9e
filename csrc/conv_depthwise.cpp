// Depthwise convolution (one input channel per group): direct loops over rows, no GEMM (a GEMM of
// depth KH*KW would starve). Every pass: the forward, the dgrad (scattered adds, or at stride 1 the
// forward of dy with the flipped kernel: conv.cpp chooses), the wgrad. The portable kernels are
// compiled once per instruction set (FASTCONV_CLONES); vector kernels serve the dense 3x3 and 5x5
// forward and the stride_w-1 3x3 and 5x5 wgrad (AVX-512 and AVX2: dw_vec.h), where the GEMM
// kernel set in use is theirs (chosen here, per call: dw_forward_plane_fn, dw_wgrad_vector); on
// small planes and strided layers, kernels with the channels in the vector lanes (dw_lanes.h,
// chosen by dw_lanes_pays) take the forward, the dgrad and the wgrad.
#include <immintrin.h>
#include <omp.h>

#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "conv_impl.h"
#include "gemm.h"

namespace fastconv {
namespace {

// For each kernel column kw: the offset off = kw*dil - pad of its input column iw = ow*sw + off,
// and the output columns [lo, hi) where 0 <= iw < W. Computed once per plane (divisions).
struct ColRanges {
  std::vector<index_t> off, lo, hi;
  explicit ColRanges(const ConvShape& s) : off(s.KW), lo(s.KW), hi(s.KW) {
    for (index_t kw = 0; kw < s.KW; ++kw) {
      const index_t o = kw * s.dil_w - s.pad_l, sw = s.stride_w;
      const index_t l = min_i(s.OW, o >= 0 ? 0 : ceil_div(-o, sw));
      const index_t h = o >= s.W ? 0 : min_i(s.OW, (s.W - 1 - o) / sw + 1);
      off[kw] = o;
      lo[kw] = l;
      hi[kw] = max_i(h, l);
    }
  }
};

// Register tile of the depthwise forward: kDwRows output rows x kDwTile columns (one AVX-512 fp32
// vector per row): eight independent accumulation chains hide the FMA latency.
constexpr index_t kDwTile = 16;
constexpr index_t kDwRows = 8;

// The zero-padded copy of one input plane the depthwise forward reads without bounds checks:
// every row and column that a tile (output rows and columns rounded up to whole tiles) can touch.
struct PaddedPlane {
  index_t Hp, Wp;
  explicit PaddedPlane(const ConvShape& s)
      : Hp((round_up(s.OH, kDwRows) - 1) * s.stride_h + (s.KH - 1) * s.dil_h + 1),
        Wp((round_up(s.OW, kDwTile) - 1) * s.stride_w + (s.KW - 1) * s.dil_w + 1) {}
};

// The rows [r0, r1) and columns [c0, c1) of the padded plane that hold input pixels (pixel (ih,
// iw) at (ih + pad_t, iw + pad_l); paddings may be negative). Everything else in it is zero, the
// same zero for every plane: a thread zeroes its buffer once and then copies only this window.
struct PlaneWindow {
  index_t r0, r1, c0, c1;
  PlaneWindow(const ConvShape& s, const PaddedPlane& pp)
      : r0(max_i(0, s.pad_t)), r1(min_i(pp.Hp, s.pad_t + s.H)),
        c0(max_i(0, s.pad_l)), c1(min_i(pp.Wp, s.pad_l + s.W)) {}
};

// The window of xp (Hp x Wp) = its part of x (H x W), by vectors of kDwTile where they fit: rows
// are a few dozen elements, too short for a memcpy call to pay.
template <typename T>
__attribute__((always_inline)) inline void copy_window(const ConvShape& s, const PaddedPlane& pp,
                                                       const PlaneWindow& win, const T* x, T* xp) {
  typedef T Vec __attribute__((vector_size(kDwTile * sizeof(T))));
  const index_t len = win.c1 - win.c0;
  for (index_t r = win.r0; r < win.r1; ++r) {
    const T* src = x + (r - s.pad_t) * s.W + (win.c0 - s.pad_l);
    // 8 rows ahead (into the next plane at the end; planes are contiguous at a multiplier of 1):
    // 0.93-0.96x the forward's time, 0.96x the dgrad's on MobileNetV2's 3x3 at 144 x 56 x 56, batch
    // 16 (2 threads; a control of the same code without it: 0.98-1.01x); 4 and 16 rows 0.94-0.95x,
    // 28 and 56 0.99-1.01x
    prefetch_span(src, 8 * s.W * index_t(sizeof(T)), s.W * index_t(sizeof(T)));
    T* dst = xp + r * pp.Wp + win.c0;
    index_t j = 0;
    for (; j + kDwTile <= len; j += kDwTile) {
      Vec v;
      std::memcpy(&v, src + j, sizeof(Vec));
      std::memcpy(dst + j, &v, sizeof(Vec));
    }
    for (; j < len; ++j) dst[j] = src[j];
  }
}

// How a depthwise tile reads its padded plane: kDense (stride and dilation 1: tap (kh, kw) of
// output (r, c) is element (r + kh, c + kw), so an input row serves KH output rows of the tile),
// kRowStep (stride_w 1: each tap a vector load). Strided columns take dw_forward_strided.
enum class DwRead { kDense, kRowStep };

// One output plane of a depthwise forward from its padded input plane: each tile of kDwRows x
// kDwTile outputs is accumulated over all taps in registers (acc[]), then stored once (the padded
// plane covers whole tiles; only the stores of ragged tiles are clipped). KH_ and KW_ are the
// kernel's size where it is compiled for one (the tap loops unroll); 0: read from s.
template <typename T, DwRead Read, int KH_, int KW_>
__attribute__((always_inline)) inline void dw_forward_tiles(const ConvShape& s, const PaddedPlane& pp, const T* xp,
                                                            const T* w, T bias, T* y) {
  // a GCC vector of kDwTile lanes: one zmm (fp32) in the AVX-512 clone, split by the compiler
  // into narrower registers in the others (plain arrays here are left scalar by the vectoriser)
  typedef T Vec __attribute__((vector_size(kDwTile * sizeof(T))));
  const index_t KH = KH_ ? KH_ : s.KH, KW = KW_ ? KW_ : s.KW;
  const bool dense = Read == DwRead::kDense;
  const index_t sh = dense ? 1 : s.stride_h, sw = dense ? 1 : s.stride_w;
  const index_t dh = dense ? 1 : s.dil_h, dw = dense ? 1 : s.dil_w, Wp = pp.Wp;
  const index_t tiles = ceil_div(s.OW, kDwTile), plane_end = s.OH * s.OW;
  for (index_t oh0 = 0; oh0 < s.OH; oh0 += kDwRows) {
    // right to left: a ragged tile's whole-vector stores run past its row into the first columns
    // of the next rows, which the tiles still to come (this block's first, the next block) write
    for (index_t ow0 = (tiles - 1) * kDwTile; ow0 >= 0; ow0 -= kDwTile) {
      const T* tile = xp + oh0 * sh * Wp + ow0 * sw;
      Vec acc[kDwRows];  // fully unrolled loops over r keep acc in registers
#pragma GCC unroll 8
      for (index_t r = 0; r < kDwRows; ++r) acc[r] = Vec{} + bias;
      if constexpr (Read == DwRead::kDense) {
        // input row i of the tile serves output rows i - kh: each vector is read once per tap
        // column kw and used for KH rows (KH_ and KW_ are constants here: all of it unrolls)
#pragma GCC unroll 12
        for (index_t i = 0; i < kDwRows + KH - 1; ++i) {
#pragma GCC unroll 5
          for (index_t kw = 0; kw < KW; ++kw) {
            Vec xv;
            std::memcpy(&xv, tile + i * Wp + kw, sizeof(Vec));
#pragma GCC unroll 5
            for (index_t kh = 0; kh < KH; ++kh)
              if (i - kh >= 0 && i - kh < kDwRows) acc[i - kh] += w[kh * KW + kw] * xv;
          }
        }
      } else {
        for (index_t kh = 0; kh < KH; ++kh) {
          for (index_t kw = 0; kw < KW; ++kw) {
            const T wv = w[kh * KW + kw];
#pragma GCC unroll 8
            for (index_t r = 0; r < kDwRows; ++r) {
              const T* xs = tile + (r * sh + kh * dh) * Wp + kw * dw;
              Vec xv;
              std::memcpy(&xv, xs, sizeof(Vec));
              acc[r] += wv * xv;
            }
          }
        }
      }
      const index_t rows = min_i(kDwRows, s.OH - oh0);
#pragma GCC unroll 8
      for (index_t r = 0; r < rows; ++r) {
        const index_t at = (oh0 + r) * s.OW + ow0;
        if (at + kDwTile <= plane_end) {
          std::memcpy(y + at, &acc[r], sizeof(Vec));
        } else {  // only the plane's last pixels clip the store
          std::memcpy(y + at, &acc[r], static_cast<std::size_t>(plane_end - at) * sizeof(T));
        }
      }
    }
  }
}

// A strided (stride_w > 1) forward output by output: each sum over the taps in registers, in the
// tiles' order (kh, then kw), stored once. Tiles (as dw_forward_tiles) computed whole 8 x 16 tiles,
// gathering their columns lane by lane: on MobileNetV2's stride-2 3x3 layers (outputs 16x16 down to 4x4, where
// most of a tile lies past the plane) they took 1.8-13x PyTorch's time. At SW_ = 2 (and dil_w 1)
// the column stride is a constant, so GCC vectorises along ow with even/odd shuffles of plain loads.
template <typename T, int KH_, int KW_, int SW_>
__attribute__((always_inline)) inline void dw_forward_strided(const ConvShape& s, const PaddedPlane& pp, const T* xp,
                                                              const T* w, T bias, T* y) {
  const index_t KH = KH_ ? KH_ : s.KH, KW = KW_ ? KW_ : s.KW, Wp = pp.Wp;
  const index_t sw = SW_ ? SW_ : s.stride_w, dw = SW_ ? 1 : s.dil_w;
  for (index_t oh = 0; oh < s.OH; ++oh) {
    const T* row = xp + oh * s.stride_h * Wp;
    T* yr = y + oh * s.OW;
    for (index_t ow = 0; ow < s.OW; ++ow) {
      const T* t = row + ow * sw;
      T acc = bias;
#pragma GCC unroll 5
      for (index_t kh = 0; kh < KH; ++kh)
#pragma GCC unroll 5
        for (index_t kw = 0; kw < KW; ++kw) acc += w[kh * KW + kw] * t[kh * s.dil_h * Wp + kw * dw];
      yr[ow] = acc;
    }
  }
}

// The read modes are instantiated apart: with one loop body for stride 1 and strided columns,
// GCC merged the vector load into the strided gather and ran the gather at stride 1 (5-10x
// slower). The kernel sizes of MobileNet and EfficientNet (3x3, 5x5) get unrolled tap loops.
template <typename T, int KH_, int KW_>
__attribute__((always_inline)) inline void dw_forward_sized(const ConvShape& s, const PaddedPlane& pp, const T* xp,
                                                            const T* w, T bias, T* y) {
  if constexpr (KH_ != 0) {  // the dense read unrolls over rows and taps: a known kernel size only
    if (s.stride_h == 1 && s.stride_w == 1 && s.dil_h == 1 && s.dil_w == 1)
      return dw_forward_tiles<T, DwRead::kDense, KH_, KW_>(s, pp, xp, w, bias, y);
  }
  if (s.stride_w == 1) {
    dw_forward_tiles<T, DwRead::kRowStep, KH_, KW_>(s, pp, xp, w, bias, y);
  } else if (s.stride_w == 2 && s.dil_w == 1) {
    dw_forward_strided<T, KH_, KW_, 2>(s, pp, xp, w, bias, y);
  } else {
    dw_forward_strided<T, KH_, KW_, 0>(s, pp, xp, w, bias, y);
  }
}

// One output plane: its input plane x copied into the window of the thread's padded plane xp
// first, unless x is null (xp holds it already: the channel multiplier's other planes).
template <typename T>
__attribute__((always_inline)) inline void dw_forward_plane_impl(const ConvShape& s, const PaddedPlane& pp,
                                                                 const PlaneWindow& win, const T* x, T* xp,
                                                                 const T* w, T bias, T* y) {
  if (x) copy_window(s, pp, win, x, xp);
  if (s.KH == 3 && s.KW == 3) {
    dw_forward_sized<T, 3, 3>(s, pp, xp, w, bias, y);
  } else if (s.KH == 5 && s.KW == 5) {
    dw_forward_sized<T, 5, 5>(s, pp, xp, w, bias, y);
  } else {
    dw_forward_sized<T, 0, 0>(s, pp, xp, w, bias, y);
  }
}

// One input-gradient plane of a depthwise dgrad: dx (H x W) += taps of dy (OH x OW) for one
// output channel (the caller zeroes dx and sums the channel multiplier's planes in order).
template <typename T>
__attribute__((always_inline)) inline void dw_dgrad_plane_impl(const ConvShape& s, const ColRanges& cr, const T* dy,
                                                               const T* w, T* dx) {
  for (index_t oh = 0; oh < s.OH; ++oh) {
    const T* dyr = dy + oh * s.OW;
    for (index_t kh = 0; kh < s.KH; ++kh) {
      const index_t ih = oh * s.stride_h - s.pad_t + kh * s.dil_h;
      if (ih < 0 || ih >= s.H) continue;
      T* dxr = dx + ih * s.W;
      for (index_t kw = 0; kw < s.KW; ++kw) {
        const index_t off = cr.off[kw], lo = cr.lo[kw], hi = cr.hi[kw];
        const T wv = w[kh * s.KW + kw];
        if (s.stride_w == 1) {
          for (index_t o = lo; o < hi; ++o) dxr[o + off] += wv * dyr[o];
        } else {
          for (index_t o = lo; o < hi; ++o) dxr[o * s.stride_w + off] += wv * dyr[o];
        }
      }
    }
  }
}

// dw (KH x KW) += taps of one (dy plane, x plane) pair, row by row: each output row adds its
// part to every tap's sum, so the KH*KW sums are independent chains the core overlaps (tap by
// tap, all rows each, one sum was a chain of every pixel's FMA: strided layers, whose rows are too
// short for the 8 partial sums below, ran at the FMA's latency, 2.5-3x PyTorch's time on
// MobileNetV2's stride-2 layers). KH_ x KW_: the sums in registers (3x3, 5x5); 0: in dw itself.
template <typename T, int KH_, int KW_>
__attribute__((always_inline)) inline void dw_wgrad_plane_rows(const ConvShape& s, const ColRanges& cr, const T* dy,
                                                               const T* x, T* dw) {
  const index_t KH = KH_ ? KH_ : s.KH, KW = KW_ ? KW_ : s.KW, sw = s.stride_w;
  T sized[KH_ * KW_ + 1];
  T* acc = KH_ ? sized : dw;
  if (KH_)
    for (index_t k = 0; k < KH * KW; ++k) sized[k] = dw[k];
  for (index_t oh = 0; oh < s.OH; ++oh) {
    const T* dyr = dy + oh * s.OW;
#pragma GCC unroll 5
    for (index_t kh = 0; kh < KH; ++kh) {
      const index_t ih = oh * s.stride_h - s.pad_t + kh * s.dil_h;
      if (ih < 0 || ih >= s.H) continue;
      const T* xr = x + ih * s.W;
#pragma GCC unroll 5
      for (index_t kw = 0; kw < KW; ++kw) {
        const index_t off = cr.off[kw], lo = cr.lo[kw], hi = cr.hi[kw];
        T row = T(0);
        index_t o = lo;
        if (sw == 1 && hi - lo >= 8) {
          // 8 independent partial sums: lets the compiler vectorise without reassociating a chain
          T part[8] = {};
          for (; o + 8 <= hi; o += 8)
            for (int l = 0; l < 8; ++l) part[l] += dyr[o + l] * xr[o + l + off];
          for (int l = 0; l < 8; ++l) row += part[l];
        }
        for (; o < hi; ++o) row += dyr[o] * xr[o * sw + off];
        acc[kh * KW + kw] += row;
      }
    }
  }
  if (KH_)
    for (index_t k = 0; k < KH * KW; ++k) dw[k] = sized[k];
}

template <typename T>
__attribute__((always_inline)) inline void dw_wgrad_plane_impl(const ConvShape& s, const ColRanges& cr, const T* dy,
                                                               const T* x, T* dw) {
  if (s.KH == 3 && s.KW == 3) return dw_wgrad_plane_rows<T, 3, 3>(s, cr, dy, x, dw);
  if (s.KH == 5 && s.KW == 5) return dw_wgrad_plane_rows<T, 5, 5>(s, cr, dy, x, dw);
  dw_wgrad_plane_rows<T, 0, 0>(s, cr, dy, x, dw);
}

FASTCONV_CLONES void dw_forward_plane(const ConvShape& s, const PaddedPlane& pp, const PlaneWindow& win,
                                      const float* x, float* xp, const float* w, float b, float* y) {
  dw_forward_plane_impl(s, pp, win, x, xp, w, b, y);
}
FASTCONV_CLONES void dw_forward_plane(const ConvShape& s, const PaddedPlane& pp, const PlaneWindow& win,
                                      const double* x, double* xp, const double* w, double b, double* y) {
  dw_forward_plane_impl(s, pp, win, x, xp, w, b, y);
}
FASTCONV_CLONES void dw_dgrad_plane(const ConvShape& s, const ColRanges& cr, const float* dy, const float* w, float* dx) {
  dw_dgrad_plane_impl(s, cr, dy, w, dx);
}
FASTCONV_CLONES void dw_dgrad_plane(const ConvShape& s, const ColRanges& cr, const double* dy, const double* w, double* dx) {
  dw_dgrad_plane_impl(s, cr, dy, w, dx);
}
FASTCONV_CLONES void dw_wgrad_plane(const ConvShape& s, const ColRanges& cr, const float* dy, const float* x, float* dw) {
  dw_wgrad_plane_impl(s, cr, dy, x, dw);
}
FASTCONV_CLONES void dw_wgrad_plane(const ConvShape& s, const ColRanges& cr, const double* dy, const double* x, double* dw) {
  dw_wgrad_plane_impl(s, cr, dy, x, dw);
}

// The vector kernels (dw_vec.h: the dense forward, the stride_w-1 wgrad) for AVX-512 and for
// AVX2, each in a target region and a namespace of its own, called only where the CPU has the set
// and it is the GEMM kernel set in use (so tests can force the portable path). Regions, not
// target_clones (see pool.cpp). Each region first defines the traits the kernels are written
// against: the vector V of L lanes, its mask M and their operations.

// Lane index i clamped to [0, L], for building masks of lane ranges.
inline index_t clamp_lane(index_t i, int L) { return min_i(max_i(i, 0), L); }

// AVX-512F: 16 fp32 / 8 fp64 lanes, 32 registers, masks in mask registers.
#pragma GCC push_options
#pragma GCC target("avx512f")

template <typename T>
struct Avx512;
template <>
struct Avx512<float> {
  using V = __m512;
  using M = __mmask16;
  static constexpr int L = 16;
  static V zero() { return _mm512_setzero_ps(); }
  static V broadcast(float v) { return _mm512_set1_ps(v); }
  static V load(const float* p) { return _mm512_loadu_ps(p); }
  static V load(M m, const float* p) { return _mm512_maskz_loadu_ps(m, p); }  // masked lanes 0, never read
  static V fmadd(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
  static V fmadd(V a, V b, V c, M m) { return _mm512_mask3_fmadd_ps(a, b, c, m); }  // masked lanes keep c
  static V fmadd_any(V a, V b, V c, M m) { return fmadd(a, b, c, m); }  // whatever a and b hold there
  static V zero_outside(V v, M m) { return _mm512_maskz_mov_ps(m, v); }  // masked lanes 0
  static void store(float* p, V v) { _mm512_storeu_ps(p, v); }
  static void store(M m, float* p, V v) { _mm512_mask_storeu_ps(p, m, v); }
  static float sum(V v) { return _mm512_reduce_add_ps(v); }  // a fixed order of adds
  static M first(index_t n) { return M((1u << n) - 1); }      // lanes [0, n), 0 <= n <= L
  static M lanes(index_t a, index_t b) {  // lanes [a, b)
    a = clamp_lane(a, L), b = clamp_lane(b, L);
    return b > a ? M(first(b) & ~first(a)) : M(0);
  }
  static M all(bool on) { return on ? M(~0u) : M(0); }
  static M both(M a, M b) { return M(a & b); }
  static M from_bits(unsigned bits) { return M(bits); }  // lane l on where bit l is set
};
template <>
struct Avx512<double> {
  using V = __m512d;
  using M = __mmask8;
  static constexpr int L = 8;
  static V zero() { return _mm512_setzero_pd(); }
  static V broadcast(double v) { return _mm512_set1_pd(v); }
  static V load(const double* p) { return _mm512_loadu_pd(p); }
  static V load(M m, const double* p) { return _mm512_maskz_loadu_pd(m, p); }
  static V fmadd(V a, V b, V c) { return _mm512_fmadd_pd(a, b, c); }
  static V fmadd(V a, V b, V c, M m) { return _mm512_mask3_fmadd_pd(a, b, c, m); }
  static V fmadd_any(V a, V b, V c, M m) { return fmadd(a, b, c, m); }
  static V zero_outside(V v, M m) { return _mm512_maskz_mov_pd(m, v); }
  static void store(double* p, V v) { _mm512_storeu_pd(p, v); }
  static void store(M m, double* p, V v) { _mm512_mask_storeu_pd(p, m, v); }
  static double sum(V v) { return _mm512_reduce_add_pd(v); }
  static M first(index_t n) { return M((1u << n) - 1); }
  static M lanes(index_t a, index_t b) {  // lanes [a, b)
    a = clamp_lane(a, L), b = clamp_lane(b, L);
    return b > a ? M(first(b) & ~first(a)) : M(0);
  }
  static M all(bool on) { return on ? M(~0u) : M(0); }
  static M both(M a, M b) { return M(a & b); }
  static M from_bits(unsigned bits) { return M(bits); }
};

namespace avx512 {
template <typename T>
using Vec = Avx512<T>;
constexpr int kRegisters = 32;
#include "dw_vec.h"
#include "dw_lanes.h"
}  // namespace avx512

#pragma GCC pop_options

// AVX2 and FMA: 8 fp32 / 4 fp64 lanes, 16 registers, masks as vectors (a lane is on when its sign
// bit is set).
#pragma GCC push_options
#pragma GCC target("avx2,fma")

template <typename T>
struct Avx2;
template <>
struct Avx2<float> {
  using V = __m256;
  using M = __m256i;
  static constexpr int L = 8;
  static V zero() { return _mm256_setzero_ps(); }
  static V broadcast(float v) { return _mm256_set1_ps(v); }
  static V load(const float* p) { return _mm256_loadu_ps(p); }
  static V load(M m, const float* p) { return _mm256_maskload_ps(p, m); }  // masked lanes 0, never read
  static V fmadd(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
  static V fmadd(V a, V b, V c, M m) {  // masked lanes add a 0 * 0 (a masked off: an Inf there adds no NaN)
    return _mm256_fmadd_ps(_mm256_and_ps(a, _mm256_castsi256_ps(m)), b, c);
  }
  static V fmadd_any(V a, V b, V c, M m) {  // masked lanes add 0 * 0 whatever a and b hold there
    return _mm256_fmadd_ps(_mm256_and_ps(a, _mm256_castsi256_ps(m)), _mm256_and_ps(b, _mm256_castsi256_ps(m)), c);
  }
  static V zero_outside(V v, M m) { return _mm256_and_ps(v, _mm256_castsi256_ps(m)); }  // masked lanes 0
  static void store(float* p, V v) { _mm256_storeu_ps(p, v); }
  static void store(M m, float* p, V v) { _mm256_maskstore_ps(p, m, v); }
  static float sum(V v) {  // a fixed order of adds: the halves, then pairs
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    return _mm_cvtss_f32(_mm_add_ss(h, _mm_movehdup_ps(h)));
  }
  static M first(index_t n) { return lanes(0, n); }
  static M lanes(index_t a, index_t b) {  // lanes [a, b): a <= lane and lane < b, as 32-bit compares
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_and_si256(_mm256_cmpgt_epi32(lane, _mm256_set1_epi32(static_cast<int>(clamp_lane(a, L)) - 1)),
                            _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(clamp_lane(b, L))), lane));
  }
  static M all(bool on) { return _mm256_set1_epi32(on ? -1 : 0); }
  static M both(M a, M b) { return _mm256_and_si256(a, b); }
  static M from_bits(unsigned bits) {  // lane l on where bit l is set
    const __m256i bit = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
    return _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_set1_epi32(static_cast<int>(bits)), bit), bit);
  }
};
template <>
struct Avx2<double> {
  using V = __m256d;
  using M = __m256i;
  static constexpr int L = 4;
  static V zero() { return _mm256_setzero_pd(); }
  static V broadcast(double v) { return _mm256_set1_pd(v); }
  static V load(const double* p) { return _mm256_loadu_pd(p); }
  static V load(M m, const double* p) { return _mm256_maskload_pd(p, m); }
  static V fmadd(V a, V b, V c) { return _mm256_fmadd_pd(a, b, c); }
  static V fmadd(V a, V b, V c, M m) { return _mm256_fmadd_pd(_mm256_and_pd(a, _mm256_castsi256_pd(m)), b, c); }
  static V fmadd_any(V a, V b, V c, M m) {
    return _mm256_fmadd_pd(_mm256_and_pd(a, _mm256_castsi256_pd(m)), _mm256_and_pd(b, _mm256_castsi256_pd(m)), c);
  }
  static V zero_outside(V v, M m) { return _mm256_and_pd(v, _mm256_castsi256_pd(m)); }
  static void store(double* p, V v) { _mm256_storeu_pd(p, v); }
  static void store(M m, double* p, V v) { _mm256_maskstore_pd(p, m, v); }
  static double sum(V v) {
    const __m128d h = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
    return _mm_cvtsd_f64(_mm_add_sd(h, _mm_unpackhi_pd(h, h)));
  }
  static M first(index_t n) { return lanes(0, n); }
  static M lanes(index_t a, index_t b) {
    const __m256i lane = _mm256_setr_epi64x(0, 1, 2, 3);
    return _mm256_and_si256(_mm256_cmpgt_epi64(lane, _mm256_set1_epi64x(clamp_lane(a, L) - 1)),
                            _mm256_cmpgt_epi64(_mm256_set1_epi64x(clamp_lane(b, L)), lane));
  }
  static M all(bool on) { return _mm256_set1_epi64x(on ? -1 : 0); }
  static M both(M a, M b) { return _mm256_and_si256(a, b); }
  static M from_bits(unsigned bits) {
    const __m256i bit = _mm256_setr_epi64x(1, 2, 4, 8);
    return _mm256_cmpeq_epi64(_mm256_and_si256(_mm256_set1_epi64x(bits), bit), bit);
  }
};

namespace avx2 {
template <typename T>
using Vec = Avx2<T>;
constexpr int kRegisters = 16;
#include "dw_vec.h"
#include "dw_lanes.h"
}  // namespace avx2

#pragma GCC pop_options

// The choosers of the vector kernels run on every CPU, so they stay outside the target regions:
// inside one GCC may use its instructions anywhere in a function (the sanitized build put a
// zmm store of its stack poisoning in dw_wgrad_vector's prologue, an illegal instruction on AVX2).

template <typename T>
using PlaneFn = void (*)(const ConvShape&, const PaddedPlane&, const PlaneWindow&, const T*, T*, const T*, T, T*);

// The plane function of a depthwise forward: the vector kernel of the kernel set in use for dense
// 3x3 and 5x5 layers, else the portable one.
template <typename T>
PlaneFn<T> dw_forward_plane_fn(const ConvShape& s) {
  const bool dense = s.stride_h == 1 && s.stride_w == 1 && s.dil_h == 1 && s.dil_w == 1 &&
                     ((s.KH == 3 && s.KW == 3) || (s.KH == 5 && s.KW == 5));
  if (dense && gemm_isa_is("avx512")) return avx512::dw_forward_plane<T>;
  if (dense && gemm_isa_is("avx2")) return avx2::dw_forward_plane<T>;
  return static_cast<PlaneFn<T>>(dw_forward_plane);  // the portable overload of T
}

// Runs the vector kernel where it applies; false: the caller takes the portable path.
template <typename T>
bool dw_wgrad_vector(const ConvShape& s, const T* dy, const T* x, T* dw, int nthreads) {
  if (s.stride_w != 1) return false;
  if (gemm_isa_is("avx512")) return avx512::dw_wgrad(s, dy, x, dw, nthreads);
  if (gemm_isa_is("avx2")) return avx2::dw_wgrad(s, dy, x, dw, nthreads);
  return false;
}

// Runs a depthwise forward on the flattened planes (dw_forward_flat) where it pays: dense 3x3 and
// 5x5 layers whose rows keep their length (OW == W) on planes of at most kDwFlatMaxPixels outputs,
// with a vector kernel set in use; false: the caller takes the padded planes' tiles. Measured
// (2-core AMD EPYC Zen 1, AVX2, fp32, MobileNetV2's 3x3 layers at batch 32), flat vs tiles time:
// 4x4 planes (960 channels) 0.39x, forward and stride-1 dgrad alike (PyTorch channels_last: 0.27x);
// 8x8 1.03-1.05x, 16x16 1.6x (the tiles share each input vector among rows; the flat steps load
// one per tap).
constexpr index_t kDwFlatMaxPixels = 32;

template <typename T>
bool dw_forward_flat_vector(const ConvShape& s, const T* x, const T* w, const T* b, T* y, int nthreads) {
  if (s.stride_h != 1 || s.stride_w != 1 || s.OW != s.W || s.OH * s.OW > kDwFlatMaxPixels) return false;
  if (gemm_isa_is("avx512")) return avx512::dw_forward_flat(s, x, w, b, y, nthreads);
  if (gemm_isa_is("avx2")) return avx2::dw_forward_flat(s, x, w, b, y, nthreads);
  return false;
}

// The channels-in-lanes kernels (dw_lanes.h) where they pay, measured against the plane kernels
// on MobileNetV2's 3x3 depthwise layers (batch 32, 32x32 down to 4x4, and 144 x 56 x 56 at batch
// 16; 2-core AMD EPYC Zen 5, 2 threads, fp32, lanes time / plane time, AVX-512 then AVX2):
//   forward, stride 1:  4x4 0.61 / 0.71, 8x8 0.36-0.38 / 0.67-0.68, 16x16 0.91 / 1.11,
//                       32x32 1.34-1.53 / 1.26-1.49, 56x56 1.03 / 1.22;
//   forward, stride 2:  0.16-0.46 / 0.18-0.51 (output 4x4 to 16x16);
//   dgrad, stride 1 (a forward of dy): as the forward; strided (a forward of dy spread on the
//                       stride's lattice, dx 8x8, 16x16, 32x32): 0.41, 0.75, 1.22 / 0.80, 1.16, 1.54;
//   wgrad:              4x4 to 16x16 0.52-0.95 / 0.64-0.90, 32x32 0.76-1.19 / 0.80-0.88, strided
//                       0.14-0.17 / 0.18-0.24, 56x56 1.91 / 1.81.
// So: a forward (of x, or of dy) whose outputs are strided, or whose output planes hold at most
// kLanesPlaneVectors vectors (256 pixels at AVX-512's 16 fp32 lanes, 128 at AVX2's 8); a wgrad on
// planes of at most 32x32 outputs, or strided. Where the transposes cost what the FMAs do (large
// stride-1 planes), the plane kernels' row vectors stay ahead. The buffer of L padded planes is
// bounded as the plane kernels' one plane is (conv_chunk_bytes), the taps at 25 (a 32-bit set of
// the taps each output reads inside the image; the wgrad's sums in registers: 9 or 25 taps); fewer
// channels than lanes leave most lanes empty.
constexpr index_t kLanesPlaneVectors = 16;
constexpr index_t kLanesWgradMaxPixels = 32 * 32;

// The lanes of the kernel set in use for T (0: none, the portable build).
template <typename T>
index_t lanes_in_use() {
  if (gemm_isa_is("avx512")) return 64 / index_t(sizeof(T));
  if (gemm_isa_is("avx2")) return 32 / index_t(sizeof(T));
  return 0;
}

// Whether the lanes kernels apply to a depthwise forward of shape u, of source planes (x, or dy
// spread for a strided dgrad) on a buffer of Hp x Wp pixels, and pay (`wgrad`: the wgrad of u).
template <typename T>
bool dw_lanes_pays(const ConvShape& u, bool wgrad) {
  const index_t L = lanes_in_use<T>();
  const index_t Hp = (u.OH - 1) * u.stride_h + (u.KH - 1) * u.dil_h + 1;
  const index_t Wp = (u.OW - 1) * u.stride_w + (u.KW - 1) * u.dil_w + 1;
  const index_t KK = u.KH * u.KW;
  if (!L || u.C_out < L || KK > 25 || (wgrad && KK != 9 && KK != 25) || u.N * u.OH * u.OW * u.H * u.W == 0 ||
      Hp * Wp * L * index_t(sizeof(T)) > conv_chunk_bytes())
    return false;
  const bool strided = u.stride_h > 1 || u.stride_w > 1;
  return strided || u.OH * u.OW <= (wgrad ? kLanesWgradMaxPixels : kLanesPlaneVectors * L);
}

template <typename T>
bool dw_lanes_forward_vector(const ConvShape& s, const T* x, const T* w, const T* b, T* y, int nthreads) {
  if (!dw_lanes_pays<T>(s, false)) return false;
  if (gemm_isa_is("avx512")) return avx512::dw_lanes_forward(s, x, w, b, y, nthreads), true;
  return avx2::dw_lanes_forward(s, x, w, b, y, nthreads), true;
}

template <typename T>
bool dw_lanes_wgrad_vector(const ConvShape& s, const T* dy, const T* x, T* dw, int nthreads) {
  if (!dw_lanes_pays<T>(s, true)) return false;
  if (gemm_isa_is("avx512")) return avx512::dw_lanes_wgrad_taps(s, dy, x, dw, nthreads), true;
  return avx2::dw_lanes_wgrad_taps(s, dy, x, dw, nthreads), true;
}

}  // namespace

template <typename T>
void depthwise_forward(const ConvShape& s, const T* x, const T* w, const T* b, T* y, int nthreads) {
  if (dw_lanes_forward_vector(s, x, w, b, y, nthreads)) return;
  if (dw_forward_flat_vector(s, x, w, b, y, nthreads)) return;
  const index_t mult = s.C_out / s.groups, KK = s.KH * s.KW;
  const PaddedPlane pp(s);
  const PlaneWindow win(s, pp);
  const PlaneFn<T> forward_plane = dw_forward_plane_fn<T>(s);
#pragma omp parallel num_threads(nthreads)
  {
    Buffer<T> xp(pp.Hp * pp.Wp);                  // per thread: one padded input plane
    fill_zero(xp.data(), pp.Hp * pp.Wp);          // its padding, for every plane
    index_t padded = -1;                           // the plane now in xp (reused across the multiplier)
#pragma omp for schedule(static)
    for (index_t u = 0; u < s.N * s.C_out; ++u) {
      const index_t n = u / s.C_out, co = u % s.C_out, plane = n * s.C_in + co / mult;
      forward_plane(s, pp, win, plane != padded ? x + plane * s.H * s.W : nullptr, xp.data(), w + co * KK,
                    b ? b[co] : T(0), y + u * s.OH * s.OW);
      padded = plane;
    }
  }
}

// At stride 1 (one output channel per group) a depthwise dgrad is a depthwise forward of dy with
// the flipped kernel and padding d*(K-1) - pad: register tiles instead of scattered adds.
template <typename T>
void depthwise_dgrad_as_forward(const ConvShape& s, const T* dy, const T* w, T* dx, int nthreads) {
  const index_t KK = s.KH * s.KW;
  Buffer<T> wf(s.C_out * KK);
  for (index_t c = 0; c < s.C_out; ++c)
    for (index_t k = 0; k < KK; ++k) wf.data()[c * KK + KK - 1 - k] = w[c * KK + k];
  depthwise_forward(dgrad_shape(s), dy, wf.data(), static_cast<const T*>(nullptr), dx, nthreads);
}

namespace {

// The stride-1 forward u of a strided dgrad: dy spread (Hu x Wu) -> dx (H x W).
ConvShape spread_shape(const ConvShape& s) {
  ConvShape u = s;
  u.H = (s.OH - 1) * s.stride_h + 1, u.W = (s.OW - 1) * s.stride_w + 1, u.OH = s.H, u.OW = s.W;
  u.stride_h = u.stride_w = 1;
  u.pad_t = (s.KH - 1) * s.dil_h - s.pad_t, u.pad_l = (s.KW - 1) * s.dil_w - s.pad_l;
  return u;
}

// Whether the spread dgrad applies to the shape of s (with u = spread_shape(s)), given finite w.
template <typename T>
bool spread_applies(const ConvShape& s, const ConvShape& u) {
  const PaddedPlane pp(u);
  return s.C_out == s.groups && u.pad_t >= 0 && u.pad_l >= 0 && s.N * s.C_in != 0 && s.OH * s.OW * s.H * s.W != 0 &&
         pp.Hp * pp.Wp * index_t(sizeof(T)) <= conv_chunk_bytes();
}

// A strided depthwise dgrad (one output channel per group) as a stride-1 depthwise forward: dy
// spread on the stride's lattice of a zeroed plane (dy[oh][ow] at row oh*sh, column ow*sw, zeros
// between), convolved with the flipped kernel at padding d*(K-1) - pad, as the stride-1 dgrad
// (depthwise_dgrad_as_forward). The spread plane is written straight into the thread's padded
// plane of the forward's tiles (zeroed once: every plane writes the same lattice). Most of the
// taps meet zeros (3/4 at stride 2), but the tiles run in registers, where the scattered adds of
// depthwise_backward_input (three dependent adds per input pixel, element by element) took 2.3x
// PyTorch's channels_last time on MobileNetV2's stride-2 layers, 6x at 8x8 planes (2-core AMD
// EPYC Zen 1, AVX2). The zeros multiply w, so an Inf or NaN in w (which the sum over real taps
// never meets there) declines, as does a padding wider than the kernel's span, a channel
// multiplier or a padded plane over the chunk bound; false: the caller scatters.
template <typename T>
bool depthwise_dgrad_spread(const ConvShape& s, const T* dy, const T* w, T* dx, int nthreads) {
  const index_t KK = s.KH * s.KW;
  const ConvShape u = spread_shape(s);
  if (!spread_applies<T>(s, u) || !all_finite(w, s.C_out * KK)) return false;
  if (dw_lanes_pays<T>(u, false)) {  // the same forward, in lanes
    if (gemm_isa_is("avx512")) return avx512::dw_lanes_dgrad_spread(s, u, dy, w, dx, nthreads), true;
    return avx2::dw_lanes_dgrad_spread(s, u, dy, w, dx, nthreads), true;
  }
  const PaddedPlane pp(u);
  Buffer<T> wf(s.C_out * KK);  // the flipped kernels
  for (index_t c = 0; c < s.C_out; ++c)
    for (index_t k = 0; k < KK; ++k) wf.data()[c * KK + KK - 1 - k] = w[c * KK + k];
  const PlaneWindow win(u, pp);
  const PlaneFn<T> forward_plane = dw_forward_plane_fn<T>(u);
  // the lattice points that fall inside the padded plane (those past it meet no output)
  const index_t rows = min_i(s.OH, ceil_div(pp.Hp - u.pad_t, s.stride_h));
  const index_t cols = min_i(s.OW, ceil_div(pp.Wp - u.pad_l, s.stride_w));
#pragma omp parallel num_threads(nthreads)
  {
    Buffer<T> xp(pp.Hp * pp.Wp);  // per thread: one spread, padded plane
    fill_zero(xp.data(), pp.Hp * pp.Wp);
#pragma omp for schedule(static)
    for (index_t p = 0; p < s.N * s.C_in; ++p) {
      const T* d = dy + p * s.OH * s.OW;
      for (index_t oh = 0; oh < rows; ++oh) {
        T* row = xp.data() + (u.pad_t + oh * s.stride_h) * pp.Wp + u.pad_l;
        for (index_t ow = 0; ow < cols; ++ow) row[ow * s.stride_w] = d[oh * s.OW + ow];
      }
      forward_plane(u, pp, win, nullptr, xp.data(), wf.data() + p % s.C_in * KK, T(0), dx + p * s.H * s.W);
    }
  }
  return true;
}

}  // namespace

template <typename T>
void depthwise_backward_input(const ConvShape& s, const T* dy, const T* w, T* dx, int nthreads) {
  if ((s.stride_h > 1 || s.stride_w > 1) && depthwise_dgrad_spread(s, dy, w, dx, nthreads)) return;
  const index_t mult = s.C_out / s.groups, KK = s.KH * s.KW;
  const ColRanges cr(s);  // once per call, not per plane (three vectors: heap allocations per plane)
#pragma omp parallel for schedule(static) num_threads(nthreads)
  for (index_t u = 0; u < s.N * s.C_in; ++u) {
    const index_t n = u / s.C_in, c = u % s.C_in;
    T* plane = dx + u * s.H * s.W;
    fill_zero(plane, s.H * s.W);
    for (index_t m = 0; m < mult; ++m) {
      const index_t co = c * mult + m;
      dw_dgrad_plane(s, cr, dy + (n * s.C_out + co) * s.OH * s.OW, w + co * KK, plane);
    }
  }
}

template <typename T>
void depthwise_backward_weight(const ConvShape& s, const T* dy, const T* x, T* dw, int nthreads) {
  if (dw_lanes_wgrad_vector(s, dy, x, dw, nthreads)) return;
  if (dw_wgrad_vector(s, dy, x, dw, nthreads)) return;
  const index_t mult = s.C_out / s.groups, KK = s.KH * s.KW;
  const ColRanges cr(s);  // once per call (see depthwise_backward_input)
  // one output channel per iteration, its batch summed in order: the same result on any thread count
#pragma omp parallel for schedule(static) num_threads(nthreads)
  for (index_t co = 0; co < s.C_out; ++co) {
    T* d = dw + co * KK;
    fill_zero(d, KK);
    for (index_t n = 0; n < s.N; ++n)
      dw_wgrad_plane(s, cr, dy + (n * s.C_out + co) * s.OH * s.OW, x + (n * s.C_in + co / mult) * s.H * s.W, d);
  }
}

namespace {

template <typename T>
bool uses_lanes(const ConvShape& s, const std::string& pass) {
  if (pass == "fwd") return dw_lanes_pays<T>(s, false);
  if (pass == "wgrad") return dw_lanes_pays<T>(s, true);
  if (s.C_out != s.groups) return false;  // a channel multiplier's dgrad scatters
  if (s.stride_h == 1 && s.stride_w == 1) return dw_lanes_pays<T>(dgrad_shape(s), false);
  const ConvShape u = spread_shape(s);
  return spread_applies<T>(s, u) && dw_lanes_pays<T>(u, false);
}

}  // namespace

bool depthwise_uses_lanes(const ConvShape& s, const std::string& pass, index_t elem_bytes) {
  if (pass != "fwd" && pass != "dgrad" && pass != "wgrad")
    throw std::invalid_argument("depthwise_uses_lanes: pass must be 'fwd', 'dgrad' or 'wgrad', got '" + pass + "'");
  if (!is_depthwise(s)) return false;
  return elem_bytes == 4 ? uses_lanes<float>(s, pass) : uses_lanes<double>(s, pass);
}

#define FASTCONV_INSTANTIATE(T)                                                                    \
  template void depthwise_forward<T>(const ConvShape&, const T*, const T*, const T*, T*, int);     \
  template void depthwise_dgrad_as_forward<T>(const ConvShape&, const T*, const T*, T*, int);      \
  template void depthwise_backward_input<T>(const ConvShape&, const T*, const T*, T*, int);        \
  template void depthwise_backward_weight<T>(const ConvShape&, const T*, const T*, T*, int);
FASTCONV_INSTANTIATE(float)
FASTCONV_INSTANTIATE(double)

}  // namespace fastconv
