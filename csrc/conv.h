// 2-d convolution kernels: forward (fprop), backward-input (dgrad), backward-weight (wgrad), bias.
// Layout NCHW, weights (C_out, C_in/groups, KH, KW), cross-correlation: PyTorch's semantics.
// Inputs are C-contiguous and already validated by the Python front; outputs are fully written.
#pragma once

#include <string>

#include "common.h"

namespace fastconv {

// The Python ConvParams, field for field (the bottom/right paddings are implied by OH/OW).
struct ConvShape {
  index_t N, C_in, H, W, C_out, KH, KW, OH, OW;
  index_t stride_h, stride_w, pad_t, pad_l, dil_h, dil_w, groups;
};

// Whether pass "fwd", "dgrad" or "wgrad" of s, in elements of elem_bytes (4 or 8), runs as Winograd
// F(2x2, 3x3) (see winograd.h) rather than as a direct GEMM, given finite data: for tests.
bool conv2d_uses_winograd(const ConvShape& s, const std::string& pass, index_t elem_bytes);
// Whether wgrad of s in fp32 runs as dot products along the pixels (the dot kernel of the kernel
// set in use; see conv_dot_wgrad.cpp), given finite x: for tests.
bool conv2d_wgrad_uses_dot(const ConvShape& s);

// Bound each chunk of flat copies (forward, stride-1 dgrad, flat wgrad) and each plane that the
// depthwise loops pad whole (larger ones take the forward's bands) to `bytes` instead of the 4 MiB
// default (0 restores it): a test lowers it so that small images run in several bands. Throws
// std::invalid_argument for a negative count. Not meant to race with running ops.
void set_conv_chunk_bytes(index_t bytes);

// y (N, C_out, OH, OW) = conv(x, w) + b; b may be null.
template <typename T>
void conv2d_forward(const ConvShape& s, const T* x, const T* w, const T* b, T* y, int nthreads);

// dx (N, C_in, H, W) from dy (N, C_out, OH, OW) and w.
template <typename T>
void conv2d_backward_input(const ConvShape& s, const T* dy, const T* w, T* dx, int nthreads);

// dw (C_out, C_in/groups, KH, KW) from dy and x; summed over the batch in an order fixed by the
// shape alone, so the result is bit-identical for every thread count.
template <typename T>
void conv2d_backward_weight(const ConvShape& s, const T* dy, const T* x, T* dw, int nthreads);

// db (C) = sum of dy (N, C, P) over N and P, in a fixed order.
template <typename T>
void conv2d_backward_bias(index_t N, index_t C, index_t P, const T* dy, T* db, int nthreads);

}  // namespace fastconv
