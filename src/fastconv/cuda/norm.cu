// Batch norm passes on x viewed as (N, C, L), mirroring csrc/norm.cpp: statistics and the
// backward's sums in double (as the C++ backend), the elementwise passes with the reference's
// operation order. float and double.
//
// A channel's N * L values are split into segments of a fixed length (chosen by the adapter from
// the shape), a block per (channel, segment), so that a few channels still fill the GPU; each block
// writes its segment's partial results and a second kernel combines a channel's segments in order.
// No atomics: bit-identical run to run for a given launch.
#include "common.cuh"

// Walks flat indices start, start + step, ... of an array viewed as (outer, L), keeping
// o = (k / L) % wrap and l = k % L up to date by additions and one compare each, not a 64-bit
// division per element. wrap = C gives the channel of x (N, C, L) flattened; a wrap no index
// reaches gives the plane n of a channel's values (N, L).
struct Walk {
    i64 L, wrap, dl, dout, o, l;
    __device__ Walk(i64 start, i64 step, i64 L_, i64 wrap_)
        : L(L_), wrap(wrap_), dl(step % L_), dout((step / L_) % wrap_), o((start / L_) % wrap_), l(start % L_) {}
    __device__ __forceinline__ void next() {
        l += dl;
        o += dout;
        if (l >= L) {
            l -= L;
            ++o;
        }
        if (o >= wrap) o -= wrap;
    }
};

#define FC_NO_WRAP 0x7fffffffffffffffLL

// The values of channel c in segment s: flat indices e in [s * seg, min((s + 1) * seg, N * L)) of
// the channel's (N, L), each thread taking e = first + threadIdx.x, + blockDim.x, ...
struct Segment {
    i64 begin, end;
    __device__ Segment(i64 s, i64 seg, i64 NL) : begin(s * seg), end(min(NL, (s + 1) * seg)) {}
};

// ---- statistics: mean and biased variance per channel -----------------------------------------

// moments[u] = (mean, M2) of item u = c * segments + s: the segment's mean and its sum of squared
// deviations from that mean (two passes over the segment; the second reads it from cache).
template <typename T>
__global__ void bn_segment_moments(const T* __restrict__ x, double* __restrict__ moments, i64 N, i64 C, i64 L,
                                   i64 seg, i64 segments) {
    __shared__ double scratch[32];
    for (i64 u = blockIdx.x; u < C * segments; u += gridDim.x) {
        const i64 c = u / segments;
        const Segment part(u % segments, seg, N * L);
        const T* xc = x + c * L;  // value (n, l) of channel c is xc[n * C * L + l]
        double sum = 0;
        Walk w(part.begin + threadIdx.x, blockDim.x, L, FC_NO_WRAP);
        for (i64 e = part.begin + threadIdx.x; e < part.end; e += blockDim.x, w.next()) sum += xc[w.o * C * L + w.l];
        const double mean = block_sum(sum, scratch) / double(part.end - part.begin);
        double m2 = 0;
        w = Walk(part.begin + threadIdx.x, blockDim.x, L, FC_NO_WRAP);
        for (i64 e = part.begin + threadIdx.x; e < part.end; e += blockDim.x, w.next()) {
            const double d = double(xc[w.o * C * L + w.l]) - mean;
            m2 += d * d;
        }
        m2 = block_sum(m2, scratch);
        if (threadIdx.x == 0) {
            moments[2 * u] = mean;
            moments[2 * u + 1] = m2;
        }
    }
}

// mean[c], var[c] from the channel's segments, merged in order (Chan, Golub, LeVeque: the
// pairwise update of a mean and a sum of squared deviations, exact up to rounding)
template <typename T>
__global__ void bn_stats_finish(const double* __restrict__ moments, T* __restrict__ mean, T* __restrict__ var, i64 C,
                                i64 NL, i64 seg, i64 segments) {
    for (i64 c = grid_start(); c < C; c += grid_stride()) {
        double n = 0, m = 0, m2 = 0;
        for (i64 s = 0; s < segments; ++s) {
            const double k = double(min(NL, (s + 1) * seg) - s * seg), total = n + k;
            const double d = moments[2 * (c * segments + s)] - m;
            m += d * (k / total);
            m2 += moments[2 * (c * segments + s) + 1] + d * d * (n * k / total);
            n = total;
        }
        mean[c] = T(m);
        var[c] = T(m2 / double(NL));
    }
}

