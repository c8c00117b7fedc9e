"""max_pool2d, avg_pool2d, adaptive_avg_pool2d and their backwards: the reference against direct
loops, finite differences and PyTorch (ties, NaN, -inf, ceil_mode, divisors); every backend against
the reference; bad input; random configurations."""

import itertools
import math
from fractions import Fraction
from typing import NamedTuple

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import fastconv
from fastconv.problems import POOL_PROBLEMS, Pool
from support import (bad_input_cases, check_bad_input, DTYPES, assert_close, assert_close_half, assert_equal,
                     assert_fresh_output, assert_gradient, assert_unchanged, backends_implementing, randn, require,
                     small_ints, snapshot, takes_float16)

FUNCS = ("max_pool2d_forward", "max_pool2d_backward", "avg_pool2d_forward", "avg_pool2d_backward",
         "adaptive_avg_pool2d_forward", "adaptive_avg_pool2d_backward")


@pytest.fixture
def backend(backend):
    """The suite's backend matrix, skipping backends that do not implement the pooling kernels yet."""
    return require(backend, "pool", *FUNCS)


PROBLEMS = [pytest.param(q, id=q.name) for q in POOL_PROBLEMS]
AVG_PROBLEMS = [pytest.param(q, id=q.name) for q in POOL_PROBLEMS if q.dilation == 1]
#: (count_include_pad, divisor_override) combinations every average-pooling test goes through
AVG_MODES = [pytest.param(True, None, id="include_pad"), pytest.param(False, None, id="exclude_pad"),
             pytest.param(True, 3, id="divisor_3"), pytest.param(False, -2, id="divisor_-2")]
ADAPTIVE = [  # (x shape, output_size)
    pytest.param((2, 3, 7, 10), (3, 4), id="7x10_to_3x4"),
    pytest.param((1, 2, 5, 5), 7, id="5_to_7_larger"),
    pytest.param((2, 3, 10, 7), 1, id="global"),
    pytest.param((2, 2, 6, 9), (None, 4), id="none_keeps_H"),
    pytest.param((1, 3, 4, 9), (5, None), id="none_keeps_W_and_4_to_5"),
    pytest.param((2, 1, 1, 1), (2, 3), id="1x1_to_2x3"),
]


# --------------------------------------------------------------------------------------------
# geometry, computed here independently of fastconv._params
# --------------------------------------------------------------------------------------------

def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


class Geometry(NamedTuple):
    K: tuple
    S: tuple
    P: tuple
    D: tuple
    out: tuple


def _out_size(size, k, s, p, d, ceil_mode):
    """PyTorch's documented formula; with ceil_mode the last window may not start in the right padding."""
    frac = Fraction(size + 2 * p - d * (k - 1) - 1, s)
    out = (math.ceil(frac) if ceil_mode else math.floor(frac)) + 1
    if ceil_mode and (out - 1) * s >= size + p:
        out -= 1
    return out


def geometry(q: Pool) -> Geometry:
    K, P, D = _pair(q.kernel_size), _pair(q.padding), _pair(q.dilation)
    S = K if q.stride is None else _pair(q.stride)
    out = tuple(_out_size(q.x_shape[2 + a], K[a], S[a], P[a], D[a], q.ceil_mode) for a in (0, 1))
    return Geometry(K, S, P, D, out)


def window_in_padding(q: Pool) -> bool:
    """Does some window (with dilation) step over the whole image along H or W?"""
    g = geometry(q)
    return any(not any(0 <= o * g.S[a] - g.P[a] + t * g.D[a] < q.x_shape[2 + a] for t in range(g.K[a]))
               for a in (0, 1) for o in range(g.out[a]))


def _args(q: Pool):
    """max_pool2d's positional hyper-parameters."""
    return (q.kernel_size, q.stride, q.padding, q.dilation, q.ceil_mode)


def _avg_args(q: Pool, count_include_pad=True, divisor_override=None):
    return (q.kernel_size, q.stride, q.padding, q.ceil_mode, count_include_pad, divisor_override)


def _permutation(rng, shape, dtype):
    """Distinct values in [-1, 1), at least 1/size apart: no ties, so max pooling's gradient is
    defined everywhere (and a finite-difference step never changes which pixel wins)."""
    size = int(np.prod(shape))
    return (2 * rng.permutation(size).reshape(shape) / size - 1).astype(dtype)


# --------------------------------------------------------------------------------------------
# an independent formulation: direct loops over every output pixel and window position
# --------------------------------------------------------------------------------------------

def direct_max_pool2d(x, q: Pool):
    """PyTorch's CPU kernel, transcribed: max starts at -inf with the first in-image position's
    index and moves on ``v > max or isnan(v)``. Vectorised over (N, C) only."""
    g = geometry(q)
    N, C, H, W = x.shape
    y = np.zeros((N, C, *g.out), x.dtype)
    idx = np.zeros((N, C, *g.out), np.int64)
    for oh, ow in itertools.product(range(g.out[0]), range(g.out[1])):
        taps = [(oh * g.S[0] - g.P[0] + i * g.D[0], ow * g.S[1] - g.P[1] + j * g.D[1])
                for i in range(g.K[0]) for j in range(g.K[1])]
        taps = [(r, c) for r, c in taps if 0 <= r < H and 0 <= c < W]
        best = np.full((N, C), -np.inf, x.dtype)
        best_i = np.full((N, C), taps[0][0] * W + taps[0][1], np.int64)
        for r, c in taps:
            v = x[:, :, r, c]
            move = (v > best) | np.isnan(v)
            best, best_i = np.where(move, v, best), np.where(move, r * W + c, best_i)
        y[:, :, oh, ow], idx[:, :, oh, ow] = best, best_i
    return y, idx


def direct_max_pool2d_backward(dy, idx, x_shape):
    dx = np.zeros(x_shape, dy.dtype)
    N, C, H, W = x_shape
    for n, c in itertools.product(range(N), range(C)):
        plane = dx[n, c].reshape(-1)
        for d, i in zip(dy[n, c].ravel(), idx[n, c].ravel()):
            plane[i] += d
    return dx


def avg_windows(q: Pool, count_include_pad, divisor_override):
    """(oh, ow, rows, cols, divisor) per window, by PyTorch's rule: cut the window at the end of
    the padding, count it (with padding), then clip it to the image."""
    g = geometry(q)
    H, W = q.H, q.W
    for oh, ow in itertools.product(range(g.out[0]), range(g.out[1])):
        hs, ws = oh * g.S[0] - g.P[0], ow * g.S[1] - g.P[1]
        he, we = min(hs + g.K[0], H + g.P[0]), min(ws + g.K[1], W + g.P[1])
        pool_size = (he - hs) * (we - ws)
        rows, cols = range(max(hs, 0), min(he, H)), range(max(ws, 0), min(we, W))
        divisor = divisor_override or (pool_size if count_include_pad else len(rows) * len(cols))
        yield oh, ow, rows, cols, divisor


