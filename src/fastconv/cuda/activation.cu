// Activations (elementwise over K elements) and softmax / log_softmax along one axis of an array
// viewed as (outer, D, inner); forward and backward. Mirrors csrc/activation.cpp: the same
// formulas and the same comparisons (they decide the value at a kink and where a NaN goes), so
// results match the reference backend (= PyTorch). Every kernel is instantiated for __half
// (stored as float16, computed in float), float and double.
#include "common.cuh"

// The activation, and its scalar parameters in the public op's order (as csrc/activation.h):
//   leaky_relu: a = negative_slope;  elu/selu: a = alpha, b = scale (elu: 1);
//   softplus:   a = beta, b = threshold;  the others take none.
enum Act { RELU, LEAKY_RELU, ELU, GELU, GELU_TANH, SIGMOID, TANH, SOFTPLUS, SILU };

#define FC_SQRT_HALF 0.70710678118654752440
#define FC_INV_SQRT_2PI 0.39894228040143267794  // the standard normal density at 0
#define FC_TANH_BETA 0.79788456080286535588     // sqrt(2 / pi)
#define FC_TANH_KAPPA 0.044715
// Beyond |x| = 1e4, exp(-x^2/2) is 0 and the tanh-gelu tanh is +-1: clipping x where it is
// squared or cubed changes no result and keeps x^3 finite in float.
#define FC_SATURATED 1e4

template <typename A>
__device__ __forceinline__ A saturated(A x) {  // NaN stays NaN
    const A s = A(FC_SATURATED);
    return x > s ? s : (x < -s ? -s : x);
}
template <typename A>
__device__ __forceinline__ A min0(A x) {  // NaN stays NaN
    return x > A(0) ? A(0) : x;
}
// 1 / (1 + exp(-x)) without overflow: exp is only ever taken of -|x|
template <typename A>
__device__ __forceinline__ A sigmoid_of(A x) {
    const A e = fm::exp(-fm::fabs(x)), r = A(1) / (A(1) + e);
    return x >= A(0) ? r : e * r;
}

template <typename A>
__device__ A act_forward(int act, A v, A a, A b) {
    switch (act) {
        case RELU: return v < A(0) ? A(0) : v;  // max(x, 0); NaN stays NaN
        case LEAKY_RELU: return v > A(0) ? v : v * a;
        case ELU: return v > A(0) ? b * v : (b * a) * fm::expm1(min0(v));
        case GELU: return A(0.5) * v * (A(1) + fm::erf(v * A(FC_SQRT_HALF)));
        case GELU_TANH: {
            const A s = saturated(v);
            return A(0.5) * v * (A(1) + fm::tanh(A(FC_TANH_BETA) * (s + A(FC_TANH_KAPPA) * s * s * s)));
        }
        case SIGMOID: return sigmoid_of(v);
        case TANH: return fm::tanh(v);
        case SOFTPLUS: {  // log(1 + exp(z)) = max(z, 0) + log1p(exp(-|z|)): no exp of a large z
            const A z = v * a;
            return z > b ? v : ((z < A(0) ? A(0) : z) + fm::log1p(fm::exp(-fm::fabs(z)))) / a;
        }
        default: return v * sigmoid_of(v);  // SILU
    }
}

template <typename A>
__device__ A act_backward(int act, A g, A v, A a, A b) {
    switch (act) {
        case RELU: return v <= A(0) ? A(0) : g;  // 0 at x = 0; dy at NaN (nan <= 0 is false)
        case LEAKY_RELU: return v > A(0) ? g : g * a;
        case ELU: return v > A(0) ? g * b : g * (b * a) * fm::exp(min0(v));  // NaN at NaN
        case GELU: {  // x * pdf(x) is inf * 0 = NaN at +-inf, as PyTorch
            const A s = saturated(v);
            const A cdf = A(0.5) * (A(1) + fm::erf(v * A(FC_SQRT_HALF)));
            const A pdf = A(FC_INV_SQRT_2PI) * fm::exp(A(-0.5) * s * s);
            return g * (cdf + v * pdf);
        }
        case GELU_TANH: {
            const A s = saturated(v);
            const A t = fm::tanh(A(FC_TANH_BETA) * (s + A(FC_TANH_KAPPA) * s * s * s));
            return g * (A(0.5) * (A(1) + t) +
                        A(0.5) * v * (A(1) - t * t) * A(FC_TANH_BETA) * (A(1) + A(3 * FC_TANH_KAPPA) * s * s));
        }
        case SIGMOID: {
            const A s = sigmoid_of(v);
            return g * (A(1) - s) * s;
        }
        case TANH: {
            const A t = fm::tanh(v);
            return g * (A(1) - t * t);
        }
        case SOFTPLUS: {
            const A z = v * a;
            return z > b ? g : g * sigmoid_of(z);
        }
        default: {  // SILU: x * (1 - s) is inf * 0 = NaN at +inf, as PyTorch
            const A s = sigmoid_of(v);
            return g * s * (A(1) + v * (A(1) - s));
        }
    }
}

// y[k] = act(x[k]) for k < n. a and b arrive as double and are rounded to the accumulation
// type once, as the C++ backend does.
template <typename T>
__global__ void activation_forward(int act, const T* __restrict__ x, T* __restrict__ y, i64 n, double a,
                                   double b) {
    typedef acc_t<T> A;
    for (i64 k = grid_start(); k < n; k += grid_stride()) y[k] = to_storage<T>(act_forward(act, to_acc(x[k]), A(a), A(b)));
}

