// dgrad at stride > 1 as stride-1 forwards of dy, one per phase of dx (sub-pixel convolution): the
// pixels ih = sh*i + a, iw = sw*j + b of phase (a, b) receive only the taps kh = kh0 + sh*t
// (kh0 = (a + pad_t) mod sh) and likewise kw, from dy rows oh = i + q - t (q = (a + pad_t - kh0) / sh):
//   dx[c][sh*i + a][sw*j + b] = sum over o, t', u' of dy[o][i - pad' + t'][j - padw' + u'] *
//                               w[o][c][kh0 + sh*(Th-1-t')][kw0 + sw*(Tw-1-u')],
// a forward of dy with the phase's Th x Tw taps, flipped and transposed (read where the weight lies,
// as dgrad_as_forward reads it), padding pad' = Th - 1 - q. The phases' taps add up to the layer's:
// the GEMMs do the flops of GEMM + col2im's product, and nothing is added into dx tap by tap
// (col2im's KH*KW passes over it). A phase without taps (a kernel narrower than the stride) is zero.
// The phases of a chunk of images are computed into a buffer of the chunk's dx size, then
// interleaved into dx row by row (at stride 2 two phase rows zipped: 0.93-0.97x the time of a
// strided copy of each). Written by each phase straight into dx (every stride-th pixel, through
// masked stores), every line of dx was written stride_h x stride_w times, partially, and left cache
// between the phases: 15% of resnet50_3x3s2_128_56to28_b16's time (one thread).
#include <omp.h>

#include <vector>

#include "conv_impl.h"
#include "gemm.h"

