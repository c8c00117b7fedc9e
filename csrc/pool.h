// 2-d pooling kernels (max with PyTorch's argmax indices, average, adaptive average), forward and
// backward, NCHW, one (n, c) plane per unit of work. Inputs are C-contiguous and validated.
#pragma once

#include "common.h"

namespace fastconv {

// The Python PoolParams / AdaptivePoolParams (divisor_override 0 = none).
struct PoolShape {
  index_t N, C, H, W, KH, KW, OH, OW, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w;
  bool count_include_pad;
  index_t divisor_override;
};

// y and indices (flat h*W + w within the plane, int64; null: not wanted) of max pooling, PyTorch's
// CPU scan order: the first in-image tap starts the window, then a tap wins when value > max or
// value is NaN.
template <typename T>
void max_pool2d_forward(const PoolShape& s, const T* x, T* y, std::int64_t* indices, int nthreads);
// dx = zeros; dx[n, c].flat[indices] += dy, in output order. Returns whether every index lay in
// [0, H*W); those that did not were skipped, and the caller must raise.
template <typename T>
bool max_pool2d_backward(const PoolShape& s, const T* dy, const std::int64_t* indices, T* dx, int nthreads);

template <typename T>
void avg_pool2d_forward(const PoolShape& s, const T* x, T* y, int nthreads);
template <typename T>
void avg_pool2d_backward(const PoolShape& s, const T* dy, T* dx, int nthreads);

// Adaptive average pooling: window o spans [floor(o*size/out), ceil((o+1)*size/out)).
template <typename T>
void adaptive_avg_pool2d_forward(const PoolShape& s, const T* x, T* y, int nthreads);
template <typename T>
void adaptive_avg_pool2d_backward(const PoolShape& s, const T* dy, T* dx, int nthreads);

}  // namespace fastconv