// ---- the backward's sums: sum dy and sum dy * xhat per channel ---------------------------------

// sums[u] = (sum dy, sum dy * (x - mean)) over item u's segment, in double (x - mean in T, as the
// C++ backend)
template <typename T>
__global__ void bn_segment_dy_sums(const T* __restrict__ dy, const T* __restrict__ x, const T* __restrict__ mean,
                                   double* __restrict__ sums, i64 N, i64 C, i64 L, i64 seg, i64 segments) {
    __shared__ double scratch[32];
    for (i64 u = blockIdx.x; u < C * segments; u += gridDim.x) {
        const i64 c = u / segments;
        const Segment part(u % segments, seg, N * L);
        const T m = mean[c];
        double s = 0, sc = 0;
        Walk w(part.begin + threadIdx.x, blockDim.x, L, FC_NO_WRAP);
        for (i64 e = part.begin + threadIdx.x; e < part.end; e += blockDim.x, w.next()) {
            const i64 k = (w.o * C + c) * L + w.l;
            s += dy[k];
            sc += double(dy[k]) * double(x[k] - m);
        }
        s = block_sum(s, scratch);
        sc = block_sum(sc, scratch);
        if (threadIdx.x == 0) {
            sums[2 * u] = s;
            sums[2 * u + 1] = sc;
        }
    }
}

// sum_dy[c] and sum_dy_xhat[c] = invstd[c] * sum dy * (x - mean): the channel's segments in order
template <typename T>
__global__ void bn_backward_reduce_finish(const double* __restrict__ sums, const T* __restrict__ invstd,
                                          T* __restrict__ sum_dy, T* __restrict__ sum_dy_xhat, i64 C, i64 segments) {
    for (i64 c = grid_start(); c < C; c += grid_stride()) {
        double s = 0, sc = 0;
        for (i64 k = 2 * c * segments; k < 2 * (c + 1) * segments; k += 2) {
            s += sums[k];
            sc += sums[k + 1];
        }
        sum_dy[c] = T(s);
        sum_dy_xhat[c] = T(sc * double(invstd[c]));
    }
}

// ---- elementwise passes over x (N, C, L) flattened, n = N * C * L ------------------------------

// y = ((x - mean) * invstd) * w + b (w = 1, b = 0 when absent: exact no-ops)
template <typename T>
__global__ void bn_forward(const T* __restrict__ x, const T* __restrict__ mean, const T* __restrict__ invstd,
                           const T* __restrict__ weight, const T* __restrict__ bias, T* __restrict__ y, i64 n, i64 C,
                           i64 L) {
    Walk w(grid_start(), grid_stride(), L, C);
    for (i64 k = grid_start(); k < n; k += grid_stride(), w.next()) {
        const i64 c = w.o;
        y[k] = ((x[k] - mean[c]) * invstd[c]) * (weight ? weight[c] : T(1)) + (bias ? bias[c] : T(0));
    }
}

// training-mode dx = ((dy - sum_dy/NL) - ((x - mean) * invstd) * (sum_dy_xhat/NL)) * (invstd * w)
template <typename T>
__global__ void bn_backward_input(const T* __restrict__ dy, const T* __restrict__ x, const T* __restrict__ mean,
                                  const T* __restrict__ invstd, const T* __restrict__ weight,
                                  const T* __restrict__ sum_dy, const T* __restrict__ sum_dy_xhat, T* __restrict__ dx,
                                  i64 n, i64 C, i64 L, i64 NL) {
    const T count = T(NL);
    Walk w(grid_start(), grid_stride(), L, C);
    for (i64 k = grid_start(); k < n; k += grid_stride(), w.next()) {
        const i64 c = w.o;
        const T scale = weight ? invstd[c] * weight[c] : invstd[c];
        dx[k] = ((dy[k] - sum_dy[c] / count) - ((x[k] - mean[c]) * invstd[c]) * (sum_dy_xhat[c] / count)) * scale;
    }
}
