// The GEMM micro-kernel, written once over a small "vector traits" type V and instantiated by each
// instruction-set translation unit (gemm_avx512.cpp, gemm_avx2.cpp, gemm.cpp's portable one).
//
// Include this file INSIDE an anonymous namespace, after <immintrin.h>: every function here then
// has internal linkage, so the linker can never hand an AVX-512-compiled copy of it to code that
// runs on a CPU without AVX-512 (the classic ODR trap of per-file -m flags).
//
// Register blocking, row-major C (BLIS/GotoBLAS with the roles of the operands as in row-major):
// C[MR x NR] += A_panel[MR x kc] * B_panel[kc x NR], NR = NV vectors of V::L lanes.
//   a: packed [kc][MR]  -- broadcast one scalar per row
//   b: packed [kc][NR], or rows in place (ukernel_offsets) -- NV vector loads per k
// MR*NV accumulators + NV B vectors + 1 broadcast must fit the register file (AVX-512: 14x2 + 2 + 1
// = 31 of 32 zmm; AVX2: 6x2 + 2 + 1 = 15 of 16 ymm).
//
// The tile is always computed in full (packing zero-pads ragged edges), then stored in full, or
// through a local tile when m < MR or n < NR. Both stores do the same arithmetic, C = acc or
// C = C + acc, so an element's value never depends on where tile edges fall: results are the same
// for every thread count and blocking of the non-reduced dimensions.

// The operands' sources. A: packed [kc][MR] (one scalar of each row per step), MR rows read in
// place at the steps of one table (element off[p] of each; wgrad reads image rows so, pixel by
// pixel), or element (i, p) at a + off[p] + i*lda (a weight as it lies, in any order of its depth:
// the forward and dgrad read it so, unpacked). B: packed [kc][NR], or rows read in place at
// b + off[p] (the forward reads an image so: a row of NR pixels is contiguous there).
template <typename T, int MR>
struct PackedA {
  const T* a;
  T at(int i, index_t p) const { return a[p * MR + i]; }
};
template <typename T, int MR>
struct RowsA {
  const T* rows[MR];
  const index_t* off;
  T at(int i, index_t p) const { return rows[i][off[p]]; }
};
template <typename T, int MR>
struct OffsetA {
  const T* a;
  index_t lda;
  const index_t* off;
  T at(int i, index_t p) const { return a[off[p] + i * lda]; }
};
template <typename T, int NR>
struct PackedB {
  static constexpr bool kPrefetch = false;
  const T* b;
  const T* row(index_t p) const { return b + p * NR; }
};
// Rows read in place lie anywhere (channel planes apart): no hardware prefetcher follows them, so
// each step asks for the row kPrefetchRows ahead (see gemm_kernel.h).
template <typename T>
struct OffsetB {
  static constexpr bool kPrefetch = true;
  const T* b;
  const index_t* off;
  const T* row(index_t p) const { return b + off[p]; }
};

template <class V, int MR, int NV, class ASrc, class BSrc>
inline __attribute__((always_inline)) void ukernel_body(index_t kc, const ASrc& A, const BSrc& B,
                                                        typename V::T* __restrict c, index_t ldc, bool accumulate,
                                                        int m, int n) {
  using T = typename V::T;
  using R = typename V::R;
  constexpr int L = V::L;
  constexpr int NR = NV * L;
  R acc[MR][NV];
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[i][v] = V::zero();

  for (index_t p = 0; p < kc; ++p) {
    const T* bp = B.row(p);
    if constexpr (BSrc::kPrefetch) {
      const char* ahead = reinterpret_cast<const char*>(B.row(p + kPrefetchRows));
      for (int l = 0; l < int(NR * sizeof(T)); l += 64) __builtin_prefetch(ahead + l);
      __builtin_prefetch(ahead + NR * sizeof(T) - 1);
    }
    R bv[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) bv[v] = V::load(bp + v * L);
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) {
      const R ai = V::set1(A.at(i, p));
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[i][v] = V::fma(ai, bv[v], acc[i][v]);
    }
  }

  if (m == MR && n == NR) {
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) {
        T* cp = c + i * ldc + v * L;
        V::store(cp, accumulate ? V::add(V::load(cp), acc[i][v]) : acc[i][v]);
      }
    return;
  }
  alignas(64) T tile[MR * NR];
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) V::store(tile + i * NR + v * L, acc[i][v]);
  for (int i = 0; i < m; ++i)
    for (int j = 0; j < n; ++j) c[i * ldc + j] = accumulate ? c[i * ldc + j] + tile[i * NR + j] : tile[i * NR + j];
}

