"""Reference 2-d pooling: max (with PyTorch's argmax indices), average, adaptive average.

Max and average pooling loop over the KH*KW window taps. For tap (kh, kw), the input pixels it
meets at every output position form a strided slice of the padded input, ``_tap(xp, p, kh, kw)``,
of shape (N, C, OH, OW); scanning taps in order kh-major is PyTorch's scan order inside a window.
Adaptive pooling loops over output rows, then output columns, summing each window's slice.

Averages are one division of the exact window sum by the window's divisor (never a multiply by a
reciprocal), so on small-integer inputs every backend can match the reference bit for bit.
"""

import numpy as np

from ..._checks import indices_out_of_range
from .._common import empty


def _tap(xp, p, kh, kw):
    """View of the padded input that window tap (kh, kw) meets: (N, C, OH, OW), no copy."""
    h0, w0 = kh * p.dil_h, kw * p.dil_w
    return xp[:, :, h0:h0 + p.stride_h * (p.OH - 1) + 1:p.stride_h,
              w0:w0 + p.stride_w * (p.OW - 1) + 1:p.stride_w]


def _padded_shape(p):
    """(N, C, Hp, Wp): the symmetric padding plus, with ceil_mode, what the last window reaches past it."""
    reach_h = (p.OH - 1) * p.stride_h + p.dil_h * (p.KH - 1) + 1
    reach_w = (p.OW - 1) * p.stride_w + p.dil_w * (p.KW - 1) + 1
    return (p.N, p.C, max(reach_h, p.H + 2 * p.pad_h), max(reach_w, p.W + 2 * p.pad_w))


def _pad(x, p):
    """x in a zero-padded buffer of :func:`_padded_shape`: (N, C, Hp, Wp)."""
    xp = np.zeros(_padded_shape(p), dtype=x.dtype)  # (N, C, Hp, Wp)
    xp[:, :, p.pad_h:p.pad_h + p.H, p.pad_w:p.pad_w + p.W] = x
    return xp


def _unpad(xp, p):
    return np.ascontiguousarray(xp[:, :, p.pad_h:p.pad_h + p.H, p.pad_w:p.pad_w + p.W])  # (N, C, H, W)


def _tap_rows_cols(p, kh, kw):
    """Image row of tap kh for every output row, image column of tap kw for every output column."""
    ih = np.arange(p.OH) * p.stride_h - p.pad_h + kh * p.dil_h  # (OH,)
    iw = np.arange(p.OW) * p.stride_w - p.pad_w + kw * p.dil_w  # (OW,)
    return ih, iw


# --------------------------------------------------------------------------------------------
# max pooling
# --------------------------------------------------------------------------------------------

def max_pool2d_forward(x, p, with_indices=True):
    """PyTorch's CPU scan: per window, start from -inf with the first in-image position's index,
    then take a tap when ``value > max or isnan(value)``. So ties keep the first position, a NaN
    wins and the last NaN's index is kept, and an all -inf window reports its first position."""
    xp = _pad(x, p)  # (N, C, Hp, Wp)
    y = empty(p.y_shape, x.dtype)  # (N, C, OH, OW)
    indices = np.full(p.y_shape, -1, dtype=np.int64)  # (N, C, OH, OW)
    seen = np.zeros((p.OH, p.OW), dtype=bool)  # has the window met an in-image tap yet
    for kh in range(p.KH):
        for kw in range(p.KW):
            ih, iw = _tap_rows_cols(p, kh, kw)
            inside = ((ih >= 0) & (ih < p.H))[:, None] & ((iw >= 0) & (iw < p.W))[None, :]  # (OH, OW)
            v = _tap(xp, p, kh, kw)  # (N, C, OH, OW)
            # padding never competes; the first in-image tap always takes (max starts at -inf)
            take = inside & (~seen | (v > y) | np.isnan(v))  # (N, C, OH, OW)
            np.copyto(y, v, where=take)
            np.copyto(indices, ih[:, None] * p.W + iw[None, :], where=take)
            seen |= inside
    return y, indices if with_indices else None


def max_pool2d_backward(dy, indices, p):
    """dx[n, c].flat[indices[n, c, oh, ow]] += dy[n, c, oh, ow]; overlapping windows that chose
    the same pixel add up (np.add.at accumulates duplicate indices, fancy ``+=`` would not)."""
    plane = p.H * p.W
    # one reduction instead of min() and max(): read as unsigned, a negative index is huge too
    if indices.size and bool(indices.view(np.uint64).max() >= plane):
        raise indices_out_of_range("max_pool2d_backward", indices, plane)
    rows = np.arange(p.N * p.C, dtype=np.int64)[:, None] * plane  # (N*C, 1)
    flat = (rows + indices.reshape(p.N * p.C, -1)).ravel()  # (N*C*OH*OW,)
    dx = np.zeros(p.N * p.C * plane, dtype=dy.dtype)  # (N*C*H*W,)
    np.add.at(dx, flat, dy.ravel())
    return dx.reshape(p.x_shape)


