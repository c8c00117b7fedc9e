// The micro-kernel table each instruction-set translation unit fills in. Deliberately free of
// inline functions: gemm_avx512.cpp and gemm_avx2.cpp include it while compiled with -mavx512f /
// -mavx2, and an inline function emitted there could be picked by the linker for every caller.
#pragma once

#include <cstdint>
#include <type_traits>
#include <utility>

namespace fastconv {

using index_t = std::int64_t;

// fn_offsets prefetches row p + kPrefetchRows while it computes row p: off[] must hold that many
// (any) entries past the depth it is given.
constexpr int kPrefetchRows = 12;

template <typename T>
struct MicroKernel {
  // C[m x n] (= or +=) A_panel[MR x kc] * B_panel[kc x NR]; see ukernel.h for the packed layouts.
  using Fn = void (*)(index_t kc, const T* a, const T* b, T* c, index_t ldc, bool accumulate, int m, int n);
  // the same with B row p at b + off[p] instead of packed (NR contiguous elements from there)
  using OffsetFn = void (*)(index_t kc, const T* a, const T* b, const index_t* off, T* c, index_t ldc,
                            bool accumulate, int m, int n);
  // the same with A(i, p) at rows[i][off[p]] (MR row pointers, one table of steps) and B packed
  using RowsFn = void (*)(index_t kc, const T* const* rows, const index_t* off, const T* b, T* c, index_t ldc,
                          bool accumulate, int m, int n);
  // the same with A(i, p) at a + aoff[p] + i*lda (a matrix as it lies), B packed / row p at b + boff[p]
  using AOffsetFn = void (*)(index_t kc, const T* a, index_t lda, const index_t* aoff, const T* b, T* c, index_t ldc,
                             bool accumulate, int m, int n);
  using BothOffsetFn = void (*)(index_t kc, const T* a, index_t lda, const index_t* aoff, const T* b,
                                const index_t* boff, T* c, index_t ldc, bool accumulate, int m, int n);
  // packs a panel [kc][W] (W = MR: of A; NR: of B, its rows being B's columns) of a matrix read where
  // it lies: element (i, p) = a[off[p] + i*lda] for the first `rows` rows, zero for the rest
  using PackFn = void (*)(index_t kc, const T* a, index_t lda, const index_t* off, int rows, T* dst);
  int mr;       // rows of C per micro-tile (broadcast operand)
  int nr;       // columns of C per micro-tile (vector operand)
  index_t kc;   // depth of a packed block: an A micro-panel MR*kc stays in L1
  index_t nc;   // columns of a packed B block: kc*nc*sizeof(T) ~ half of the L2 (see kernel_set_for_l2)
  Fn fn;
  OffsetFn fn_offsets;
  RowsFn fn_rows;
  AOffsetFn fn_a_offsets;
  BothOffsetFn fn_both_offsets;
  PackFn pack_a, pack_b;
};

// Dot products of rows along their length: for a tile of RA rows of A and RB rows of B,
// sums[i*RB + j] = the sum over images n < images and q < len of a[i][n*a_image + q] *
// b[j][n*b_image + q], len a multiple of lanes (each dot product is summed in `lanes` partial sums,
// added up at the end in one fixed order). A product whose reduction is long and whose two sides
// are short, as wgrad's dW = dy cols^T for a few channels, runs so with both operands read in place
// along the reduction (RA*RB FMAs per RA + RB vector loads) instead of broadcasting one of them.
constexpr int kMaxDotRows = 8;  // every dot kernel's RA and RB are at most this (callers size arrays by it)
template <typename T>
struct DotKernel {
  using Fn = void (*)(index_t len, index_t images, const T* const* a, index_t a_image, const T* const* b,
                      index_t b_image, T* sums);
  int ra, rb;  // rows of A and of B per tile
  int lanes;   // elements per vector
  Fn fn;
};

// wgrad with vectors along the input channels: for CB rows of dy (output channels, one scalar
// broadcast per pixel, read where dy lies) and KV rows of a channels-last copy of x (L channels per
// vector: one tap and one block of channels each), out[(i*KV + j)*L + l] = the sum over images
// n < images, output rows r < rows and columns c < cols of
//   dy[i][n*dy_image + r*dy_row + c] * x[j][n*x_image + r*x_row + c*x_col + l],
// summed in that order. CB*KV FMAs per KV vector loads and CB broadcasts, nothing packed but x's copy
// (see conv_chan_wgrad.cpp); pack copies a channels-first block into it (PackFn with W = L).
constexpr int kMaxChanRows = 8;  // every channels kernel's CB and KV are at most this
template <typename T>
struct ChanKernel {
  using Fn = void (*)(index_t images, index_t rows, index_t cols, const T* const* dy, index_t dy_image,
                      index_t dy_row, const T* const* x, index_t x_image, index_t x_row, index_t x_col, T* out);
  int cb, kv;  // rows of dy and of x per call
  int lanes;   // elements per vector
  Fn fn;
  typename MicroKernel<T>::PackFn pack;
};

// The kernels of one instruction set: the general shape, one of fewer rows (MR) for products with
// few rows, e.g. a layer of 16 or 32 output channels, which 14-row panels pad by 43% / 24%, one
// of fewer columns (NR) for few columns (wgrad's dW^T of 16 output channels), and a dot kernel
// where one pays: fp32 with AVX-512 only (fn null elsewhere; see dot_wgrad_applies in conv_dot_wgrad.cpp),
// and a channels kernel: fp32 with AVX-512 and AVX2 (see chan_wgrad_applies in conv_chan_wgrad.cpp).
struct KernelTable {
  MicroKernel<float> f32, f32_few_rows, f32_few_cols;
  MicroKernel<double> f64, f64_few_rows, f64_few_cols;
  DotKernel<float> f32_dot;
  ChanKernel<float> f32_chan;
};

// Each returns false (and leaves the table alone) when that translation unit was built without
// its instruction set, e.g. by a compiler that does not know the flags. Their packed B blocks fill
// half of an L2 of l2_bytes (see kernel_set_for_l2).
bool gemm_kernels_avx512(KernelTable& table, index_t l2_bytes);
bool gemm_kernels_avx2(KernelTable& table, index_t l2_bytes);

}  // namespace fastconv
