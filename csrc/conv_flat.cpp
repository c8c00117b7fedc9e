// The flat layout (see FlatLayout in conv_impl.h) and the forward as a GEMM that reads its B (the
// implicit im2col) in place from it; the weight is read as it lies too (row i of A at
// w + off[p] + i*lda, see InPlaceA). Small images, where the junk columns would be 30% or more,
// pack B from the layout without them instead (see compact_forward); tiles that straddle output
// rows are staged per unit and copied to y once (see stage_tiling). Stride-1 dgrad runs this
// forward too, on dy with the flipped, transposed weight (see dgrad_as_forward in conv.cpp).
// Workspace: the flat copies of a chunk of images, at most conv_chunk_bytes() (4 MiB by default):
// as many whole images as fit, or one band of an image's output rows with the input rows it reads
// (see row_band), or, when one row does not fit, a band of a row's columns (col_band); at least
// one output pixel's (C_in x stride phases x (1 + (KH-1)*dil_h/stride_h) x (1 + (KW-1)*dil_w/
// stride_w) elements), so it never grows with H or W. Per thread: one packed B block and, staged,
// one unit's C.
#include <immintrin.h>
#include <omp.h>

#include <atomic>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "conv_impl.h"
#include "gemm.h"

namespace fastconv {

// ---------------------------------------------------------------------------------------------
// the bound on a chunk's copies
// ---------------------------------------------------------------------------------------------

namespace {

std::atomic<index_t>& chunk_bytes() {
  static std::atomic<index_t> bytes{kFlatChunkBytes};
  return bytes;
}

}  // namespace

index_t conv_chunk_bytes() { return chunk_bytes().load(); }

void set_conv_chunk_bytes(index_t bytes) {
  if (bytes < 0)
    throw std::invalid_argument("set_conv_chunk_bytes: bytes must be >= 0 (0 restores the default, " +
                                std::to_string(kFlatChunkBytes) + "), got " + std::to_string(bytes));
  chunk_bytes().store(bytes > 0 ? bytes : kFlatChunkBytes);
}

// ---------------------------------------------------------------------------------------------
// the flat layout
// ---------------------------------------------------------------------------------------------

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

namespace {

// Small images (a channel's copy within kTableChan elements, rows shorter than 16, the input plane
// within 16 x kTableChan: the table is built from a copy of it) are copied through a table: short
// rows cost the row-by-row copy per row, not per element (ResNet-18-CIFAR's 8x8 stride-2 forward
// spent 13% of its time there, copying 2 MiB).
constexpr index_t kTableChan = 4096;

bool gathers(const ConvShape& s, const FlatLayout& f) {
  return !f.identity && f.chan <= kTableChan && f.Wq < 16 && s.H * s.W <= 16 * kTableChan;
}

// Where each element of a channel's copy comes from: its index in the channel (H x W), -1 for the
// zeros (padding, junk). The copy of a channel whose elements are their own indices + 1.
std::vector<std::int32_t> gather_table(const ConvShape& s, const FlatLayout& f) {
  std::vector<std::int32_t> iota(static_cast<std::size_t>(s.H * s.W)), table(static_cast<std::size_t>(f.chan));
  for (std::size_t i = 0; i < iota.size(); ++i) iota[i] = static_cast<std::int32_t>(i + 1);
  flat_fill_channel(s, f, iota.data(), table.data());
  for (std::int32_t& t : table) --t;
  return table;
}

#pragma GCC push_options
#pragma GCC target("avx512f")
// d[e] = xc[table[e]] (0 where table[e] < 0) for e in [0, n): 16 lanes a masked gather
void gather_avx512(const float* xc, const std::int32_t* table, index_t n, float* d) {
  for (index_t e = 0; e < n; e += 16) {
    const __mmask16 in = static_cast<__mmask16>(n - e >= 16 ? 0xFFFF : (1u << (n - e)) - 1);
    const __m512i at = _mm512_maskz_loadu_epi32(in, table + e);
    const __mmask16 m = _mm512_mask_cmpge_epi32_mask(in, at, _mm512_setzero_si512());
    _mm512_mask_storeu_ps(d + e, in, _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, at, xc, 4));
  }
}
#pragma GCC pop_options

template <typename T>
void gather_channel(const T* xc, const std::int32_t* table, index_t n, T* d, bool avx512) {
  if constexpr (sizeof(T) == 4) {
    if (avx512) return gather_avx512(xc, table, n, d);
  }
  for (index_t e = 0; e < n; ++e) d[e] = table[e] >= 0 ? xc[table[e]] : T(0);
}

}  // namespace

