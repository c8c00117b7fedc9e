// AVX-512F micro-kernels (compiled with -mavx512f -mfma; selected at run time in gemm.cpp only when
// the CPU has AVX-512F). fp32 14x32, fp64 14x16: 28 accumulators + 2 B vectors + 1 broadcast.
#include "gemm_kernel.h"

#if defined(__AVX512F__) && defined(__FMA__)
#include <immintrin.h>

namespace fastconv {
namespace {

#include "ukernel.h"

struct F32x16 {
  using T = float;
  using R = __m512;
  static constexpr int L = 16;
  static R zero() { return _mm512_setzero_ps(); }
  static R load(const T* p) { return _mm512_loadu_ps(p); }
  static R set1(T v) { return _mm512_set1_ps(v); }
  static R fma(R a, R b, R c) { return _mm512_fmadd_ps(a, b, c); }
  static R add(R a, R b) { return _mm512_add_ps(a, b); }
  static void store(T* p, R v) { _mm512_storeu_ps(p, v); }
  static void store_first(T* p, R v, int n) { _mm512_mask_storeu_ps(p, __mmask16((1u << n) - 1), v); }  // n <= L
  static T sum(R v) { return _mm512_reduce_add_ps(v); }
};

struct F64x8 {
  using T = double;
  using R = __m512d;
  static constexpr int L = 8;
  static R zero() { return _mm512_setzero_pd(); }
  static R load(const T* p) { return _mm512_loadu_pd(p); }
  static R set1(T v) { return _mm512_set1_pd(v); }
  static R fma(R a, R b, R c) { return _mm512_fmadd_pd(a, b, c); }
  static R add(R a, R b) { return _mm512_add_pd(a, b); }
  static void store(T* p, R v) { _mm512_storeu_pd(p, v); }
  static void store_first(T* p, R v, int n) { _mm512_mask_storeu_pd(p, __mmask8((1u << n) - 1), v); }
};

}  // namespace

bool gemm_kernels_avx512(KernelTable& table, index_t l2) {
  // few rows: 8x48 (fp32) / 8x24 (fp64), 24 accumulators + 3 B vectors + 1 broadcast; few columns:
  // 16x16 / 16x8, 16 accumulators (17 loads per 16 FMAs: the load ports just keep up); dot: 4x6,
  // 24 accumulators + 4 A vectors + 1 B vector (4x6 and 4x5 ran 1.1-1.2x faster than 6x4 and 5x4
  // on ResNet-20's wgrad products), fp32 only: in fp64 the flat wgrad was faster; channels: 8x3,
  // 24 accumulators + 3 x vectors + 1 broadcast (ResNet-20's wgrad at about 95% of the FMA peak)
  table = KernelTable{kernel_set_for_l2<F32x16, 14, 2>(256, l2), kernel_set_for_l2<F32x16, 8, 3>(256, l2),
                      kernel_set_for_l2<F32x16, 16, 1>(256, l2), kernel_set_for_l2<F64x8, 14, 2>(256, l2),
                      kernel_set_for_l2<F64x8, 8, 3>(256, l2), kernel_set_for_l2<F64x8, 16, 1>(256, l2),
                      dot_kernel_set<F32x16, 4, 6>(), chan_kernel_set<F32x16, 8, 3>()};
  return true;
}

}  // namespace fastconv

#else  // built without the flags (a compiler setup.py does not know): no kernels here

namespace fastconv {
bool gemm_kernels_avx512(KernelTable&, index_t) { return false; }
}  // namespace fastconv

#endif
