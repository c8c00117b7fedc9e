// wgrad with vectors along the input channels, for layers of few input channels per group (a
// multiple of the vector's lanes, at most 64): each image is copied once into a channels-last
// layout (per group, blocks of L channels, zero-padded planes of L-lane pixels), and
//   dW_g[co][ci][kh][kw] = sum over images and output pixels (oh, ow) of
//                          dy[co][oh][ow] * xc[ci][oh*sh + kh*dh][ow*sw + kw*dw],
// one pixel of dy broadcast against one L-channel vector of the copy (the channels kernel, see
// ChanKernel). A unit is a block of CB output channels, one kw, and KV (kh, channel block) rows of the
// copy: CB*KV FMAs per CB broadcasts and KV vector loads, dy read where it lies, no junk columns.
// The other paths vectorize along the output channels (flat: dW^T = cols dy^T, dy^T packed,
// 16 broadcasts of cols per 16 FMAs) or along the pixels (dot: both operands read as vectors, their
// sums folded at the end): at 16 channels each way both waited on loads. Measured (2-core AMD EPYC
// Zen 5, 2 threads, time): ResNet-20's 3x3 layers of 16, 32 and 64 channels 0.6-0.7x, 0.55-0.8x and
// 0.6-1.0x the dot / flat paths' (README, "Measured").
// The batch is cut into slices of images whose copies take at most kChanSliceBytes (an L2's share),
// fixed by the shape. Rounds of up to kChanSlots slices run as items (slice, run of units): an item
// copies its slice (unless its thread holds it already) and computes each of its units over the
// slice's images in one kernel call; then the round's slices are added to the sums in order (laid
// out unit by unit; dW is scattered from them at the end). One fixed order on any thread count, and
// a workspace of kChanSlots + 1 dW whatever the batch.
#include <omp.h>

#include <cstring>
#include <numeric>
#include <vector>

#include "conv_impl.h"
#include "gemm.h"

