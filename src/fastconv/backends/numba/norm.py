"""Numba batch normalisation passes on x viewed as (N, C, L), L the product of the spatial dims.

The reductions (statistics, the backward's two sums) take one channel per unit of work and sum
its N*L values in order, in float64: no two threads share a sum, so results do not depend on
the thread count. The elementwise passes take one (image, channel) row per unit and follow the
reference's order of operations in the input dtype, with the per-channel constants it uses.
"""

import numpy as np
from numba import prange

from .._common import empty
from ._jit import contiguous, inline_jit, parallel_jit, run


@parallel_jit
def _stats(x, mean, var):
    """Per channel: the mean, then the mean squared deviation from it (two passes, float64)."""
    N, C, L = x.shape
    count = N * L
    for c in prange(C):
        total = 0.0
        for n in range(N):
            for l in range(L):
                total += x[n, c, l]
        m = total / count
        squares = 0.0
        for n in range(N):
            for l in range(L):
                d = x[n, c, l] - m
                squares += d * d
        mean[c] = m
        var[c] = squares / count


@parallel_jit
def _affine(x, mean, scale, weight, bias, y):
    """y = (x - mean) * scale [* weight] [+ bias] per channel; weight, bias empty when absent."""
    N, C, L = x.shape
    for row in prange(N * C):
        n, c = divmod(np.int64(row), C)  # signed: an unsigned prange index turns arithmetic float
        for l in range(L):
            v = (x[n, c, l] - mean[c]) * scale[c]
            if weight.size:
                v = v * weight[c]
            if bias.size:
                v = v + bias[c]
            y[n, c, l] = v


@parallel_jit
def _backward_reduce(dy, x, mean, invstd, sum_dy, sum_dy_xhat):
    """Per channel: sum(dy) and sum(dy * xhat), xhat = (x - mean) * invstd, in float64."""
    N, C, L = x.shape
    for c in prange(C):
        total = 0.0
        weighted = 0.0
        for n in range(N):
            for l in range(L):
                g = dy[n, c, l]
                total += g
                weighted += g * ((x[n, c, l] - mean[c]) * invstd[c])
        sum_dy[c] = total
        sum_dy_xhat[c] = weighted


@parallel_jit
def _backward_input(dy, x, mean, invstd, mean_dy, mean_dy_xhat, scale, dx):
    """dx = (dy - mean_dy - xhat * mean_dy_xhat) * scale per channel, xhat = (x - mean) * invstd."""
    N, C, L = x.shape
    for row in prange(N * C):
        n, c = divmod(np.int64(row), C)  # signed: an unsigned prange index turns arithmetic float
        for l in range(L):
            xhat = (x[n, c, l] - mean[c]) * invstd[c]
            dx[n, c, l] = (dy[n, c, l] - mean_dy[c] - xhat * mean_dy_xhat[c]) * scale[c]


# Batch norm followed by hardtanh(lo, hi), fused (ReLU6 is hardtanh(0, 6)). z, the value before
# the clamp, is computed by one function for the forward and both backward passes, so the
# backward's mask sees the forward's z exactly.

@inline_jit
def _z(x, mean, invstd, weight, bias, n, c, l):
    v = (x[n, c, l] - mean[c]) * invstd[c]
    if weight.size:
        v = v * weight[c]
    if bias.size:
        v = v + bias[c]
    return v


@inline_jit
def _masked(dy, z, lo, hi, n, c, l):
    """PyTorch's hardtanh_backward: zero where z <= lo or z >= hi (a NaN z passes dy)."""
    return dy.dtype.type(0) if (z <= lo or z >= hi) else dy[n, c, l]


@parallel_jit
def _affine_hardtanh(x, mean, invstd, weight, bias, lo, hi, y):
    N, C, L = x.shape
    for row in prange(N * C):
        n, c = divmod(np.int64(row), C)  # signed: an unsigned prange index turns arithmetic float
        for l in range(L):
            z = _z(x, mean, invstd, weight, bias, n, c, l)
            y[n, c, l] = lo if z < lo else (hi if z > hi else z)  # NaN stays NaN


@parallel_jit
def _backward_reduce_hardtanh(dy, x, mean, invstd, weight, bias, lo, hi, sum_dy, sum_dy_xhat):
    N, C, L = x.shape
    for c in prange(C):
        total = 0.0
        weighted = 0.0
        for n in range(N):
            for l in range(L):
                g = _masked(dy, _z(x, mean, invstd, weight, bias, n, c, l), lo, hi, n, c, l)
                total += g
                weighted += g * ((x[n, c, l] - mean[c]) * invstd[c])
        sum_dy[c] = total
        sum_dy_xhat[c] = weighted


