// wgrad as a GEMM, two ways: on the flat layout, dW^T = cols dy^T with cols' rows read in place
// (flat_backward_weight), or dW += dY cols^T with cols^T packed from x, the batch folded into the
// reduction (gemm_backward_weight). conv.cpp chooses by the weight's size.
#include <omp.h>

#include <cstring>
#include <numeric>
#include <vector>

#include "conv_impl.h"
#include "gemm.h"

namespace fastconv {
namespace {

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

}  // namespace

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

namespace {

// The flat wgrad below; `halves`: whether it may split the batch (see flat_wgrad_halves).
template <typename T>
void flat_wgrad(const ConvShape& s, const T* dy, const T* x, T* dw, int nthreads, bool halves);

// Whole batches within one chunk and a dW of at most kHalvesMaxBytes run as two halves of the batch
// (the first ceil(N/2) images, the rest), each on one thread with its own copies and dW^T, added
// at the end (first + second: the same bits on any thread count, the split fixed by the shape).
// The team's units (blocks of dW^T) each read every image's copy, half of them written by the
// other core: with this VM's two vCPUs on different dies (README: "Two cores on one die, or two")
// LeNet-5's conv2 wgrad at batch 64 took 0.19 ms against 0.13 on one die. Halves against the team
// (2-core AMD EPYC Zen 5, 2 threads; LeNet-5's conv2 and a 3-channel conv1 at 28x28, 3x32x32 -> 6
// 5x5 at batch 32, 16 -> 16 3x3 at 8x8 batch 128, 32 -> 32 3x3 at 14x14 batch 16): one die
// 0.80-0.96x the time, two dies 0.56-0.69x.
constexpr index_t kHalvesMaxBytes = index_t(256) << 10;

template <typename T>
void flat_wgrad_halves(const ConvShape& s, const T* dy, const T* x, T* dw, int nthreads) {
  const index_t h = ceil_div(s.N, 2), dw_size = s.C_out * (s.C_in / s.groups) * s.KH * s.KW;
  Buffer<T> dw2(dw_size);  // the second half's
#pragma omp parallel for schedule(static) num_threads(static_cast<int>(min_i(nthreads, 2)))
  for (index_t half = 0; half < 2; ++half) {
    ConvShape part = s;
    part.N = half ? s.N - h : h;
    const index_t n0 = half * h;
    flat_wgrad(part, dy + n0 * s.C_out * s.OH * s.OW, x + n0 * s.C_in * s.H * s.W, half ? dw2.data() : dw, 1, false);
  }
  for (index_t i = 0; i < dw_size; ++i) dw[i] += dw2.data()[i];
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
// apart in the flat copy (one stride: InPlaceA's form, no row pointers), when MR divides C_in/groups;
// a layer of fewer channels than one of its panels (LeNet's conv1: 6) takes it with row pointers.
// A chunk's flat copies and dy^T hold at most conv_chunk_bytes() (4 MiB by default): as many whole
// images as fit, or one band of an image's output rows (the copy of the input rows it reads, see
// row_band, and its pixels' dy^T), at least one row. Bands are a whole number of depth blocks
// where that fits, so that the blocks, and the sums, are those of the whole image.
template <typename T>
void flat_wgrad(const ConvShape& s, const T* dy, const T* x, T* dw, int nthreads, bool halves) {
  const index_t G = s.groups, Cig = s.C_in / G, Cog = s.C_out / G, Kg = Cig * s.KH * s.KW, KK = s.KH * s.KW;
  // The few-columns kernel where it suits Cog columns: tap-major when its MR divides C_in/groups
  // (so no panel straddles two taps); else, for one panel of columns, with row pointers in (ci, tap)
  // order: LeNet's conv1 (3 channels in, 6 out, 5x5; fp32, AVX2, 2 threads) ran in 0.75x the time
  // of the general kernel, whose 16-wide panels would hold 6 channels (the few-columns kernel: 8)
  const MicroKernel<T>& few = micro_kernel_few_cols<T>();
  const bool take_few = &micro_kernel_few_cols<T>(Cog) == &few && (Cig % few.mr == 0 || Cog <= few.nr);
  const bool tap_major = take_few && Cig % few.mr == 0;
  const MicroKernel<T>& uk = take_few ? few : micro_kernel<T>();
  const int MR = uk.mr, NR = uk.nr;
  const index_t P = s.OH * s.OW;
  FlatLayout f = flat_layout(s, NR);  // a whole image's; a band's when one image is over the bound
  // ldt: dW^T rows one cache line longer than the panels, so that the MR rows of a tile (often a
  // power of two apart otherwise) do not all fall into the same few L1 sets
  const index_t cpanels = ceil_div(Cog, NR), kpanels = ceil_div(Kg, MR), ldt = cpanels * NR + 64 / index_t(sizeof(T));
  // elements per output row: of dy^T, and of the flat copy (C_in x phases x Wq; x itself when pointwise)
  const index_t dy_row = G * cpanels * NR * s.OW, copy_row = f.identity ? 0 : s.C_in * (f.chan / f.Hq);
  const index_t copy_rest = f.identity ? 0 : f.image - s.OH * copy_row;  // the halo rows and the slack
  const index_t per_image = copy_rest + s.OH * (copy_row + dy_row), bound = conv_chunk_bytes() / index_t(sizeof(T));
  const index_t chunk = max_i(1, min_i(s.N, bound / per_image));
  Bands rows{s.OH, 1};
  if (per_image > bound) {  // rows that fit beside the rest (16 spare: the copy's size is rounded up)
    index_t fit = min_i(s.OH, max_i(1, (bound - copy_rest - 16) / (copy_row + dy_row)));
    const index_t align = uk.kc / std::gcd(s.OW, index_t(uk.kc));  // rows of whole depth blocks
    if (fit >= align) fit -= fit % align;
    rows = Bands{fit, ceil_div(s.OH, fit)};
    if (!f.identity) f = flat_layout(row_band(s, 0, fit), NR);
  }
  if (halves && rows.count == 1 && chunk >= s.N && s.N >= 2 &&
      s.C_out * Kg * index_t(sizeof(T)) <= kHalvesMaxBytes)
    return flat_wgrad_halves(s, dy, x, dw, nthreads);
  const index_t Pc = rows.size * s.OW;              // pixels of an image in a chunk (at most)
  const index_t dy_panel = chunk * Pc * NR;         // dy^T of a panel: [image][pixel][NR], the chunk's depth
  Buffer<T> xq(f.identity ? 0 : chunk * f.image);  // shared: flat copies of one chunk
  Buffer<T> dyq(G * cpanels * dy_panel);             // shared: their packed dy^T, [group][panel]
  Buffer<T> dwt(G * kpanels * MR * ldt);             // shared: dW^T, rows and columns rounded up
  // depth step q of a chunk (pixel q % Pc of image q / Pc): its column in the images' flat copies,
  // so that one kernel call runs over the pixels of several small images
  std::vector<index_t> pix(static_cast<std::size_t>(chunk * Pc)), along(static_cast<std::size_t>(kMaxKC));
  for (index_t img = 0, q = 0; img < chunk; ++img)
    for (index_t oh = 0; oh < rows.size; ++oh)
      for (index_t ow = 0; ow < s.OW; ++ow) pix[q++] = img * f.image + oh * f.Wq + ow;
  for (index_t p = 0; p < kMaxKC; ++p) along[p] = p;  // dy's pixels, for pack_b
  // runs of tap panels: at least four units per thread (up to twice that: the run length is rounded
  // down), each run within one panel of the others' length. Rounding up (the run length for at most
  // four units) left LeNet's conv1 (10 tap panels, 2 threads) 5 runs, one thread idle a third of the
  // time, and 8 runs cut unevenly (1 or 2 panels) 1.09x the time of 10 runs of one
  const index_t target = min_i(kpanels, max_i(1, ceil_div(4 * index_t(nthreads), G * cpanels)));
  const index_t runs = ceil_div(kpanels, max_i(1, kpanels / target)), units = G * cpanels * runs;
#pragma omp parallel num_threads(nthreads)
  for (index_t piece = 0; piece < ceil_div(s.N, chunk) * rows.count; ++piece) {
    const index_t n0 = piece / rows.count * chunk, band = piece % rows.count, imgs = min_i(chunk, s.N - n0);
    const index_t oh0 = rows.first(band), Pb = rows.length(band, s.OH) * s.OW;  // Pb: an image's pixels
    if (!f.identity) flat_fill_images(row_band(s, oh0, rows.size), f, x, n0, imgs, xq.data());
#pragma omp for schedule(static)
    for (index_t job = 0; job < imgs * G * cpanels; ++job) {  // dy^T panels
      const index_t img = job / (G * cpanels), gp = job % (G * cpanels), c0 = (gp % cpanels) * NR;
      const index_t chans = min_i(NR, Cog - c0);
      const T* src = dy + ((n0 + img) * s.C_out + (gp / cpanels) * Cog + c0) * P + oh0 * s.OW;
      T* dst = dyq.data() + gp * dy_panel + img * Pb * NR;
      // blocks of kMaxKC pixels transposed by the kernel set's pack_b (a plain walk along each
      // channel wrote one element per cache line: 19% of resnet50_conv1's wgrad)
      for (index_t p0 = 0; p0 < Pb; p0 += kMaxKC)
        uk.pack_b(min_i(kMaxKC, Pb - p0), src + p0, P, along.data(), static_cast<int>(chans), dst + p0 * NR);
    }
    // pointwise: x itself, from the band's first row (its layout rows are x's)
    const T* base = f.identity ? x + n0 * f.image + oh0 * s.OW : xq.data();
#pragma omp for schedule(dynamic, 1)
    for (index_t u = 0; u < units; ++u) {
      const index_t grp = u / (cpanels * runs), rest = u % (cpanels * runs), run = rest / cpanels;
      const index_t cp = rest % cpanels, k_first = run * kpanels / runs, k_end = (run + 1) * kpanels / runs;
      const int n = static_cast<int>(min_i(NR, Cog - cp * NR));
      const T* xg = base + grp * Cig * f.chan;
      const T* bg = dyq.data() + (grp * cpanels + cp) * dy_panel;
      for (index_t pc = 0; pc < imgs * Pb; pc += uk.kc) {  // the chunk's pixels, image after image
        const index_t kcb = min_i(uk.kc, imgs * Pb - pc);
        const bool acc = piece > 0 || pc > 0;
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

}  // namespace

template <typename T>
void flat_backward_weight(const ConvShape& s, const T* dy, const T* x, T* dw, int nthreads) {
  flat_wgrad(s, dy, x, dw, nthreads, true);
}

#define FASTCONV_INSTANTIATE(T)                                                                    \
  template void gemm_backward_weight<T>(const ConvShape&, const T*, const T*, T*, int);            \
  template void flat_backward_weight<T>(const ConvShape&, const T*, const T*, T*, int);
FASTCONV_INSTANTIATE(float)
FASTCONV_INSTANTIATE(double)

}  // namespace fastconv
