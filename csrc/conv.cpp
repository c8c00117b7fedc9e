// 2-d convolution. The general paths are GEMMs whose im2col operand is never built:
//   * forward: each image is copied once into a "flat" layout (per channel, the planes of its
//     stride phases, zero-padded; see FlatLayout) in which row k of the im2col matrix, for NR
//     consecutive output columns, is NR consecutive elements: the micro-kernel reads it where it
//     lies (no packing), and computes Wq - OW junk columns per output row that are dropped.
//     Pointwise layers (1x1, stride 1, no padding) read x itself. Small images, where the junk
//     would be 30% or more, pack B from the layout without it instead (see compact_forward).
//     Tiles that straddle output rows are staged per unit and copied to y once (stage_tiling).
//     The weight is read as it lies too (row i of A at w + off[p] + i*lda, see InPlaceA);
//   * forward and stride-1 dgrad of 3x3 layers (stride 1, dilation 1, one group, 64+ channels each
//     way, enough tiles; wgrad at 128+ channels), finite data: Winograd F(2x2, 3x3), 2.25x fewer
//     multiplies (winograd.cpp);
//   * dgrad at stride 1: the forward convolution of dy with the flipped, transposed weight (no
//     col2im, and that weight is w read at other offsets: never built); at larger strides dgrad is
//     GEMM (cols = W^T dy) + col2im (im2col with +=);
//   * wgrad: fp32 with AVX-512, up to 16 output channels and 64 to 1024 taps x input channels per
//     group (not pointwise), finite x: dot products along the pixels of dy and the rows of cols,
//     both read in place from flat copies (the dot kernel, see dot_backward_weight); else dW^T =
//     cols dy^T on the same flat layout (the micro-kernel reads cols' rows in place, pixel by
//     pixel), for weights under 4 MiB (1 MiB pointwise); otherwise GEMM dW += dY cols^T with
//     cols^T packed from x, the batch folded into the reduction;
//   * depthwise (one input channel per group): direct loops over rows, no GEMM.
//
// Workspace (the only memory besides inputs and outputs; see Buffer / workspace_peak_bytes):
//   shared:     forward, stride-1 dgrad and flat wgrad: the flat copies of a chunk of images, at
//               most 4 MiB (kFlatChunkBytes) or one image, plus for flat wgrad their packed dy^T
//               (within the same bound) and dW^T; strided dgrad and packed wgrad: the packed weight
//               (C_in/groups*KH*KW x C_out rounded up to MR rows / packed dy chunks); packed wgrad
//               with S > 1 reduction slices S copies of dw (S <= 8, chosen by the shape);
//   Winograd:   see winograd.cpp (the transformed weight, a chunk of padded planes, per-thread blocks);
//   dot wgrad:  8 copies of dw (a round's slices), and per thread the flat copies and dy rows of one
//               slice of images (at most 512 KiB, kDotSliceBytes, or one image);
//   per thread: one packed B block, KC x NC (256 x 512 fp32 / 256 x 256 fp64 = 512 KiB), plus
//               for a staged forward one unit's C (at most 256 KiB, kStageBytes, or one MR-row
//               panel), for packed wgrad one packed dy chunk (C_out/groups x KC) and for strided
//               dgrad one cols chunk of C_in/groups*KH*KW x nbc with nbc*rows <= 64 Ki elements (at
//               least NR columns).
// None of it grows with the batch size past the chunk bound: no im2col matrix is ever built.
#include "conv.h"

#include <immintrin.h>
#include <omp.h>

#include <cstring>
#include <stdexcept>
#include <type_traits>
#include <vector>

#include "gemm.h"
#include "winograd.h"

