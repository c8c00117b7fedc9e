// 2-d convolution kernels: forward (fprop), backward-input (dgrad), backward-weight (wgrad), bias.
// Layout NCHW, weights (C_out, C_in/groups, KH, KW), cross-correlation: PyTorch's semantics.
// Inputs are C-contiguous and already validated by the Python front; outputs are fully written.
#pragma once

#include <string>
#include <vector>

#include "common.h"

namespace fastconv {

// The Python ConvParams, field for field (the bottom/right paddings are implied by OH/OW).
struct ConvShape {
  index_t N, C_in, H, W, C_out, KH, KW, OH, OW;
  index_t stride_h, stride_w, pad_t, pad_l, dil_h, dil_w, groups;
};

// The output tile m of the Winograd F(m x m, 3x3) (see winograd.h) that pass "fwd", "dgrad" or
// "wgrad" of s runs as, in elements of elem_bytes (4 or 8), given finite data; 0 where it runs as a
// direct GEMM: for tests.
int conv2d_uses_winograd(const ConvShape& s, const std::string& pass, index_t elem_bytes);
// Whether wgrad of s in fp32 runs as dot products along the pixels (the dot kernel of the kernel
// set in use; see conv_dot_wgrad.cpp), given finite x: for tests.
bool conv2d_wgrad_uses_dot(const ConvShape& s);
// Whether dgrad of s in fp32 runs as one forward of dy per phase of dx (conv_subpixel.cpp), given
// finite w: for tests.
bool conv2d_dgrad_uses_subpixel(const ConvShape& s);
// Whether pass "fwd", "dgrad" or "wgrad" of depthwise s in elements of elem_bytes runs with the
// channels in the vector lanes (dw_lanes.h, with the kernel set in use), given finite w: for tests.
bool depthwise_uses_lanes(const ConvShape& s, const std::string& pass, index_t elem_bytes);

// The algorithms of each pass, by name, for choosing among them by measurement (fastconv's
// autotune); conv.cpp's header says what each is:
//   "fwd":   "winograd2", "winograd3", "winograd4" (Winograd F(m x m, 3x3) in tile m), "gemm"
//   "dgrad": "winograd2", "winograd3", "winograd4", "gemm" (all as a forward of dy, at stride 1),
//            "subpixel" (a forward of dy per phase of dx, strided and undilated), "col2im"
//   "wgrad": "winograd2", "winograd4", "chan", "dot", "flat", "packed"
//   depthwise layers: "direct", every pass;
//   dilated layers that split into undilated ones (conv_phases.cpp): "phases" too, every pass.
// conv2d_algorithms lists those that apply to s in elements of elem_bytes (4 or 8), in the order
// the heuristics try them (Winograd and the dot wgrad where their heuristics take them; the
// others wherever they run), the Winograd tiles where the current float32 conv precision allows
// them (winograd_tiles, winograd_wgrad_tiles), ascending. Each algorithm is bit-identical for any
// thread count.
std::vector<std::string> conv2d_algorithms(const ConvShape& s, const std::string& pass, index_t elem_bytes);

// How a pass chooses: kAuto by the heuristics (conv.cpp's lists), else the named algorithm, which
// must be one conv2d_algorithms lists, or "winograd" where the heuristics take Winograd (the tile
// their chooser picks; the name before each tile had its own, kept for callers that name it, not
// listed: it is one of the tiles). algorithm_of checks: std::invalid_argument otherwise. A named
// Winograd or dot wgrad that declines at run time (data holding an Inf or NaN) hands the call on
// as kAuto would; a named dgrad as a forward ("gemm", "subpixel") hands a w holding an Inf or NaN
// to col2im.
enum class ConvAlgo { kAuto, kPhases, kWinograd, kWinograd2, kWinograd3, kWinograd4, kGemm, kCol2im, kSubpixel,
                      kChan, kDot, kFlat, kPacked, kDirect };
ConvAlgo algorithm_of(const ConvShape& s, const std::string& pass, index_t elem_bytes, const std::string& name);

// Bound each chunk of flat copies (forward, stride-1 dgrad, flat wgrad) and each plane that the
// depthwise loops pad whole (larger ones take the forward's bands) to `bytes` instead of the 4 MiB
// default (0 restores it): a test lowers it so that small images run in several bands. Throws
// std::invalid_argument for a negative count. Not meant to race with running ops.
void set_conv_chunk_bytes(index_t bytes);

// y (N, C_out, OH, OW) = conv(x, w) + b; b may be null.
template <typename T>
void conv2d_forward(const ConvShape& s, const T* x, const T* w, const T* b, T* y, int nthreads,
                    ConvAlgo algo = ConvAlgo::kAuto);

// dx (N, C_in, H, W) from dy (N, C_out, OH, OW) and w.
template <typename T>
void conv2d_backward_input(const ConvShape& s, const T* dy, const T* w, T* dx, int nthreads,
                           ConvAlgo algo = ConvAlgo::kAuto);

// dw (C_out, C_in/groups, KH, KW) from dy and x; summed over the batch in an order fixed by the
// shape alone, so the result is bit-identical for every thread count.
template <typename T>
void conv2d_backward_weight(const ConvShape& s, const T* dy, const T* x, T* dw, int nthreads,
                            ConvAlgo algo = ConvAlgo::kAuto);

// db (C) = sum of dy (N, C, P) over N and P, in a fixed order.
template <typename T>
void conv2d_backward_bias(index_t N, index_t C, index_t P, const T* dy, T* db, int nthreads);

}  // namespace fastconv
