// Pooling: max (with PyTorch's indices), average and adaptive average, forward and backward.
// Mirrors csrc/pool.cpp: the same window rules and comparisons, sums in the reference's order,
// so small-integer inputs give bit-identical results. Every kernel is instantiated for __half
// (stored as float16, computed in float), float and double.
//
// Forwards: a thread per output pixel, grid-stride over the flat (N, C, OH, OW) index, so adjacent
// threads write adjacent outputs. Backwards are gathers, a thread per input pixel summing, in a
// fixed order, what the windows that cover it send it: deterministic with overlapping windows,
// no atomics on values, and every dx pixel written once (no zeroing pass).
#include "common.cuh"

// One axis (H or W) of a pooling problem: input size, output size, window, stride, padding and
// dilation. Window o starts at o*stride - pad (in the padding when negative); its taps are
// start + t*dil for t < k. PyTorch's output size keeps every start below `size`.
struct Axis {
    int size, out, k, stride, pad, dil;

    __device__ int start(int o) const { return o * stride - pad; }

    // The taps [lo, hi) of window o that land in the image: padding never takes part.
    __device__ void taps(int o, int& lo, int& hi) const {
        const int s = start(o);
        lo = s < 0 ? (-s + dil - 1) / dil : 0;
        hi = min(k, (size - s + dil - 1) / dil);
    }

    // The windows [lo, hi) whose span [start, start + dil*(k-1)] holds position i.
    __device__ void windows(int i, int& lo, int& hi) const {
        const int span = dil * (k - 1) + 1, t = i + pad;
        lo = t < span ? 0 : (t - span) / stride + 1;
        hi = min(t / stride + 1, out);
    }

    // Window o's extent in PyTorch's average divisor: cut at the end of the padding (a ceil_mode
    // window hanging past it never counts those positions), then counted with its padding or,
    // without count_include_pad, clipped to the image.
    __device__ int divisor_extent(int o, int count_include_pad) const {
        const int s = start(o), e = min(s + k, size + pad);
        return count_include_pad ? e - s : min(e, size) - max(s, 0);
    }
};

// A flat index k of (planes, rows, cols) split into (plane, h, w). The divisions are 64-bit (a
// plane may hold 2^31 pixels), which nvcc runs as 32-bit ones when the operands fit.
struct Pixel {
    i64 plane;
    int h, w;
    __device__ Pixel(i64 k, int rows, int cols) {
        plane = k / (i64(rows) * cols);
        const i64 r = k - plane * rows * cols;
        h = int(r / cols);
        w = int(r - i64(h) * cols);
    }
};

// ---- max pooling --------------------------------------------------------------------------------

// y (and, unless indices is null, the argmax) of every window, scanned as PyTorch's CPU kernel:
// the first in-image tap starts the window, then a tap takes it when value > max or value is NaN.
// So ties keep the first position in row-major window order and the last NaN wins. The winner is
// copied as stored (a float16 max is exact); comparisons run in the accumulation type.
template <typename T>
__global__ void max_pool2d_forward(const T* __restrict__ x, T* __restrict__ y, i64* __restrict__ indices, i64 planes,
                                   int H, int OH, int KH, int SH, int PH, int DH,
                                   int W, int OW, int KW, int SW, int PW, int DW) {
    const Axis ah{H, OH, KH, SH, PH, DH}, aw{W, OW, KW, SW, PW, DW};
    for (i64 k = grid_start(); k < planes * OH * OW; k += grid_stride()) {
        const Pixel o(k, OH, OW);
        const T* xp = x + o.plane * H * W;
        int kh0, kh1, kw0, kw1;
        ah.taps(o.h, kh0, kh1);
        aw.taps(o.w, kw0, kw1);
        const int ih0 = ah.start(o.h), iw0 = aw.start(o.w);
        i64 where = i64(ih0 + kh0 * DH) * W + (iw0 + kw0 * DW);
        T best = xp[where];
        acc_t<T> best_value = to_acc(best);
        for (int kh = kh0; kh < kh1; ++kh) {
            const i64 row = i64(ih0 + kh * DH) * W;
            for (int kw = kw0; kw < kw1; ++kw) {
                const i64 at = row + iw0 + kw * DW;
                const T v = xp[at];
                const acc_t<T> value = to_acc(v);
                if (value > best_value || value != value) {
                    best = v;
                    best_value = value;
                    where = at;
                }
            }
        }
        y[k] = best;
        if (indices) indices[k] = where;
    }
}

// What max_pool2d_backward reports in its flag (bits, set with atomicOr)
#define FC_INDEX_OUT_OF_RANGE 1   // an index outside [0, H*W): the caller raises
#define FC_INDEX_OUTSIDE_WINDOW 2  // an index in the plane but outside its window's span: scatter

