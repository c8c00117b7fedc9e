"""GPU losses (cuda/loss.cu): cross-entropy on (M, C) rows with a block per row; MSE elementwise.
Sums over the batch never use atomics: per-row losses (MSE: per-block partial sums) go to a
buffer that one block sums in double, in a fixed order, so a loss is bit-identical run to run."""

import math

import numpy as np

from ._device import Module, ctype, device_of, grid_blocks, instances, threads_per_block

_TYPES = ("float", "double")
KERNELS = Module("loss", tuple(
    [name for kernel in ("ce_index_rows", "ce_index_totals", "ce_index_grad", "ce_probs_rows", "ce_probs_grad",
                         "mse_squares", "mse_partials", "mse_grad") for name in instances(kernel, _TYPES)]
    # the batch sum of per-row losses (T) or of MSE's per-block partial sums (double)
    + ["reduce_loss<float, float>", "reduce_loss<double, double>", "reduce_loss<float, double>"]))

_REDUCTIONS = {"none": 0, "sum": 1, "mean": 2}  # the kernels' Reduction enum
_INT64 = (-2 ** 63, 2 ** 63)


def _row_threads(C):
    """A block per row: a warp per 32 classes, up to 256 threads."""
    return threads_per_block(256 if C >= 256 else 32 * math.ceil(C / 32))


def _ignored(ignore_index):
    """ignore_index as the kernels' int64. One outside int64's range matches no target, and
    neither does -1 then: every target was checked to lie in [0, C)."""
    return np.int64(ignore_index if _INT64[0] <= ignore_index < _INT64[1] else -1)


def _smoothing_scalars(dtype, label_smoothing, C):
    """keep = 1 - eps and spread = eps / C, computed in double and rounded to the dtype once."""
    return dtype.type(1 - label_smoothing), dtype.type(label_smoothing / C)


def _loss_buffer(dev, rows, reduction, dtype):
    return dev.empty((rows,) if reduction == "none" else (), dtype)  # (M,) or 0-d


def _reduce(dev, loss, rows, count, mean, keep, spread, a, b=None, w=None):
    """loss[0] from the per-row (or per-block) values a [and b, w]: one block, reduce_loss."""
    KERNELS.launch(dev, f"reduce_loss<{ctype(loss.dtype)}, {ctype(a.dtype)}>", 1, threads_per_block(256),
                   (a, b, w, np.int64(rows), np.int64(count), np.int32(mean), keep, spread, loss))


def cross_entropy_index_forward(logits, target, weight, reduction, ignore_index, label_smoothing):
    dev = device_of(logits)
    M, C = logits.shape
    smoothing = label_smoothing > 0  # at 0 the term is skipped: 0 * inf would be NaN
    keep, spread = _smoothing_scalars(logits.dtype, label_smoothing, C)
    with dev.activate():
        logits, target, weight = dev.contiguous(logits), dev.contiguous(target), dev.contiguous(weight)
        loss = _loss_buffer(dev, M, reduction, logits.dtype)
        reduced, mean = reduction != "none", reduction == "mean"
        rows = dev.empty((M,), logits.dtype) if reduced else loss  # (M,) per-row losses
        smooth = dev.empty((M,), logits.dtype) if reduced and smoothing else None  # (M,) smoothing terms
        kept = dev.empty((M,), logits.dtype) if mean else None  # (M,) weights of the kept targets
        threads = _row_threads(C)
        KERNELS.launch(dev, f"ce_index_rows<{ctype(logits.dtype)}>", grid_blocks(dev, M * threads, threads), threads,
                       (logits, target, weight, np.int64(M), np.int32(C), _ignored(ignore_index), np.int32(smoothing),
                        keep, spread, rows, smooth, kept))
        if reduced:
            _reduce(dev, loss, M, M, mean, keep, spread, rows, smooth, kept)
    return loss