// A and B packed.
template <class V, int MR, int NV>
void ukernel(index_t kc, const typename V::T* a, const typename V::T* b, typename V::T* c, index_t ldc,
             bool accumulate, int m, int n) {
  using T = typename V::T;
  ukernel_body<V, MR, NV>(kc, PackedA<T, MR>{a}, PackedB<T, NV * V::L>{b}, c, ldc, accumulate, m, n);
}

// A packed, B row p at b + off[p].
template <class V, int MR, int NV>
void ukernel_offsets(index_t kc, const typename V::T* a, const typename V::T* b, const index_t* off,
                     typename V::T* c, index_t ldc, bool accumulate, int m, int n) {
  using T = typename V::T;
  ukernel_body<V, MR, NV>(kc, PackedA<T, MR>{a}, OffsetB<T>{b, off}, c, ldc, accumulate, m, n);
}

// A(i, p) at rows[i][off[p]] (MR rows), B packed.
template <class V, int MR, int NV>
void ukernel_rows(index_t kc, const typename V::T* const* rows, const index_t* off, const typename V::T* b,
                  typename V::T* c, index_t ldc, bool accumulate, int m, int n) {
  using T = typename V::T;
  RowsA<T, MR> A;
  for (int i = 0; i < MR; ++i) A.rows[i] = rows[i];
  A.off = off;
  ukernel_body<V, MR, NV>(kc, A, PackedB<T, NV * V::L>{b}, c, ldc, accumulate, m, n);
}

// A(i, p) at a + aoff[p] + i*lda, B packed.
template <class V, int MR, int NV>
void ukernel_a_offsets(index_t kc, const typename V::T* a, index_t lda, const index_t* aoff, const typename V::T* b,
                       typename V::T* c, index_t ldc, bool accumulate, int m, int n) {
  using T = typename V::T;
  ukernel_body<V, MR, NV>(kc, OffsetA<T, MR>{a, lda, aoff}, PackedB<T, NV * V::L>{b}, c, ldc, accumulate, m, n);
}

// A(i, p) at a + aoff[p] + i*lda, B row p at b + boff[p].
template <class V, int MR, int NV>
void ukernel_both_offsets(index_t kc, const typename V::T* a, index_t lda, const index_t* aoff,
                          const typename V::T* b, const index_t* boff, typename V::T* c, index_t ldc, bool accumulate,
                          int m, int n) {
  using T = typename V::T;
  ukernel_body<V, MR, NV>(kc, OffsetA<T, MR>{a, lda, aoff}, OffsetB<T>{b, boff}, c, ldc, accumulate, m, n);
}

// Eklundh's step of an L x L transpose: in each pair of rows (x, y) B apart, swap the upper B-lane
// halves of x's blocks of 2B lanes with the lower halves of y's (two-source shuffles with constant
// indices: __builtin_shufflevector, GCC 12+ and clang, picks the instructions).
template <class R, int L, int B, std::size_t... I>
inline __attribute__((always_inline)) void swap_blocks(R& x, R& y, std::index_sequence<I...>) {
  const R lo = __builtin_shufflevector(x, y, ((I & B) ? L + I - B : I)...);
  const R hi = __builtin_shufflevector(x, y, ((I & B) ? L + I : I + B)...);
  x = lo;
  y = hi;
}

// v[j][l] <- v[l][j]: log2(L) steps of L/2 pair swaps (L a power of two).
template <class V, int B = V::L / 2>
inline __attribute__((always_inline)) void transpose(typename V::R (&v)[V::L]) {
  if constexpr (B >= 1) {
#pragma GCC unroll 16
    for (int i = 0; i < V::L; ++i)
      if (!(i & B)) swap_blocks<typename V::R, V::L, B>(v[i], v[i + B], std::make_index_sequence<V::L>{});
    transpose<V, B / 2>(v);
  }
}