template <typename T>
void flat_fill_images(const ConvShape& s, const FlatLayout& f, const T* x, index_t n0, index_t imgs, T* xq, bool team) {
  const index_t HW = s.H * s.W;
  const std::vector<std::int32_t> table = gathers(s, f) ? gather_table(s, f) : std::vector<std::int32_t>();
  const bool avx512 = gemm_isa_is("avx512");
  team_for(team, imgs * s.C_in, [&](index_t job) {
    const index_t img = job / s.C_in, c = job % s.C_in;
    const T* xc = x + (n0 + img) * s.C_in * HW + c * HW;
    T* dst = xq + img * f.image;
    if (table.empty())
      flat_fill_channel(s, f, xc, dst + c * f.chan);
    else
      gather_channel(xc, table.data(), f.chan, dst + c * f.chan, avx512);
    // the last channel's job zeroes the slack after the channels, which the last row's junk
    // columns read (the forward drops what they give; wgrad multiplies them by dy's zeros)
    if (c == s.C_in - 1) fill_zero(dst + s.C_in * f.chan, f.image - s.C_in * f.chan);
  }, true);
}

template void flat_fill_channel<float>(const ConvShape&, const FlatLayout&, const float*, float*);
template void flat_fill_channel<double>(const ConvShape&, const FlatLayout&, const double*, double*);
template void flat_fill_images<float>(const ConvShape&, const FlatLayout&, const float*, index_t, index_t, float*, bool);
template void flat_fill_images<double>(const ConvShape&, const FlatLayout&, const double*, index_t, index_t, double*,
                                        bool);

// ---------------------------------------------------------------------------------------------
// forward: a GEMM that reads its B (the implicit im2col) in place from a phase-split padded image
// ---------------------------------------------------------------------------------------------

