"""C++ losses (csrc/loss.cpp): cross-entropy on (M, C) rows, one pass per row; MSE elementwise.
Sums over rows are taken in row order by one thread, so a loss does not depend on the thread count."""

from ... import _cpp
from ._util import contiguous, empty, nthreads


def _loss_buffer(rows, reduction, dtype):
    return empty((rows,) if reduction == "none" else (), dtype)  # (M,) or 0-d


def cross_entropy_index_forward(logits, target, weight, reduction, ignore_index, label_smoothing):
    loss = _loss_buffer(logits.shape[0], reduction, logits.dtype)
    _cpp.cross_entropy_index_forward(contiguous(logits), contiguous(target), contiguous(weight), reduction,
                                     ignore_index, label_smoothing, loss, nthreads())
    return loss


def cross_entropy_index_backward(dloss, logits, target, weight, reduction, ignore_index, label_smoothing):
    dlogits = empty(logits.shape, logits.dtype)  # (M, C)
    _cpp.cross_entropy_index_backward(contiguous(dloss), contiguous(logits), contiguous(target), contiguous(weight),
                                      reduction, ignore_index, label_smoothing, dlogits, nthreads())
    return dlogits


def cross_entropy_probs_forward(logits, target, weight, reduction, label_smoothing):
    loss = _loss_buffer(logits.shape[0], reduction, logits.dtype)
    _cpp.cross_entropy_probs_forward(contiguous(logits), contiguous(target), contiguous(weight), reduction,
                                     label_smoothing, loss, nthreads())
    return loss


def cross_entropy_probs_backward(dloss, logits, target, weight, reduction, label_smoothing):
    dlogits = empty(logits.shape, logits.dtype)  # (M, C)
    _cpp.cross_entropy_probs_backward(contiguous(dloss), contiguous(logits), contiguous(target), contiguous(weight),
                                      reduction, label_smoothing, dlogits, nthreads())
    return dlogits


def mse_loss_forward(x, target, reduction):
    loss = _loss_buffer(x.shape[0], reduction, x.dtype)
    _cpp.mse_loss_forward(contiguous(x), contiguous(target), reduction, loss, nthreads())
    return loss


def mse_loss_backward(dloss, x, target, reduction):
    dx = empty(x.shape, x.dtype)  # (K,)
    _cpp.mse_loss_backward(contiguous(dloss), contiguous(x), contiguous(target), reduction, dx, nthreads())
    return dx