def direct_avg_divisor(q, count_include_pad, divisor_override):
    div = np.zeros(geometry(q).out)
    for oh, ow, _, _, d in avg_windows(q, count_include_pad, divisor_override):
        div[oh, ow] = d
    return div


def direct_avg_pool2d(x, q, count_include_pad=True, divisor_override=None):
    y = np.zeros((*x.shape[:2], *geometry(q).out), x.dtype)
    for oh, ow, rows, cols, d in avg_windows(q, count_include_pad, divisor_override):
        total = np.zeros(x.shape[:2], x.dtype)
        for r, c in itertools.product(rows, cols):
            total += x[:, :, r, c]
        y[:, :, oh, ow] = total / x.dtype.type(d)
    return y


def direct_avg_pool2d_backward(dy, q, count_include_pad=True, divisor_override=None):
    dx = np.zeros(q.x_shape, dy.dtype)
    for oh, ow, rows, cols, d in avg_windows(q, count_include_pad, divisor_override):
        for r, c in itertools.product(rows, cols):
            dx[:, :, r, c] += dy[:, :, oh, ow] / dy.dtype.type(d)
    return dx


def adaptive_out(x_shape, output_size):
    """(OH, OW): None keeps that input size."""
    return tuple(s if o is None else o for o, s in zip(_pair(output_size), x_shape[2:]))


def adaptive_windows(x_shape, output_size):
    """(oh, ow, rows, cols) with rows [floor(oh*H/OH), ceil((oh+1)*H/OH))."""
    H, W = x_shape[2:]
    OH, OW = adaptive_out(x_shape, output_size)
    for oh, ow in itertools.product(range(OH), range(OW)):
        rows = range(math.floor(Fraction(oh * H, OH)), math.ceil(Fraction((oh + 1) * H, OH)))
        cols = range(math.floor(Fraction(ow * W, OW)), math.ceil(Fraction((ow + 1) * W, OW)))
        yield oh, ow, rows, cols


def direct_adaptive_avg_pool2d(x, output_size):
    y = np.zeros((*x.shape[:2], *adaptive_out(x.shape, output_size)), x.dtype)
    for oh, ow, rows, cols in adaptive_windows(x.shape, output_size):
        total = np.zeros(x.shape[:2], x.dtype)
        for r, c in itertools.product(rows, cols):
            total += x[:, :, r, c]
        y[:, :, oh, ow] = total / x.dtype.type(len(rows) * len(cols))
    return y


def direct_adaptive_count(x_shape, output_size):
    count = np.zeros(adaptive_out(x_shape, output_size))
    for oh, ow, rows, cols in adaptive_windows(x_shape, output_size):
        count[oh, ow] = len(rows) * len(cols)
    return count


def direct_adaptive_avg_pool2d_backward(dy, x_shape, output_size):
    dx = np.zeros(x_shape, dy.dtype)
    for oh, ow, rows, cols in adaptive_windows(x_shape, output_size):
        for r, c in itertools.product(rows, cols):
            dx[:, :, r, c] += dy[:, :, oh, ow] / dy.dtype.type(len(rows) * len(cols))
    return dx


def _exact_dy(rng, divisor, shape, dtype):
    """Small integers times each window's divisor: dy / divisor is exact, so backwards are too."""
    return (small_ints(rng, shape, np.float64) * divisor).astype(dtype)


# --------------------------------------------------------------------------------------------
# reference vs direct loops (exact) and finite differences
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("q", PROBLEMS)
def test_max_pool_reference_matches_direct_loops_exactly(q, dtype, rng):
    x = small_ints(rng, q.x_shape, dtype, -2, 3)  # many ties: the first position must win
    y, idx = fastconv.max_pool2d(x, *_args(q), return_indices=True, backend="reference")
    y_direct, idx_direct = direct_max_pool2d(x, q)
    assert_equal(y, y_direct, f"{q.name} y")
    assert_equal(idx, idx_direct, f"{q.name} indices")
    dy = small_ints(rng, y.shape, dtype)
    dx = fastconv.max_pool2d_backward(dy, x, *_args(q), backend="reference")
    assert_equal(dx, direct_max_pool2d_backward(dy, idx_direct, x.shape), f"{q.name} dx")


@pytest.mark.parametrize("count_include_pad, divisor_override", AVG_MODES)
@pytest.mark.parametrize("q", AVG_PROBLEMS)
def test_avg_pool_reference_matches_direct_loops_exactly(q, count_include_pad, divisor_override, rng):
    args = _avg_args(q, count_include_pad, divisor_override)
    x = small_ints(rng, q.x_shape, np.float32)
    y = fastconv.avg_pool2d(x, *args, backend="reference")
    assert_equal(y, direct_avg_pool2d(x, q, count_include_pad, divisor_override), f"{q.name} forward")
    dy = _exact_dy(rng, direct_avg_divisor(q, count_include_pad, divisor_override), y.shape, np.float32)
    dx = fastconv.avg_pool2d_backward(dy, x, *args, backend="reference")
    assert_equal(dx, direct_avg_pool2d_backward(dy, q, count_include_pad, divisor_override), f"{q.name} dx")


@pytest.mark.parametrize("shape, output_size", ADAPTIVE)
def test_adaptive_reference_matches_direct_loops_exactly(shape, output_size, rng):
    x = small_ints(rng, shape, np.float32)
    y = fastconv.adaptive_avg_pool2d(x, output_size, backend="reference")
    assert_equal(y, direct_adaptive_avg_pool2d(x, output_size), "forward")
    dy = _exact_dy(rng, direct_adaptive_count(shape, output_size), y.shape, np.float32)
    dx = fastconv.adaptive_avg_pool2d_backward(dy, x, output_size, backend="reference")
    assert_equal(dx, direct_adaptive_avg_pool2d_backward(dy, shape, output_size), "dx")


@pytest.mark.parametrize("q", PROBLEMS)
def test_max_pool_gradient_matches_finite_differences(q, rng):
    x = _permutation(rng, q.x_shape, np.float64)
    dy = randn(rng, fastconv.max_pool2d(x, *_args(q)).shape, np.float64)
    dx = fastconv.max_pool2d_backward(dy, x, *_args(q), backend="reference")
    assert_gradient(dx, lambda v: fastconv.max_pool2d(v, *_args(q), backend="reference"), x, dy, q.name)


