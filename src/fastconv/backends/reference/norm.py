"""Reference batch normalisation on x viewed as (N, C, L), L the product of the spatial dims.

Statistics are per channel, over axes 0 and 2. The public op computes everything of size (C,)
from them (invstd, the running-statistic update); the functions here are the passes over x.
"""

import numpy as np

from .._common import empty

_AXES = (0, 2)


def _per_channel(a):
    """(C,) -> (1, C, 1), to broadcast against (N, C, L)."""
    return a.reshape(1, -1, 1)


def batch_norm_stats(x):
    """Mean and biased variance per channel; two passes, in x's dtype."""
    mean = x.mean(axis=_AXES)  # (C,)
    var = np.square(x - _per_channel(mean)).mean(axis=_AXES)  # (C,)
    return mean, var


def batch_norm_forward(x, mean, invstd, weight, bias):
    """y = (x - mean) * invstd * weight + bias, weight and bias optional."""
    y = np.subtract(x, _per_channel(mean), out=empty(x.shape, x.dtype))  # (N, C, L)
    y *= _per_channel(invstd)
    if weight is not None:
        y *= _per_channel(weight)
    if bias is not None:
        y += _per_channel(bias)
    return y


def batch_norm_backward_reduce(dy, x, mean, invstd):
    """``(sum_dy, sum_dy_xhat)`` per channel, xhat = (x - mean) * invstd: these are dbias and
    dweight, and the two batch terms of the training-mode dx."""
    xhat = (x - _per_channel(mean)) * _per_channel(invstd)  # (N, C, L)
    return dy.sum(axis=_AXES), (dy * xhat).sum(axis=_AXES)  # (C,), (C,)


def batch_norm_backward_input(dy, x, mean, invstd, weight, sum_dy, sum_dy_xhat):
    """Training-mode dx: mean and invstd depend on every x of the channel, so each dx carries
    the batch terms, dx = weight * invstd * (dy - sum_dy/n - xhat * sum_dy_xhat/n)."""
    n = x.shape[0] * x.shape[2]
    xhat = (x - _per_channel(mean)) * _per_channel(invstd)  # (N, C, L)
    dx = np.subtract(dy, _per_channel(sum_dy / n), out=empty(x.shape, x.dtype))  # (N, C, L)
    dx -= xhat * _per_channel(sum_dy_xhat / n)
    dx *= _per_channel(invstd if weight is None else invstd * weight)
    return dx


# Batch norm followed by hardtanh(min_val, max_val) (ReLU6 is hardtanh(0, 6)), fused. z is the
# batch norm's output before the clamp; the backward recomputes it with the forward's own
# function, so it is the forward's z exactly.

def _hardtanh_masked(dy, x, mean, invstd, weight, bias, min_val, max_val):
    """dy where min_val < z < max_val, else 0: PyTorch's hardtanh_backward (zero at the bounds
    themselves; a NaN z passes dy, as no comparison holds)."""
    z = batch_norm_forward(x, mean, invstd, weight, bias)  # (N, C, L)
    return np.where((z <= min_val) | (z >= max_val), np.zeros((), dy.dtype), dy)  # (N, C, L)


def batch_norm_forward_hardtanh(x, mean, invstd, weight, bias, min_val, max_val):
    """y = clamp(batch_norm(x), min_val, max_val); a NaN stays NaN, as in PyTorch."""
    y = batch_norm_forward(x, mean, invstd, weight, bias)  # (N, C, L)
    np.maximum(y, y.dtype.type(min_val), out=y)
    np.minimum(y, y.dtype.type(max_val), out=y)
    return y


def batch_norm_backward_reduce_hardtanh(dy, x, mean, invstd, weight, bias, min_val, max_val):
    """:func:`batch_norm_backward_reduce` of the masked dy."""
    return batch_norm_backward_reduce(_hardtanh_masked(dy, x, mean, invstd, weight, bias, min_val, max_val), x,
                                      mean, invstd)


def batch_norm_backward_input_hardtanh(dy, x, mean, invstd, weight, bias, min_val, max_val, sum_dy, sum_dy_xhat,
                                       training):
    """dx from the masked dy: the training-mode dx, or in inference the affine map's derivative
    as the unfused backward computes it (the forward on dy with a zero mean and no bias)."""
    masked = _hardtanh_masked(dy, x, mean, invstd, weight, bias, min_val, max_val)  # (N, C, L)
    if training:
        return batch_norm_backward_input(masked, x, mean, invstd, weight, sum_dy, sum_dy_xhat)
    return batch_norm_forward(masked, np.zeros_like(mean), invstd, weight, None)
