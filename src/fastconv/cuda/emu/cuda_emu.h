// The CUDA built-ins for the host compiler: with this header the kernels of ../*.cu compile as
// plain C++ and run on the CPU under the fiber scheduler of runtime.cpp (the `cupy-emu` backend).
//
// Semantics kept from the GPU, so that a kernel that works here works there:
// - every thread of a block is a fiber; `__syncthreads` suspends it until every thread of the
//   block has reached the same barrier, and a barrier that a thread leaves unreached (it exited,
//   or waits elsewhere) is reported as an error, never a hang;
// - warp shuffles, votes and `__syncwarp` are collectives of the lanes in their mask, which must
//   all call the same one with the same mask (independent thread scheduling, as since Volta);
// - `__shared__` variables are plain statics (blocks run one after another on one host thread),
//   so AddressSanitizer sees an overflow of a shared array as a global-buffer-overflow; dynamic
//   shared memory is a heap block per launch, refilled with 0xff bytes (NaN) before every block.
// Every entry point takes the caller's file and line (default arguments), for the error messages.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>

// ---- keywords --------------------------------------------------------------------------------
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __noinline__ __attribute__((noinline))
#define __restrict__ __restrict
#define __shared__ static
#define __constant__ static
#define __launch_bounds__(...)
#define __align__(n) alignas(n)
// `extern __shared__ T name[]` has no host spelling: common.cuh's FC_DYNAMIC_SHARED uses this
#define FC_EMU_DYNAMIC_SHARED(T, name) T* name = reinterpret_cast<T*>(::fc_emu::dynamic_shared())

struct uint3 {
    unsigned x, y, z;
};
struct dim3 {
    unsigned x = 1, y = 1, z = 1;
};

namespace fc_emu {

// ---- the state of the thread now running (set by the scheduler before each fiber switch) -------
struct ThreadState;
extern ThreadState* current;
const uint3& thread_idx();
const uint3& block_idx();
const uint3& block_dim();
const uint3& grid_dim();
void* dynamic_shared();

// ---- collectives (runtime.cpp) -----------------------------------------------------------------
enum class WarpOp : int { shfl_idx, shfl_up, shfl_down, shfl_xor, ballot, any, all, syncwarp };
void syncthreads(const char* file, int line);
// lane's value in, the op's result for this lane out (64-bit patterns; see shfl below)
uint64_t warp_collective(WarpOp op, unsigned mask, uint64_t value, int arg, int width, const char* file,
                         int line);
[[noreturn]] void trap(const char* what, const char* file, int line);

template <typename T>
inline uint64_t bits_of(T v) {
    static_assert(sizeof(T) <= 8, "warp shuffles move at most 8 bytes");
    uint64_t b = 0;
    std::memcpy(&b, &v, sizeof(T));
    return b;
}
template <typename T>
inline T from_bits(uint64_t b) {
    T v;
    std::memcpy(&v, &b, sizeof(T));
    return v;
}

}  // namespace fc_emu

#define threadIdx (::fc_emu::thread_idx())
#define blockIdx (::fc_emu::block_idx())
#define blockDim (::fc_emu::block_dim())
#define gridDim (::fc_emu::grid_dim())
#define warpSize 32

// ---- barriers, warp shuffles and votes ---------------------------------------------------------
inline void __syncthreads(const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
    ::fc_emu::syncthreads(file, line);
}
inline void __syncwarp(unsigned mask = 0xffffffffu, const char* file = __builtin_FILE(),
                       int line = __builtin_LINE()) {
    ::fc_emu::warp_collective(::fc_emu::WarpOp::syncwarp, mask, 0, 0, 32, file, line);
}
// Blocks run one at a time on one host thread: memory is always coherent, fences order nothing.
inline void __threadfence() {}
inline void __threadfence_block() {}