@pytest.mark.parametrize("count_include_pad, divisor_override", AVG_MODES)
@pytest.mark.parametrize("q", [p for p in AVG_PROBLEMS if p.values[0].name in ("overlap_pad", "ceil_pad", "pad_1x0")])
def test_avg_pool_gradient_matches_finite_differences(q, count_include_pad, divisor_override, rng):
    args = _avg_args(q, count_include_pad, divisor_override)
    x = randn(rng, q.x_shape, np.float64)
    dy = randn(rng, fastconv.avg_pool2d(x, *args).shape, np.float64)
    dx = fastconv.avg_pool2d_backward(dy, x, *args, backend="reference")
    assert_gradient(dx, lambda v: fastconv.avg_pool2d(v, *args, backend="reference"), x, dy, q.name)


@pytest.mark.parametrize("shape, output_size", ADAPTIVE)
def test_adaptive_gradient_matches_finite_differences(shape, output_size, rng):
    x = randn(rng, shape, np.float64)
    dy = randn(rng, fastconv.adaptive_avg_pool2d(x, output_size).shape, np.float64)
    dx = fastconv.adaptive_avg_pool2d_backward(dy, x, output_size, backend="reference")
    assert_gradient(dx, lambda v: fastconv.adaptive_avg_pool2d(v, output_size, backend="reference"), x, dy)


# --------------------------------------------------------------------------------------------
# against PyTorch
# --------------------------------------------------------------------------------------------