// A panel of W rows of a matrix read where it lies (MicroKernel::PackFn). Where L depth steps lie
// one element apart (a weight's taps and channels in order: the forward's A and the filters of
// the Winograd weight transform; linear's x and w; wgrad's dy, Winograd wgrad's V), the W rows x L
// steps are read as vectors along the rows and transposed in registers, W/L blocks of them.
// Elsewhere (and with one-lane vectors) element by element, in the order the elements lie: step by
// step where a step's rows are consecutive, else row by row. The element-by-element copy was 43% of resnet50_3x3_512_7_b1's forward, whose weight
// rows are 18 KiB apart (see l1_crowded) and whose 49 pixels use each packed element only twice;
// transposed, the forward ran in 0.72x the time.
template <class V, int W>
void pack_panel(index_t kc, const typename V::T* a, index_t lda, const index_t* off, int rows,
                typename V::T* dst) {
  using T = typename V::T;
  using R = typename V::R;
  constexpr int L = V::L, G = (W + L - 1) / L;  // G blocks of L rows (the last one may be short)
  const auto scalar = [&](index_t p0, index_t p1) {
    if (lda == 1) {  // a step's rows are consecutive elements: step by step (a pointwise dgrad's A)
      for (index_t p = p0; p < p1; ++p)
#pragma GCC unroll 16
        for (int r = 0; r < W; ++r) dst[p * W + r] = r < rows ? a[off[p] + r] : T(0);
      return;
    }
    for (int r = 0; r < W; ++r)
      for (index_t p = p0; p < p1; ++p) dst[p * W + r] = r < rows ? a[off[p] + r * lda] : T(0);
  };
  if constexpr (L == 1) {
    scalar(0, kc);
  } else {
    index_t p = 0;
    for (; p + L <= kc; p += L) {
      bool along = true;
      for (int j = 1; j < L; ++j) along = along && off[p + j] == off[p] + j;
      if (!along) {
        scalar(p, p + L);
        continue;
      }
#pragma GCC unroll 4
      for (int g = 0; g < G; ++g) {
        R v[L];
#pragma GCC unroll 16
        for (int j = 0; j < L; ++j) v[j] = g * L + j < rows ? V::load(a + off[p] + (g * L + j) * lda) : V::zero();
        transpose<V>(v);
        constexpr int last = W - (G - 1) * L;  // rows in the last block
#pragma GCC unroll 16
        for (int j = 0; j < L; ++j) V::store_first(dst + (p + j) * W + g * L, v[j], g + 1 < G ? L : last);
      }
    }
    scalar(p, kc);
  }
}

// The table entry of one kernel shape: MR x (NV vectors of V), depth blocks of kc, column blocks of nc.
template <class V, int MR, int NV>
MicroKernel<typename V::T> kernel_set(index_t kc, index_t nc) {
  return MicroKernel<typename V::T>{MR, NV * V::L, kc, nc,
                                    &ukernel<V, MR, NV>, &ukernel_offsets<V, MR, NV>, &ukernel_rows<V, MR, NV>,
                                    &ukernel_a_offsets<V, MR, NV>, &ukernel_both_offsets<V, MR, NV>,
                                    &pack_panel<V, MR>, &pack_panel<V, NV * V::L>};
}

// The same with column blocks taken from the core's L2: a packed KC x NC block of B takes about
// half of it (NC rounded up to whole NR panels), the other half left to the streams of A and C
// and to the next block's B. With the 1 MiB L2 of the Intel server cores this is 512 columns of
// fp32 at KC = 256, the constant first tuned there; Zen 1-3's 512 KiB L2 gets 256.
// Column blocks do not split a reduction: NC never changes a result's bits.
template <class V, int MR, int NV>
MicroKernel<typename V::T> kernel_set_for_l2(index_t kc, index_t l2_bytes) {
  const index_t nr = NV * V::L, cols = l2_bytes / 2 / (kc * index_t(sizeof(typename V::T)));
  return kernel_set<V, MR, NV>(kc, cols > nr ? (cols + nr - 1) / nr * nr : nr);
}

// Every accumulator of an A x B tile (the dot and channels kernels') set to zero.
template <class V, int A, int B>
inline __attribute__((always_inline)) void zero_tile(typename V::R (&acc)[A][B]) {
#pragma GCC unroll 8
  for (int i = 0; i < A; ++i)
#pragma GCC unroll 8
    for (int j = 0; j < B; ++j) acc[i][j] = V::zero();
}

