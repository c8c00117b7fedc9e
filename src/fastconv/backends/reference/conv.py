"""Reference 2-d convolution: forward (fprop), backward-input (dgrad), backward-weight (wgrad).

Each pass loops over the KH*KW kernel taps. For tap (kh, kw), the input pixels it meets at every
output position form a strided slice of the padded input, ``_tap(xp, p, kh, kw)``, of shape
(N, C_in, OH, OW); each pass is then one small batched matrix product per tap. Groups are an extra
batch axis: channels are viewed as (groups, channels per group).
"""

import numpy as np

from .._common import empty


def _tap(xp, p, kh, kw):
    """View of the padded input that kernel tap (kh, kw) meets: (N, C, OH, OW), no copy."""
    h0, w0 = kh * p.dil_h, kw * p.dil_w
    return xp[:, :, h0:h0 + p.stride_h * (p.OH - 1) + 1:p.stride_h,
              w0:w0 + p.stride_w * (p.OW - 1) + 1:p.stride_w]


def _grouped(a, groups):
    """(N, C, OH, OW) -> (N, groups, C/groups, OH*OW)."""
    return a.reshape(a.shape[0], groups, a.shape[1] // groups, -1)


def _grouped_weight(w, p):
    """(C_out, C_in/groups, KH, KW) -> (groups, C_out/groups, C_in/groups, KH, KW)."""
    return w.reshape(p.groups, p.C_out // p.groups, p.C_in // p.groups, p.KH, p.KW)


def _padded_shape(p):
    return (p.N, p.C_in, p.H + p.pad_t + p.pad_b, p.W + p.pad_l + p.pad_r)


def conv2d_forward(x, w, b, p):
    xp = np.pad(x, ((0, 0), (0, 0), (p.pad_t, p.pad_b), (p.pad_l, p.pad_r)))  # (N, C_in, Hp, Wp)
    wg = _grouped_weight(w, p)
    y = np.zeros((p.N, p.groups, p.C_out // p.groups, p.OH * p.OW), dtype=x.dtype)
    for kh in range(p.KH):
        for kw in range(p.KW):
            # (G, C_out/G, C_in/G) @ (N, G, C_in/G, OH*OW) -> (N, G, C_out/G, OH*OW)
            y += wg[:, :, :, kh, kw] @ _grouped(_tap(xp, p, kh, kw), p.groups)
    y = y.reshape(p.y_shape)  # (N, C_out, OH, OW)
    if b is not None:
        y += b.reshape(1, -1, 1, 1)
    return y


def conv2d_backward_input(dy, w, p):
    dyg = _grouped(dy, p.groups)  # (N, G, C_out/G, OH*OW)
    wg = _grouped_weight(w, p)
    dxp = np.zeros(_padded_shape(p), dtype=dy.dtype)  # (N, C_in, Hp, Wp)
    for kh in range(p.KH):
        for kw in range(p.KW):
            # (G, C_in/G, C_out/G) @ (N, G, C_out/G, OH*OW) -> (N, G, C_in/G, OH*OW)
            contribution = wg[:, :, :, kh, kw].transpose(0, 2, 1) @ dyg
            # one tap touches each padded pixel at most once, so += through the view is exact
            _tap(dxp, p, kh, kw)[...] += contribution.reshape(p.N, p.C_in, p.OH, p.OW)
    return np.ascontiguousarray(dxp[:, :, p.pad_t:p.pad_t + p.H, p.pad_l:p.pad_l + p.W])


def conv2d_backward_weight(dy, x, p):
    xp = np.pad(x, ((0, 0), (0, 0), (p.pad_t, p.pad_b), (p.pad_l, p.pad_r)))  # (N, C_in, Hp, Wp)
    dyg = _grouped(dy, p.groups)  # (N, G, C_out/G, OH*OW)
    dw = empty((p.groups, p.C_out // p.groups, p.C_in // p.groups, p.KH, p.KW), dy.dtype)
    for kh in range(p.KH):
        for kw in range(p.KW):
            xg = _grouped(_tap(xp, p, kh, kw), p.groups)  # (N, G, C_in/G, OH*OW)
            # (N, G, C_out/G, OH*OW) @ (N, G, OH*OW, C_in/G), summed over N -> (G, C_out/G, C_in/G)
            dw[:, :, :, kh, kw] = (dyg @ xg.transpose(0, 1, 3, 2)).sum(axis=0)
    return dw.reshape(p.w_shape)


def conv2d_backward_bias(dy):
    return dy.sum(axis=(0, 2, 3))  # (C_out,)
