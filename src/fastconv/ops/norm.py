"""Public batch normalisation ops, as ``torch.nn.functional.batch_norm``.

x is (N, C, *) with 2 or more dims (``torch.nn.functional.batch_norm`` takes any; an empty 1-d x
too, which has no channel axis: C = 0, as in PyTorch); it is viewed here, once, as (N, C, L) with
L the product of the spatial dims, and the backend's ``norm`` module sees only that 3-d view and (C,) vectors:

- ``batch_norm_stats(x) -> (mean, var)``: per-channel batch mean and biased variance;
- ``batch_norm_forward(x, mean, invstd, weight, bias) -> y`` (weight and bias may be None);
- ``batch_norm_backward_reduce(dy, x, mean, invstd) -> (sum_dy, sum_dy_xhat)``;
- ``batch_norm_backward_input(dy, x, mean, invstd, weight, sum_dy, sum_dy_xhat) -> dx`` (training);
- batch norm followed by ``hardtanh(min_val, max_val)`` (ReLU6: (0, 6)), fused:
  ``batch_norm_forward_hardtanh(x, mean, invstd, weight, bias, min_val, max_val) -> y``,
  ``batch_norm_backward_reduce_hardtanh(dy, x, mean, invstd, weight, bias, min_val, max_val)`` and
  ``batch_norm_backward_input_hardtanh(..., sum_dy, sum_dy_xhat, training) -> dx``, which mask dy
  where the clamp was flat, recomputing the value before the clamp from x (it is never stored).

What is computed on (C,) vectors (invstd from the variance, the running-statistic update) is
done here, in one place, with array arithmetic that works on any device. Backends never see an
empty x.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

from .._checks import check_array, check_bool, check_float, check_needs, check_same_kind, check_shape, zeros
from .._dispatch import lookup, planned
from .._params import batch_norm_channels, batch_norm_forward_channels


class BatchNormResult(NamedTuple):
    """The output ``y``; the ``mean`` and ``invstd`` (C,) that normalised x, to pass back to
    :func:`batch_norm_backward` by name; and the NEW running statistics (None when not given)."""

    y: Any
    mean: Any
    invstd: Any
    running_mean: Any
    running_var: Any


def _check_vectors(op, **vectors) -> dict:
    """Each given vector is a 1-d array (its length is checked against x's C with the shapes, in
    ``_params``); returns ``{name: shape or None}``."""
    for name, v in vectors.items():
        if v is not None:
            check_array(op, name, v, dims="(C,)")
    return {name: None if v is None else v.shape for name, v in vectors.items()}


def _as_3d(x):
    """(N, C, *) -> (N, C, L) (a non-empty x, so at least 2-d)."""
    return x.reshape(x.shape[0], x.shape[1], math.prod(x.shape[2:]))


def _invstd(var, eps):
    return 1 / (var + eps) ** 0.5  # (C,)


def _momentum_update(running, batch, momentum):
    """PyTorch's running-statistic update, the one place it is computed: a new array."""
    return (1 - momentum) * running + momentum * batch  # (C,)


def _momentum_update_in_place(running, batch, momentum):
    """:func:`_momentum_update` written into ``running`` (the same operations in the same order);
    returns None (no new array)."""
    running *= 1 - momentum
    running += momentum * batch


def _check_hardtanh(op, hardtanh):
    """None, or ``(min_val, max_val)`` as two floats with min_val < max_val."""
    if hardtanh is None:
        return None
    if not isinstance(hardtanh, (tuple, list)) or len(hardtanh) != 2:
        raise TypeError(f"{op}: expected hardtanh to be None or a pair (min_val, max_val), got {hardtanh!r}")
    lo, hi = (check_float(op, name, v) for name, v in zip(("hardtanh min_val", "hardtanh max_val"), hardtanh))
    if not lo < hi:
        raise ValueError(f"{op}: hardtanh needs min_val < max_val, got ({lo}, {hi})")
    return lo, hi


