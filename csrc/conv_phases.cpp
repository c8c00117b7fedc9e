// A dilated layer as undilated ones: at stride 1, output pixel (d_h*a + r, d_w*b + c) reads input
// pixels (d_h*i + r', d_w*j + c') only, with r' = (r - pad_t) mod d_h, through the same weight. Where
// the layer is "regular" (the sizes H, W and the paddings pad_t, pad_l multiples of the dilation, the
// output as large as the input: the usual padding = dilation * (K-1) / 2), r' = r and every phase
// (r, c) is the same undilated convolution of the phase image x_rc[i][j] = x[d_h*i + r][d_w*j + c]
// (H/d_h x W/d_w, padding pad/d): copied out, the d_h*d_w phases of each image form one batch of an
// undilated layer, which the stride-1 paths serve, Winograd among them (dilated layers have no
// Winograd of their own). Time against the dilated paths, copies included (2-core AMD EPYC Zen 1,
// AVX2, dilated3x3_d2_256_28, batch 1 / 16): forward 0.65x / 0.47x the flat GEMM's, dgrad
// 0.69x / 0.57x col2im's, wgrad 0.73-0.79x / 0.66x the flat path's.
// dgrad splits dy and merges dx the same way; wgrad sums over the phase batch, as over any batch.
// Workspace: the phase copies of a chunk of images, x's and y's (dgrad: dy's and dx's), at most
// 4 x conv_chunk_bytes() (whole images only: a layer one image of which is over it does not split),
// and for wgrad over several chunks one dW.
#include <omp.h>

#include <type_traits>

#include "conv_impl.h"

