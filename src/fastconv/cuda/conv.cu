// 2-d convolution: forward (fprop), backward-input (dgrad), backward-weight (wgrad), backward-bias.
// Mirrors csrc/conv.cpp; the adapter (backends/cupy/conv.py) runs the GEMMs on cuBLAS between the
// kernels here, for one chunk of nb images at a time (P = OH*OW pixels per image, G groups,
// K = C_in/G*KH*KW):
//   cols     (C_in*KH*KW, nb*P), im2col of the chunk: row (c, kh, kw), column (j, oh, ow) for
//            image j of the chunk. Viewed as (G, K, nb*P): each group's GEMM operand.
//   forward: (G, C_out/G, nb*P) = w (G, C_out/G, K) @ cols, then store_pixels puts it into y
//            (nb, C_out, P), adding the bias;
//   dgrad:   dcols (G, K, nb*P) = w^T @ dy in columns (pixels_to_columns), then col2im gathers it
//            into dx: each dx element sums the taps that read it, in a fixed order;
//   wgrad:   dw (G, C_out/G, K) += dy in columns @ cols^T, chunk after chunk.
// GEMM operands and results are in the accumulation type (acc_t: float for __half), converted by
// the kernels on the way in and out, so that a float16 result is rounded once, at the end, even
// where a kernel finishes what the GEMM began (the bias, col2im's sum over taps).
// Depthwise convolutions (one input channel per group, any channel multiplier) have direct kernels
// for all three passes. The bias gradient and the depthwise wgrad reduce over N*OH*OW in two
// fixed-order stages: per (row, slice) a block sum, then the slices in order (sum_slices).
// No floating-point atomics anywhere: every result is the same bits on every run.
//
// Index arithmetic is 64-bit wherever a product of sizes can pass 2^31 (offsets, flat indices);
// coordinates within one image (oh, ih, kh, ...) are int.
#include "common.cuh"

// The geometry every convolution kernel takes, in the order of the adapter's _GEOMETRY (ConvParams
// fields; padding only top and left: the bottom and right are implied by OH and OW). FC_GEO
// gathers the parameters into a Geo inside the kernel.
#define FC_GEO_PARAMS                                                                                        \
    int C_in, int H, int W, int C_out, int OH, int OW, int KH, int KW, int stride_h, int stride_w, int pad_t, \
        int pad_l, int dil_h, int dil_w
#define FC_GEO Geo{C_in, H, W, C_out, OH, OW, KH, KW, stride_h, stride_w, pad_t, pad_l, dil_h, dil_w}

struct Geo {
    int C_in, H, W, C_out, OH, OW, KH, KW, stride_h, stride_w, pad_t, pad_l, dil_h, dil_w;

    __device__ i64 P() const { return i64(OH) * OW; }
    __device__ i64 HW() const { return i64(H) * W; }
    __device__ bool inside(int ih, int iw) const { return ih >= 0 && ih < H && iw >= 0 && iw < W; }
};

// Every tap (kh, kw) of output pixel (oh, ow), in order: f(tap, ih, iw) with tap = kh*KW + kw and
// (ih, iw) the input pixel it reads, which may lie in the padding.
template <typename F>
__device__ __forceinline__ void output_taps(const Geo& g, int oh, int ow, F f) {
    for (int kh = 0; kh < g.KH; ++kh) {
        const int ih = oh * g.stride_h - g.pad_t + kh * g.dil_h;
        for (int kw = 0; kw < g.KW; ++kw) f(kh * g.KW + kw, ih, ow * g.stride_w - g.pad_l + kw * g.dil_w);
    }
}

