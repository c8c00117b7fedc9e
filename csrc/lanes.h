// 32-byte vectors of GCC's vector extension: ymm in functions compiled for AVX2 or AVX-512
// (FASTCONV_CLONES' avx2 and avx512f clones), pairs of xmm in the default one; with the shuffles
// that split and interleave two of them, and unaligned loads and stores.
#pragma once

#include <cstdint>
#include <cstring>

namespace fastconv {

template <typename T>
struct Lanes;
template <>
struct Lanes<float> {
  typedef float V __attribute__((vector_size(32)));
  typedef std::int32_t I __attribute__((vector_size(32)));
  static constexpr int L = 8;
  __attribute__((always_inline)) static V even(V a, V b) {
    return __builtin_shuffle(a, b, I{0, 2, 4, 6, 8, 10, 12, 14});
  }
  __attribute__((always_inline)) static V odd(V a, V b) {
    return __builtin_shuffle(a, b, I{1, 3, 5, 7, 9, 11, 13, 15});
  }
  __attribute__((always_inline)) static V zip_lo(V a, V b) {
    return __builtin_shuffle(a, b, I{0, 8, 1, 9, 2, 10, 3, 11});
  }
  __attribute__((always_inline)) static V zip_hi(V a, V b) {
    return __builtin_shuffle(a, b, I{4, 12, 5, 13, 6, 14, 7, 15});
  }
};
template <>
struct Lanes<double> {
  typedef double V __attribute__((vector_size(32)));
  typedef std::int64_t I __attribute__((vector_size(32)));
  static constexpr int L = 4;
  __attribute__((always_inline)) static V even(V a, V b) {
    return __builtin_shuffle(a, b, I{0, 2, 4, 6});
  }
  __attribute__((always_inline)) static V odd(V a, V b) {
    return __builtin_shuffle(a, b, I{1, 3, 5, 7});
  }
  __attribute__((always_inline)) static V zip_lo(V a, V b) {
    return __builtin_shuffle(a, b, I{0, 4, 1, 5});
  }
  __attribute__((always_inline)) static V zip_hi(V a, V b) {
    return __builtin_shuffle(a, b, I{2, 6, 3, 7});
  }
};

template <typename T>
__attribute__((always_inline)) inline typename Lanes<T>::V load_lanes(const T* p) {
  typename Lanes<T>::V v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

template <typename T>
__attribute__((always_inline)) inline void store_lanes(T* p, typename Lanes<T>::V v) {
  std::memcpy(p, &v, sizeof v);
}

}  // namespace fastconv
