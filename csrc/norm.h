// Batch normalisation passes over x viewed as (N, C, L), L the product of the spatial dims;
// statistics are per channel. The Python front computes everything of size (C,) from them
// (invstd, running statistics). weight and bias may be null.
#pragma once

#include "common.h"

namespace fastconv {

struct NormShape {
  index_t N, C, L;
};

// Per-channel mean and biased variance (two passes; sums in double).
template <typename T>
void batch_norm_stats(const NormShape& s, const T* x, T* mean, T* var, int nthreads);
// y = (x - mean) * invstd * weight + bias.
template <typename T>
void batch_norm_forward(const NormShape& s, const T* x, const T* mean, const T* invstd, const T* weight,
                        const T* bias, T* y, int nthreads);
// sum_dy = sum dy and sum_dy_xhat = sum dy * (x - mean) * invstd, per channel.
template <typename T>
void batch_norm_backward_reduce(const NormShape& s, const T* dy, const T* x, const T* mean, const T* invstd,
                                T* sum_dy, T* sum_dy_xhat, int nthreads);
// Training-mode dx = weight * invstd * (dy - sum_dy/n - xhat * sum_dy_xhat/n), n = N * L.
template <typename T>
void batch_norm_backward_input(const NormShape& s, const T* dy, const T* x, const T* mean, const T* invstd,
                               const T* weight, const T* sum_dy, const T* sum_dy_xhat, T* dx, int nthreads);

}  // namespace fastconv