template <typename T>
inline T __shfl_sync(unsigned mask, T v, int src_lane, int width = 32, const char* file = __builtin_FILE(),
                     int line = __builtin_LINE()) {
    using namespace ::fc_emu;
    return from_bits<T>(warp_collective(WarpOp::shfl_idx, mask, bits_of(v), src_lane, width, file, line));
}
template <typename T>
inline T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32, const char* file = __builtin_FILE(),
                        int line = __builtin_LINE()) {
    using namespace ::fc_emu;
    return from_bits<T>(warp_collective(WarpOp::shfl_up, mask, bits_of(v), int(delta), width, file, line));
}
template <typename T>
inline T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32,
                          const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
    using namespace ::fc_emu;
    return from_bits<T>(warp_collective(WarpOp::shfl_down, mask, bits_of(v), int(delta), width, file, line));
}
template <typename T>
inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32, const char* file = __builtin_FILE(),
                         int line = __builtin_LINE()) {
    using namespace ::fc_emu;
    return from_bits<T>(warp_collective(WarpOp::shfl_xor, mask, bits_of(v), lane_mask, width, file, line));
}
inline unsigned __ballot_sync(unsigned mask, int predicate, const char* file = __builtin_FILE(),
                              int line = __builtin_LINE()) {
    using namespace ::fc_emu;
    return unsigned(warp_collective(WarpOp::ballot, mask, predicate != 0, 0, 32, file, line));
}
inline int __any_sync(unsigned mask, int predicate, const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
    using namespace ::fc_emu;
    return int(warp_collective(WarpOp::any, mask, predicate != 0, 0, 32, file, line));
}
inline int __all_sync(unsigned mask, int predicate, const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
    using namespace ::fc_emu;
    return int(warp_collective(WarpOp::all, mask, predicate != 0, 0, 32, file, line));
}
inline void __trap(const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
    ::fc_emu::trap("__trap()", file, line);
}

// ---- atomics: one host thread runs every thread, so a plain read-modify-write is atomic ---------
namespace fc_emu {
template <typename T, typename F>
inline T read_modify_write(T* p, F f) {
    const T old = *p;
    *p = f(old);
    return old;
}
}  // namespace fc_emu

template <typename T>
inline T atomicAdd(T* p, T v) { return ::fc_emu::read_modify_write(p, [v](T o) { return T(o + v); }); }
template <typename T>
inline T atomicSub(T* p, T v) { return ::fc_emu::read_modify_write(p, [v](T o) { return T(o - v); }); }
template <typename T>
inline T atomicMax(T* p, T v) { return ::fc_emu::read_modify_write(p, [v](T o) { return o < v ? v : o; }); }
template <typename T>
inline T atomicMin(T* p, T v) { return ::fc_emu::read_modify_write(p, [v](T o) { return v < o ? v : o; }); }
template <typename T>
inline T atomicExch(T* p, T v) { return ::fc_emu::read_modify_write(p, [v](T) { return v; }); }
template <typename T>
inline T atomicCAS(T* p, T compare, T v) {
    return ::fc_emu::read_modify_write(p, [=](T o) { return o == compare ? v : o; });
}
template <typename T>
inline T atomicOr(T* p, T v) { return ::fc_emu::read_modify_write(p, [v](T o) { return T(o | v); }); }
template <typename T>
inline T atomicAnd(T* p, T v) { return ::fc_emu::read_modify_write(p, [v](T o) { return T(o & v); }); }

// ---- float16 storage: __half and its conversions (round to nearest even, as cvt.rn.f16.f32) ----
struct __half {
    unsigned short __x;
};

inline float __half2float(__half h) {
    const uint32_t sign = uint32_t(h.__x & 0x8000u) << 16;
    uint32_t exp = (h.__x >> 10) & 0x1fu, man = h.__x & 0x3ffu, bits;
    if (exp == 0x1f) {  // inf or NaN (the payload kept, quiet)
        bits = sign | 0x7f800000u | (man << 13) | (man ? 0x400000u : 0u);
    } else if (exp != 0) {
        bits = sign | ((exp + 112u) << 23) | (man << 13);
    } else if (man == 0) {
        bits = sign;
    } else {  // subnormal: normalise
        int shift = 0;
        while (!(man & 0x400u)) {
            man <<= 1;
            ++shift;
        }
        bits = sign | (uint32_t(113 - shift) << 23) | ((man & 0x3ffu) << 13);
    }
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
}

