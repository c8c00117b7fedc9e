// Inverted dropout with a counter-based generator. Mirrors csrc/dropout.cpp, with Philox4x32-10
// in place of splitmix64 (the mask is still a pure function of (seed, element index), so any
// grid, block size or thread order gives the same mask):
//
//   element k draws word k % 4 of Philox4x32-10(counter = (lo32(q), hi32(q), 0, 0),
//                                                key = (lo32(seed), hi32(seed))),  q = k / 4,
//   and is kept iff that 32-bit draw u satisfies u >= threshold = ceil(p * 2^32), i.e. iff
//   u / 2^32 >= p exactly (p = 0 keeps all; p = 1 gives threshold 2^32: none).
//
// y = x * (kept ? scale : 0) with scale = 1 / (1 - p) rounded in T (0 for p = 1): a product, not a
// select, so a dropped NaN or Inf gives NaN, as PyTorch. float and double.
#include "common.cuh"

// Philox4x32 (Salmon, Moraes, Dror, Shaw: "Parallel random numbers: as easy as 1, 2, 3", SC'11),
// the multipliers and key increments of Random123 and cuRAND.
#define FC_PHILOX_M0 0xD2511F53u
#define FC_PHILOX_M1 0xCD9E8D57u
#define FC_PHILOX_W0 0x9E3779B9u
#define FC_PHILOX_W1 0xBB67AE85u

struct Philox4 {
    unsigned v[4];
};

__device__ __forceinline__ Philox4 philox4x32_10(unsigned long long counter, unsigned long long seed) {
    unsigned c0 = unsigned(counter), c1 = unsigned(counter >> 32), c2 = 0, c3 = 0;
    unsigned k0 = unsigned(seed), k1 = unsigned(seed >> 32);
    for (int round = 0; round < 10; ++round) {
        if (round) {  // the key is bumped between rounds
            k0 += FC_PHILOX_W0;
            k1 += FC_PHILOX_W1;
        }
        const unsigned hi0 = __umulhi(FC_PHILOX_M0, c0), lo0 = FC_PHILOX_M0 * c0;
        const unsigned hi1 = __umulhi(FC_PHILOX_M1, c2), lo1 = FC_PHILOX_M1 * c2;
        c0 = hi1 ^ c1 ^ k0;
        c1 = lo1;
        c2 = hi0 ^ c3 ^ k1;
        c3 = lo0;
    }
    return Philox4{{c0, c1, c2, c3}};
}

// One thread per group of 4 consecutive elements (one Philox call), grid-stride over the groups.
template <typename T>
__global__ void dropout_forward(const T* __restrict__ x, T* __restrict__ y, bool* __restrict__ mask, i64 n,
                                unsigned long long seed, unsigned long long threshold, T scale) {
    const i64 groups = (n + 3) / 4;
    for (i64 q = grid_start(); q < groups; q += grid_stride()) {
        const Philox4 draw = philox4x32_10((unsigned long long)q, seed);
        for (int j = 0; j < 4; ++j) {
            const i64 k = 4 * q + j;
            if (k >= n) break;
            const bool keep = (unsigned long long)draw.v[j] >= threshold;
            mask[k] = keep;
            y[k] = x[k] * (keep ? scale : T(0));
        }
    }
}

template <typename T>
__global__ void dropout_backward(const T* __restrict__ dy, const bool* __restrict__ mask, T* __restrict__ dx, i64 n,
                                 T scale) {
    for (i64 k = grid_start(); k < n; k += grid_stride()) dx[k] = dy[k] * (mask[k] ? scale : T(0));
}
