// Losses. Rows are independent and shared among threads; every sum over rows is then taken in row
// order by one thread (in double), so a loss never depends on the thread count. The reductions and
// the scalars (1 - eps, eps / C, 1 / total) are converted to T where the reference converts them.
#include "loss.h"

#include "activation.h"
#include "common.h"

namespace fastconv {
namespace {

// Threads for work on n elements (the elementwise kernels' rule).
int team_for(index_t n, int nthreads) { return static_cast<int>(max_i(1, min_i(nthreads, n / kElementsPerThread))); }

template <typename T>
T sum_in_order(index_t n, const T* a) {
  double s = 0;
  for (index_t i = 0; i < n; ++i) s += a[i];
  return T(s);
}

// The reduced loss from per-row (or per-element) losses: their sum, or the sum divided by total.
template <typename T>
T reduce(Reduction reduction, index_t n, const T* losses, T total) {
  const T s = sum_in_order(n, losses);
  return reduction == Reduction::mean ? s / total : s;
}

// d(reduced loss) / d(loss of row i)
template <typename T>
T row_scale(Reduction reduction, const T* dloss, index_t i, T total) {
  if (reduction == Reduction::none) return dloss[i];
  return reduction == Reduction::mean ? dloss[0] / total : dloss[0];
}

// The class weights (C,): the given ones, or ones (multiplying by 1 is exact, so results equal the
// reference's unweighted formulas). Never null, so the row loops hold no branch around a load.
template <typename T>
class Weights {
 public:
  Weights(index_t C, const T* weight) : ones_(weight ? 0 : C), w_(weight) {
    if (weight) return;
    for (index_t c = 0; c < C; ++c) ones_.data()[c] = T(1);
    w_ = ones_.data();
  }
  const T* data() const { return w_; }

