// Dense layer through the packed GEMM (gemm.h); the transposes are strides, never copies.
#include "linear.h"

#include "gemm.h"

namespace fastconv {

// Below this many multiply-adds the packed GEMM's set-up (an OpenMP region, packing buffers)
// costs more than the math: a 1x64 -> 16 layer took 3.4 us through it (2-core AMD EPYC Zen 1),
// for 1024 multiply-adds. Such a layer runs as plain dot products, on one thread.
constexpr index_t kDotProducts = 16384;

template <typename T>
void linear_forward(index_t M, index_t in, index_t out, const T* x, const T* w, const T* b, T* y, int nthreads) {
  if (M * in * out <= kDotProducts) {
    for (index_t i = 0; i < M; ++i)
      for (index_t j = 0; j < out; ++j) {  // y[i, j] = b[j] + x[i, :] . w[j, :]
        T acc = T(0);
        for (index_t p = 0; p < in; ++p) acc += x[i * in + p] * w[j * in + p];
        y[i * out + j] = b ? acc + b[j] : acc;
      }
    return;
  }
  gemm<T>(M, out, in, x, in, 1, w, 1, in, y, out, nthreads);  // y = x w^T: B(p, j) = w[j, p]
  if (b) {
#pragma omp parallel for schedule(static) num_threads(nthreads)
    for (index_t i = 0; i < M; ++i)
      for (index_t j = 0; j < out; ++j) y[i * out + j] += b[j];
  }
}

template <typename T>
void linear_backward_input(index_t M, index_t in, index_t out, const T* dy, const T* w, T* dx, int nthreads) {
  gemm<T>(M, in, out, dy, out, 1, w, in, 1, dx, in, nthreads);  // dx = dy w
}

template <typename T>
void linear_backward_weight(index_t M, index_t in, index_t out, const T* dy, const T* x, T* dw, int nthreads) {
  gemm<T>(out, in, M, dy, 1, out, x, in, 1, dw, in, nthreads);  // dw = dy^T x: A(i, p) = dy[p, i]
}

template <typename T>
void linear_backward_bias(index_t M, index_t out, const T* dy, T* db, int nthreads) {
  // column sums, rows added in order (a fixed order on any thread count); columns split by thread
#pragma omp parallel for schedule(static) num_threads(nthreads)
  for (index_t j0 = 0; j0 < out; j0 += 64) {
    const index_t j1 = min_i(out, j0 + 64);
    for (index_t j = j0; j < j1; ++j) db[j] = T(0);
    for (index_t i = 0; i < M; ++i)
      for (index_t j = j0; j < j1; ++j) db[j] += dy[i * out + j];
  }
}

#define FASTCONV_INSTANTIATE(T)                                                                 \
  template void linear_forward<T>(index_t, index_t, index_t, const T*, const T*, const T*, T*, int); \
  template void linear_backward_input<T>(index_t, index_t, index_t, const T*, const T*, T*, int);   \
  template void linear_backward_weight<T>(index_t, index_t, index_t, const T*, const T*, T*, int);  \
  template void linear_backward_bias<T>(index_t, index_t, const T*, T*, int);
FASTCONV_INSTANTIATE(float)
FASTCONV_INSTANTIATE(double)

}  // namespace fastconv