namespace fastconv {
namespace {

// The index map of one convolution, as the im2col/col2im loops see it.
struct Geo {
  index_t H, W, OW, sh, sw, pt, pl, dh, dw, KH, KW;
};

// Pointwise layers read x as a (C_in, H*W) matrix: one "row" of H*W pixels, one tap.
bool is_pointwise(const ConvShape& s) {
  return s.KH == 1 && s.KW == 1 && s.stride_h == 1 && s.stride_w == 1 && s.pad_t == 0 && s.pad_l == 0 &&
         s.OH == s.H && s.OW == s.W;
}

Geo geometry(const ConvShape& s) {
  if (is_pointwise(s)) return Geo{1, s.H * s.W, s.OH * s.OW, 1, 1, 0, 0, 1, 1, 1, 1};
  return Geo{s.H, s.W, s.OW, s.stride_h, s.stride_w, s.pad_t, s.pad_l, s.dil_h, s.dil_w, s.KH, s.KW};
}

// Output pixels [lane, lane+len) of a range that share image n and output row oh.
struct PixelRun {
  index_t lane, len, n, oh, ow;
};

// Split pixels [j, j+len) of the flattened (image, oh, ow) space (P pixels per image) into runs
// along one output row; returns how many (at most len).
int pixel_runs(const Geo& g, index_t P, index_t j, index_t len, PixelRun* runs) {
  int count = 0;
  for (index_t lane = 0; lane < len;) {
    const index_t jj = j + lane, n = jj / P, q = jj - n * P, oh = q / g.OW, ow = q - oh * g.OW;
    const index_t l = min_i(len - lane, g.OW - ow);
    runs[count++] = PixelRun{lane, l, n, oh, ow};
    lane += l;
  }
  return count;
}

// Where tap (kh, kw) of run r reads: input row ih, first input column iw0 (then every sw-th).
struct TapRow {
  index_t ih, iw0;
  bool inside;  // every lane of the run lands inside the image (no padding to handle)
};

inline TapRow tap_row(const Geo& g, index_t kh, index_t kw, const PixelRun& r) {
  const index_t ih = r.oh * g.sh - g.pt + kh * g.dh, iw0 = r.ow * g.sw - g.pl + kw * g.dw;
  return TapRow{ih, iw0, ih >= 0 && ih < g.H && iw0 >= 0 && iw0 + (r.len - 1) * g.sw < g.W};
}

// im2col for one run and one tap: dst[t*ds] = x_plane[ih][iw0 + t*sw], zero outside the image.
// The interior case (most runs) is one copy; the border case checks each lane (no divisions).
template <typename T>
inline void im2col_run(const T* plane, const Geo& g, index_t kh, index_t kw, const PixelRun& r, T* dst,
                       index_t ds) {
  const TapRow tr = tap_row(g, kh, kw, r);
  const T* src = plane + tr.ih * g.W + tr.iw0;
  if (tr.inside) {
    if (ds == 1 && g.sw == 1) {
      std::memcpy(dst, src, static_cast<std::size_t>(r.len) * sizeof(T));
    } else {
      for (index_t t = 0; t < r.len; ++t) dst[t * ds] = src[t * g.sw];
    }
    return;
  }
  if (tr.ih < 0 || tr.ih >= g.H) {
    for (index_t t = 0; t < r.len; ++t) dst[t * ds] = T(0);
  } else if (g.sw == 1) {  // zeros, a copy, zeros
    const index_t lo = min_i(r.len, max_i(0, -tr.iw0)), hi = max_i(lo, min_i(r.len, g.W - tr.iw0));
    for (index_t t = 0; t < lo; ++t) dst[t * ds] = T(0);
    for (index_t t = lo; t < hi; ++t) dst[t * ds] = src[t];
    for (index_t t = hi; t < r.len; ++t) dst[t * ds] = T(0);
  } else {
    for (index_t t = 0, iw = tr.iw0; t < r.len; ++t, iw += g.sw)
      dst[t * ds] = iw >= 0 && iw < g.W ? src[t * g.sw] : T(0);
  }
}

// col2im for one run and one tap: im2col with +=, skipping what falls in the padding.
template <typename T>
inline void col2im_run(T* plane, const Geo& g, index_t kh, index_t kw, const PixelRun& r, const T* src) {
  const TapRow tr = tap_row(g, kh, kw, r);
  if (tr.ih < 0 || tr.ih >= g.H) return;
  T* dst = plane + tr.ih * g.W + tr.iw0;
  if (tr.inside) {
    for (index_t t = 0; t < r.len; ++t) dst[t * g.sw] += src[t];
    return;
  }
  for (index_t t = 0, iw = tr.iw0; t < r.len; ++t, iw += g.sw)
    if (iw >= 0 && iw < g.W) dst[t * g.sw] += src[t];
}

// Decompose a depth index k of one group into (channel, kh, kw).
struct Tap {
  index_t c, kh, kw;
  void next(const Geo& g) {
    if (++kw == g.KW) {
      kw = 0;
      if (++kh == g.KH) {
        kh = 0;
        ++c;
      }
    }
  }
};
inline Tap tap_of(const Geo& g, index_t k) {
  const index_t kk = g.KH * g.KW, rem = k % kk;
  return Tap{k / kk, rem / g.KW, rem % g.KW};
}

// Wgrad B(p, k) = cols(k, pixel q0 + p) of one image and group, packed into [panel][p][NR]:
// each column is one tap's im2col row, written with stride NR.
template <typename T>
struct Im2colTransposedB {
  const T* x;  // the group's first channel in this image
  index_t plane, P, q0;
  Geo g;
  void operator()(const MicroKernel<T>& uk, index_t pc, index_t kcb, index_t j0, index_t nb, T* dst) const {
    const int NR = uk.nr;
    PixelRun runs[kMaxKC];
    const int count = pixel_runs(g, P, q0 + pc, kcb, runs);
    for (index_t jr = 0; jr < nb; jr += NR) {
      const index_t cols = min_i(NR, nb - jr);
      T* d = dst + jr * kcb;
      Tap tap = tap_of(g, j0 + jr);
      for (index_t r = 0; r < cols; ++r, tap.next(g)) {
        const T* xc = x + tap.c * plane;
        for (int i = 0; i < count; ++i) im2col_run(xc, g, tap.kh, tap.kw, runs[i], d + runs[i].lane * NR + r, index_t(NR));
      }
      for (index_t r = cols; r < NR; ++r)
        for (index_t p = 0; p < kcb; ++p) d[p * NR + r] = T(0);
    }
  }
};

// ---------------------------------------------------------------------------------------------
// depthwise: one input channel per group, direct loops (a GEMM of depth KH*KW would starve)
// ---------------------------------------------------------------------------------------------

bool is_depthwise(const ConvShape& s) { return s.C_in == s.groups; }

// At stride 1, dgrad is the forward convolution of dy (C_out channels, OH x OW) with the flipped,
// transposed weight, dilation d and padding d*(K-1) - pad (negative when the padding exceeds the
// kernel's reach): this is that forward's shape.
ConvShape dgrad_shape(const ConvShape& s) {
  return ConvShape{s.N, s.C_out, s.OH, s.OW, s.C_in, s.KH, s.KW, s.H, s.W, 1, 1,
                   s.dil_h * (s.KH - 1) - s.pad_t, s.dil_w * (s.KW - 1) - s.pad_l, s.dil_h, s.dil_w, s.groups};
}

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
// kRowStep (stride_w 1: each tap a vector load), kGather (strided columns, element by element).
enum class DwRead { kDense, kRowStep, kGather };

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
              if (Read == DwRead::kGather) {
                for (index_t l = 0; l < kDwTile; ++l) xv[l] = xs[l * sw];
              } else {
                std::memcpy(&xv, xs, sizeof(Vec));
              }
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
  } else {
    dw_forward_tiles<T, DwRead::kGather, KH_, KW_>(s, pp, xp, w, bias, y);
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
__attribute__((always_inline)) inline void dw_dgrad_plane_impl(const ConvShape& s, const T* dy, const T* w, T* dx) {
  ColRanges cr(s);
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

// dw (KH x KW) += taps of one (dy plane, x plane) pair.
template <typename T>
__attribute__((always_inline)) inline void dw_wgrad_plane_impl(const ConvShape& s, const T* dy, const T* x, T* dw) {
  ColRanges cr(s);
  for (index_t kh = 0; kh < s.KH; ++kh)
    for (index_t kw = 0; kw < s.KW; ++kw) {
      const index_t off = cr.off[kw], lo = cr.lo[kw], hi = cr.hi[kw];
      T sum = T(0);
      for (index_t oh = 0; oh < s.OH; ++oh) {
        const index_t ih = oh * s.stride_h - s.pad_t + kh * s.dil_h;
        if (ih < 0 || ih >= s.H) continue;
        const T* dyr = dy + oh * s.OW;
        const T* xr = x + ih * s.W;
        // 8 independent partial sums: lets the compiler vectorise without reassociating a chain
        T part[8] = {};
        index_t o = lo;
        if (s.stride_w == 1)
          for (; o + 8 <= hi; o += 8)
            for (int l = 0; l < 8; ++l) part[l] += dyr[o + l] * xr[o + l + off];
        for (; o < hi; ++o) part[0] += dyr[o] * xr[o * s.stride_w + off];
        for (int l = 0; l < 8; ++l) sum += part[l];
      }
      dw[kh * s.KW + kw] += sum;
    }
}

FASTCONV_CLONES void dw_forward_plane(const ConvShape& s, const PaddedPlane& pp, const PlaneWindow& win,
                                      const float* x, float* xp, const float* w, float b, float* y) {
  dw_forward_plane_impl(s, pp, win, x, xp, w, b, y);
}
FASTCONV_CLONES void dw_forward_plane(const ConvShape& s, const PaddedPlane& pp, const PlaneWindow& win,
                                      const double* x, double* xp, const double* w, double b, double* y) {
  dw_forward_plane_impl(s, pp, win, x, xp, w, b, y);
}
FASTCONV_CLONES void dw_dgrad_plane(const ConvShape& s, const float* dy, const float* w, float* dx) {
  dw_dgrad_plane_impl(s, dy, w, dx);
}
FASTCONV_CLONES void dw_dgrad_plane(const ConvShape& s, const double* dy, const double* w, double* dx) {
  dw_dgrad_plane_impl(s, dy, w, dx);
}
FASTCONV_CLONES void dw_wgrad_plane(const ConvShape& s, const float* dy, const float* x, float* dw) {
  dw_wgrad_plane_impl(s, dy, x, dw);
}
FASTCONV_CLONES void dw_wgrad_plane(const ConvShape& s, const double* dy, const double* x, double* dw) {
  dw_wgrad_plane_impl(s, dy, x, dw);
}

// The depthwise wgrad's vector kernel, compiled for AVX-512F in this region and called only where
// the CPU has it (and the GEMM kernel set in use is "avx512", so tests can force the portable path).
// A region, not target_clones (see pool.cpp). One output channel's KH x KW taps at once, each in
// its own vector accumulator (KH*KW independent FMA chains instead of one), L output columns of
// a row per step: dy is loaded once per step and x once per tap. Lanes whose input column lies
// in the padding, or past the row's end, are masked out of both the load and the FMA, so they
// add nothing (not dy * 0, which would turn an Inf in dy into NaN).
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
  static V load(M m, const float* p) { return _mm512_maskz_loadu_ps(m, p); }
  static V fmadd(V a, V b, V c, M m) { return _mm512_mask3_fmadd_ps(a, b, c, m); }
  static void store(float* p, V v) { _mm512_storeu_ps(p, v); }
  static V broadcast(float v) { return _mm512_set1_ps(v); }
  static V load(const float* p) { return _mm512_loadu_ps(p); }
  static V fmadd(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
  static void store(M m, float* p, V v) { _mm512_mask_storeu_ps(p, m, v); }
  static M first(index_t n) { return M((1u << n) - 1); }  // lanes [0, n), n <= L
  static float sum(V v) { return _mm512_reduce_add_ps(v); }  // a fixed order of adds
};
template <>
struct Avx512<double> {
  using V = __m512d;
  using M = __mmask8;
  static constexpr int L = 8;
  static V zero() { return _mm512_setzero_pd(); }
  static V load(M m, const double* p) { return _mm512_maskz_loadu_pd(m, p); }
  static V fmadd(V a, V b, V c, M m) { return _mm512_mask3_fmadd_pd(a, b, c, m); }
  static void store(double* p, V v) { _mm512_storeu_pd(p, v); }
  static V broadcast(double v) { return _mm512_set1_pd(v); }
  static V load(const double* p) { return _mm512_loadu_pd(p); }
  static V fmadd(V a, V b, V c) { return _mm512_fmadd_pd(a, b, c); }
  static void store(M m, double* p, V v) { _mm512_mask_storeu_pd(p, m, v); }
  static M first(index_t n) { return M((1u << n) - 1); }  // lanes [0, n), n <= L
  static double sum(V v) { return _mm512_reduce_add_pd(v); }  // a fixed order of adds
};

// One output plane of a dense (stride and dilation 1) KH x KW depthwise forward from its padded
// plane xp: the portable dw_forward_tiles (kDense) with the tile in explicit registers, where GCC's
// vector extension spilled accumulators and weights (this runs in 0.55-0.65x its time, the
// same speed as memory then). The taps' weights stay in registers for the whole plane; each input
// vector serves the KH output rows it reaches; a ragged tile's stores are masked.
template <typename T, int KH, int KW>
void dw_forward_dense_avx512(const ConvShape& s, const PaddedPlane& pp, const T* xp, const T* w, T bias, T* y) {
  using A = Avx512<T>;
  using V = typename A::V;
  constexpr int L = A::L, R = KH * KW > 9 ? 4 : 8;  // R accumulators + KH*KW weights in 32 registers
  static_assert(R <= kDwRows && L <= kDwTile, "the padded plane covers tiles of kDwRows x kDwTile only");
  V wv[KH * KW];
  for (int k = 0; k < KH * KW; ++k) wv[k] = A::broadcast(w[k]);
  const V b = A::broadcast(bias);
  for (index_t oh0 = 0; oh0 < s.OH; oh0 += R) {
    const int rows = static_cast<int>(min_i(R, s.OH - oh0));
    for (index_t ow0 = 0; ow0 < s.OW; ow0 += L) {
      const T* tile = xp + oh0 * pp.Wp + ow0;
      V acc[R];  // the loops unroll whole (acc[] indexed by constants stays in registers)
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) acc[r] = b;
#pragma GCC unroll 12
      for (int i = 0; i < R + KH - 1; ++i)
#pragma GCC unroll 5
        for (int kw = 0; kw < KW; ++kw) {
          const V xv = A::load(tile + i * pp.Wp + kw);
#pragma GCC unroll 5
          for (int kh = 0; kh < KH; ++kh)
            if (i - kh >= 0 && i - kh < R) acc[i - kh] = A::fmadd(wv[kh * KW + kw], xv, acc[i - kh]);
        }
      const index_t cols = min_i(L, s.OW - ow0);
      T* yt = y + oh0 * s.OW + ow0;
      if (cols == L) {
#pragma GCC unroll 8
        for (int r = 0; r < rows; ++r) A::store(yt + r * s.OW, acc[r]);
      } else {
        const typename A::M m = A::first(cols);
#pragma GCC unroll 8
        for (int r = 0; r < rows; ++r) A::store(m, yt + r * s.OW, acc[r]);
      }
    }
  }
}

// One output plane (see dw_forward_plane_impl), by the vector kernel of its kernel size.
template <typename T>
void dw_forward_plane_avx512(const ConvShape& s, const PaddedPlane& pp, const PlaneWindow& win, const T* x, T* xp,
                             const T* w, T bias, T* y) {
  if (x) copy_window(s, pp, win, x, xp);
  if (s.KH == 3) return dw_forward_dense_avx512<T, 3, 3>(s, pp, xp, w, bias, y);
  return dw_forward_dense_avx512<T, 5, 5>(s, pp, xp, w, bias, y);
}

// dw (KH x KW) of output channel co (input channel ci) at stride_w 1: the sum over images, rows
// and L-column steps v of dy * x, the lanes summed at the end (a fixed order: any thread count
// gives the same bits). masks[v*KW + kw]: the lanes
// of step v whose tap-kw input column is in the image; dy_masks[v]: the lanes inside the row.
template <typename T, int KH, int KW>
void dw_wgrad_channel_avx512(const ConvShape& s, const T* dy, const T* x, const index_t* off,
                             const typename Avx512<T>::M* masks, const typename Avx512<T>::M* dy_masks, T* dw) {
  using A = Avx512<T>;
  constexpr int L = A::L;
  const index_t steps = ceil_div(s.OW, L), dy_image = s.C_out * s.OH * s.OW, x_image = s.C_in * s.H * s.W;
  using M = typename A::M;
  index_t off_bytes[KW];  // in registers (off[] was reloaded from memory for every FMA)
  for (int kw = 0; kw < KW; ++kw) off_bytes[kw] = off[kw] * index_t(sizeof(T));
  typename A::V acc[KH * KW];
  for (int k = 0; k < KH * KW; ++k) acc[k] = A::zero();
  for (index_t n = 0; n < s.N; ++n) {
    const T* dyp = dy + n * dy_image;
    const T* xp = x + n * x_image;
    for (index_t oh = 0; oh < s.OH; ++oh) {
      // x row of tap kh, and whether it lies in the image: a row in the padding masks out all its
      // lanes (its pointer is row 0, never read)
      const T* rows[KH];
      M inside[KH];
      for (int kh = 0; kh < KH; ++kh) {
        const index_t ih = oh * s.stride_h - s.pad_t + kh * s.dil_h;
        const bool in = ih >= 0 && ih < s.H;
        rows[kh] = xp + (in ? ih : 0) * s.W;
        inside[kh] = in ? M(~0u) : M(0);
      }
      const T* dyr = dyp + oh * s.OW;
      // the dy row and the x rows that row oh + 8 is the first to read, ahead (past the plane: the
      // next channel's, harmless): 0.89-0.93x the time on MobileNetV2's 3x3 at 144 x 56 x 56, batch
      // 16 (2 threads; a control of the same code without it 1.00-1.01x; 2, 4 and 16 rows
      // 0.91-0.95x)
      constexpr index_t kAhead = 8;
      prefetch_span(dyr, kAhead * s.OW * index_t(sizeof(T)), s.OW * index_t(sizeof(T)));
      prefetch_span(xp, ((oh + kAhead) * s.stride_h - s.pad_t + (KH - 1) * s.dil_h) * s.W * index_t(sizeof(T)),
                    s.stride_h * s.W * index_t(sizeof(T)));
      // the row's sums in a copy that lives only in registers: acc[] itself, live across the loops
      // over images and rows, was stored back to memory after every FMA (0.7x the time without)
      typename A::V a[KH * KW];
#pragma GCC unroll 25
      for (int k = 0; k < KH * KW; ++k) a[k] = acc[k];
      for (index_t v = 0; v < steps; ++v) {
        const typename A::V d = A::load(dy_masks[v], dyr + v * L);
        const M* m = masks + v * KW;
        // unrolled whole: a[] indexed by constants
#pragma GCC unroll 5
        for (int kh = 0; kh < KH; ++kh) {
          // pointer arithmetic as integers: a masked lane may sit before the row (column -pad)
          const std::uintptr_t xr = reinterpret_cast<std::uintptr_t>(rows[kh] + v * L);
#pragma GCC unroll 5
          for (int kw = 0; kw < KW; ++kw) {
            const M mk = M(m[kw] & inside[kh]);
            a[kh * KW + kw] =
                A::fmadd(d, A::load(mk, reinterpret_cast<const T*>(xr + off_bytes[kw])), a[kh * KW + kw], mk);
          }
        }
      }
#pragma GCC unroll 25
      for (int k = 0; k < KH * KW; ++k) acc[k] = a[k];
    }
  }
  for (int k = 0; k < KH * KW; ++k) dw[k] = A::sum(acc[k]);
}

// Every channel of a depthwise wgrad with stride_w 1 and a KH x KW the vector kernel is
// instantiated for; channels shared among the threads, each summed alone in a fixed order.
template <typename T, int KH, int KW>
void dw_wgrad_avx512(const ConvShape& s, const T* dy, const T* x, T* dw, int nthreads) {
  using A = Avx512<T>;
  constexpr int L = A::L;
  const index_t mult = s.C_out / s.groups, steps = ceil_div(s.OW, L);
  index_t off[KW];
  std::vector<typename A::M> masks(static_cast<std::size_t>(steps * KW)), dy_masks(static_cast<std::size_t>(steps));
  for (int kw = 0; kw < KW; ++kw) off[kw] = kw * s.dil_w - s.pad_l;
  for (index_t v = 0; v < steps; ++v) {
    dy_masks[v] = 0;
    for (int kw = 0; kw < KW; ++kw) masks[v * KW + kw] = 0;
    for (int l = 0; l < L; ++l) {
      const index_t ow = v * L + l;
      if (ow >= s.OW) continue;
      dy_masks[v] |= typename A::M(1u << l);
      for (int kw = 0; kw < KW; ++kw)
        if (ow + off[kw] >= 0 && ow + off[kw] < s.W) masks[v * KW + kw] |= typename A::M(1u << l);
    }
  }
#pragma omp parallel for schedule(static) num_threads(nthreads)
  for (index_t co = 0; co < s.C_out; ++co)
    dw_wgrad_channel_avx512<T, KH, KW>(s, dy + co * s.OH * s.OW, x + (co / mult) * s.H * s.W, off, masks.data(),
                                       dy_masks.data(), dw + co * KH * KW);
}

#pragma GCC pop_options

// The choosers of the vector kernels run on every CPU, so they stay outside the AVX-512 region:
// inside it GCC may use AVX-512 instructions anywhere in a function (the sanitized build put a
// zmm store of its stack poisoning in dw_wgrad_vector's prologue, an illegal instruction on AVX2).

// Whether dw_forward_plane_avx512 serves this forward: dense 3x3 or 5x5, AVX-512 in use.
bool dw_forward_vector(const ConvShape& s) {
  return s.stride_h == 1 && s.stride_w == 1 && s.dil_h == 1 && s.dil_w == 1 &&
         ((s.KH == 3 && s.KW == 3) || (s.KH == 5 && s.KW == 5)) && std::strcmp(gemm_isa(), "avx512") == 0;
}

// Runs the vector kernel where it applies; false: the caller takes the portable path.
template <typename T>
bool dw_wgrad_vector(const ConvShape& s, const T* dy, const T* x, T* dw, int nthreads) {
  if (s.stride_w != 1 || std::strcmp(gemm_isa(), "avx512") != 0) return false;
  if (s.KH == 3 && s.KW == 3) return dw_wgrad_avx512<T, 3, 3>(s, dy, x, dw, nthreads), true;
  if (s.KH == 5 && s.KW == 5) return dw_wgrad_avx512<T, 5, 5>(s, dy, x, dw, nthreads), true;
  return false;
}

template <typename T>
void depthwise_forward(const ConvShape& s, const T* x, const T* w, const T* b, T* y, int nthreads) {
  const index_t mult = s.C_out / s.groups, KK = s.KH * s.KW;
  const PaddedPlane pp(s);
  const PlaneWindow win(s, pp);
  using PlaneFn = void (*)(const ConvShape&, const PaddedPlane&, const PlaneWindow&, const T*, T*, const T*, T, T*);
  const PlaneFn forward_plane = dw_forward_vector(s) ? PlaneFn(dw_forward_plane_avx512<T>) : PlaneFn(dw_forward_plane);
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

// Whether all n values at p are finite, in blocks over the threads.
template <typename T>
bool all_finite_parallel(const T* p, index_t n, int nthreads) {
  constexpr index_t kBlock = index_t(1) << 16;
  bool finite = true;
#pragma omp parallel for schedule(static) num_threads(nthreads) if (n > kBlock) reduction(&& : finite)
  for (index_t b = 0; b < ceil_div(n, kBlock); ++b)
    finite = finite && all_finite(p + b * kBlock, min_i(kBlock, n - b * kBlock));
  return finite;
}

// The stride-1 dgrad paths that run as a forward of dy (GEMM or depthwise) multiply dy's zero
// padding by every tap, so an Inf or NaN in w would turn border pixels NaN where the sum over
// real outputs (the reference's, PyTorch's) leaves them finite. Runs such a path (`run`) unless w
// is not all finite, and returns whether its dx stands, checking the smaller of w and dx: w
// before, or dx after (all finite: no tap met the padding as Inf or NaN), then w.
template <typename T, class Run>
bool dgrad_as_forward_stands(const ConvShape& s, const T* w, const T* dx, int nthreads, Run run) {
  const index_t w_size = s.C_out * (s.C_in / s.groups) * s.KH * s.KW, dx_size = s.N * s.C_in * s.H * s.W;
  if (w_size <= dx_size && !all_finite_parallel(w, w_size, nthreads)) return false;
  run();
  return w_size <= dx_size || all_finite_parallel(dx, dx_size, nthreads) || all_finite_parallel(w, w_size, nthreads);
}

template <typename T>
void depthwise_backward_input(const ConvShape& s, const T* dy, const T* w, T* dx, int nthreads) {
  const index_t mult = s.C_out / s.groups, KK = s.KH * s.KW;
  // at stride 1 a depthwise dgrad is a depthwise forward of dy with the flipped kernel and
  // padding d*(K-1) - pad (see dgrad_as_forward): register tiles instead of scattered adds
  if (mult == 1 && s.stride_h == 1 && s.stride_w == 1 && dgrad_as_forward_stands(s, w, dx, nthreads, [&] {
        Buffer<T> wf(s.C_out * KK);
        for (index_t c = 0; c < s.C_out; ++c)
          for (index_t k = 0; k < KK; ++k) wf.data()[c * KK + KK - 1 - k] = w[c * KK + k];
        depthwise_forward(dgrad_shape(s), dy, wf.data(), static_cast<const T*>(nullptr), dx, nthreads);
      }))
    return;
#pragma omp parallel for schedule(static) num_threads(nthreads)
  for (index_t u = 0; u < s.N * s.C_in; ++u) {
    const index_t n = u / s.C_in, c = u % s.C_in;
    T* plane = dx + u * s.H * s.W;
    fill_zero(plane, s.H * s.W);
    for (index_t m = 0; m < mult; ++m) {
      const index_t co = c * mult + m;
      dw_dgrad_plane(s, dy + (n * s.C_out + co) * s.OH * s.OW, w + co * KK, plane);
    }
  }
}

template <typename T>
void depthwise_backward_weight(const ConvShape& s, const T* dy, const T* x, T* dw, int nthreads) {
  if (dw_wgrad_vector(s, dy, x, dw, nthreads)) return;
  const index_t mult = s.C_out / s.groups, KK = s.KH * s.KW;
  // one output channel per iteration, its batch summed in order: the same result on any thread count
#pragma omp parallel for schedule(static) num_threads(nthreads)
  for (index_t co = 0; co < s.C_out; ++co) {
    T* d = dw + co * KK;
    fill_zero(d, KK);
    for (index_t n = 0; n < s.N; ++n)
      dw_wgrad_plane(s, dy + (n * s.C_out + co) * s.OH * s.OW, x + (n * s.C_in + co / mult) * s.H * s.W, d);
  }
}

// ---------------------------------------------------------------------------------------------
// the general paths
// ---------------------------------------------------------------------------------------------

// ---------------------------------------------------------------------------------------------
// forward: a GEMM that reads its B (the implicit im2col) in place from a phase-split padded image
// ---------------------------------------------------------------------------------------------

// The forward's input layout. Each input channel of an image is stored as the planes of the stride
// phases its taps use, zero-padded: plane (ph, pw) holds the padded pixels (r*sh + ph, c*sw + pw),
// r < Hq, c < Wq. Output pixel (oh, ow) is then GEMM column q = oh*Wq + ow of its image, and tap
// (ci, kh, kw) = depth k reads element q + off[k]: row k of a panel of NR consecutive columns is NR
// consecutive elements, which the micro-kernel reads where they lie, so nothing is packed. The
// price is Wq - OW junk columns per output row, computed and dropped (2 of 226 for a 3x3 layer at
// 224, 2 of 9 at 7). A pointwise layer (1x1, stride 1, no padding) is its own layout: x is read as
// it lies and no copy is made.
struct FlatLayout {
  bool identity;           // pointwise: x itself
  index_t Hq, Wq, plane;   // one phase plane
  index_t chan;            // elements per channel (its phase planes)
  index_t image;           // elements per image: channels, then zeros the last panel may over-read
  index_t rows;            // OH*Wq: the columns of an image that hold output pixels (or junk)
  index_t cols;            // rows rounded up to whole NR panels: GEMM columns per image
  index_t in_place;        // columns q < in_place start a panel whose NR-wide rows lie in the image
  std::vector<index_t> phases;  // the phases used, as ph*sw + pw, in plane order
  std::vector<index_t> off;     // B row offset of depth k = (ci*KH + kh)*KW + kw of one group
};

FlatLayout flat_layout(const ConvShape& s, index_t NR) {
  FlatLayout f;
  f.identity = is_pointwise(s);
  f.Hq = f.identity ? s.H : s.OH + (s.KH - 1) * s.dil_h / s.stride_h;
  f.Wq = f.identity ? s.W : s.OW + (s.KW - 1) * s.dil_w / s.stride_w;
  f.plane = f.Hq * f.Wq;
  const index_t KK = s.KH * s.KW, Cig = s.C_in / s.groups;
  std::vector<index_t> slot(static_cast<std::size_t>(s.stride_h * s.stride_w), -1), tap(static_cast<std::size_t>(KK));
  for (index_t kh = 0; kh < s.KH; ++kh)
    for (index_t kw = 0; kw < s.KW; ++kw) {
      const index_t rh = kh * s.dil_h, rw = kw * s.dil_w;
      const index_t phase = (rh % s.stride_h) * s.stride_w + rw % s.stride_w;
      if (slot[phase] < 0) {
        slot[phase] = static_cast<index_t>(f.phases.size());
        f.phases.push_back(phase);
      }
      tap[kh * s.KW + kw] = slot[phase] * f.plane + (rh / s.stride_h) * f.Wq + rw / s.stride_w;
    }
  f.chan = static_cast<index_t>(f.phases.size()) * f.plane;
  f.rows = s.OH * f.Wq;
  f.cols = round_up(f.rows, NR);
  // the last panel of the last channel reads at most Wq + NR elements past the channels (see
  // in_place): a copy carries that many zeros; x itself cannot, so panels near its end are packed
  f.image = f.identity ? s.C_in * f.plane : round_up(s.C_in * f.chan + f.Wq + NR, 16);
  f.in_place = f.identity ? f.plane - NR + 1 : f.cols;
  f.off.assign(static_cast<std::size_t>(Cig * KK + kPrefetchRows), 0);  // the micro-kernel prefetches ahead
  for (index_t ci = 0; ci < Cig; ++ci)
    for (index_t k = 0; k < KK; ++k) f.off[ci * KK + k] = ci * f.chan + tap[k];
  return f;
}

// The phase planes of one channel (H x W) into dst (f.chan elements).
template <typename T>
void flat_fill_channel(const ConvShape& s, const FlatLayout& f, const T* xc, T* dst) {
  const index_t sh = s.stride_h, sw = s.stride_w;
  for (std::size_t sl = 0; sl < f.phases.size(); ++sl) {
    const index_t ph = f.phases[sl] / sw, pw = f.phases[sl] % sw;
    // plane column c reads input column iw = c*sw + o: inside the image for c in [c0, c1)
    const index_t o = pw - s.pad_l;
    const index_t c0 = min_i(f.Wq, o >= 0 ? 0 : ceil_div(-o, sw));
    const index_t c1 = max_i(c0, min_i(f.Wq, o >= s.W ? 0 : (s.W - 1 - o) / sw + 1));
    T* d = dst + static_cast<index_t>(sl) * f.plane;
    for (index_t r = 0; r < f.Hq; ++r, d += f.Wq) {
      const index_t ih = r * sh + ph - s.pad_t;
      if (ih < 0 || ih >= s.H) {
        fill_zero(d, f.Wq);
        continue;
      }
      const T* src = xc + ih * s.W + o;
      for (index_t c = 0; c < c0; ++c) d[c] = T(0);
      if (sw == 1) {
        std::memcpy(d + c0, src + c0, static_cast<std::size_t>(c1 - c0) * sizeof(T));
      } else {
        for (index_t c = c0; c < c1; ++c) d[c] = src[c * sw];
      }
      for (index_t c = c1; c < f.Wq; ++c) d[c] = T(0);
    }
  }
}

// Channel c of one image (x_image: C_in x H x W) into its flat copy dst (f.image elements); the
// last channel's job also zeroes the slack after the channels, which the last row's junk columns
// read (the forward drops what they give; wgrad multiplies them by dy's zeros).
template <typename T>
void flat_fill_job(const ConvShape& s, const FlatLayout& f, const T* x_image, T* dst, index_t c) {
  flat_fill_channel(s, f, x_image + c * s.H * s.W, dst + c * f.chan);
  if (c == s.C_in - 1) fill_zero(dst + s.C_in * f.chan, f.image - s.C_in * f.chan);
}

// B of the forward GEMM read in place from the flat layout; GEMM column j is column j % cols of
// image j / cols. Panels that would read past an image (x itself, pointwise) are packed instead.
template <typename T>
struct FlatB {
  static constexpr bool kInPlace = true;
  const T* x;  // the group's first channel in the first image
  const FlatLayout* f;
  const index_t* off;  // = f->off: B row p of a panel at in_place(j) + off[p]
  const T* in_place(index_t j) const {
    const index_t img = j / f->cols, q = j - img * f->cols;
    return q < f->in_place ? x + img * f->image + q : nullptr;
  }
  void operator()(const MicroKernel<T>& uk, index_t pc, index_t kcb, index_t j0, index_t nb, T* dst) const {
    const int NR = uk.nr;
    for (index_t jr = 0; jr < nb; jr += NR) {
      const index_t j = j0 + jr, img = j / f->cols, q = j - img * f->cols;
      if (q < f->in_place) continue;
      const index_t lanes = max_i(0, min_i(NR, f->rows - q));
      T* d = dst + jr * kcb;
      for (index_t p = 0; p < kcb; ++p) {
        const T* src = x + img * f->image + off[pc + p] + q;
        for (index_t l = 0; l < lanes; ++l) d[p * NR + l] = src[l];
        for (index_t l = lanes; l < NR; ++l) d[p * NR + l] = T(0);
      }
    }
  }
};

// One packed B panel of CompactFlatB as runs of lanes: in vector v of a row, run k fills the lanes
// of mask[v][k] from src + at[v][k] + lane (src = that row's start in the flat layout): the lanes
// of a run are consecutive pixels of one output row, consecutive in the layout too.
struct PanelRuns {
  static constexpr int kMaxV = kMaxNR / 8;  // vectors per panel row: fp64 has 8 lanes
  int vectors;
  int count[kMaxV];
  std::int32_t at[kMaxV][16];
  std::uint16_t mask[kMaxV][16];
};

// Rows [0, kcb) of one packed B panel (NR = runs.vectors vectors of L lanes): row p from the
// layout row at x + off[p], each vector assembled by masked loads, one per run, then stored whole.
// AVX-512 only: compact_forward requires the "avx512" kernel set.
#pragma GCC push_options
#pragma GCC target("avx512f")
template <typename T>
void pack_runs_avx512(const T* x, const index_t* off, index_t kcb, const PanelRuns& runs, T* d) {
  constexpr int L = 64 / sizeof(T);
  for (index_t p = 0; p < kcb; ++p) {
    const T* src = x + off[p];
    for (int v = 0; v < runs.vectors; ++v, d += L) {
      if constexpr (sizeof(T) == 4) {
        __m512 acc = _mm512_setzero_ps();
        for (int k = 0; k < runs.count[v]; ++k)
          acc = _mm512_mask_loadu_ps(acc, static_cast<__mmask16>(runs.mask[v][k]), src + runs.at[v][k]);
        _mm512_storeu_ps(d, acc);
      } else {
        __m512d acc = _mm512_setzero_pd();
        for (int k = 0; k < runs.count[v]; ++k)
          acc = _mm512_mask_loadu_pd(acc, static_cast<__mmask8>(runs.mask[v][k]), src + runs.at[v][k]);
        _mm512_storeu_pd(d, acc);
      }
    }
  }
}
#pragma GCC pop_options

// B of the forward GEMM without junk columns: GEMM column j is output pixel j % P of image j / P,
// whose row p lies at x + img*image + oh*Wq + ow + off[p] in the flat layout; every panel is packed
// from there (runs of a row's pixels, AVX-512). See compact_forward for when this beats reading B
// in place.
template <typename T>
struct CompactFlatB {
  const T* x;  // the group's first channel in the first image (of the layout)
  const FlatLayout* f;
  const index_t* off;  // = f->off
  index_t P, OW;
  void operator()(const MicroKernel<T>& uk, index_t pc, index_t kcb, index_t j0, index_t nb, T* dst) const {
    constexpr int L = 64 / sizeof(T);
    const int NR = uk.nr;
    PanelRuns runs;
    runs.vectors = NR / L;
    index_t img = j0 / P, pix = j0 - img * P, oh = pix / OW, ow = pix - oh * OW;
    for (index_t jr = 0; jr < nb; jr += NR) {
      const int lanes = static_cast<int>(min_i(NR, nb - jr));
      index_t next = -1;  // the layout offset that would continue the current run
      for (int v = 0; v < runs.vectors; ++v) runs.count[v] = 0;
      for (int l = 0; l < lanes; ++l) {
        const int v = l / L, lane = l % L;
        const index_t at = img * f->image + oh * f->Wq + ow;
        if (lane == 0 || at != next) {  // a new run: at lane `lane` of vector v
          const int k = runs.count[v]++;
          runs.at[v][k] = static_cast<std::int32_t>(at - lane);
          runs.mask[v][k] = 0;
        }
        runs.mask[v][runs.count[v] - 1] |= static_cast<std::uint16_t>(1u << lane);
        next = at + 1;
        if (++ow == OW) {
          ow = 0;
          if (++oh == P / OW) {
            oh = 0;
            ++img;
          }
        }
      }
      pack_runs_avx512(x, off + pc, kcb, runs, dst + jr * kcb);
    }
  }
};

// C of the forward GEMM: row co, column j -> y[image j / cols][co][oh][ow] with
// q = j % cols = oh*Wq + ow; columns with oh >= OH or ow >= OW are junk and dropped. The compact
// forward's columns (P pixels per image, no junk) are the case OH = 1, OW = Wq = cols = P.
template <typename T>
struct FlatC {
  T* y;  // the group's first output channel in the first image
  index_t image, P, OH, OW, Wq, cols;  // image = C_out*P, P = OH*OW
  // Direct when the tile's columns are contiguous in y: within one output row, or, in a layout
  // without junk columns (Wq == OW: pointwise layers), anywhere within the image's pixels.
  T* tile(index_t i, index_t j, index_t n, index_t& ld) const {
    const index_t img = j / cols, q = j - img * cols, oh = q / Wq, ow = q - oh * Wq;
    ld = P;
    const bool contiguous = Wq == OW ? q + n <= P : oh < OH && ow + n <= OW;
    return contiguous ? y + img * image + i * P + oh * OW + ow : nullptr;
  }
  // Calls run(row pointer in y of C row i at column j + jj, jj, len) for each run of columns
  // [j, j+n) along one layout row, cut at the row's last output column: contiguous in y. Junk
  // columns and rows are left out.
  template <class Run>
  void runs(index_t i, index_t j, index_t n, Run run) const {
    index_t img = j / cols, q = j - img * cols;
    for (index_t jj = 0; jj < n;) {
      const index_t oh = q / Wq, ow = q - oh * Wq;
      const index_t len = min_i(n - jj, min_i(Wq - ow, cols - q));  // to the layout row's end
      if (oh < OH && ow < OW) run(y + img * image + i * P + oh * OW + ow, jj, min_i(len, OW - ow));
      jj += len;
      q += len;
      if (q == cols) {
        q = 0;
        ++img;
      }
    }
  }
  // Columns [j, j+n) of C rows [i, i+m), held at t (ld ldt), into y.
  void scatter(index_t i, index_t j, int m, int n, const T* t, int ldt, bool accumulate) const {
    runs(i, j, n, [&](T* dst, index_t jj, index_t len) {
      const T* src = t + jj;
      for (int r = 0; r < m; ++r, dst += P, src += ldt) {
        if (accumulate) {
          for (index_t l = 0; l < len; ++l) dst[l] += src[l];
        } else {
          for (index_t l = 0; l < len; ++l) dst[l] = src[l];
        }
      }
    });
  }
  // rows [i0, i1) of columns [j0, j0+nb) += bias (per row): while they are still in cache
  void add_bias(index_t i0, index_t i1, index_t j0, index_t nb, const T* bias) const {
    runs(i0, j0, nb, [&](T* dst, index_t, index_t len) {
      for (index_t i = i0; i < i1; ++i, dst += P)
        for (index_t l = 0; l < len; ++l) dst[l] += bias[i];
    });
  }
};

// The flat copies of one chunk of images hold at most this many bytes (at least one image).
constexpr index_t kFlatChunkBytes = index_t(4) << 20;
// wgrad takes the flat path for weights smaller than this, pointwise ones smaller than 1 MiB
// (see conv2d_backward_weight).
constexpr index_t kFlatWgradMaxBytes = index_t(4) << 20;

// How gemm_forward reads its weight, unpacked: row i, depth p of group grp's A (C_out/groups x Kg)
// is w[grp*group + off[p] + i*lda].
template <typename T>
struct WeightA {
  const T* w;
  index_t group, lda;
  const index_t* off;
};

// A staged forward computes each unit's C into a per-thread block (row-major, the unit's columns
// wide) and copies it into y once, after the full depth. A tile that straddles output rows would
// otherwise be computed into a local tile and scattered after every depth block, and in a layout
// with junk columns most tiles of a small image straddle (59% of them at OW = 56, all at OW < NR).
// The block holds at most kStageBytes: units are cut into fewer row panels when need be.
constexpr index_t kStageBytes = index_t(256) << 10;

template <typename T>
Tiling stage_tiling(const MicroKernel<T>& uk, index_t M, index_t N, int nthreads, index_t units_outside) {
  Tiling t = tile_product(uk, M, N, nthreads, units_outside);
  const index_t cap = max_i(1, kStageBytes / (uk.mr * t.nb * index_t(sizeof(T))));
  if (t.panels > cap) {
    t.panels = cap;
    t.row_units = ceil_div(ceil_div(M, uk.mr), cap);
  }
  return t;
}

// Whether the forward packs B without junk columns (CompactFlatB) instead of reading it in place
// with them (FlatB): where the junk is at least 30% of the pixels and enough rows share each packed
// element to pay for packing it. Read in place, B's rows overlap (the taps of one channel) and stay
// in L1, while a packed block streams from L2. Measured, single thread, compact vs in place (time):
// 8x8 images, 64 channels (96 columns per 64 pixels): forward 0.71x, dgrad 0.85x; 7x7, 512 channels
// (64 per 49): 0.93x and 0.92x at batch 16, 1.03x at batch 1; 16x16, 32 channels (288 per 256)
// 1.11x; LeNet's conv2 (160 per 100, 16 channels) 1.26x; 14x14 pointwise (224 per 196) 1.13x.
// (The packing offsets are int32: a chunk's layout must hold fewer elements.)
inline bool compact_forward(const FlatLayout& f, index_t P, index_t Cog, index_t chunk) {
  return std::strcmp(gemm_isa(), "avx512") == 0 && Cog >= 64 && 10 * f.cols >= 13 * P &&
         chunk * f.image < (index_t(1) << 31);
}

template <typename T>
void gemm_forward(const ConvShape& s, const T* x, const WeightA<T>& wa, const T* b, T* y, int nthreads) {
  const index_t G = s.groups, Cig = s.C_in / G, Cog = s.C_out / G, Kg = Cig * s.KH * s.KW;
  const index_t P = s.OH * s.OW, HW = s.H * s.W;
  const bool crowded = l1_crowded<T>(wa.lda, wa.off, Kg);
  // Read in place, the weight costs the micro-kernel a chain of address adds per row of A, so the
  // few-rows kernel beats the general one whatever the rows: 8x48 against 14x32 (AVX-512 fp32,
  // single thread) 0.86-0.92x the time with 64 output channels, 0.92-0.96x with 128 to 256. Unless
  // its wider panels pad the pixels much more: a 7x7 image's 49 take 96 columns against 64, and
  // resnet50_3x3_512_7_b1's dgrad ran in 0.77-0.82x the time on the general kernel. A packed
  // weight (crowded) takes the kernel that suits its rows: 8x48 was 1.06-1.16x there.
  const MicroKernel<T>& uk = crowded ? micro_kernel<T>(Cog) : micro_kernel_few_rows<T>(s.N * P);
  const FlatLayout f = flat_layout(s, uk.nr);
  const index_t chunk =
      f.identity ? s.N : max_i(1, min_i(s.N, kFlatChunkBytes / (f.image * index_t(sizeof(T)))));
  Buffer<T> xq(f.identity ? 0 : chunk * f.image);  // shared: the flat copies of one chunk of images
  const bool compact = compact_forward(f, P, Cog, chunk);
  const index_t per_image = compact ? P : f.cols;  // GEMM columns per image
  // tiles that straddle output rows (junk between them) or images (compact) are staged
  const bool staged = compact ? P % uk.nr != 0 : f.Wq != s.OW;
#pragma omp parallel num_threads(nthreads)
  {
    Buffer<T> bbuf(packed_b_size(uk));  // per thread: the panels a source cannot serve in place
    Buffer<T> stage(0);                 // per thread, when staged: one unit's C (see stage_tiling)
    for (index_t n0 = 0; n0 < s.N; n0 += chunk) {
      const index_t imgs = min_i(chunk, s.N - n0);
      if (!f.identity) {
#pragma omp for schedule(static)
        for (index_t job = 0; job < imgs * s.C_in; ++job) {
          const index_t img = job / s.C_in;
          flat_fill_job(s, f, x + (n0 + img) * s.C_in * HW, xq.data() + img * f.image, job % s.C_in);
        }
      }
      const T* base = f.identity ? x + n0 * f.image : xq.data();
      const Tiling t = staged ? stage_tiling(uk, Cog, imgs * per_image, nthreads, G)
                              : tile_product(uk, Cog, imgs * per_image, nthreads, G);
      if (staged && stage.size() < t.panels * uk.mr * t.nb) stage.resize(t.panels * uk.mr * t.nb);
#pragma omp for schedule(dynamic, 1)
      for (index_t u = 0; u < G * t.units(); ++u) {
        const index_t grp = u / t.units(), rest = u % t.units();
        const index_t p0 = (rest / t.col_units) * t.panels, p1 = min_i(p0 + t.panels, ceil_div(Cog, uk.mr));
        const index_t j0 = (rest % t.col_units) * t.nb, nb = min_i(t.nb, imgs * per_image - j0);
        const index_t i0 = p0 * uk.mr, i1 = min_i(Cog, p1 * uk.mr);
        const InPlaceA<T> a{wa.w + grp * wa.group, wa.lda, wa.off, Cog, crowded};
        const T* xg = base + grp * Cig * f.chan;
        T* yg = y + (n0 * s.C_out + grp * Cog) * P;
        const auto product = [&](const auto& pack_b, const auto& cmap) {
          if (staged) {  // the unit's C in the staging block, then into y at once
            gemm_unit(uk, a, Kg, p0, p1, pack_b, j0, nb, PlainC<T>{stage.data(), nb, i0, j0}, bbuf.data(), false);
            cmap.scatter(i0, j0, static_cast<int>(i1 - i0), static_cast<int>(nb), stage.data(), static_cast<int>(nb),
                         false);
          } else {
            gemm_unit(uk, a, Kg, p0, p1, pack_b, j0, nb, cmap, bbuf.data(), false);
          }
          if (b) cmap.add_bias(i0, i1, j0, nb, b + grp * Cog);
        };
        if (compact)
          product(CompactFlatB<T>{xg, &f, f.off.data(), P, s.OW}, FlatC<T>{yg, s.C_out * P, P, 1, P, P, P});
        else
          product(FlatB<T>{xg, &f, f.off.data()}, FlatC<T>{yg, s.C_out * P, P, s.OH, s.OW, f.Wq, f.cols});
      }
    }
  }
}

// dgrad at stride 1 is a stride-1 convolution of dy: dx[c, ih, iw] = sum over o, kh, kw of
// dy[o, ih - pad' + kh'*d] * w'[c, o, kh', kw'] with kh' = KH-1-kh (the flipped kernel) and
// pad' = d*(KH-1) - pad (negative when the padding exceeds the kernel span: the bounds checks of
// im2col handle any offset). Sharing the forward's kernels beats GEMM + col2im: the depth is
// C_out*KH*KW instead of C_out, and nothing is scattered.
template <typename T>
void dgrad_as_forward(const ConvShape& s, const T* dy, const T* w, T* dx, int nthreads) {
  const index_t Cig = s.C_in / s.groups, Cog = s.C_out / s.groups, KK = s.KH * s.KW;
  // The flipped, transposed weight w'[ci][co][k'] = w[co][ci][KK-1-k'] is read where it lies: row ci
  // is KK elements after row ci-1, depth p = co*KK + k' (the order of dy's channels and taps in the
  // flat layout) at offset co*Cig*KK + KK-1-k'. Materialising w' was a third of
  // resnet50_1x1_1024_256_14_b1's dgrad (a transpose that writes one element per cache line).
  std::vector<index_t> off(static_cast<std::size_t>(Cog * KK));
  for (index_t co = 0; co < Cog; ++co)
    for (index_t k = 0; k < KK; ++k) off[co * KK + k] = co * Cig * KK + KK - 1 - k;
  const ConvShape t = dgrad_shape(s);
  if (winograd_applies(t, sizeof(T)) && winograd_forward(t, dy, w, KK, off.data(), static_cast<const T*>(nullptr), dx, nthreads))
    return;
  gemm_forward(t, dy, WeightA<T>{w, Cog * Cig * KK, KK, off.data()}, static_cast<const T*>(nullptr), dx, nthreads);
}

// dgrad at stride > 1: per image, cols (Kg x pixels) = W_g^T dy_g in chunks of nbc pixels, each
// scattered into dx by col2im. Units are (image, group, channel range): a unit owns its dx planes,
// so no two threads ever add into the same pixel.
template <typename T>
void dgrad_col2im(const ConvShape& s, const T* dy, const T* w, T* dx, int nthreads) {
  const MicroKernel<T>& uk = micro_kernel<T>();
  const index_t G = s.groups, Cig = s.C_in / G, Cog = s.C_out / G, KK = s.KH * s.KW, Kg = Cig * KK;
  const index_t P = s.OH * s.OW, HW = s.H * s.W;
  const Geo g = geometry(s);
  const index_t rows = round_up(Kg, uk.mr) + uk.mr;  // a unit's panels cover its rows plus ragged ends
  const index_t nbc = min_i(round_up(P, uk.nr), max_i(uk.nr, (index_t(65536) / rows) / uk.nr * uk.nr));
  const index_t splits = (s.N * G >= 2 * nthreads || nthreads == 1) ? 1 : min_i(Cig, ceil_div(2 * nthreads, s.N * G));
  const index_t asize = packed_a_size(uk, Kg, Cog), ajobs = pack_a_jobs(uk, Kg, Cog);
  Buffer<T> ap(G * asize);  // shared: W_g^T packed, (Kg x Cog) per group
  const index_t units = s.N * G * splits;
#pragma omp parallel num_threads(static_cast<int>(min_i(nthreads, units)))
  {
#pragma omp for schedule(static)
    for (index_t job = 0; job < G * ajobs; ++job)
      pack_a_job(uk, w + (job / ajobs) * Cog * Kg, index_t(1), Kg, Kg, Cog, ap.data() + (job / ajobs) * asize,
                 job % ajobs);
    Buffer<T> bbuf(packed_b_size(uk));  // per thread: one packed block of dy
    Buffer<T> cols(rows * nbc);         // per thread: one chunk of cols
    std::vector<PixelRun> runs(static_cast<std::size_t>(nbc));
#pragma omp for schedule(dynamic, 1)
    for (index_t u = 0; u < units; ++u) {
      const index_t n = u / (G * splits), grp = (u / splits) % G, part = u % splits;
      const index_t c0 = part * Cig / splits, c1 = (part + 1) * Cig / splits;
      const index_t k0 = c0 * KK, k1 = c1 * KK, p0 = k0 / uk.mr, p1 = ceil_div(k1, uk.mr);
      T* dxg = dx + (n * s.C_in + grp * Cig) * HW;
      fill_zero(dxg + c0 * HW, (c1 - c0) * HW);
      const StridedB<T> pack_b{dy + (n * s.C_out + grp * Cog) * P, P, index_t(1)};
      for (index_t q0 = 0; q0 < P; q0 += nbc) {
        const index_t len = min_i(nbc, P - q0);
        const PlainC<T> cmap{cols.data(), nbc, p0 * uk.mr, q0};
        gemm_unit(uk, PrepackedA<T>{ap.data() + grp * asize, Kg}, Cog, p0, p1, pack_b, q0, len, cmap, bbuf.data(),
                  false);
        const int count = pixel_runs(g, P, q0, len, runs.data());
        Tap tap = tap_of(g, k0);
        for (index_t k = k0; k < k1; ++k, tap.next(g)) {
          const T* src = cols.data() + (k - p0 * uk.mr) * nbc;
          for (int i = 0; i < count; ++i) col2im_run(dxg + tap.c * HW, g, tap.kh, tap.kw, runs[i], src + runs[i].lane);
        }
      }
    }
  }
}

// wgrad: dW_g (Cog x Kg) = sum over images and pixels of dy_g cols_g^T, in chunks of at most KC
// pixels within an image. Units are (group, column block, reduction slice); the slices (S of them,
// set by the shape alone) give small layers parallelism, each into its own copy of dw, summed in
// slice order at the end. Every element is thus reduced in one fixed order on any thread count.
template <typename T>
void gemm_backward_weight(const ConvShape& s, const T* dy, const T* x, T* dw, int nthreads) {
  const MicroKernel<T>& uk = micro_kernel<T>();
  const index_t G = s.groups, Cig = s.C_in / G, Cog = s.C_out / G, Kg = Cig * s.KH * s.KW;
  const index_t P = s.OH * s.OW, HW = s.H * s.W, R = s.N * P;
  const Geo g = geometry(s);
  const index_t col_units = ceil_div(Kg, uk.nc), cw = round_up(ceil_div(Kg, col_units), uk.nr);
  const index_t base = G * col_units;
  const index_t S = base >= 8 ? 1 : max_i(1, min_i(ceil_div(8, base), R / 4096));
  const index_t dw_size = s.C_out * Kg;
  Buffer<T> partial(S > 1 ? S * dw_size : 0);  // shared: one dw per reduction slice
  T* target = S > 1 ? partial.data() : dw;
  const index_t units = base * S;
#pragma omp parallel num_threads(static_cast<int>(min_i(nthreads, units)))
  {
    Buffer<T> abuf(packed_a_size(uk, Cog, uk.kc));  // per thread: one packed chunk of dy
    Buffer<T> bbuf(packed_b_size(uk));              // per thread: one packed block of cols^T
#pragma omp for schedule(dynamic, 1)
    for (index_t u = 0; u < units; ++u) {
      const index_t grp = u / (col_units * S), cu = (u / S) % col_units, slice = u % S;
      const index_t j0 = cu * cw, nb = min_i(cw, Kg - j0);
      const index_t r0 = slice * R / S, r1 = (slice + 1) * R / S;
      const PlainC<T> cmap{target + slice * dw_size + grp * Cog * Kg, Kg};
      if (r0 == r1) {  // an empty slice still owns its (zero) share of the sum
        for (index_t co = 0; co < Cog; ++co) fill_zero(target + slice * dw_size + (grp * Cog + co) * Kg + j0, nb);
      }
      for (index_t r = r0; r < r1;) {
        const index_t n = r / P, q0 = r - n * P, len = min_i(min_i(uk.kc, P - q0), r1 - r);
        pack_a(uk, dy + (n * s.C_out + grp * Cog) * P + q0, P, index_t(1), Cog, len, abuf.data());
        const Im2colTransposedB<T> pack_b{x + (n * s.C_in + grp * Cig) * HW, HW, P, q0, g};
        gemm_unit(uk, PrepackedA<T>{abuf.data(), Cog}, len, 0, ceil_div(Cog, uk.mr), pack_b, j0, nb, cmap, bbuf.data(),
                  r > r0);
        r += len;
      }
    }
    if (S > 1) {
#pragma omp for schedule(static)
      for (index_t e = 0; e < dw_size; ++e) {
        T sum = partial.data()[e];
        for (index_t sl = 1; sl < S; ++sl) sum += partial.data()[sl * dw_size + e];
        dw[e] = sum;
      }
    }
  }
}

// wgrad on the flat layout: dW_g^T (Kg x Cog) = sum over images of cols_g (Kg x P pixels) times
// dy_g^T (P x Cog). The micro-kernel reads row k of cols in place from the image's flat copy (at
// off[k], as the forward does) as its A rows, pixel p at column pix[p] = oh*Wq + ow of the layout:
// the junk columns are skipped, not multiplied by zeros (they were 20% of the depth on 8x8 images,
// and left the product 0.8-0.9x its time there). The depth runs over a chunk's pixels image after
// image (pix covers the chunk), so that one kernel call spans several small images (ResNet-20's
// 3x3x64 at 8x8: 0.71-0.87x the time of a 64-step call per image). dy^T is packed per image into
// NR-channel panels, each panel's images one after another.
// Units (group, channel panel, run of tap panels) each own a block of dW^T and reduce it over the
// images in order: one fixed order on any thread count. Reading only the pixels each tap meets,
// it needs no finite x (the dot path does, and leaves such an x to this one).
// Few output channels (16 against 32-wide panels) take the few-columns kernel, with the rows of
// dW^T in tap-major order (tap, ci): a panel is then MR channels of one tap, rows one channel
// apart in the flat copy (one stride: InPlaceA's form, no row pointers), when MR divides C_in/groups.
template <typename T>
void flat_backward_weight(const ConvShape& s, const T* dy, const T* x, T* dw, int nthreads) {
  const index_t G = s.groups, Cig = s.C_in / G, Cog = s.C_out / G, Kg = Cig * s.KH * s.KW, KK = s.KH * s.KW;
  // tap-major with the few-columns kernel when that is the kernel for Cog columns and its MR
  // divides C_in/groups (so no panel straddles two taps)
  const MicroKernel<T>& few = micro_kernel_few_cols<T>();
  const bool tap_major = &micro_kernel_few_cols<T>(Cog) == &few && Cig % few.mr == 0;
  const MicroKernel<T>& uk = tap_major ? few : micro_kernel<T>();
  const int MR = uk.mr, NR = uk.nr;
  const index_t P = s.OH * s.OW, HW = s.H * s.W;
  const FlatLayout f = flat_layout(s, NR);
  // ldt: dW^T rows one cache line longer than the panels, so that the MR rows of a tile (often a
  // power of two apart otherwise) do not all fall into the same few L1 sets
  const index_t cpanels = ceil_div(Cog, NR), kpanels = ceil_div(Kg, MR), ldt = cpanels * NR + 64 / index_t(sizeof(T));
  const index_t per_image = (f.identity ? 0 : f.image) + G * cpanels * NR * P;
  const index_t chunk = max_i(1, min_i(s.N, kFlatChunkBytes / (per_image * index_t(sizeof(T)))));
  const index_t dy_panel = chunk * P * NR;         // dy^T of a panel: [image][pixel][NR], the chunk's depth
  Buffer<T> xq(f.identity ? 0 : chunk * f.image);  // shared: flat copies of one chunk of images
  Buffer<T> dyq(G * cpanels * dy_panel);             // shared: their packed dy^T, [group][panel]
  Buffer<T> dwt(G * kpanels * MR * ldt);             // shared: dW^T, rows and columns rounded up
  // depth step q of a chunk (pixel q % P of image q / P): its column in the images' flat copies, so
  // that one kernel call runs over the pixels of several small images
  std::vector<index_t> pix(static_cast<std::size_t>(chunk * P)), along(static_cast<std::size_t>(kMaxKC));
  for (index_t img = 0, q = 0; img < chunk; ++img)
    for (index_t oh = 0; oh < s.OH; ++oh)
      for (index_t ow = 0; ow < s.OW; ++ow) pix[q++] = img * f.image + oh * f.Wq + ow;
  for (index_t p = 0; p < kMaxKC; ++p) along[p] = p;  // dy's pixels, for pack_b
  // runs of tp tap panels: about four units per thread
  const index_t runs = min_i(kpanels, max_i(1, ceil_div(4 * index_t(nthreads), G * cpanels)));
  const index_t tp = ceil_div(kpanels, runs), units = G * cpanels * ceil_div(kpanels, tp);
#pragma omp parallel num_threads(nthreads)
  for (index_t n0 = 0; n0 < s.N; n0 += chunk) {
    const index_t imgs = min_i(chunk, s.N - n0);
    if (!f.identity) {
#pragma omp for schedule(static)
      for (index_t job = 0; job < imgs * s.C_in; ++job) {
        const index_t img = job / s.C_in;
        flat_fill_job(s, f, x + (n0 + img) * s.C_in * HW, xq.data() + img * f.image, job % s.C_in);
      }
    }
#pragma omp for schedule(static)
    for (index_t job = 0; job < imgs * G * cpanels; ++job) {  // dy^T panels
      const index_t img = job / (G * cpanels), gp = job % (G * cpanels), c0 = (gp % cpanels) * NR;
      const index_t chans = min_i(NR, Cog - c0);
      const T* src = dy + ((n0 + img) * s.C_out + (gp / cpanels) * Cog + c0) * P;
      T* dst = dyq.data() + gp * dy_panel + img * P * NR;
      // blocks of kMaxKC pixels transposed by the kernel set's pack_b (a plain walk along each
      // channel wrote one element per cache line: 19% of resnet50_conv1's wgrad)
      for (index_t p0 = 0; p0 < P; p0 += kMaxKC)
        uk.pack_b(min_i(kMaxKC, P - p0), src + p0, P, along.data(), static_cast<int>(chans), dst + p0 * NR);
    }
    const T* base = f.identity ? x + n0 * f.image : xq.data();
#pragma omp for schedule(dynamic, 1)
    for (index_t u = 0; u < units; ++u) {
      const index_t grp = u / (cpanels * ceil_div(kpanels, tp)), rest = u % (cpanels * ceil_div(kpanels, tp));
      const index_t cp = rest % cpanels, k_first = (rest / cpanels) * tp, k_end = min_i(kpanels, k_first + tp);
      const int n = static_cast<int>(min_i(NR, Cog - cp * NR));
      const T* xg = base + grp * Cig * f.chan;
      const T* bg = dyq.data() + (grp * cpanels + cp) * dy_panel;
      for (index_t pc = 0; pc < imgs * P; pc += uk.kc) {  // the chunk's pixels, image after image
        const index_t kcb = min_i(uk.kc, imgs * P - pc);
        const bool acc = n0 > 0 || pc > 0;
        for (index_t panel = k_first; panel < k_end; ++panel) {
          const index_t k0 = panel * MR;
          const int m = static_cast<int>(min_i(MR, Kg - k0));
          T* c = dwt.data() + (grp * kpanels * MR + k0) * ldt + cp * NR;
          if (tap_major) {  // rows k0.. = channels k0 % Cig.. of tap k0 / Cig: f.off[tap] + ci*chan
            const T* a = xg + f.off[k0 / Cig] + (k0 % Cig) * f.chan;
            uk.fn_a_offsets(kcb, a, f.chan, pix.data() + pc, bg + pc * NR, c, ldt, acc, m, n);
            continue;
          }
          // rows past Kg in a ragged panel repeat row k0: computed, then dropped
          const T* rows[kMaxMR];
          for (int i = 0; i < MR; ++i) rows[i] = xg + f.off[i < m ? k0 + i : k0];
          uk.fn_rows(kcb, rows, pix.data() + pc, bg + pc * NR, c, ldt, acc, m, n);
        }
      }
    }
  }
  // dw (C_out, Kg) = the transpose of each group's dW^T, in 16 x 64 blocks that stay in cache (a
  // plain column walk of dW^T misses on every element)
  constexpr index_t kRows = 16, kCols = 64;
  const index_t row_blocks = ceil_div(Cog, kRows);
#pragma omp parallel for schedule(static) num_threads(nthreads)
  for (index_t job = 0; job < G * row_blocks; ++job) {
    const index_t grp = job / row_blocks, co0 = (job % row_blocks) * kRows, co1 = min_i(Cog, co0 + kRows);
    const T* src = dwt.data() + grp * kpanels * MR * ldt;
    for (index_t k0 = 0; k0 < Kg; k0 += kCols)
      for (index_t co = co0; co < co1; ++co) {
        T* dst = dw + (grp * Cog + co) * Kg;
        for (index_t k = k0; k < min_i(Kg, k0 + kCols); ++k)
          dst[k] = src[(tap_major ? (k % KK) * Cig + k / KK : k) * ldt + co];
      }
  }
}

// wgrad as dot products along the pixels, for layers with few output channels:
//   dW_g[co][k] = sum over images and flat columns q of dyq[co][q] * xq[off[k] + q],
// xq an image's flat copy (the forward's layout) and dyq its dy on the same columns, zero at the
// junk ones. The dot kernel reads both along q where they lie (RA*RB FMAs per RA + RB vector
// loads), where the GEMM paths broadcast one operand and pack dy^T: with 16 output channels their
// few-columns kernel waits on loads. Measured, time against the flat path (which skips the junk
// columns; fp32, AVX-512, 2 / 1 threads): ResNet-20's 3x3x16 at 32x32 0.74x / 0.82x, LeNet's conv2
// (16 channels, 5x5x6) 1.0x. Where it does not apply it lost: 3x3x32 at 16x16 1.15-1.25x, fp64
// 1.14-1.5x, the AVX2 kernels 1.25-1.6x (none are built); and already against the flat path with
// junk columns, 64 output channels 1.05-1.22x, ResNet-50's conv1 1.38x, and LeNet's conv1 (25 taps
// x channels) 1.03x: its copies do not pay.
// The batch is cut into slices of images whose copies take at most kDotSliceBytes (an L2's
// share), fixed by the shape. Rounds of up to kDotSlots slices run as units (slice, group, run of
// output-channel tiles): a unit copies its slice and computes each of its tiles in one kernel call
// over the slice's images; then the round's slices are added to dW in order. One fixed order on
// any thread count, and a workspace of kDotSlots dW whatever the batch.
// Junk columns pair dy = 0 with real pixels: x with a non-finite value returns false (the flat
// path takes it).
constexpr index_t kDotSliceBytes = index_t(512) << 10;
constexpr index_t kDotSlots = 8;

// For an fp32 wgrad (the only one with a dot kernel; the caller checks the type).
bool dot_wgrad_applies(const ConvShape& s) {
  const index_t Kg = s.C_in / s.groups * s.KH * s.KW;
  return dot_kernel().fn && !is_pointwise(s) && s.C_out / s.groups <= 16 && Kg >= 64 && Kg <= 1024;
}

bool dot_backward_weight(const ConvShape& s, const float* dy, const float* x, float* dw, int nthreads) {
  using T = float;
  const DotKernel<T>& dk = dot_kernel();
  const int RA = dk.ra, RB = dk.rb;
  const index_t G = s.groups, Cig = s.C_in / G, Cog = s.C_out / G, Kg = Cig * s.KH * s.KW;
  const index_t P = s.OH * s.OW, HW = s.H * s.W;
  const FlatLayout f = flat_layout(s, dk.lanes);  // cols: rows rounded up to whole vectors
  const index_t CB = ceil_div(Cog, RA), KB = ceil_div(Kg, RB);
  // a slice: its images' flat copies (the group's channels) and dy rows within kDotSliceBytes
  const index_t per_image = (Cig * f.chan + Cog * f.cols) * index_t(sizeof(T));
  const index_t IB = min_i(s.N, max_i(1, kDotSliceBytes / per_image)), S = ceil_div(s.N, IB);
  const index_t slots = min_i(S, kDotSlots);
  // runs of output-channel tiles: 8 units a round where the slices are too few for them (each
  // run copies its slice's images again)
  const index_t R = min_i(CB, ceil_div(8, slots * G));
  const index_t dw_size = s.C_out * Kg;
  Buffer<T> partial(slots * dw_size);  // shared: the dW of each slice of a round
  bool finite = true;
#pragma omp parallel num_threads(static_cast<int>(min_i(nthreads, slots * G * R)))
  {
    // per thread: flat copies of a slice's images and their dy rows, zeroed once: the junk
    // columns of dyq are never written, and xq holds only finite values wherever a tile reads
    // past its group's channels
    Buffer<T> xq(IB * f.image), dyq(IB * Cog * f.cols);
    fill_zero(xq.data(), xq.size());
    fill_zero(dyq.data(), dyq.size());
    for (index_t s0 = 0; s0 < S; s0 += slots) {
      const index_t round = min_i(slots, S - s0);
#pragma omp for schedule(dynamic, 1) reduction(&& : finite)
      for (index_t u = 0; u < round * G * R; ++u) {
        const index_t slot = u / (G * R), grp = (u / R) % G, run = u % R;
        const index_t cb0 = run * CB / R, cb1 = (run + 1) * CB / R, co1 = min_i(Cog, cb1 * RA);
        const index_t n0 = (s0 + slot) * IB, imgs = min_i(IB, s.N - n0);
        for (index_t img = 0; img < imgs && finite; ++img) {
          for (index_t c = grp * Cig; c < (grp + 1) * Cig; ++c) {
            const T* xc = x + ((n0 + img) * s.C_in + c) * HW;
            finite = finite && all_finite(xc, HW);
            flat_fill_channel(s, f, xc, xq.data() + img * f.image + c * f.chan);
          }
          for (index_t co = cb0 * RA; co < co1; ++co) {
            const T* src = dy + ((n0 + img) * s.C_out + grp * Cog + co) * P;
            T* dst = dyq.data() + (img * Cog + co) * f.cols;
            for (index_t oh = 0; oh < s.OH; ++oh, src += s.OW, dst += f.Wq)
              for (index_t ow = 0; ow < s.OW; ++ow) dst[ow] = src[ow];
          }
        }
        if (!finite) continue;
        const T* xg = xq.data() + grp * Cig * f.chan;
        T* part = partial.data() + slot * dw_size + grp * Cog * Kg;
        for (index_t cb = cb0; cb < cb1; ++cb)
          for (index_t kb = 0; kb < KB; ++kb) {
            // rows past the edge repeat the last one; their sums are dropped
            const T* a[kMaxDotRows];
            const T* b[kMaxDotRows];
            for (int i = 0; i < RA; ++i) a[i] = dyq.data() + min_i(Cog - 1, cb * RA + i) * f.cols;
            for (int j = 0; j < RB; ++j) b[j] = xg + f.off[min_i(Kg - 1, kb * RB + j)];
            T sums[kMaxDotRows * kMaxDotRows];
            dk.fn(f.cols, imgs, a, Cog * f.cols, b, f.image, sums);
            for (index_t co = cb * RA; co < min_i(Cog, (cb + 1) * RA); ++co)
              for (index_t k = kb * RB; k < min_i(Kg, (kb + 1) * RB); ++k)
                part[co * Kg + k] = sums[(co - cb * RA) * RB + k - kb * RB];
          }
      }
      // every thread reads the flag between this loop's barrier and the next write to it (the
      // next round's reduction, two barriers on), so all of them leave together
      if (!finite) break;
#pragma omp for schedule(static)
      for (index_t e = 0; e < dw_size; ++e) {  // dW = ((slice 0 + slice 1) + slice 2) + ...
        T sum = s0 == 0 ? partial.data()[e] : dw[e] + partial.data()[e];
        for (index_t sl = 1; sl < round; ++sl) sum += partial.data()[sl * dw_size + e];
        dw[e] = sum;
      }
    }
  }
  return finite;
}

}  // namespace

bool conv2d_uses_winograd(const ConvShape& s, const std::string& pass, index_t elem_bytes) {
  if (is_depthwise(s)) return false;
  if (pass == "fwd") return winograd_applies(s, elem_bytes);
  if (pass == "dgrad") return s.stride_h == 1 && s.stride_w == 1 && winograd_applies(dgrad_shape(s), elem_bytes);
  if (pass == "wgrad") return winograd_wgrad_applies(s, elem_bytes);
  throw std::invalid_argument("conv2d_uses_winograd: pass must be 'fwd', 'dgrad' or 'wgrad', got '" + pass + "'");
}

bool conv2d_wgrad_uses_dot(const ConvShape& s) {
  return !is_depthwise(s) && !winograd_wgrad_applies(s, 4) && dot_wgrad_applies(s);
}

template <typename T>
void conv2d_forward(const ConvShape& s, const T* x, const T* w, const T* b, T* y, int nthreads) {
  if (is_depthwise(s)) return depthwise_forward(s, x, w, b, y, nthreads);
  const index_t Kg = s.C_in / s.groups * s.KH * s.KW;
  std::vector<index_t> off(static_cast<std::size_t>(Kg));  // the weight's rows as they lie
  for (index_t p = 0; p < Kg; ++p) off[p] = p;
  if (winograd_applies(s, sizeof(T)) && winograd_forward(s, x, w, Kg, off.data(), b, y, nthreads)) return;
  gemm_forward(s, x, WeightA<T>{w, s.C_out / s.groups * Kg, Kg, off.data()}, b, y, nthreads);
}

template <typename T>
void conv2d_backward_input(const ConvShape& s, const T* dy, const T* w, T* dx, int nthreads) {
  if (is_depthwise(s)) return depthwise_backward_input(s, dy, w, dx, nthreads);
  if (s.stride_h == 1 && s.stride_w == 1 &&
      dgrad_as_forward_stands(s, w, dx, nthreads, [&] { dgrad_as_forward(s, dy, w, dx, nthreads); }))
    return;
  dgrad_col2im(s, dy, w, dx, nthreads);
}

template <typename T>
void conv2d_backward_weight(const ConvShape& s, const T* dy, const T* x, T* dw, int nthreads) {
  if (is_depthwise(s)) return depthwise_backward_weight(s, dy, x, dw, nthreads);
  if (winograd_wgrad_applies(s, sizeof(T)) && winograd_backward_weight(s, dy, x, dw, nthreads)) return;
  if constexpr (std::is_same_v<T, float>) {  // the dot kernel is fp32 only
    if (dot_wgrad_applies(s) && dot_backward_weight(s, dy, x, dw, nthreads)) return;
  }
  // the flat path keeps all of dW^T live while it walks the images: it wins while that is a few
  // MiB at most (measured, flat vs packed time: 0.5x on ResNet-20's layers, 0.75-0.87x on VGG's
  // conv3_1 (1.2 MB), 0.71-1.1x on a 3x3x256 (2.4 MB), 4.5x on ResNet-50's 3x3x512 (9.4 MB)); a
  // pointwise layer's packed operand is a plain transpose, which wins from 1 MiB (1.1-1.4x there)
  const index_t weight_bytes = s.C_out * (s.C_in / s.groups) * s.KH * s.KW * index_t(sizeof(T));
  const index_t flat_max = is_pointwise(s) ? index_t(1) << 20 : kFlatWgradMaxBytes;
  if (weight_bytes < flat_max) return flat_backward_weight(s, dy, x, dw, nthreads);
  gemm_backward_weight(s, dy, x, dw, nthreads);
}

template <typename T>
void conv2d_backward_bias(index_t N, index_t C, index_t P, const T* dy, T* db, int nthreads) {
  // one channel per iteration, summed image by image with 16 interleaved partial sums: a fixed
  // order on any thread count, and one the compiler can vectorise
#pragma omp parallel for schedule(static) num_threads(nthreads)
  for (index_t c = 0; c < C; ++c) {
    T part[16] = {};
    for (index_t n = 0; n < N; ++n) {
      const T* row = dy + (n * C + c) * P;
      index_t i = 0;
      for (; i + 16 <= P; i += 16)
        for (int l = 0; l < 16; ++l) part[l] += row[i + l];
      for (; i < P; ++i) part[i % 16] += row[i];
    }
    T sum = T(0);
    for (int l = 0; l < 16; ++l) sum += part[l];
    db[c] = sum;
  }
}

#define FASTCONV_INSTANTIATE(T)                                                                    \
  template void conv2d_forward<T>(const ConvShape&, const T*, const T*, const T*, T*, int);        \
  template void conv2d_backward_input<T>(const ConvShape&, const T*, const T*, T*, int);           \
  template void conv2d_backward_weight<T>(const ConvShape&, const T*, const T*, T*, int);          \
  template void conv2d_backward_bias<T>(index_t, index_t, index_t, const T*, T*, int);
FASTCONV_INSTANTIATE(float)
FASTCONV_INSTANTIATE(double)

}  // namespace fastconv