namespace fastconv {
namespace {

// A chunk's dx (and its phases' buffer) holds about this much, one image at least (and one image
// at most the default chunk bound, kFlatChunkBytes: subpixel_applies; the bound a test sets does
// not change the algorithm).
constexpr index_t kSubpixelChunkBytes = index_t(1) << 20;

// One dimension of phase a: its first tap, its taps, its forward's padding and its outputs.
struct PhaseDim {
  index_t k0, taps, pad, out;
};

PhaseDim phase_dim(index_t a, index_t stride, index_t pad, index_t K, index_t in) {
  const index_t k0 = (a + pad) % stride, taps = k0 < K ? ceil_div(K - k0, stride) : 0;
  const index_t q = (a + pad - k0) / stride;
  return PhaseDim{k0, taps, taps - 1 - q, in > a ? ceil_div(in - a, stride) : 0};
}

struct Phase {
  PhaseDim r, c;
  index_t at;                // its outputs in the buffer: [image][C_in][r.out][c.out], per image
  std::vector<index_t> off;  // its weight: depth p = (o, t', u'), the flat layout's order
};

}  // namespace

// Measured against GEMM + col2im (2-core AMD EPYC Zen 5, 2 threads, fp32, time; dx's N x C_in x H x
// W, 3x3 stride 2 unless said): with AVX-512, 16x128x56x56 0.90x, 1x128x56x56 0.89x, 8x64x112x112
// 0.85x, 1x256x28x28 0.95x, but 32x64x64x64 1.06x, 16x256x28x28 1.01x, 16x512x14x14 1.22x,
// 32x128x16x16 1.45x, 32x64x32x32 1.14x, 4x32x112x112 1.04x, 1x1 stride 2 16x256x56x56 1.02x and
// 16x512x28x28 1.15x; with AVX2 1.17-1.39x (16x128x56x56 1.30x). Small phase images pay for the
// phases' copies of dy and their packing, which col2im's one tall GEMM (C_in*KH*KW rows) does not.
bool subpixel_pays(const ConvShape& s) {
  const index_t Cig = s.C_in / s.groups, phase_pixels = ceil_div(s.H, s.stride_h) * ceil_div(s.W, s.stride_w);
  return subpixel_applies(s, 4) && gemm_isa_is("avx512") && s.KH >= s.stride_h &&
         s.KW >= s.stride_w && Cig >= 64 && Cig * phase_pixels >= 96 * 1024;
}

bool subpixel_applies(const ConvShape& s, index_t elem_bytes) {
  return (s.stride_h > 1 || s.stride_w > 1) && s.dil_h == 1 && s.dil_w == 1 &&
         s.C_in * s.H * s.W * elem_bytes <= kFlatChunkBytes;
}

template <typename T>
void subpixel_backward_input(const ConvShape& s, const T* dy, const T* w, T* dx, int nthreads) {
  const index_t Cig = s.C_in / s.groups, Cog = s.C_out / s.groups, KK = s.KH * s.KW, HW = s.H * s.W;
  const index_t sh = s.stride_h, sw = s.stride_w;
  std::vector<Phase> phases;  // phase (a, b) at a*sw + b
  for (index_t a = 0, at = 0; a < sh; ++a)
    for (index_t b = 0; b < sw; ++b) {
      Phase f{phase_dim(a, sh, s.pad_t, s.KH, s.H), phase_dim(b, sw, s.pad_l, s.KW, s.W), at, {}};
      at += s.C_in * f.r.out * f.c.out;
      if (f.r.taps > 0 && f.c.taps > 0) {  // row ci of A is KK elements after row ci - 1
        f.off.resize(static_cast<std::size_t>(Cog * f.r.taps * f.c.taps));
        for (index_t o = 0, p = 0; o < Cog; ++o)
          for (index_t t = 0; t < f.r.taps; ++t)
            for (index_t u = 0; u < f.c.taps; ++u, ++p)
              f.off[p] = o * Cig * KK + (f.r.k0 + sh * (f.r.taps - 1 - t)) * s.KW + f.c.k0 + sw * (f.c.taps - 1 - u);
      }
      phases.push_back(std::move(f));
    }
  const index_t chunk = max_i(1, min_i(s.N, kSubpixelChunkBytes / (s.C_in * HW * index_t(sizeof(T)))));
  Buffer<T> buf(chunk * s.C_in * HW);  // the phases of a chunk, each [image][C_in][r.out][c.out]
  for (index_t n0 = 0; n0 < s.N; n0 += chunk) {
    const index_t imgs = min_i(chunk, s.N - n0);
    for (const Phase& f : phases) {
      if (f.off.empty() || f.r.out == 0 || f.c.out == 0) continue;  // zero, or no pixels
      // the phase's forward: dy (C_out channels, OH x OW) in, C_in channels of r.out x c.out out
      const ConvShape ph{imgs,    s.C_out, s.OH, s.OW,    s.C_in,  f.r.taps, f.c.taps, f.r.out,
                         f.c.out, 1,       1,    f.r.pad, f.c.pad, 1,        1,        s.groups};
      gemm_forward(ph, dy + n0 * s.C_out * s.OH * s.OW, WeightA<T>{w, Cog * Cig * KK, KK, f.off.data()},
                   static_cast<const T*>(nullptr), buf.data() + imgs * f.at, nthreads);
    }
    // dx row ih = sh*i + a: column sw*j + b from row i of phase (a, b)
    const auto phase_row = [&](index_t plane, index_t a, index_t i, index_t b) -> const T* {
      const Phase& f = phases[static_cast<std::size_t>(a * sw + b)];
      return f.off.empty() ? nullptr : buf.data() + imgs * f.at + (plane * f.r.out + i) * f.c.out;
    };
#pragma omp parallel for schedule(static) num_threads(nthreads)
    for (index_t row = 0; row < imgs * s.C_in * s.H; ++row) {
      const index_t plane = row / s.H, ih = row % s.H, a = ih % sh, i = ih / sh;
      T* d = dx + n0 * s.C_in * HW + row * s.W;
      const T* e = sw == 2 && s.W > 1 ? phase_row(plane, a, i, 0) : nullptr;
      const T* o = e ? phase_row(plane, a, i, 1) : nullptr;
      if (o) {  // the common stride: the two phase rows zipped (vectors), an odd last column after
        for (index_t j = 0; j < s.W / 2; ++j) {
          d[2 * j] = e[j];
          d[2 * j + 1] = o[j];
        }
        if (s.W % 2) d[s.W - 1] = e[s.W / 2];
        continue;
      }
      for (index_t b = 0; b < min_i(sw, s.W); ++b) {
        const T* src = phase_row(plane, a, i, b);
        const index_t cols = phases[static_cast<std::size_t>(a * sw + b)].c.out;
        for (index_t j = 0; j < cols; ++j) d[j * sw + b] = src ? src[j] : T(0);
      }
    }
  }
}

template void subpixel_backward_input<float>(const ConvShape&, const float*, const float*, float*, int);
template void subpixel_backward_input<double>(const ConvShape&, const double*, const double*, double*, int);

}  // namespace fastconv
