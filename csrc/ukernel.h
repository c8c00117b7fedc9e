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
//   b: packed [kc][NR]  -- NV vector loads per k
// MR*NV accumulators + NV B vectors + 1 broadcast must fit the register file (AVX-512: 14x2 + 2 + 1
// = 31 of 32 zmm; AVX2: 6x2 + 2 + 1 = 15 of 16 ymm).
//
// The tile is always computed in full (packing zero-pads ragged edges), then stored in full, or
// through a local tile when m < MR or n < NR. Both stores do the same arithmetic, C = acc or
// C = C + acc, so an element's value never depends on where tile edges fall: results are the same
// for every thread count and blocking of the non-reduced dimensions.

template <class V, int MR, int NV>
void ukernel(index_t kc, const typename V::T* __restrict a, const typename V::T* __restrict b,
             typename V::T* __restrict c, index_t ldc, bool accumulate, int m, int n) {
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
    R bv[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) bv[v] = V::load(b + v * L);
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) {
      const R ai = V::set1(a[i]);
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[i][v] = V::fma(ai, bv[v], acc[i][v]);
    }
    a += MR;
    b += NR;
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
