"""C++ batch norm passes (csrc/norm.cpp) on x viewed as (N, C, L). Statistics and the backward's
reductions are summed in double, one channel per unit of work (independent of the thread count);
the elementwise passes follow the reference's operation order."""

from ... import _cpp
from ._util import contiguous, empty, nthreads


def batch_norm_stats(x):
    C = x.shape[1]
    mean, var = empty((C,), x.dtype), empty((C,), x.dtype)  # (C,), (C,)
    _cpp.batch_norm_stats(contiguous(x), mean, var, nthreads())
    return mean, var


def batch_norm_forward(x, mean, invstd, weight, bias):
    y = empty(x.shape, x.dtype)  # (N, C, L)
    _cpp.batch_norm_forward(contiguous(x), contiguous(mean), contiguous(invstd), contiguous(weight), contiguous(bias),
                            y, nthreads())
    return y


def batch_norm_backward_reduce(dy, x, mean, invstd):
    C = x.shape[1]
    sum_dy, sum_dy_xhat = empty((C,), x.dtype), empty((C,), x.dtype)  # (C,), (C,)
    _cpp.batch_norm_backward_reduce(contiguous(dy), contiguous(x), contiguous(mean), contiguous(invstd), sum_dy,
                                    sum_dy_xhat, nthreads())
    return sum_dy, sum_dy_xhat


def batch_norm_backward_input(dy, x, mean, invstd, weight, sum_dy, sum_dy_xhat):
    dx = empty(x.shape, x.dtype)  # (N, C, L)
    _cpp.batch_norm_backward_input(contiguous(dy), contiguous(x), contiguous(mean), contiguous(invstd),
                                   contiguous(weight), contiguous(sum_dy), contiguous(sum_dy_xhat), dx, nthreads())
    return dx


def batch_norm_forward_hardtanh(x, mean, invstd, weight, bias, min_val, max_val):
    y = empty(x.shape, x.dtype)  # (N, C, L)
    _cpp.batch_norm_forward_hardtanh(contiguous(x), contiguous(mean), contiguous(invstd), contiguous(weight),
                                     contiguous(bias), min_val, max_val, y, nthreads())
    return y


def batch_norm_backward_reduce_hardtanh(dy, x, mean, invstd, weight, bias, min_val, max_val):
    C = x.shape[1]
    sum_dy, sum_dy_xhat = empty((C,), x.dtype), empty((C,), x.dtype)  # (C,), (C,)
    _cpp.batch_norm_backward_reduce_hardtanh(contiguous(dy), contiguous(x), contiguous(mean), contiguous(invstd),
                                             contiguous(weight), contiguous(bias), min_val, max_val, sum_dy,
                                             sum_dy_xhat, nthreads())
    return sum_dy, sum_dy_xhat


def batch_norm_backward_input_hardtanh(dy, x, mean, invstd, weight, bias, min_val, max_val, sum_dy, sum_dy_xhat,
                                       training):
    dx = empty(x.shape, x.dtype)  # (N, C, L)
    _cpp.batch_norm_backward_input_hardtanh(contiguous(dy), contiguous(x), contiguous(mean), contiguous(invstd),
                                            contiguous(weight), contiguous(bias), min_val, max_val,
                                            contiguous(sum_dy), contiguous(sum_dy_xhat), training, dx, nthreads())
    return dx
