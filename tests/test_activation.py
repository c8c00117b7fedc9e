"""Activations and softmax/log_softmax: the reference against scalar formulas in plain Python,
finite differences and PyTorch (random data and edge values: 0, +-inf, NaN, +-1000, tiny); every
backend against the reference; bad input."""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastconv
from support import (bad_input_cases, check_bad_input, DTYPES, assert_close, assert_close_half, assert_equal,
                     assert_fresh_output, assert_gradient, assert_unchanged, backends_implementing, randn, require,
                     small_ints, snapshot, takes_float16, without_warnings)

SELU_ALPHA, SELU_SCALE = 1.6732632423543772848170429916717, 1.0507009873554804934193349852946


def _sigmoid(x):
    return 1 / (1 + math.exp(-x))


def _gelu_tanh_inner(x):
    return math.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3))


class Act(NamedTuple):
    """One activation configuration, with an independent scalar formula for it and its derivative."""

    id: str
    name: str  # fastconv.<name>, fastconv.<name>_backward
    params: tuple  # extra positional parameters, in the public signature's order ((): the defaults)
    torch: Callable  # (F, tensor) -> tensor
    f: Callable[[float], float]
    df: Callable[[float], float]
    kinks: tuple = ()  # where the derivative jumps: finite differences keep away
    exact: bool = False  # the reference must equal the scalar formula bit for bit


ACTS = [
    Act("relu", "relu", (), lambda F, t: F.relu(t),
        lambda x: max(x, 0.0), lambda x: 1.0 if x > 0 else 0.0, (0.0,), exact=True),
    Act("leaky_relu_default", "leaky_relu", (), lambda F, t: F.leaky_relu(t),
        lambda x: x if x > 0 else 0.01 * x, lambda x: 1.0 if x > 0 else 0.01, (0.0,)),
    Act("leaky_relu_0.25", "leaky_relu", (0.25,), lambda F, t: F.leaky_relu(t, 0.25),
        lambda x: x if x > 0 else 0.25 * x, lambda x: 1.0 if x > 0 else 0.25, (0.0,), exact=True),
    Act("elu_default", "elu", (), lambda F, t: F.elu(t),
        lambda x: x if x > 0 else math.expm1(x), lambda x: 1.0 if x > 0 else math.exp(x), (0.0,)),
    Act("elu_1.5", "elu", (1.5,), lambda F, t: F.elu(t, 1.5),
        lambda x: x if x > 0 else 1.5 * math.expm1(x), lambda x: 1.0 if x > 0 else 1.5 * math.exp(x), (0.0,)),
    Act("selu", "selu", (), lambda F, t: F.selu(t),
        lambda x: SELU_SCALE * (x if x > 0 else SELU_ALPHA * math.expm1(x)),
        lambda x: SELU_SCALE * (1.0 if x > 0 else SELU_ALPHA * math.exp(x)), (0.0,)),
    Act("gelu", "gelu", (), lambda F, t: F.gelu(t),
        lambda x: 0.5 * x * (1 + math.erf(x / math.sqrt(2))),
        lambda x: 0.5 * (1 + math.erf(x / math.sqrt(2))) + x * math.exp(-x * x / 2) / math.sqrt(2 * math.pi)),
    Act("gelu_tanh", "gelu", ("tanh",), lambda F, t: F.gelu(t, approximate="tanh"),
        lambda x: 0.5 * x * (1 + _gelu_tanh_inner(x)),
        lambda x: 0.5 * (1 + _gelu_tanh_inner(x)) + 0.5 * x * (1 - _gelu_tanh_inner(x) ** 2)
        * math.sqrt(2 / math.pi) * (1 + 3 * 0.044715 * x * x)),
    Act("sigmoid", "sigmoid", (), lambda F, t: F.sigmoid(t),
        _sigmoid, lambda x: _sigmoid(x) * (1 - _sigmoid(x))),
    Act("tanh", "tanh", (), lambda F, t: F.tanh(t), math.tanh, lambda x: 1 - math.tanh(x) ** 2),
    Act("softplus_default", "softplus", (), lambda F, t: F.softplus(t),
        lambda x: x if x > 20 else math.log1p(math.exp(x)), lambda x: 1.0 if x > 20 else _sigmoid(x), (20.0,)),
    Act("softplus_beta2_threshold3", "softplus", (2.0, 3.0), lambda F, t: F.softplus(t, 2.0, 3.0),
        lambda x: x if 2 * x > 3 else math.log1p(math.exp(2 * x)) / 2,
        lambda x: 1.0 if 2 * x > 3 else _sigmoid(2 * x), (1.5,)),
    Act("softplus_negative_beta", "softplus", (-1.5, 3.0), lambda F, t: F.softplus(t, -1.5, 3.0),
        lambda x: x if -1.5 * x > 3 else math.log1p(math.exp(-1.5 * x)) / -1.5,
        lambda x: 1.0 if -1.5 * x > 3 else _sigmoid(-1.5 * x), (-2.0,)),
    Act("silu", "silu", (), lambda F, t: F.silu(t),
        lambda x: x / (1 + math.exp(-x)), lambda x: _sigmoid(x) * (1 + x * (1 - _sigmoid(x)))),
]
PARAMS = [pytest.param(a, id=a.id) for a in ACTS]


