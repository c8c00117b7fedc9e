// Losses, mirroring csrc/loss.cpp term by term (the reference's structure: the smoothing term
// skipped at label_smoothing = 0, the two terms reduced separately, per-row values rounded to T).
// Cross-entropy runs a block per row of logits (M, C): the row's max, sum of exponentials and dot
// products are block reductions in a fixed order (common.cuh). A batch sum is never an atomic: the
// per-row losses (or per-block partial sums) go to a buffer that one block then sums, in double, in
// a fixed order. Results are bit-identical run to run for a given launch. float and double.
#include "common.cuh"

enum Reduction { NONE, SUM, MEAN };  // the adapter's order

template <typename T>
__device__ __forceinline__ T weight_of(const T* weight, i64 c) {
    return weight ? weight[c] : T(1);  // no weight: every class weighs 1 (a product by 1 is exact)
}

// d(reduced loss) / d(loss of row i): dloss[i] for 'none', else the one dloss (over total for 'mean')
template <typename T>
__device__ __forceinline__ T row_scale(int reduction, const T* dloss, i64 i, T total) {
    if (reduction == NONE) return dloss[i];
    return reduction == MEAN ? dloss[0] / total : dloss[0];
}

// A row's max m and s = sum_c exp(row[c] - m): logp = (row - m) - log(s), p = exp(row - m) / s.
// As in PyTorch, a row holding NaN or +inf, or only -inf, gives NaN (max - max = NaN).
template <typename T>
struct RowStats {
    T max, sum;
};

template <typename T>
__device__ RowStats<T> row_stats(const T* row, int C, T* scratch) {
    T m = -inf_of<T>();
    for (int c = threadIdx.x; c < C; c += blockDim.x) m = nan_max(m, row[c]);
    m = block_max(m, scratch);
    T s = T(0);
    for (int c = threadIdx.x; c < C; c += blockDim.x) s += fm::exp(row[c] - m);
    return RowStats<T>{m, block_sum(s, scratch)};
}

// q[c] with loss = -sum_c q[c] logp[c] for a probability target: the smoothed target times w_c
template <typename T>
__device__ __forceinline__ T coefficient(const T* target, const T* weight, int c, T keep, T spread) {
    return (target[c] * keep + spread) * weight_of(weight, c);
}

// sum_c logp[c] * q[c] (a probability target row) or sum_c logp[c] * w_c (target null: the
// smoothing term of an index target), across the block
template <typename T>
__device__ T logp_dot(const T* row, int C, RowStats<T> st, const T* target, const T* weight, T keep, T spread,
                      T* scratch) {
    const T lse = fm::log(st.sum);
    T s = T(0);
    for (int c = threadIdx.x; c < C; c += blockDim.x)
        s += ((row[c] - st.max) - lse) * (target ? coefficient(target, weight, c, keep, spread) : weight_of(weight, c));
    return block_sum(s, scratch);
}

// ---- cross-entropy with class-index targets ----------------------------------------------------

// Per row: nll = -w_t logp[t] and, with smoothing, smooth = -sum_c w_c logp[c]; both exactly 0 for
// an ignored row, whatever its logits (-inf, NaN). Where they go:
// - smooth_rows given (a reduced loss with smoothing): out[i] = nll, smooth_rows[i] = smooth;
// - otherwise out[i] = the row's loss, keep * nll + spread * smooth (nll alone without smoothing).
// kept_weights (the 'mean' divisor's terms), when given, gets w_t (0 for an ignored row).
template <typename T>
__global__ void ce_index_rows(const T* __restrict__ logits, const i64* __restrict__ target,
                              const T* __restrict__ weight, i64 M, int C, i64 ignore_index, int smoothing, T keep,
                              T spread, T* __restrict__ out, T* __restrict__ smooth_rows, T* __restrict__ kept_weights) {
    __shared__ T scratch[32];
    for (i64 i = blockIdx.x; i < M; i += gridDim.x) {
        const i64 t = target[i];
        const bool kept = t != ignore_index;  // the same for the whole block: its barriers are safe
        T nll = T(0), smooth = T(0);
        if (kept) {
            const T* row = logits + i * C;
            const RowStats<T> st = row_stats(row, C, scratch);
            nll = -weight_of(weight, t) * ((row[t] - st.max) - fm::log(st.sum));
            if (smoothing) smooth = -logp_dot(row, C, st, (const T*)nullptr, weight, T(1), T(0), scratch);
        }
        if (threadIdx.x == 0) {
            if (smooth_rows) {
                out[i] = nll;
                smooth_rows[i] = smooth;
            } else {
                out[i] = smoothing ? keep * nll + spread * smooth : nll;
            }
            if (kept_weights) kept_weights[i] = kept ? weight_of(weight, t) : T(0);
        }
    }
}

