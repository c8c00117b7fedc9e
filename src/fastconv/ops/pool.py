"""Public pooling ops: max_pool2d, avg_pool2d, adaptive_avg_pool2d, each with its backward.

Every op validates here, once per call signature (its plan, see
:func:`fastconv._dispatch.planned`), builds a :class:`~fastconv._params.PoolParams` (or
:class:`~fastconv._params.AdaptivePoolParams`), and dispatches to the backend's ``pool`` module:
``max_pool2d_forward(x, p, with_indices=True) -> (y, indices)`` (indices None when not asked
for: a backend may then skip them), ``max_pool2d_backward(dy, indices, p)``,
``avg_pool2d_forward(x, p)``, ``avg_pool2d_backward(dy, p)``, ``adaptive_avg_pool2d_forward(x, p)``,
``adaptive_avg_pool2d_backward(dy, p)``. Semantics are ``torch.nn.functional``'s, unbatched
inputs (C, H, W) included: they run as a batch of one (a view) and the results lose the axis again.
"""

from __future__ import annotations

import numbers
from typing import Any, NamedTuple

import numpy as np

from .._checks import (
    check_batched,
    check_same_kind,
    check_shape,
    is_cupy,
    unbatch,
    zeros,
)
from .._dispatch import lookup, planned
from .._params import PoolParams, adaptive_pool_params, pool_params

_X = "(N, C, H, W)"
_Y = "(N, C, OH, OW)"


class MaxPool2dResult(NamedTuple):
    """``max_pool2d(..., return_indices=True)``: y and, per output, the flat index into its (n, c)
    H*W plane of the chosen input pixel (int64, as PyTorch's). Pass ``indices=`` to the backward."""

    y: Any
    indices: Any


def _check_x(op, x):
    """``(x4, unbatched)``: x (N, C, H, W), or (C, H, W) given a batch axis (a view)."""
    return check_batched(op, "x", x, _X)


def _check_dy(op, dy, x, shape, unbatched):
    """dy of y's ``shape``, unbatched exactly when x was; returned with its batch axis."""
    dy4, _ = check_batched(op, "dy", dy, _Y, unbatched=unbatched)
    check_same_kind(op, dy=dy, x=x)
    check_shape(op, "dy", dy, shape[1:] if unbatched else shape)
    return dy4


# --------------------------------------------------------------------------------------------
# max pooling
# --------------------------------------------------------------------------------------------

def _max_params(op, x, kernel_size, stride, padding, dilation, ceil_mode):
    """``(x4, unbatched, p)``."""
    x, unbatched = _check_x(op, x)
    return x, unbatched, pool_params(op, x.shape, kernel_size, stride, padding, dilation, ceil_mode)


def _check_indices(op, indices, x, p: PoolParams, unbatched):
    """User-given indices: int64, on x's device, of y's shape (unbatched exactly when x was).
    Their values must lie in the plane, [0, H*W): every backend's backward checks each one as it
    scatters through it and raises ``_checks.indices_out_of_range`` (a pass here cost a fifth of
    the op). Returned with their batch axis."""
    indices4, _ = check_batched(op, "indices", indices, _Y, unbatched=unbatched, float_only=False)
    if indices.dtype != np.int64:
        raise TypeError(f"{op}: expected indices of dtype int64, got {indices.dtype}")
    if is_cupy(indices) != is_cupy(x):
        raise TypeError(f"{op}: expected indices on the device of x")
    check_shape(op, "indices", indices, p.y_shape[1:] if unbatched else p.y_shape)
    return indices4


def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False, *, backend="auto"):
    """2-d max pooling, as ``torch.nn.functional.max_pool2d``: x (N, C, H, W) -> y (N, C, OH, OW),
    or unbatched (C, H, W) -> (C, OH, OW).

    ``stride`` defaults to ``kernel_size``; ``padding`` is at most half the kernel and never wins;
    with ``ceil_mode`` the last window may hang over the bottom/right but never starts in the
    right padding. Ties keep the first position in row-major window order; a NaN always wins (the
    last NaN's position is kept). With ``return_indices`` the result is ``MaxPool2dResult(y, indices)``.
    ``return_indices`` is a flag: a bool, or an int read as one (``torch.nn.functional`` branches
    on its truth in Python, so ``1`` works there too).
    """
    return _max_pool2d_plan(x, kernel_size, stride, padding, dilation, ceil_mode, return_indices, backend)(x)


