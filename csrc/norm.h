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

// Batch norm followed by hardtanh(lo, hi) (ReLU6: lo = 0, hi = 6), lo < hi. The forward writes
// y = clamp(batch_norm(x), lo, hi); the backward passes take the forward's dy and x (z, the
// value before the clamp, is recomputed bit for bit, see norm.cpp) and mask dy to zero where
// z <= lo or z >= hi, as PyTorch's hardtanh_backward does. backward_input: training gives the
// training-mode dx from the masked sums; otherwise dx = (masked dy * invstd) * weight and the sums are unused.
template <typename T>
void batch_norm_forward_hardtanh(const NormShape& s, const T* x, const T* mean, const T* invstd, const T* weight,
                                 const T* bias, T lo, T hi, T* y, int nthreads);
template <typename T>
void batch_norm_backward_reduce_hardtanh(const NormShape& s, const T* dy, const T* x, const T* mean,
                                         const T* invstd, const T* weight, const T* bias, T lo, T hi, T* sum_dy,
                                         T* sum_dy_xhat, int nthreads);
template <typename T>
void batch_norm_backward_input_hardtanh(const NormShape& s, const T* dy, const T* x, const T* mean, const T* invstd,
                                        const T* weight, const T* bias, T lo, T hi, const T* sum_dy,
                                        const T* sum_dy_xhat, bool training, T* dx, int nthreads);

}  // namespace fastconv