namespace fastconv {

namespace {

// Images per chunk: even chunks of whole images within the bound, or 0 where one image is over it.
index_t phases_chunk(const ConvShape& s, index_t elem_bytes) {
  const index_t per_image = (s.C_in * s.H * s.W + s.C_out * s.OH * s.OW) * elem_bytes;
  const index_t most = 4 * conv_chunk_bytes() / per_image;
  return most < 1 ? 0 : ceil_div(s.N, ceil_div(s.N, most));
}

// Planes (imgs x C, H x W, as NCHW lays them) to and from their phase images (kSplit: planar ->
// phased): image n's phase (r, c) is phase image (n*d_h + r)*d_w + c, C planes of H/d_h x W/d_w.
template <bool kSplit, typename T>
void copy_phases(const ConvShape& s, index_t imgs, index_t C, index_t H, index_t W,
                 std::conditional_t<kSplit, const T*, T*> planar, std::conditional_t<kSplit, T*, const T*> phased,
                 int nthreads) {
  const index_t dh = s.dil_h, dw = s.dil_w, Hp = H / dh, Wp = W / dw;
#pragma omp parallel for schedule(static) num_threads(nthreads)
  for (index_t plane = 0; plane < imgs * C; ++plane) {
    const index_t n = plane / C, ch = plane % C;
    for (index_t r = 0; r < dh; ++r)
      for (index_t c = 0; c < dw; ++c) {
        const index_t image = (n * dh + r) * dw + c;
        for (index_t i = 0; i < Hp; ++i) {
          const auto row = planar + plane * H * W + (i * dh + r) * W + c;  // every dw-th element from c
          const auto ph = phased + ((image * C + ch) * Hp + i) * Wp;
          for (index_t j = 0; j < Wp; ++j) {
            if constexpr (kSplit)
              ph[j] = row[j * dw];
            else
              row[j * dw] = ph[j];
          }
        }
      }
  }
}

}  // namespace

bool phases_apply(const ConvShape& s, index_t elem_bytes) {
  return s.dil_h * s.dil_w > 1 && s.stride_h == 1 && s.stride_w == 1 && !is_depthwise(s) && s.OH == s.H &&
         s.OW == s.W && s.H % s.dil_h == 0 && s.W % s.dil_w == 0 && s.pad_t % s.dil_h == 0 &&
         s.pad_l % s.dil_w == 0 && phases_chunk(s, elem_bytes) > 0;
}

ConvShape phase_shape(const ConvShape& s, index_t elem_bytes) {
  const index_t imgs = phases_chunk(s, elem_bytes);
  return ConvShape{imgs * s.dil_h * s.dil_w, s.C_in, s.H / s.dil_h, s.W / s.dil_w, s.C_out, s.KH, s.KW,
                   s.OH / s.dil_h, s.OW / s.dil_w, 1, 1, s.pad_t / s.dil_h, s.pad_l / s.dil_w, 1, 1, s.groups};
}

namespace {

// Runs run(phase layer, first image, images) on each chunk of images.
template <typename T, class Run>
void for_each_chunk(const ConvShape& s, Run run) {
  const ConvShape full = phase_shape(s, sizeof(T));
  const index_t chunk = full.N / (s.dil_h * s.dil_w);
  for (index_t n0 = 0; n0 < s.N; n0 += chunk) {
    ConvShape ps = full;
    ps.N = min_i(chunk, s.N - n0) * s.dil_h * s.dil_w;
    run(ps, n0, ps.N / (s.dil_h * s.dil_w));
  }
}

}  // namespace

template <typename T>
void phases_forward(const ConvShape& s, const T* x, const T* w, const T* b, T* y, int nthreads) {
  const ConvShape full = phase_shape(s, sizeof(T));
  Buffer<T> xp(full.N * full.C_in * full.H * full.W), yp(full.N * full.C_out * full.OH * full.OW);
  for_each_chunk<T>(s, [&](const ConvShape& ps, index_t n0, index_t imgs) {
    copy_phases<true, T>(s, imgs, s.C_in, s.H, s.W, x + n0 * s.C_in * s.H * s.W, xp.data(), nthreads);
    conv2d_forward(ps, xp.data(), w, b, yp.data(), nthreads);
    copy_phases<false, T>(s, imgs, s.C_out, s.OH, s.OW, y + n0 * s.C_out * s.OH * s.OW, yp.data(), nthreads);
  });
}

template <typename T>
void phases_backward_input(const ConvShape& s, const T* dy, const T* w, T* dx, int nthreads) {
  const ConvShape full = phase_shape(s, sizeof(T));
  Buffer<T> dyp(full.N * full.C_out * full.OH * full.OW), dxp(full.N * full.C_in * full.H * full.W);
  for_each_chunk<T>(s, [&](const ConvShape& ps, index_t n0, index_t imgs) {
    copy_phases<true, T>(s, imgs, s.C_out, s.OH, s.OW, dy + n0 * s.C_out * s.OH * s.OW, dyp.data(), nthreads);
    conv2d_backward_input(ps, dyp.data(), w, dxp.data(), nthreads);
    copy_phases<false, T>(s, imgs, s.C_in, s.H, s.W, dx + n0 * s.C_in * s.H * s.W, dxp.data(), nthreads);
  });
}

template <typename T>
void phases_backward_weight(const ConvShape& s, const T* dy, const T* x, T* dw, int nthreads) {
  const ConvShape full = phase_shape(s, sizeof(T));
  const index_t w_size = s.C_out * (s.C_in / s.groups) * s.KH * s.KW;
  Buffer<T> xp(full.N * full.C_in * full.H * full.W), dyp(full.N * full.C_out * full.OH * full.OW);
  Buffer<T> part(full.N < s.N * s.dil_h * s.dil_w ? w_size : 0);  // a later chunk's dW, then added
  for_each_chunk<T>(s, [&](const ConvShape& ps, index_t n0, index_t imgs) {
    copy_phases<true, T>(s, imgs, s.C_in, s.H, s.W, x + n0 * s.C_in * s.H * s.W, xp.data(), nthreads);
    copy_phases<true, T>(s, imgs, s.C_out, s.OH, s.OW, dy + n0 * s.C_out * s.OH * s.OW, dyp.data(), nthreads);
    conv2d_backward_weight(ps, dyp.data(), xp.data(), n0 == 0 ? dw : part.data(), nthreads);
    if (n0 > 0) {
#pragma omp parallel for schedule(static) num_threads(nthreads)
      for (index_t i = 0; i < w_size; ++i) dw[i] += part.data()[i];
    }
  });
}

#define FASTCONV_INSTANTIATE(T)                                                                      \
  template void phases_forward<T>(const ConvShape&, const T*, const T*, const T*, T*, int);          \
  template void phases_backward_input<T>(const ConvShape&, const T*, const T*, T*, int);             \
  template void phases_backward_weight<T>(const ConvShape&, const T*, const T*, T*, int);
FASTCONV_INSTANTIATE(float)
FASTCONV_INSTANTIATE(double)
#undef FASTCONV_INSTANTIATE

}  // namespace fastconv