@planned
def _max_pool2d_plan(x, kernel_size, stride, padding, dilation, ceil_mode, return_indices, backend):
    """max_pool2d validated and dispatched: the run for x of this shape and dtype."""
    op = "max_pool2d"
    x4, unbatched, p = _max_params(op, x, kernel_size, stride, padding, dilation, ceil_mode)
    if not isinstance(return_indices, (bool, np.bool_, numbers.Integral)):
        raise TypeError(f"{op}: expected return_indices to be a bool, got {return_indices!r}")
    return_indices = bool(return_indices)
    empty = x4.size == 0  # an empty batch: empty results, no kernel call
    forward = None if empty else lookup(op, "pool", "max_pool2d_forward", backend, x4)
    if not (empty or unbatched or return_indices):  # the common call, y alone: the kernel's run itself
        return lambda x: forward(x, p, with_indices=False)[0]

    def run(x):
        x = x[None] if unbatched else x
        if empty:
            y, indices = zeros(x, p.y_shape), zeros(x, p.y_shape, dtype=np.int64)
        else:
            y, indices = forward(x, p, with_indices=return_indices)
        y, indices = unbatch(y, unbatched), unbatch(indices, unbatched)
        return MaxPool2dResult(y, indices) if return_indices else y

    return run


def max_pool2d_backward(dy, x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, *,
                        indices=None, backend="auto"):
    """dx of :func:`max_pool2d` given dy (N, C, OH, OW): each dy goes to its window's maximum.

    ``indices`` from ``max_pool2d(..., return_indices=True)`` skip recomputing them from x; they
    are checked to be int64, of y's shape and inside the H*W plane.
    """
    return _max_pool2d_backward_plan(dy, x, kernel_size, stride, padding, dilation, ceil_mode, indices,
                                     backend)(dy, x, indices)


@planned
def _max_pool2d_backward_plan(dy, x, kernel_size, stride, padding, dilation, ceil_mode, indices, backend):
    op = "max_pool2d_backward"
    x4, unbatched, p = _max_params(op, x, kernel_size, stride, padding, dilation, ceil_mode)
    dy4 = _check_dy(op, dy, x4, p.y_shape, unbatched)
    if indices is not None:
        indices = _check_indices(op, indices, x4, p, unbatched)
    if x4.size == 0:
        return lambda dy, x, indices: zeros(x, p.x_shape)
    forward = lookup(op, "pool", "max_pool2d_forward", backend, x4) if indices is None else None
    backward = lookup(op, "pool", "max_pool2d_backward", backend, dy4)  # int64 indices: dy decides

    def run(dy, x, indices):
        if unbatched:
            dy, x, indices = dy[None], x[None], None if indices is None else indices[None]
        if indices is None:
            _, indices = forward(x, p)
        return unbatch(backward(dy, indices, p), unbatched)

    return run


# --------------------------------------------------------------------------------------------
# average pooling
# --------------------------------------------------------------------------------------------

def _avg_params(op, x, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override):
    """``(x4, unbatched, p)``."""
    x, unbatched = _check_x(op, x)
    return x, unbatched, pool_params(op, x.shape, kernel_size, stride, padding, 1, ceil_mode,
                                     count_include_pad, divisor_override)


def avg_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None, *, backend="auto"):
    """2-d average pooling, as ``torch.nn.functional.avg_pool2d``: x (N, C, H, W) -> y (N, C, OH, OW),
    or unbatched (C, H, W) -> (C, OH, OW).

    Each window's sum is divided by ``divisor_override`` if given, else by the window size cut at
    the end of the padding (``count_include_pad=True``) or by its count of image pixels.
    """
    return _avg_pool2d_plan(x, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override,
                            backend)(x)


