"""Public losses: cross_entropy and mse_loss, each with its backward, as ``torch.nn.functional``'s.

Every op validates here, once, and dispatches to the backend's ``loss`` module:

- ``cross_entropy_index_forward(logits, target, weight, reduction, ignore_index, label_smoothing)``
  and ``cross_entropy_index_backward(dloss, logits, target, weight, reduction, ignore_index,
  label_smoothing)`` for class-index targets;
- ``cross_entropy_probs_forward(logits, target, weight, reduction, label_smoothing)`` and
  ``cross_entropy_probs_backward(dloss, logits, target, weight, reduction, label_smoothing)`` for
  class-probability targets;
- ``mse_loss_forward(x, target, reduction)`` and ``mse_loss_backward(dloss, x, target, reduction)``.

Cross-entropy kernels see logits as (M, C) rows with the class axis last (this module moves
torch's class axis 1 to the end and flattens the rest, once), an index target as (M,) int64, a
probability target as (M, C), weight as (C,) or None. MSE kernels see x and target flattened.
Forward kernels return (M,) (or (K,)) per-row losses for 'none' and a 0-d array for 'sum' and
'mean'; backward kernels take dloss of that shape. Empty batches never reach a kernel.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from .._checks import (array_module, check_array, check_choice, check_float, check_same_kind,
                       check_shape, is_cupy, zeros)
from .._dispatch import lookup
from .._params import as_int

_REDUCTIONS = ("mean", "sum", "none")


def _empty_loss(like, reduction, shape):
    """The loss of an empty batch, as PyTorch: no losses, a sum of 0, a mean of NaN (0/0)."""
    if reduction == "none":
        return zeros(like, shape)
    return array_module(like).full((), np.nan if reduction == "mean" else 0.0, dtype=like.dtype)


def _check_dloss(op, dloss, reduction, loss_shape, **like):
    """dloss has the loss's shape (0-d unless reduction='none') and the kind of ``like``."""
    check_array(op, "dloss", dloss)
    check_same_kind(op, dloss=dloss, **like)
    check_shape(op, "dloss", dloss, loss_shape if reduction == "none" else ())


# --------------------------------------------------------------------------------------------
# cross-entropy
# --------------------------------------------------------------------------------------------

class _Rows(NamedTuple):
    """A validated cross-entropy problem, laid out for the kernels."""

    kind: str  # "index" or "probs": which pair of kernels runs it
    logits: Any  # (M, C), the class axis last
    target: Any  # (M,) int64 class indices, or (M, C) probabilities
    params: tuple  # the kernels' scalars after reduction: (ignore_index, label_smoothing) or (label_smoothing,)
    loss_shape: tuple  # the shape of the unreduced loss: logits' without the class axis


def _rows(a):
    """(N, C, d1, ...) -> (N*d1*..., C) and (C,) -> (1, C): the class axis last, the rest flattened."""
    if a.ndim == 1:
        return a.reshape(1, -1)
    return a.transpose(0, *range(2, a.ndim), 1).reshape(-1, a.shape[1])


def _unrows(g, shape):
    """The inverse of :func:`_rows`: (M, C) -> ``shape``, as a C-contiguous array."""
    if len(shape) == 1:
        return g.reshape(shape)
    moved = g.reshape(shape[:1] + shape[2:] + shape[1:2])  # (N, d1, ..., C)
    order = (0, len(shape) - 1, *range(1, len(shape) - 1))
    return array_module(g).ascontiguousarray(moved.transpose(order))  # (N, C, d1, ...)


def _index_target(op, target, C, ignore_index):
    """Class indices as (M,) int64, each in [0, C) or equal to ignore_index: kernels index with them."""
    t = target.reshape(-1).astype(np.int64, copy=False)  # (M,)
    bad = (t != ignore_index) & ((t < 0) | (t >= C))
    if bad.any():
        raise ValueError(f"{op}: target value {int(t[bad][0])} is out of range for {C} classes "
                         f"(expected 0 <= target < {C}, or ignore_index={ignore_index})")
    return t


def _check_cross_entropy(op, logits, target, weight, reduction, ignore_index, label_smoothing) -> _Rows:
    check_array(op, "logits", logits, min_ndim=1)
    check_array(op, "target", target, float_only=False)
    if weight is not None:
        check_array(op, "weight", weight, dims="(C,)")
    check_same_kind(op, logits=logits, weight=weight)
    check_choice(op, "reduction", reduction, _REDUCTIONS)
    ignore_index = as_int(op, "ignore_index", ignore_index)
    label_smoothing = check_float(op, "label_smoothing", label_smoothing, low=0.0, high=1.0)
    C = logits.shape[0] if logits.ndim == 1 else logits.shape[1]
    if C == 0:
        raise ValueError(f"{op}: expected logits with at least one class, got shape {tuple(logits.shape)}")
    check_shape(op, "weight", weight, (C,))
    loss_shape = tuple(logits.shape[:1] + logits.shape[2:]) if logits.ndim > 1 else ()
    if target.dtype.kind in "iu":
        if is_cupy(target) != is_cupy(logits):
            raise TypeError(f"{op}: expected target on the device of logits")
        check_shape(op, "target", target, loss_shape)
        return _Rows("index", _rows(logits), _index_target(op, target, C, ignore_index),
                     (ignore_index, label_smoothing), loss_shape)
    if target.dtype.kind != "f":
        raise TypeError(f"{op}: expected target of an integer dtype (class indices) or of the logits' "
                        f"float dtype (class probabilities), got {target.dtype}")
    check_array(op, "target", target)  # a float16 target is a TypeError here
    check_same_kind(op, logits=logits, target=target)
    check_shape(op, "target", target, logits.shape)
    return _Rows("probs", _rows(logits), _rows(target), (label_smoothing,), loss_shape)