def kernels(name):
    """The two backend kernels of activation ``name`` (softmax included)."""
    return (f"{name}_forward", f"{name}_backward")


def require_activation(backend, name):
    require(backend, "activation", *kernels(name))


def backends_with(name):
    return backends_implementing("activation", *kernels(name))


def forward(a: Act, x, backend="reference"):
    return getattr(fastconv, a.name)(x, *a.params, backend=backend)


def backward(a: Act, dy, x, backend="reference"):
    return getattr(fastconv, f"{a.name}_backward")(dy, x, *a.params, backend=backend)


def sample(rng, shape, dtype):
    """Normal data spread over [-6, 6] with exact zeros mixed in (the kink of most activations)."""
    x = np.asarray(3 * rng.standard_normal(shape)).astype(dtype)  # asarray: shape () gives a scalar
    x[rng.random(shape) < 0.15] = 0
    return x


def normal(rng, shape, dtype, scale):
    return np.asarray(scale * rng.standard_normal(shape)).astype(dtype)


def away_from_kinks(a: Act, x):
    for k in a.kinks:
        x = np.where(np.abs(x - k) < 0.05, x + 0.1, x)
    return x


# --------------------------------------------------------------------------------------------
# the reference against independent formulations
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("a", PARAMS)
def test_reference_matches_scalar_formulas(a, rng):
    x, dy = sample(rng, (3, 4, 5), np.float64), randn(rng, (3, 4, 5), np.float64)
    y_loop = np.array([a.f(v) for v in x.flat]).reshape(x.shape)
    dx_loop = np.array([g * a.df(v) for g, v in zip(dy.flat, x.flat)]).reshape(x.shape)
    check = assert_equal if a.exact else assert_close
    check(forward(a, x), y_loop, f"{a.id} forward")
    check(backward(a, dy, x), dx_loop, f"{a.id} backward")


@pytest.mark.parametrize("a", PARAMS)
def test_reference_gradient_matches_finite_differences(a, rng):
    x = away_from_kinks(a, sample(rng, (2, 7), np.float64))
    dy = randn(rng, x.shape, np.float64)
    assert_gradient(backward(a, dy, x), lambda v: forward(a, v), x, dy, a.id)


# --------------------------------------------------------------------------------------------
# against PyTorch
# --------------------------------------------------------------------------------------------

def torch_forward_backward(a: Act, x, dy):
    """PyTorch's y and dx (by autograd) for x, dy, in their dtype."""
    torch = pytest.importorskip("torch")
    xt = torch.tensor(x, requires_grad=True)
    yt = a.torch(torch.nn.functional, xt)
    yt.backward(torch.tensor(dy))
    return yt.detach().numpy(), xt.grad.numpy()


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("a", PARAMS)
def test_reference_matches_torch(a, dtype, rng):
    x, dy = sample(rng, (4, 3, 6), dtype), randn(rng, (4, 3, 6), dtype)
    y_torch, dx_torch = torch_forward_backward(a, x, dy)
    assert_close(forward(a, x), y_torch, f"{a.id} forward vs torch")
    assert_close(backward(a, dy, x), dx_torch, f"{a.id} backward vs torch")


