"""Numba batch normalisation passes on x viewed as (N, C, L), L the product of the spatial dims.

The reductions (statistics, the backward's two sums) take one channel per unit of work and sum
its N*L values in order, in float64: no two threads share a sum, so results do not depend on
the thread count. The elementwise passes take one (image, channel) row per unit and follow the
reference's order of operations in the input dtype, with the per-channel constants it uses.
"""

import numpy as np
from numba import prange

from .._common import empty
from ._jit import contiguous, parallel_jit, run


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
