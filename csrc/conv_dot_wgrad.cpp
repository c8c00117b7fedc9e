// wgrad as dot products along the pixels, for layers with few output channels (and pointwise ones
// on large planes, see below):
//   dW_g[co][k] = sum over images and flat columns q of dyq[co][q] * xq[off[k] + q],
// xq an image's flat copy (the forward's layout) and dyq its dy on the same columns, zero at the
// junk ones. The dot kernel reads both along q where they lie (RA*RB FMAs per RA + RB vector
// loads), where the GEMM paths broadcast one operand and pack dy^T: with 16 output channels their
// few-columns kernel waits on loads. Measured, time against the flat path (which skips the junk
// columns; fp32, AVX-512, 2 / 1 threads): ResNet-20's 3x3x16 at 32x32 0.74x / 0.82x, LeNet's conv2
// (16 channels, 5x5x6) 1.0x. Where it does not apply it lost: 3x3x32 at 16x16 1.15-1.25x, fp64
// 1.14-1.5x, the AVX2 kernels 1.25-1.6x (none are built); and already against the flat path with
// junk columns, 64 output channels 1.05-1.22x, ResNet-50's conv1 1.38x, and LeNet's conv1 (25 taps
// x channels) 1.03x: its copies do not pay. Nor on small images, whose dot products along a row
// of dy are short (2-core AMD EPYC Zen 5, 2 threads, time against the flat path at 16 output
// channels): 64 output pixels 1.62x, 100 1.09-1.85x (LeNet's conv2 1.09-1.24x), 144 1.14x, but 196
// 0.81-0.99x, 256 0.81x, 400-1024 0.74-0.92x (1.10x at 64 input channels); hence kDotMinPixels.
// Pointwise layers read dy's and x's rows where they lie (no copies, no junk columns), any number
// of channels, where the flat path's packing of dy^T costs most: planes of 1024+ pixels whose image
// (x's and dy's rows) fits kDotPointwiseImageBytes (three quarters of Zen 5's 1 MiB L2). Time
// against the flat path (Zen 5, 2 threads, batch 32): MobileNetV2-CIFAR's layers at 32x32, 16 -> 96
// 0.56x, 24 -> 144 0.81x, 96 -> 24 0.77x, 144 -> 24 0.88x, 32 -> 16 0.74x; at 16x16 (256 pixels) it
// lost, 1.03-1.47x, and on ResNet-50's 256 <-> 64 at 56x56 (4 MB an image, batch 16) 1.13-1.78x.
// The batch is cut into slices of images whose copies take at most kDotSliceBytes (an L2's
// share), fixed by the shape. Rounds of up to kDotSlots slices run as units (slice, group, run of
// output-channel tiles): a unit copies its slice and computes each of its tiles in one kernel call
// over the slice's images; then the round's slices are added to dW in order. One fixed order on
// any thread count, and a workspace of kDotSlots dW whatever the batch.
// Junk columns pair dy = 0 with real pixels: x with a non-finite value returns false (the flat
// path takes it); pointwise layers have none and never decline.
#include <omp.h>

#include "conv_impl.h"
#include "gemm.h"