EDGES = [0.0, -0.0, np.inf, -np.inf, np.nan, 1000.0, -1000.0, 1e-30, -1e-30, 30.0, -30.0, 89.0, -89.0,
         1e20, -1e20, 1.5, -2.0, 20.0]  # the last three: softplus thresholds


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("a", PARAMS)
def test_edge_values_match_torch(a, dtype, backend):
    """Kinks, thresholds, +-inf, NaN, huge and tiny values, against PyTorch in float64.

    float64 PyTorch is the oracle even for float32 input: float32 PyTorch has artefacts of its
    own (gelu(+inf) is NaN, the tanh-gelu gradient at 1e20 is NaN) that are not semantics.
    No warning may be raised: not for overflow, nor for the NaN that PyTorch gives too.
    """
    require_activation(backend, a.name)
    x = np.array(EDGES, dtype)
    dy = np.linspace(-2, 2, x.size).astype(dtype)
    y_torch, dx_torch = torch_forward_backward(a, x.astype(np.float64), dy.astype(np.float64))
    if a.name in ("elu", "selu"):  # PyTorch: NaN in its vector loop, scale * dy in its scalar tail
        dx_torch[np.isnan(x)] = np.nan
    y, dx = without_warnings(forward, a, x, backend), without_warnings(backward, a, dy, x, backend)
    assert_close(y, y_torch.astype(dtype), f"{a.id} forward at edges")
    assert_close(dx, dx_torch.astype(dtype), f"{a.id} backward at edges")


def test_gradient_at_kinks_is_torchs():
    """The choices at x = 0, at NaN and at softplus's threshold, spelled out."""
    x, dy = np.array([0.0, np.nan, -1.0, 1.0]), np.full(4, 2.0)
    assert_equal(fastconv.relu_backward(dy, x), np.array([0.0, 2.0, 0.0, 2.0]))
    assert_equal(fastconv.leaky_relu_backward(dy, x, 0.5), np.array([1.0, 1.0, 1.0, 2.0]))
    assert_equal(fastconv.elu_backward(dy, x, 3.0)[:2], np.array([6.0, np.nan]))
    assert_close(fastconv.selu_backward(dy, x)[:2], np.array([2 * SELU_SCALE * SELU_ALPHA, np.nan]))
    at_threshold = np.array([3.0, 3.0 + 1e-12, 1e4, np.nan])  # softplus: beta x > threshold is strict
    assert_close(fastconv.softplus_backward(dy, at_threshold, 1.0, 3.0),
                 np.array([2 / (1 + math.exp(-3)), 2.0, 2.0, np.nan]))


# --------------------------------------------------------------------------------------------
# every backend against the reference
# --------------------------------------------------------------------------------------------

SHAPES = [(), (1,), (7,), (3, 1, 5), (2, 3, 4, 5)]


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("a", PARAMS)
def test_backend_matches_reference(a, shape, dtype, backend, rng):
    require_activation(backend, a.name)
    # piecewise-linear activations are exact on small integers; the rest only close
    x = small_ints(rng, shape, dtype) if a.exact else sample(rng, shape, dtype)
    dy = small_ints(rng, shape, dtype) if a.exact else randn(rng, shape, dtype)
    inputs = snapshot(x, dy)
    y, dx = forward(a, x, backend), backward(a, dy, x, backend)
    assert_unchanged((x, dy), inputs)
    check = assert_equal if a.exact else assert_close
    check(y, forward(a, x), f"{a.id} forward on {backend}")
    check(dx, backward(a, dy, x), f"{a.id} backward on {backend}")
    assert_fresh_output(y, dtype, x, dy)
    assert_fresh_output(dx, dtype, x, dy)