// dx[k] = dy[k] * act'(x[k])
template <typename T>
__global__ void activation_backward(int act, const T* __restrict__ dy, const T* __restrict__ x, T* __restrict__ dx,
                                    i64 n, double a, double b) {
    typedef acc_t<T> A;
    for (i64 k = grid_start(); k < n; k += grid_stride())
        dx[k] = to_storage<T>(act_backward(act, to_acc(dy[k]), to_acc(x[k]), A(a), A(b)));
}

// ---- softmax along contiguous rows (inner == 1): one block per row, grid-stride over rows ------
// A row's maximum and sum are block reductions in a fixed order (common.cuh): bit-identical runs.
// As in PyTorch, a row holding NaN or +inf, or only -inf, comes out all NaN (max - max = NaN).
template <typename T>
__global__ void softmax_rows(int log_softmax, const T* __restrict__ x, T* __restrict__ y, i64 rows, int D) {
    typedef acc_t<T> A;
    __shared__ A scratch[32];
    for (i64 r = blockIdx.x; r < rows; r += gridDim.x) {
        const T* xr = x + r * D;
        T* yr = y + r * D;
        A m = -inf_of<A>();
        for (int d = threadIdx.x; d < D; d += blockDim.x) m = nan_max(m, to_acc(xr[d]));
        m = block_max(m, scratch);
        A sum = A(0);
        for (int d = threadIdx.x; d < D; d += blockDim.x) sum += fm::exp(to_acc(xr[d]) - m);
        sum = block_sum(sum, scratch);
        if (log_softmax) {
            const A lse = fm::log(sum);
            for (int d = threadIdx.x; d < D; d += blockDim.x) yr[d] = to_storage<T>((to_acc(xr[d]) - m) - lse);
        } else {
            const A inv = A(1) / sum;
            for (int d = threadIdx.x; d < D; d += blockDim.x) yr[d] = to_storage<T>(fm::exp(to_acc(xr[d]) - m) * inv);
        }
    }
}

// dx = y * (dy - sum(dy * y)) (softmax) or dy - exp(y) * sum(dy) (log_softmax), y the forward's output
template <typename T>
__global__ void softmax_rows_backward(int log_softmax, const T* __restrict__ dy, const T* __restrict__ y,
                                      T* __restrict__ dx, i64 rows, int D) {
    typedef acc_t<T> A;
    __shared__ A scratch[32];
    for (i64 r = blockIdx.x; r < rows; r += gridDim.x) {
        const T *dyr = dy + r * D, *yr = y + r * D;
        T* dxr = dx + r * D;
        A s = A(0);
        for (int d = threadIdx.x; d < D; d += blockDim.x)
            s += log_softmax ? to_acc(dyr[d]) : to_acc(dyr[d]) * to_acc(yr[d]);
        s = block_sum(s, scratch);
        for (int d = threadIdx.x; d < D; d += blockDim.x) {
            const A g = to_acc(dyr[d]), v = to_acc(yr[d]);
            dxr[d] = to_storage<T>(log_softmax ? g - fm::exp(v) * s : v * (g - s));
        }
    }
}

// ---- softmax along a strided axis (inner > 1): one thread per (outer, inner) column ------------
// Adjacent threads take adjacent columns, so each of the D passes reads memory coalesced.
template <typename T>
__global__ void softmax_cols(int log_softmax, const T* __restrict__ x, T* __restrict__ y, i64 outer, int D, i64 inner) {
    typedef acc_t<T> A;
    for (i64 col = grid_start(); col < outer * inner; col += grid_stride()) {
        const i64 at = (col / inner) * D * inner + col % inner;  // (o, 0, i)
        A m = -inf_of<A>();
        for (int d = 0; d < D; ++d) m = nan_max(m, to_acc(x[at + d * inner]));
        A sum = A(0);
        for (int d = 0; d < D; ++d) sum += fm::exp(to_acc(x[at + d * inner]) - m);
        const A scale = log_softmax ? fm::log(sum) : A(1) / sum;
        for (int d = 0; d < D; ++d) {
            const A v = to_acc(x[at + d * inner]) - m;
            y[at + d * inner] = to_storage<T>(log_softmax ? v - scale : fm::exp(v) * scale);
        }
    }
}

template <typename T>
__global__ void softmax_cols_backward(int log_softmax, const T* __restrict__ dy, const T* __restrict__ y,
                                      T* __restrict__ dx, i64 outer, int D, i64 inner) {
    typedef acc_t<T> A;
    for (i64 col = grid_start(); col < outer * inner; col += grid_stride()) {
        const i64 at = (col / inner) * D * inner + col % inner;
        A s = A(0);
        for (int d = 0; d < D; ++d) {
            const i64 k = at + d * inner;
            s += log_softmax ? to_acc(dy[k]) : to_acc(dy[k]) * to_acc(y[k]);
        }
        for (int d = 0; d < D; ++d) {
            const i64 k = at + d * inner;
            const A g = to_acc(dy[k]), v = to_acc(y[k]);
            dx[k] = to_storage<T>(log_softmax ? g - fm::exp(v) * s : v * (g - s));
        }
    }
}
