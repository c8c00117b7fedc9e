// Inverted dropout with a counter-based generator: element k of a call with seed s is kept iff
// u_k >= p, where u_k = (h_k >> 11) * 2^-53 and h_k is output k of splitmix64 seeded with
// mix64(s) (h_k = mix64(mix64(s) + (k + 1) * 0x9e3779b97f4a7c15)). A mask depends only on
// (seed, shape): never on the thread count or the ISA. It is NOT the reference backend's mask
// (NumPy's PCG64 stream), only the same distribution.
#pragma once

#include <cstdint>

#include "common.h"

namespace fastconv {

// y = x * (mask ? 1/(1-p) : 0) with 1/(1-p) computed in T (0 when p = 1), as PyTorch's
// x * noise: a dropped NaN or Inf gives NaN. mask gets 1 (kept) or 0, one byte each (NumPy bool).
template <typename T>
void dropout_forward(index_t n, const T* x, double p, std::uint64_t seed, T* y, std::uint8_t* mask, int nthreads);
// dx = dy * (mask ? 1/(1-p) : 0).
template <typename T>
void dropout_backward(index_t n, const T* dy, const std::uint8_t* mask, double p, T* dx, int nthreads);

}  // namespace fastconv