@pytest.mark.parametrize("a", PARAMS)
def test_backend_accepts_non_contiguous_and_read_only_inputs(a, backend, rng):
    require_activation(backend, a.name)
    x, dy = sample(rng, (4, 6, 3), np.float32), randn(rng, (4, 6, 3), np.float32)
    want_y, want_dx = forward(a, x), backward(a, dy, x)
    xo, dyo = np.asfortranarray(x), np.asfortranarray(dy)
    sliced = np.repeat(x, 2, axis=1)[:, ::2]  # same values, every other element
    for arr in (xo, dyo, sliced):
        arr.setflags(write=False)
    assert not (xo.flags.c_contiguous or sliced.flags.c_contiguous or sliced.flags.f_contiguous)
    for xin in (xo, sliced):
        y, dx = forward(a, xin, backend), backward(a, dyo, xin, backend)
        assert_close(y, want_y, f"{a.id} forward on {backend}, non-contiguous read-only")
        assert_close(dx, want_dx, f"{a.id} backward on {backend}, non-contiguous read-only")
        assert_fresh_output(y, np.float32, xin, dyo)
        assert_fresh_output(dx, np.float32, xin, dyo)


@pytest.mark.parametrize("shape", [(0,), (0, 3), (2, 0, 5)], ids=str)
@pytest.mark.parametrize("a", PARAMS)
def test_empty_input(a, shape, backend):
    x = np.zeros(shape, np.float32)
    for out in (forward(a, x, backend), backward(a, x, x, backend)):
        assert out.shape == shape and out.dtype == np.float32


def require_float16(backend):
    if not takes_float16(backend, "activation"):
        pytest.skip(f"{backend} does not take float16 activations")


@pytest.mark.parametrize("a", PARAMS)
def test_float16_matches_reference_on_upcast_inputs(a, backend, rng):
    """float16 storage, float32 arithmetic: the reference on the same values in float32, rounded."""
    require_float16(backend)
    x, dy = sample(rng, (3, 41), np.float16), randn(rng, (3, 41), np.float16)
    y, dx = forward(a, x, backend), backward(a, dy, x, backend)
    assert_fresh_output(y, np.float16, x, dy)
    assert_close_half(y, forward(a, x.astype(np.float32)), f"{a.id} forward float16 on {backend}")
    assert_close_half(dx, backward(a, dy.astype(np.float32), x.astype(np.float32)),
                      f"{a.id} backward float16 on {backend}")


# --------------------------------------------------------------------------------------------
# softmax and log_softmax
# --------------------------------------------------------------------------------------------

def loop_softmax(x, dim, log):
    """softmax/log_softmax and their Jacobians, slice by slice in plain Python (float64)."""
    xm = np.moveaxis(x, dim, -1)
    y, jac = np.empty(xm.shape), np.empty(xm.shape + xm.shape[-1:])
    for idx in np.ndindex(xm.shape[:-1]):
        row = [float(v) for v in xm[idx]]
        m = max(row)
        total = sum(math.exp(v - m) for v in row)
        p = [math.exp(v - m) / total for v in row]
        y[idx] = [v - m - math.log(total) for v in row] if log else p
        for j in range(len(row)):  # jac[..., j, i] = d y_j / d x_i
            for i in range(len(row)):
                jac[idx + (j, i)] = (i == j) - p[i] if log else p[j] * ((i == j) - p[i])
    return np.moveaxis(y, -1, dim), jac


SOFTMAX_CASES = [((5,), 0), ((3, 4), -1), ((3, 4), 0), ((2, 3, 4), 1), ((2, 1, 3, 5), -4), ((4, 1), 1)]
SOFTMAX_PARAMS = [pytest.param(s, d, id=f"{s}_dim{d}") for s, d in SOFTMAX_CASES]
LOG = [pytest.param(False, id="softmax"), pytest.param(True, id="log_softmax")]


def softmax_op(log):
    return (fastconv.log_softmax, fastconv.log_softmax_backward) if log else (fastconv.softmax, fastconv.softmax_backward)


