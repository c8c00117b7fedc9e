"""C++ pooling (csrc/pool.cpp): max with PyTorch's indices, average, adaptive average."""

import numpy as np

from ... import _cpp
from ..._checks import indices_out_of_range
from ._util import contiguous, empty, nthreads


def max_pool2d_forward(x, p, with_indices=True):
    y = empty(p.y_shape, x.dtype)  # (N, C, OH, OW)
    # (N, C, OH, OW); every entry written. Without them the kernel writes y alone.
    indices = np.empty(p.y_shape, dtype=np.int64) if with_indices else None
    _cpp.max_pool2d_forward(contiguous(x), y, indices, p, nthreads())
    return y, indices


def max_pool2d_backward(dy, indices, p):
    dx = empty(p.x_shape, dy.dtype)  # (N, C, H, W)
    if not _cpp.max_pool2d_backward(contiguous(dy), contiguous(indices), dx, p, nthreads()):
        raise indices_out_of_range("max_pool2d_backward", indices, p.H * p.W)
    return dx


def avg_pool2d_forward(x, p):
    y = empty(p.y_shape, x.dtype)  # (N, C, OH, OW)
    _cpp.avg_pool2d_forward(contiguous(x), y, p, nthreads())
    return y


def avg_pool2d_backward(dy, p):
    dx = empty(p.x_shape, dy.dtype)  # (N, C, H, W)
    _cpp.avg_pool2d_backward(contiguous(dy), dx, p, nthreads())
    return dx


def adaptive_avg_pool2d_forward(x, p):
    y = empty(p.y_shape, x.dtype)  # (N, C, OH, OW)
    _cpp.adaptive_avg_pool2d_forward(contiguous(x), y, p, nthreads())
    return y


def adaptive_avg_pool2d_backward(dy, p):
    dx = empty(p.x_shape, dy.dtype)  # (N, C, H, W)
    _cpp.adaptive_avg_pool2d_backward(contiguous(dy), dx, p, nthreads())
    return dx
