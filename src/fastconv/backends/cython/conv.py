"""Cython convolution (_conv.pyx): im2col + GEMM through SciPy's BLAS, direct loops for depthwise.
Each kernel is one OpenMP prange over independent units with single-threaded BLAS calls inside."""

from .._common import empty
from . import _conv
from ._util import blas_threads, flat, nthreads


def conv2d_forward(x, w, b, p):
    y = empty(p.y_shape, x.dtype)  # (N, C_out, OH, OW)
    n = nthreads()
    with blas_threads(1):
        _conv.conv2d_forward(flat(x), flat(w), flat(b), y.reshape(-1), p, n)
    return y


def conv2d_backward_input(dy, w, p):
    dx = empty(p.x_shape, dy.dtype)  # (N, C_in, H, W)
    n = nthreads()
    with blas_threads(1):
        _conv.conv2d_backward_input(flat(dy), flat(w), dx.reshape(-1), p, n)
    return dx


def conv2d_backward_weight(dy, x, p):
    dw = empty(p.w_shape, dy.dtype)  # (C_out, C_in/groups, KH, KW)
    n = nthreads()
    with blas_threads(1):
        _conv.conv2d_backward_weight(flat(dy), flat(x), dw.reshape(-1), p, n)
    return dw


def conv2d_backward_bias(dy):
    db = empty((dy.shape[1],), dy.dtype)  # (C_out,)
    N, C = dy.shape[:2]
    _conv.conv2d_backward_bias(flat(dy).reshape(N, C, -1), db, nthreads())  # dy as (N, C_out, OH*OW)
    return db