// Every tap that reads input pixel (ih, iw), in the order (kh, kw): f(tap, op) with op = oh*OW + ow
// the output pixel whose tap it is. The dgrad gathers sum over these in this order. The stride
// tests are uniform branches: a unit stride (the common case) costs no division.
template <typename F>
__device__ __forceinline__ void input_taps(const Geo& g, int ih, int iw, F f) {
    for (int kh = 0; kh < g.KH; ++kh) {
        int oh = ih + g.pad_t - kh * g.dil_h;  // oh * stride_h so far; falls as kh grows
        if (oh < 0) break;
        if (g.stride_h > 1) {
            if (oh % g.stride_h) continue;
            oh /= g.stride_h;
        }
        if (oh >= g.OH) continue;
        for (int kw = 0; kw < g.KW; ++kw) {
            int ow = iw + g.pad_l - kw * g.dil_w;
            if (ow < 0) break;
            if (g.stride_w > 1) {
                if (ow % g.stride_w) continue;
                ow /= g.stride_w;
            }
            if (ow < g.OW) f(kh * g.KW + kw, i64(oh) * g.OW + ow);
        }
    }
}

// ---- im2col + GEMM ----------------------------------------------------------------------------

// cols (C_in*KH*KW, nb*P) of images x (nb, C_in, H, W), zero where a tap reads the padding. A thread
// per (image, channel, output pixel) writes its KH*KW taps: adjacent threads, adjacent columns.
template <typename T>
__global__ void im2col(const T* __restrict__ x, acc_t<T>* __restrict__ cols, i64 nb, FC_GEO_PARAMS) {
    typedef acc_t<T> A;
    const Geo g = FC_GEO;
    const i64 P = g.P(), Q = nb * P, n = nb * C_in * P;
    for (i64 e = grid_start(); e < n; e += grid_stride()) {
        const i64 plane = e / P, p = e - plane * P;  // plane = (j, c): x's plane index too
        const i64 j = plane / C_in, c = plane - j * C_in;
        const int oh = int(p / OW), ow = int(p - i64(oh) * OW);
        const T* xp = x + plane * g.HW();
        A* dst = cols + c * KH * KW * Q + j * P + p;
        output_taps(g, oh, ow, [&](int tap, int ih, int iw) {
            dst[tap * Q] = g.inside(ih, iw) ? to_acc(xp[i64(ih) * W + iw]) : A(0);
        });
    }
}

// dx (nb, C_in, H, W) from dcols (C_in*KH*KW, nb*P): a gather, a thread per dx element summing the
// taps that read it in a fixed order (no scatter, no atomics).
template <typename T>
__global__ void col2im(const acc_t<T>* __restrict__ dcols, T* __restrict__ dx, i64 nb, FC_GEO_PARAMS) {
    typedef acc_t<T> A;
    const Geo g = FC_GEO;
    const i64 P = g.P(), Q = nb * P, HW = g.HW(), n = nb * C_in * HW;
    for (i64 e = grid_start(); e < n; e += grid_stride()) {
        const i64 plane = e / HW, pix = e - plane * HW;
        const i64 j = plane / C_in, c = plane - j * C_in;
        const int ih = int(pix / W), iw = int(pix - i64(ih) * W);
        const A* src = dcols + c * KH * KW * Q + j * P;
        A sum = A(0);
        input_taps(g, ih, iw, [&](int tap, i64 op) { sum += src[tap * Q + op]; });
        dx[e] = to_storage<T>(sum);
    }
}

// (nb, C, P) -> (C, nb*P): images' pixels into the columns of a GEMM operand (dy for dgrad and
// wgrad; x for a pointwise wgrad, where it is the whole im2col).
template <typename T>
__global__ void pixels_to_columns(const T* __restrict__ src, acc_t<T>* __restrict__ dst, i64 nb, int C, i64 P) {
    for (i64 e = grid_start(); e < nb * C * P; e += grid_stride()) {
        const i64 plane = e / P, p = e - plane * P;
        const i64 j = plane / C, c = plane - j * C;
        dst[(c * nb + j) * P + p] = to_acc(src[e]);
    }
}

