// Kernels for tests/test_emu.py: what the emulator must get right (warp collectives, barriers,
// shared memory, float16 conversions) and every kind of mistake it must report.
#include "common.cuh"

// ---- correct kernels -------------------------------------------------------------------------

// out[i] = the results of each warp collective for thread i (a 1-d block of full warps)
__global__ void warp_ops(const int* in, int* shfl_down, int* shfl_xor, int* shfl_idx, int* shfl_up8,
                         unsigned* ballot, int* any_all) {
    const unsigned t = threadIdx.x;
    const int v = in[t];
    shfl_down[t] = __shfl_down_sync(0xffffffffu, v, 3);
    shfl_xor[t] = __shfl_xor_sync(0xffffffffu, v, 5);
    shfl_idx[t] = __shfl_sync(0xffffffffu, v, 7);
    shfl_up8[t] = __shfl_up_sync(0xffffffffu, v, 2, 8);  // within segments of 8 lanes
    ballot[t] = __ballot_sync(0xffffffffu, v > 0);
    any_all[t] = __any_sync(0xffffffffu, v > 0) * 2 + __all_sync(0xffffffffu, v > 0);
    __syncwarp();
}

// a warp collective over half a warp: only the lanes in the mask take part
__global__ void half_warp(const int* in, int* out) {
    const unsigned t = threadIdx.x, lane = t % 32;
    int v = in[t];
    if (lane < 16) v = __shfl_xor_sync(0x0000ffffu, v, 1);
    out[t] = v;
}

// the sum of x over each block (block_sum), written per block; grid-stride over the input
template <typename T>
__global__ void sums(const T* x, T* out, i64 n) {
    __shared__ acc_t<T> scratch[32];
    acc_t<T> s = 0;
    for (i64 i = grid_start(); i < n; i += grid_stride()) s += to_acc(x[i]);
    s = block_sum(s, scratch);
    if (threadIdx.x == 0) out[blockIdx.x] = to_storage<T>(s);
}

// reverses each block's slice through dynamic shared memory, and reads one slot past what it
// wrote (`extra`), which the emulator fills with 0xff bytes: NaN
__global__ void reverse(const float* x, float* y, int extra) {
    FC_DYNAMIC_SHARED(float, buf);
    const unsigned t = threadIdx.x, n = blockDim.x;
    buf[t] = x[blockIdx.x * n + t];
    __syncthreads();
    y[blockIdx.x * n + t] = buf[n - 1 - t] + (extra ? buf[n] : 0.0f);
}

__global__ void to_half(const float* x, __half* y, i64 n) {
    for (i64 i = grid_start(); i < n; i += grid_stride()) y[i] = __float2half_rn(x[i]);
}

__global__ void from_half(const __half* x, float* y, i64 n) {
    for (i64 i = grid_start(); i < n; i += grid_stride()) y[i] = __half2float(x[i]);
}

// the indices each thread sees, for a 3-d grid of 3-d blocks
__global__ void coordinates(int* out) {
    const int block = (blockIdx.z * gridDim.y + blockIdx.y) * gridDim.x + blockIdx.x;
    const int thread = (threadIdx.z * blockDim.y + threadIdx.y) * blockDim.x + threadIdx.x;
    const int at = block * blockDim.x * blockDim.y * blockDim.z + thread;
    out[at] = ((blockIdx.x * 8 + blockIdx.y) * 8 + blockIdx.z) * 1000 + (threadIdx.x * 8 + threadIdx.y) * 8 + threadIdx.z;
}

__global__ void fill(float* y, float v, i64 n) {
    for (i64 i = grid_start(); i < n; i += grid_stride()) y[i] = v;
}

// ---- mistakes ----------------------------------------------------------------------------------

// threads of the first warp return before a barrier the others wait at
__global__ void early_exit(float* y) {
    if (threadIdx.x < 5) return;
    __syncthreads();
    y[threadIdx.x] = 1.0f;
}

// two halves of the block wait at different barriers
__global__ void split_barrier(float* y) {
    if (threadIdx.x < 16) {
        __syncthreads();
        y[threadIdx.x] = 1.0f;
    } else {
        __syncthreads();
        y[threadIdx.x] = 2.0f;
    }
}

// half a warp at a shuffle whose mask names the whole warp, the other half at a barrier
__global__ void warp_vs_barrier(float* y) {
    float v = float(threadIdx.x);
    if (threadIdx.x < 16)
        v = __shfl_down_sync(0xffffffffu, v, 1);
    else
        __syncthreads();
    y[threadIdx.x] = v;
}

// lane 3 reads lane 20, which is not in the mask
__global__ void shfl_outside_mask(float* y) {
    float v = float(threadIdx.x);
    if (threadIdx.x < 16) v = __shfl_sync(0x0000ffffu, v, threadIdx.x == 3 ? 20 : 0);
    y[threadIdx.x] = v;
}

// the mask leaves out the calling lane
__global__ void mask_without_caller(float* y) {
    y[threadIdx.x] = __shfl_down_sync(0x2u, float(threadIdx.x), 1);
}

__global__ void traps(float* y) {
    if (threadIdx.x == 7) __trap();
    y[threadIdx.x] = 1.0f;
}

// writes `offset` elements past the end of y (the sanitizers' cases)
__global__ void write_past(float* y, int n, int offset) {
    if (threadIdx.x == 0) y[n - 1 + offset] = 1.0f;
}

__global__ void shared_overflow(float* y, int offset) {
    __shared__ float s[32];
    s[threadIdx.x + offset] = 1.0f;
    __syncthreads();
    y[threadIdx.x] = s[threadIdx.x];
}

__global__ void signed_overflow(int* y, int a) {
    y[threadIdx.x] = a + int(threadIdx.x);
}

// thread t reads what thread t - 1 wrote to shared memory; without the barrier that is a race,
// which the ascending schedule hides (t - 1 has finished when t runs) and the descending exposes
__global__ void shift(float* y, float base, int barrier) {
    __shared__ float s[1024];
    const unsigned t = threadIdx.x;
    s[t] = base + float(t);
    if (barrier) __syncthreads();
    y[t] = t ? s[t - 1] : base - 1.0f;
}
