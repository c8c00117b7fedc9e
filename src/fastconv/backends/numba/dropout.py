"""Numba inverted dropout with a counter-based generator: element k is kept iff its uniform draw
u_k >= p, where u_k comes from splitmix64's output function applied to ``mix(seed) + (k + 1) *
golden`` (a hash of the seed and the element's index, no generator state). So the mask depends
on the seed and the shape only: not on the thread count, nor the dtype, nor the CPU. The masks
differ from the other backends' (each has its own generator); only their distribution is the
same. As in PyTorch, y = x * noise with noise = 1/(1-p) or 0 in x's dtype, so a dropped NaN or
Inf gives NaN.
"""

import numpy as np
from numba import prange

from .._common import empty
from ._jit import contiguous, jit, parallel_jit, run

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)  # splitmix64's increment
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_TWO_TO_MINUS_53 = 2.0 ** -53


@jit
def _mix64(z):
    """splitmix64's output function: a bijection of uint64 that scatters neighbouring inputs."""
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


@parallel_jit
def _forward(x, p, seed, scale, y, mask):
    """mask[k] = u_k >= p; y[k] = x[k] * (scale if kept else 0); all flat (K,)."""
    state = _mix64(seed)
    zero = scale * 0
    for k in prange(x.size):
        u = (_mix64(state + (np.uint64(k) + np.uint64(1)) * _GOLDEN) >> np.uint64(11)) * _TWO_TO_MINUS_53  # in [0, 1)
        mask[k] = u >= p
        y[k] = x[k] * (scale if mask[k] else zero)


@parallel_jit
def _backward(dy, mask, scale, dx):
    zero = scale * 0
    for k in prange(dy.size):
        dx[k] = dy[k] * (scale if mask[k] else zero)


def _scale(p, dtype):
    """1/(1-p) in x's dtype (PyTorch divides in x's dtype); 0 for p = 1, which drops everything."""
    return dtype.type(1) / dtype.type(1 - p) if p < 1 else dtype.type(0)


def dropout_forward(x, p, seed):
    x = contiguous(x)
    y = empty(x.shape, x.dtype)  # x's shape
    mask = np.empty(x.shape, dtype=bool)  # x's shape; every entry written
    run(_forward, x.reshape(-1), float(p), np.uint64(seed), _scale(p, x.dtype), y.reshape(-1), mask.reshape(-1))
    return y, mask


def dropout_backward(dy, mask, p):
    dy = contiguous(dy)
    dx = empty(dy.shape, dy.dtype)  # dy's shape
    run(_backward, dy.reshape(-1), contiguous(mask).reshape(-1), _scale(p, dy.dtype), dx.reshape(-1))
    return dx
