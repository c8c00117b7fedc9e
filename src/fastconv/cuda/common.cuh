// What every kernel file (<family>.cu) shares: the float16 storage type, the accumulation type
// of each storage type, grid-stride loops and a deterministic block reduction.
//
// The same source compiles three ways: by NVRTC for the GPU (CuPy's RawModule), by nvcc/NVRTC
// for the sm_80/sm_90 compile check, and by the host C++ compiler for the emulator (FC_EMULATOR,
// where emu/cuda_emu.h supplies the CUDA built-ins). So: no host headers, no <cstdint> (NVRTC
// has none without the toolkit's headers), `long long` for 64-bit indices.
#pragma once

#if defined(FC_EMULATOR)
#include "emu/cuda_emu.h"
#define FC_DYNAMIC_SHARED(T, name) FC_EMU_DYNAMIC_SHARED(T, name)
#else
#define FC_DYNAMIC_SHARED(T, name) extern __shared__ T name[]
#if !defined(__CUDA_FP16_H__)
// NVRTC has no cuda_fp16.h unless the toolkit's headers are on its path; float16 is storage only
// here (all arithmetic in float), so the type and its two conversions are all the kernels need.
struct __align__(2) __half {
    unsigned short __x;
};
__device__ __forceinline__ float __half2float(__half h) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h.__x));
    return f;
}
__device__ __forceinline__ __half __float2half_rn(float f) {
    __half h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h.__x) : "f"(f));
    return h;
}
#endif
#endif

typedef long long i64;

// ---- storage and accumulation types: float16 is stored as __half and computed in float --------
template <typename T>
struct AccOf {
    typedef T type;
};
template <>
struct AccOf<__half> {
    typedef float type;
};
template <typename T>
using acc_t = typename AccOf<T>::type;

__device__ __forceinline__ float to_acc(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_acc(float v) { return v; }
__device__ __forceinline__ double to_acc(double v) { return v; }

template <typename T>
__device__ __forceinline__ T to_storage(acc_t<T> v) {
    return T(v);
}
template <>
__device__ __forceinline__ __half to_storage<__half>(float v) {
    return __float2half_rn(v);
}

// +infinity and a quiet NaN of the accumulation types, by their bits (NVRTC has no <cmath> macros)
template <typename A>
__device__ __forceinline__ A inf_of() {
    return sizeof(A) == 4 ? A(__int_as_float(0x7f800000)) : A(__longlong_as_double(0x7ff0000000000000LL));
}
template <typename A>
__device__ __forceinline__ A nan_of() {
    return sizeof(A) == 4 ? A(__int_as_float(0x7fc00000)) : A(__longlong_as_double(0x7ff8000000000000LL));
}

// ---- grid-stride loops: any grid covers any n, so the launcher may cap the grid -----------------
//     for (i64 i = grid_start(); i < n; i += grid_stride()) ...
__device__ __forceinline__ i64 grid_start() { return i64(blockIdx.x) * blockDim.x + threadIdx.x; }
__device__ __forceinline__ i64 grid_stride() { return i64(blockDim.x) * gridDim.x; }

// ---- a deterministic block reduction ----------------------------------------------------------
// The sum of v over a 1-d block whose size is a multiple of 32, returned to every thread: each
// warp reduces by xor-shuffles (a fixed tree; every lane ends with the same bits), then every
// thread adds the warps' sums in warp order. No atomics: the same inputs and block size give the
// same bits on every run. Every thread of the block must call it (it holds two barriers).
// `scratch` is 32 accumulators of shared memory.
template <typename A>
__device__ A block_sum(A v, A* scratch) {
    const unsigned lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
    __syncthreads();  // the scratch of a previous call has been read by everyone
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    A total = scratch[0];
    for (unsigned w = 1; w < warps; ++w) total += scratch[w];
    return total;
}

// The maximum of v over the block (NaN wins, as in PyTorch's reductions), like block_sum.
template <typename A>
__device__ __forceinline__ A nan_max(A a, A b) {
    return (a != a || a > b) ? a : b;
}
template <typename A>
__device__ A block_max(A v, A* scratch) {
    const unsigned lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
    for (int offset = 16; offset > 0; offset >>= 1) v = nan_max(v, __shfl_xor_sync(0xffffffffu, v, offset));
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    A best = scratch[0];
    for (unsigned w = 1; w < warps; ++w) best = nan_max(best, scratch[w]);
    return best;
}

// ---- float and double math by overloading: one kernel body serves both accumulation types ------
// (NVRTC declares the C functions expf, exp, ...; so does <cmath> for the emulator.)
namespace fm {
__device__ __forceinline__ float exp(float x) { return ::expf(x); }
__device__ __forceinline__ double exp(double x) { return ::exp(x); }
__device__ __forceinline__ float expm1(float x) { return ::expm1f(x); }
__device__ __forceinline__ double expm1(double x) { return ::expm1(x); }
__device__ __forceinline__ float log(float x) { return ::logf(x); }
__device__ __forceinline__ double log(double x) { return ::log(x); }
__device__ __forceinline__ float log1p(float x) { return ::log1pf(x); }
__device__ __forceinline__ double log1p(double x) { return ::log1p(x); }
__device__ __forceinline__ float tanh(float x) { return ::tanhf(x); }
__device__ __forceinline__ double tanh(double x) { return ::tanh(x); }
__device__ __forceinline__ float erf(float x) { return ::erff(x); }
__device__ __forceinline__ double erf(double x) { return ::erf(x); }
__device__ __forceinline__ float sqrt(float x) { return ::sqrtf(x); }
__device__ __forceinline__ double sqrt(double x) { return ::sqrt(x); }
__device__ __forceinline__ float fabs(float x) { return ::fabsf(x); }
__device__ __forceinline__ double fabs(double x) { return ::fabs(x); }
}  // namespace fm
