// dgrad as GEMM + col2im: cols = W^T dy, scattered into dx by col2im (im2col with +=). It serves
// any stride; at stride 1 conv.cpp runs the forward of dy instead where it can (no col2im, and the
// depth is C_out*KH*KW instead of C_out).
#include <omp.h>

#include <cstring>
#include <numeric>
#include <vector>

#include "conv_impl.h"
#include "gemm.h"

namespace fastconv {
namespace {

inline index_t floor_div(index_t a, index_t b) { return a >= 0 ? a / b : -((b - 1 - a) / b); }

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

// Whether col2im sums a row's taps phase by phase (col2im_phased_row) instead of tap by tap
// (col2im_run): at a stride where several taps land on the same phase, on rows of at least
// kPhasedMinOW output pixels. Measured (2-core AMD EPYC Zen 5, 2 threads, dgrad time, phased
// against tap by tap, alternating runs): resnet50_conv1_7x7s2 (112 output columns) 0.63-0.76x;
// stride-2 3x3 layers, 28 columns 0.92-0.97x, 16 columns 0.93-0.94x, but 8 columns 1.05x and
// 4 columns 1.06-1.07x (runs of a few lanes: the buffer's zeroing and interleaving cost more than
// they save); 1x1 at stride 2 (one tap a phase) 1.1-1.4x. Tap by tap, the scatter had been 28%
// of resnet50_3x3s2_128_56to28_b16's single-thread time (about 2.5 cycles per element); the GEMM,
// near its peak, takes most of the rest. Not better: summing each column's lanes in registers
// (vectors where every tap has a lane, the ragged ends one column at a time) 1.03-1.2x the
// tap-by-tap time at 28 columns; zeroing dx rows just before their first chunk instead of whole
// planes up front, 1.05x.
constexpr index_t kPhasedMinOW = 16;

inline bool col2im_phased(const ConvShape& s) {
  return s.stride_w > 1 && s.KW > s.stride_w / std::gcd(s.stride_w, s.dil_w) && s.OW >= kPhasedMinOW;
}

// Phased, where the taps (kh, 0..KW-1) of one run add into their input row: the same for every
// channel, so worked out once per chunk for each run and kh (ChunkTaps). Tap kw's lane t lands on
// column o + t*sw, o = ow*sw - pad_l + kw*dil_w: on phase o mod sw, at position floor(o / sw) + t
// of that phase's sub-row. The taps add along contiguous phase sub-rows in a buffer (sw rows of
// span elements from position u0), which one pass then interleaves into the row's columns [lo, hi)
// (at stride 2 whole positions [v0, v1), both phases inside the row, zipped).
struct RowTaps {
  index_t ih;  // the input row; outside [0, H): in the padding, nothing to add
  index_t u0, span, lo, hi, v0, v1;
  const index_t* at;  // per tap: its first lane's offset in the buffer
};

// The RowTaps of a chunk's runs, run i's kernel row kh at i * KH + kh.
struct ChunkTaps {
  std::vector<RowTaps> rows;
  std::vector<index_t> at;

