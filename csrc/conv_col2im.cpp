// dgrad as GEMM + col2im: cols = W^T dy, scattered into dx by col2im (im2col with +=). It serves
// any stride; at stride 1 conv.cpp runs the forward of dy instead where it can (no col2im, and the
// depth is C_out*KH*KW instead of C_out).
#include <omp.h>

#include <vector>

#include "conv_impl.h"
#include "gemm.h"

namespace fastconv {
namespace {

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

}  // namespace

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

template void dgrad_col2im<float>(const ConvShape&, const float*, const float*, float*, int);
template void dgrad_col2im<double>(const ConvShape&, const double*, const double*, double*, int);

}  // namespace fastconv