def cross_entropy_index_backward(dloss, logits, target, weight, reduction, ignore_index, label_smoothing):
    dev = device_of(logits)
    M, C = logits.shape
    smoothing = label_smoothing > 0
    keep, spread = _smoothing_scalars(logits.dtype, label_smoothing, C)
    t = ctype(logits.dtype)
    with dev.activate():
        dloss, logits = dev.contiguous(dloss), dev.contiguous(logits)
        target, weight = dev.contiguous(target), dev.contiguous(weight)
        dlogits = dev.empty((M, C), logits.dtype)  # (M, C)
        totals = None
        if reduction == "mean" or smoothing:
            totals = dev.empty((2,), logits.dtype)  # (2,): the kept targets' weight, the classes' weight
            KERNELS.launch(dev, f"ce_index_totals<{t}>", 1, threads_per_block(256),
                           (target, weight, np.int64(M), np.int32(C), _ignored(ignore_index), totals))
        threads = _row_threads(C)
        KERNELS.launch(dev, f"ce_index_grad<{t}>", grid_blocks(dev, M * threads, threads), threads,
                       (dloss, logits, target, weight, totals, np.int64(M), np.int32(C), _ignored(ignore_index),
                        np.int32(_REDUCTIONS[reduction]), np.int32(smoothing), keep, spread, dlogits))
    return dlogits


def cross_entropy_probs_forward(logits, target, weight, reduction, label_smoothing):
    dev = device_of(logits)
    M, C = logits.shape
    keep, spread = _smoothing_scalars(logits.dtype, label_smoothing, C)
    with dev.activate():
        logits, target, weight = dev.contiguous(logits), dev.contiguous(target), dev.contiguous(weight)
        loss = _loss_buffer(dev, M, reduction, logits.dtype)
        rows = loss if reduction == "none" else dev.empty((M,), logits.dtype)  # (M,) per-row losses
        threads = _row_threads(C)
        KERNELS.launch(dev, f"ce_probs_rows<{ctype(logits.dtype)}>", grid_blocks(dev, M * threads, threads), threads,
                       (logits, target, weight, np.int64(M), np.int32(C), keep, spread, rows))
        if reduction != "none":  # 'mean' divides by the number of rows, whatever the weights
            _reduce(dev, loss, M, M, reduction == "mean", keep, spread, rows)
    return loss


def cross_entropy_probs_backward(dloss, logits, target, weight, reduction, label_smoothing):
    dev = device_of(logits)
    M, C = logits.shape
    keep, spread = _smoothing_scalars(logits.dtype, label_smoothing, C)
    with dev.activate():
        dloss, logits = dev.contiguous(dloss), dev.contiguous(logits)
        target, weight = dev.contiguous(target), dev.contiguous(weight)
        dlogits = dev.empty((M, C), logits.dtype)  # (M, C)
        threads = _row_threads(C)
        KERNELS.launch(dev, f"ce_probs_grad<{ctype(logits.dtype)}>", grid_blocks(dev, M * threads, threads), threads,
                       (dloss, logits, target, weight, np.int64(M), np.int32(C), np.int32(_REDUCTIONS[reduction]),
                        keep, spread, dlogits))
    return dlogits


def mse_loss_forward(x, target, reduction):
    dev = device_of(x)
    K = x.size
    t = ctype(x.dtype)
    with dev.activate():
        x, target = dev.contiguous(x), dev.contiguous(target)
        loss = _loss_buffer(dev, K, reduction, x.dtype)
        threads = threads_per_block(256)
        blocks = grid_blocks(dev, K, threads, per_thread=8)
        if reduction == "none":
            KERNELS.launch(dev, f"mse_squares<{t}>", blocks, threads, (x, target, loss, np.int64(K)))
        else:
            partial = dev.empty((blocks,), np.float64)  # (blocks,) one sum per block
            KERNELS.launch(dev, f"mse_partials<{t}>", blocks, threads, (x, target, partial, np.int64(K)))
            _reduce(dev, loss, blocks, K, reduction == "mean", x.dtype.type(1), x.dtype.type(0), partial)
    return loss


def mse_loss_backward(dloss, x, target, reduction):
    dev = device_of(x)
    with dev.activate():
        dloss, x, target = dev.contiguous(dloss), dev.contiguous(x), dev.contiguous(target)
        dx = dev.empty(x.shape, x.dtype)  # (K,)
        threads = threads_per_block(256)
        KERNELS.launch(dev, f"mse_grad<{ctype(x.dtype)}>", grid_blocks(dev, x.size, threads, per_thread=4), threads,
                       (dloss, x, target, dx, np.int64(x.size), np.int32(_REDUCTIONS[reduction])))
    return dx