// dst (nb, C, P) = src + b[c] (where b is given), rounded to T: the end of a forward. src is a GEMM
// result in columns (C, nb*P) when `columns`, else already laid out as (nb, C, P) (pointwise).
template <typename T>
__global__ void store_pixels(const acc_t<T>* __restrict__ src, const T* __restrict__ b, T* __restrict__ dst, i64 nb,
                             int C, i64 P, int columns) {
    typedef acc_t<T> A;
    for (i64 e = grid_start(); e < nb * C * P; e += grid_stride()) {
        const i64 plane = e / P, p = e - plane * P;
        const i64 j = plane / C, c = plane - j * C;
        A v = src[columns ? (c * nb + j) * P + p : e];
        if (b) v += to_acc(b[c]);
        dst[e] = to_storage<T>(v);
    }
}

// ---- depthwise: one input channel per group, output channel co reads input channel co / mult ---

// y (N, C_out, OH, OW): a thread per output pixel, its taps in order, then the bias.
template <typename T>
__global__ void depthwise_forward(const T* __restrict__ x, const T* __restrict__ w, const T* __restrict__ b,
                                  T* __restrict__ y, i64 N, FC_GEO_PARAMS) {
    typedef acc_t<T> A;
    const Geo g = FC_GEO;
    const int mult = C_out / C_in;
    const i64 P = g.P();
    for (i64 e = grid_start(); e < N * C_out * P; e += grid_stride()) {
        const i64 plane = e / P, p = e - plane * P;  // plane = (n, co)
        const i64 n = plane / C_out, co = plane - n * C_out;
        const int oh = int(p / OW), ow = int(p - i64(oh) * OW);
        const T* xp = x + (n * C_in + co / mult) * g.HW();
        const T* wp = w + co * KH * KW;
        A sum = A(0);
        output_taps(g, oh, ow, [&](int tap, int ih, int iw) {
            if (g.inside(ih, iw)) sum += to_acc(xp[i64(ih) * W + iw]) * to_acc(wp[tap]);
        });
        if (b) sum += to_acc(b[co]);
        y[e] = to_storage<T>(sum);
    }
}

// dx (N, C_in, H, W): a thread per input pixel gathers, for each of its mult output channels in
// order, the taps that read it.
template <typename T>
__global__ void depthwise_backward_input(const T* __restrict__ dy, const T* __restrict__ w, T* __restrict__ dx, i64 N,
                                         FC_GEO_PARAMS) {
    typedef acc_t<T> A;
    const Geo g = FC_GEO;
    const int mult = C_out / C_in;
    const i64 P = g.P(), HW = g.HW();
    for (i64 e = grid_start(); e < N * C_in * HW; e += grid_stride()) {
        const i64 plane = e / HW, pix = e - plane * HW;  // plane = (n, c)
        const i64 n = plane / C_in, c = plane - n * C_in;
        const int ih = int(pix / W), iw = int(pix - i64(ih) * W);
        A sum = A(0);
        for (int m = 0; m < mult; ++m) {
            const i64 co = c * mult + m;
            const T* dyp = dy + (n * C_out + co) * P;
            const T* wp = w + co * KH * KW;
            input_taps(g, ih, iw, [&](int tap, i64 op) { sum += to_acc(dyp[op]) * to_acc(wp[tap]); });
        }
        dx[e] = to_storage<T>(sum);
    }
}

// ---- reductions over N*OH*OW: the bias gradient and the depthwise wgrad -------------------------
// Stage one: a block per (row, slice) of a rows x slices grid; slice s of a row covers its pixels
// q in [s*len, (s+1)*len) of the flattened (n, oh, ow), len = ceil(N*P / slices). The block's threads
// stride over the slice, each summing in order, and block_sum adds them up in a fixed tree:
// partial (rows, slices, inner). Stage two, sum_slices: the slices of each row in order.

// A thread's share of slice s: q = first + k*blockDim.x for q < end.
struct Slice {
    i64 first, end;
    __device__ Slice(i64 items, int slices, i64 s) {
        const i64 len = (items + slices - 1) / slices;
        first = s * len + threadIdx.x;
        end = min(items, (s + 1) * len);
    }
};

