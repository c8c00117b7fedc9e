// 2-d convolution: the one place that chooses among its implementations, which live one file each
// (conv_impl.h lists them). Each pass is an ordered list, in conv2d_forward, conv2d_backward_input
// and conv2d_backward_weight below: the first that applies runs, and one that declines at run time
// (Winograd, the dot wgrad and the dgrads as forwards, on data that holds an Inf or NaN)
// hands the call to the next. The general paths are GEMMs whose im2col operand is never built:
//   * forward: each image is copied once into a "flat" layout (per channel, the planes of its
//     stride phases, zero-padded; see FlatLayout) in which row k of the im2col matrix, for NR
//     consecutive output columns, is NR consecutive elements: the micro-kernel reads it where it
//     lies (no packing), and computes Wq - OW junk columns per output row that are dropped.
//     Pointwise layers (1x1, stride 1, no padding) read x itself. Small images, where the junk
//     would be 30% or more, pack B from the layout without it instead (see compact_forward).
//     Tiles that straddle output rows are staged per unit and copied to y once (stage_tiling).
//     The weight is read as it lies too (row i of A at w + off[p] + i*lda, see InPlaceA; conv_flat.cpp);
//   * forward and stride-1 dgrad of 3x3 layers (stride 1, dilation 1, one group, 16+ channels each
//     way, enough tiles; wgrad at 128+ channels), finite data: Winograd F(3x3, 3x3), 3.24x fewer
//     multiplies, in fp32 on wide images of up to 256 channels in and out together; F(4x4, 3x3),
//     4x, at precision "high" on up to 128 channels summed (wgrad: 4096 pixels); else F(2x2, 3x3),
//     2.25x (winograd.cpp);
//   * dgrad at stride 1, undilated, 16+ input channels per group: the forward convolution of dy
//     with the flipped, transposed weight (no col2im, and that weight is w read at other offsets:
//     never built); at stride > 1, undilated, with AVX-512 where phases of 96K input channels x
//     pixels or more make it pay (fp32), one such forward per phase of dx, into a buffer
//     interleaved into dx (conv_subpixel.cpp); otherwise dgrad is GEMM (cols = W^T dy) + col2im
//     (im2col with +=; conv_col2im.cpp);
//   * wgrad: fp32 with AVX-512 or AVX2, 16 to 64 input channels per group (whole vectors of them),
//     not pointwise, at least 8 (AVX2: 4) output channels, one image's copy within 4 MiB:
//     x copied channels-last, one vector of input channels times one broadcast pixel of dy in
//     place (the channels kernel, conv_chan_wgrad.cpp); else fp32 with AVX-512, up to 16 output
//     channels and 64 to 1024 taps x input channels per group (not pointwise), 160+ output pixels,
//     finite x: dot products along the pixels of dy and the rows of cols, both read in place from
//     flat copies (the dot kernel, conv_dot_wgrad.cpp);
//     else dW^T = cols dy^T on the same flat layout (the micro-kernel reads cols' rows in place,
//     pixel by pixel), for weights under 4 MiB (1 MiB pointwise; 10 MiB with 16+ images and AVX-512);
//     otherwise GEMM dW += dY cols^T with cols^T packed from x, the batch folded into the reduction
//     (both conv_gemm_wgrad.cpp);
//   * dilated layers at stride 1 whose sizes and paddings are multiples of the dilation (the usual
//     "same" padding): where the undilated layer their phase images form is one Winograd serves,
//     that layer, every pass, on copies of the phases (conv_phases.cpp);
//   * depthwise (one input channel per group): direct loops over rows, no GEMM (conv_depthwise.cpp),
//     but for the forward and stride-1 dgrad of planes over the chunk bound (they pad a whole plane
//     per thread): those take the flat GEMM, in bands of rows.
//
// Workspace (the only memory besides inputs and outputs; see Buffer / workspace_peak_bytes):
//   shared:     forward, stride-1 dgrad and flat wgrad: the flat copies of a chunk, at most
//               conv_chunk_bytes() (kFlatChunkBytes, 4 MiB, unless a test lowers it): whole images,
//               or a band of one image's output rows with the input rows it reads (see row_band);
//               the forward's private pieces: one chunk per thread, each within its share of it.
//               The forward cuts a row that does not fit into bands of columns (col_band), down to
//               one output pixel's C_in x stride phases x (1 + (KH-1)*dil_h/stride_h) x
//               (1 + (KW-1)*dil_w/stride_w) elements: it never grows with H or W. Flat wgrad's bands
//               are at least one output row: C_in x phases x (1 + (KH-1)*dil_h/stride_h) rows of
//               Wq = OW + (KW-1)*dil_w/stride_w elements (3 x 46402 fp32, 557 KB, for a 3x3 on one
//               46400-wide channel), and hold its packed dy^T too (NR lanes per pixel, within the
//               same bound; and a table of 8 bytes per pixel), plus dW^T; strided dgrad and
//               packed wgrad: the packed weight (C_in/groups*KH*KW x C_out rounded up to MR rows /
//               packed dy chunks); packed wgrad with S > 1 reduction slices S copies of dw (S <= 8,
//               chosen by the shape);
//   Winograd:   see winograd.cpp (the transformed weight, a chunk of padded planes, per-thread blocks);
//   phases:     the phase copies of a chunk of whole images (in and out), at most 4 x the chunk
//               bound, plus what the undilated layer's path takes; for wgrad one dW more;
//   sub-pixel dgrad: a chunk of dx's phases (about 1 MiB, kSubpixelChunkBytes, or one image of at
//               most 4 MiB, kFlatChunkBytes), plus what the phases' forwards take;
//   channels wgrad: 8 copies of dw (a round's slices) and one more, and per thread the channels-last
//               copies of one slice of images (at most 512 KiB, kChanSliceBytes, or one image of at
//               most 4 MiB, kFlatChunkBytes); with rows under a vector wide, one plane (H x W x lanes) more;
//   dot wgrad:  8 copies of dw (a round's slices), and per thread the flat copies and dy rows of one
//               slice of images (at most 512 KiB, kDotSliceBytes, or one image);
//   depthwise:  per thread one zero-padded input plane, at most about the chunk bound (the window
//               its outputs read, rounded up to whole register tiles; see depthwise_planes_fit);
//               larger planes take the flat GEMM's bands (forward, stride-1 dgrad) or need none
//               (strided dgrad's scattered adds, wgrad);
//   per thread: one packed B block, KC x NC (256 x 512 fp32 / 256 x 256 fp64 = 512 KiB), plus
//               for a staged forward one unit's C (at most 256 KiB, kStageBytes, or one MR-row
//               panel), for packed wgrad one packed dy chunk (C_out/groups x KC) and for strided
//               dgrad one cols chunk of C_in/groups*KH*KW x nbc with nbc*rows <= 64 Ki elements (at
//               least NR columns).
// None of it grows with the batch size past the chunk bound: no im2col matrix is ever built. Nor
// with the image size, but Winograd's chunk of padded planes (at least one image) and the dot
// wgrad's slices (at least one image per thread).
// Freed blocks of 256 KiB and more are kept for the next calls, at most workspace_cache_bytes()
// (128 MiB) in all (workspace.cpp): handed back, glibc re-faulted them every call.
//
// A caller may name the algorithm instead (ConvAlgo, conv2d_algorithms: fastconv's autotune times
// the candidates and keeps the fastest); the lists below then run that entry only. Winograd's tiles
// are named each ("winograd2", "winograd3", "winograd4"), offered where the float32 conv precision
// allows them (winograd.cpp's error rules, which the chooser keeps too); "winograd" is the chooser's.
#include "conv.h"

