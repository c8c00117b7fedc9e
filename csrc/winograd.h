// Winograd F(2x2, 3x3) convolution (Lavin & Gray, "Fast Algorithms for Convolutional Neural
// Networks", 2015): each 2x2 block of output pixels ("tile") of each output channel is
//
//   Y = A^T [ sum over ci of (G g G^T) (.) (B^T d B) ] A
//
// with g the 3x3 filter of (co, ci), d the 4x4 input window of the tile in channel ci and (.) the
// element-wise product. The sum is 16 independent GEMMs, one per element xi of the 4x4 transformed
// domain: M[xi] (C_out x tiles) = U[xi] (C_out x C_in) * V[xi] (C_in x tiles). That is 16 products
// per 4 outputs against 36 for the direct convolution: 2.25x fewer flops, paid for by the input,
// output and weight transforms (additions only; all memory-bound). Every entry of B, G and A is
// 0, +-1 or +-1/2, so small-integer data stays exact (quarters at most in U).
//
// It serves stride-1, dilation-1, ungrouped 3x3 layers, forward and (through dgrad_as_forward) the
// stride-1 backward-input, with any padding, including the negative padding of a dgrad whose
// forward padding exceeds 2.
#pragma once

#include "conv.h"

namespace fastconv {

// Whether `s` (a forward, or dgrad's forward of dy) is a layer F(2x2, 3x3) serves and pays on, in
// elements of elem_bytes (4: float, 8: double): a 3x3 kernel at stride 1 and dilation 1, one
// group, channels and tiles enough (see winograd.cpp).
bool winograd_applies(const ConvShape& s, index_t elem_bytes);

// y (N, C_out, OH, OW) = conv(x, w) + b (b may be null) for a layer winograd_applies accepts. The
// weight is read through offsets, as gemm_forward reads it: tap (ci, kh, kw) of output channel co
// is w[off[(ci*3 + kh)*3 + kw] + co*lda], so dgrad's flipped, transposed weight is never built.
// Returns false, y unfinished, when x or w holds an Inf or NaN: the transforms mix a window's
// pixels and a filter's taps before multiplying, so one would reach outputs (as NaN) whose direct
// sum never sees it; the caller then runs the direct path, which keeps PyTorch's results.
template <typename T>
bool winograd_forward(const ConvShape& s, const T* x, const T* w, index_t lda, const index_t* off, const T* b, T* y,
                      int nthreads);

// Whether wgrad runs as Winograd: a layer winograd_applies accepts, with more channels (see there).
bool winograd_wgrad_applies(const ConvShape& s, index_t elem_bytes);

// dw (C_out, C_in, 3, 3) from dy and x for a layer winograd_wgrad_applies accepts: dW = G^T [sum over
// tiles of (A dy A^T) (.) (B^T d B)] G, the transpose of the forward's algorithm (every tile's 2x2
// of dy against its 4x4 window of x): 16 GEMMs over the tiles, summed in an order fixed by the shape
// (bit-identical for any thread count). Returns false, dw unfinished, when x or dy holds an Inf or
// NaN (see winograd_forward); the caller then runs the direct path.
template <typename T>
bool winograd_backward_weight(const ConvShape& s, const T* dy, const T* x, T* dw, int nthreads);

}  // namespace fastconv