@planned
def _avg_pool2d_plan(x, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override, backend):
    op = "avg_pool2d"
    x4, unbatched, p = _avg_params(op, x, kernel_size, stride, padding, ceil_mode, count_include_pad,
                                   divisor_override)
    if x4.size == 0:
        return lambda x: zeros(x, p.y_shape)  # y of a batched x: an empty batch stays batched
    forward = lookup(op, "pool", "avg_pool2d_forward", backend, x4)
    if unbatched:
        return lambda x: forward(x[None], p)[0]
    return lambda x: forward(x, p)


def avg_pool2d_backward(dy, x, kernel_size, stride=None, padding=0, ceil_mode=False,
                        count_include_pad=True, divisor_override=None, *, backend="auto"):
    """dx of :func:`avg_pool2d` given dy (N, C, OH, OW); x gives only the shape and dtype."""
    return _avg_pool2d_backward_plan(dy, x, kernel_size, stride, padding, ceil_mode, count_include_pad,
                                     divisor_override, backend)(dy)


@planned
def _avg_pool2d_backward_plan(dy, x, kernel_size, stride, padding, ceil_mode, count_include_pad,
                              divisor_override, backend):
    op = "avg_pool2d_backward"
    x4, unbatched, p = _avg_params(op, x, kernel_size, stride, padding, ceil_mode, count_include_pad,
                                   divisor_override)
    dy4 = _check_dy(op, dy, x4, p.y_shape, unbatched)
    if x4.size == 0:
        return lambda dy: zeros(dy, p.x_shape)
    backward = lookup(op, "pool", "avg_pool2d_backward", backend, dy4)
    if unbatched:
        return lambda dy: backward(dy[None], p)[0]
    return lambda dy: backward(dy, p)


# --------------------------------------------------------------------------------------------
# adaptive average pooling
# --------------------------------------------------------------------------------------------

def _adaptive_params(op, x, output_size):
    """``(x4, unbatched, p)``."""
    x, unbatched = _check_x(op, x)
    return x, unbatched, adaptive_pool_params(op, x.shape, output_size)


def adaptive_avg_pool2d(x, output_size, *, backend="auto"):
    """Adaptive average pooling, as ``torch.nn.functional.adaptive_avg_pool2d``.

    x (N, C, H, W) -> y (N, C, OH, OW), or unbatched (C, H, W) -> (C, OH, OW). ``output_size``:
    an int, or a pair whose None entries keep that input size; ``1`` is global average pooling; 0
    gives an empty result (as in PyTorch). Output row i averages input rows
    ``[floor(i*H/OH), ceil((i+1)*H/OH))``.
    """
    op = "adaptive_avg_pool2d"
    x, unbatched, p = _adaptive_params(op, x, output_size)
    if x.size == 0 or p.OH * p.OW == 0:
        return unbatch(zeros(x, p.y_shape), unbatched)
    return unbatch(lookup(op, "pool", "adaptive_avg_pool2d_forward", backend, x)(x, p), unbatched)


def adaptive_avg_pool2d_backward(dy, x, output_size, *, backend="auto"):
    """dx of :func:`adaptive_avg_pool2d` given dy (N, C, OH, OW); x gives only the shape and dtype."""
    op = "adaptive_avg_pool2d_backward"
    x, unbatched, p = _adaptive_params(op, x, output_size)
    dy = _check_dy(op, dy, x, p.y_shape, unbatched)
    if x.size == 0 or dy.size == 0:  # an empty output: no x pixel reaches y, so dx is 0
        return unbatch(zeros(x, p.x_shape), unbatched)
    return unbatch(lookup(op, "pool", "adaptive_avg_pool2d_backward", backend, dy)(dy, p), unbatched)


__all__ = ["MaxPool2dResult", "max_pool2d", "max_pool2d_backward", "avg_pool2d", "avg_pool2d_backward",
           "adaptive_avg_pool2d", "adaptive_avg_pool2d_backward"]