#include <omp.h>

#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "conv_impl.h"
#include "gemm.h"
#include "winograd.h"

namespace fastconv {

// ---------------------------------------------------------------------------------------------
// forward
// ---------------------------------------------------------------------------------------------

namespace {

// Whether the list's entry `entry` may run under `algo`: the heuristics (kAuto) try every entry;
// a named algorithm only its own (conv2d_algorithms lists it, so it applies).
bool takes(ConvAlgo algo, ConvAlgo entry) { return algo == ConvAlgo::kAuto || algo == entry; }

// The Winograd tile that runs under `algo`: the chooser's (`chosen`: winograd_tile or
// winograd_wgrad_tile, called only here) for the heuristics and for "winograd", the named tile,
// or 0 (another algorithm named).
template <class Chosen>
int tile_under(ConvAlgo algo, Chosen chosen) {
  switch (algo) {
    case ConvAlgo::kAuto:
    case ConvAlgo::kWinograd: return chosen();
    case ConvAlgo::kWinograd2: return 2;
    case ConvAlgo::kWinograd3: return 3;
    case ConvAlgo::kWinograd4: return 4;
    default: return 0;
  }
}

// Whether pass `pass` of s runs on its phase images (conv_phases.cpp): named, or for the heuristics
// where the undilated layer they form takes Winograd (elsewhere both run the same GEMMs, and the
// copies are extra).
bool takes_phases(const ConvShape& s, const char* pass, index_t elem_bytes, ConvAlgo algo) {
  if (algo == ConvAlgo::kPhases) return true;
  return algo == ConvAlgo::kAuto && phases_apply(s, elem_bytes) &&
         conv2d_uses_winograd(phase_shape(s, elem_bytes), pass, elem_bytes) != 0;
}

// The forward of a layer that is not depthwise, its weight read through wa: as it lies
// (conv2d_forward), or as dgrad's flipped, transposed weight (dgrad_as_forward).
template <typename T>
void general_forward(const ConvShape& s, const T* x, const WeightA<T>& wa, const T* b, T* y, int nthreads,
                     ConvAlgo algo) {
  // Winograd, on the 3x3 layers where it pays (see winograd_tile), or in the named tile; it
  // declines data that holds an Inf or NaN
  const int m = tile_under(algo, [&] { return winograd_tile(s, sizeof(T)); });
  if (m && winograd_forward(s, m, x, wa.w, wa.lda, wa.off, b, y, nthreads)) return;
  // any layer: the GEMM on the flat layout
  gemm_forward(s, x, wa, b, y, nthreads);
}

// Whether a depthwise forward's direct loops (or a depthwise stride-1 dgrad's, a forward of dy)
// would pad input planes larger than the chunk bound: they copy one whole plane per thread (the
// window its outputs read, rounded up to their tiles; on 2 threads 2 GB for one 16000 x 16000
// image). Such layers take the GEMM on the flat layout instead, which copies bands of rows.
template <typename T>
bool depthwise_planes_fit(const ConvShape& s) {
  const index_t rows = (s.OH - 1) * s.stride_h + (s.KH - 1) * s.dil_h + 1;
  const index_t cols = (s.OW - 1) * s.stride_w + (s.KW - 1) * s.dil_w + 1;
  return rows * cols * index_t(sizeof(T)) <= conv_chunk_bytes();
}

}  // namespace

template <typename T>
void conv2d_forward(const ConvShape& s, const T* x, const T* w, const T* b, T* y, int nthreads, ConvAlgo algo) {
  // depthwise, planes within the bound: direct loops
  if (is_depthwise(s) && depthwise_planes_fit<T>(s)) return depthwise_forward(s, x, w, b, y, nthreads);
  if (takes_phases(s, "fwd", sizeof(T), algo)) return phases_forward(s, x, w, b, y, nthreads);
  const index_t Kg = s.C_in / s.groups * s.KH * s.KW;
  std::vector<index_t> off(static_cast<std::size_t>(Kg));  // the weight's rows as they lie
  for (index_t p = 0; p < Kg; ++p) off[p] = p;
  general_forward(s, x, WeightA<T>{w, s.C_out / s.groups * Kg, Kg, off.data()}, b, y, nthreads, algo);
}

// ---------------------------------------------------------------------------------------------
// backward-input (dgrad)
// ---------------------------------------------------------------------------------------------

namespace {

// Whether all n values at p are finite, in blocks over the threads.
template <typename T>
bool all_finite_parallel(const T* p, index_t n, int nthreads) {
  constexpr index_t kBlock = index_t(1) << 16;
  bool finite = true;
#pragma omp parallel for schedule(static) num_threads(nthreads) if (n > kBlock) reduction(&& : finite)
  for (index_t b = 0; b < ceil_div(n, kBlock); ++b)
    finite = finite && all_finite(p + b * kBlock, min_i(kBlock, n - b * kBlock));
  return finite;
}

// The stride-1 dgrad paths that run as a forward of dy (GEMM or depthwise) multiply dy's zero
// padding by every tap, so an Inf or NaN in w would turn border pixels NaN where the sum over
// real outputs (the reference's, PyTorch's) leaves them finite. Runs such a path (`run`) unless w
// is not all finite, and returns whether its dx stands, checking the smaller of w and dx: w
// before, or dx after (all finite: no tap met the padding as Inf or NaN), then w.
template <typename T, class Run>
bool dgrad_as_forward_stands(const ConvShape& s, const T* w, const T* dx, int nthreads, Run run) {
  const index_t w_size = s.C_out * (s.C_in / s.groups) * s.KH * s.KW, dx_size = s.N * s.C_in * s.H * s.W;
  if (w_size <= dx_size && !all_finite_parallel(w, w_size, nthreads)) return false;
  run();
  return w_size <= dx_size || all_finite_parallel(dx, dx_size, nthreads) || all_finite_parallel(w, w_size, nthreads);
}

// dgrad at stride 1 is a stride-1 convolution of dy: dx[c, ih, iw] = sum over o, kh, kw of
// dy[o, ih - pad' + kh'*d] * w'[c, o, kh', kw'] with kh' = KH-1-kh (the flipped kernel) and
// pad' = d*(KH-1) - pad (negative when the padding exceeds the kernel span: the bounds checks of
// im2col handle any offset). Sharing the forward's kernels beats GEMM + col2im: the depth is
// C_out*KH*KW instead of C_out, and nothing is scattered.
template <typename T>
void dgrad_as_forward(const ConvShape& s, const T* dy, const T* w, T* dx, int nthreads, ConvAlgo algo) {
  const index_t Cig = s.C_in / s.groups, Cog = s.C_out / s.groups, KK = s.KH * s.KW;
  // The flipped, transposed weight w'[ci][co][k'] = w[co][ci][KK-1-k'] is read where it lies: row ci
  // is KK elements after row ci-1, depth p = co*KK + k' (the order of dy's channels and taps in the
  // flat layout) at offset co*Cig*KK + KK-1-k'. Materialising w' was a third of
  // resnet50_1x1_1024_256_14_b1's dgrad (a transpose that writes one element per cache line).
  std::vector<index_t> off(static_cast<std::size_t>(Cog * KK));
  for (index_t co = 0; co < Cog; ++co)
    for (index_t k = 0; k < KK; ++k) off[co * KK + k] = co * Cig * KK + KK - 1 - k;
  general_forward(dgrad_shape(s), dy, WeightA<T>{w, Cog * Cig * KK, KK, off.data()}, static_cast<const T*>(nullptr), dx,
                  nthreads, algo);
}

}  // namespace

template <typename T>
void conv2d_backward_input(const ConvShape& s, const T* dy, const T* w, T* dx, int nthreads, ConvAlgo algo) {
  const bool unit_stride = s.stride_h == 1 && s.stride_w == 1;
  // depthwise, but at stride 1 with planes over the bound (those take the flat GEMM's bands, below)
  if (is_depthwise(s) && !(unit_stride && !depthwise_planes_fit<T>(dgrad_shape(s)))) {
    // at stride 1 a depthwise dgrad is a depthwise forward of dy with the flipped kernel and
    // padding d*(K-1) - pad (see dgrad_as_forward): register tiles instead of scattered adds
    if (s.C_out / s.groups == 1 && unit_stride &&
        dgrad_as_forward_stands(s, w, dx, nthreads, [&] { depthwise_dgrad_as_forward(s, dy, w, dx, nthreads); }))
      return;
    // any depthwise layer: scattered adds
    return depthwise_backward_input(s, dy, w, dx, nthreads);
  }
  if (takes_phases(s, "dgrad", sizeof(T), algo)) return phases_backward_input(s, dy, w, dx, nthreads);
  // at stride 1: the forward's paths (Winograd, the flat GEMM) on dy, but for the heuristics not
  // where col2im measured faster (2-core AMD EPYC, AVX2, interleaved, null control 1.00-1.01): a
  // dgrad of fewer than 16 input channels per group, whose forward has as few GEMM rows
  // (lenet5_conv2_b64: col2im 0.64x the time; resnet20_3x3_16_32, 16 channels: 1.65x), or a
  // dilated one (dilated3x3_d2_256_28, batch 1 and 16: 0.79x, 0.82x)
  const bool as_forward = algo == ConvAlgo::kAuto ? s.C_in / s.groups >= 16 && s.dil_h == 1 && s.dil_w == 1
                                                  : algo != ConvAlgo::kCol2im;
  if (unit_stride && as_forward &&
      dgrad_as_forward_stands(s, w, dx, nthreads, [&] { dgrad_as_forward(s, dy, w, dx, nthreads, algo); }))
    return;
  // strided and undilated: a forward of dy per phase of dx where it pays (conv_subpixel.cpp)
  const bool subpixel =
      algo == ConvAlgo::kAuto ? std::is_same_v<T, float> && subpixel_pays(s) : algo == ConvAlgo::kSubpixel;
  if (subpixel && subpixel_applies(s, sizeof(T)) &&
      dgrad_as_forward_stands(s, w, dx, nthreads, [&] { subpixel_backward_input(s, dy, w, dx, nthreads); }))
    return;
  // any stride: GEMM (cols = W^T dy) + col2im
  dgrad_col2im(s, dy, w, dx, nthreads);
}

// ---------------------------------------------------------------------------------------------
// backward-weight (wgrad)
// ---------------------------------------------------------------------------------------------

namespace {

// wgrad takes the flat path for weights smaller than this, pointwise ones smaller than 1 MiB, and
// with 16+ images and the AVX-512 kernels, any smaller than the second (see conv2d_backward_weight).
constexpr index_t kFlatWgradMaxBytes = index_t(4) << 20;
constexpr index_t kFlatWgradBatchMaxBytes = index_t(10) << 20;

}  // namespace

template <typename T>
void conv2d_backward_weight(const ConvShape& s, const T* dy, const T* x, T* dw, int nthreads, ConvAlgo algo) {
  // depthwise: direct loops
  if (is_depthwise(s)) return depthwise_backward_weight(s, dy, x, dw, nthreads);
  if (takes_phases(s, "wgrad", sizeof(T), algo)) return phases_backward_weight(s, dy, x, dw, nthreads);
  // Winograd, on the 3x3 layers of 128+ channels where it pays, fp32 (see winograd_wgrad_tile), or
  // in the named tile; it declines data that holds an Inf or NaN (named, it hands on to the
  // heuristics)
  if (const int m = tile_under(algo, [&] { return winograd_wgrad_tile(s, sizeof(T)); })) {
    if (winograd_backward_weight(s, m, dy, x, dw, nthreads)) return;
    algo = ConvAlgo::kAuto;
  }
  if constexpr (std::is_same_v<T, float>) {  // the channels and dot kernels are fp32 only
    // vectors along the input channels, for few of them (see chan_wgrad_applies)
    if (takes(algo, ConvAlgo::kChan) && chan_wgrad_applies(s)) return chan_backward_weight(s, dy, x, dw, nthreads);
    // dot products along the pixels, for few output channels (see dot_wgrad_applies); it declines
    // an x that holds an Inf or NaN
    if (takes(algo, ConvAlgo::kDot) && dot_wgrad_applies(s)) {
      if (dot_backward_weight(s, dy, x, dw, nthreads)) return;
      algo = ConvAlgo::kAuto;
    }
  }
  // the flat path keeps all of dW^T live while it walks the images: it wins while that is a few
  // MiB at most (measured, flat vs packed time: 0.5x on ResNet-20's layers, 0.75-0.87x on VGG's
  // conv3_1 (1.2 MB), 0.71-1.1x on a 3x3x256 (2.4 MB), 4.5x on ResNet-50's 3x3x512 (9.4 MB)); a
  // pointwise layer's packed operand is a plain transpose, which wins from 1 MiB (1.1-1.4x there).
  // With the AVX-512 kernels and 16+ images, up to 10 MiB, pointwise layers too (Zen 5, 2 threads:
  // 0.84x on ResNet-18-CIFAR's 256 -> 512 stride-2 layer at batch 32 (4.7 MB), 0.88-0.89x on
  // 3x3x512 at 4x4 and 14x14, 1.0x at 7x7; at 1-8 images 1.0-1.4x; pointwise, batch 16-32: 0.45x
  // on MobileNetV2-CIFAR's 320 -> 1280 at 4x4 (1.6 MB), 0.71x on 960 -> 320, 0.50x on 512 -> 1024
  // at 8x8, 0.54x / 0.87x on ResNet-50's 512 <-> 2048 at 7x7 (4 MB), 0.90x on 1024 -> 256 at 14x14,
  // 1.0x on 256 -> 1024 at 56x56; at batch 1 1.03x)
  const index_t weight_bytes = s.C_out * (s.C_in / s.groups) * s.KH * s.KW * index_t(sizeof(T));
  const bool batch = s.N >= 16 && gemm_isa_is("avx512");
  const index_t flat_max = batch ? kFlatWgradBatchMaxBytes : is_pointwise(s) ? index_t(1) << 20 : kFlatWgradMaxBytes;
  if (algo == ConvAlgo::kFlat || (algo == ConvAlgo::kAuto && weight_bytes < flat_max))
    return flat_backward_weight(s, dy, x, dw, nthreads);
  // any layer: the packed GEMM
  gemm_backward_weight(s, dy, x, dw, nthreads);
}

// ---------------------------------------------------------------------------------------------
// backward-bias: one path
// ---------------------------------------------------------------------------------------------

template <typename T>
void conv2d_backward_bias(index_t N, index_t C, index_t P, const T* dy, T* db, int nthreads) {
  // one channel per iteration, summed image by image with 16 interleaved partial sums: a fixed
  // order on any thread count, and one the compiler can vectorise
#pragma omp parallel for schedule(static) num_threads(nthreads)
  for (index_t c = 0; c < C; ++c) {
    T part[16] = {};
    for (index_t n = 0; n < N; ++n) {
      const T* row = dy + (n * C + c) * P;
      index_t i = 0;
      for (; i + 16 <= P; i += 16)
        for (int l = 0; l < 16; ++l) part[l] += row[i + l];
      for (; i < P; ++i) part[i % 16] += row[i];
    }
    T sum = T(0);
    for (int l = 0; l < 16; ++l) sum += part[l];
    db[c] = sum;
  }
}

// ---------------------------------------------------------------------------------------------
// which path runs, for tests: these follow the lists above
// ---------------------------------------------------------------------------------------------

int conv2d_uses_winograd(const ConvShape& s, const std::string& pass, index_t elem_bytes) {
  if (is_depthwise(s)) return 0;
  if (pass == "fwd") return winograd_tile(s, elem_bytes);
  if (pass == "dgrad") return s.stride_h == 1 && s.stride_w == 1 ? winograd_tile(dgrad_shape(s), elem_bytes) : 0;
  if (pass == "wgrad") return winograd_wgrad_tile(s, elem_bytes);
  throw std::invalid_argument("conv2d_uses_winograd: pass must be 'fwd', 'dgrad' or 'wgrad', got '" + pass + "'");
}

namespace {

// The Winograd tiles pass `pass` of s may run in (conv2d_algorithms' "winograd<m>"), ascending.
std::vector<int> winograd_tiles_of(const ConvShape& s, const std::string& pass, index_t elem_bytes) {
  if (is_depthwise(s)) return {};
  if (pass == "fwd") return winograd_tiles(s, elem_bytes);
  if (pass == "dgrad") return s.stride_h == 1 && s.stride_w == 1 ? winograd_tiles(dgrad_shape(s), elem_bytes)
                                                                 : std::vector<int>{};
  return winograd_wgrad_tiles(s, elem_bytes);
}

}  // namespace

std::vector<std::string> conv2d_algorithms(const ConvShape& s, const std::string& pass, index_t elem_bytes) {
  if (pass != "fwd" && pass != "dgrad" && pass != "wgrad")
    throw std::invalid_argument("conv2d_algorithms: pass must be 'fwd', 'dgrad' or 'wgrad', got '" + pass + "'");
  if (is_depthwise(s)) return {"direct"};
  std::vector<std::string> names;
  if (phases_apply(s, elem_bytes)) names.push_back("phases");
  for (int m : winograd_tiles_of(s, pass, elem_bytes)) names.push_back("winograd" + std::to_string(m));
  if (pass == "fwd") {
    names.push_back("gemm");
  } else if (pass == "dgrad") {
    if (s.stride_h == 1 && s.stride_w == 1) names.push_back("gemm");
    else if (subpixel_applies(s, elem_bytes)) names.push_back("subpixel");
    names.push_back("col2im");
  } else {
    if (elem_bytes == 4 && chan_wgrad_applies(s)) names.push_back("chan");
    if (elem_bytes == 4 && dot_wgrad_applies(s)) names.push_back("dot");
    names.insert(names.end(), {"flat", "packed"});
  }
  return names;
}

ConvAlgo algorithm_of(const ConvShape& s, const std::string& pass, index_t elem_bytes, const std::string& name) {
  if (name == "auto") return ConvAlgo::kAuto;  // the common call: no list built
  std::vector<std::string> names = conv2d_algorithms(s, pass, elem_bytes);
  // "winograd": the chooser's tile, where it takes one (conv.h)
  if (conv2d_uses_winograd(s, pass, elem_bytes)) names.push_back("winograd");
  std::string listed;
  for (const std::string& n : names) listed += (listed.empty() ? "'" : ", '") + n + "'";
  bool found = false;
  for (const std::string& n : names) found = found || n == name;
  if (!found)
    throw std::invalid_argument("conv2d " + pass + ": algorithm '" + name + "' does not apply to this layer (it takes " +
                                listed + " or 'auto')");
  static const std::pair<const char*, ConvAlgo> kByName[] = {
      {"phases", ConvAlgo::kPhases},       {"winograd", ConvAlgo::kWinograd},   {"winograd2", ConvAlgo::kWinograd2},
      {"winograd3", ConvAlgo::kWinograd3}, {"winograd4", ConvAlgo::kWinograd4}, {"gemm", ConvAlgo::kGemm},
      {"col2im", ConvAlgo::kCol2im},       {"subpixel", ConvAlgo::kSubpixel},   {"chan", ConvAlgo::kChan},
      {"dot", ConvAlgo::kDot},             {"flat", ConvAlgo::kFlat},           {"packed", ConvAlgo::kPacked},
      {"direct", ConvAlgo::kDirect}};
  for (const auto& [n, a] : kByName)
    if (name == n) return a;
  throw std::logic_error("conv2d: algorithm '" + name + "' has no enum");  // a name listed above without one
}

bool conv2d_dgrad_uses_subpixel(const ConvShape& s) {
  return !is_depthwise(s) && !takes_phases(s, "dgrad", 4, ConvAlgo::kAuto) && subpixel_pays(s);
}

bool conv2d_wgrad_uses_dot(const ConvShape& s) {
  return !is_depthwise(s) && !winograd_wgrad_tile(s, 4) && !chan_wgrad_applies(s) && dot_wgrad_applies(s);
}

#define FASTCONV_INSTANTIATE(T)                                                                      \
  template void conv2d_forward<T>(const ConvShape&, const T*, const T*, const T*, T*, int, ConvAlgo); \
  template void conv2d_backward_input<T>(const ConvShape&, const T*, const T*, T*, int, ConvAlgo);    \
  template void conv2d_backward_weight<T>(const ConvShape&, const T*, const T*, T*, int, ConvAlgo);   \
  template void conv2d_backward_bias<T>(index_t, index_t, index_t, const T*, T*, int);
FASTCONV_INSTANTIATE(float)
FASTCONV_INSTANTIATE(double)

}  // namespace fastconv
