"""batch_norm: the reference against per-channel loops (statistics, output, an explicit Jacobian
for the training backward), finite differences in training and inference, PyTorch's
F.batch_norm for 2-d to 5-d x in both modes (outputs, running statistics, all three gradients);
every backend against the reference; bad input."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastconv
from support import (bad_input_cases, check_bad_input, backends_implementing, require, DTYPES, assert_close, assert_equal, assert_fresh_output, assert_gradient,
                     assert_unchanged, randn, small_ints, snapshot)

FUNCS = ("batch_norm_stats", "batch_norm_forward", "batch_norm_backward_reduce", "batch_norm_backward_input")
# (name, x shape): every rank from BatchNorm1d (N, C) to BatchNorm3d, odd sizes, H != W, batch 1
NORM_PROBLEMS = [
    ("dense", (6, 5)),
    ("seq", (3, 4, 7)),
    ("image", (2, 3, 5, 4)),
    ("volume", (2, 3, 2, 3, 4)),
    ("batch_1_image", (1, 3, 2, 5)),
    ("batch_2_dense", (2, 7)),
    ("spatial_1x1", (5, 2, 1, 1)),
]
PROBLEMS = [pytest.param(s, id=name) for name, s in NORM_PROBLEMS]
NAMES = ("y", "mean", "invstd", "running_mean", "running_var", "dx", "dweight", "dbias")


@pytest.fixture
def norm_backend(backend):
    """The suite's backend matrix, less the backends that do not implement batch norm yet."""
    return require(backend, "norm", *FUNCS)


def _params(make, rng, C, dtype):
    """weight, bias, running_mean, running_var (positive) of C channels."""
    return (make(rng, (C,), dtype), make(rng, (C,), dtype), make(rng, (C,), dtype),
            (np.abs(make(rng, (C,), dtype)) + 1).astype(dtype))


# --------------------------------------------------------------------------------------------
# an independent formulation: one channel at a time, Python sums, an explicit Jacobian
# --------------------------------------------------------------------------------------------

def _channel(a, c):
    return [float(v) for v in np.moveaxis(a, 1, 0)[c].reshape(-1)]


