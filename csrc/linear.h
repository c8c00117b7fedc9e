// Dense layer on 2-d arrays: x (M, in), w (out, in), y and dy (M, out); every pass one GEMM.
#pragma once

#include "common.h"

namespace fastconv {

template <typename T>
void linear_forward(index_t M, index_t in, index_t out, const T* x, const T* w, const T* b, T* y, int nthreads);
template <typename T>
void linear_backward_input(index_t M, index_t in, index_t out, const T* dy, const T* w, T* dx, int nthreads);
template <typename T>
void linear_backward_weight(index_t M, index_t in, index_t out, const T* dy, const T* x, T* dw, int nthreads);
template <typename T>
void linear_backward_bias(index_t M, index_t out, const T* dy, T* db, int nthreads);

}  // namespace fastconv
