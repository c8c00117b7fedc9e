"""Inputs past 2^31 elements on the C++ backend: one 46400 x 46400 float32 image (8.6 GB), through
every op that indexes it and fits in about 18 GB beside it, one at a time: the convolution's
forward (3x3, stride 1 and 2: the GEMM in bands of rows), its stride-1 dgrad and its wgrad (one
channel: depthwise loops), max pooling with indices and its backward, average pooling and its
backward, relu; and a two-channel 32800 x 32800 image (also 8.6 GB, each channel under 2^31), the
convolution's other paths: the flat GEMM forward, flat wgrad, strided dgrad (GEMM + col2im). The
reference is far too slow for the whole, so each result is checked on crops: the corners, the
middles of the edges and the centre, and the rows where the flat index passes 2^31, against the
reference run on the crop of the input they read (with the padding as zeros), or, for dw, against
a closed form. Inputs are small integers, so every result is exact. Relu's backward (dy, x and dx:
26 GB) does not fit. Run with ``--huge`` (skipped otherwise)."""

import gc

import numpy as np
import pytest

import fastconv

pytestmark = pytest.mark.huge

if fastconv.backend_status()["cpp"] is not None:
    pytest.skip(fastconv.backend_status()["cpp"], allow_module_level=True)

H = W = 46400  # 2^31 elements are 46282.5 rows of x
WRAP = 2**31 // W
H2 = W2 = 32800  # two channels: 2^31 elements are 1.996 planes
WRAP2 = (2**31 - H2 * W2) // W2  # the row of the second plane where they end
PERIOD = 7


def _image(C=1, side=None):
    """x (1, C, side, side) (H x W by default), channel ch = ((3*r + c + 2*ch) % 7) - 3: small
    integers whose sums over any run of a row or column stay small (a period sums to 0), so fp32
    sums of billions of them are exact."""
    rows_, cols = (side, side) if side else (H, W)
    rows = ((np.arange(PERIOD)[:, None] * 3 + np.arange(cols)[None, :]) % PERIOD - 3).astype(np.float32)
    x = np.empty((1, C, rows_, cols), np.float32)
    for ch in range(C):
        for r0 in range(0, rows_, 4096):
            r = np.arange(r0, min(rows_, r0 + 4096))
            x[0, ch, r0:r[-1] + 1] = rows[(3 * r + 2 * ch) % PERIOD]
    return x