@parallel_jit
def _backward_input_hardtanh(dy, x, mean, invstd, weight, bias, lo, hi, mean_dy, mean_dy_xhat, scale, training, dx):
    """Training: as :func:`_backward_input` on the masked dy; inference: (masked dy * invstd) * weight."""
    N, C, L = x.shape
    for row in prange(N * C):
        n, c = divmod(np.int64(row), C)  # signed: an unsigned prange index turns arithmetic float
        for l in range(L):
            g = _masked(dy, _z(x, mean, invstd, weight, bias, n, c, l), lo, hi, n, c, l)
            if training:
                xhat = (x[n, c, l] - mean[c]) * invstd[c]
                dx[n, c, l] = (g - mean_dy[c] - xhat * mean_dy_xhat[c]) * scale[c]
            else:
                v = g * invstd[c]
                if weight.size:
                    v = v * weight[c]
                dx[n, c, l] = v


def _optional(v, dtype):
    return contiguous(np.zeros(0, dtype) if v is None else v)  # (C,) or (0,): absent


def batch_norm_stats(x):
    C = x.shape[1]
    mean, var = empty((C,), x.dtype), empty((C,), x.dtype)  # (C,), (C,)
    run(_stats, contiguous(x), mean, var)
    return mean, var


def batch_norm_forward(x, mean, invstd, weight, bias):
    y = empty(x.shape, x.dtype)  # (N, C, L)
    run(_affine, contiguous(x), contiguous(mean), contiguous(invstd), _optional(weight, x.dtype),
        _optional(bias, x.dtype), y)
    return y


def batch_norm_backward_reduce(dy, x, mean, invstd):
    C = x.shape[1]
    sum_dy, sum_dy_xhat = empty((C,), x.dtype), empty((C,), x.dtype)  # (C,), (C,)
    run(_backward_reduce, contiguous(dy), contiguous(x), contiguous(mean), contiguous(invstd), sum_dy, sum_dy_xhat)
    return sum_dy, sum_dy_xhat


def batch_norm_backward_input(dy, x, mean, invstd, weight, sum_dy, sum_dy_xhat):
    n = x.shape[0] * x.shape[2]
    # the per-channel constants of the reference's dx, computed as it computes them (input dtype)
    mean_dy, mean_dy_xhat = contiguous(sum_dy / n), contiguous(sum_dy_xhat / n)  # (C,), (C,)
    scale = contiguous(invstd if weight is None else invstd * weight)  # (C,)
    dx = empty(x.shape, x.dtype)  # (N, C, L)
    run(_backward_input, contiguous(dy), contiguous(x), contiguous(mean), contiguous(invstd), mean_dy,
        mean_dy_xhat, scale, dx)
    return dx


def batch_norm_forward_hardtanh(x, mean, invstd, weight, bias, min_val, max_val):
    y = empty(x.shape, x.dtype)  # (N, C, L)
    lo, hi = x.dtype.type(min_val), x.dtype.type(max_val)
    run(_affine_hardtanh, contiguous(x), contiguous(mean), contiguous(invstd), _optional(weight, x.dtype),
        _optional(bias, x.dtype), lo, hi, y)
    return y


def batch_norm_backward_reduce_hardtanh(dy, x, mean, invstd, weight, bias, min_val, max_val):
    C = x.shape[1]
    sum_dy, sum_dy_xhat = empty((C,), x.dtype), empty((C,), x.dtype)  # (C,), (C,)
    lo, hi = x.dtype.type(min_val), x.dtype.type(max_val)
    run(_backward_reduce_hardtanh, contiguous(dy), contiguous(x), contiguous(mean), contiguous(invstd),
        _optional(weight, x.dtype), _optional(bias, x.dtype), lo, hi, sum_dy, sum_dy_xhat)
    return sum_dy, sum_dy_xhat


def batch_norm_backward_input_hardtanh(dy, x, mean, invstd, weight, bias, min_val, max_val, sum_dy, sum_dy_xhat,
                                       training):
    C = x.shape[1]
    if training:
        n = x.shape[0] * x.shape[2]
        # the per-channel constants of the reference's dx, computed as it computes them (input dtype)
        mean_dy, mean_dy_xhat = contiguous(sum_dy / n), contiguous(sum_dy_xhat / n)  # (C,), (C,)
        scale = contiguous(invstd if weight is None else invstd * weight)  # (C,)
    else:
        mean_dy = mean_dy_xhat = scale = np.zeros(C, x.dtype)  # (C,): unused in inference
    lo, hi = x.dtype.type(min_val), x.dtype.type(max_val)
    dx = empty(x.shape, x.dtype)  # (N, C, L)
    run(_backward_input_hardtanh, contiguous(dy), contiguous(x), contiguous(mean), contiguous(invstd),
        _optional(weight, x.dtype), _optional(bias, x.dtype), lo, hi, mean_dy, mean_dy_xhat, scale, bool(training), dx)
    return dx