// The dot kernel (see DotKernel): RA x RB accumulators of lane partial sums, RA + RB vector loads
// per step.
template <class V, int RA, int RB>
void dot_ukernel(index_t len, index_t images, const typename V::T* const* a, index_t a_image,
                 const typename V::T* const* b, index_t b_image, typename V::T* sums) {
  using T = typename V::T;
  using R = typename V::R;
  constexpr int L = V::L;
  R acc[RA][RB];
  zero_tile<V>(acc);
  for (index_t n = 0; n < images; ++n) {
    const T* ap[RA];
    const T* bp[RB];
#pragma GCC unroll 8
    for (int i = 0; i < RA; ++i) ap[i] = a[i] + n * a_image;
#pragma GCC unroll 8
    for (int j = 0; j < RB; ++j) bp[j] = b[j] + n * b_image;
    for (index_t q = 0; q < len; q += L) {
      R av[RA];
#pragma GCC unroll 8
      for (int i = 0; i < RA; ++i) av[i] = V::load(ap[i] + q);
#pragma GCC unroll 8
      for (int j = 0; j < RB; ++j) {
        const R bv = V::load(bp[j] + q);
#pragma GCC unroll 8
        for (int i = 0; i < RA; ++i) acc[i][j] = V::fma(av[i], bv, acc[i][j]);
      }
    }
  }
#pragma GCC unroll 8
  for (int i = 0; i < RA; ++i)
#pragma GCC unroll 8
    for (int j = 0; j < RB; ++j) sums[i * RB + j] = V::sum(acc[i][j]);
}

template <class V, int RA, int RB>
DotKernel<typename V::T> dot_kernel_set() {
  static_assert(RA <= kMaxDotRows && RB <= kMaxDotRows, "callers hold RA row pointers and RA*RB sums on the stack");
  return DotKernel<typename V::T>{RA, RB, V::L, &dot_ukernel<V, RA, RB>};
}

// The channels kernel (see ChanKernel): CB x KV accumulators, KV vector loads and CB broadcasts
// per step.
template <class V, int CB, int KV>
void chan_ukernel(index_t images, index_t rows, index_t cols, const typename V::T* const* dy, index_t dy_image,
                  index_t dy_row, const typename V::T* const* x, index_t x_image, index_t x_row, index_t x_col,
                  typename V::T* out) {
  using T = typename V::T;
  using R = typename V::R;
  constexpr int L = V::L;
  R acc[CB][KV];
  zero_tile<V>(acc);
  for (index_t n = 0; n < images; ++n)
    for (index_t r = 0; r < rows; ++r) {
      const T* d[CB];
      const T* xp[KV];
#pragma GCC unroll 8
      for (int i = 0; i < CB; ++i) d[i] = dy[i] + n * dy_image + r * dy_row;
#pragma GCC unroll 8
      for (int j = 0; j < KV; ++j) xp[j] = x[j] + n * x_image + r * x_row;
      for (index_t c = 0; c < cols; ++c) {
        R xv[KV];
#pragma GCC unroll 8
        for (int j = 0; j < KV; ++j) xv[j] = V::load(xp[j] + c * x_col);
#pragma GCC unroll 8
        for (int i = 0; i < CB; ++i) {
          const R b = V::set1(d[i][c]);
#pragma GCC unroll 8
          for (int j = 0; j < KV; ++j) acc[i][j] = V::fma(xv[j], b, acc[i][j]);
        }
      }
    }
#pragma GCC unroll 8
  for (int i = 0; i < CB; ++i)
#pragma GCC unroll 8
    for (int j = 0; j < KV; ++j) V::store(out + (i * KV + j) * L, acc[i][j]);
}

template <class V, int CB, int KV>
ChanKernel<typename V::T> chan_kernel_set() {
  static_assert(CB <= kMaxChanRows && KV <= kMaxChanRows, "callers hold CB + KV row pointers on the stack");
  return ChanKernel<typename V::T>{CB, KV, V::L, &chan_ukernel<V, CB, KV>, &pack_panel<V, V::L>};
}