def _crops(y, stride, wrap=None):
    """Crops (r0, r1, c0, c1) of a result y whose rows step `stride` rows of x: the corners, the
    middles of the edges and the centre, and the rows around where the flat index of x passes
    2^31 (row `wrap` of its last plane, WRAP by default), and of y itself where it does too."""
    n, m = y.shape[2:]
    wrap = WRAP if wrap is None else wrap
    rows = [(0, 6), (n // 2 - 3, n // 2 + 3), (wrap // stride - 3, wrap // stride + 3), (n - 6, n)]
    if y.size > 2**31:
        rows.append(((2**31 % (n * m)) // m - 3, (2**31 % (n * m)) // m + 3))
    for r0, r1 in rows:
        for c0, c1 in ((0, 6), (m // 2 - 3, m // 2 + 3), (m - 6, m)):
            yield r0, r1, c0, c1


def _window(a, r0, r1, c0, c1):
    """a[..., r0:r1, c0:c1] with rows and columns outside a as zeros."""
    out = np.zeros(a.shape[:2] + (r1 - r0, c1 - c0), a.dtype)
    rr0, rr1, cc0, cc1 = max(r0, 0), min(r1, a.shape[2]), max(c0, 0), min(c1, a.shape[3])
    if rr0 < rr1 and cc0 < cc1:
        out[..., rr0 - r0:rr1 - r0, cc0 - c0:cc1 - c0] = a[..., rr0:rr1, cc0:cc1]
    return out


def _check_conv_crops(got, a, w, stride, pad, what, wrap=None):
    """got = conv2d(a, w, stride, pad) on every crop: the reference on the window of a it reads."""
    k = w.shape[2]
    for r0, r1, c0, c1 in _crops(got, stride, wrap):
        win = _window(a, r0 * stride - pad, (r1 - 1) * stride - pad + k, c0 * stride - pad, (c1 - 1) * stride - pad + k)
        want = fastconv.conv2d(win, w, stride=stride, backend="reference")
        np.testing.assert_array_equal(got[..., r0:r1, c0:c1], want, f"{what} at rows {r0}:{r1}, cols {c0}:{c1}")


@pytest.fixture
def x():
    """A fresh x per test, freed after it: x and two results of its size are all that fit."""
    yield _image()
    gc.collect()


W3 = (np.arange(9, dtype=np.float32).reshape(1, 1, 3, 3) - 4)


@pytest.mark.parametrize("stride", [2, 1])
def test_conv_forward(x, stride):
    y = fastconv.conv2d(x, W3, stride=stride, padding=1, backend="cpp")
    _check_conv_crops(y, x, W3, stride, 1, f"y at stride {stride}")


def _check_wgrad_of_ones(dw, x):
    """dw (1, C, 3, 3) of a 3x3 conv, padding 1, stride 1, dy = 1: dw[0, c, kh, kw] is the sum of
    channel c over the rows kh-1.. and columns kw-1.. the padded windows reach, i.e. all of it
    but one row and one column or none."""
    for c in range(x.shape[1]):
        plane = x[0, c]
        total = plane.sum(dtype=np.float64)
        first_row, last_row = plane[0].sum(dtype=np.float64), plane[-1].sum(dtype=np.float64)
        first_col, last_col = plane[:, 0].sum(dtype=np.float64), plane[:, -1].sum(dtype=np.float64)
        want = np.empty((3, 3))
        for kh in range(3):
            for kw in range(3):
                row = {0: last_row, 1: 0.0, 2: first_row}[kh]  # the row the windows miss
                col = {0: last_col, 1: 0.0, 2: first_col}[kw]
                corner = plane[-1 if kh == 0 else 0, -1 if kw == 0 else 0] if kh != 1 and kw != 1 else 0.0
                want[kh, kw] = total - row - col + corner
        np.testing.assert_array_equal(dw[0, c], want.astype(np.float32), f"dw of channel {c}")


def test_conv_wgrad(x):
    dy = np.ones((1, 1, H, W), np.float32)
    dw = fastconv.conv2d_backward(dy, x, W3, padding=1, needs=(False, True, False), backend="cpp")[1]
    del dy
    _check_wgrad_of_ones(dw, x)


def test_max_pool_and_backward(x):
    y = fastconv.max_pool2d(x, 2, backend="cpp")  # (1, 1, 23200, 23200)
    for r0, r1, c0, c1 in _crops(y, 2):
        want = fastconv.max_pool2d(x[..., 2 * r0:2 * r1, 2 * c0:2 * c1], 2, backend="reference")
        np.testing.assert_array_equal(y[..., r0:r1, c0:c1], want, f"max pool y at {r0}:{r1}, {c0}:{c1}")
    del y
    # 8x8 windows: indices (int64, past 2^31 in the last rows) of a 5800 x 5800 result, and dx
    res = fastconv.max_pool2d(x, 8, return_indices=True, backend="cpp")
    dy = (np.arange(res.y.size, dtype=np.int64) % 5 + 1).astype(np.float32).reshape(res.y.shape)
    for r0, r1, c0, c1 in _crops(res.y, 8):
        crop = x[..., 8 * r0:8 * r1, 8 * c0:8 * c1]
        want = fastconv.max_pool2d(crop, 8, return_indices=True, backend="reference")
        r, c = np.divmod(want.indices, 8 * (c1 - c0))  # in the crop -> in x
        np.testing.assert_array_equal(res.indices[..., r0:r1, c0:c1], (r + 8 * r0) * W + c + 8 * c0, "indices")
    dx = fastconv.max_pool2d_backward(dy, x, 8, indices=res.indices, backend="cpp")
    for r0, r1, c0, c1 in _crops(res.y, 8):
        want = fastconv.max_pool2d_backward(dy[..., r0:r1, c0:c1], x[..., 8 * r0:8 * r1, 8 * c0:8 * c1], 8,
                                            backend="reference")
        np.testing.assert_array_equal(dx[..., 8 * r0:8 * r1, 8 * c0:8 * c1], want, f"max pool dx at {r0}:{r1}")


def test_avg_pool_and_backward(x):
    y = fastconv.avg_pool2d(x, 2, backend="cpp")
    for r0, r1, c0, c1 in _crops(y, 2):
        want = fastconv.avg_pool2d(x[..., 2 * r0:2 * r1, 2 * c0:2 * c1], 2, backend="reference")
        np.testing.assert_array_equal(y[..., r0:r1, c0:c1], want, f"avg pool y at {r0}:{r1}, {c0}:{c1}")
    del y
    dy = np.ones((1, 1, H // 4, W // 4), np.float32)
    dy[..., ::3, :] = 2
    dx = fastconv.avg_pool2d_backward(dy, x, 4, backend="cpp")
    for r0, r1, c0, c1 in _crops(dy, 4):
        want = fastconv.avg_pool2d_backward(dy[..., r0:r1, c0:c1], x[..., 4 * r0:4 * r1, 4 * c0:4 * c1], 4,
                                            backend="reference")
        np.testing.assert_array_equal(dx[..., 4 * r0:4 * r1, 4 * c0:4 * c1], want, f"avg pool dx at {r0}:{r1}")


def test_relu(x):
    y = fastconv.relu(x, backend="cpp")
    for r0, r1, c0, c1 in _crops(y, 1):
        np.testing.assert_array_equal(y[..., r0:r1, c0:c1], np.maximum(x[..., r0:r1, c0:c1], 0), f"relu at {r0}:{r1}")


def test_conv_dgrad_stride1():
    """dx needs no x (a zero-size broadcast stands for it): dy (8.6 GB) and dx. dx is the forward of
    dy with the flipped kernel, checked on crops against the reference forward."""
    dy = _image()
    dx = fastconv.conv2d_backward(dy, np.broadcast_to(np.float32(0), dy.shape), W3, padding=1,
                                  needs=(True, False, False), backend="cpp")[0]
    _check_conv_crops(dx, dy, W3[..., ::-1, ::-1].copy(), 1, 1, "dx")


W2CH = np.stack([W3[0, 0], W3[0, 0][::-1]])[None]  # (1, 2, 3, 3)


def test_two_channels_forward_and_flat_wgrad():
    x = _image(2, H2)
    y = fastconv.conv2d(x, W2CH, padding=1, backend="cpp")
    _check_conv_crops(y, x, W2CH, 1, 1, "y of two channels", wrap=WRAP2)
    del y
    dy = np.ones((1, 1, H2, W2), np.float32)
    dw = fastconv.conv2d_backward(dy, x, W2CH, padding=1, needs=(False, True, False), backend="cpp")[1]
    _check_wgrad_of_ones(dw, x)


def test_two_channels_strided_dgrad():
    """dx (8.6 GB) of a stride-2 layer (GEMM + col2im), from dy alone: each crop of dx against the
    reference dgrad of the outputs whose windows reach it."""
    s, pad, k = 2, 1, 3
    OH = OW = (H2 + 2 * pad - k) // s + 1
    dy = _image(1, OH)
    dx = fastconv.conv2d_backward(dy, np.broadcast_to(np.float32(0), (1, 2, H2, W2)), W2CH, stride=s, padding=pad,
                                  needs=(True, False, False), backend="cpp")[0]
    for r0, r1, c0, c1 in _crops(dx, 1, wrap=WRAP2):
        o = [max(0, -(-(v0 + pad - k + 1) // s)) for v0 in (r0, c0)]  # the first outputs that reach the crop
        e = [min(n, (v1 - 1 + pad) // s + 1) for v1, n in ((r1, OH), (c1, OW))]
        a = [oo * s - pad for oo in o]  # the input row and column where output o's window starts
        dy_c = dy[..., o[0]:e[0], o[1]:e[1]]
        shape = (1, 2, (e[0] - o[0] - 1) * s + k, (e[1] - o[1] - 1) * s + k)
        want = fastconv.conv2d_backward(dy_c, np.zeros(shape, np.float32), W2CH, stride=s,
                                        needs=(True, False, False), backend="reference")[0]
        np.testing.assert_array_equal(dx[..., r0:r1, c0:c1], want[..., r0 - a[0]:r1 - a[0], c0 - a[1]:c1 - a[1]],
                                      f"dx at rows {r0}:{r1}, cols {c0}:{c1}")