// totals[0] = the kept targets' summed weights (what 'mean' divides by), totals[1] = sum_c w_c;
// each summed in double in a fixed order and rounded to T. One block.
template <typename T>
__global__ void ce_index_totals(const i64* __restrict__ target, const T* __restrict__ weight, i64 M, int C,
                                i64 ignore_index, T* __restrict__ totals) {
    __shared__ double scratch[32];
    double kept = 0, all = 0;
    for (i64 i = threadIdx.x; i < M; i += blockDim.x)
        if (target[i] != ignore_index) kept += weight_of(weight, target[i]);
    for (int c = threadIdx.x; c < C; c += blockDim.x) all += weight_of(weight, c);
    kept = block_sum(kept, scratch);
    all = block_sum(all, scratch);
    if (threadIdx.x == 0) {
        totals[0] = T(kept);
        totals[1] = T(all);
    }
}

// dlogits of row i: keep g w_t (p - onehot) [+ spread g (p sum(w) - w)]; 0 for an ignored row,
// even where the scale is 1/0. totals (ce_index_totals) is read for 'mean' and smoothing only.
template <typename T>
__global__ void ce_index_grad(const T* __restrict__ dloss, const T* __restrict__ logits,
                              const i64* __restrict__ target, const T* __restrict__ weight,
                              const T* __restrict__ totals, i64 M, int C, i64 ignore_index, int reduction,
                              int smoothing, T keep, T spread, T* __restrict__ dlogits) {
    __shared__ T scratch[32];
    for (i64 i = blockIdx.x; i < M; i += gridDim.x) {
        const i64 t = target[i];
        T* d = dlogits + i * C;
        if (t == ignore_index) {
            for (int c = threadIdx.x; c < C; c += blockDim.x) d[c] = T(0);
            continue;
        }
        const T* row = logits + i * C;
        const RowStats<T> st = row_stats(row, C, scratch);
        const T inv = T(1) / st.sum, w_t = weight_of(weight, t);
        const T g = row_scale(reduction, dloss, i, reduction == MEAN ? totals[0] : T(1));
        for (int c = threadIdx.x; c < C; c += blockDim.x) {
            const T p = fm::exp(row[c] - st.max) * inv;
            const T main = keep * g * (w_t * (p - (c == t ? T(1) : T(0))));
            d[c] = smoothing ? main + spread * g * (p * totals[1] - weight_of(weight, c)) : main;
        }
    }
}

// ---- cross-entropy with class-probability targets ---------------------------------------------

// out[i] = -sum_c q[c] logp[c]: the row's loss
template <typename T>
__global__ void ce_probs_rows(const T* __restrict__ logits, const T* __restrict__ target,
                              const T* __restrict__ weight, i64 M, int C, T keep, T spread, T* __restrict__ out) {
    __shared__ T scratch[32];
    for (i64 i = blockIdx.x; i < M; i += gridDim.x) {
        const T* row = logits + i * C;
        const T s = logp_dot(row, C, row_stats(row, C, scratch), target + i * C, weight, keep, spread, scratch);
        if (threadIdx.x == 0) out[i] = -s;
    }
}