// dx[pixel] = the sum, over the windows whose span covers the pixel, in output order (that of the
// reference's scatter), of dy where the window's index is the pixel. That is the scatter of dy
// through the indices as long as every index lies in its own window's span, as a forward's do.
// Indices a caller made up may point anywhere: each window's index is checked by one thread (the
// one at the top-left of the window's span in the image), which flags it; the caller then raises
// (out of the plane) or redoes dx with max_pool2d_backward_scatter (elsewhere in it).
template <typename T>
__global__ void max_pool2d_backward(const T* __restrict__ dy, const i64* __restrict__ indices, T* __restrict__ dx,
                                    int* __restrict__ flag, i64 planes, int H, int OH, int KH, int SH, int PH, int DH,
                                    int W, int OW, int KW, int SW, int PW, int DW) {
    const Axis ah{H, OH, KH, SH, PH, DH}, aw{W, OW, KW, SW, PW, DW};
    const int span_h = DH * (KH - 1) + 1, span_w = DW * (KW - 1) + 1;
    for (i64 k = grid_start(); k < planes * H * W; k += grid_stride()) {
        const Pixel i(k, H, W);
        const i64 out = i.plane * OH * OW, pixel = i64(i.h) * W + i.w;
        int oh0, oh1, ow0, ow1;
        ah.windows(i.h, oh0, oh1);
        aw.windows(i.w, ow0, ow1);
        acc_t<T> total = 0;
        for (int oh = oh0; oh < oh1; ++oh) {
            const int h0 = ah.start(oh);
            for (int ow = ow0; ow < ow1; ++ow) {
                const i64 o = out + i64(oh) * OW + ow, index = indices[o];
                if (index == pixel) total += to_acc(dy[o]);
                const int w0 = aw.start(ow);
                if (i.h == max(h0, 0) && i.w == max(w0, 0)) {  // this thread checks window (oh, ow)
                    const i64 r = index / W, c = index % W;
                    if (index < 0 || index >= i64(H) * W)
                        atomicOr(flag, FC_INDEX_OUT_OF_RANGE);
                    else if (r < h0 || r >= h0 + span_h || c < w0 || c >= w0 + span_w)
                        atomicOr(flag, FC_INDEX_OUTSIDE_WINDOW);
                }
            }
        }
        dx[k] = to_storage<T>(total);
    }
}

// The plain scatter, a thread per (n, c) plane adding dy in output order: only for indices that
// max_pool2d_backward flagged as outside their windows (none a forward makes), so simplicity
// beats speed. Every index lies in the plane (max_pool2d_backward found none outside). dx is in
// the accumulation type (float for float16): the caller rounds it once.
template <typename T>
__global__ void max_pool2d_backward_scatter(const T* __restrict__ dy, const i64* __restrict__ indices,
                                            acc_t<T>* __restrict__ dx, i64 planes, i64 plane_in, i64 plane_out) {
    for (i64 u = grid_start(); u < planes; u += grid_stride()) {
        acc_t<T>* dxp = dx + u * plane_in;
        for (i64 i = 0; i < plane_in; ++i) dxp[i] = 0;
        for (i64 o = u * plane_out; o < (u + 1) * plane_out; ++o)
            dxp[indices[o]] += to_acc(dy[o]);
    }
}

// ---- average pooling (dilation 1) ---------------------------------------------------------------

// Window (oh, ow)'s divisor: divisor_override when non-zero, else PyTorch's window size.
__device__ __forceinline__ int avg_divisor(const Axis& ah, const Axis& aw, int oh, int ow, int count_include_pad,
                                           int divisor_override) {
    return divisor_override ? divisor_override
                            : ah.divisor_extent(oh, count_include_pad) * aw.divisor_extent(ow, count_include_pad);
}

// y = the sum of the window's in-image taps, kh-major (the reference's order), divided (not
// multiplied by a reciprocal) by the divisor.
template <typename T>
__global__ void avg_pool2d_forward(const T* __restrict__ x, T* __restrict__ y, i64 planes, int H, int OH, int KH,
                                   int SH, int PH, int W, int OW, int KW, int SW, int PW, int count_include_pad,
                                   int divisor_override) {
    typedef acc_t<T> A;
    const Axis ah{H, OH, KH, SH, PH, 1}, aw{W, OW, KW, SW, PW, 1};
    for (i64 k = grid_start(); k < planes * OH * OW; k += grid_stride()) {
        const Pixel o(k, OH, OW);
        const T* xp = x + o.plane * H * W;
        int kh0, kh1, kw0, kw1;
        ah.taps(o.h, kh0, kh1);
        aw.taps(o.w, kw0, kw1);
        const int ih0 = ah.start(o.h), iw0 = aw.start(o.w);
        A total = 0;
        for (int kh = kh0; kh < kh1; ++kh)
            for (int kw = kw0; kw < kw1; ++kw) total += to_acc(xp[i64(ih0 + kh) * W + iw0 + kw]);
        y[k] = to_storage<T>(total / A(avg_divisor(ah, aw, o.h, o.w, count_include_pad, divisor_override)));
    }
}