@pytest.mark.parametrize("log", LOG)
@pytest.mark.parametrize("shape, dim", SOFTMAX_PARAMS + [pytest.param((3, 700), 1, id="long_rows")])
def test_softmax_float16(shape, dim, log, backend, rng):
    require_float16(backend)
    fwd, bwd = softmax_op(log)
    x, dy = normal(rng, shape, np.float16, 4), randn(rng, shape, np.float16)
    y = fwd(x, dim, backend=backend)
    assert_close_half(y, fwd(x.astype(np.float32), dim, backend="reference"), f"forward float16 on {backend}")
    want = bwd(dy.astype(np.float32), y.astype(np.float32), dim, backend="reference")
    assert_close_half(bwd(dy, y, dim, backend=backend), want, f"backward float16 on {backend}")


@pytest.mark.parametrize("log", LOG)
@pytest.mark.parametrize("shape, dim", SOFTMAX_PARAMS)
def test_softmax_reference_matches_loops(shape, dim, log, rng):
    fwd, bwd = softmax_op(log)
    x, dy = normal(rng, shape, np.float64, 4), randn(rng, shape, np.float64)
    y_loop, jac = loop_softmax(x, dim, log)
    y = fwd(x, dim, backend="reference")
    assert_close(y, y_loop, "forward")
    dx_loop = np.moveaxis(np.einsum("...ji,...j->...i", jac, np.moveaxis(dy, dim, -1)), -1, dim)
    assert_close(bwd(dy, y, dim, backend="reference"), dx_loop, "backward")


@pytest.mark.parametrize("log", LOG)
@pytest.mark.parametrize("shape, dim", SOFTMAX_PARAMS[:4])
def test_softmax_gradient_matches_finite_differences(shape, dim, log, rng):
    fwd, bwd = softmax_op(log)
    x, dy = randn(rng, shape, np.float64), randn(rng, shape, np.float64)
    assert_gradient(bwd(dy, fwd(x, dim), dim), lambda v: fwd(v, dim), x, dy)


def torch_softmax(x, dy, dim, log):
    torch = pytest.importorskip("torch")
    xt = torch.tensor(x, requires_grad=True)
    yt = (torch.log_softmax if log else torch.softmax)(xt, dim)
    yt.backward(torch.tensor(dy))
    return yt.detach().numpy(), xt.grad.numpy()


@pytest.mark.parametrize("log", LOG)
@pytest.mark.parametrize("shape, dim", SOFTMAX_PARAMS + [pytest.param((), 0, id="0d_dim0"),
                                                         pytest.param((), -1, id="0d_dim-1")])
def test_softmax_matches_torch(shape, dim, log, dtype, rng):
    fwd, bwd = softmax_op(log)
    x, dy = normal(rng, shape, dtype, 3), randn(rng, shape, dtype)
    y_torch, dx_torch = torch_softmax(x, dy, dim, log)
    y = fwd(x, dim, backend="reference")
    assert_close(y, y_torch, "forward vs torch")
    assert_close(bwd(dy, y, dim, backend="reference"), dx_torch, "backward vs torch")


@pytest.mark.parametrize("log", LOG)
def test_softmax_backward_takes_the_output_like_torchs_backward_data(log, rng):
    torch = pytest.importorskip("torch")
    fwd, bwd = softmax_op(log)
    x, dy = randn(rng, (3, 5), np.float64), randn(rng, (3, 5), np.float64)
    y = fwd(x, 0)
    internal = torch._log_softmax_backward_data if log else torch._softmax_backward_data
    want = internal(torch.tensor(dy), torch.tensor(y), 0, torch.float64).numpy()
    assert_close(bwd(dy, y, 0), want)


@pytest.mark.parametrize("log", LOG)
def test_softmax_edge_rows_match_torch(log, dtype, backend):
    """Rows with -inf entries, only -inf (NaN), +inf (NaN), NaN, a 2000-wide spread (no overflow)."""
    require_activation(backend, "log_softmax" if log else "softmax")
    inf, nan = np.inf, np.nan
    x = np.array([[0, -inf, 1, -inf], [-inf] * 4, [inf, 0, 1, 2], [inf, inf, 0, 0], [nan, 0, 1, 2],
                  [1000, -1000, 0, 999], [-1000, -1000, -1000, -1000], [1e-30, 0, -1e-30, 0]], dtype)
    dy = np.linspace(-1, 2, x.size).reshape(x.shape).astype(dtype)
    fwd, bwd = softmax_op(log)
    y_torch, dx_torch = torch_softmax(x.astype(np.float64), dy.astype(np.float64), 1, log)
    y = without_warnings(fwd, x, 1, backend=backend)
    dx = without_warnings(bwd, dy, y, 1, backend=backend)
    assert_close(y, y_torch.astype(dtype), "forward at edges")
    assert_close(dx, dx_torch.astype(dtype), "backward at edges")