namespace {

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
// forward's columns (OH*OW pixels per image, no junk) are the case OH = 1, OW = Wq = cols = pixels.
// A band of output rows and columns (then one image) is y from its first pixel on, OH x OW.
template <typename T>
struct FlatC {
  T* y;  // the group's first output channel in the first image (in a band: at the band's first pixel)
  index_t image, P, OH, OW;  // image = C_out*P, P = the layer's OH*OW: y's channel stride
  index_t ldr, Wq, cols;     // ldr: y's row stride, the layer's OW
  // Direct when the tile's columns are contiguous in y: within one output row, or, in a layout
  // without junk columns (Wq == OW: pointwise layers) whose rows are y's, anywhere within the
  // image's pixels.
  T* tile(index_t i, index_t j, index_t n, index_t& ld) const {
    const index_t img = j / cols, q = j - img * cols, oh = q / Wq, ow = q - oh * Wq;
    ld = P;
    const bool contiguous = Wq == OW && OW == ldr ? q + n <= OH * OW : oh < OH && ow + n <= OW;
    return contiguous ? y + img * image + i * P + oh * ldr + ow : nullptr;
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
      if (oh < OH && ow < OW) run(y + img * image + i * P + oh * ldr + ow, jj, min_i(len, OW - ow));
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

// A staged forward computes each unit's C into a per-thread block (row-major, the unit's columns
// wide) and copies it into y once, after the full depth. A tile that straddles output rows would
// otherwise be computed into a local tile and scattered after every depth block, and in a layout
// with junk columns most tiles of a small image straddle (59% of them at OW = 56, all at OW < NR).
// The block holds at most kStageBytes: units are cut into fewer row panels when need be, or, where
// each unit packs its B (`packs_b`: the compact forward), into fewer columns with all the rows, so
// that B is packed once and not once per row unit (ResNet-18-CIFAR's 8x8 stride-2 forward, 512
// output channels, packed B 4 times: 0.86x the time when once).
constexpr index_t kStageBytes = index_t(256) << 10;

template <typename T>
Tiling stage_tiling(const MicroKernel<T>& uk, index_t M, index_t N, int nthreads, index_t units_outside,
                    bool packs_b) {
  Tiling t = tile_product(uk, M, N, nthreads, units_outside);
  const index_t total = ceil_div(M, uk.mr), cap = max_i(1, kStageBytes / (uk.mr * t.nb * index_t(sizeof(T))));
  if (t.panels <= cap) return t;
  // the widest block of columns that holds every row, in whole panels
  const index_t widest = kStageBytes / (total * uk.mr * index_t(sizeof(T))) / uk.nr * uk.nr;
  if (packs_b && widest > 0) {
    index_t col_units = ceil_div(N, widest);
    const index_t col_panels = ceil_div(N, uk.nr);
    while ((units_outside * col_units) % nthreads != 0 && col_units < col_panels) ++col_units;
    t.nb = round_up(ceil_div(N, col_units), uk.nr);  // <= widest
    t.col_units = ceil_div(N, t.nb);
    t.panels = total;
    t.row_units = 1;
  } else {
    t.panels = cap;
    t.row_units = ceil_div(total, cap);
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
  return gemm_isa_is("avx512") && Cog >= 64 && 10 * f.cols >= 13 * P &&
         chunk * f.image < (index_t(1) << 31);
}

// The uncrowded forward's kernel: the few-rows one, or the general one where its narrower panels
// pad the product's N*P columns less (micro_kernel_few_rows(N*P); see gemm_forward). With AVX2 and
// 64+ rows also where the general one does less padded work counting each image's own padding:
// rows rounded up to its panels times every image's OH*Wq pixels rounded up to whole panels (a 4x4
// image's 16 pixels take 24 columns at the few-rows 4x24, 16 at the general 6x16; an 8x8 image's
// 64 take 72 and 64). Measured (2-core AMD EPYC Zen 1, batch 32, MobileNetV2's pointwise layers),
// general vs few-rows time: 4x4 0.52-0.68x (forward and dgrad), 8x8 0.76-0.88x; at 32x32 with 24
// output channels (equal work) 1.1-1.2x: fewer rows stay on the few-rows kernel. With AVX-512
// small images take the compact forward (no per-image padding: see compact_forward).
template <typename T>
const MicroKernel<T>& flat_kernel(const ConvShape& s) {
  const MicroKernel<T>& few = micro_kernel_few_rows<T>();
  const MicroKernel<T>& general = micro_kernel<T>();
  const MicroKernel<T>& by_columns = micro_kernel_few_rows<T>(s.N * s.OH * s.OW);
  const index_t M = s.C_out / s.groups;
  if (!gemm_isa_is("avx2") || M < 64 || &by_columns == &general) return by_columns;
  const index_t pixels = is_pointwise(s) ? s.H * s.W : s.OH * (s.OW + (s.KW - 1) * s.dil_w / s.stride_w);
  const auto work = [&](const MicroKernel<T>& uk) {
    return round_up(M, index_t(uk.mr)) * round_up(pixels, index_t(uk.nr));
  };
  return work(general) < work(few) ? general : few;
}

}  // namespace

template <typename T>
void gemm_forward(const ConvShape& s, const T* x, const WeightA<T>& wa, const T* b, T* y, int nthreads) {
  const index_t G = s.groups, Cig = s.C_in / G, Cog = s.C_out / G, Kg = Cig * s.KH * s.KW;
  const index_t P = s.OH * s.OW;
  const bool crowded = l1_crowded<T>(wa.lda, wa.off, Kg);
  // Read in place, the weight costs the micro-kernel a chain of address adds per row of A, so the
  // few-rows kernel beats the general one whatever the rows: 8x48 against 14x32 (AVX-512 fp32,
  // single thread) 0.86-0.92x the time with 64 output channels, 0.92-0.96x with 128 to 256. Unless
  // its wider panels pad the pixels much more: a 7x7 image's 49 take 96 columns against 64, and
  // resnet50_3x3_512_7_b1's dgrad ran in 0.77-0.82x the time on the general kernel. A packed
  // weight (crowded) takes the kernel that suits its rows: 8x48 was 1.06-1.16x there.
  const MicroKernel<T>& uk = crowded ? micro_kernel<T>(Cog) : flat_kernel<T>(s);
  FlatLayout f = flat_layout(s, uk.nr);  // a whole image's; a band's when one image is over the bound
  const index_t bound = conv_chunk_bytes() / index_t(sizeof(T));  // elements
  // A chunk: the flat copies of as many whole images as fit in the bound, or, when one image does
  // not, of one band of its output rows: a band of r rows holds OH - r plane rows fewer than the
  // image, of C_in x phases x Wq elements each (16 spare: the copy's size is rounded up to 16).
  // When one row does not fit either, bands of one row are cut into bands of its output columns:
  // a plane column of one row's band is C_in x phases x (1 + the rows' halo) elements, plus one of
  // the zeros a panel over-reads. Every band but the last has rows.size rows (cols.size columns);
  // the last one, shorter, runs in the same layout and leaves the rest out. Pointwise layers read
  // x itself, all of it at once.
  const bool banded = !f.identity && f.image > bound;
  // Private pieces: with images to spare, each thread fills and multiplies chunks of whole images of
  // its own (its share of the bound), taking the next chunk when done: no barrier inside a call, no
  // copy shared across cores, and one thread's copy overlaps the other's product. Otherwise the team
  // shares each chunk (as many images as the bound holds, or a band): the copy split by channels, the
  // product by units, a barrier after each. Measured (2 threads, Zen 5), private vs shared time:
  // ResNet-18-CIFAR's stride-2 forwards 0.86-0.92x at 32x32 and 16x16, 1.03x at 8x8, 16x128x56x56
  // stride 2 0.95x, a 3-channel 32x32 first layer 0.96x; chunks of at most 1 MiB or 512 KiB a thread
  // (in L2) ran 0.93-1.27x the time of these.
  // With fewer images than threads, the private pieces are bands of output rows, one a thread over
  // the batch, each band's copy with its halo rows (as when an image is over the bound): where the
  // bands are 4+ column panels wide and the weight, which every band reads, is at most a quarter of a
  // band's copy. Measured (2 threads, Zen 5), bands vs shared: the cores on one die, a 7x7 stride-2
  // 3 -> 64 first layer at 224x224 0.97x, 64 -> 64 stride 2 at 112x112 0.96x; on two dies (two bands
  // a thread) 0.82x and 0.71x; but 128 -> 128 stride 2 at 56x56, whose 590 KB weight each band read
  // again, 1.06x (one band a thread) and 1.18x (two) on one die, 0.85x on two: it stays shared
  // unless the cores sit on different dies now (cores_apart, measured as calls come): there it ran
  // 0.82x the time of the shared copy, and its sub-pixel dgrad, whose phases are such forwards, 0.88x.
  const index_t own = f.identity ? 0 : bound / nthreads / f.image;
  bool alone = nthreads > 1 && !banded && own >= 1 && s.N >= 2 * nthreads;
  index_t chunk = f.identity ? s.N : max_i(1, min_i(s.N, bound / f.image));
  if (alone)  // the fewest chunks, in a multiple of the threads, of at most `own` images each
    chunk = ceil_div(s.N, round_up(ceil_div(s.N, own), index_t(nthreads)));
  Bands rows{s.OH, 1}, cols{s.OW, 1};
  if (nthreads > 1 && !banded && !f.identity && s.N < nthreads) {
    const Bands few = even_bands(s.OH, ceil_div(s.OH, ceil_div(nthreads, s.N)));
    const FlatLayout fb = flat_layout(row_band(s, 0, few.size), uk.nr);
    if (few.count > 1 && few.size * fb.Wq >= 4 * uk.nr && nthreads * fb.image <= bound &&
        (4 * s.C_out * Kg <= fb.image || cores_apart(nthreads))) {
      alone = true;
      chunk = 1;
      rows = few;
      f = fb;
    }
  }
  if (banded) {
    const index_t phases = static_cast<index_t>(f.phases.size()), halo_h = f.Hq - s.OH, halo_w = f.Wq - s.OW;
    const index_t fit_rows = s.OH - ceil_div(f.image - bound + 16, s.C_in * phases * f.Wq);
    rows = even_bands(s.OH, fit_rows);
    if (fit_rows < 1) cols = even_bands(s.OW, (bound - uk.nr - 16) / (s.C_in * phases * (1 + halo_h) + 1) - halo_w);
    f = flat_layout(col_band(row_band(s, 0, rows.size), 0, cols.size), uk.nr);
  }
  const index_t copy = f.identity ? 0 : chunk * f.image;
  Buffer<T> shared_xq(alone ? 0 : copy);  // the flat copies of one chunk, shared by the team
  // (bands of columns are not contiguous in y: they read B in place)
  const bool compact = cols.count == 1 && compact_forward(f, rows.size * s.OW, Cog, chunk);
#pragma omp parallel num_threads(nthreads)
  {
    Buffer<T> own_xq(alone ? copy : 0);  // per thread, private pieces: its chunk's flat copies
    T* xq = alone ? own_xq.data() : shared_xq.data();
    Buffer<T> bbuf(packed_b_size(uk));  // per thread: the panels a source cannot serve in place
    Buffer<T> stage(0);                 // per thread, when staged: one unit's C (see stage_tiling)
    // private pieces: the pieces shared out, each one's copy and units on one thread; else every
    // thread takes every piece, whose copy and units are shared out
    team_for(alone, ceil_div(s.N, chunk) * rows.count * cols.count, [&](index_t piece) {
      const index_t n0 = piece / (rows.count * cols.count) * chunk, imgs = min_i(chunk, s.N - n0);
      const index_t band = piece / cols.count % rows.count, part = piece % cols.count;
      const index_t oh0 = rows.first(band), OHb = rows.length(band, s.OH);
      const index_t ow0 = cols.first(part), OWb = cols.length(part, s.OW), Pb = OHb * OWb;  // Pb: an image's pixels
      if (!f.identity)
        flat_fill_images(col_band(row_band(s, oh0, rows.size), ow0, cols.size), f, x, n0, imgs, xq, !alone);
      const T* base = f.identity ? x + n0 * f.image : xq;
      // GEMM columns per image: without junk, or OHb rows of Wq (f.cols, but in a last band)
      const index_t per_image = compact ? Pb : round_up(OHb * f.Wq, uk.nr);
      // Tiles that straddle output rows (junk between them) or images (compact) are staged where the
      // depth takes more than one block (see stage_tiling) or where the rows are narrower than a
      // panel (every tile straddles: one copy per unit beat one per tile, LeNet's conv2 forward
      // 0.95x the time). With one depth block and wider rows the tiles within a row are stored in y
      // directly and only the straddling ones go through a tile: resnet50_conv1_7x7s2_b16's forward
      // (depth 147, rows of 112) ran in 0.90x the time of staging every tile (2 threads, Zen 5).
      const bool straddles = compact ? Pb % uk.nr != 0 : f.Wq != OWb;
      const bool staged = straddles && (Kg > uk.kc || (compact ? Pb : OWb) < uk.nr);
      const int team = alone ? 1 : nthreads;
      const Tiling t = staged ? stage_tiling(uk, Cog, imgs * per_image, team, G, compact)
                              : tile_product(uk, Cog, imgs * per_image, team, G);
      if (staged && stage.size() < t.panels * uk.mr * t.nb) stage.resize(t.panels * uk.mr * t.nb);
      team_for(!alone, G * t.units(), [&](index_t u) {
        const index_t grp = u / t.units(), rest = u % t.units();
        const index_t p0 = (rest / t.col_units) * t.panels, p1 = min_i(p0 + t.panels, ceil_div(Cog, uk.mr));
        const index_t j0 = (rest % t.col_units) * t.nb, nb = min_i(t.nb, imgs * per_image - j0);
        const index_t i0 = p0 * uk.mr, i1 = min_i(Cog, p1 * uk.mr);
        const InPlaceA<T> a{wa.w + grp * wa.group, wa.lda, wa.off, Cog, crowded};
        const T* xg = base + grp * Cig * f.chan;
        T* yg = y + (n0 * s.C_out + grp * Cog) * P + oh0 * s.OW + ow0;
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
          product(CompactFlatB<T>{xg, &f, f.off.data(), Pb, s.OW}, FlatC<T>{yg, s.C_out * P, P, 1, Pb, Pb, Pb, Pb});
        else
          product(FlatB<T>{xg, &f, f.off.data()}, FlatC<T>{yg, s.C_out * P, P, OHb, OWb, s.OW, f.Wq, f.cols});
      });
    });
  }
}

template void gemm_forward<float>(const ConvShape&, const float*, const WeightA<float>&, const float*, float*, int);
template void gemm_forward<double>(const ConvShape&, const double*, const WeightA<double>&, const double*, double*,
                                   int);

}  // namespace fastconv
