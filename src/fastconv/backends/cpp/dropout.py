"""C++ inverted dropout (csrc/dropout.cpp) with a counter-based generator: element k is kept iff
its draw from splitmix64 seeded with mix64(seed) (output k) is >= p. A seed fixes the mask for a
shape on this backend whatever the thread count or CPU; the masks differ from the reference
backend's (NumPy PCG64), only their distribution is the same."""

import numpy as np

from ... import _cpp
from ._util import contiguous, empty, nthreads


def dropout_forward(x, p, seed):
    y = empty(x.shape, x.dtype)  # x's shape
    mask = np.empty(x.shape, dtype=bool)  # x's shape; every entry written
    _cpp.dropout_forward(contiguous(x), p, seed, y, mask, nthreads())
    return y, mask


def dropout_backward(dy, mask, p):
    dx = empty(dy.shape, dy.dtype)  # dy's shape
    _cpp.dropout_backward(contiguous(dy), contiguous(mask), p, dx, nthreads())
    return dx