@pytest.mark.parametrize("log", LOG)
@pytest.mark.parametrize("shape, dim", SOFTMAX_PARAMS)
def test_softmax_backend_matches_reference(shape, dim, log, dtype, backend, rng):
    require_activation(backend, "log_softmax" if log else "softmax")
    fwd, bwd = softmax_op(log)
    x, dy = normal(rng, shape, dtype, 3), randn(rng, shape, dtype)
    inputs = snapshot(x, dy)
    y = fwd(x, dim, backend=backend)
    dx = bwd(dy, y, dim, backend=backend)
    assert_unchanged((x, dy), inputs)
    assert_close(y, fwd(x, dim, backend="reference"), f"forward on {backend}")
    assert_close(dx, bwd(dy, y, dim, backend="reference"), f"backward on {backend}")
    assert_fresh_output(y, dtype, x, dy)
    assert_fresh_output(dx, dtype, x, dy, y)


@pytest.mark.parametrize("log", LOG)
def test_softmax_backend_accepts_non_contiguous_and_read_only_inputs(log, backend, rng):
    require_activation(backend, "log_softmax" if log else "softmax")
    fwd, bwd = softmax_op(log)
    x, dy = randn(rng, (5, 4, 3), np.float32), randn(rng, (5, 4, 3), np.float32)
    y = fwd(x, 1)
    want_y, want_dx = y, bwd(dy, y, 1)
    xo, dyo, yo = (np.asfortranarray(a) for a in (x, dy, y))
    for a in (xo, dyo, yo):
        a.setflags(write=False)
    got_y, got_dx = fwd(xo, 1, backend=backend), bwd(dyo, yo, 1, backend=backend)
    assert_close(got_y, want_y, "forward, non-contiguous read-only")
    assert_close(got_dx, want_dx, "backward, non-contiguous read-only")
    assert_fresh_output(got_y, np.float32, xo)
    assert_fresh_output(got_dx, np.float32, dyo, yo)


@pytest.mark.parametrize("log", LOG)
def test_softmax_empty_input(log, backend):
    fwd, bwd = softmax_op(log)
    for shape, dim in (((0, 4), 1), ((3, 0), 1), ((3, 0), 0)):
        x = np.zeros(shape, np.float64)
        assert fwd(x, dim, backend=backend).shape == shape
        assert bwd(x, x, dim, backend=backend).shape == shape


# --------------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------------

