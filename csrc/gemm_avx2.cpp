// AVX2+FMA micro-kernels (compiled with -mavx2 -mfma; selected at run time in gemm.cpp only when
// the CPU has both). fp32 6x16, fp64 6x8: 12 accumulators + 2 B vectors + 1 broadcast of 16 ymm.
#include "gemm_kernel.h"

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>

namespace fastconv {
namespace {

#include "ukernel.h"

struct F32x8 {
  using T = float;
  using R = __m256;
  static constexpr int L = 8;
  static R zero() { return _mm256_setzero_ps(); }
  static R load(const T* p) { return _mm256_loadu_ps(p); }
  static R set1(T v) { return _mm256_set1_ps(v); }
  static R fma(R a, R b, R c) { return _mm256_fmadd_ps(a, b, c); }
  static R add(R a, R b) { return _mm256_add_ps(a, b); }
  static void store(T* p, R v) { _mm256_storeu_ps(p, v); }
  static void store_first(T* p, R v, int n) {  // lanes [0, n), n <= L
    _mm256_maskstore_ps(p, _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)), v);
  }
};

struct F64x4 {
  using T = double;
  using R = __m256d;
  static constexpr int L = 4;
  static R zero() { return _mm256_setzero_pd(); }
  static R load(const T* p) { return _mm256_loadu_pd(p); }
  static R set1(T v) { return _mm256_set1_pd(v); }
  static R fma(R a, R b, R c) { return _mm256_fmadd_pd(a, b, c); }
  static R add(R a, R b) { return _mm256_add_pd(a, b); }
  static void store(T* p, R v) { _mm256_storeu_pd(p, v); }
  static void store_first(T* p, R v, int n) {
    _mm256_maskstore_pd(p, _mm256_cmpgt_epi64(_mm256_set1_epi64x(n), _mm256_setr_epi64x(0, 1, 2, 3)), v);
  }
};

}  // namespace

bool gemm_kernels_avx2(KernelTable& table, index_t l2) {
  // few rows: 4x24 (fp32) / 4x12 (fp64), 12 accumulators + 3 B vectors + 1 broadcast; few columns:
  // 8x8 / 8x4, 8 accumulators; no dot kernel: a 3x4 one took 1.25-1.6x the flat wgrad's time;
  // channels: 4x3, 12 accumulators + 3 x vectors + 1 broadcast (0.74-0.94x the flat wgrad's time)
  table = KernelTable{kernel_set_for_l2<F32x8, 6, 2>(256, l2), kernel_set_for_l2<F32x8, 4, 3>(256, l2),
                      kernel_set_for_l2<F32x8, 8, 1>(256, l2), kernel_set_for_l2<F64x4, 6, 2>(256, l2),
                      kernel_set_for_l2<F64x4, 4, 3>(256, l2), kernel_set_for_l2<F64x4, 8, 1>(256, l2),
                      DotKernel<float>{}, chan_kernel_set<F32x8, 4, 3>()};
  return true;
}

}  // namespace fastconv

#else  // built without the flags (a compiler setup.py does not know): no kernels here

namespace fastconv {
bool gemm_kernels_avx2(KernelTable&, index_t) { return false; }
}  // namespace fastconv

#endif
