"""C++ convolution: forward, backward-input, backward-weight, backward-bias (csrc/conv.cpp)."""

from ... import _cpp
from .._common import empty
from ._util import contiguous, nthreads


def conv2d_forward(x, w, b, p):
    y = empty(p.y_shape, x.dtype)  # (N, C_out, OH, OW)
    _cpp.conv2d_forward(contiguous(x), contiguous(w), contiguous(b), y, p, nthreads())
    return y


def conv2d_backward_input(dy, w, p):
    dx = empty(p.x_shape, dy.dtype)  # (N, C_in, H, W)
    _cpp.conv2d_backward_input(contiguous(dy), contiguous(w), dx, p, nthreads())
    return dx


def conv2d_backward_weight(dy, x, p):
    dw = empty(p.w_shape, dy.dtype)  # (C_out, C_in/groups, KH, KW)
    _cpp.conv2d_backward_weight(contiguous(dy), contiguous(x), dw, p, nthreads())
    return dw


def conv2d_backward_bias(dy):
    db = empty((dy.shape[1],), dy.dtype)  # (C_out,)
    _cpp.conv2d_backward_bias(contiguous(dy), db, nthreads())
    return db
