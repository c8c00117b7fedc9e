// Winograd F(m x m, 3x3) convolution, m = 2, 3 or 4 (Lavin & Gray, "Fast Algorithms for
// Convolutional Neural Networks", 2015): each m x m block of output pixels ("tile") of each output
// channel is
//
//   Y = A^T [ sum over ci of (G g G^T) (.) (B^T d B) ] A
//
// with g the 3x3 filter of (co, ci), d the a x a input window of the tile in channel ci (a = m + 2)
// and (.) the element-wise product. The sum is a*a independent GEMMs, one per element xi of the
// transformed domain: M[xi] (C_out x tiles) = U[xi] (C_out x C_in) * V[xi] (C_in x tiles). That is
// a*a products per m*m outputs against 9 each for the direct convolution: F(2x2) 16 per 4 (2.25x
// fewer flops), F(3x3) 25 per 9 (3.24x), F(4x4) 36 per 16 (4x fewer), paid for by the input, output
// and weight transforms (a few operations per element; memory-bound). F(2x2)'s B, G and A hold 0,
// +-1 and +-1/2 only, so small-integer data stays exact; so does F(3x3)'s, whose G (ninths) is kept
// times 9 and its results divided by 81 once. F(4x4)'s G holds 1/81 and 1/243, which it rounds. The
// larger tiles' transforms magnify the rounding errors of the GEMMs' sums, so their float32 results
// carry a larger error (winograd_tile says where it stays inside the tolerance; README.md lists the
// errors).
//
// It serves stride-1, dilation-1, ungrouped 3x3 layers, forward and (through dgrad_as_forward) the
// stride-1 backward-input, with any padding, including the negative padding of a dgrad whose
// forward padding exceeds 2.
#pragma once

#include <vector>

#include "conv.h"

namespace fastconv {

// The output tile m (2, 3 or 4) of the Winograd algorithm that runs `s` (a forward, or dgrad's forward
// of dy) in elements of elem_bytes (4: float, 8: double), or 0 where Winograd does not pay: a 3x3
// kernel at stride 1 and dilation 1, one group, channels and tiles enough (see winograd.cpp). The
// heuristics' choice ("the chooser"); always one of winograd_tiles(s, elem_bytes).
int winograd_tile(const ConvShape& s, index_t elem_bytes);

// The tiles that may run `s` (as winograd_tile's s) at the current precision, ascending, for choosing
// among them by measurement: empty where winograd_tile gives 0 for want of a layer Winograd serves;
// else F(2x2), and the larger tiles in fp32 where their float32 error stays inside the precision's
// bound (the chooser's error rules, without its speed rules; see winograd.cpp).
std::vector<int> winograd_tiles(const ConvShape& s, index_t elem_bytes);

// y (N, C_out, OH, OW) = conv(x, w) + b (b may be null) in tile m, one of winograd_tiles(s). The
// weight is read through offsets, as gemm_forward reads it: tap (ci, kh, kw) of output channel co
// is w[off[(ci*3 + kh)*3 + kw] + co*lda], so dgrad's flipped, transposed weight is never built.
// Returns false, y unfinished, when x or w holds an Inf or NaN: the transforms mix a window's
// pixels and a filter's taps before multiplying, so one would reach outputs (as NaN) whose direct
// sum never sees it; the caller then runs the direct path, which keeps PyTorch's results.
template <typename T>
bool winograd_forward(const ConvShape& s, int m, const T* x, const T* w, index_t lda, const index_t* off, const T* b,
                      T* y, int nthreads);

// The tile of wgrad's Winograd (as winograd_tile): a layer winograd_tile accepts, with more channels
// (see winograd.cpp); 0 where wgrad runs otherwise. Always one of winograd_wgrad_tiles(s).
int winograd_wgrad_tile(const ConvShape& s, index_t elem_bytes);

// wgrad's counterpart of winograd_tiles: empty where winograd_wgrad_tile gives 0 for want of a layer
// its Winograd serves; else F(2x2), and F(4x4) where its error rule at the current precision holds.
std::vector<int> winograd_wgrad_tiles(const ConvShape& s, index_t elem_bytes);

// dw (C_out, C_in, 3, 3) from dy and x in tile m, one of winograd_wgrad_tiles(s): dW = G^T [sum over
// tiles of (A dy A^T) (.) (B^T d B)] G, the transpose of the forward's algorithm (every tile's m x
// m of dy against its a x a window of x): a*a GEMMs over the tiles, summed in an order fixed by
// the shape (bit-identical for any thread count). Returns false, dw unfinished, when x or dy holds
// an Inf or NaN (see winograd_forward); the caller then runs the direct path.
template <typename T>
bool winograd_backward_weight(const ConvShape& s, int m, const T* dy, const T* x, T* dw, int nthreads);

// Make every pass the chooser sends to Winograd use tile m (2, 3 or 4), or none (1: F(1x1, 3x3) is
// the direct convolution; the other paths run), or the chooser's (0): for tests and benchmarks (A/B
// of the tiles and the direct path). A tile named by the caller (winograd_forward's m) is not
// affected, nor are winograd_tiles' lists. Throws std::invalid_argument for another m. Not meant to race with
// running ops.
void set_winograd_tile(int m);
// Whether the chooser may take F(4x4) where its rules above do, and winograd_tiles /
// winograd_wgrad_tiles offer it (fastconv's float32 conv precision "high"; default false,
// "highest": F(3x3) and F(2x2) only). Its error grows with the channels (wgrad: the pixels)
// summed: inside the tolerance on unit-scale data where the rules take it, but 0.3-0.7 of it at
// 16-64 channels (3-4x the direct path's) and up to 0.98 at 128, so it is a choice of speed over
// accuracy, as PyTorch's float32 matmul precision.
void set_winograd_f4(bool allowed);

}  // namespace fastconv