def batch_norm(x, running_mean=None, running_var=None, weight=None, bias=None, training=False,
               momentum=0.1, eps=1e-5, *, hardtanh=None, backend="auto"):
    """Batch normalisation of x (N, C, *), 2 or more dims: ``(x - mean) * invstd * weight + bias``.

    In training, mean and invstd = 1/sqrt(var + eps) come from the batch (biased variance), and
    the returned running statistics are new arrays ``(1 - momentum) * running + momentum * batch``
    (unbiased variance for running_var); the given ones are never modified. In inference the
    running statistics normalise x and are required; they are returned as copies. Returns
    :class:`BatchNormResult`.

    ``hardtanh=(min_val, max_val)`` applies ``torch.nn.functional.hardtanh`` to y in the same pass
    (``(0.0, 6.0)`` is ReLU6): y is clamped, mean and invstd are the batch norm's as without it;
    give :func:`batch_norm_backward` the same pair and the bias.
    """
    return _batch_norm_plan(x, running_mean, running_var, weight, bias, training, momentum, eps, backend,
                            hardtanh)(x, running_mean, running_var, weight, bias)


@planned
def _batch_norm_plan(x, running_mean, running_var, weight, bias, training, momentum, eps, backend, hardtanh=None):
    """batch_norm validated: the run for arrays of these shapes and dtypes."""
    op = "batch_norm"
    check_array(op, "x", x)
    shapes = _check_vectors(op, running_mean=running_mean, running_var=running_var, weight=weight, bias=bias)
    check_same_kind(op, x=x, running_mean=running_mean, running_var=running_var, weight=weight, bias=bias)
    check_bool(op, "training", training)
    momentum = check_float(op, "momentum", momentum)
    eps = check_float(op, "eps", eps, low=0.0)
    if training and eps == 0.0:  # PyTorch refuses it too: a constant channel would divide by zero
        raise ValueError(f"{op}: eps must be positive in training, got {eps}")
    hardtanh = _check_hardtanh(op, hardtanh)
    C = batch_norm_forward_channels(op, x.shape, training, **shapes)
    n = x.shape[0] * math.prod(x.shape[2:])  # values per channel
    # the backend's functions, picked once per plan (x's dtype and kind are the plan's)
    stats = forward = None
    if x.size:
        x3 = _as_3d(x)  # (N, C, L)
        stats = lookup(op, "norm", "batch_norm_stats", backend, x3) if training else None
        forward = lookup(op, "norm", "batch_norm_forward" if hardtanh is None else "batch_norm_forward_hardtanh",
                         backend, x3)

    def run(x, running_mean, running_var, weight, bias, in_place=False):
        """``in_place``: training writes the new running statistics into the given arrays and
        returns None for them (fastconv.torch's path for a module's own buffers, PyTorch's
        in-place update without a copy back); the public op never passes it."""
        if training:
            if x.size == 0:  # an empty batch has no statistics: mean 0, variance 0, running stats kept
                mean, var = zeros(x, (C,)), zeros(x, (C,))
                new_mean = None if running_mean is None or in_place else running_mean.copy()
                new_var = None if running_var is None or in_place else running_var.copy()
            else:
                x3 = _as_3d(x)  # (N, C, L)
                mean, var = stats(x3)
                update = _momentum_update_in_place if in_place else _momentum_update
                new_mean = None if running_mean is None else update(running_mean, mean, momentum)
                new_var = None if running_var is None else update(running_var, var * (n / (n - 1)), momentum)
        else:
            mean, var = running_mean.copy(), running_var
            new_mean, new_var = running_mean.copy(), running_var.copy()
        invstd = _invstd(var, eps)
        if x.size == 0:
            y = zeros(x, x.shape)
        elif hardtanh is not None:
            y = forward(_as_3d(x), mean, invstd, weight, bias, *hardtanh).reshape(x.shape)
        else:
            y = forward(_as_3d(x), mean, invstd, weight, bias).reshape(x.shape)
        return BatchNormResult(y, mean, invstd, new_mean, new_var)

    return run


