"""Numba losses: cross-entropy (class-index and class-probability targets) and MSE.

Cross-entropy kernels see logits as (M, C) rows: one row per unit of work, its log-softmax in
float64. Each forward kernel writes every row's terms, then sums them in row order on one thread
(:func:`_reduce`), so a loss does not depend on the thread count. The structure is the
reference's (PyTorch's ``cross_entropy_loss_label_smoothing``) term by term, because the edge
cases hang on it: the smoothing term is skipped at label_smoothing = 0, an ignored row
contributes a chosen 0 (not ``0 * logp``, which is NaN at a -inf logit), and the two terms are
reduced separately, so a mean over zero total weight is NaN.
"""

import math

import numpy as np
from numba import prange

from .._common import empty
from ._jit import contiguous, jit, parallel_jit, run

NONE, SUM, MEAN = range(3)
_REDUCTIONS = {"none": NONE, "sum": SUM, "mean": MEAN}


@jit
def _softmax_row(row, p, log):
    """p = log_softmax(row) (``log``) or softmax(row), in float64: (x - max) - log(sum exp(x - max))
    and exp(x - max) / sum. A row holding NaN, +inf, or only -inf gives NaN."""
    top = -np.inf
    for v in row:
        if v > top or np.isnan(v):
            top = v
    total = 0.0
    for v in row:
        total += math.exp(v - top)
    for c in range(row.size):
        p[c] = (row[c] - top) - math.log(total) if log else math.exp(row[c] - top) / total


@jit
def _reduce(values, reduction, total):
    """``values`` (M,) -> themselves ('none'), their sum in row order, or the sum / total ('mean'),
    as a float64 array of the loss's size."""
    if reduction == NONE:
        return values.copy()
    summed = 0.0
    for v in values:
        summed += v
    return np.full(1, summed / total if reduction == MEAN else summed)  # (1,)


@jit
def _mix(first, second, reduction, total, smoothing, C, out):
    """out = (1 - smoothing) * reduce(first) + (smoothing / C) * reduce(second); reduce(first)
    alone at smoothing = 0 (the second term is not even formed: 0 * inf would be NaN)."""
    loss = _reduce(first, reduction, total)
    if smoothing > 0:
        loss = (1 - smoothing) * loss + (smoothing / C) * _reduce(second, reduction, total)
    out[:] = loss


@jit
def _gradient_scale(dloss, i, reduction, total):
    """d(reduced loss) / d(loss of row i): dloss[i] ('none'), or the 0-d dloss (given as (1,)) / total."""
    if reduction == NONE:
        return dloss[i]
    return dloss[0] / total if reduction == MEAN else dloss[0]


# --------------------------------------------------------------------------------------------
# class-index targets
# --------------------------------------------------------------------------------------------

@jit
def _target_weight(target, weight, ignore_index, i):
    """(kept, class, weight of the class) of row i; an ignored row has class 0 and weight 0."""
    if target[i] == ignore_index:
        return False, 0, 0.0
    return True, target[i], float(weight[target[i]])


@jit
def _kept_weight(target, weight, ignore_index):
    """The summed class weights of the rows not ignored: what 'mean' divides by."""
    total = 0.0
    for i in range(target.size):
        total += _target_weight(target, weight, ignore_index, i)[2]
    return total


@parallel_jit
def _index_forward(logits, target, weight, reduction, ignore_index, smoothing, out):
    """out: the loss, (M,) or (1,); logits (M, C), target (M,) int64, weight (C,)."""
    M, C = logits.shape
    nll = np.empty(M)  # (M,) -w_t * logp[t], 0 for ignored rows
    smooth = np.zeros(M)  # (M,) -sum_c w_c * logp[c], 0 for ignored rows
    for i in prange(M):
        kept, t, w_t = _target_weight(target, weight, ignore_index, i)
        logp = np.empty(C)  # (C,) float64
        _softmax_row(logits[i], logp, True)
        nll[i] = -w_t * logp[t] if kept else 0.0
        if kept and smoothing > 0:
            total = 0.0
            for c in range(C):
                total += logp[c] * weight[c]
            smooth[i] = -total
    _mix(nll, smooth, reduction, _kept_weight(target, weight, ignore_index), smoothing, C, out)


@parallel_jit
def _index_backward(dloss, logits, target, weight, reduction, ignore_index, smoothing, dlogits):
    """dlogits (M, C): w_t * (p - onehot) and, smoothed, p * sum(w) - w, scaled; 0 on ignored rows."""
    M, C = logits.shape
    total = _kept_weight(target, weight, ignore_index)
    weight_sum = 0.0
    for c in range(C):
        weight_sum += weight[c]
    for i in prange(M):
        kept, t, w_t = _target_weight(target, weight, ignore_index, i)
        if not kept:
            dlogits[i] = 0
            continue
        g = _gradient_scale(dloss, i, reduction, total)
        p = np.empty(C)  # (C,) float64
        _softmax_row(logits[i], p, False)
        for c in range(C):
            grad = (1 - smoothing) * g * (w_t * (p[c] - (1.0 if c == t else 0.0)))
            if smoothing > 0:
                grad += (smoothing / C) * g * (p[c] * weight_sum - weight[c])
            dlogits[i, c] = grad