def cross_entropy(logits, target, weight=None, reduction="mean", ignore_index=-100, label_smoothing=0.0, *,
                  backend="auto"):
    """Cross-entropy of softmax(logits) against ``target``, as ``torch.nn.functional.cross_entropy``.

    ``logits`` is (N, C), (N, C, d1, ...) (classes on axis 1) or (C,). ``target`` is either class
    indices (an array of any integer dtype, of logits' shape without the class axis; entries
    equal to ``ignore_index`` contribute nothing, any other value outside [0, C) is a ValueError)
    or class probabilities (a float array of logits' shape and dtype; rows need not sum to 1).
    ``weight`` (C,) rescales each class. With ``label_smoothing`` = eps the target becomes
    (1 - eps) * target + eps / C. ``reduction``: 'none' gives a loss per sample (logits' shape
    without the class axis), 'sum' their sum, 'mean' their mean, which for class indices is the
    weighted mean (divided by the summed weights of the non-ignored targets) and for
    probabilities divides by the number of samples. A mean over nothing is NaN, as in PyTorch.
    """
    op = "cross_entropy"
    r = _check_cross_entropy(op, logits, target, weight, reduction, ignore_index, label_smoothing)
    if r.logits.shape[0] == 0:
        return _empty_loss(logits, reduction, r.loss_shape)
    kernel = lookup(op, "loss", f"cross_entropy_{r.kind}_forward", backend, logits, target, weight)
    loss = kernel(r.logits, r.target, weight, reduction, *r.params)
    return loss.reshape(r.loss_shape) if reduction == "none" else loss


def cross_entropy_backward(dloss, logits, target, weight=None, reduction="mean", ignore_index=-100,
                           label_smoothing=0.0, *, backend="auto"):
    """dlogits of :func:`cross_entropy` given dloss (the loss's shape: 0-d unless reduction='none')."""
    op = "cross_entropy_backward"
    r = _check_cross_entropy(op, logits, target, weight, reduction, ignore_index, label_smoothing)
    _check_dloss(op, dloss, reduction, r.loss_shape, logits=logits)
    if r.logits.shape[0] == 0:
        return zeros(logits, logits.shape)
    dl = dloss.reshape(-1) if reduction == "none" else dloss  # (M,) or 0-d
    kernel = lookup(op, "loss", f"cross_entropy_{r.kind}_backward", backend, dloss, logits, target, weight)
    return _unrows(kernel(dl, r.logits, r.target, weight, reduction, *r.params), logits.shape)


# --------------------------------------------------------------------------------------------
# mean squared error
# --------------------------------------------------------------------------------------------

def _check_mse(op, x, target, reduction):
    check_array(op, "x", x)
    check_array(op, "target", target)
    check_same_kind(op, x=x, target=target)
    check_shape(op, "target", target, x.shape)
    check_choice(op, "reduction", reduction, _REDUCTIONS)


def mse_loss(x, target, reduction="mean", *, backend="auto"):
    """(x - target)^2 elementwise ('none'), summed ('sum') or averaged ('mean'; NaN when empty).

    Unlike PyTorch, target must have x's shape exactly (PyTorch broadcasts, with a warning).
    """
    op = "mse_loss"
    _check_mse(op, x, target, reduction)
    if x.size == 0:
        return _empty_loss(x, reduction, x.shape)
    loss = lookup(op, "loss", "mse_loss_forward", backend, x, target)(x.reshape(-1), target.reshape(-1), reduction)
    return loss.reshape(x.shape) if reduction == "none" else loss


def mse_loss_backward(dloss, x, target, reduction="mean", *, backend="auto"):
    """dx of :func:`mse_loss` given dloss (x's shape for reduction='none', else 0-d)."""
    op = "mse_loss_backward"
    _check_mse(op, x, target, reduction)
    _check_dloss(op, dloss, reduction, x.shape, x=x)
    if x.size == 0:
        return zeros(x, x.shape)
    dl = dloss.reshape(-1) if reduction == "none" else dloss
    kernel = lookup(op, "loss", "mse_loss_backward", backend, dloss, x, target)
    return kernel(dl, x.reshape(-1), target.reshape(-1), reduction).reshape(x.shape)


__all__ = ["cross_entropy", "cross_entropy_backward", "mse_loss", "mse_loss_backward"]
