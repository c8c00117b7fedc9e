// Memory-format conversion: NCHW <-> NHWC (PyTorch's channels_last) as a batch of 2-d transposes.
#pragma once

#include "common.h"

namespace fastconv {

// dst[n][c][r] = src[n][r][c] for n < N, r < R, c < C: src holds N row-major R x C matrices, dst
// their transposes (C x R). NCHW -> NHWC is R = channels, C = H*W; NHWC -> NCHW is R = H*W, C =
// channels. Strips of one cache line of src columns (16 fp32), every row, as squares of one line a
// side, as tiles of one vector's lanes transposed in registers; the ragged edges element by element.
// A pure copy: the same bits for any thread count.
template <typename T>
void transpose_batched(index_t N, index_t R, index_t C, const T* src, T* dst, int nthreads);

}  // namespace fastconv