def direct_batch_norm(x, weight, bias, running_mean, running_var, training, momentum, eps):
    C = x.shape[1]
    y = np.zeros((C, x.size // C))
    mean, invstd, new_mean, new_var = (np.zeros(C) for _ in range(4))
    for c in range(C):
        values = _channel(x, c)
        n = len(values)
        m = math.fsum(values) / n
        v = math.fsum((u - m) ** 2 for u in values) / n
        if training:
            new_mean[c] = (1 - momentum) * running_mean[c] + momentum * m
            new_var[c] = (1 - momentum) * running_var[c] + momentum * v * n / (n - 1)
        else:
            m, v = float(running_mean[c]), float(running_var[c])
            new_mean[c], new_var[c] = running_mean[c], running_var[c]
        mean[c], invstd[c] = m, 1 / math.sqrt(v + eps)
        y[c] = [(u - m) * invstd[c] * weight[c] + bias[c] for u in values]
    y = np.moveaxis(y.reshape(C, x.shape[0], *x.shape[2:]), 0, 1)
    return y, mean, invstd, new_mean, new_var


def direct_batch_norm_dx(dy, x, weight, mean, invstd, training):
    """dx[j] = sum_i dy[i] * dy_i/dx_j with the Jacobian written out per channel:
    dy_i/dx_j = weight * invstd * (delta_ij - 1/n - xhat_i * xhat_j / n) in training."""
    C = x.shape[1]
    dx = np.zeros((C, x.size // C))
    for c in range(C):
        xs, dys = _channel(x, c), _channel(dy, c)
        n = len(xs)
        xhat = [(u - mean[c]) * invstd[c] for u in xs]
        for j in range(n):
            terms = []
            for i in range(n):
                jac = float(i == j) - (1 / n + xhat[i] * xhat[j] / n if training else 0.0)
                terms.append(dys[i] * weight[c] * invstd[c] * jac)
            dx[c, j] = math.fsum(terms)
    return np.moveaxis(dx.reshape(C, x.shape[0], *x.shape[2:]), 0, 1)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("shape", PROBLEMS)
def test_reference_matches_direct_loops(shape, training, rng):
    x = randn(rng, shape, np.float64)
    weight, bias, rm, rv = _params(randn, rng, shape[1], np.float64)
    got = fastconv.batch_norm(x, rm, rv, weight, bias, training, 0.3, 1e-3, backend="reference")
    want = direct_batch_norm(x, weight, bias, rm, rv, training, 0.3, 1e-3)
    for name, g, w in zip(NAMES, got, want):
        assert_close(g, w, name)
    dy = randn(rng, shape, np.float64)
    dx, dweight, dbias = fastconv.batch_norm_backward(dy, x, weight, mean=got.mean, invstd=got.invstd,
                                                      training=training, backend="reference")
    assert_close(dx, direct_batch_norm_dx(dy, x, weight, got.mean, got.invstd, training), "dx")
    axes, channel = (0, *range(2, x.ndim)), (1, -1, *[1] * (x.ndim - 2))
    xhat = (x - got.mean.reshape(channel)) * got.invstd.reshape(channel)
    assert_close(dweight, (dy * xhat).sum(axis=axes), "dweight")
    assert_close(dbias, dy.sum(axis=axes), "dbias")


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("shape", [p for p in PROBLEMS if p.id in ("seq", "image", "batch_2_dense")])
def test_reference_gradients_match_finite_differences(shape, training, rng):
    """In training every output depends on every x of its channel: the full Jacobian is checked."""
    x = randn(rng, shape, np.float64)
    weight, bias, rm, rv = _params(randn, rng, shape[1], np.float64)

    def run(**kw):
        args = {"x": x, "weight": weight, "bias": bias, **kw}
        return fastconv.batch_norm(args["x"], rm, rv, args["weight"], args["bias"], training, eps=1e-3).y

    dy = randn(rng, shape, np.float64)
    r = fastconv.batch_norm(x, rm, rv, weight, bias, training, eps=1e-3)
    dx, dweight, dbias = fastconv.batch_norm_backward(dy, x, weight, mean=r.mean, invstd=r.invstd, training=training)
    assert_gradient(dx, lambda v: run(x=v), x, dy, "dx")
    assert_gradient(dweight, lambda v: run(weight=v), weight, dy, "dweight")
    assert_gradient(dbias, lambda v: run(bias=v), bias, dy, "dbias")


def test_weight_none_gradient_matches_finite_differences(rng):
    x, dy = randn(rng, (4, 3, 2), np.float64), randn(rng, (4, 3, 2), np.float64)
    r = fastconv.batch_norm(x, training=True)
    dx, dweight, dbias = fastconv.batch_norm_backward(dy, x, mean=r.mean, invstd=r.invstd, training=True)
    assert dweight is None  # no scale in the forward; dbias is still the per-channel sum of dy
    assert_close(dbias, dy.sum(axis=(0, 2)))
    assert_gradient(dx, lambda v: fastconv.batch_norm(v, training=True).y, x, dy, "dx")


# --------------------------------------------------------------------------------------------
# against PyTorch
# --------------------------------------------------------------------------------------------

def torch_batch_norm(x, weight, bias, rm, rv, training, momentum, eps, dy):
    """F.batch_norm's output, updated running stats (None if not given) and autograd gradients."""
    torch = pytest.importorskip("torch")
    xt = torch.tensor(x, requires_grad=True)
    wt, bt = (None if a is None else torch.tensor(a, requires_grad=True) for a in (weight, bias))
    rmt, rvt = (None if a is None else torch.tensor(a) for a in (rm, rv))
    yt = torch.nn.functional.batch_norm(xt, rmt, rvt, wt, bt, training, momentum, eps)
    yt.backward(torch.tensor(dy))
    numpy = lambda t: None if t is None else t.detach().numpy()  # noqa: E731
    return (numpy(yt), numpy(rmt), numpy(rvt), numpy(xt.grad),
            None if wt is None else numpy(wt.grad), None if bt is None else numpy(bt.grad))


@pytest.mark.parametrize("affine", ["weight_and_bias", "no_weight", "bias_only"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("shape", PROBLEMS)
def test_reference_matches_torch(shape, dtype, training, affine, rng):
    x = randn(rng, shape, dtype) * dtype(3) + dtype(1)
    weight, bias, rm, rv = _params(randn, rng, shape[1], dtype)
    weight = weight if affine == "weight_and_bias" else None
    bias = None if affine == "no_weight" else bias
    dy = randn(rng, shape, dtype)
    before = snapshot(x, weight, bias, rm, rv)
    r = fastconv.batch_norm(x, rm, rv, weight, bias, training, 0.2, 1e-4, backend="reference")
    assert_unchanged((x, weight, bias, rm, rv), before)
    y_t, rm_t, rv_t, dx_t, dw_t, db_t = torch_batch_norm(x, weight, bias, rm, rv, training, 0.2, 1e-4, dy)
    assert_close(r.y, y_t, "y vs torch")
    assert_close(r.running_mean, rm_t, "running_mean vs torch")
    assert_close(r.running_var, rv_t, "running_var vs torch")
    dx, dweight, dbias = fastconv.batch_norm_backward(dy, x, weight, mean=r.mean, invstd=r.invstd,
                                                      training=training, backend="reference")
    assert_close(dx, dx_t, "dx vs torch", scale=4)  # the training dx cancels three terms
    if weight is None:
        assert dweight is None
    else:
        assert_close(dweight, dw_t, "dweight vs torch")
    if bias is not None:  # torch has a bias gradient only when a bias was given; ours is always there
        assert_close(dbias, db_t, "dbias vs torch")


def test_training_without_running_stats_matches_torch(rng):
    x, dy = randn(rng, (4, 3, 5), np.float64), randn(rng, (4, 3, 5), np.float64)
    r = fastconv.batch_norm(x, training=True)
    assert r.running_mean is None and r.running_var is None
    y_t, *_, dx_t, _, _ = torch_batch_norm(x, None, None, None, None, True, 0.1, 1e-5, dy)
    assert_close(r.y, y_t)
    dx, _, _ = fastconv.batch_norm_backward(dy, x, mean=r.mean, invstd=r.invstd, training=True)
    assert_close(dx, dx_t)


def test_statistics_returned_for_the_backward(rng):
    """mean/invstd are what normalised x: the batch's (biased variance) or the running ones."""
    x = randn(rng, (5, 3, 4), np.float64)
    _, _, rm, rv = _params(randn, rng, 3, np.float64)
    r = fastconv.batch_norm(x, rm, rv, training=True, eps=1e-2)
    assert_close(r.mean, x.mean(axis=(0, 2)))
    assert_close(r.invstd, 1 / np.sqrt(x.var(axis=(0, 2)) + 1e-2))
    r = fastconv.batch_norm(x, rm, rv, training=False, eps=1e-2)
    assert_equal(r.mean, rm)
    assert_close(r.invstd, 1 / np.sqrt(rv + 1e-2))
    for a in (r.mean, r.running_mean, r.running_var):
        assert_fresh_output(a, np.float64, rm, rv)


def test_constant_channel_and_nan(rng):
    """A constant channel normalises to 0 (variance 0, eps keeps invstd finite); NaN stays in its channel."""
    x = randn(rng, (4, 3, 2), np.float32)
    x[:, 0] = 7
    x[1, 2, 1] = np.nan
    r = fastconv.batch_norm(x, training=True)
    assert (r.y[:, 0] == 0).all()
    assert np.isfinite(r.y[:, 1]).all() and np.isnan(r.y[:, 2]).all()


def test_empty_batch(norm_backend):
    x = np.zeros((0, 3, 4), np.float32)
    rm, rv = np.full(3, 0.5, np.float32), np.full(3, 2.0, np.float32)
    w = np.ones(3, np.float32)
    for training in (True, False):
        r = fastconv.batch_norm(x, rm, rv, w, w, training, backend=norm_backend)
        assert r.y.shape == x.shape and r.y.dtype == np.float32
        assert_equal(r.running_mean, rm)  # like PyTorch: an empty batch leaves the running stats
        assert_equal(r.running_var, rv)
        dx, dw, db = fastconv.batch_norm_backward(x, x, w, mean=r.mean, invstd=r.invstd, training=training,
                                                  backend=norm_backend)
        assert dx.shape == x.shape
        assert_equal(dw, np.zeros(3, np.float32))
        assert_equal(db, np.zeros(3, np.float32))


# --------------------------------------------------------------------------------------------
# every backend against the reference
# --------------------------------------------------------------------------------------------

def _run_all(x, weight, bias, rm, rv, dy, training, backend):
    r = fastconv.batch_norm(x, rm, rv, weight, bias, training, 0.1, 1e-5, backend=backend)
    grads = fastconv.batch_norm_backward(dy, x, weight, mean=r.mean, invstd=r.invstd, training=training,
                                         backend=backend)
    return (*r, *grads)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("shape", PROBLEMS)
def test_backend_on_small_integers(shape, training, norm_backend, rng):
    """Small-integer inputs: the statistics are exact sums, the rest is close (sqrt, division)."""
    x, dy = small_ints(rng, shape, np.float32), small_ints(rng, shape, np.float32)
    weight, bias, rm, rv = _params(small_ints, rng, shape[1], np.float32)
    inputs = snapshot(x, weight, bias, rm, rv, dy)
    got = _run_all(x, weight, bias, rm, rv, dy, training, norm_backend)
    assert_unchanged((x, weight, bias, rm, rv, dy), inputs)
    for name, g, r in zip(NAMES, got, _run_all(x, weight, bias, rm, rv, dy, training, "reference")):
        assert_close(g, r, f"{name} on {norm_backend}", scale=4)
        assert_fresh_output(g, np.float32, x, weight, bias, rm, rv, dy)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("shape", PROBLEMS)
def test_backend_close_on_random_data(shape, dtype, training, norm_backend, rng):
    x, dy = randn(rng, shape, dtype), randn(rng, shape, dtype)
    weight, bias, rm, rv = _params(randn, rng, shape[1], dtype)
    for name, g, r in zip(NAMES, _run_all(x, weight, bias, rm, rv, dy, training, norm_backend),
                          _run_all(x, weight, bias, rm, rv, dy, training, "reference")):
        assert_close(g, r, f"{name} on {norm_backend}", scale=4)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_backend_accepts_non_contiguous_and_read_only_inputs(training, norm_backend, rng):
    x, dy = randn(rng, (3, 4, 5, 2), np.float32), randn(rng, (3, 4, 5, 2), np.float32)
    weight, bias, rm, rv = _params(randn, rng, 4, np.float32)
    want = _run_all(x, weight, bias, rm, rv, dy, training, "reference")
    odd = [np.asfortranarray(a) for a in (x, dy)] + [np.repeat(v, 2)[::2] for v in (weight, bias, rm, rv)]
    for a in odd:
        a.setflags(write=False)
    xo, dyo, wo, bo, rmo, rvo = odd
    assert not (xo.flags.c_contiguous or wo.flags.c_contiguous)
    for name, g, r in zip(NAMES, _run_all(xo, wo, bo, rmo, rvo, dyo, training, norm_backend), want):
        assert_close(g, r, f"{name} on {norm_backend} with non-contiguous read-only inputs")
        assert_fresh_output(g, np.float32, *odd)


@pytest.mark.parametrize("shape", [(3, 2, 500), (2, 3, 41, 27)], ids=["long_rows", "image"])
def test_backend_on_long_channels(shape, norm_backend, rng):
    """Channels of 1,500 and 2,214 values, far from 0: the GPU backend reduces each in several
    segments and merges them in order (the statistics stay accurate with a large mean)."""
    x = randn(rng, shape, np.float32) * np.float32(3) + np.float32(100)
    dy = randn(rng, shape, np.float32)
    weight, bias, rm, rv = _params(randn, rng, shape[1], np.float32)
    for name, g, r in zip(NAMES, _run_all(x, weight, bias, rm, rv, dy, True, norm_backend),
                          _run_all(x, weight, bias, rm, rv, dy, True, "reference")):
        assert_close(g, r, f"{name} on {norm_backend}", scale=4)
    axes = (0, *range(2, x.ndim))
    mean, var = x.astype(np.float64).mean(axis=axes), x.astype(np.float64).var(axis=axes)
    r = fastconv.batch_norm(x, training=True, eps=1e-30, backend=norm_backend)  # 0 would be refused (PyTorch's rule)
    assert_close(r.mean, mean.astype(np.float32), "mean against float64")
    assert_close(r.invstd, (1 / np.sqrt(var)).astype(np.float32), "invstd against float64")


@pytest.mark.parametrize("needs", [(True, False, False), (False, True, False), (False, False, True), (False,) * 3])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_backward_computes_only_what_is_needed(needs, training, norm_backend, rng):
    x, dy = randn(rng, (4, 3, 5), np.float64), randn(rng, (4, 3, 5), np.float64)
    weight, bias, rm, rv = _params(randn, rng, 3, np.float64)
    r = fastconv.batch_norm(x, rm, rv, weight, bias, training, backend=norm_backend)
    kw = dict(mean=r.mean, invstd=r.invstd, training=training, backend=norm_backend)
    full = fastconv.batch_norm_backward(dy, x, weight, **kw)
    part = fastconv.batch_norm_backward(dy, x, weight, needs=needs, **kw)
    for need, f, p in zip(needs, full, part):
        if need:
            assert_equal(p, f)
        else:
            assert p is None


# --------------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------------

f32 = np.float32
X, V = np.ones((2, 3, 4), f32), np.ones(3, f32)
STATS = dict(mean=V, invstd=V, training=True)

BAD = [  # (id, op, args, kwargs, error type, text the message must contain)
    ("x_1d", fastconv.batch_norm, (np.ones(3, f32), V, V), {}, ValueError,
     "expected x with 2 or more dims (N, C, *) (or an empty 1-d array), got shape (3,)"),
    ("x_0d", fastconv.batch_norm, (np.ones((), f32), V, V), {}, ValueError, "2 or more dims"),
    ("weight_without_channels", fastconv.batch_norm, (np.ones((3, 0), f32), None, None, np.ones(0, f32)),
     {"training": True}, ValueError, "x of shape (3, 0) has no channels; expected weight and bias None"),
    ("bias_empty_1d", fastconv.batch_norm, (np.ones(0, f32), None, None, None, np.ones(0, f32)),
     {"training": True}, ValueError, "has no channels"),
    ("one_value_per_channel", fastconv.batch_norm, (np.ones((1, 3), f32),), {"training": True}, ValueError,
     "expected more than 1 value per channel when training, got x of shape (1, 3)"),
    ("one_value_per_channel_3d", fastconv.batch_norm, (np.ones((1, 3, 1), f32),), {"training": True}, ValueError,
     "more than 1 value per channel"),
    ("inference_without_stats", fastconv.batch_norm, (X,), {}, ValueError, "running_mean and running_var are required"),
    ("inference_without_var", fastconv.batch_norm, (X, V), {}, ValueError, "required in inference"),
    ("running_mean_shape", fastconv.batch_norm, (X, np.ones(4, f32), V), {}, ValueError, "expected running_mean of shape (3,), got (4,)"),
    ("weight_shape", fastconv.batch_norm, (X, V, V, np.ones(2, f32)), {}, ValueError, "expected weight of shape (3,)"),
    ("bias_2d", fastconv.batch_norm, (X, V, V, V, np.ones((3, 1), f32)), {}, ValueError, "expected bias with 1 dims (C,)"),
    ("stats_dtype", fastconv.batch_norm, (X, V.astype(np.float64), V), {}, TypeError, "one dtype"),
    ("integer_x", fastconv.batch_norm, (X.astype(np.int32), V, V), {}, TypeError, "float32 or float64, got int32"),
    ("list_weight", fastconv.batch_norm, (X, V, V, [1.0, 1.0, 1.0]), {}, TypeError, "expected weight to be a numpy.ndarray"),
    ("training_int", fastconv.batch_norm, (X, V, V), {"training": 1}, TypeError, "expected training to be a bool"),
    ("momentum_string", fastconv.batch_norm, (X, V, V), {"training": True, "momentum": "0.1"}, TypeError, "momentum"),
    ("momentum_none", fastconv.batch_norm, (X, V, V), {"training": True, "momentum": None}, TypeError, "momentum"),
    ("eps_negative", fastconv.batch_norm, (X, V, V), {"eps": -1e-5}, ValueError, "expected eps >= 0.0"),
    ("eps_zero_training", fastconv.batch_norm, (X, V, V), {"training": True, "eps": 0.0}, ValueError,
     "eps must be positive in training, got 0.0"),
    ("dy_shape", fastconv.batch_norm_backward, (np.ones((2, 3, 5), f32), X, V), STATS, ValueError, "expected dy of shape (2, 3, 4)"),
    ("dy_dtype", fastconv.batch_norm_backward, (X.astype(np.float64), X, V), STATS, TypeError, "one dtype"),
    ("mean_shape", fastconv.batch_norm_backward, (X, X, V), {**STATS, "mean": np.ones(2, f32)}, ValueError, "expected mean of shape (3,)"),
    ("invstd_none", fastconv.batch_norm_backward, (X, X, V), {**STATS, "invstd": None}, ValueError, "mean and invstd"),
    ("backward_training_none", fastconv.batch_norm_backward, (X, X, V), {**STATS, "training": None}, TypeError, "training"),
    ("needs_short", fastconv.batch_norm_backward, (X, X, V), {**STATS, "needs": (True,)}, TypeError, "needs"),
    ("backward_x_1d", fastconv.batch_norm_backward, (V, V, V), STATS, ValueError, "expected x with 2 or more dims"),
]


@pytest.mark.parametrize("op, args, kwargs, error, text", bad_input_cases(BAD))
def test_bad_input_raises_clear_error(op, args, kwargs, error, text, backend):
    check_bad_input(op, args, kwargs, error, text, backend)


# --------------------------------------------------------------------------------------------
# property: random shapes, modes and hyper-parameters against PyTorch on every backend
# --------------------------------------------------------------------------------------------

@settings(max_examples=40, deadline=None)
@given(shape=st.lists(st.integers(1, 4), min_size=2, max_size=5).map(tuple), training=st.booleans(),
       affine=st.booleans(), momentum=st.floats(0, 1), eps=st.floats(1e-6, 1e-1), seed=st.integers(0, 2**32 - 1))
def test_property_matches_torch(shape, training, affine, momentum, eps, seed):
    if training and math.prod(shape) == shape[1]:
        shape = (shape[0] + 1, *shape[1:])  # training needs more than one value per channel
    rng = np.random.default_rng(seed)
    x, dy = randn(rng, shape, np.float64), randn(rng, shape, np.float64)
    weight, bias, rm, rv = _params(randn, rng, shape[1], np.float64)
    weight, bias = (weight, bias) if affine else (None, None)
    y_t, rm_t, rv_t, dx_t, dw_t, db_t = torch_batch_norm(x, weight, bias, rm, rv, training, momentum, eps, dy)
    for name in backends_implementing("norm", *FUNCS):
        r = fastconv.batch_norm(x, rm, rv, weight, bias, training, momentum, eps, backend=name)
        grads = fastconv.batch_norm_backward(dy, x, weight, mean=r.mean, invstd=r.invstd, training=training,
                                             backend=name)
        for label, g, t in zip(("y", "running_mean", "running_var", "dx", "dweight", "dbias"),
                               (r.y, r.running_mean, r.running_var, *grads), (y_t, rm_t, rv_t, dx_t, dw_t, db_t)):
            if label == "dbias" and t is None:  # torch has none without a bias; ours is sum(dy)
                assert_close(g, dy.sum(axis=tuple(i for i in range(dy.ndim) if i != 1)), f"{label} on {name}")
            elif t is None:
                assert g is None, f"{label} on {name}"
            else:
                assert_close(g, t, f"{label} on {name}")