def batch_norm_backward(dy, x, weight=None, *, mean, invstd, training, needs=(True, True, True),
                        bias=None, hardtanh=None, backend="auto"):
    """Gradients ``(dx, dweight, dbias)`` of :func:`batch_norm` given dy of x's shape.

    ``mean`` and ``invstd`` are the forward's (``BatchNormResult.mean/.invstd``). In inference
    they are constants and ``dx = dy * weight * invstd``; in training dx carries the batch terms
    through them. dweight is None when weight is None (the forward had no scale) or ``needs`` leaves
    it out; dbias (the sum of dy per channel) follows ``needs`` alone, since a bias may be given
    without a weight, as in PyTorch.

    ``hardtanh=(min_val, max_val)``: the gradients of the fused batch norm + hardtanh (the forward
    called with the same pair): dy is zero where the value before the clamp was <= min_val or
    >= max_val (PyTorch's hardtanh_backward), that value recomputed from x, mean, invstd, weight
    and ``bias`` (the forward's; used only here).
    """
    return _batch_norm_backward_plan(dy, x, weight, mean, invstd, training, needs, backend, bias, hardtanh)(
        dy, x, weight, mean, invstd, bias)


@planned
def _batch_norm_backward_plan(dy, x, weight, mean, invstd, training, needs, backend, bias=None, hardtanh=None):
    op = "batch_norm_backward"
    need_dx, need_dw, need_db = check_needs(op, needs, 3)
    check_array(op, "x", x)
    check_array(op, "dy", dy)
    C = batch_norm_channels(op, x.shape, **_check_vectors(op, weight=weight, mean=mean, invstd=invstd, bias=bias))
    check_shape(op, "dy", dy, x.shape)
    if mean is None or invstd is None:
        raise ValueError(f"{op}: mean and invstd (from the forward's result) are required")
    check_same_kind(op, dy=dy, x=x, weight=weight, mean=mean, invstd=invstd, bias=bias)
    check_bool(op, "training", training)
    hardtanh = _check_hardtanh(op, hardtanh)
    need_dw = need_dw and weight is not None
    # the backend's functions, picked once per plan (the arrays' dtypes and kinds are the plan's)
    reduce = backward_input = forward = None
    if x.size:
        x3, dy3 = _as_3d(x), _as_3d(dy)  # (N, C, L)
        fused = "" if hardtanh is None else "_hardtanh"  # the fused batch norm + hardtanh's gradients
        if need_dw or need_db or (need_dx and training):
            reduce = lookup(op, "norm", "batch_norm_backward_reduce" + fused, backend, dy3, x3)
        if need_dx and (training or hardtanh is not None):
            backward_input = lookup(op, "norm", "batch_norm_backward_input" + fused, backend, dy3, x3)
        elif need_dx:
            forward = lookup(op, "norm", "batch_norm_forward", backend, dy3)

    def run(dy, x, weight, mean, invstd, bias=None):
        if x.size == 0:  # nothing flows back from an empty batch
            return (zeros(x, x.shape) if need_dx else None, zeros(x, (C,)) if need_dw else None,
                    zeros(x, (C,)) if need_db else None)
        x3, dy3 = _as_3d(x), _as_3d(dy)  # (N, C, L)
        sum_dy = sum_dy_xhat = None
        if hardtanh is not None:
            if reduce is not None:
                sum_dy, sum_dy_xhat = reduce(dy3, x3, mean, invstd, weight, bias, *hardtanh)
            dx = None
            if backward_input is not None:
                dx = backward_input(dy3, x3, mean, invstd, weight, bias, *hardtanh, sum_dy, sum_dy_xhat,
                                    training).reshape(x.shape)
            return dx, sum_dy_xhat if need_dw else None, sum_dy if need_db else None
        if reduce is not None:
            sum_dy, sum_dy_xhat = reduce(dy3, x3, mean, invstd)
        dx = None
        if backward_input is not None:
            dx = backward_input(dy3, x3, mean, invstd, weight, sum_dy, sum_dy_xhat).reshape(x.shape)
        elif forward is not None:
            # in inference batch norm is the per-channel affine map x * (invstd * weight) + const,
            # so dx is the forward applied to dy with a zero mean and no bias
            dx = forward(dy3, zeros(x, (C,)), invstd, weight, None).reshape(x.shape)
        return dx, sum_dy_xhat if need_dw else None, sum_dy if need_db else None

    return run


__all__ = ["BatchNormResult", "batch_norm", "batch_norm_backward"]
