// The implementations of 2-d convolution, one file each, and what they share; internal to the C++
// backend. conv.cpp is the one place that chooses among them (for each pass an ordered list: the
// first that applies runs) and holds the public entry points of conv.h.
//   conv_depthwise.cpp   depthwise (one input channel per group): direct loops, every pass
//   conv_flat.cpp        the flat layout, and the forward as a GEMM that reads its im2col operand in
//                        place from it (stride-1 dgrad runs it too, as a forward of dy)
//   winograd.cpp         Winograd F(2x2, 3x3) and F(4x4, 3x3): forward, stride-1 dgrad, wgrad (declared in winograd.h)
//   conv_col2im.cpp      dgrad at any stride: GEMM (cols = W^T dy) + col2im
//   conv_subpixel.cpp    strided dgrad as stride-1 forwards of dy, one per phase of dx
//   conv_gemm_wgrad.cpp  wgrad as a GEMM: on the flat layout, or with cols^T packed from x
//   conv_dot_wgrad.cpp   wgrad as dot products along the pixels (few output channels, fp32)
//   conv_chan_wgrad.cpp  wgrad with vectors along the input channels (few of them, fp32)
//   conv_phases.cpp      dilated layers as undilated ones on the phase images, every pass
// The function templates declared here are defined in their file and instantiated there, for float
// and double.
#pragma once

#include <vector>

#include "common.h"
#include "conv.h"

