// Losses: cross-entropy on (M, C) rows (class axis last) with class-index or class-probability
// targets, and mean squared error on K elements; forward and backward, float and double.
// Semantics are the reference backend's (backends/reference/loss.py, = PyTorch's): the label-
// smoothing term is skipped at label_smoothing = 0, the two terms are reduced separately before
// being mixed, ignored rows contribute exactly 0, and a mean over zero total weight is 0/0 = NaN.
#pragma once

#include <cstdint>

#include "common.h"

namespace fastconv {

enum class Reduction : int { none, sum, mean };

// loss: M values for Reduction::none, else 1; dloss likewise. weight (C,) may be null (all 1).
// 'mean' divides by the summed weights of the kept (not ignored) targets.
template <typename T>
void cross_entropy_index_forward(index_t M, index_t C, const T* logits, const std::int64_t* target, const T* weight,
                                 Reduction reduction, std::int64_t ignore_index, double label_smoothing, T* loss,
                                 int nthreads);
template <typename T>
void cross_entropy_index_backward(index_t M, index_t C, const T* dloss, const T* logits, const std::int64_t* target,
                                  const T* weight, Reduction reduction, std::int64_t ignore_index,
                                  double label_smoothing, T* dlogits, int nthreads);

// target (M, C) probabilities (rows need not sum to 1); 'mean' divides by M.
template <typename T>
void cross_entropy_probs_forward(index_t M, index_t C, const T* logits, const T* target, const T* weight,
                                 Reduction reduction, double label_smoothing, T* loss, int nthreads);
template <typename T>
void cross_entropy_probs_backward(index_t M, index_t C, const T* dloss, const T* logits, const T* target,
                                  const T* weight, Reduction reduction, double label_smoothing, T* dlogits,
                                  int nthreads);

// (x - target)^2: K values for Reduction::none, else their sum or mean.
template <typename T>
void mse_loss_forward(index_t K, const T* x, const T* target, Reduction reduction, T* loss, int nthreads);
template <typename T>
void mse_loss_backward(index_t K, const T* dloss, const T* x, const T* target, Reduction reduction, T* dx,
                       int nthreads);

}  // namespace fastconv