// partial (C, slices): slice sums of dy (N, C, P) over n and p.
template <typename T>
__global__ void bias_backward(const T* __restrict__ dy, acc_t<T>* __restrict__ partial, int slices, i64 N, int C,
                              i64 P) {
    typedef acc_t<T> A;
    __shared__ A scratch[32];
    for (i64 rs = blockIdx.x; rs < i64(C) * slices; rs += gridDim.x) {
        const i64 c = rs / slices;
        const Slice slice(N * P, slices, rs - c * slices);
        A sum = A(0);
        for (i64 q = slice.first; q < slice.end; q += blockDim.x) {
            const i64 n = q / P;
            sum += to_acc(dy[(n * C + c) * P + (q - n * P)]);
        }
        sum = block_sum(sum, scratch);
        if (threadIdx.x == 0) partial[rs] = sum;
    }
}

// Taps a depthwise wgrad thread accumulates at once (registers); larger kernels take several passes.
#define FC_DW_TAPS 16

// partial (C_out, slices, KH*KW): slice sums over (n, oh, ow) of dy[n, co, oh, ow] * x[n, c, ih, iw].
template <typename T>
__global__ void depthwise_backward_weight(const T* __restrict__ dy, const T* __restrict__ x,
                                          acc_t<T>* __restrict__ partial, int slices, i64 N, FC_GEO_PARAMS) {
    typedef acc_t<T> A;
    __shared__ A scratch[32];
    const Geo g = FC_GEO;
    const int mult = C_out / C_in, taps = KH * KW;
    const i64 P = g.P();
    for (i64 rs = blockIdx.x; rs < i64(C_out) * slices; rs += gridDim.x) {
        const i64 co = rs / slices;
        const Slice slice(N * P, slices, rs - co * slices);
        for (int t0 = 0; t0 < taps; t0 += FC_DW_TAPS) {
            const int count = min(FC_DW_TAPS, taps - t0);
            A acc[FC_DW_TAPS];
#pragma unroll
            for (int i = 0; i < FC_DW_TAPS; ++i) acc[i] = A(0);
            for (i64 q = slice.first; q < slice.end; q += blockDim.x) {
                const i64 n = q / P, p = q - n * P;
                const int oh = int(p / OW), ow = int(p - i64(oh) * OW);
                const A grad = to_acc(dy[(n * C_out + co) * P + p]);
                const T* xp = x + (n * C_in + co / mult) * g.HW();
                int kh = t0 / KW, kw = t0 - kh * KW;  // tap t0 + i, stepped along (no division per tap)
#pragma unroll
                for (int i = 0; i < FC_DW_TAPS; ++i) {
                    if (i < count) {
                        const int ih = oh * stride_h - pad_t + kh * dil_h, iw = ow * stride_w - pad_l + kw * dil_w;
                        if (g.inside(ih, iw)) acc[i] += grad * to_acc(xp[i64(ih) * W + iw]);
                        if (++kw == KW) {
                            kw = 0;
                            ++kh;
                        }
                    }
                }
            }
#pragma unroll
            for (int i = 0; i < FC_DW_TAPS; ++i) {
                if (i < count) {  // count is the same for the whole block: every thread reaches block_sum
                    const A sum = block_sum(acc[i], scratch);
                    if (threadIdx.x == 0) partial[rs * taps + t0 + i] = sum;
                }
            }
        }
    }
}

// out (rows, inner) = partial (rows, slices, inner) summed over the slices, in order.
template <typename T>
__global__ void sum_slices(const acc_t<T>* __restrict__ partial, T* __restrict__ out, i64 rows, int slices,
                           int inner) {
    for (i64 e = grid_start(); e < rows * inner; e += grid_stride()) {
        const i64 r = e / inner;
        const acc_t<T>* src = partial + r * slices * inner + (e - r * inner);
        acc_t<T> sum = src[0];
        for (int s = 1; s < slices; ++s) sum += src[i64(s) * inner];
        out[e] = to_storage<T>(sum);
    }
}
