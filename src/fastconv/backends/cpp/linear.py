"""C++ dense layer (csrc/linear.cpp): every pass one packed GEMM, transposes as strides."""

from ... import _cpp
from ._util import contiguous, empty, nthreads


def linear_forward(x, w, b):
    y = empty((x.shape[0], w.shape[0]), x.dtype)  # (M, out_features)
    _cpp.linear_forward(contiguous(x), contiguous(w), contiguous(b), y, nthreads(2 * y.size * x.shape[1]))
    return y


def linear_backward_input(dy, w):
    dx = empty((dy.shape[0], w.shape[1]), dy.dtype)  # (M, in_features)
    _cpp.linear_backward_input(contiguous(dy), contiguous(w), dx, nthreads(2 * dx.size * dy.shape[1]))
    return dx


def linear_backward_weight(dy, x):
    dw = empty((dy.shape[1], x.shape[1]), dy.dtype)  # (out_features, in_features)
    _cpp.linear_backward_weight(contiguous(dy), contiguous(x), dw, nthreads(2 * dw.size * x.shape[0]))
    return dw


def linear_backward_bias(dy):
    db = empty((dy.shape[1],), dy.dtype)  # (out_features,)
    _cpp.linear_backward_bias(contiguous(dy), db, nthreads(dy.size))
    return db