# --------------------------------------------------------------------------------------------
# class-probability targets: loss_i = -sum_c q[i, c] * logp[i, c], q the smoothed, weighted target
# --------------------------------------------------------------------------------------------

@jit
def _q(target, weight, smoothing, i, c):
    """q[i, c] = (target * (1 - smoothing) + smoothing / C) * weight[c]."""
    C = target.shape[1]
    return (target[i, c] * (1 - smoothing) + smoothing / C) * weight[c]


@parallel_jit
def _probs_forward(logits, target, weight, reduction, smoothing, out):
    M, C = logits.shape
    loss = np.empty(M)  # (M,)
    for i in prange(M):
        logp = np.empty(C)  # (C,) float64
        _softmax_row(logits[i], logp, True)
        total = 0.0
        for c in range(C):
            total += logp[c] * _q(target, weight, smoothing, i, c)
        loss[i] = -total
    out[:] = _reduce(loss, reduction, M)  # 'mean' divides by the number of rows, whatever the weights


@parallel_jit
def _probs_backward(dloss, logits, target, weight, reduction, smoothing, dlogits):
    """dlogits = scale * (p * sum(q) - q)."""
    M, C = logits.shape
    for i in prange(M):
        g = _gradient_scale(dloss, i, reduction, M)
        p = np.empty(C)  # (C,) float64
        _softmax_row(logits[i], p, False)
        q_sum = 0.0
        for c in range(C):
            q_sum += _q(target, weight, smoothing, i, c)
        for c in range(C):
            dlogits[i, c] = g * (p[c] * q_sum - _q(target, weight, smoothing, i, c))


# --------------------------------------------------------------------------------------------
# mean squared error on flattened arrays
# --------------------------------------------------------------------------------------------

@parallel_jit
def _mse_forward(x, target, reduction, out):
    squares = np.empty(x.size)  # (K,) float64
    for k in prange(x.size):
        d = x[k] - target[k]
        squares[k] = d * d
    out[:] = _reduce(squares, reduction, x.size)


@parallel_jit
def _mse_backward(dloss, x, target, reduction, dx):
    """dx = 2 * (x - target) * g, g = dloss (per element for 'none'), / K for 'mean'."""
    for k in prange(x.size):
        dx[k] = 2 * (x[k] - target[k]) * _gradient_scale(dloss, k, reduction, x.size)


# --------------------------------------------------------------------------------------------
# the backend's functions
# --------------------------------------------------------------------------------------------

def _loss_buffer(rows, reduction, dtype):
    return empty((rows,) if reduction == "none" else (1,), dtype)  # (M,), or (1,) for a 0-d loss


def _result(out, reduction):
    return out if reduction == "none" else out.reshape(())


def _weight(weight, C, dtype):
    return contiguous(np.ones(C, dtype) if weight is None else weight)  # (C,)


def cross_entropy_index_forward(logits, target, weight, reduction, ignore_index, label_smoothing):
    M, C = logits.shape
    out = _loss_buffer(M, reduction, logits.dtype)
    run(_index_forward, contiguous(logits), contiguous(target), _weight(weight, C, logits.dtype),
        _REDUCTIONS[reduction], ignore_index, float(label_smoothing), out)
    return _result(out, reduction)


def cross_entropy_index_backward(dloss, logits, target, weight, reduction, ignore_index, label_smoothing):
    M, C = logits.shape
    dlogits = empty((M, C), logits.dtype)  # (M, C)
    run(_index_backward, contiguous(dloss).reshape(-1), contiguous(logits), contiguous(target),
        _weight(weight, C, logits.dtype), _REDUCTIONS[reduction], ignore_index, float(label_smoothing), dlogits)
    return dlogits


def cross_entropy_probs_forward(logits, target, weight, reduction, label_smoothing):
    M, C = logits.shape
    out = _loss_buffer(M, reduction, logits.dtype)
    run(_probs_forward, contiguous(logits), contiguous(target), _weight(weight, C, logits.dtype),
        _REDUCTIONS[reduction], float(label_smoothing), out)
    return _result(out, reduction)


def cross_entropy_probs_backward(dloss, logits, target, weight, reduction, label_smoothing):
    M, C = logits.shape
    dlogits = empty((M, C), logits.dtype)  # (M, C)
    run(_probs_backward, contiguous(dloss).reshape(-1), contiguous(logits), contiguous(target),
        _weight(weight, C, logits.dtype), _REDUCTIONS[reduction], float(label_smoothing), dlogits)
    return dlogits


def mse_loss_forward(x, target, reduction):
    out = _loss_buffer(x.shape[0], reduction, x.dtype)
    run(_mse_forward, contiguous(x), contiguous(target), _REDUCTIONS[reduction], out)
    return _result(out, reduction)


def mse_loss_backward(dloss, x, target, reduction):
    dx = empty(x.shape, x.dtype)  # (K,)
    run(_mse_backward, contiguous(dloss).reshape(-1), contiguous(x), contiguous(target), _REDUCTIONS[reduction], dx)
    return dx
