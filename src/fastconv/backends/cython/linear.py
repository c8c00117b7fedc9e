"""Cython dense layer (_linear.pyx): every pass one GEMM through SciPy's BLAS, BLAS running on the
thread count in force (no OpenMP loop around it)."""

from .._common import empty
from . import _linear
from ._util import blas_threads, contiguous, nthreads


def linear_forward(x, w, b):
    y = empty((x.shape[0], w.shape[0]), x.dtype)  # (M, out_features)
    with blas_threads(nthreads()):
        _linear.linear_forward(contiguous(x), contiguous(w), contiguous(b), y)
    return y


def linear_backward_input(dy, w):
    dx = empty((dy.shape[0], w.shape[1]), dy.dtype)  # (M, in_features)
    with blas_threads(nthreads()):
        _linear.linear_backward_input(contiguous(dy), contiguous(w), dx)
    return dx


def linear_backward_weight(dy, x):
    dw = empty((dy.shape[1], x.shape[1]), dy.dtype)  # (out_features, in_features)
    with blas_threads(nthreads()):
        _linear.linear_backward_weight(contiguous(dy), contiguous(x), dw)
    return dw


def linear_backward_bias(dy):
    db = empty((dy.shape[1],), dy.dtype)  # (out_features,)
    _linear.linear_backward_bias(contiguous(dy), db)
    return db
