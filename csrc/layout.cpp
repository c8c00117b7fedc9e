// NCHW <-> NHWC as a batch of 2-d transposes (layout.h). fastconv.torch converts a channels_last
// tensor to the kernels' NCHW on the way in, and the results back, with this: PyTorch's own copies
// ran at 9-60 GB/s on a 2-core AMD EPYC Zen 5 (a 32x144x32x32 fp32 tensor: 1.3-1.8 ms to NCHW, 4.1
// ms back; these strips: 0.63 and 0.44 ms; 2.0-3.5x and 3.4-12x PyTorch's speed from 16 channels
// up, 0.8x at 3, where the strips are element by element), and a patched channels_last MobileNetV2
// training step spent more in them than in its convolutions.
#include "layout.h"

#include <omp.h>

#include "lanes.h"

namespace fastconv {

namespace {

// The L x L tile at s (rows ld_s apart) transposed to d (rows ld_d apart), in registers: log2(L)
// rounds of interleaving rows i and i + L/2 (the perfect shuffle: after them row j holds column j).
template <typename T>
__attribute__((always_inline)) inline void transpose_tile(const T* s, index_t ld_s, T* d, index_t ld_d) {
  using Ln = Lanes<T>;
  constexpr int L = Ln::L;
  typename Ln::V v[L], w[L];
  for (int i = 0; i < L; ++i) v[i] = load_lanes(s + i * ld_s);
  for (int round = 1; round < L; round *= 2) {
    for (int i = 0; i < L / 2; ++i) {
      w[2 * i] = Ln::zip_lo(v[i], v[i + L / 2]);
      w[2 * i + 1] = Ln::zip_hi(v[i], v[i + L / 2]);
    }
    for (int i = 0; i < L; ++i) v[i] = w[i];
  }
  for (int i = 0; i < L; ++i) store_lanes(d + i * ld_d, v[i]);
}

// Columns [c0, c1) of one matrix, every row: the dst rows c0..c1 (at most 2L, one cache line of
// src per row) written front to back, in squares of 2L x 2L (four tiles: each square row one whole
// 64-byte line, read and written); the rows past the last whole square and a strip narrower than 2L
// element by element. Strips, not square blocks: blocks of 64 x 64 wrote 64 dst rows at once,
// which, 4 KiB apart (NHWC -> NCHW of a 32x32 image), ran at 0.7-0.9x PyTorch's copy.
template <typename T>
FASTCONV_CLONES void transpose_strip(const T* src, T* dst, index_t R, index_t C, index_t c0, index_t c1) {
  constexpr index_t L = Lanes<T>::L, S = 2 * L;
  const index_t r_sq = c1 - c0 == S ? R / S * S : 0;
  for (index_t r = 0; r < r_sq; r += S)
    for (index_t i = 0; i < S; i += L)
      for (index_t j = 0; j < S; j += L) transpose_tile(src + (r + i) * C + c0 + j, C, dst + (c0 + j) * R + r + i, R);
  for (index_t c = c0; c < c1; ++c)
    for (index_t r = r_sq; r < R; ++r) dst[c * R + r] = src[r * C + c];
}

}  // namespace

template <typename T>
void transpose_batched(index_t N, index_t R, index_t C, const T* src, T* dst, int nthreads) {
  constexpr index_t S = 2 * Lanes<T>::L;
  const index_t strips = ceil_div(C, S), jobs = N * strips;
#pragma omp parallel for schedule(static) num_threads(nthreads) if (jobs > 1 && N * R * C > (index_t(1) << 15))
  for (index_t job = 0; job < jobs; ++job) {
    const index_t n = job / strips, c0 = job % strips * S;
    transpose_strip(src + n * R * C, dst + n * R * C, R, C, c0, min_i(C, c0 + S));
  }
}

template void transpose_batched<float>(index_t, index_t, index_t, const float*, float*, int);
template void transpose_batched<double>(index_t, index_t, index_t, const double*, double*, int);

}  // namespace fastconv
