"""Cython pooling (_pool.pyx): direct loops, one OpenMP prange over the N*C planes. The per-axis
window tables the kernels read are computed here, from the params, with NumPy."""

import numpy as np

from ..._checks import indices_out_of_range
from .._common import empty
from . import _pool
from ._util import contiguous, nthreads


def _planes(a):
    """(N, C, h, w) as the kernels' (N*C, h*w) in C order: a view, or one copy of an input."""
    return contiguous(a).reshape(a.shape[0] * a.shape[1], a.shape[2] * a.shape[3])


def _table(*columns):
    """Per-axis window table: one row of these columns per output index, flattened, (3*out,)."""
    return np.stack(columns, axis=1).astype(np.intp).ravel()


def _inside(pos, size):
    """Per row of ``pos`` (positions increasing along the row): the columns [lo, hi) whose
    positions lie inside [0, size), as two (rows,) arrays; lo = hi = 0 for a row with none."""
    inside = (pos >= 0) & (pos < size)  # pos.shape
    some = inside.any(axis=1)  # (rows,)
    return (np.where(some, inside.argmax(axis=1), 0),
            np.where(some, pos.shape[1] - inside[:, ::-1].argmax(axis=1), 0))


def _max_windows(out, size, k, stride, pad, dil):
    """Per output index: the input index of its first tap, and its taps [k0, k1) inside the image
    (pool_params ensures every window has one)."""
    start = np.arange(out) * stride - pad  # (out,)
    return _table(start, *_inside(start[:, None] + np.arange(k)[None, :] * dil, size))  # taps: (out, k)


def _max_taps(out, size, k, stride, pad, dil):
    """Per tap: its input offset (the input index is o*stride + offset), and the outputs [lo, hi)
    whose window it falls inside."""
    offset = np.arange(k) * dil - pad  # (k,)
    return _table(offset, *_inside(np.arange(out)[None, :] * stride + offset[:, None], size))  # outputs: (k, out)


def _avg_windows(out, size, k, stride, pad, count_include_pad):
    """Per output index: input range [lo, hi) inside the image and PyTorch's divisor factor: the
    window cut at the end of the padding, counting the padding or not."""
    start = np.arange(out) * stride - pad  # (out,)
    end = np.minimum(start + k, size + pad)  # (out,)
    lo, hi = np.maximum(start, 0), np.minimum(end, size)  # (out,), (out,)
    return _table(lo, hi, end - start if count_include_pad else hi - lo)


def _adaptive_windows(out, size):
    """Window o spans [floor(o*size/out), ceil((o+1)*size/out)), as in PyTorch."""
    o = np.arange(out)
    lo, hi = o * size // out, ((o + 1) * size + out - 1) // out  # (out,), (out,)
    return _table(lo, hi, hi - lo)


def max_pool2d_forward(x, p, with_indices=True):
    y = empty(p.y_shape, x.dtype)  # (N, C, OH, OW)
    indices = np.empty(p.y_shape, dtype=np.int64)  # (N, C, OH, OW); every entry written
    rows = _max_windows(p.OH, p.H, p.KH, p.stride_h, p.pad_h, p.dil_h)
    cols = _max_windows(p.OW, p.W, p.KW, p.stride_w, p.pad_w, p.dil_w)
    taps = _max_taps(p.OW, p.W, p.KW, p.stride_w, p.pad_w, p.dil_w)
    _pool.max_pool2d_forward(_planes(x), _planes(y), _planes(indices), p.W, p.OH, p.OW, p.KW, p.stride_w, p.dil_h,
                             p.dil_w, rows, cols, taps, nthreads())
    return y, indices if with_indices else None


def max_pool2d_backward(dy, indices, p):
    dx = empty(p.x_shape, dy.dtype)  # (N, C, H, W)
    if _pool.max_pool2d_backward(_planes(dy), _planes(indices), _planes(dx), nthreads()):
        raise indices_out_of_range("max_pool2d_backward", indices, p.H * p.W)
    return dx


def _avg_tables(p):
    return (_avg_windows(p.OH, p.H, p.KH, p.stride_h, p.pad_h, p.count_include_pad),
            _avg_windows(p.OW, p.W, p.KW, p.stride_w, p.pad_w, p.count_include_pad), p.divisor_override or 0)


def _adaptive_tables(p):
    return _adaptive_windows(p.OH, p.H), _adaptive_windows(p.OW, p.W), 0


def _window_sum_forward(x, p, tables):
    y = empty(p.y_shape, x.dtype)  # (N, C, OH, OW)
    _pool.window_sum_forward(_planes(x), _planes(y), p.W, p.OH, p.OW, *tables, nthreads())
    return y


def _window_sum_backward(dy, p, tables):
    dx = empty(p.x_shape, dy.dtype)  # (N, C, H, W)
    _pool.window_sum_backward(_planes(dy), _planes(dx), p.W, p.OH, p.OW, *tables, nthreads())
    return dx


def avg_pool2d_forward(x, p):
    return _window_sum_forward(x, p, _avg_tables(p))


def avg_pool2d_backward(dy, p):
    return _window_sum_backward(dy, p, _avg_tables(p))


def adaptive_avg_pool2d_forward(x, p):
    return _window_sum_forward(x, p, _adaptive_tables(p))


def adaptive_avg_pool2d_backward(dy, p):
    return _window_sum_backward(dy, p, _adaptive_tables(p))