 private:
  Buffer<T> ones_;  // (C,) when no weight is given
  const T* w_;
};

// Per row of an index target: w_t, its class's weight (0 for an ignored row).
template <typename T>
T target_weight(const T* weight, std::int64_t t, bool kept) {
  return kept ? weight[t] : T(0);
}

template <typename T>
T kept_weight_total(index_t M, const std::int64_t* target, const T* weight, std::int64_t ignore_index) {
  double s = 0;
  for (index_t i = 0; i < M; ++i) s += target_weight(weight, target[i], target[i] != ignore_index);
  return T(s);
}


// ---------------------------------------------------------------------------------------------
// per-row kernels: cloned per ISA, and called from the parallel loops rather than written inside
// them (GCC does not vectorise an `omp simd` reduction inside an outlined parallel region)
// ---------------------------------------------------------------------------------------------

// q[c] with loss = -sum_c q[c] logp[c] for a probability target: the smoothed target times w_c.
template <typename T>
FASTCONV_INLINE T coefficient(const T* target, const T* weight, index_t c, T keep, T spread) {
  return (target[c] * keep + spread) * weight[c];
}

// The row's max m and s = sum_c exp(row[c] - m): logp = (row - m) - log(s), p = exp(row - m) / s.
template <typename T>
struct RowStats {
  T max, sum;
};

template <typename T>
FASTCONV_INLINE RowStats<T> stats_impl(index_t C, const T* row) {
  const T m = row_max(C, row);
  return {m, row_sum_exp(C, row, m)};
}

// sum_c logp[c] * q[c] (a probability target) or sum_c logp[c] * w[c] (target null: the smoothing
// term of an index target)
template <typename T>
FASTCONV_INLINE T dot_logp_impl(index_t C, const T* row, RowStats<T> st, const T* target, const T* weight, T keep,
                                T spread) {
  const T lse = std::log(st.sum);
  T s = T(0);
  if (target) {
#pragma omp simd reduction(+ : s)
    for (index_t c = 0; c < C; ++c) s += ((row[c] - st.max) - lse) * coefficient(target, weight, c, keep, spread);
  } else {
#pragma omp simd reduction(+ : s)
    for (index_t c = 0; c < C; ++c) s += ((row[c] - st.max) - lse) * weight[c];
  }
  return s;
}

// An index target's row gradient: keep g w_t (p - onehot) [+ spread g (p sum(w) - w)]
template <typename T>
FASTCONV_INLINE void index_grad_impl(index_t C, const T* row, RowStats<T> st, std::int64_t t, T w_t, T g, T keep,
                                     T spread, bool smoothing, T wsum, const T* weight, T* d) {
  const T inv = T(1) / st.sum;
#pragma omp simd
  for (index_t c = 0; c < C; ++c) {
    const T p = exp_(row[c] - st.max) * inv;
    const T main = keep * g * (w_t * (p - (c == t ? T(1) : T(0))));
    d[c] = smoothing ? main + spread * g * (p * wsum - weight[c]) : main;
  }
}

// A probability target's row gradient: g (p sum(q) - q)
template <typename T>
FASTCONV_INLINE void probs_grad_impl(index_t C, const T* row, RowStats<T> st, const T* target, const T* weight, T g,
                                     T keep, T spread, T* d) {
  const T inv = T(1) / st.sum;
  T qsum = T(0);
#pragma omp simd reduction(+ : qsum)
  for (index_t c = 0; c < C; ++c) qsum += coefficient(target, weight, c, keep, spread);
#pragma omp simd
  for (index_t c = 0; c < C; ++c)
    d[c] = g * (exp_(row[c] - st.max) * inv * qsum - coefficient(target, weight, c, keep, spread));
}

#define FASTCONV_ROW_KERNELS(T)                                                                                    \
  FASTCONV_OPS_CLONES RowStats<T> row_stats(index_t C, const T* row) { return stats_impl(C, row); }               \
  FASTCONV_OPS_CLONES T row_dot_logp(index_t C, const T* row, RowStats<T> st, const T* target, const T* weight,   \
                                     T keep, T spread) {                                                          \
    return dot_logp_impl(C, row, st, target, weight, keep, spread);                                               \
  }                                                                                                               \
  FASTCONV_OPS_CLONES void row_index_grad(index_t C, const T* row, RowStats<T> st, std::int64_t t, T w_t, T g,    \
                                          T keep, T spread, bool smoothing, T wsum, const T* weight, T* d) {      \
    index_grad_impl(C, row, st, t, w_t, g, keep, spread, smoothing, wsum, weight, d);                             \
  }                                                                                                               \
  FASTCONV_OPS_CLONES void row_probs_grad(index_t C, const T* row, RowStats<T> st, const T* target,               \
                                          const T* weight, T g, T keep, T spread, T* d) {                         \
    probs_grad_impl(C, row, st, target, weight, g, keep, spread, d);                                              \
  }
FASTCONV_ROW_KERNELS(float)
FASTCONV_ROW_KERNELS(double)

}  // namespace

template <typename T>
void cross_entropy_index_forward(index_t M, index_t C, const T* logits, const std::int64_t* target, const T* weight,
                                 Reduction reduction, std::int64_t ignore_index, double label_smoothing, T* loss,
                                 int nthreads) {
  const bool smoothing = label_smoothing > 0;  // at 0 the term is skipped: 0 * inf would be NaN
  const Weights<T> w(C, weight);
  Buffer<T> nll_rows(M), smooth_rows(smoothing ? M : 0);  // (M,) each: -w_t logp[t], -sum_c w_c logp[c]
  T *nll = nll_rows.data(), *smooth = smooth_rows.data();
#pragma omp parallel for schedule(static) num_threads(team_for(M * C, nthreads))
  for (index_t i = 0; i < M; ++i) {
    const T* row = logits + i * C;
    const std::int64_t t = target[i];
    if (t == ignore_index) {  // an ignored row's terms are 0 exactly, whatever its logits (-inf, NaN)
      nll[i] = T(0);
      if (smoothing) smooth[i] = T(0);
      continue;
    }
    const RowStats<T> st = row_stats(C, row);
    nll[i] = -target_weight(w.data(), t, true) * ((row[t] - st.max) - std::log(st.sum));
    if (smoothing) smooth[i] = -row_dot_logp(C, row, st, static_cast<const T*>(nullptr), w.data(), T(1), T(0));
  }
  const T total = kept_weight_total(M, target, w.data(), ignore_index);
  const T keep = T(1 - label_smoothing), spread = T(label_smoothing / C);
  if (reduction == Reduction::none) {
    for (index_t i = 0; i < M; ++i) loss[i] = smoothing ? keep * nll[i] + spread * smooth[i] : nll[i];
  } else {
    const T l = reduce(reduction, M, nll, total);
    loss[0] = smoothing ? keep * l + spread * reduce(reduction, M, smooth, total) : l;
  }
}

template <typename T>
void cross_entropy_index_backward(index_t M, index_t C, const T* dloss, const T* logits, const std::int64_t* target,
                                  const T* weight, Reduction reduction, std::int64_t ignore_index,
                                  double label_smoothing, T* dlogits, int nthreads) {
  const bool smoothing = label_smoothing > 0;
  const Weights<T> w(C, weight);
  const T total = kept_weight_total(M, target, w.data(), ignore_index), wsum = sum_in_order(C, w.data());
  const T keep = T(1 - label_smoothing), spread = T(label_smoothing / C);
#pragma omp parallel for schedule(static) num_threads(team_for(M * C, nthreads))
  for (index_t i = 0; i < M; ++i) {
    const T* row = logits + i * C;
    const std::int64_t t = target[i];
    if (t == ignore_index) {  // discarded, even where the scale is 1/0
      fill_zero(dlogits + i * C, C);
      continue;
    }
    row_index_grad(C, row, row_stats(C, row), t, target_weight(w.data(), t, true),
                   row_scale(reduction, dloss, i, total), keep, spread, smoothing, wsum, w.data(), dlogits + i * C);
  }
}

template <typename T>
void cross_entropy_probs_forward(index_t M, index_t C, const T* logits, const T* target, const T* weight,
                                 Reduction reduction, double label_smoothing, T* loss, int nthreads) {
  const T keep = T(1 - label_smoothing), spread = T(label_smoothing / C);
  const Weights<T> w(C, weight);
  Buffer<T> rows(M);  // (M,) per-row losses
  T* out = reduction == Reduction::none ? loss : rows.data();
#pragma omp parallel for schedule(static) num_threads(team_for(M * C, nthreads))
  for (index_t i = 0; i < M; ++i) {
    const T* row = logits + i * C;
    out[i] = -row_dot_logp(C, row, row_stats(C, row), target + i * C, w.data(), keep, spread);
  }
  if (reduction != Reduction::none) loss[0] = reduce(reduction, M, out, T(M));
}

template <typename T>
void cross_entropy_probs_backward(index_t M, index_t C, const T* dloss, const T* logits, const T* target,
                                  const T* weight, Reduction reduction, double label_smoothing, T* dlogits,
                                  int nthreads) {
  const T keep = T(1 - label_smoothing), spread = T(label_smoothing / C);
  const Weights<T> w(C, weight);
#pragma omp parallel for schedule(static) num_threads(team_for(M * C, nthreads))
  for (index_t i = 0; i < M; ++i) {
    const T* row = logits + i * C;
    row_probs_grad(C, row, row_stats(C, row), target + i * C, w.data(), row_scale(reduction, dloss, i, T(M)), keep,
                   spread, dlogits + i * C);
  }
}

namespace {

// sum of (x - target)^2 over [lo, hi): each square rounded to T, as the reference's, summed in double
template <typename T>
FASTCONV_INLINE double squares_impl(index_t lo, index_t hi, const T* x, const T* target) {
  double s = 0;
#pragma omp simd reduction(+ : s)
  for (index_t k = lo; k < hi; ++k) {
    const T d = x[k] - target[k];
    s += d * d;
  }
  return s;
}

template <typename T>
FASTCONV_INLINE void square_impl(index_t lo, index_t hi, const T* x, const T* target, T* loss) {
#pragma omp simd
  for (index_t k = lo; k < hi; ++k) loss[k] = (x[k] - target[k]) * (x[k] - target[k]);
}

// dx = 2 (x - target) g, g = dloss[k] (reduction 'none': dloss non-null) or the one scale
template <typename T>
FASTCONV_INLINE void mse_grad_impl(index_t lo, index_t hi, const T* dloss, T g, const T* x, const T* target, T* dx) {
  if (dloss) {
#pragma omp simd
    for (index_t k = lo; k < hi; ++k) dx[k] = T(2) * (x[k] - target[k]) * dloss[k];
  } else {
#pragma omp simd
    for (index_t k = lo; k < hi; ++k) dx[k] = T(2) * (x[k] - target[k]) * g;
  }
}

#define FASTCONV_MSE_KERNELS(T)                                                                                  \
  FASTCONV_OPS_CLONES double squares(index_t lo, index_t hi, const T* x, const T* target) {                     \
    return squares_impl(lo, hi, x, target);                                                                     \
  }                                                                                                             \
  FASTCONV_OPS_CLONES void square(index_t lo, index_t hi, const T* x, const T* target, T* loss) {               \
    square_impl(lo, hi, x, target, loss);                                                                       \
  }                                                                                                             \
  FASTCONV_OPS_CLONES void mse_grad(index_t lo, index_t hi, const T* dloss, T g, const T* x, const T* target,   \
                                    T* dx) {                                                                    \
    mse_grad_impl(lo, hi, dloss, g, x, target, dx);                                                             \
  }
FASTCONV_MSE_KERNELS(float)
FASTCONV_MSE_KERNELS(double)

}  // namespace

template <typename T>
void mse_loss_forward(index_t K, const T* x, const T* target, Reduction reduction, T* loss, int nthreads) {
  if (reduction == Reduction::none)
    return for_chunks(K, nthreads, [&](index_t lo, index_t hi) { square(lo, hi, x, target, loss); });
  // fixed blocks, summed in block order: the same result on any thread count
  const index_t block = kElementsPerThread, blocks = ceil_div(K, block);
  Buffer<double> partial_sums(blocks);  // (blocks,)
  double* partial = partial_sums.data();
#pragma omp parallel for schedule(static) num_threads(team_for(K, nthreads))
  for (index_t b = 0; b < blocks; ++b) partial[b] = squares(b * block, min_i(K, (b + 1) * block), x, target);
  double s = 0;
  for (index_t b = 0; b < blocks; ++b) s += partial[b];
  loss[0] = reduction == Reduction::mean ? T(s) / T(K) : T(s);
}

template <typename T>
void mse_loss_backward(index_t K, const T* dloss, const T* x, const T* target, Reduction reduction, T* dx,
                       int nthreads) {
  const bool each = reduction == Reduction::none;
  const T g = each ? T(0) : (reduction == Reduction::mean ? dloss[0] / T(K) : dloss[0]);
  for_chunks(K, nthreads,
             [&](index_t lo, index_t hi) { mse_grad(lo, hi, each ? dloss : nullptr, g, x, target, dx); });
}

#define FASTCONV_INSTANTIATE(T)                                                                                   \
  template void cross_entropy_index_forward<T>(index_t, index_t, const T*, const std::int64_t*, const T*,         \
                                               Reduction, std::int64_t, double, T*, int);                         \
  template void cross_entropy_index_backward<T>(index_t, index_t, const T*, const T*, const std::int64_t*,        \
                                                const T*, Reduction, std::int64_t, double, T*, int);              \
  template void cross_entropy_probs_forward<T>(index_t, index_t, const T*, const T*, const T*, Reduction, double, \
                                               T*, int);                                                          \
  template void cross_entropy_probs_backward<T>(index_t, index_t, const T*, const T*, const T*, const T*,        \
                                                Reduction, double, T*, int);                                      \
  template void mse_loss_forward<T>(index_t, const T*, const T*, Reduction, T*, int);                             \
  template void mse_loss_backward<T>(index_t, const T*, const T*, const T*, Reduction, T*, int);
FASTCONV_INSTANTIATE(float)
FASTCONV_INSTANTIATE(double)

}  // namespace fastconv
