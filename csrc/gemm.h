// Packed, register-blocked GEMM (GotoBLAS/BLIS structure), shared by convolution and linear.
//
//   for each column block of C (<= NC columns, one unit of work for one thread):
//     for each depth block pc (<= KC):             pack B[pc block, column block] -> [panel][p][NR]
//       for each MR-row panel of A (packed once): (A micro-panel stays in L1)
//         for each NR-column panel of B:          (the packed B block stays in L2)
//           micro-kernel: C tile (+)= A panel * B panel
//
// B is packed by a caller-supplied functor, so convolution packs B straight from the image
// (implicit im2col: no im2col matrix exists, only one packed KC x NC block per thread), and C is
// addressed through a small map, so one GEMM can span several images' pixels.
// Reductions are never split across threads here: every element of C is one sum over the depth
// in a fixed order (KC blocks in turn, each accumulated from zero then added), whatever the
// number of threads or the placement of tile edges.
#pragma once

#include <string>
#include <type_traits>

#include "common.h"
#include "gemm_kernel.h"

namespace fastconv {

constexpr int kMaxMR = 16;
constexpr int kMaxNR = 48;
constexpr index_t kMaxKC = 256;  // every kernel set's kc is at most this (sizes stack arrays of runs)

// The micro-kernel chosen for this CPU (AVX-512F, else AVX2+FMA, else portable C++).
template <typename T>
const MicroKernel<T>& micro_kernel();
// The one of this CPU's kernels that suits a product of M rows (see KernelTable).
template <typename T>
const MicroKernel<T>& micro_kernel(index_t M);
// This CPU's few-rows kernel; and the one that suits a product of N columns, it or the general one
// (whose panels are narrower: see pick in gemm.cpp).
template <typename T>
const MicroKernel<T>& micro_kernel_few_rows();
template <typename T>
const MicroKernel<T>& micro_kernel_few_rows(index_t N);
// This CPU's few-columns kernel; and the one that suits a product of N columns, the general or it.
template <typename T>
const MicroKernel<T>& micro_kernel_few_cols();
template <typename T>
const MicroKernel<T>& micro_kernel_few_cols(index_t N);
// This CPU's dot kernel (see DotKernel): fp32, and fn is null where the kernel set has none.
const DotKernel<float>& dot_kernel();
// This CPU's channels kernel (see ChanKernel): fp32, and fn is null where the kernel set has none.
const ChanKernel<float>& chan_kernel();
// "avx512", "avx2" or "generic": the kernels in use.
const char* gemm_isa();
// Whether the kernels in use are the set `name` ("avx512", "avx2" or "generic").
bool gemm_isa_is(const char* name);
// The L2 size the blocking is taken from, in bytes per core: FASTCONV_L2_BYTES where set (read
// once, at the first GEMM), else sysfs's (cpu0's cache/index*), else 1 MiB (the Intel server cores
// the constants were first tuned on); source: "env", "sysfs" or "default".
struct CacheSizes {
  index_t l2;
  const char* l2_source;
};
const CacheSizes& cache_sizes();
// The rate, in GFLOP/s, at which the fp32 micro-kernel in use runs on this core now, its panels in
// L1: the median of 1 ms slices over `seconds`. How fast this core runs now: on a shared VM it
// moves 2x from minute to minute, so the benchmark records it before and after a run.
double kernel_gflops(double seconds);
// The time, in ns, for two threads to hand a cache line to each other and back: the median of
// slices of 200 round trips over `seconds`. Where the OS puts them: on a 2-core VM, the two vCPUs,
// which sometimes sit on one die (~80 ns on Zen 5) and sometimes on two (~390 ns); work that
// shares data between the cores runs slower then (see the benchmark's warnings).
double core_round_trip_ns(double seconds);
// Whether a team of `nthreads` has threads on different dies now: a round trip of a cache line
// between its first and last thread of 250 ns or more (see core_round_trip_ns), measured inside a
// team of that size at most every 100 ms (a few microseconds each time), else the last answer.
// Work that the threads share (a copy one fills and both read) runs 1.3-1.5x slower then, where
// private pieces do not (see gemm_forward). set_cores_apart: -1 measures (the default), 0 or 1
// answers for every team of 2+ threads from then on (tests; std::invalid_argument otherwise).
bool cores_apart(int nthreads);
void set_cores_apart(int forced);
// Use another kernel set ("auto" = the best this CPU has). Throws std::invalid_argument for a set
// this CPU or build cannot run. For tests and benchmarks; not meant to race with running ops.
void set_gemm_isa(const std::string& name);

// ---------------------------------------------------------------------------------------------
// packing
// ---------------------------------------------------------------------------------------------

// The depth of each packed block for a product of depth K: at most KC, and as even as possible
// (K = 576 runs as 3 x 192, not 256 + 256 + 64, whose last short block would waste the C traffic).
template <typename T>
inline index_t depth_block(const MicroKernel<T>& uk, index_t K) {
  return ceil_div(K, ceil_div(K, uk.kc));
}

// Elements of a packed A of M rows and depth K: rows rounded up to whole MR panels.
template <typename T>
inline index_t packed_a_size(const MicroKernel<T>& uk, index_t M, index_t K) {
  return round_up(M, uk.mr) * K;
}

// Start of row panel `panel` in depth block `pc` of a packed A; layout [pc block][panel][p][MR].
template <typename T>
inline const T* packed_a_panel(const MicroKernel<T>& uk, const T* ap, index_t M, index_t pc, index_t panel,
                               index_t kcb) {
  return ap + pc * round_up(M, uk.mr) + panel * uk.mr * kcb;
}

// Where element (i, p) of an M x K A lies in its packed form (the layout of packed_a_panel).
template <typename T>
inline index_t packed_a_index(const MicroKernel<T>& uk, index_t M, index_t K, index_t i, index_t p) {
  const index_t kc = depth_block(uk, K), pc = p / kc * kc, kcb = min_i(kc, K - pc);
  return pc * round_up(M, uk.mr) + (i / uk.mr) * uk.mr * kcb + (p - pc) * uk.mr + i % uk.mr;
}

// Number of independent packing jobs (one per depth block and row panel) of an M x K A.
template <typename T>
inline index_t pack_a_jobs(const MicroKernel<T>& uk, index_t M, index_t K) {
  return ceil_div(K, depth_block(uk, K)) * ceil_div(M, uk.mr);
}

// Packing job `job` of A(i, p) = a[i*rs + p*cs], i < M, p < K, into `dst` (rows past M are zero).
template <typename T>
void pack_a_job(const MicroKernel<T>& uk, const T* a, index_t rs, index_t cs, index_t M, index_t K, T* dst,
                index_t job) {
  const int MR = uk.mr;
  const index_t panels = ceil_div(M, MR), kc = depth_block(uk, K);
  const index_t pc = (job / panels) * kc, panel = job % panels;
  const index_t kcb = min_i(kc, K - pc);
  T* d = dst + pc * round_up(M, MR) + panel * MR * kcb;
  const index_t i0 = panel * MR;
  index_t off[kMaxKC];  // depth step p at p*cs
  for (index_t p = 0; p < kcb; ++p) off[p] = p * cs;
  uk.pack_a(kcb, a + i0 * rs + pc * cs, rs, off, static_cast<int>(min_i(MR, M - i0)), d);
}

// The whole of A, packed by the calling thread alone.
template <typename T>
void pack_a(const MicroKernel<T>& uk, const T* a, index_t rs, index_t cs, index_t M, index_t K, T* dst) {
  for (index_t job = 0, jobs = pack_a_jobs(uk, M, K); job < jobs; ++job) pack_a_job(uk, a, rs, cs, M, K, dst, job);
}

// Pack B(p, j) = b[p*rs + j*cs] for depth rows [pc, pc+kcb) and columns [j0, j0+nb) into
// [panel][p][NR], zero-padding the last panel.
template <typename T>
struct StridedB {
  const T* b;
  index_t rs, cs;
  void operator()(const MicroKernel<T>& uk, index_t pc, index_t kcb, index_t j0, index_t nb, T* dst) const {
    const int NR = uk.nr;
    if (cs == 1) {
      // depth step by depth step across all the block's panels: a step's nb elements lie together
      // in B and are read in one sweep. Panel by panel, each row of B was entered nb/NR times for
      // NR elements: linear's dgrad (B its 4096 x 4096 weight, 16 KiB rows) took 1.3-1.4x the time
      // (bit-identical results); the strided conv dgrad's and linear's wgrad were within the noise.
      for (index_t p = 0; p < kcb; ++p) {
        const T* src = b + (pc + p) * rs + j0;
        for (index_t jr = 0; jr < nb; jr += NR) {
          const int cols = static_cast<int>(min_i(NR, nb - jr));
          T* d = dst + jr * kcb + p * NR;
          for (int r = 0; r < cols; ++r) d[r] = src[jr + r];
          for (int r = cols; r < NR; ++r) d[r] = T(0);
        }
      }
      return;
    }
    // a transposed B (e.g. linear's weight): B's columns are the panels' rows
    index_t off[kMaxKC];  // depth step p at p*rs
    for (index_t p = 0; p < kcb; ++p) off[p] = p * rs;
    for (index_t jr = 0; jr < nb; jr += NR)
      uk.pack_b(kcb, b + (j0 + jr) * cs + pc * rs, cs, off, static_cast<int>(min_i(NR, nb - jr)), dst + jr * kcb);
  }
};

// A B packed beforehand, N columns and depth K: [depth block][NR-column panel][p][NR], the layout of
// a packed A with rows and columns swapped (see packed_b_index); the last panel's columns past N
// must hold finite values (their C columns are computed and dropped). gemm_unit packs nothing.
template <typename T>
struct PrepackedB {
  static constexpr bool kPrepacked = true;
  const T* bp;
  index_t N;
  const T* panel(const MicroKernel<T>& uk, index_t pc, index_t kcb, index_t j) const {
    return bp + pc * round_up(N, uk.nr) + j * kcb;
  }
};

// Where element (p, j) of a K x N B lies in its packed form (PrepackedB).
template <typename T>
inline index_t packed_b_index(const MicroKernel<T>& uk, index_t K, index_t N, index_t p, index_t j) {
  const index_t kc = depth_block(uk, K), pc = p / kc * kc, kcb = min_i(kc, K - pc);
  return pc * round_up(N, uk.nr) + (j / uk.nr) * uk.nr * kcb + (p - pc) * uk.nr + j % uk.nr;
}

// ---------------------------------------------------------------------------------------------
// C addressing
// ---------------------------------------------------------------------------------------------

// Row-major C; GEMM element (i, j) is c[(i - i0)*ldc + (j - j0)].
template <typename T>
struct PlainC {
  T* c;
  index_t ldc;
  index_t i0 = 0, j0 = 0;
  T* tile(index_t i, index_t j, index_t /*n*/, index_t& ld) const {
    ld = ldc;
    return c + (i - i0) * ldc + (j - j0);
  }
  void scatter(index_t, index_t, int, int, const T*, int, bool) const {}  // tiles never straddle
};

// ---------------------------------------------------------------------------------------------
// A operands: where gemm_unit finds each MR-row micro-panel of A for one depth block
// ---------------------------------------------------------------------------------------------

// One A micro-panel as the kernel reads it: packed [p][MR] when off is null, else element (i, p) at
// a + off[p] + i*lda.
template <typename T>
struct APanel {
  const T* a;
  index_t lda;
  const index_t* off;
};

// A packed beforehand (pack_a_job), shared by all threads.
template <typename T>
struct PrepackedA {
  const T* ap;
  index_t M;
  APanel<T> panel(const MicroKernel<T>& uk, index_t pc, index_t panel, index_t kcb, T* /*scratch*/) const {
    return {packed_a_panel(uk, ap, M, pc, panel, kcb), 0, nullptr};
  }
};

// A read where it lies: A(i, p) = a[off[p] + i*lda], off over the full depth. A weight is an A of
// this kind in any order of its depth (the forward: rows of Kg, off[p] = p; dgrad: the flipped,
// transposed weight, see dgrad_as_forward), so nothing is packed (for small images packing a large
// weight cost as much as the product: 41% of resnet50_3x3_512_7_b1's forward). A panel is packed
// into the caller's scratch (MR x kcb, by the kernel set's pack_a) instead when it is the ragged
// last one, whose missing rows would read past A, or when A's layout makes a panel's cache lines
// pile into a few of L1's sets (see l1_crowded): read in place it would then come from L2 at every
// step.
template <typename T>
struct InPlaceA {
  const T* a;
  index_t lda;
  const index_t* off;
  index_t M;
  bool crowded;  // pack every panel
  APanel<T> panel(const MicroKernel<T>& uk, index_t pc, index_t panel, index_t kcb, T* scratch) const {
    const index_t i0 = panel * uk.mr;
    if (i0 + uk.mr <= M && !crowded) return {a + i0 * lda, lda, off + pc};
    uk.pack_a(kcb, a + i0 * lda, lda, off + pc, static_cast<int>(min_i(uk.mr, M - i0)), scratch);
    return {scratch, 0, nullptr};
  }
};

// Whether A panels read in place (element (i, p) at off[p] + i*lda) would pile their cache lines
// into one or two of L1's 64 sets, more lines than its 8 ways, so the panel could not stay in L1
// while the kernel sweeps B: when its rows, or its first two depth steps, are a multiple of 2 KiB
// apart. Measured: pointwise C_in = 1024 forward (rows 4 KiB apart) 1.9x slower in place, its dgrad
// (depth steps 4 KiB apart) 3x; a finer count of lines per set also flagged layers that run well in
// place (3x3 dgrad, rows 36 B and channels 18 KiB apart: 1.25x slower packed).
template <typename T>
bool l1_crowded(index_t lda, const index_t* off, index_t K) {
  const auto aliased = [](index_t elements) { return elements != 0 && (elements * index_t(sizeof(T))) % 2048 == 0; };
  return aliased(lda) || (K > 1 && aliased(off[1] - off[0]));
}

// ---------------------------------------------------------------------------------------------
// the blocked product for one unit of work
// ---------------------------------------------------------------------------------------------

// Elements of the per-thread packed-B block: the only per-thread GEMM workspace.
template <typename T>
inline index_t packed_b_size(const MicroKernel<T>& uk) {
  return uk.kc * round_up(uk.nc, uk.nr);
}

// A B source is a functor packing one KC x NC block of B (see StridedB), or B packed beforehand
// (PrepackedB: kPrepacked = true, bbuf unused). A source may instead
// leave B where it lies (kInPlace = true): it then packs only the NR-panels it cannot serve in
// place, and for the others in_place(j) returns where the panel starting at column j begins, its
// row p being at that pointer + off[p] (NR contiguous elements), p counted over the full depth.
template <class PackB, class = void>
struct reads_in_place : std::false_type {};
template <class PackB>
struct reads_in_place<PackB, std::void_t<decltype(PackB::kInPlace)>> : std::bool_constant<PackB::kInPlace> {};
template <class PackB, class = void>
struct prepacked : std::false_type {};
template <class PackB>
struct prepacked<PackB, std::void_t<decltype(PackB::kPrepacked)>> : std::bool_constant<PackB::kPrepacked> {};

// C[rows of panels [p0, p1), columns [j0, j0+nb)] (+)= A * B over the full depth K, where `A` is an
// A operand of A.M rows (PrepackedA, InPlaceA), `pack_b` fills the packed B block and `bbuf` holds
// packed_b_size. nb may exceed NC: the columns are then done NC at a time. accumulate=false
// overwrites C.
template <typename T, class AOp, class PackB, class CMap>
void gemm_unit(const MicroKernel<T>& uk, const AOp& A, index_t K, index_t p0, index_t p1, const PackB& pack_b,
               index_t j0, index_t nb, const CMap& cmap, T* bbuf, bool accumulate) {
  const int MR = uk.mr, NR = uk.nr;
  alignas(64) T tile[kMaxMR * kMaxNR];
  alignas(64) T scratch[kMaxMR * kMaxKC];  // a ragged A panel, packed (InPlaceA)
  const index_t row_end = min_i(A.M, p1 * MR), kc = depth_block(uk, K);
  for (index_t jc = 0; jc < nb; jc += uk.nc) {
    const index_t ncb = min_i(uk.nc, nb - jc);
    for (index_t pc = 0; pc < K; pc += kc) {
      const index_t kcb = min_i(kc, K - pc);
      const bool acc = accumulate || pc > 0;
      if constexpr (!prepacked<PackB>::value) pack_b(uk, pc, kcb, j0 + jc, ncb, bbuf);
      for (index_t panel = p0; panel < p1; ++panel) {
        const index_t i = panel * MR;
        const int m = static_cast<int>(min_i(MR, row_end - i));
        const APanel<T> a = A.panel(uk, pc, panel, kcb, scratch);
        for (index_t jr = 0; jr < ncb; jr += NR) {
          const int n = static_cast<int>(min_i(NR, ncb - jr));
          const index_t j = j0 + jc + jr;
          auto product = [&](T* c, index_t ld, bool add) {
            if constexpr (reads_in_place<PackB>::value) {
              if (const T* b = pack_b.in_place(j)) {
                const index_t* off = pack_b.off + pc;
                return a.off ? uk.fn_both_offsets(kcb, a.a, a.lda, a.off, b, off, c, ld, add, m, n)
                             : uk.fn_offsets(kcb, a.a, b, off, c, ld, add, m, n);
              }
            }
            const T* b;
            if constexpr (prepacked<PackB>::value) {
              b = pack_b.panel(uk, pc, kcb, j);
            } else {
              b = bbuf + jr * kcb;
            }
            a.off ? uk.fn_a_offsets(kcb, a.a, a.lda, a.off, b, c, ld, add, m, n) : uk.fn(kcb, a.a, b, c, ld, add, m, n);
          };
          index_t ld;
          T* c = cmap.tile(i, j, n, ld);
          if (c) {
            product(c, ld, acc);
          } else {
            product(tile, NR, false);
            cmap.scatter(i, j, m, n, tile, NR, acc);
          }
        }
      }
    }
  }
}

// How to cut an M x N product into units for `nthreads` threads: column blocks of nb columns
// (a multiple of NR, at most NC) times row blocks of `panels` MR-panels. Aims at >= 2 units per
// thread (dynamic scheduling evens out ragged units), splitting rows before shrinking columns.
// Few units are cut evenly and in a multiple of the threads (with the `units_outside` the caller
// runs them in, e.g. groups): 812 columns as 240+240+240+92 on 2 threads kept one thread waiting
// for 18% of resnet50_3x3s2_128_56to28_b1's forward; 4 x 216 columns ran it in 0.8x the time.
// Column blocks never change a sum, so results stay the same for any cut.
struct Tiling {
  index_t nb, col_units, panels, row_units;
  index_t units() const { return col_units * row_units; }
};

template <typename T>
inline Tiling tile_product(const MicroKernel<T>& uk, index_t M, index_t N, int nthreads, index_t units_outside = 1) {
  const index_t want = nthreads > 1 ? ceil_div(2 * nthreads, units_outside) : 1;
  const index_t total_panels = ceil_div(M, uk.mr), col_panels = ceil_div(N, uk.nr);
  index_t col_units = ceil_div(N, min_i(uk.nc, round_up(N, uk.nr)));
  index_t row_units = 1;
  if (col_units < want) row_units = min_i(total_panels, ceil_div(want, col_units));
  if (col_units * row_units < want) col_units = min_i(col_panels, ceil_div(want, row_units));
  if (nthreads > 1 && units_outside * col_units * row_units < 8 * nthreads)
    while ((units_outside * col_units * row_units) % nthreads != 0 && col_units < col_panels) ++col_units;
  const index_t nb = round_up(ceil_div(N, col_units), uk.nr);  // even blocks, the last one at most NR short
  const index_t panels = ceil_div(total_panels, row_units);
  return Tiling{nb, ceil_div(N, nb), panels, ceil_div(total_panels, panels)};
}

// C (M x N, row-major, ldc) = A * B with A(i,p) = a[i*rsa + p*csa], B(p,j) = b[p*rsb + j*csb],
// on `nthreads` threads (one OpenMP team; the micro-kernels are single-threaded).
template <typename T>
void gemm(index_t M, index_t N, index_t K, const T* a, index_t rsa, index_t csa, const T* b, index_t rsb,
          index_t csb, T* c, index_t ldc, int nthreads);

}  // namespace fastconv
