"""Reference losses: cross-entropy (class-index and class-probability targets) and MSE.

Cross-entropy kernels see logits as (M, C) rows, the class axis last: the public op has already
moved torch's class axis 1 to the end and flattened the rest. An index target is (M,) int64, a
probability target (M, C) of the logits' dtype; weight is (C,) or None. Each kernel applies the
reduction itself ('none' -> (M,) per row, 'sum'/'mean' -> a 0-d array) and each backward takes
dloss of that shape. MSE kernels see x and target flattened to (K,).

The structure follows PyTorch's ``cross_entropy_loss_label_smoothing`` (``LossNLL.cpp``) term by
term, because its edge cases depend on it: the smoothing term is skipped entirely at
label_smoothing = 0 (a -inf logit would otherwise give 0 * inf = NaN), and the two terms are
reduced separately before being mixed, so a mean over zero total weight is NaN, not inf.
"""

import numpy as np

from .activation import log_softmax_forward, softmax_forward

#: NaN results that PyTorch gives too come without NumPy's warning: a mean over nothing (every
#: target ignored, or class weights summing to 0) is 0/0; a probability of 0 for a class whose
#: logit is -inf gives 0 * inf; MSE of inf against inf is inf - inf. The gradient rows scaled by
#: 1/0 of ignored targets are discarded. Overflow warnings stay on.
_nan_as_in_pytorch = np.errstate(invalid="ignore", divide="ignore")


def _reduce(loss, reduction, total):
    """Per-row (or per-element) losses -> the loss for ``reduction``; 'mean' divides by ``total``."""
    if reduction == "none":
        return loss
    summed = loss.sum()
    return summed / total if reduction == "mean" else summed  # a NumPy scalar; kernels return it as 0-d


def _scale(dloss, reduction, total):
    """d(reduced loss) / d(loss of row i), shaped to broadcast against (M, C) row gradients."""
    if reduction == "none":
        return dloss[:, None]  # (M, 1)
    return dloss / total if reduction == "mean" else dloss  # 0-d


def _index_targets(target, weight, C, ignore_index, dtype):
    """The class weights w (C,); per row: kept (M,), its class t (M,; 0 for ignored rows, so that
    it can index) and the weight w_t (M,) of its class (0 for ignored rows)."""
    w = np.ones(C, dtype) if weight is None else weight  # (C,)
    kept = target != ignore_index  # (M,)
    t = np.where(kept, target, 0)  # (M,)
    w_t = np.where(kept, w[t], 0)  # (M,)
    return w, kept, t, w_t


@_nan_as_in_pytorch
def cross_entropy_index_forward(logits, target, weight, reduction, ignore_index, label_smoothing):
    M, C = logits.shape
    w, kept, t, w_t = _index_targets(target, weight, C, ignore_index, logits.dtype)
    logp = log_softmax_forward(logits, 1)  # (M, C)
    # where, not a product with kept: an ignored row's logp may be -inf, and 0 * inf is NaN
    nll = np.where(kept, -w_t * logp[np.arange(M), t], 0)  # (M,)
    total = w_t.sum()  # what 'mean' divides by: the summed weights of the kept targets
    loss = _reduce(nll, reduction, total)
    if label_smoothing > 0:
        smooth = np.where(kept, -(logp * w).sum(axis=1), 0)  # (M,) sum_c w_c * -logp[i, c]
        loss = (1 - label_smoothing) * loss + (label_smoothing / C) * _reduce(smooth, reduction, total)
    return np.asarray(loss)  # (M,) or 0-d


@_nan_as_in_pytorch
def cross_entropy_index_backward(dloss, logits, target, weight, reduction, ignore_index, label_smoothing):
    M, C = logits.shape
    w, kept, t, w_t = _index_targets(target, weight, C, ignore_index, logits.dtype)
    p = softmax_forward(logits, 1)  # (M, C)
    g = _scale(dloss, reduction, w_t.sum())
    onehot = np.zeros_like(p)  # (M, C)
    onehot[np.arange(M), t] = 1
    # d/dlogits of -w_t * logp[t] is w_t * (p - onehot); of -sum_c w_c logp[c] it is p * sum(w) - w
    dlogits = (1 - label_smoothing) * g * (w_t[:, None] * (p - onehot))  # (M, C)
    if label_smoothing > 0:
        dlogits += (label_smoothing / C) * g * (p * w.sum() - w)
    return np.where(kept[:, None], dlogits, 0)  # (M, C)


def _probability_weights(target, weight, label_smoothing, C):
    """q (M, C) with loss_i = -sum_c q[i, c] * logp[i, c]: the smoothed target times the weights."""
    q = target * (1 - label_smoothing) + label_smoothing / C  # (M, C)
    return q if weight is None else q * weight


@_nan_as_in_pytorch
def cross_entropy_probs_forward(logits, target, weight, reduction, label_smoothing):
    M, C = logits.shape
    logp = log_softmax_forward(logits, 1)  # (M, C)
    loss = -(logp * _probability_weights(target, weight, label_smoothing, C)).sum(axis=1)  # (M,)
    return np.asarray(_reduce(loss, reduction, M))  # 'mean' divides by the number of rows, whatever the weights


def cross_entropy_probs_backward(dloss, logits, target, weight, reduction, label_smoothing):
    M, C = logits.shape
    q = _probability_weights(target, weight, label_smoothing, C)  # (M, C)
    p = softmax_forward(logits, 1)  # (M, C)
    # d/dlogits of -sum_c q_c logp_c is p * sum(q) - q
    return _scale(dloss, reduction, M) * (p * q.sum(axis=1, keepdims=True) - q)  # (M, C)


@_nan_as_in_pytorch
def mse_loss_forward(x, target, reduction):
    d = x - target  # (K,)
    return np.asarray(_reduce(d * d, reduction, x.size))  # (K,) or 0-d


@_nan_as_in_pytorch
def mse_loss_backward(dloss, x, target, reduction):
    g = dloss / x.size if reduction == "mean" else dloss  # (K,) for 'none', else 0-d
    return 2 * (x - target) * g  # (K,)