namespace fastconv {
namespace {

constexpr index_t kDotSliceBytes = index_t(512) << 10;
constexpr index_t kDotSlots = 8;
constexpr index_t kDotMinPixels = 160;  // output pixels per image (OH * OW), see above
constexpr index_t kDotPointwiseMinPixels = 1024;  // pointwise layers, see above
constexpr index_t kDotPointwiseImageBytes = index_t(768) << 10;

}  // namespace

// For an fp32 wgrad (the only one with a dot kernel; the caller checks the type).
bool dot_wgrad_applies(const ConvShape& s) {
  const index_t Kg = s.C_in / s.groups * s.KH * s.KW;
  const index_t P = s.OH * s.OW;
  if (is_pointwise(s))
    return dot_kernel().fn && P % dot_kernel().lanes == 0 && P >= kDotPointwiseMinPixels &&
           (Kg + s.C_out / s.groups) * P * index_t(sizeof(float)) <= kDotPointwiseImageBytes;
  return dot_kernel().fn && s.C_out / s.groups <= 16 && Kg >= 64 && Kg <= 1024 && P >= kDotMinPixels;
}

bool dot_backward_weight(const ConvShape& s, const float* dy, const float* x, float* dw, int nthreads) {
  using T = float;
  const DotKernel<T>& dk = dot_kernel();
  const int RA = dk.ra, RB = dk.rb;
  const index_t G = s.groups, Cig = s.C_in / G, Cog = s.C_out / G, Kg = Cig * s.KH * s.KW;
  const index_t P = s.OH * s.OW, HW = s.H * s.W;
  const FlatLayout f = flat_layout(s, dk.lanes);  // cols: rows rounded up to whole vectors
  const index_t CB = ceil_div(Cog, RA), KB = ceil_div(Kg, RB);
  // a slice: its images' flat copies (the group's channels) and dy rows within kDotSliceBytes
  const index_t per_image = (Cig * f.chan + Cog * f.cols) * index_t(sizeof(T));
  const index_t IB = min_i(s.N, max_i(1, kDotSliceBytes / per_image)), S = ceil_div(s.N, IB);
  const index_t slots = min_i(S, kDotSlots);
  // runs of output-channel tiles: 8 units a round where the slices are too few for them (each
  // run copies its slice's images again)
  const index_t R = min_i(CB, ceil_div(8, slots * G));
  const index_t dw_size = s.C_out * Kg;
  Buffer<T> partial(slots * dw_size);  // shared: the dW of each slice of a round
  // pointwise (the identity layout): dy's and x's rows are read where they lie, with no copies
  const bool in_place = f.identity;
  bool finite = true;
#pragma omp parallel num_threads(static_cast<int>(min_i(nthreads, slots * G * R)))
  {
    // per thread: flat copies of a slice's images and their dy rows, zeroed once: the junk
    // columns of dyq are never written, and xq holds only finite values wherever a tile reads
    // past its group's channels
    Buffer<T> xq(in_place ? 0 : IB * f.image), dyq(in_place ? 0 : IB * Cog * f.cols);
    if (!in_place) {  // (no buffers at all in place: memset's pointer may not be null even for 0 bytes)
      fill_zero(xq.data(), xq.size());
      fill_zero(dyq.data(), dyq.size());
    }
    for (index_t s0 = 0; s0 < S; s0 += slots) {
      const index_t round = min_i(slots, S - s0);
#pragma omp for schedule(dynamic, 1) reduction(&& : finite)
      for (index_t u = 0; u < round * G * R; ++u) {
        const index_t slot = u / (G * R), grp = (u / R) % G, run = u % R;
        const index_t cb0 = run * CB / R, cb1 = (run + 1) * CB / R, co1 = min_i(Cog, cb1 * RA);
        const index_t n0 = (s0 + slot) * IB, imgs = min_i(IB, s.N - n0);
        for (index_t img = 0; img < imgs && finite && !in_place; ++img) {
          for (index_t c = grp * Cig; c < (grp + 1) * Cig; ++c) {
            const T* xc = x + ((n0 + img) * s.C_in + c) * HW;
            finite = finite && all_finite(xc, HW);
            flat_fill_channel(s, f, xc, xq.data() + img * f.image + c * f.chan);
          }
          for (index_t co = cb0 * RA; co < co1; ++co) {
            const T* src = dy + ((n0 + img) * s.C_out + grp * Cog + co) * P;
            T* dst = dyq.data() + (img * Cog + co) * f.cols;
            for (index_t oh = 0; oh < s.OH; ++oh, src += s.OW, dst += f.Wq)
              for (index_t ow = 0; ow < s.OW; ++ow) dst[ow] = src[ow];
          }
        }
        if (!finite) continue;
        // where the group's rows start in image n0 (in place, the identity layout is x itself: f.image
        // = C_in*HW, f.chan = HW, f.cols = P: whole vectors, see dot_wgrad_applies), and dy's stride to
        // the next image
        const T* xg = (in_place ? x + n0 * f.image : xq.data()) + grp * Cig * f.chan;
        const T* dyg = in_place ? dy + (n0 * s.C_out + grp * Cog) * P : dyq.data();
        const index_t dy_image = (in_place ? s.C_out : Cog) * f.cols;
        T* part = partial.data() + slot * dw_size + grp * Cog * Kg;
        for (index_t cb = cb0; cb < cb1; ++cb)
          for (index_t kb = 0; kb < KB; ++kb) {
            // rows past the edge repeat the last one; their sums are dropped
            const T* a[kMaxDotRows];
            const T* b[kMaxDotRows];
            for (int i = 0; i < RA; ++i) a[i] = dyg + min_i(Cog - 1, cb * RA + i) * f.cols;
            for (int j = 0; j < RB; ++j) b[j] = xg + f.off[min_i(Kg - 1, kb * RB + j)];
            T sums[kMaxDotRows * kMaxDotRows];
            dk.fn(f.cols, imgs, a, dy_image, b, f.image, sums);
            for (index_t co = cb * RA; co < min_i(Cog, (cb + 1) * RA); ++co)
              for (index_t k = kb * RB; k < min_i(Kg, (kb + 1) * RB); ++k)
                part[co * Kg + k] = sums[(co - cb * RA) * RB + k - kb * RB];
          }
      }
      // every thread reads the flag between this loop's barrier and the next write to it (the
      // next round's reduction, two barriers on), so all of them leave together
      if (!finite) break;
      add_round(partial.data(), round, dw_size, s0 == 0, dw);
    }
  }
  return finite;
}

}  // namespace fastconv