# --------------------------------------------------------------------------------------------
# average pooling
# --------------------------------------------------------------------------------------------

def _avg_divisor(p, dtype):
    """PyTorch's divisor for every window, (OH, OW).

    The window [start, start + K) is first cut at the end of the padding (a ceil_mode window past
    it never counts those rows); its size then is the count including padding. Clipped to the
    image it is the count of real pixels. ``divisor_override`` replaces both.
    """
    if p.divisor_override is not None:
        return np.full((p.OH, p.OW), p.divisor_override, dtype=dtype)
    sizes = []
    for out, stride, pad, k, size in ((p.OH, p.stride_h, p.pad_h, p.KH, p.H),
                                      (p.OW, p.stride_w, p.pad_w, p.KW, p.W)):
        start = np.arange(out) * stride - pad  # (out,)
        end = np.minimum(start + k, size + pad)  # (out,)
        if p.count_include_pad:
            sizes.append(end - start)
        else:
            sizes.append(np.minimum(end, size) - np.maximum(start, 0))
    return (sizes[0][:, None] * sizes[1][None, :]).astype(dtype)  # (OH, OW)


def avg_pool2d_forward(x, p):
    xp = _pad(x, p)  # (N, C, Hp, Wp); zeros in the padding add nothing to a window's sum
    total = np.zeros(p.y_shape, dtype=x.dtype)  # (N, C, OH, OW)
    for kh in range(p.KH):
        for kw in range(p.KW):
            total += _tap(xp, p, kh, kw)
    return total / _avg_divisor(p, x.dtype)  # (N, C, OH, OW)


def avg_pool2d_backward(dy, p):
    share = dy / _avg_divisor(p, dy.dtype)  # (N, C, OH, OW): what each window pixel receives
    dxp = np.zeros(_padded_shape(p), dtype=dy.dtype)  # (N, C, Hp, Wp)
    for kh in range(p.KH):
        for kw in range(p.KW):
            # one tap touches each padded pixel at most once, so += through the view is exact
            _tap(dxp, p, kh, kw)[...] += share
    return _unpad(dxp, p)


# --------------------------------------------------------------------------------------------
# adaptive average pooling
# --------------------------------------------------------------------------------------------

def _adaptive_windows(out, size):
    """Window o spans [floor(o*size/out), ceil((o+1)*size/out)), as in PyTorch."""
    o = np.arange(out)
    return o * size // out, ((o + 1) * size + out - 1) // out  # (out,), (out,)


def adaptive_avg_pool2d_forward(x, p):
    h0, h1 = _adaptive_windows(p.OH, p.H)
    w0, w1 = _adaptive_windows(p.OW, p.W)
    row_sums = empty((p.N, p.C, p.OH, p.W), x.dtype)  # (N, C, OH, W)
    for oh in range(p.OH):
        row_sums[:, :, oh, :] = x[:, :, h0[oh]:h1[oh], :].sum(axis=2)
    total = empty(p.y_shape, x.dtype)  # (N, C, OH, OW)
    for ow in range(p.OW):
        total[:, :, :, ow] = row_sums[:, :, :, w0[ow]:w1[ow]].sum(axis=3)
    count = ((h1 - h0)[:, None] * (w1 - w0)[None, :]).astype(x.dtype)  # (OH, OW)
    return total / count  # (N, C, OH, OW)


def adaptive_avg_pool2d_backward(dy, p):
    h0, h1 = _adaptive_windows(p.OH, p.H)
    w0, w1 = _adaptive_windows(p.OW, p.W)
    count = ((h1 - h0)[:, None] * (w1 - w0)[None, :]).astype(dy.dtype)  # (OH, OW)
    share = dy / count  # (N, C, OH, OW)
    cols = np.zeros((p.N, p.C, p.OH, p.W), dtype=dy.dtype)  # (N, C, OH, W)
    for ow in range(p.OW):  # windows may overlap: accumulate
        cols[:, :, :, w0[ow]:w1[ow]] += share[:, :, :, ow:ow + 1]
    dx = np.zeros(p.x_shape, dtype=dy.dtype)  # (N, C, H, W)
    for oh in range(p.OH):
        dx[:, :, h0[oh]:h1[oh], :] += cols[:, :, oh:oh + 1, :]
    return dx