// dlogits of row i: g (p sum(q) - q)
template <typename T>
__global__ void ce_probs_grad(const T* __restrict__ dloss, const T* __restrict__ logits, const T* __restrict__ target,
                              const T* __restrict__ weight, i64 M, int C, int reduction, T keep, T spread,
                              T* __restrict__ dlogits) {
    __shared__ T scratch[32];
    for (i64 i = blockIdx.x; i < M; i += gridDim.x) {
        const T *row = logits + i * C, *q = target + i * C;
        const RowStats<T> st = row_stats(row, C, scratch);
        T qsum = T(0);
        for (int c = threadIdx.x; c < C; c += blockDim.x) qsum += coefficient(q, weight, c, keep, spread);
        qsum = block_sum(qsum, scratch);
        const T inv = T(1) / st.sum, g = row_scale(reduction, dloss, i, T(M));
        T* d = dlogits + i * C;
        for (int c = threadIdx.x; c < C; c += blockDim.x)
            d[c] = g * (fm::exp(row[c] - st.max) * inv * qsum - coefficient(q, weight, c, keep, spread));
    }
}

// ---- the batch reduction ------------------------------------------------------------------------

// loss[0] = reduce(a), or keep * reduce(a) + spread * reduce(b) when b is given, where reduce(v) is
// the sum of v's n values (in double, in a fixed order, rounded to T), divided for 'mean' by the
// total: T(sum of w) when w is given (the kept targets' weights), else T(count). One block.
// V is T for per-row losses, double for per-block partial sums.
template <typename T, typename V>
__global__ void reduce_loss(const V* __restrict__ a, const V* __restrict__ b, const V* __restrict__ w, i64 n,
                            i64 count, int mean, T keep, T spread, T* __restrict__ loss) {
    __shared__ double scratch[32];
    double sa = 0, sb = 0, sw = 0;
    for (i64 k = threadIdx.x; k < n; k += blockDim.x) {
        sa += a[k];
        if (b) sb += b[k];
        if (w) sw += w[k];
    }
    sa = block_sum(sa, scratch);
    sb = block_sum(sb, scratch);
    sw = block_sum(sw, scratch);
    if (threadIdx.x == 0) {
        const T total = w ? T(sw) : T(count);
        const T la = mean ? T(sa) / total : T(sa);
        const T lb = mean ? T(sb) / total : T(sb);
        loss[0] = b ? keep * la + spread * lb : la;
    }
}

// ---- mean squared error ------------------------------------------------------------------------

// loss[k] = (x[k] - target[k])^2 ('none')
template <typename T>
__global__ void mse_squares(const T* __restrict__ x, const T* __restrict__ target, T* __restrict__ loss, i64 K) {
    for (i64 k = grid_start(); k < K; k += grid_stride()) loss[k] = (x[k] - target[k]) * (x[k] - target[k]);
}

// partial[b] = block b's sum of the squares (each rounded to T, as the reference's), in double:
// the first step of 'sum' and 'mean', launched with as many blocks as partial has entries
template <typename T>
__global__ void mse_partials(const T* __restrict__ x, const T* __restrict__ target, double* __restrict__ partial,
                             i64 K) {
    __shared__ double scratch[32];
    double s = 0;
    for (i64 k = grid_start(); k < K; k += grid_stride()) {
        const T d = x[k] - target[k];
        s += d * d;
    }
    s = block_sum(s, scratch);
    if (threadIdx.x == 0) partial[blockIdx.x] = s;
}

// dx = 2 (x - target) g, g = dloss[k] ('none') or the one dloss (over K for 'mean')
template <typename T>
__global__ void mse_grad(const T* __restrict__ dloss, const T* __restrict__ x, const T* __restrict__ target,
                         T* __restrict__ dx, i64 K, int reduction) {
    for (i64 k = grid_start(); k < K; k += grid_stride())
        dx[k] = T(2) * (x[k] - target[k]) * row_scale(reduction, dloss, k, T(K));
}