inline __half __float2half_rn(float f) {
    uint32_t x;
    std::memcpy(&x, &f, 4);
    const uint16_t sign = uint16_t((x >> 16) & 0x8000u);
    const uint32_t abs = x & 0x7fffffffu;
    uint16_t out;
    if (abs > 0x7f800000u) {  // NaN: quiet, keep the top payload bits
        out = uint16_t(sign | 0x7e00u | ((abs >> 13) & 0x1ffu));
    } else if (abs >= 0x477ff000u) {  // rounds to >= 65520: infinity
        out = uint16_t(sign | 0x7c00u);
    } else if (abs >= 0x38800000u) {  // normal in half: round the 13 dropped bits to nearest even
        uint32_t m = abs - 0x38000000u;  // rebias the exponent (127 -> 15)
        m += 0xfffu + ((m >> 13) & 1u);
        out = uint16_t(sign | (m >> 13));
    } else if (abs > 0x33000000u) {  // subnormal in half (exactly 2^-25 ties to zero, below)
        const uint32_t e = abs >> 23, man = (abs & 0x7fffffu) | 0x800000u;
        const uint32_t shift = 126u - e;  // bits dropped, from 14 (2^-15) to 24 (just above 2^-25)
        uint32_t m = man >> shift;
        const uint32_t rest = man & ((1u << shift) - 1u), half = 1u << (shift - 1);
        if (rest > half || (rest == half && (m & 1u))) ++m;
        out = uint16_t(sign | m);
    } else {
        out = sign;
    }
    return __half{out};
}
inline __half __float2half(float f) { return __float2half_rn(f); }

// ---- math intrinsics and device functions without a host spelling -------------------------------
using std::isfinite;
using std::isinf;
using std::isnan;
using std::signbit;

inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a < b ? b : a; }
inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
inline unsigned max(unsigned a, unsigned b) { return a < b ? b : a; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline long long max(long long a, long long b) { return a < b ? b : a; }
inline unsigned long long min(unsigned long long a, unsigned long long b) { return a < b ? a : b; }
inline unsigned long long max(unsigned long long a, unsigned long long b) { return a < b ? b : a; }
inline float min(float a, float b) { return std::fmin(a, b); }
inline float max(float a, float b) { return std::fmax(a, b); }
inline double min(double a, double b) { return std::fmin(a, b); }
inline double max(double a, double b) { return std::fmax(a, b); }

inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline double rsqrt(double x) { return 1.0 / std::sqrt(x); }
inline float __expf(float x) { return std::exp(x); }
inline float __logf(float x) { return std::log(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float __frcp_rn(float x) { return 1.0f / x; }
inline float __saturatef(float x) { return x != x ? 0.0f : (x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : x)); }
inline float __fmaf_rn(float a, float b, float c) { return std::fma(a, b, c); }
inline double __fma_rn(double a, double b, double c) { return std::fma(a, b, c); }
inline float normcdff(float x) { return 0.5f * std::erfc(-x * 0.70710678118654752f); }
inline double normcdf(double x) { return 0.5 * std::erfc(-x * 0.70710678118654752440); }

inline int __float_as_int(float f) { return ::fc_emu::from_bits<int>(::fc_emu::bits_of(f)); }
inline float __int_as_float(int i) { return ::fc_emu::from_bits<float>(::fc_emu::bits_of(i)); }
inline unsigned __float_as_uint(float f) { return ::fc_emu::from_bits<unsigned>(::fc_emu::bits_of(f)); }
inline float __uint_as_float(unsigned i) { return ::fc_emu::from_bits<float>(::fc_emu::bits_of(i)); }
inline long long __double_as_longlong(double d) { return ::fc_emu::from_bits<long long>(::fc_emu::bits_of(d)); }
inline double __longlong_as_double(long long i) { return ::fc_emu::from_bits<double>(::fc_emu::bits_of(i)); }

inline unsigned __umulhi(unsigned a, unsigned b) { return unsigned((uint64_t(a) * b) >> 32); }
inline unsigned long long __umul64hi(unsigned long long a, unsigned long long b) {
    return (unsigned long long)((__uint128_t(a) * b) >> 64);
}
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __clz(int x) { return x ? __builtin_clz(unsigned(x)) : 32; }
inline int __ffs(int x) { return __builtin_ffs(x); }

template <typename T>
inline T __ldg(const T* p) {
    return *p;
}