namespace fastconv {

// ---------------------------------------------------------------------------------------------
// shapes
// ---------------------------------------------------------------------------------------------

// Pointwise layers read x as a (C_in, H*W) matrix: one "row" of H*W pixels, one tap.
inline bool is_pointwise(const ConvShape& s) {
  return s.KH == 1 && s.KW == 1 && s.stride_h == 1 && s.stride_w == 1 && s.pad_t == 0 && s.pad_l == 0 &&
         s.OH == s.H && s.OW == s.W;
}

// At stride 1, dgrad is the forward convolution of dy (C_out channels, OH x OW) with the flipped,
// transposed weight, dilation d and padding d*(K-1) - pad (negative when the padding exceeds the
// kernel's reach): this is that forward's shape.
inline ConvShape dgrad_shape(const ConvShape& s) {
  return ConvShape{s.N, s.C_out, s.OH, s.OW, s.C_in, s.KH, s.KW, s.H, s.W, 1, 1,
                   s.dil_h * (s.KH - 1) - s.pad_t, s.dil_w * (s.KW - 1) - s.pad_l, s.dil_h, s.dil_w, s.groups};
}

// ---------------------------------------------------------------------------------------------
// the implicit im2col matrix, run by run (conv_col2im.cpp, conv_gemm_wgrad.cpp)
// ---------------------------------------------------------------------------------------------

// The index map of one convolution, as the im2col/col2im loops see it.
struct Geo {
  index_t H, W, OW, sh, sw, pt, pl, dh, dw, KH, KW;
};

inline Geo geometry(const ConvShape& s) {
  if (is_pointwise(s)) return Geo{1, s.H * s.W, s.OH * s.OW, 1, 1, 0, 0, 1, 1, 1, 1};
  return Geo{s.H, s.W, s.OW, s.stride_h, s.stride_w, s.pad_t, s.pad_l, s.dil_h, s.dil_w, s.KH, s.KW};
}

// Output pixels [lane, lane+len) of a range that share image n and output row oh.
struct PixelRun {
  index_t lane, len, n, oh, ow;
};

// Split pixels [j, j+len) of the flattened (image, oh, ow) space (P pixels per image) into runs
// along one output row; returns how many (at most len).
inline int pixel_runs(const Geo& g, index_t P, index_t j, index_t len, PixelRun* runs) {
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

// ---------------------------------------------------------------------------------------------
// depthwise (conv_depthwise.cpp)
// ---------------------------------------------------------------------------------------------

inline bool is_depthwise(const ConvShape& s) { return s.C_in == s.groups; }

// y (N, C_out, OH, OW) = conv(x, w) + b; b may be null.
template <typename T>
void depthwise_forward(const ConvShape& s, const T* x, const T* w, const T* b, T* y, int nthreads);

// dgrad at stride 1 with one output channel per group, as the depthwise forward of dy with the
// flipped kernel (dgrad_shape's layer). Its padding meets w's every tap: the caller checks that dx
// stands where w holds an Inf or NaN (see dgrad_as_forward_stands in conv.cpp).
template <typename T>
void depthwise_dgrad_as_forward(const ConvShape& s, const T* dy, const T* w, T* dx, int nthreads);

// dgrad of any depthwise layer: dx zeroed, then the taps of dy added in.
template <typename T>
void depthwise_backward_input(const ConvShape& s, const T* dy, const T* w, T* dx, int nthreads);

template <typename T>
void depthwise_backward_weight(const ConvShape& s, const T* dy, const T* x, T* dw, int nthreads);

// ---------------------------------------------------------------------------------------------
// the flat layout (conv_flat.cpp), read in place by the forward GEMM, flat wgrad and dot wgrad
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

// The layout of s for GEMM panels NR columns wide.
FlatLayout flat_layout(const ConvShape& s, index_t NR);

// The phase planes of one channel (H x W) into dst (f.chan elements).
template <typename T>
void flat_fill_channel(const ConvShape& s, const FlatLayout& f, const T* xc, T* dst);

// Images [n0, n0 + imgs) of x into their flat copies at xq (f.image elements each), the slack after
// each image's channels zeroed; the channels shared among the threads of the enclosing parallel
// region when `team` (see team_for), else all on the calling thread.
template <typename T>
void flat_fill_images(const ConvShape& s, const FlatLayout& f, const T* x, index_t n0, index_t imgs, T* xq,
                      bool team = true);

// The flat copies of one chunk of images hold at most this many bytes by default: a chunk is as
// many whole images as fit, or, when one image does not, one band of its output rows (see
// row_band), as many rows as fit and at least one (the forward cuts a row that does not fit into
// bands of columns too: col_band). conv_chunk_bytes() is the bound in force (set_conv_chunk_bytes
// in conv.h: tests lower it so that small images run in several bands).
constexpr index_t kFlatChunkBytes = index_t(4) << 20;
index_t conv_chunk_bytes();

// Output rows [oh0, oh0 + rows) of layer s as a layer of their own: the same input (all of it, H
// rows: x is addressed as before), its top padding moved up by the rows above the band (negative
// below the first band: the band's first input row is then inside x). Every output of the band
// is the same dot product over the same depth as in s, rows oh0.. of s's output.
inline ConvShape row_band(const ConvShape& s, index_t oh0, index_t rows) {
  ConvShape b = s;
  b.OH = rows;
  b.pad_t = s.pad_t - oh0 * s.stride_h;
  return b;
}

// Output columns [ow0, ow0 + cols) of layer s as a layer of their own, as row_band does for rows
// (its left padding moved left).
inline ConvShape col_band(const ConvShape& s, index_t ow0, index_t cols) {
  ConvShape b = s;
  b.OW = cols;
  b.pad_l = s.pad_l - ow0 * s.stride_w;
  return b;
}

// Bands of n output rows (or columns): `size` each, the last one what is left.
struct Bands {
  index_t size, count;
  index_t first(index_t band) const { return band * size; }
  index_t length(index_t band, index_t n) const { return min_i(size, n - band * size); }
};

// The fewest, then most even, bands of n output rows (or columns) such that each holds at most
// `max_size` (at least one each).
inline Bands even_bands(index_t n, index_t max_size) {
  const index_t count = ceil_div(n, max_i(1, min_i(n, max_size)));
  return Bands{count > 0 ? ceil_div(n, count) : 0, count};
}

// ---------------------------------------------------------------------------------------------
// the forward GEMM (conv_flat.cpp)
// ---------------------------------------------------------------------------------------------

// How gemm_forward reads its weight, unpacked: row i, depth p of group grp's A (C_out/groups x Kg)
// is w[grp*group + off[p] + i*lda].
template <typename T>
struct WeightA {
  const T* w;
  index_t group, lda;
  const index_t* off;
};

// y = conv(x, w) + b (b may be null) of any layer but depthwise ones, as a GEMM per group that
// reads its B (the implicit im2col) in place from the flat layout and its weight through wa.
template <typename T>
void gemm_forward(const ConvShape& s, const T* x, const WeightA<T>& wa, const T* b, T* y, int nthreads);

// ---------------------------------------------------------------------------------------------
// dgrad as GEMM + col2im (conv_col2im.cpp): any stride, any layer but depthwise ones
// ---------------------------------------------------------------------------------------------

template <typename T>
void dgrad_col2im(const ConvShape& s, const T* dy, const T* w, T* dx, int nthreads);

// dgrad of a strided, undilated layer (not depthwise) as one forward of dy per phase of dx
// (conv_subpixel.cpp), where one image's dx (its phases' buffer) is within the default chunk bound
// (kFlatChunkBytes), in elements of elem_bytes; subpixel_pays: where the heuristics take it in fp32
// (measured there).
bool subpixel_applies(const ConvShape& s, index_t elem_bytes);
bool subpixel_pays(const ConvShape& s);
template <typename T>
void subpixel_backward_input(const ConvShape& s, const T* dy, const T* w, T* dx, int nthreads);

// ---------------------------------------------------------------------------------------------
// wgrad as a GEMM (conv_gemm_wgrad.cpp): any layer but depthwise ones
// ---------------------------------------------------------------------------------------------

// dW^T = cols dy^T on the flat layout; it keeps all of dW^T live (for weights of a few MiB).
template <typename T>
void flat_backward_weight(const ConvShape& s, const T* dy, const T* x, T* dw, int nthreads);

// dW += dY cols^T, cols^T packed from x, the batch folded into the reduction.
template <typename T>
void gemm_backward_weight(const ConvShape& s, const T* dy, const T* x, T* dw, int nthreads);

// ---------------------------------------------------------------------------------------------
// wgrad as dot products along the pixels (conv_dot_wgrad.cpp)
// ---------------------------------------------------------------------------------------------

// Whether the dot kernel serves this wgrad: the kernel set in use has one (fp32, AVX-512), up to 16
// output channels, 64 to 1024 taps x input channels per group, not pointwise. For an fp32 wgrad
// (the only one with a dot kernel; the caller checks the type).
bool dot_wgrad_applies(const ConvShape& s);

// dw from dy and x for a layer dot_wgrad_applies accepts; false, dw unfinished, when x holds an Inf
// or NaN (the flat path takes it).
bool dot_backward_weight(const ConvShape& s, const float* dy, const float* x, float* dw, int nthreads);

// ---------------------------------------------------------------------------------------------
// wgrad with vectors along the input channels (conv_chan_wgrad.cpp)
// ---------------------------------------------------------------------------------------------

// Whether the channels kernel serves this wgrad: the kernel set in use has one (fp32), a multiple of
// its lanes up to 64 input channels per group, not pointwise. For an fp32 wgrad (the caller
// checks the type).
bool chan_wgrad_applies(const ConvShape& s);

// dw from dy and x for a layer chan_wgrad_applies accepts.
void chan_backward_weight(const ConvShape& s, const float* dy, const float* x, float* dw, int nthreads);

// The sum of a batch's slices in one fixed order, dW = ((slice 0 + slice 1) + slice 2) + ..., a
// round at a time: adds the `round` slices of one (partial, dw_size apart) to dw, which holds the
// earlier rounds' sum unless `first`. An orphaned omp for: every thread of the team calls it.
template <typename T>
void add_round(const T* partial, index_t round, index_t dw_size, bool first, T* dw) {
#pragma omp for schedule(static)
  for (index_t e = 0; e < dw_size; ++e) {
    T sum = first ? partial[e] : dw[e] + partial[e];
    for (index_t sl = 1; sl < round; ++sl) sum += partial[sl * dw_size + e];
    dw[e] = sum;
  }
}

// ---------------------------------------------------------------------------------------------
// dilated layers as undilated ones on their phase images (conv_phases.cpp)
// ---------------------------------------------------------------------------------------------

// Whether s (dilated, stride 1, not depthwise) splits into dil_h x dil_w equal undilated layers,
// with one image's phase copies within the bound.
bool phases_apply(const ConvShape& s, index_t elem_bytes);
// The undilated layer that one chunk of s's images forms (a batch of images x dil_h x dil_w phase
// images), where phases_apply.
ConvShape phase_shape(const ConvShape& s, index_t elem_bytes);
template <typename T>
void phases_forward(const ConvShape& s, const T* x, const T* w, const T* b, T* y, int nthreads);
template <typename T>
void phases_backward_input(const ConvShape& s, const T* dy, const T* w, T* dx, int nthreads);
template <typename T>
void phases_backward_weight(const ConvShape& s, const T* dy, const T* x, T* dw, int nthreads);

}  // namespace fastconv