namespace fastconv {
namespace {

constexpr index_t kChanSliceBytes = index_t(512) << 10;
constexpr index_t kChanSlots = 8;

// One image's channels-last copy: per group, NV blocks of L channels, each a zero-padded Hp x Wp
// plane of L-lane pixels, Hp x Wp the input pixels (and padding) the taps read: x's row h at row
// h + pad_t, column w at w + pad_l.
struct ChanLayout {
  index_t L, NV, Hp, Wp, plane, image;
};

ChanLayout chan_layout(const ConvShape& s, index_t L) {
  const index_t NV = s.C_in / s.groups / L;
  const index_t Hp = (s.OH - 1) * s.stride_h + (s.KH - 1) * s.dil_h + 1;
  const index_t Wp = (s.OW - 1) * s.stride_w + (s.KW - 1) * s.dil_w + 1;
  return ChanLayout{L, NV, Hp, Wp, Hp * Wp * L, s.groups * NV * Hp * Wp * L};
}

}  // namespace

bool chan_wgrad_applies(const ConvShape& s) {
  const ChanKernel<float>& ck = chan_kernel();
  const index_t Cig = s.C_in / s.groups;
  // the kernel's KV rows are (kh, channel block) pairs: KH * Cig / L of them, whole kernel calls;
  // its CB rows output channels: fewer leave rows idle (4 of 16 channels: 1.16x the dot path's
  // time); a thread copies one image at least: within the default chunk bound (the bound a test
  // sets does not change the algorithm)
  return ck.fn && !is_pointwise(s) && Cig % ck.lanes == 0 && Cig <= 64 && s.KH * (Cig / ck.lanes) % ck.kv == 0 &&
         s.C_out / s.groups >= ck.cb && chan_layout(s, ck.lanes).image * index_t(sizeof(float)) <= kFlatChunkBytes;
}

void chan_backward_weight(const ConvShape& s, const float* dy, const float* x, float* dw, int nthreads) {
  using T = float;
  const ChanKernel<T>& ck = chan_kernel();
  const int CB = ck.cb, KV = ck.kv;
  const index_t G = s.groups, Cig = s.C_in / G, Cog = s.C_out / G, P = s.OH * s.OW, HW = s.H * s.W;
  const ChanLayout c = chan_layout(s, ck.lanes);
  const index_t L = c.L;
  // units: (group, block of CB output channels, block of KV (kh, channel block) pairs, kw), each
  // summing CB x KV vectors: `block` elements of a dW laid out unit by unit
  const index_t cblocks = ceil_div(Cog, CB), pblocks = s.KH * c.NV / KV, units = G * cblocks * pblocks * s.KW;
  struct Unit {
    index_t grp, cb, pb, kw;
  };
  const auto unit_of = [&](index_t u) {
    return Unit{u / (cblocks * pblocks * s.KW), u / (pblocks * s.KW) % cblocks, u / s.KW % pblocks, u % s.KW};
  };
  // row j of unit block pb: (kh, channel block v)
  const auto kh_of = [&](index_t pb, int j) { return (pb * KV + j) / c.NV; };
  const auto v_of = [&](index_t pb, int j) { return (pb * KV + j) % c.NV; };
  const index_t block = CB * KV * L, sums_size = units * block;
  const index_t IB = min_i(s.N, max_i(1, kChanSliceBytes / (c.image * index_t(sizeof(T))))), S = ceil_div(s.N, IB);
  const index_t slots = min_i(S, kChanSlots);
  // runs of units: 8 items a round where the slices are too few for them (each run copies its
  // slice's images again, unless its thread holds them)
  const index_t R = min_i(units, ceil_div(8, slots));
  // the input rows and columns the taps read (a bottom or right edge past the last tap is not)
  const index_t rows = min_i(s.H, c.Hp - s.pad_t), cols = min_i(s.W, c.Wp - s.pad_l);
  // rows narrower than a vector are transposed a whole plane at a time (element by element
  // otherwise, see pack_panel), then copied row by row
  const bool staged = cols < L;
  std::vector<index_t> along(static_cast<std::size_t>(staged ? HW : cols));
  std::iota(along.begin(), along.end(), index_t(0));
  Buffer<T> partial(slots * sums_size), sums(sums_size);  // shared: each slice's sums in a round; their total
#pragma omp parallel num_threads(static_cast<int>(min_i(nthreads, slots * R)))
  {
    Buffer<T> xc(IB * c.image);  // per thread: a slice's copies, zeroed once (the padding stays)
    fill_zero(xc.data(), xc.size());
    Buffer<T> stage(staged ? HW * L : 0);
    index_t held = -1;  // the slice xc holds
    for (index_t s0 = 0; s0 < S; s0 += slots) {
      const index_t round = min_i(slots, S - s0);
#pragma omp for schedule(dynamic, 1)
      for (index_t item = 0; item < round * R; ++item) {
        const index_t slot = item / R, run = item % R, n0 = (s0 + slot) * IB, imgs = min_i(IB, s.N - n0);
        if (held != s0 + slot) {
          for (index_t img = 0; img < imgs; ++img)
            for (index_t b = 0; b < G * c.NV; ++b) {  // (group, channel block): L input channels
              const T* src = x + ((n0 + img) * s.C_in + b * L) * HW;
              T* dst = xc.data() + img * c.image + b * c.plane + (s.pad_t * c.Wp + s.pad_l) * L;
              if (staged) ck.pack(HW, src, HW, along.data(), int(L), stage.data());
              for (index_t h = 0; h < rows; ++h) {
                if (staged)
                  std::memcpy(dst + h * c.Wp * L, stage.data() + h * s.W * L, std::size_t(cols * L) * sizeof(T));
                else
                  ck.pack(cols, src + h * s.W, HW, along.data(), int(L), dst + h * c.Wp * L);
              }
            }
          held = s0 + slot;
        }
        for (index_t u = run * units / R; u < (run + 1) * units / R; ++u) {
          const Unit t = unit_of(u);
          // output channels past the group's last repeat it: computed, then dropped
          const T* d[kMaxChanRows];
          const T* xr[kMaxChanRows];
          for (int i = 0; i < CB; ++i) d[i] = dy + (n0 * s.C_out + t.grp * Cog + min_i(Cog - 1, t.cb * CB + i)) * P;
          for (int j = 0; j < KV; ++j)
            xr[j] = xc.data() + (t.grp * c.NV + v_of(t.pb, j)) * c.plane +
                    (kh_of(t.pb, j) * s.dil_h * c.Wp + t.kw * s.dil_w) * L;
          ck.fn(imgs, s.OH, s.OW, d, s.C_out * P, s.OW, xr, c.image, s.stride_h * c.Wp * L, s.stride_w * L,
                partial.data() + slot * sums_size + u * block);
        }
      }
      add_round(partial.data(), round, sums_size, s0 == 0, sums.data());
    }
    // dw from the sums, unit by unit: element (i, j, l) of unit u is dW[co][ci][kh][kw]
#pragma omp for schedule(static)
    for (index_t u = 0; u < units; ++u) {
      const Unit t = unit_of(u);
      for (index_t i = 0; i < min_i(CB, Cog - t.cb * CB); ++i)
        for (int j = 0; j < KV; ++j) {
          T* dst = dw + ((t.grp * Cog + t.cb * CB + i) * Cig + v_of(t.pb, j) * L) * s.KH * s.KW +
                   kh_of(t.pb, j) * s.KW + t.kw;
          const T* src = sums.data() + u * block + (i * KV + j) * L;
          for (index_t l = 0; l < L; ++l) dst[l * s.KH * s.KW] = src[l];
        }
    }
  }
}

}  // namespace fastconv