// dx[pixel] = the sum of dy / divisor over the windows that hold it, in the reference's order:
// taps kh-major, i.e. windows from the last (oh, ow) to the first.
template <typename T>
__global__ void avg_pool2d_backward(const T* __restrict__ dy, T* __restrict__ dx, i64 planes, int H, int OH, int KH,
                                    int SH, int PH, int W, int OW, int KW, int SW, int PW, int count_include_pad,
                                    int divisor_override) {
    typedef acc_t<T> A;
    const Axis ah{H, OH, KH, SH, PH, 1}, aw{W, OW, KW, SW, PW, 1};
    for (i64 k = grid_start(); k < planes * H * W; k += grid_stride()) {
        const Pixel i(k, H, W);
        const T* dyp = dy + i.plane * OH * OW;
        int oh0, oh1, ow0, ow1;
        ah.windows(i.h, oh0, oh1);
        aw.windows(i.w, ow0, ow1);
        A total = 0;
        for (int oh = oh1 - 1; oh >= oh0; --oh)
            for (int ow = ow1 - 1; ow >= ow0; --ow)
                total += to_acc(dyp[i64(oh) * OW + ow]) /
                         A(avg_divisor(ah, aw, oh, ow, count_include_pad, divisor_override));
        dx[k] = to_storage<T>(total);
    }
}

// ---- adaptive average pooling -------------------------------------------------------------------

// Window o of `out` over `size` positions spans [floor(o*size/out), ceil((o+1)*size/out)).
__device__ __forceinline__ int adaptive_start(int o, int out, int size) { return int(i64(o) * size / out); }
__device__ __forceinline__ int adaptive_end(int o, int out, int size) {
    return int((i64(o + 1) * size + out - 1) / out);
}

// y = (sum over the window's columns of each column's sum over its rows) / its pixel count: the
// reference's order.
template <typename T>
__global__ void adaptive_avg_pool2d_forward(const T* __restrict__ x, T* __restrict__ y, i64 planes, int H, int W,
                                            int OH, int OW) {
    typedef acc_t<T> A;
    for (i64 k = grid_start(); k < planes * OH * OW; k += grid_stride()) {
        const Pixel o(k, OH, OW);
        const T* xp = x + o.plane * H * W;
        const int h0 = adaptive_start(o.h, OH, H), h1 = adaptive_end(o.h, OH, H);
        const int w0 = adaptive_start(o.w, OW, W), w1 = adaptive_end(o.w, OW, W);
        A total = 0;
        for (int w = w0; w < w1; ++w) {
            A column = 0;
            for (int h = h0; h < h1; ++h) column += to_acc(xp[i64(h) * W + w]);
            total += column;
        }
        y[k] = to_storage<T>(total / (A(h1 - h0) * A(w1 - w0)));  // exact factors: rounds as the count would
    }
}

// dx[pixel] = the sum over the windows that hold it of dy / count: per window row, its windows'
// shares summed first (the reference spreads each output row over W, then adds the rows).
// Position i lies in windows [floor(i*out/size), floor(((i+1)*out - 1)/size)], from the window
// bounds above.
template <typename T>
__global__ void adaptive_avg_pool2d_backward(const T* __restrict__ dy, T* __restrict__ dx, i64 planes, int H, int W,
                                             int OH, int OW) {
    typedef acc_t<T> A;
    for (i64 k = grid_start(); k < planes * H * W; k += grid_stride()) {
        const Pixel i(k, H, W);
        const T* dyp = dy + i.plane * OH * OW;
        const int oh0 = int(i64(i.h) * OH / H), oh1 = min(OH, int((i64(i.h + 1) * OH - 1) / H) + 1);
        const int ow0 = int(i64(i.w) * OW / W), ow1 = min(OW, int((i64(i.w + 1) * OW - 1) / W) + 1);
        A total = 0;
        for (int oh = oh0; oh < oh1; ++oh) {
            const A rows = A(adaptive_end(oh, OH, H) - adaptive_start(oh, OH, H));
            A row = 0;
            for (int ow = ow0; ow < ow1; ++ow)
                row += to_acc(dyp[i64(oh) * OW + ow]) /
                       (rows * A(adaptive_end(ow, OW, W) - adaptive_start(ow, OW, W)));
            total += row;
        }
        dx[k] = to_storage<T>(total);
    }
}
