"""conv2d, conv1d, conv_transpose2d: the reference against direct loops, finite differences and
PyTorch; every backend against the reference (exact on small integers, close on random data); the
GPU backend's float16, batch chunks and run-to-run determinism."""

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastconv
from fastconv._dispatch import REGISTRY
from fastconv.problems import CONV_PROBLEMS, Conv
from support import (DTYPES, assert_close, assert_close_half, assert_equal, assert_fresh_output, assert_gradient,
                     assert_unchanged, randn, small_ints, snapshot, takes_float16)

PROBLEMS = [pytest.param(c, id=c.name) for c in CONV_PROBLEMS]


def _padding_sides(c: Conv):
    """(top, bottom, left, right) of a problem, computed here independently of fastconv._params."""
    pad = c.padding
    if pad == "valid":
        return (0, 0, 0, 0)
    if pad == "same":
        dh, dw = (c.dilation, c.dilation) if isinstance(c.dilation, int) else c.dilation
        th, tw = dh * (c.KH - 1), dw * (c.KW - 1)
        return (th // 2, th - th // 2, tw // 2, tw - tw // 2)
    if isinstance(pad, int):
        return (pad,) * 4
    if isinstance(pad[0], tuple):
        return (*pad[0], *pad[1])
    return (pad[0], pad[0], pad[1], pad[1])


def _pairs(c: Conv):
    as_pair = lambda v: (v, v) if isinstance(v, int) else tuple(v)  # noqa: E731
    return as_pair(c.stride), as_pair(c.dilation)


# --------------------------------------------------------------------------------------------
# an independent formulation: direct loops over every output pixel and kernel tap
# --------------------------------------------------------------------------------------------

def direct_conv2d(x, w, c: Conv):
    """y[n, co, oh, ow] = sum over ci, kh, kw of x[n, g*Cg + ci, oh*s - pad + kh*d, ...] * w[co, ci, kh, kw]."""
    (sh, sw), (dh, dw) = _pairs(c)
    pt, pb, pl, pr = _padding_sides(c)
    N, C_in, H, W = x.shape
    C_out, C_in_g, KH, KW = w.shape
    OH = (H + pt + pb - dh * (KH - 1) - 1) // sh + 1
    OW = (W + pl + pr - dw * (KW - 1) - 1) // sw + 1
    C_out_g = C_out // c.groups
    y = np.zeros((N, C_out, OH, OW), dtype=x.dtype)
    for co in range(C_out):
        g = co // C_out_g
        for oh in range(OH):
            for ow in range(OW):
                for kh in range(KH):
                    for kw in range(KW):
                        ih, iw = oh * sh - pt + kh * dh, ow * sw - pl + kw * dw
                        if 0 <= ih < H and 0 <= iw < W:
                            xs = x[:, g * C_in_g:(g + 1) * C_in_g, ih, iw]  # (N, C_in/groups)
                            y[:, co, oh, ow] += xs @ w[co, :, kh, kw]
    return y


def direct_conv2d_grads(dy, x, w, c: Conv):
    """dx and dw by scattering each output pixel's gradient back along the same index map."""
    (sh, sw), (dh, dw_) = _pairs(c)
    pt, _, pl, _ = _padding_sides(c)
    N, C_in, H, W = x.shape
    C_out, C_in_g, KH, KW = w.shape
    C_out_g = C_out // c.groups
    dx, dw = np.zeros_like(x), np.zeros_like(w)
    for co in range(C_out):
        g = co // C_out_g
        for oh in range(dy.shape[2]):
            for ow in range(dy.shape[3]):
                for kh in range(KH):
                    for kw in range(KW):
                        ih, iw = oh * sh - pt + kh * dh, ow * sw - pl + kw * dw_
                        if 0 <= ih < H and 0 <= iw < W:
                            chans = slice(g * C_in_g, (g + 1) * C_in_g)
                            dx[:, chans, ih, iw] += dy[:, co, oh, ow][:, None] * w[co, :, kh, kw]
                            dw[co, :, kh, kw] += dy[:, co, oh, ow] @ x[:, chans, ih, iw]
    return dx, dw


@pytest.mark.parametrize("c", PROBLEMS)
def test_reference_matches_direct_loops_exactly(c, rng):
    x, w = small_ints(rng, c.x_shape, np.float32), small_ints(rng, c.w_shape, np.float32)
    y = fastconv.conv2d(x, w, None, **c.kwargs, backend="reference")
    assert_equal(y, direct_conv2d(x, w, c), f"{c.name} forward")
    dy = small_ints(rng, y.shape, np.float32)
    dx, dw, db = fastconv.conv2d_backward(dy, x, w, **c.kwargs, backend="reference")
    dx_direct, dw_direct = direct_conv2d_grads(dy, x, w, c)
    assert_equal(dx, dx_direct, f"{c.name} dgrad")
    assert_equal(dw, dw_direct, f"{c.name} wgrad")
    assert_equal(db, dy.sum(axis=(0, 2, 3)), f"{c.name} bias grad")


@pytest.mark.parametrize("c", [p for p in PROBLEMS if p.values[0].name in
                               ("all_odd", "per_side_pad", "groups_3", "depthwise_mult2", "same_even_kernel")])
def test_reference_gradients_match_finite_differences(c, rng):
    x, w, b = randn(rng, c.x_shape, np.float64), randn(rng, c.w_shape, np.float64), randn(rng, c.w_shape[0], np.float64)
    y = fastconv.conv2d(x, w, b, **c.kwargs, backend="reference")
    dy = randn(rng, y.shape, np.float64)
    dx, dw, db = fastconv.conv2d_backward(dy, x, w, **c.kwargs, backend="reference")
    run = lambda **kw: fastconv.conv2d(**{"x": x, "w": w, "b": b, **kw}, **c.kwargs, backend="reference")  # noqa: E731
    assert_gradient(dx, lambda v: run(x=v), x, dy, f"{c.name} dx")
    assert_gradient(dw, lambda v: run(w=v), w, dy, f"{c.name} dw")
    assert_gradient(db, lambda v: run(b=v), b, dy, f"{c.name} db")


# --------------------------------------------------------------------------------------------
# against PyTorch
# --------------------------------------------------------------------------------------------

def torch_conv2d(x, w, b, c: Conv):
    """PyTorch's conv2d with autograd; per-side padding as an explicit F.pad (torch has no such argument)."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    xt, wt = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    bt = torch.tensor(b, requires_grad=True)
    padding = c.padding
    xin = xt
    if isinstance(padding, tuple) and isinstance(padding[0], tuple):
        (t, bo), (l, r) = padding
        xin, padding = F.pad(xt, (l, r, t, bo)), 0
    yt = F.conv2d(xin, wt, bt, stride=c.stride, padding=padding, dilation=c.dilation, groups=c.groups)
    return xt, wt, bt, yt


@pytest.mark.filterwarnings("ignore:Using padding='same'")
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("c", PROBLEMS)
def test_reference_matches_torch(c, dtype, rng):
    torch = pytest.importorskip("torch")
    x, w, b = randn(rng, c.x_shape, dtype), randn(rng, c.w_shape, dtype), randn(rng, c.w_shape[0], dtype)
    xt, wt, bt, yt = torch_conv2d(x, w, b, c)
    y = fastconv.conv2d(x, w, b, **c.kwargs, backend="reference")
    assert_close(y, yt.detach().numpy(), f"{c.name} forward vs torch")
    dy = randn(rng, y.shape, dtype)
    yt.backward(torch.tensor(dy))
    dx, dw, db = fastconv.conv2d_backward(dy, x, w, **c.kwargs, backend="reference")
    assert_close(dx, xt.grad.numpy(), f"{c.name} dx vs torch")
    assert_close(dw, wt.grad.numpy(), f"{c.name} dw vs torch")
    assert_close(db, bt.grad.numpy(), f"{c.name} db vs torch")


TRANSPOSE = [  # (x shape, w shape, stride, padding, output_padding, groups, dilation)
    pytest.param((2, 4, 5, 7), (4, 3, 3, 2), (2, 3), (1, 0), (1, 2), 1, 1, id="stride_outpad"),
    pytest.param((1, 4, 4, 3), (4, 2, 2, 3), 1, 1, (1, 0), 2, (2, 1), id="groups_dilation_outpad"),
    pytest.param((2, 3, 3, 6), (3, 5, 4, 1), 2, 0, 0, 1, 1, id="plain"),
    pytest.param((2, 6, 1, 1), (6, 1, 3, 3), 1, 1, 0, 6, 1, id="depthwise_1x1_image"),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("xs, ws, stride, padding, output_padding, groups, dilation", TRANSPOSE)
def test_conv_transpose2d_matches_torch(xs, ws, stride, padding, output_padding, groups, dilation, dtype, rng, backend):
    torch = pytest.importorskip("torch")
    x, w = randn(rng, xs, dtype), randn(rng, ws, dtype)
    b = randn(rng, ws[1] * groups, dtype)
    args = (stride, padding, output_padding, groups, dilation)
    xt, wt, bt = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    yt = torch.nn.functional.conv_transpose2d(xt, wt, bt, *args)
    y = fastconv.conv_transpose2d(x, w, b, *args, backend=backend)
    assert_fresh_output(y, dtype, x, w, b)
    assert_close(y, yt.detach().numpy(), "conv_transpose2d forward")
    dy = randn(rng, y.shape, dtype)
    yt.backward(torch.tensor(dy))
    dx, dw, db = fastconv.conv_transpose2d_backward(dy, x, w, *args, backend=backend)
    for name, got, want in (("dx", dx, xt.grad), ("dw", dw, wt.grad), ("db", db, bt.grad)):
        assert_close(got, want.numpy(), f"conv_transpose2d {name}")


def test_conv_transpose2d_gradients_match_finite_differences(rng):
    x, w, b = randn(rng, (2, 4, 3, 4), np.float64), randn(rng, (4, 1, 3, 2), np.float64), randn(rng, 2, np.float64)
    args = dict(stride=(2, 1), padding=(1, 0), output_padding=(1, 0), groups=2, dilation=(1, 2))
    run = lambda **kw: fastconv.conv_transpose2d(**{"x": x, "w": w, "b": b, **kw}, **args)  # noqa: E731
    dy = randn(rng, run().shape, np.float64)
    dx, dw, db = fastconv.conv_transpose2d_backward(dy, x, w, **args)
    assert_gradient(dx, lambda v: run(x=v), x, dy, "dx")
    assert_gradient(dw, lambda v: run(w=v), w, dy, "dw")
    assert_gradient(db, lambda v: run(b=v), b, dy, "db")


CONV1D = [  # (x shape, w shape, stride, padding, dilation, groups, torch's padding or None for per-side)
    pytest.param((2, 4, 13), (6, 2, 3), 2, 1, 2, 2, id="strided_dilated_groups"),
    pytest.param((1, 3, 9), (5, 3, 4), 1, "same", 3, 1, id="same_even_kernel"),
    pytest.param((2, 3, 8), (2, 3, 3), (3,), (2,), (1,), 1, id="tuple_args"),
    pytest.param((2, 3, 8), (2, 3, 3), 1, (0, 2), 1, 1, id="per_side"),
]


@pytest.mark.filterwarnings("ignore:Using padding='same'")
@pytest.mark.parametrize("xs, ws, stride, padding, dilation, groups", CONV1D)
def test_conv1d_matches_torch(xs, ws, stride, padding, dilation, groups, rng, backend):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x, w, b = randn(rng, xs, np.float64), randn(rng, ws, np.float64), randn(rng, ws[0], np.float64)
    xt, wt, bt = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    if isinstance(padding, tuple) and len(padding) == 2:  # per side: torch needs an explicit pad
        yt = F.conv1d(F.pad(xt, padding), wt, bt, stride, 0, dilation, groups)
    else:
        yt = F.conv1d(xt, wt, bt, stride, padding, dilation, groups)
    y = fastconv.conv1d(x, w, b, stride, padding, dilation, groups, backend=backend)
    assert_fresh_output(y, np.float64, x, w, b)
    assert_close(y, yt.detach().numpy(), "conv1d forward")
    dy = randn(rng, y.shape, np.float64)
    yt.backward(torch.tensor(dy))
    dx, dw, db = fastconv.conv1d_backward(dy, x, w, stride, padding, dilation, groups, backend=backend)
    for name, got, want in (("dx", dx, xt.grad), ("dw", dw, wt.grad), ("db", db, bt.grad)):
        assert_fresh_output(got, np.float64, x, w, dy)
        assert_close(got, want.numpy(), f"conv1d {name}")


# --------------------------------------------------------------------------------------------
# every backend against the reference
# --------------------------------------------------------------------------------------------

def _run_all(c, x, w, b, dy, backend):
    y = fastconv.conv2d(x, w, b, **c.kwargs, backend=backend)
    grads = fastconv.conv2d_backward(dy, x, w, **c.kwargs, backend=backend)
    return (y, *grads)


NAMES = ("forward", "dgrad", "wgrad", "bias grad")


@pytest.mark.parametrize("c", PROBLEMS)
def test_backend_exact_on_small_integers(c, backend, rng):
    x, w, b = (small_ints(rng, s, np.float32) for s in (c.x_shape, c.w_shape, (c.C_out,)))
    y = fastconv.conv2d(x, w, b, **c.kwargs, backend="reference")
    dy = small_ints(rng, y.shape, np.float32)
    inputs = snapshot(x, w, b, dy)
    got = _run_all(c, x, w, b, dy, backend)
    want = _run_all(c, x, w, b, dy, "reference")
    assert_unchanged((x, w, b, dy), inputs)
    for name, g, r in zip(NAMES, got, want):
        assert_equal(g, r, f"{c.name} {name} on {backend}")
        assert_fresh_output(g, np.float32, x, w, b, dy)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("c", PROBLEMS)
def test_backend_close_on_random_data(c, dtype, backend, rng):
    x, w, b = (randn(rng, s, dtype) for s in (c.x_shape, c.w_shape, (c.C_out,)))
    dy = randn(rng, fastconv.conv2d(x, w, b, **c.kwargs, backend="reference").shape, dtype)
    for name, g, r in zip(NAMES, _run_all(c, x, w, b, dy, backend), _run_all(c, x, w, b, dy, "reference")):
        assert_close(g, r, f"{c.name} {name} on {backend}")


@pytest.mark.parametrize("c", [p for p in PROBLEMS if p.values[0].name in ("all_odd", "groups_3", "per_side_pad")])
def test_backend_accepts_non_contiguous_and_read_only_inputs(c, backend, rng):
    x, w, b = (randn(rng, s, np.float32) for s in (c.x_shape, c.w_shape, (c.C_out,)))
    dy = randn(rng, fastconv.conv2d(x, w, b, **c.kwargs).shape, np.float32)
    want = _run_all(c, x, w, b, dy, "reference")
    # a transposed copy made C-contiguous along the other axis order, viewed back: same values, odd strides
    odd = [np.asfortranarray(a) for a in (x, w, dy)] + [np.repeat(b, 2)[::2]]
    for a in odd:
        a.setflags(write=False)
    xo, wo, dyo, bo = odd
    assert not (xo.flags.c_contiguous or bo.flags.c_contiguous)
    for name, g, r in zip(NAMES, _run_all(c, xo, wo, bo, dyo, backend), want):
        assert_close(g, r, f"{c.name} {name} on {backend} with non-contiguous read-only inputs")


def test_backend_accepts_a_dtype_that_travelled_through_pickle(backend, rng):
    """An unpickled dtype (as in a worker process) is equal to float32 but another object."""
    import pickle

    dtype = pickle.loads(pickle.dumps(np.dtype(np.float32)))
    assert dtype == np.float32 and dtype is not np.dtype(np.float32)
    x, w = randn(rng, (2, 3, 6, 5), np.float32).astype(dtype), randn(rng, (4, 3, 3, 2), np.float32).astype(dtype)
    assert_close(fastconv.conv2d(x, w, backend=backend), fastconv.conv2d(x, w, backend="reference"))


@pytest.mark.parametrize("needs", [(True, False, False), (False, True, False), (False, False, True), (False,) * 3])
def test_backward_computes_only_what_is_needed(needs, backend, rng):
    c = CONV_PROBLEMS[0]
    x, w = randn(rng, c.x_shape, np.float64), randn(rng, c.w_shape, np.float64)
    dy = randn(rng, fastconv.conv2d(x, w, **c.kwargs).shape, np.float64)
    full = fastconv.conv2d_backward(dy, x, w, **c.kwargs, backend=backend)
    part = fastconv.conv2d_backward(dy, x, w, **c.kwargs, needs=needs, backend=backend)
    for need, f, p in zip(needs, full, part):
        if need:
            assert_equal(p, f)
        else:
            assert p is None


def test_empty_batch(backend):
    x, w, b = np.zeros((0, 3, 5, 4), np.float32), np.ones((2, 3, 2, 2), np.float32), np.ones(2, np.float32)
    y = fastconv.conv2d(x, w, b, padding=1, backend=backend)
    assert y.shape == (0, 2, 6, 5) and y.dtype == np.float32
    dx, dw, db = fastconv.conv2d_backward(np.zeros(y.shape, np.float32), x, w, padding=1, backend=backend)
    assert dx.shape == x.shape
    assert_equal(dw, np.zeros_like(w))
    assert_equal(db, np.zeros_like(b))
    yt = fastconv.conv_transpose2d(x, w.transpose(1, 0, 2, 3).copy(), backend=backend)
    assert yt.shape == (0, 2, 6, 5)


def test_nan_and_inf_propagate(backend):
    x = np.ones((1, 1, 4, 5), np.float32)
    x[0, 0, 1, 1], x[0, 0, 3, 4] = np.nan, np.inf
    y = fastconv.conv2d(x, np.ones((1, 1, 2, 2), np.float32), backend=backend)
    assert np.isnan(y[0, 0, :2, :2]).all() and np.isinf(y[0, 0, 2, 3])
    assert np.isfinite(y[0, 0, :, 2]).all()


# --------------------------------------------------------------------------------------------
# property: random valid configurations against PyTorch (or direct loops without it)
# --------------------------------------------------------------------------------------------

@st.composite
def conv_configs(draw):
    groups = draw(st.integers(1, 3))
    c = Conv("hypothesis", N=draw(st.integers(1, 2)), C_in=groups * draw(st.integers(1, 3)),
             H=draw(st.integers(1, 9)), W=draw(st.integers(1, 9)), C_out=groups * draw(st.integers(1, 3)),
             KH=draw(st.integers(1, 4)), KW=draw(st.integers(1, 4)),
             stride=(draw(st.integers(1, 3)), draw(st.integers(1, 3))),
             padding=((draw(st.integers(0, 3)), draw(st.integers(0, 3))),
                      (draw(st.integers(0, 3)), draw(st.integers(0, 3)))),
             dilation=(draw(st.integers(1, 3)), draw(st.integers(1, 3))), groups=groups)
    (t, b), (l, r) = c.padding
    if (c.KH - 1) * c.dilation[0] + 1 > c.H + t + b or (c.KW - 1) * c.dilation[1] + 1 > c.W + l + r:
        c = Conv(**{**c.__dict__, "padding": ((t + c.KH * c.dilation[0], b), (l + c.KW * c.dilation[1], r))})
    return c


@settings(max_examples=60, deadline=None)
@given(c=conv_configs(), seed=st.integers(0, 2**32 - 1))
def test_property_reference_matches_direct_loops(c, seed):
    rng = np.random.default_rng(seed)
    x, w = small_ints(rng, c.x_shape, np.float64), small_ints(rng, c.w_shape, np.float64)
    y = fastconv.conv2d(x, w, None, **c.kwargs, backend="reference")
    assert_equal(y, direct_conv2d(x, w, c))
    dy = small_ints(rng, y.shape, np.float64)
    dx, dw, _ = fastconv.conv2d_backward(dy, x, w, **c.kwargs, needs=(True, True, False), backend="reference")
    dx_direct, dw_direct = direct_conv2d_grads(dy, x, w, c)
    assert_equal(dx, dx_direct)
    assert_equal(dw, dw_direct)


@settings(max_examples=40, deadline=None)
@given(c=conv_configs(), seed=st.integers(0, 2**32 - 1))
def test_property_every_backend_matches_reference(c, seed):
    rng = np.random.default_rng(seed)
    x, w, b = (randn(rng, s, np.float64) for s in (c.x_shape, c.w_shape, (c.C_out,)))
    dy = randn(rng, fastconv.conv2d(x, w, b, **c.kwargs, backend="reference").shape, np.float64)
    want = _run_all(c, x, w, b, dy, "reference")
    for name in fastconv.available_backends():
        for label, g, r in zip(NAMES, _run_all(c, x, w, b, dy, name), want):
            assert_close(g, r, f"{label} on {name}")


# --------------------------------------------------------------------------------------------
# the GPU backend (on its emulator): float16, batch chunks, bit-identical runs
# --------------------------------------------------------------------------------------------

#: Beyond CONV_PROBLEMS, for the GPU backend's paths: a depthwise kernel of more taps than its wgrad
#: accumulates in one pass (FC_DW_TAPS = 16 in cuda/conv.cu), with a channel multiplier; a pointwise
#: convolution with groups (a batched GEMM per image and group).
GPU_PROBLEMS = [
    Conv("depthwise_5x4_mult2", 2, 3, 9, 8, 6, 5, 4, stride=(2, 1), padding=(2, 1), dilation=(1, 2), groups=3),
    Conv("pointwise_groups", 2, 6, 5, 4, 4, 1, 1, groups=2),
]


def _gpu_problems(*names):
    """The CONV_PROBLEMS of these names, and GPU_PROBLEMS."""
    return [p for p in PROBLEMS if p.values[0].name in names] + [pytest.param(c, id=c.name) for c in GPU_PROBLEMS]


def require_gpu_backend(backend):
    if REGISTRY[backend].package != "fastconv.backends.cupy":
        pytest.skip(f"{backend} is not the GPU backend")


@pytest.mark.parametrize("c", _gpu_problems("all_odd", "per_side_pad", "groups_3", "depthwise", "depthwise_mult2",
                                            "pointwise_1x1", "pointwise_strided", "output_1x1"))
def test_float16_matches_reference_on_upcast_inputs(c, backend, rng):
    """float16 storage, float32 arithmetic, one rounding: the reference on the same values in
    float32, within the float16 tolerance (so a float16 GEMM result finished by a kernel, e.g. the
    bias added to it, fails: that rounds twice)."""
    if not takes_float16(backend, "conv"):
        pytest.skip(f"{backend} does not take float16 conv arrays")
    x, w, b = (randn(rng, s, np.float16) for s in (c.x_shape, c.w_shape, (c.C_out,)))
    x32, w32, b32 = (a.astype(np.float32) for a in (x, w, b))
    y32 = fastconv.conv2d(x32, w32, b32, **c.kwargs, backend="reference")
    dy = randn(rng, y32.shape, np.float16)
    inputs = snapshot(x, w, b, dy)
    got = (fastconv.conv2d(x, w, b, **c.kwargs, backend=backend), fastconv.conv2d(x, w, **c.kwargs, backend=backend),
           *fastconv.conv2d_backward(dy, x, w, **c.kwargs, backend=backend))
    want = (y32, fastconv.conv2d(x32, w32, **c.kwargs, backend="reference"),
            *fastconv.conv2d_backward(dy.astype(np.float32), x32, w32, **c.kwargs, backend="reference"))
    assert_unchanged((x, w, b, dy), inputs)
    for name, g, r in zip(("forward", "forward without bias", *NAMES[1:]), got, want):
        assert_fresh_output(g, np.float16, x, w, b, dy)
        assert_close_half(g, r, f"{c.name} {name} float16 on {backend}")


@pytest.mark.parametrize("dtype", [np.float16, np.float32], ids=["f16", "f32"])
@pytest.mark.parametrize("images", [1, 2])
@pytest.mark.parametrize("c", _gpu_problems("all_odd", "per_side_pad", "groups_3", "pointwise_1x1",
                                            "pointwise_strided"))
def test_batch_chunks_exact_on_small_integers(c, images, dtype, backend, rng, monkeypatch):
    """The im2col + GEMM passes over a batch of 5 in chunks: the workspace bound set to `images`
    images' worth of the forward (cols and the C_out x P result, in float32), so the chunks are
    of at most that many images, and wgrad adds up several partial products."""
    require_gpu_backend(backend)
    from fastconv.backends.cupy import conv as gpu_conv

    c = dataclasses.replace(c, N=5)
    x, w, b = (small_ints(rng, s, dtype) for s in (c.x_shape, c.w_shape, (c.C_out,)))
    y = fastconv.conv2d(x.astype(np.float32), w.astype(np.float32), **c.kwargs, backend="reference")
    dy = small_ints(rng, y.shape, dtype)
    OH, OW = y.shape[2:]
    monkeypatch.setattr(gpu_conv, "WORKSPACE_BYTES", images * (c.C_in * c.KH * c.KW + c.C_out) * OH * OW * 4)
    want = _run_all(c, *(a.astype(np.float32) for a in (x, w, b, dy)), "reference")
    for name, g, r in zip(NAMES, _run_all(c, x, w, b, dy, backend), want):
        assert_equal(g, r.astype(dtype), f"{c.name} {name} on {backend} in chunks of {images}")


@pytest.mark.parametrize("c", _gpu_problems("all_odd", "groups_3", "depthwise", "pointwise_1x1"))
def test_gpu_results_are_bit_identical_from_run_to_run(c, backend, rng):
    require_gpu_backend(backend)
    x, w, b = (randn(rng, s, np.float32) for s in (c.x_shape, c.w_shape, (c.C_out,)))
    dy = randn(rng, fastconv.conv2d(x, w, **c.kwargs, backend="reference").shape, np.float32)
    for name, first, second in zip(NAMES, _run_all(c, x, w, b, dy, backend), _run_all(c, x, w, b, dy, backend)):
        assert first.tobytes() == second.tobytes(), f"{c.name} {name} on {backend} differs between two runs"