F32 = np.ones((2, 3), np.float32)
BAD = [  # (id, op, args, kwargs, error type, text the message must contain)
    ("integer_x", fastconv.relu, (np.ones(3, np.int64),), {}, TypeError, "float32 or float64, got int64"),
    ("float16_x", fastconv.gelu, (np.ones(3, np.float16),), {}, TypeError, "float16"),
    ("list_x", fastconv.sigmoid, ([1.0, 2.0],), {}, TypeError, "numpy.ndarray"),
    ("dy_shape", fastconv.tanh_backward, (np.ones((3, 2), np.float32), F32), {}, ValueError, "expected dy of shape (2, 3)"),
    ("mixed_dtypes", fastconv.silu_backward, (np.ones((2, 3)), F32), {}, TypeError, "one dtype"),
    ("integer_dy", fastconv.relu_backward, (np.ones((2, 3), np.int32), F32), {}, TypeError, "dy of dtype"),
    ("slope_string", fastconv.leaky_relu, (F32, "0.1"), {}, TypeError, "negative_slope"),
    ("slope_nan", fastconv.leaky_relu_backward, (F32, F32, float("nan")), {}, ValueError, "negative_slope"),
    ("alpha_none", fastconv.elu, (F32, None), {}, TypeError, "alpha"),
    ("gelu_approximate", fastconv.gelu, (F32, "exact"), {}, ValueError, "'none', 'tanh'"),
    ("gelu_backward_approximate", fastconv.gelu_backward, (F32, F32, None), {}, ValueError, "approximate"),
    ("softplus_beta_zero", fastconv.softplus, (F32, 0.0), {}, ValueError, "beta != 0"),
    ("softplus_threshold_string", fastconv.softplus_backward, (F32, F32, 1.0, "20"), {}, TypeError, "threshold"),
    ("softmax_dim_out_of_range", fastconv.softmax, (F32, 2), {}, ValueError, "dim in [-2, 1]"),
    ("softmax_dim_negative", fastconv.log_softmax, (F32, -3), {}, ValueError, "got -3"),
    ("softmax_dim_float", fastconv.softmax, (F32, 1.0), {}, TypeError, "dim"),
    ("softmax_dim_bool", fastconv.softmax, (F32, True), {}, TypeError, "dim"),
    ("softmax_dim_none", fastconv.softmax, (F32, None), {}, TypeError, "dim"),
    ("softmax_0d_dim", fastconv.softmax, (np.ones((), np.float32), 1), {}, ValueError, "dim in [-1, 0]"),
    ("softmax_integer", fastconv.softmax, (np.ones((2, 3), np.int32),), {}, TypeError, "int32"),
    ("softmax_backward_shapes", fastconv.softmax_backward, (np.ones((3, 2), np.float32), F32), {}, ValueError, "expected dy of shape"),
    ("log_softmax_backward_dtype", fastconv.log_softmax_backward, (np.ones((2, 3)), F32), {}, TypeError, "one dtype"),
    ("log_softmax_backward_dim", fastconv.log_softmax_backward, (F32, F32, 5), {}, ValueError, "dim"),
]


@pytest.mark.parametrize("op, args, kwargs, error, text", bad_input_cases(BAD))
def test_bad_input_raises_clear_error(op, args, kwargs, error, text, backend):
    check_bad_input(op, args, kwargs, error, text, backend)


# --------------------------------------------------------------------------------------------
# properties: random shapes and parameters against PyTorch
# --------------------------------------------------------------------------------------------

shapes = st.lists(st.integers(0, 4), min_size=0, max_size=3).map(tuple)


@settings(max_examples=40, deadline=None)
@given(a=st.sampled_from(ACTS), shape=shapes, seed=st.integers(0, 2**32 - 1))
def test_property_activation_matches_torch(a, shape, seed):
    rng = np.random.default_rng(seed)
    x, dy = sample(rng, shape, np.float64), randn(rng, shape, np.float64)
    y_torch, dx_torch = torch_forward_backward(a, x, dy)
    for name in backends_with(a.name):
        assert_close(forward(a, x, name), y_torch, f"{a.id} forward on {name}")
        assert_close(backward(a, dy, x, name), dx_torch, f"{a.id} backward on {name}")


@st.composite
def softmax_configs(draw):
    shape = tuple(draw(st.lists(st.integers(1, 5), min_size=1, max_size=4)))
    return shape, draw(st.integers(-len(shape), len(shape) - 1)), draw(st.booleans())


@settings(max_examples=40, deadline=None)
@given(config=softmax_configs(), seed=st.integers(0, 2**32 - 1))
def test_property_softmax_matches_torch(config, seed):
    shape, dim, log = config
    rng = np.random.default_rng(seed)
    x, dy = normal(rng, shape, np.float64, 5), randn(rng, shape, np.float64)
    y_torch, dx_torch = torch_softmax(x, dy, dim, log)
    fwd, bwd = softmax_op(log)
    for name in backends_with("log_softmax" if log else "softmax"):
        y = fwd(x, dim, backend=name)
        assert_close(y, y_torch, f"forward on {name}")
        assert_close(bwd(dy, y, dim, backend=name), dx_torch, f"backward on {name}")