  ChunkTaps(const Geo& g, index_t nbc) : rows(static_cast<std::size_t>(nbc * g.KH)), at(rows.size() * g.KW) {}
  void set(const Geo& g, const PixelRun* runs, int count) {
    const index_t sw = g.sw;
    for (int i = 0; i < count; ++i)
      for (index_t kh = 0; kh < g.KH; ++kh) {
        const PixelRun& r = runs[i];
        const index_t e = i * g.KH + kh, base = r.ow * sw - g.pl;
        RowTaps& rt = rows[e];
        rt.ih = r.oh * g.sh - g.pt + kh * g.dh;
        rt.u0 = floor_div(base, sw);
        rt.span = floor_div(base + (g.KW - 1) * g.dw, sw) - rt.u0 + r.len;
        rt.at = at.data() + e * g.KW;
        for (index_t kw = 0; kw < g.KW; ++kw) {
          const index_t o = base + kw * g.dw, u = floor_div(o, sw);
          at[e * g.KW + kw] = (o - u * sw) * rt.span + u - rt.u0;
        }
        rt.lo = max_i(0, rt.u0 * sw);
        rt.hi = min_i(g.W, (rt.u0 + rt.span) * sw);
        rt.v0 = ceil_div(rt.lo, sw);
        rt.v1 = max_i(rt.v0, rt.hi / sw);
      }
  }
};

// col2im of one run for the taps (c, kh, 0..KW-1) of one input row (tap kw's lanes at src +
// kw*ld), phased (buf: sw * span elements): one read-modify-write of each dx element per (c, kh)
// instead of one strided one per tap.
template <typename T>
void col2im_phased_row(T* row, const Geo& g, const RowTaps& rt, index_t len, const T* src, index_t ld, T* buf) {
  const index_t sw = g.sw;
  for (index_t i = 0; i < sw * rt.span; ++i) buf[i] = T(0);
  for (index_t kw = 0; kw < g.KW; ++kw, src += ld) {
    T* b = buf + rt.at[kw];
    for (index_t t = 0; t < len; ++t) b[t] += src[t];
  }
  // column iw of the row: phase iw mod sw, position iw / sw
  const auto one = [&](index_t iw) { row[iw] += buf[(iw % sw) * rt.span + iw / sw - rt.u0]; };
  index_t iw = rt.lo;
  if (sw == 2) {  // the common stride: whole positions as two sub-rows zipped (vectors), the ends one by one
    for (; iw < min_i(rt.hi, rt.v0 * 2); ++iw) one(iw);
    const T* e = buf - rt.u0;
    const T* d = buf + rt.span - rt.u0;
    for (index_t v = rt.v0; v < rt.v1; ++v) {
      row[2 * v] += e[v];
      row[2 * v + 1] += d[v];
    }
    iw = max_i(iw, rt.v1 * 2);
  }
  for (; iw < rt.hi; ++iw) one(iw);
}

}  // namespace

// dgrad at stride > 1: per block of images, cols (Kg x pixels) = W_g^T dy_g in chunks of nbc pixels,
// each scattered into dx by col2im. Units are (block of images, group, channel range): a unit owns
// its dx planes, so no two threads ever add into the same pixel. Images whose pixels would pad their
// GEMM panels by a quarter or more go several to a block, their dy copied side by side: one image a
// chunk, a 4x4 output's 16 pixels filled half of each 32-column panel, and W^T was streamed once per
// image (2-core AMD EPYC Zen 5, 2 threads, time: 3x3 stride 2 to 4x4, 256 -> 512 channels, batch 32,
// 0.53x, 1x1 stride 2 0.64x). Blocks of images whose pixels fill whole panels (8x8 and 16x16) took
// 1.17x the time (1x1 stride 2: the copies of dy cost more than they saved); 7x7 ran the same.
template <typename T>
void dgrad_col2im(const ConvShape& s, const T* dy, const T* w, T* dx, int nthreads) {
  const MicroKernel<T>& uk = micro_kernel<T>();
  const index_t G = s.groups, Cig = s.C_in / G, Cog = s.C_out / G, KK = s.KH * s.KW, Kg = Cig * KK;
  const index_t P = s.OH * s.OW, HW = s.H * s.W;
  const Geo g = geometry(s);
  const index_t rows = round_up(Kg, uk.mr) + uk.mr;  // a unit's panels cover its rows plus ragged ends
  const index_t target = max_i(uk.nr, (index_t(65536) / rows) / uk.nr * uk.nr);  // a chunk's columns, at most
  const bool padded = 4 * round_up(P, uk.nr) >= 5 * P;
  const index_t per = padded && P < target ? target / P : 1, blocks = ceil_div(s.N, per);  // images per block
  const index_t nbc = min_i(round_up(per * P, uk.nr), target);
  const index_t splits =
      (blocks * G >= 2 * nthreads || nthreads == 1) ? 1 : min_i(Cig, ceil_div(2 * nthreads, blocks * G));
  const index_t asize = packed_a_size(uk, Kg, Cog), ajobs = pack_a_jobs(uk, Kg, Cog);
  Buffer<T> ap(G * asize);  // shared: W_g^T packed, (Kg x Cog) per group
  const index_t units = blocks * G * splits;
#pragma omp parallel num_threads(static_cast<int>(min_i(nthreads, units)))
  {
#pragma omp for schedule(static)
    for (index_t job = 0; job < G * ajobs; ++job)
      pack_a_job(uk, w + (job / ajobs) * Cog * Kg, index_t(1), Kg, Kg, Cog, ap.data() + (job / ajobs) * asize,
                 job % ajobs);
    Buffer<T> bbuf(packed_b_size(uk));  // per thread: one packed block of dy
    Buffer<T> cols(rows * nbc);         // per thread: one chunk of cols
    Buffer<T> dyb(per > 1 ? Cog * per * P : 0);  // per thread: a block's dy_g, [co][image][pixel]
    std::vector<PixelRun> runs(static_cast<std::size_t>(nbc));
    // phased, per thread: the chunk's tap geometry and one run's phase sub-rows
    const bool phased = col2im_phased(s);
    ChunkTaps taps(g, phased ? nbc : 0);
    Buffer<T> rowbuf(phased ? g.sw * (nbc + ceil_div((g.KW - 1) * g.dw, g.sw) + 2) : 0);
#pragma omp for schedule(dynamic, 1)
    for (index_t u = 0; u < units; ++u) {
      const index_t n0 = u / (G * splits) * per, grp = (u / splits) % G, part = u % splits;
      const index_t imgs = min_i(per, s.N - n0), cols_u = imgs * P;  // the block's columns
      const index_t c0 = part * Cig / splits, c1 = (part + 1) * Cig / splits;
      const index_t k0 = c0 * KK, k1 = c1 * KK, p0 = k0 / uk.mr, p1 = ceil_div(k1, uk.mr);
      T* dxg = dx + (n0 * s.C_in + grp * Cig) * HW;  // image n of the block at dxg + n * image
      const index_t image = s.C_in * HW;
      for (index_t n = 0; n < imgs; ++n) fill_zero(dxg + n * image + c0 * HW, (c1 - c0) * HW);
      const T* dyg = dy + (n0 * s.C_out + grp * Cog) * P;
      if (imgs > 1) {  // dyb[co][n][pixel]
        for (index_t co = 0; co < Cog; ++co)
          for (index_t n = 0; n < imgs; ++n)
            std::memcpy(dyb.data() + co * cols_u + n * P, dyg + n * s.C_out * P + co * P,
                        static_cast<std::size_t>(P) * sizeof(T));
      }
      const StridedB<T> pack_b{imgs > 1 ? dyb.data() : dyg, cols_u, index_t(1)};
      for (index_t q0 = 0; q0 < cols_u; q0 += nbc) {
        const index_t len = min_i(nbc, cols_u - q0);
        const PlainC<T> cmap{cols.data(), nbc, p0 * uk.mr, q0};
        gemm_unit(uk, PrepackedA<T>{ap.data() + grp * asize, Kg}, Cog, p0, p1, pack_b, q0, len, cmap, bbuf.data(),
                  false);
        const int count = pixel_runs(g, P, q0, len, runs.data());
        if (!phased) {
          Tap tap = tap_of(g, k0);
          for (index_t k = k0; k < k1; ++k, tap.next(g)) {
            const T* src = cols.data() + (k - p0 * uk.mr) * nbc;
            for (int i = 0; i < count; ++i)
              col2im_run(dxg + runs[i].n * image + tap.c * HW, g, tap.kh, tap.kw, runs[i], src + runs[i].lane);
          }
          continue;
        }
        // channel by channel, as tap by tap: a unit's planes can lie a multiple of 4 KiB apart
        // (32x32 images), and run by run across them thrashed L1's sets (1x1 stride 2: 1.25x)
        taps.set(g, runs.data(), count);
        for (index_t c = c0; c < c1; ++c)
          for (index_t kh = 0; kh < g.KH; ++kh) {
            const T* src = cols.data() + (c * KK + kh * g.KW - p0 * uk.mr) * nbc;  // tap (c, kh, 0)'s row
            for (int i = 0; i < count; ++i) {
              const RowTaps& rt = taps.rows[i * g.KH + kh];
              if (rt.ih >= 0 && rt.ih < g.H)
                col2im_phased_row(dxg + runs[i].n * image + c * HW + rt.ih * g.W, g, rt, runs[i].len,
                                  src + runs[i].lane, nbc, rowbuf.data());
            }
          }
      }
    }
  }
}

template void dgrad_col2im<float>(const ConvShape&, const float*, const float*, float*, int);
template void dgrad_col2im<double>(const ConvShape&, const double*, const double*, double*, int);

}  // namespace fastconv