def _torch_grad(torch, fn, x, dy):
    """(y, dx) of ``fn`` at x by PyTorch autograd; ``fn`` returns y (or (y, indices))."""
    xt = torch.tensor(x, requires_grad=True)
    out = fn(xt)
    yt = out[0] if isinstance(out, tuple) else out
    yt.backward(torch.tensor(dy))
    return out, xt.grad.numpy()


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("q", PROBLEMS)
def test_max_pool_matches_torch(q, dtype, rng):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x = randn(rng, q.x_shape, dtype)
    y, idx = fastconv.max_pool2d(x, *_args(q), return_indices=True, backend="reference")
    dy = randn(rng, y.shape, dtype)
    (yt, it), dxt = _torch_grad(torch, lambda t: F.max_pool2d(t, *_args(q), return_indices=True), x, dy)
    assert_equal(y, yt.detach().numpy(), f"{q.name} y")  # a max is a selection: exact
    assert_equal(idx, it.numpy(), f"{q.name} indices")
    assert_close(fastconv.max_pool2d_backward(dy, x, *_args(q), backend="reference"), dxt, f"{q.name} dx")
    # and through PyTorch's own indices
    assert_close(fastconv.max_pool2d_backward(dy, x, *_args(q), indices=it.numpy()), dxt, f"{q.name} dx")


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("q", PROBLEMS)
def test_max_pool_ties_nan_and_inf_match_torch(q, dtype, rng):
    """Values from {-1, 0, 1, NaN, +inf, -inf}: ties everywhere, windows with one or several NaNs,
    all -inf windows, NaN next to +inf. Values and indices must be PyTorch's, bit for bit."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x = rng.choice(np.array([-1, 0, 1, np.nan, np.inf, -np.inf], dtype), size=q.x_shape,
                   p=[0.2, 0.2, 0.15, 0.15, 0.1, 0.2])
    x[0, 0] = -np.inf  # one whole plane of -inf: every index is its window's first position
    y, idx = fastconv.max_pool2d(x, *_args(q), return_indices=True, backend="reference")
    dy = small_ints(rng, y.shape, dtype)
    (yt, it), dxt = _torch_grad(torch, lambda t: F.max_pool2d(t, *_args(q), return_indices=True), x, dy)
    assert_equal(y, yt.detach().numpy(), f"{q.name} y")
    assert_equal(idx, it.numpy(), f"{q.name} indices")
    assert_equal(fastconv.max_pool2d_backward(dy, x, *_args(q), backend="reference"), dxt, f"{q.name} dx")


NAN_TIE_CASES = [  # (2-d plane, kernel, stride, padding, dilation): PyTorch picks index `want`
    pytest.param([[1, np.nan, 3, np.nan], [5, 2, np.nan, 0]], (2, 4), None, 0, 1, np.nan, 6, id="last_nan_wins"),
    pytest.param([[1, np.nan, 3, 7], [5, 2, 9, 0]], (2, 4), None, 0, 1, np.nan, 1, id="one_nan_beats_larger"),
    pytest.param([[-np.inf, np.nan]], (1, 2), None, 0, 1, np.nan, 1, id="nan_after_minus_inf"),
    pytest.param([[np.nan, np.inf]], (1, 2), None, 0, 1, np.nan, 0, id="inf_does_not_replace_nan"),
    pytest.param([[np.inf, np.nan]], (1, 2), None, 0, 1, np.nan, 1, id="nan_replaces_inf"),
    pytest.param([[2, 2], [2, 2]], 2, None, 0, 1, 2, 0, id="tie_keeps_first"),
    pytest.param([[1, 4, 4], [4, 0, 0]], (2, 3), None, 0, 1, 4, 1, id="tie_row_major_first"),
    pytest.param([[-np.inf] * 3] * 3, 3, 1, 1, 1, -np.inf, 4, id="all_minus_inf_padded_first_in_image"),
    pytest.param([[-np.inf] * 4] * 4, 2, 1, 1, 3, -np.inf, 5, id="all_minus_inf_dilated"),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("plane, kernel, stride, padding, dilation, want_y, want_i", NAN_TIE_CASES)
def test_nan_tie_and_minus_inf_windows(plane, kernel, stride, padding, dilation, want_y, want_i, dtype, backend):
    torch = pytest.importorskip("torch")
    x = np.array(plane, dtype)[None, None]
    args = (kernel, stride, padding, dilation)
    y, idx = fastconv.max_pool2d(x, *args, return_indices=True, backend=backend)
    yt, it = torch.nn.functional.max_pool2d(torch.tensor(x), *args, return_indices=True)
    assert_equal(y, yt.numpy())
    assert_equal(idx, it.numpy())
    assert_equal(y.ravel()[-1], np.array(want_y, dtype))  # the last window holds the documented case
    assert idx.ravel()[-1] == want_i


def test_window_entirely_in_padding_is_rejected(backend):
    """With dilation a window can step over the whole image. PyTorch returns -inf with index
    ih*W + iw of a position outside the image (and its backward then writes out of bounds), so
    fastconv refuses the configuration."""
    torch = pytest.importorskip("torch")
    x = np.arange(4.0).reshape(1, 1, 2, 2)
    _, it = torch.nn.functional.max_pool2d(torch.tensor(x), 2, 1, 1, 3, return_indices=True)
    assert it.item() >= x.size  # PyTorch's index is outside the 2x2 plane
    with pytest.raises(ValueError, match="max_pool2d: window 0 along H .* lies entirely in the padding"):
        fastconv.max_pool2d(x, 2, 1, 1, 3, backend=backend)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("count_include_pad, divisor_override", AVG_MODES)
@pytest.mark.parametrize("q", AVG_PROBLEMS)
def test_avg_pool_matches_torch(q, count_include_pad, divisor_override, dtype, rng):
    torch = pytest.importorskip("torch")
    args = _avg_args(q, count_include_pad, divisor_override)
    x = randn(rng, q.x_shape, dtype)
    y = fastconv.avg_pool2d(x, *args, backend="reference")
    dy = randn(rng, y.shape, dtype)
    yt, dxt = _torch_grad(torch, lambda t: torch.nn.functional.avg_pool2d(t, *args), x, dy)
    assert_close(y, yt.detach().numpy(), f"{q.name} forward")
    assert_close(fastconv.avg_pool2d_backward(dy, x, *args, backend="reference"), dxt, f"{q.name} dx")


@pytest.mark.filterwarnings("ignore:invalid value encountered")  # inf - inf in a window sum
def test_avg_pool_nan_and_inf_match_torch(rng):
    torch = pytest.importorskip("torch")
    x = rng.choice(np.array([1, -2, np.nan, np.inf, -np.inf]), size=(2, 3, 9, 10), p=[0.4, 0.4, 0.05, 0.1, 0.05])
    args = (3, 2, 1, True, False, None)
    y = fastconv.avg_pool2d(x, *args)
    want = torch.nn.functional.avg_pool2d(torch.tensor(x), *args).numpy()
    for kind in (np.isnan, np.isposinf, np.isneginf):
        assert_equal(kind(y), kind(want), kind.__name__)
    finite = np.isfinite(want)
    assert finite.any() and not finite.all()
    assert_close(y[finite], want[finite])


@pytest.mark.parametrize("ceil_mode", [False, True], ids=["floor", "ceil"])
def test_output_sizes_and_values_over_a_grid_match_torch(ceil_mode):
    """Every (size, kernel, stride, padding, dilation) on a small grid, along H or W (alternating):
    PyTorch and fastconv accept the same configurations (except windows entirely in the padding,
    see above) and agree."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    for size, k, s, d in itertools.product(range(1, 7), range(1, 5), range(1, 5), range(1, 4)):
        for pad in range(k // 2 + 1):
            if (size + k + s + d + pad) % 2:  # one axis per point keeps the test fast
                shape, kk, ss, pp, dd = (1, 2, size, 3), (k, 1), (s, 1), (pad, 0), (d, 1)
            else:
                shape, kk, ss, pp, dd = (1, 2, 3, size), (1, k), (1, s), (0, pad), (1, d)
            x = np.arange(float(np.prod(shape))).reshape(shape) % 5  # ties
            args = (kk, ss, pp, dd, ceil_mode)
            try:
                yt, it = F.max_pool2d(torch.tensor(x), *args, return_indices=True)
            except RuntimeError:
                with pytest.raises(ValueError, match="too small"):
                    fastconv.max_pool2d(x, *args)
                continue
            if window_in_padding(Pool("grid", *shape, kk, ss, pp, dd, ceil_mode)):
                assert (yt.numpy() == -np.inf).any()  # PyTorch's empty window: -inf, bogus index
                with pytest.raises(ValueError, match="entirely in the padding"):
                    fastconv.max_pool2d(x, *args)
                continue
            y, idx = fastconv.max_pool2d(x, *args, return_indices=True)
            assert_equal(y, yt.numpy(), f"max {args}")
            assert_equal(idx, it.numpy(), f"max indices {args}")
            if d == 1:
                for cip in (True, False):
                    want = F.avg_pool2d(torch.tensor(x), kk, ss, pp, ceil_mode, cip).numpy()
                    assert_close(fastconv.avg_pool2d(x, kk, ss, pp, ceil_mode, cip), want, f"avg {args} {cip}")


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("shape, output_size", ADAPTIVE)
def test_adaptive_matches_torch(shape, output_size, dtype, rng):
    torch = pytest.importorskip("torch")
    x = randn(rng, shape, dtype)
    y = fastconv.adaptive_avg_pool2d(x, output_size, backend="reference")
    dy = randn(rng, y.shape, dtype)
    yt, dxt = _torch_grad(torch, lambda t: torch.nn.functional.adaptive_avg_pool2d(t, output_size), x, dy)
    assert_close(y, yt.detach().numpy(), "forward")
    assert_close(fastconv.adaptive_avg_pool2d_backward(dy, x, output_size, backend="reference"), dxt, "dx")


# --------------------------------------------------------------------------------------------
# every backend against the reference
# --------------------------------------------------------------------------------------------

def _run_max(q, x, dy, backend, indices=None):
    y, idx = fastconv.max_pool2d(x, *_args(q), return_indices=True, backend=backend)
    return dict(y=y, indices=idx, y_alone=fastconv.max_pool2d(x, *_args(q), backend=backend),
                dx=fastconv.max_pool2d_backward(dy, x, *_args(q), backend=backend),
                dx_given_indices=fastconv.max_pool2d_backward(dy, x, *_args(q), indices=idx if indices is None
                                                              else indices, backend=backend))


def _run_avg(q, x, dy, backend, mode=(True, None)):
    args = _avg_args(q, *mode)
    return dict(y=fastconv.avg_pool2d(x, *args, backend=backend),
                dx=fastconv.avg_pool2d_backward(dy, x, *args, backend=backend))


def _run_adaptive(output_size, x, dy, backend):
    return dict(y=fastconv.adaptive_avg_pool2d(x, output_size, backend=backend),
                dx=fastconv.adaptive_avg_pool2d_backward(dy, x, output_size, backend=backend))


def _compare(got, want, compare, what, *inputs):
    """Every named result by ``compare``; indices always exactly (random data has no ties)."""
    for name in want:
        (assert_equal if name == "indices" else compare)(got[name], want[name], f"{what} {name}")
        assert_fresh_output(got[name], want[name].dtype, *inputs)


@pytest.mark.parametrize("q", PROBLEMS)
def test_max_pool_backend_exact_on_small_integers(q, backend, rng):
    x = small_ints(rng, q.x_shape, np.float32, -2, 3)  # ties: every backend breaks them like PyTorch
    dy = small_ints(rng, (*q.x_shape[:2], *geometry(q).out), np.float32)
    inputs = snapshot(x, dy)
    got = _run_max(q, x, dy, backend)
    assert_unchanged((x, dy), inputs)
    _compare(got, _run_max(q, x, dy, "reference"), assert_equal, f"{q.name} on {backend}", x, dy)


@pytest.mark.parametrize("count_include_pad, divisor_override", AVG_MODES)
@pytest.mark.parametrize("q", AVG_PROBLEMS)
def test_avg_pool_backend_exact_on_small_integers(q, count_include_pad, divisor_override, backend, rng):
    mode = (count_include_pad, divisor_override)
    x = small_ints(rng, q.x_shape, np.float32)
    dy = _exact_dy(rng, direct_avg_divisor(q, *mode), (*q.x_shape[:2], *geometry(q).out), np.float32)
    inputs = snapshot(x, dy)
    got = _run_avg(q, x, dy, backend, mode)
    assert_unchanged((x, dy), inputs)
    _compare(got, _run_avg(q, x, dy, "reference", mode), assert_equal, f"{q.name} on {backend}", x, dy)


@pytest.mark.parametrize("shape, output_size", ADAPTIVE)
def test_adaptive_backend_exact_on_small_integers(shape, output_size, backend, rng):
    x = small_ints(rng, shape, np.float32)
    count = direct_adaptive_count(shape, output_size)
    dy = _exact_dy(rng, count, (*shape[:2], *count.shape), np.float32)
    inputs = snapshot(x, dy)
    got = _run_adaptive(output_size, x, dy, backend)
    assert_unchanged((x, dy), inputs)
    _compare(got, _run_adaptive(output_size, x, dy, "reference"), assert_equal, f"on {backend}", x, dy)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("q", PROBLEMS)
def test_backend_close_on_random_data(q, dtype, backend, rng):
    x = randn(rng, q.x_shape, dtype)
    dy = randn(rng, (*q.x_shape[:2], *geometry(q).out), dtype)
    _compare(_run_max(q, x, dy, backend), _run_max(q, x, dy, "reference"), assert_close, f"max {q.name}", x, dy)
    if q.dilation == 1:
        for mode in ((True, None), (False, None), (False, 5)):
            _compare(_run_avg(q, x, dy, backend, mode), _run_avg(q, x, dy, "reference", mode), assert_close,
                     f"avg {q.name} {mode}", x, dy)
    dy_adaptive = randn(rng, (*q.x_shape[:2], 3, 2), dtype)
    _compare(_run_adaptive((3, 2), x, dy_adaptive, backend), _run_adaptive((3, 2), x, dy_adaptive, "reference"),
             assert_close, f"adaptive {q.name}", x, dy_adaptive)


@pytest.mark.parametrize("q", [p for p in PROBLEMS if p.values[0].name in ("ceil_pad", "dilation_2x3", "overlap_pad")])
def test_backend_accepts_non_contiguous_and_read_only_inputs(q, backend, rng):
    x = randn(rng, q.x_shape, np.float32)
    dy = randn(rng, (*q.x_shape[:2], *geometry(q).out), np.float32)
    _, idx = fastconv.max_pool2d(x, *_args(q), return_indices=True)
    dy_small = dy[:, :, :2, :3]  # a strided view, for the adaptive (2, 3) output
    want_max, want_adaptive = _run_max(q, x, dy, "reference"), _run_adaptive((2, 3), x, dy_small.copy(), "reference")
    want_avg = _run_avg(q, x, dy, "reference") if q.dilation == 1 else None
    # Fortran order (same values, odd strides) and strided views, all read-only
    xo, dyo, idxo = np.asfortranarray(x), np.repeat(dy, 2, axis=3)[..., ::2], np.asfortranarray(idx)
    for a in (xo, dyo, idxo, dy_small):
        a.setflags(write=False)
    assert not (xo.flags.c_contiguous or dyo.flags.c_contiguous or idxo.flags.c_contiguous)
    _compare(_run_max(q, xo, dyo, backend, indices=idxo), want_max, assert_close, "max", xo, dyo, idxo)
    _compare(_run_adaptive((2, 3), xo, dy_small, backend), want_adaptive, assert_close, "adaptive", xo, dy_small)
    if want_avg is not None:
        _compare(_run_avg(q, xo, dyo, backend), want_avg, assert_close, "avg", xo, dyo)


def test_return_indices_result(backend, rng):
    x = randn(rng, (2, 3, 6, 5), np.float32)
    y = fastconv.max_pool2d(x, 2, backend=backend)
    assert isinstance(y, np.ndarray)
    result = fastconv.max_pool2d(x, 2, return_indices=True, backend=backend)
    assert isinstance(result, fastconv.MaxPool2dResult)
    y2, idx = result
    assert result.y is y2 and result.indices is idx
    assert_equal(y2, y)
    assert_fresh_output(idx, np.int64, x)
    assert_fresh_output(y2, np.float32, x)


def test_max_pool_backward_accumulates_duplicate_indices(backend):
    """Overlapping windows that pick the same pixel add their gradients, as do repeated user indices."""
    x = np.array([[[[0, 0, 0], [0, 9, 0], [0, 0, 0]]]], np.float64)
    dy = np.array([[[[1, 2], [3, 4]]]], np.float64)
    dx = fastconv.max_pool2d_backward(dy, x, 2, 1, backend=backend)
    assert dx[0, 0, 1, 1] == 10 and dx.sum() == 10
    same = np.zeros((1, 1, 2, 2), np.int64)
    dx = fastconv.max_pool2d_backward(dy, x, 2, 1, indices=same, backend=backend)
    assert dx[0, 0, 0, 0] == 10 and dx.sum() == 10


def test_empty_batch(backend):
    x = np.zeros((0, 3, 7, 6), np.float32)
    y, idx = fastconv.max_pool2d(x, 3, 2, 1, return_indices=True, backend=backend)
    assert y.shape == idx.shape == (0, 3, 4, 3) and y.dtype == np.float32 and idx.dtype == np.int64
    dy = np.zeros(y.shape, np.float32)
    for dx in (fastconv.max_pool2d_backward(dy, x, 3, 2, 1, backend=backend),
               fastconv.max_pool2d_backward(dy, x, 3, 2, 1, indices=idx, backend=backend),
               fastconv.avg_pool2d_backward(dy, x, 3, 2, 1, backend=backend)):
        assert dx.shape == x.shape and dx.dtype == np.float32
    assert fastconv.avg_pool2d(x, 3, 2, 1, backend=backend).shape == (0, 3, 4, 3)
    assert fastconv.adaptive_avg_pool2d(x, (2, 5), backend=backend).shape == (0, 3, 2, 5)
    dx = fastconv.adaptive_avg_pool2d_backward(np.zeros((0, 3, 2, 5), np.float32), x, (2, 5), backend=backend)
    assert dx.shape == x.shape


def test_no_channels(backend):
    """As in PyTorch: adaptive pooling takes an input without channels, max and average pooling
    do not (only their batch may be empty)."""
    x = np.zeros((2, 0, 5, 5), np.float64)
    assert fastconv.adaptive_avg_pool2d(x, 2, backend=backend).shape == (2, 0, 2, 2)
    assert fastconv.adaptive_avg_pool2d_backward(np.zeros((2, 0, 2, 2)), x, 2, backend=backend).shape == x.shape
    for op in (fastconv.max_pool2d, fastconv.avg_pool2d):
        with pytest.raises(ValueError, match=r"non-empty C, H and W \(only the batch may be empty\), got shape \(2, 0, 5, 5\)"):
            op(x, 2, backend=backend)


@pytest.mark.parametrize("q", PROBLEMS)
def test_max_pool_backward_follows_indices_anywhere_in_the_plane(q, backend, rng):
    """Indices a caller made up need not lie in their windows: the backward still scatters dy
    through them (GPU kernels that gather from the covering windows must notice and scatter)."""
    x = small_ints(rng, q.x_shape, np.float32)
    dy = small_ints(rng, (*q.x_shape[:2], *geometry(q).out), np.float32)
    idx = rng.integers(0, q.H * q.W, size=dy.shape)
    got = fastconv.max_pool2d_backward(dy, x, *_args(q), indices=idx, backend=backend)
    assert_equal(got, direct_max_pool2d_backward(dy, idx, x.shape), q.name)
    assert_fresh_output(got, np.float32, x, dy, idx)


# --------------------------------------------------------------------------------------------
# float16, on the backends that take it: against the reference on the float32-upcast inputs
# --------------------------------------------------------------------------------------------

def _require_float16(backend):
    if not takes_float16(backend, "pool"):
        pytest.skip(f"{backend} takes no float16 pooling arrays")


def _f32(*arrays):
    return [a.astype(np.float32) for a in arrays]


@pytest.mark.parametrize("q", PROBLEMS)
def test_float16_max_pool_matches_reference(q, backend, rng):
    _require_float16(backend)
    x = rng.choice(np.array([np.nan, np.inf, -np.inf], np.float16), size=q.x_shape)
    x = np.where(rng.random(q.x_shape) < 0.1, x, randn(rng, q.x_shape, np.float16))  # float16 ties, NaN, +-inf
    dy = randn(rng, (*q.x_shape[:2], *geometry(q).out), np.float16)
    inputs = snapshot(x, dy)
    x32, dy32 = _f32(x, dy)
    y, idx = fastconv.max_pool2d(x, *_args(q), return_indices=True, backend=backend)
    y32, idx32 = fastconv.max_pool2d(x32, *_args(q), return_indices=True, backend="reference")
    assert_equal(y, y32.astype(np.float16), f"{q.name} y")  # a max is a selection: exact
    assert_equal(idx, idx32, f"{q.name} indices")
    assert_equal(fastconv.max_pool2d(x, *_args(q), backend=backend), y, f"{q.name} y without indices")
    want = fastconv.max_pool2d_backward(dy32, x32, *_args(q), backend="reference")
    for given in (None, idx):
        dx = fastconv.max_pool2d_backward(dy, x, *_args(q), indices=given, backend=backend)
        assert_close_half(dx, want, f"{q.name} dx (indices given: {given is not None})")
        assert_fresh_output(dx, np.float16, x, dy, idx)
    anywhere = rng.integers(0, q.H * q.W, size=dy.shape)  # made-up indices: the scatter
    assert_close_half(fastconv.max_pool2d_backward(dy, x, *_args(q), indices=anywhere, backend=backend),
                      fastconv.max_pool2d_backward(dy32, x32, *_args(q), indices=anywhere, backend="reference"),
                      f"{q.name} dx through made-up indices")
    assert_unchanged((x, dy), inputs)


@pytest.mark.parametrize("count_include_pad, divisor_override", AVG_MODES)
@pytest.mark.parametrize("q", AVG_PROBLEMS)
def test_float16_avg_pool_matches_reference(q, count_include_pad, divisor_override, backend, rng):
    _require_float16(backend)
    args = _avg_args(q, count_include_pad, divisor_override)
    x = randn(rng, q.x_shape, np.float16)
    dy = randn(rng, (*q.x_shape[:2], *geometry(q).out), np.float16)
    x32, dy32 = _f32(x, dy)
    y = fastconv.avg_pool2d(x, *args, backend=backend)
    assert_close_half(y, fastconv.avg_pool2d(x32, *args, backend="reference"), f"{q.name} y")
    dx = fastconv.avg_pool2d_backward(dy, x, *args, backend=backend)
    assert_close_half(dx, fastconv.avg_pool2d_backward(dy32, x32, *args, backend="reference"), f"{q.name} dx")
    assert_fresh_output(y, np.float16, x)
    assert_fresh_output(dx, np.float16, x, dy)


@pytest.mark.parametrize("shape, output_size", [
    *ADAPTIVE,
    # 6,144 pixels in [0.5, 1.5) per window: a float16 sum stalls at 4,096 (its spacing there is 4)
    pytest.param((1, 2, 96, 64), 1, id="global_6144_pixels"),
])
def test_float16_adaptive_matches_reference(shape, output_size, backend, rng):
    _require_float16(backend)
    x = rng.uniform(0.5, 1.5, size=shape).astype(np.float16)
    (x32,) = _f32(x)
    y = fastconv.adaptive_avg_pool2d(x, output_size, backend=backend)
    assert_close_half(y, fastconv.adaptive_avg_pool2d(x32, output_size, backend="reference"), "y")
    dy = randn(rng, y.shape, np.float16)
    (dy32,) = _f32(dy)
    dx = fastconv.adaptive_avg_pool2d_backward(dy, x, output_size, backend=backend)
    assert_close_half(dx, fastconv.adaptive_avg_pool2d_backward(dy32, x32, output_size, backend="reference"), "dx")
    assert_fresh_output(y, np.float16, x)
    assert_fresh_output(dx, np.float16, x, dy)


# --------------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------------

f32 = np.float32
X = np.ones((2, 3, 6, 5), f32)
DY = np.ones((2, 3, 3, 2), f32)  # y of 2x2 pooling on X
IDX = np.zeros((2, 3, 3, 2), np.int64)
mp, mpb = fastconv.max_pool2d, fastconv.max_pool2d_backward
ap, apb = fastconv.avg_pool2d, fastconv.avg_pool2d_backward
aap, aapb = fastconv.adaptive_avg_pool2d, fastconv.adaptive_avg_pool2d_backward

BAD = [  # (id, op, args, kwargs, error type, text the message must contain)
    ("x_2d", mp, (np.ones((6, 5), f32), 2), {}, ValueError,
     "x with 3 dims (C, H, W) or 4 dims (N, C, H, W), got shape (6, 5)"),
    ("empty_image", mp, (np.ones((2, 3, 6, 0), f32), 2), {}, ValueError, "non-empty C, H and W"),
    ("x_int", mp, (np.ones((2, 3, 6, 5), np.int64), 2), {}, TypeError, "float32 or float64, got int64"),
    ("x_float16", ap, (np.ones((2, 3, 6, 5), np.float16), 2), {}, TypeError, "float16"),
    ("x_list", mp, (X.tolist(), 2), {}, TypeError, "numpy.ndarray"),
    ("kernel_zero", mp, (X, 0), {}, ValueError, "kernel_size >= 1"),
    ("kernel_negative", ap, (X, (2, -1)), {}, ValueError, "kernel_size >= 1"),
    ("kernel_float", mp, (X, 2.0), {}, TypeError, "kernel_size"),
    ("kernel_triple", mp, (X, (2, 2, 2)), {}, TypeError, "kernel_size"),
    ("stride_zero", mp, (X, 2, 0), {}, ValueError, "stride >= 1"),
    ("stride_negative", ap, (X, 2, (1, -2)), {}, ValueError, "stride >= 1"),
    ("dilation_zero", mp, (X, 2, 1, 0, 0), {}, ValueError, "dilation >= 1"),
    ("padding_negative", mp, (X, 3, 1, -1), {}, ValueError, "padding >= 0"),
    ("padding_over_half_kernel", mp, (X, 3, 1, 2), {}, ValueError, "at most half the kernel size"),
    ("padding_over_half_kernel_avg", ap, (X, (2, 3), 1, (2, 1)), {}, ValueError, "at most half the kernel size"),
    ("output_too_small", mp, (X, (7, 2)), {}, ValueError, "which is too small"),
    ("output_too_small_dilated", mp, (X, 2, 1, 0, (3, 5)), {}, ValueError, "which is too small"),
    ("window_in_padding", mp, (np.ones((1, 1, 2, 2), f32), 2, 1, 1, 3), {}, ValueError, "entirely in the padding"),
    ("ceil_mode_int", mp, (X, 2), {"ceil_mode": 1}, TypeError, "ceil_mode"),
    ("return_indices_str", mp, (X, 2), {"return_indices": "yes"}, TypeError, "return_indices"),
    ("count_include_pad_none", ap, (X, 2), {"count_include_pad": None}, TypeError, "count_include_pad"),
    ("divisor_zero", ap, (X, 2), {"divisor_override": 0}, ValueError, "non-zero"),
    ("divisor_float", ap, (X, 2), {"divisor_override": 2.5}, TypeError, "divisor_override"),
    ("adaptive_negative", aap, (X, (-1, 2)), {}, ValueError, "output_size >= 0"),
    ("adaptive_single", aap, (X, (2,)), {}, TypeError, "output_size"),
    ("adaptive_triple", aap, (X, (1, 2, 3)), {}, TypeError, "output_size"),
    ("adaptive_float", aap, (X, (2, 1.5)), {}, TypeError, "output_size"),
    ("adaptive_5d", aap, (np.ones((1, 3, 6, 5, 1), f32), 2), {}, ValueError, "expected x with 3 dims (C, H, W) or 4 dims"),
    ("max_dy_unbatched_for_batched_x", mpb, (np.ones((3, 3, 2), f32), X, 2), {}, ValueError, "expected dy with 4 dims"),
    ("adaptive_int", aap, (np.ones((2, 3, 6, 5), np.int32), 2), {}, TypeError, "int32"),
    ("adaptive_empty_image", aap, (np.ones((2, 3, 0, 5), f32), 2), {}, ValueError, "non-empty image"),
    ("max_dy_shape", mpb, (np.ones((2, 3, 2, 3), f32), X, 2), {}, ValueError, "expected dy of shape (2, 3, 3, 2)"),
    ("max_dy_dtype", mpb, (DY.astype(np.float64), X, 2), {}, TypeError, "one dtype"),
    ("max_dy_3d", mpb, (DY[0], X, 2), {}, ValueError, "expected dy with 4 dims"),
    ("avg_dy_shape", apb, (DY, X, 2, 1), {}, ValueError, "expected dy of shape (2, 3, 5, 4)"),
    ("avg_dy_int", apb, (DY.astype(np.int32), X, 2), {}, TypeError, "int32"),
    ("adaptive_dy_shape", aapb, (DY, X, 2), {}, ValueError, "expected dy of shape (2, 3, 2, 2)"),
    ("indices_float", mpb, (DY, X, 2), {"indices": IDX.astype(f32)}, TypeError, "int64, got float32"),
    ("indices_int32", mpb, (DY, X, 2), {"indices": IDX.astype(np.int32)}, TypeError, "int64, got int32"),
    ("indices_list", mpb, (DY, X, 2), {"indices": IDX.tolist()}, TypeError, "numpy.ndarray"),
    ("indices_shape", mpb, (DY, X, 2), {"indices": IDX[:, :, :2]}, ValueError, "expected indices of shape (2, 3, 3, 2)"),
    ("indices_3d", mpb, (DY, X, 2), {"indices": IDX[0]}, ValueError, "expected indices with 4 dims"),
    ("indices_too_large", mpb, (DY, X, 2), {"indices": IDX + 30}, ValueError, "[0, 30), got values from 30 to 30"),
    ("indices_negative", mpb, (DY, X, 2), {"indices": IDX - 1}, ValueError, "got values from -1"),
]


@pytest.mark.parametrize("op, args, kwargs, error, text", bad_input_cases(BAD))
def test_bad_input_raises_clear_error(op, args, kwargs, error, text, backend):
    check_bad_input(op, args, kwargs, error, text, backend)


@pytest.mark.parametrize("bad", [-1, 16 * 18, 2**40])
def test_bad_index_in_a_vector_plane_is_caught(backend, bad):
    """Each backend checks the indices as its backward scatters them. fp32 2x2 windows at stride 2
    take C++'s vector planes, which check them by another route than the scalar scatter."""
    x = np.arange(2 * 3 * 16 * 18, dtype=np.float32).reshape(2, 3, 16, 18)
    idx = fastconv.max_pool2d(x, 2, return_indices=True, backend="reference").indices
    idx[1, 2, 7, 8] = bad
    with pytest.raises(ValueError, match=rf"expected indices in \[0, H\*W\) = \[0, 288\), got values .* to {max(bad, 287)}$"):
        fastconv.max_pool2d_backward(np.ones(idx.shape, np.float32), x, 2, indices=idx, backend=backend)


def test_one_bad_index_among_many_is_caught(backend):
    idx = IDX.copy()
    idx[1, 2, 2, 1] = 30
    with pytest.raises(ValueError, match=r"max_pool2d_backward: expected indices in \[0, H\*W\)"):
        fastconv.max_pool2d_backward(DY, X, 2, indices=idx, backend=backend)


# --------------------------------------------------------------------------------------------
# property: random valid configurations against direct loops and PyTorch
# --------------------------------------------------------------------------------------------

@st.composite
def pool_configs(draw, max_dilation=3):
    K = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    D = (draw(st.integers(1, max_dilation)), draw(st.integers(1, max_dilation)))
    P = tuple(draw(st.integers(0, k // 2)) for k in K)
    # an image at least as large as the padded window, so the output is never empty
    H, W = (draw(st.integers(max(1, d * (k - 1) + 1 - 2 * p), d * (k - 1) + 9)) for k, d, p in zip(K, D, P))
    stride = draw(st.one_of(st.none(), st.tuples(st.integers(1, 3), st.integers(1, 3))))
    q = Pool("hypothesis", draw(st.integers(1, 2)), draw(st.integers(1, 3)), H, W, K, stride, P, D,
             draw(st.booleans()))
    assume(not window_in_padding(q))  # rejected, see test_window_entirely_in_padding_is_rejected
    return q


@settings(max_examples=50, deadline=None)
@given(q=pool_configs(), seed=st.integers(0, 2**32 - 1))
def test_property_max_pool(q, seed):
    rng = np.random.default_rng(seed)
    x = small_ints(rng, q.x_shape, np.float64, -2, 3)
    x[rng.random(q.x_shape) < 0.1] = np.nan
    y, idx = fastconv.max_pool2d(x, *_args(q), return_indices=True, backend="reference")
    y_direct, idx_direct = direct_max_pool2d(x, q)
    assert_equal(y, y_direct)
    assert_equal(idx, idx_direct)
    dy = small_ints(rng, y.shape, np.float64)
    assert_equal(fastconv.max_pool2d_backward(dy, x, *_args(q)), direct_max_pool2d_backward(dy, idx, x.shape))
    torch = pytest.importorskip("torch")
    yt, it = torch.nn.functional.max_pool2d(torch.tensor(x), *_args(q), return_indices=True)
    assert_equal(y, yt.numpy())
    assert_equal(idx, it.numpy())


@settings(max_examples=50, deadline=None)
@given(q=pool_configs(max_dilation=1), count_include_pad=st.booleans(),
       divisor_override=st.sampled_from([None, None, 1, 4, -3]), seed=st.integers(0, 2**32 - 1))
def test_property_avg_pool(q, count_include_pad, divisor_override, seed):
    rng = np.random.default_rng(seed)
    mode = (count_include_pad, divisor_override)
    x = small_ints(rng, q.x_shape, np.float64)
    y = fastconv.avg_pool2d(x, *_avg_args(q, *mode), backend="reference")
    assert_equal(y, direct_avg_pool2d(x, q, *mode))
    dy = _exact_dy(rng, direct_avg_divisor(q, *mode), y.shape, np.float64)
    dx = fastconv.avg_pool2d_backward(dy, x, *_avg_args(q, *mode), backend="reference")
    assert_equal(dx, direct_avg_pool2d_backward(dy, q, *mode))
    torch = pytest.importorskip("torch")
    yt, dxt = _torch_grad(torch, lambda t: torch.nn.functional.avg_pool2d(t, *_avg_args(q, *mode)), x, dy)
    assert_close(y, yt.detach().numpy())
    assert_close(dx, dxt)


@settings(max_examples=50, deadline=None)
@given(shape=st.tuples(st.integers(1, 2), st.integers(1, 3), st.integers(1, 10), st.integers(1, 10)),
       output_size=st.tuples(st.one_of(st.none(), st.integers(1, 12)), st.one_of(st.none(), st.integers(1, 12))),
       seed=st.integers(0, 2**32 - 1))
def test_property_adaptive(shape, output_size, seed):
    rng = np.random.default_rng(seed)
    x = small_ints(rng, shape, np.float64)
    y = fastconv.adaptive_avg_pool2d(x, output_size, backend="reference")
    assert_equal(y, direct_adaptive_avg_pool2d(x, output_size))
    dy = _exact_dy(rng, direct_adaptive_count(shape, output_size), y.shape, np.float64)
    dx = fastconv.adaptive_avg_pool2d_backward(dy, x, output_size, backend="reference")
    assert_equal(dx, direct_adaptive_avg_pool2d_backward(dy, shape, output_size))
    torch = pytest.importorskip("torch")
    yt, dxt = _torch_grad(torch, lambda t: torch.nn.functional.adaptive_avg_pool2d(t, output_size), x, dy)
    assert_close(y, yt.detach().numpy())
    assert_close(dx, dxt)


@settings(max_examples=30, deadline=None)
@given(q=pool_configs(), seed=st.integers(0, 2**32 - 1))
def test_property_every_backend_matches_reference(q, seed):
    rng = np.random.default_rng(seed)
    x = randn(rng, q.x_shape, np.float64)
    dy = randn(rng, (*q.x_shape[:2], *geometry(q).out), np.float64)
    dy_adaptive = randn(rng, (*q.x_shape[:2], 2, 3), np.float64)
    dilated = q.dilation != 1 and q.dilation != (1, 1)
    want = [_run_max(q, x, dy, "reference"), None if dilated else _run_avg(q, x, dy, "reference", (False, None)),
            _run_adaptive((2, 3), x, dy_adaptive, "reference")]
    for name in backends_implementing("pool", *FUNCS):
        got = [_run_max(q, x, dy, name), None if dilated else _run_avg(q, x, dy, name, (False, None)),
               _run_adaptive((2, 3), x, dy_adaptive, name)]
        for g, w in zip(got, want):
            if w is not None:
                _compare(g, w, assert_close, f"on {name}", x, dy, dy_adaptive)
