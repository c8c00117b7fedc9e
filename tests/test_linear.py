"""linear: the reference against direct loops, finite differences and PyTorch (1-d to 4-d x);
every backend against the reference (exact on small integers, close on random data); bad input."""

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastconv
from support import (bad_input_cases, check_bad_input, backends_implementing, require, DTYPES, assert_close, assert_equal, assert_fresh_output, assert_gradient,
                     assert_close_half, assert_unchanged, randn, small_ints, snapshot, takes_float16)

# (name, x shape, out_features): leading dims of every rank, odd sizes, batch 1, one feature
LINEAR_PROBLEMS = [
    ("batch_2d", (5, 7), 3),
    ("vector_1d", (7,), 4),
    ("seq_3d", (2, 3, 5), 6),
    ("image_4d", (2, 1, 3, 4), 5),
    ("batch_1", (1, 9), 1),
    ("in_features_1", (4, 1), 3),
    ("wide", (3, 33), 17),
]
PROBLEMS = [pytest.param(*p[1:], id=p[0]) for p in LINEAR_PROBLEMS]
NAMES = ("forward", "dgrad", "wgrad", "bias grad")
FUNCS = ("linear_forward", "linear_backward_input", "linear_backward_weight", "linear_backward_bias")


@pytest.fixture
def linear_backend(backend):
    """The suite's backend matrix, less the backends that do not implement the linear passes yet."""
    return require(backend, "linear", *FUNCS)


def _inputs(make, rng, x_shape, out_features, dtype):
    in_features = x_shape[-1]
    return (make(rng, x_shape, dtype), make(rng, (out_features, in_features), dtype),
            make(rng, (out_features,), dtype))


# --------------------------------------------------------------------------------------------
# an independent formulation: direct loops over rows, outputs and inputs
# --------------------------------------------------------------------------------------------

def direct_linear(x, w, b):
    rows = x.reshape(-1, x.shape[-1])
    y = np.zeros((rows.shape[0], w.shape[0]), x.dtype)
    for m in range(rows.shape[0]):
        for o in range(w.shape[0]):
            y[m, o] = b[o]
            for k in range(w.shape[1]):
                y[m, o] += rows[m, k] * w[o, k]
    return y.reshape(*x.shape[:-1], w.shape[0])


def direct_linear_grads(dy, x, w):
    rows, drows = x.reshape(-1, x.shape[-1]), dy.reshape(-1, w.shape[0])
    dx, dw, db = np.zeros_like(rows), np.zeros_like(w), np.zeros(w.shape[0], w.dtype)
    for m in range(rows.shape[0]):
        for o in range(w.shape[0]):
            db[o] += drows[m, o]
            for k in range(w.shape[1]):
                dx[m, k] += drows[m, o] * w[o, k]
                dw[o, k] += drows[m, o] * rows[m, k]
    return dx.reshape(x.shape), dw, db


@pytest.mark.parametrize("x_shape, out_features", PROBLEMS)
def test_reference_matches_direct_loops_exactly(x_shape, out_features, rng):
    x, w, b = _inputs(small_ints, rng, x_shape, out_features, np.float32)
    y = fastconv.linear(x, w, b, backend="reference")
    assert_equal(y, direct_linear(x, w, b), "forward")
    dy = small_ints(rng, y.shape, np.float32)
    for name, got, want in zip(NAMES[1:], fastconv.linear_backward(dy, x, w, backend="reference"),
                               direct_linear_grads(dy, x, w)):
        assert_equal(got, want, name)


@pytest.mark.parametrize("x_shape, out_features", [p for p in PROBLEMS if p.id in ("seq_3d", "vector_1d", "batch_2d")])
def test_reference_gradients_match_finite_differences(x_shape, out_features, rng):
    x, w, b = _inputs(randn, rng, x_shape, out_features, np.float64)
    run = lambda **kw: fastconv.linear(**{"x": x, "w": w, "b": b, **kw})  # noqa: E731
    dy = randn(rng, run().shape, np.float64)
    dx, dw, db = fastconv.linear_backward(dy, x, w, backend="reference")
    assert_gradient(dx, lambda v: run(x=v), x, dy, "dx")
    assert_gradient(dw, lambda v: run(w=v), w, dy, "dw")
    assert_gradient(db, lambda v: run(b=v), b, dy, "db")


# --------------------------------------------------------------------------------------------
# against PyTorch
# --------------------------------------------------------------------------------------------

def torch_linear(x, w, b, dy):
    """PyTorch's output and autograd gradients (db None when b is None)."""
    torch = pytest.importorskip("torch")
    xt, wt = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    bt = None if b is None else torch.tensor(b, requires_grad=True)
    yt = torch.nn.functional.linear(xt, wt, bt)
    yt.backward(torch.tensor(dy))
    return yt.detach().numpy(), xt.grad.numpy(), wt.grad.numpy(), None if bt is None else bt.grad.numpy()


@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("x_shape, out_features", PROBLEMS)
def test_reference_matches_torch(x_shape, out_features, dtype, with_bias, rng):
    x, w, b = _inputs(randn, rng, x_shape, out_features, dtype)
    b = b if with_bias else None
    y = fastconv.linear(x, w, b, backend="reference")
    dy = randn(rng, y.shape, dtype)
    want = torch_linear(x, w, b, dy)
    assert_close(y, want[0], "forward vs torch")
    dx, dw, db = fastconv.linear_backward(dy, x, w, backend="reference")
    assert_close(dx, want[1], "dx vs torch")
    assert_close(dw, want[2], "dw vs torch")
    assert_close(db, dy.reshape(-1, out_features).sum(axis=0) if b is None else want[3], "db vs torch")


@pytest.mark.parametrize("x_shape, w_shape", [
    pytest.param((0, 5), (3, 5), id="empty_batch"),
    pytest.param((2, 0, 5), (3, 5), id="empty_middle_dim"),
    pytest.param((4, 0), (3, 0), id="no_in_features"),
    pytest.param((4, 5), (0, 5), id="no_out_features"),
])
def test_empty_sizes_match_torch(x_shape, w_shape, linear_backend, rng):
    """Zero-size inputs give PyTorch's result (with no in_features y is the bias) and zero gradients."""
    x, w, b = randn(rng, x_shape, np.float64), randn(rng, w_shape, np.float64), randn(rng, w_shape[0], np.float64)
    y = fastconv.linear(x, w, b, backend=linear_backend)
    dy = randn(rng, y.shape, np.float64)
    want = torch_linear(x, w, b, dy)
    assert_fresh_output(y, np.float64, x, w, b)
    assert_equal(y, want[0], "forward")
    for name, got, ref in zip(NAMES[1:], fastconv.linear_backward(dy, x, w, backend=linear_backend), want[1:]):
        assert_fresh_output(got, np.float64, x, w, dy)
        assert_equal(got, ref, name)


@pytest.mark.filterwarnings("ignore:invalid value encountered")
def test_nan_and_inf_propagate(linear_backend):
    x = np.ones((3, 4), np.float32)
    x[0, 1], x[2, 3] = np.nan, np.inf
    w = np.ones((2, 4), np.float32)
    y = fastconv.linear(x, w, backend=linear_backend)
    assert np.isnan(y[0]).all() and np.isinf(y[2]).all() and np.isfinite(y[1]).all()


# --------------------------------------------------------------------------------------------
# every backend against the reference
# --------------------------------------------------------------------------------------------

def _run_all(x, w, b, dy, backend):
    return (fastconv.linear(x, w, b, backend=backend), *fastconv.linear_backward(dy, x, w, backend=backend))


@pytest.mark.parametrize("x_shape, out_features", PROBLEMS)
def test_backend_exact_on_small_integers(x_shape, out_features, linear_backend, rng):
    x, w, b = _inputs(small_ints, rng, x_shape, out_features, np.float32)
    dy = small_ints(rng, (*x_shape[:-1], out_features), np.float32)
    inputs = snapshot(x, w, b, dy)
    got = _run_all(x, w, b, dy, linear_backend)
    assert_unchanged((x, w, b, dy), inputs)
    for name, g, r in zip(NAMES, got, _run_all(x, w, b, dy, "reference")):
        assert_equal(g, r, f"{name} on {linear_backend}")
        assert_fresh_output(g, np.float32, x, w, b, dy)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("x_shape, out_features", PROBLEMS)
def test_backend_close_on_random_data(x_shape, out_features, dtype, linear_backend, rng):
    x, w, b = _inputs(randn, rng, x_shape, out_features, dtype)
    dy = randn(rng, (*x_shape[:-1], out_features), dtype)
    for name, g, r in zip(NAMES, _run_all(x, w, b, dy, linear_backend), _run_all(x, w, b, dy, "reference")):
        assert_close(g, r, f"{name} on {linear_backend}")


@pytest.mark.parametrize("x_shape, out_features", [p for p in PROBLEMS if p.id in ("batch_2d", "seq_3d", "image_4d")])
def test_backend_accepts_non_contiguous_and_read_only_inputs(x_shape, out_features, linear_backend, rng):
    x, w, b = _inputs(randn, rng, x_shape, out_features, np.float32)
    dy = randn(rng, (*x_shape[:-1], out_features), np.float32)
    want = _run_all(x, w, b, dy, "reference")
    odd = [np.asfortranarray(a) for a in (x, w, dy)] + [np.repeat(b, 2)[::2]]
    for a in odd:
        a.setflags(write=False)
    xo, wo, dyo, bo = odd
    assert not (xo.flags.c_contiguous or wo.flags.c_contiguous or bo.flags.c_contiguous)
    for name, g, r in zip(NAMES, _run_all(xo, wo, bo, dyo, linear_backend), want):
        assert_close(g, r, f"{name} on {linear_backend} with non-contiguous read-only inputs")
        assert_fresh_output(g, np.float32, xo, wo, bo, dyo)


@pytest.mark.parametrize("needs", [(True, False, False), (False, True, False), (False, False, True), (False,) * 3])
def test_backward_computes_only_what_is_needed(needs, linear_backend, rng):
    x, w, _ = _inputs(randn, rng, (2, 3, 5), 4, np.float64)
    dy = randn(rng, (2, 3, 4), np.float64)
    full = fastconv.linear_backward(dy, x, w, backend=linear_backend)
    part = fastconv.linear_backward(dy, x, w, needs=needs, backend=linear_backend)
    for need, f, p in zip(needs, full, part):
        if need:
            assert_equal(p, f)
        else:
            assert p is None


def test_bias_grad_of_a_tall_dy(linear_backend, rng):
    """Many rows: the GPU backend sums dy's columns in chunks of rows, then the chunks in order.
    Sums of small integers are exact in any order; random data is close."""
    x, w = randn(rng, (300, 4), np.float32), randn(rng, (7, 4), np.float32)
    needs = (False, False, True)
    for make, check in ((small_ints, assert_equal), (randn, assert_close)):
        dy = make(rng, (300, 7), np.float32)
        db = fastconv.linear_backward(dy, x, w, needs=needs, backend=linear_backend)[2]
        check(db, fastconv.linear_backward(dy, x, w, needs=needs, backend="reference")[2], f"db on {linear_backend}")


@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize("x_shape, out_features", PROBLEMS)
def test_float16_matches_reference_on_upcast_inputs(x_shape, out_features, with_bias, linear_backend, rng):
    """float16 storage, float32 arithmetic: every pass against the reference on the same values in
    float32 (with a bias the forward rounds twice, which the float16 tolerance allows for)."""
    if not takes_float16(linear_backend, "linear"):
        pytest.skip(f"{linear_backend} does not take float16 linear arrays")
    x, w, b = _inputs(randn, rng, x_shape, out_features, np.float16)
    b = b if with_bias else None
    dy = randn(rng, (*x_shape[:-1], out_features), np.float16)
    upcast = [None if a is None else a.astype(np.float32) for a in (x, w, b, dy)]
    for name, g, r in zip(NAMES, _run_all(x, w, b, dy, linear_backend), _run_all(*upcast, "reference")):
        assert_fresh_output(g, np.float16, x, w, b, dy)
        assert_close_half(g, r, f"{name} float16 on {linear_backend}")


# --------------------------------------------------------------------------------------------
# every w and bias shape F.linear takes, on every backend
# --------------------------------------------------------------------------------------------

def _layout(a, contiguous):
    """``a`` itself, or a non-contiguous array of the same values (F-order, or a strided vector)."""
    if contiguous or a.ndim == 0:
        return a
    return np.asfortranarray(a) if a.ndim > 1 else np.repeat(a, 2)[::2]


#: (x shape, w shape, b shape or None): a 1-d w, and biases that broadcast, in both of PyTorch's
#: frames (x's rows, y's shape); with x and b each contiguous or not, since that picks the frame
_BIAS_FORMS = [(x, w, b) for x in [(3,), (1, 1, 3), (2, 3), (4, 2, 3), (0, 3)] for w in [(3,), (5, 3)]
               for b in [None, (), (1,), (5,), (2,), (1, 1), (2, 5), (2, 1), (1, 5), (4, 2, 5), (8, 5)]]


def test_w_and_bias_forms_as_pytorch(linear_backend, rng):
    """Each form is accepted exactly where F.linear accepts it, with its result and gradients (db
    of b's shape, through ``b_shape``); where PyTorch refuses, a ValueError. The reference is held
    to PyTorch itself; the other backends to the reference, form by form (their kernels see the
    same 2-d products; and PyTorch stays out of the emulator's sanitized run, where an exception
    thrown inside torch's C++ aborts AddressSanitizer)."""
    # the layouts decide acceptance, in the validation every backend shares: all of them on the
    # reference, contiguous arrays on the others
    layouts = (True, False) if linear_backend == "reference" else (True,)
    oracle = _pytorch_linear if linear_backend == "reference" else _reference_linear
    failures = []
    for (x_shape, w_shape, b_shape), x_contiguous, b_contiguous in itertools.product(_BIAS_FORMS, layouts, layouts):
        if b_shape is None and not b_contiguous:
            continue
        x = _layout(randn(rng, x_shape, np.float64), x_contiguous)
        w = randn(rng, w_shape, np.float64)
        b = None if b_shape is None else _layout(randn(rng, b_shape, np.float64), b_contiguous)
        what = f"x{x_shape}{'' if x_contiguous else ' non-contiguous'}, w{w_shape}, b{b_shape}{'' if b_contiguous else ' non-contiguous'}"
        want = oracle(x, w, b, b_shape)
        if want is None:
            with pytest.raises(ValueError):
                fastconv.linear(x, w, b, backend=linear_backend)
            continue
        try:
            y = fastconv.linear(x, w, b, backend=linear_backend)
            dy = randn(rng, y.shape, np.float64)
            got = fastconv.linear_backward(dy, x, w, b_shape=b_shape, needs=(True, True, b is not None),
                                           backend=linear_backend)
            assert_close(y, want[0], "forward")
            assert_fresh_output(y, np.float64, x, w, b)
            for name, g, r in zip(NAMES[1:], got, want[1](dy)):
                assert g.shape == r.shape, f"{name} of shape {g.shape}, the oracle's {r.shape}"
                assert_close(g, r, name)
        except Exception as e:  # every failing form, not just the first
            failures.append(f"{what}: {type(e).__name__}: {e}")
    assert not failures, "\n".join(failures)


def _pytorch_linear(x, w, b, b_shape):
    """F.linear's y and ``grads(dy)`` (those of the given tensors) for this form, or None where it
    refuses it."""
    torch = pytest.importorskip("torch")
    ts = [None if a is None else torch.from_numpy(a).requires_grad_() for a in (x, w, b)]  # the same strides
    try:
        yt = torch.nn.functional.linear(*ts)
    except RuntimeError:
        return None
    def grads(dy):
        return [g.numpy() for g in torch.autograd.grad(yt, [t for t in ts if t is not None], torch.from_numpy(dy))]
    return yt.detach().numpy(), grads


def _reference_linear(x, w, b, b_shape):
    """The reference backend's y and ``grads(dy)`` for this form, or None where it refuses it."""
    try:
        y = fastconv.linear(x, w, b, backend="reference")
    except ValueError:
        return None
    def grads(dy):
        got = fastconv.linear_backward(dy, x, w, b_shape=b_shape, needs=(True, True, b is not None),
                                       backend="reference")
        return [g for g in got if g is not None]
    return y, grads


def test_backward_default_bias_grad_of_a_1d_w(linear_backend, rng):
    """Without b_shape, db is the gradient of the bias linear takes by default: (out_features,), or
    a scalar for a 1-d w (each row of y has one output)."""
    x, w = randn(rng, (4, 2, 3), np.float64), randn(rng, (3,), np.float64)
    dy = randn(rng, (4, 2), np.float64)
    dx, dw, db = fastconv.linear_backward(dy, x, w, backend=linear_backend)
    assert db.shape == () and np.allclose(db, dy.sum())
    assert_close(dx, dy[..., None] * w, "dx")
    assert_close(dw, np.einsum("ab,abk->k", dy, x), "dw")


# --------------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------------

f32 = np.float32
X, W, DY = np.ones((2, 3, 5), f32), np.ones((4, 5), f32), np.ones((2, 3, 4), f32)

BAD = [  # (id, op, args, kwargs, error type, text the message must contain)
    ("x_0d", fastconv.linear, (np.ones((), f32), W), {}, ValueError, "expected x and w with at least 1 dim"),
    ("w_0d", fastconv.linear, (X, np.ones((), f32)), {}, ValueError, "expected x and w with at least 1 dim"),
    ("w_3d", fastconv.linear, (X, np.ones((4, 5, 1), f32)), {}, ValueError, "expected w with 2 dims (out_features, in_features) or 1 dim"),
    ("features_mismatch", fastconv.linear, (X, np.ones((4, 6), f32)), {}, ValueError, "expects in_features=6"),
    ("w_1d_features_mismatch", fastconv.linear, (X, np.ones(6, f32)), {}, ValueError, "expects in_features=6"),
    ("bias_shape", fastconv.linear, (X, W, np.ones(3, f32)), {}, ValueError, "expected b that broadcasts to (6, 4)"),
    # a vector bias on a contiguous x goes to PyTorch's addmm on x's 6 rows, which (4, 1) does not fit
    ("bias_column", fastconv.linear, (X, W, np.ones((4, 1), f32)), {}, ValueError, "expected b that broadcasts to (6, 4)"),
    ("bias_too_many_dims", fastconv.linear, (X, W, np.ones((1, 2, 3, 4), f32)), {}, ValueError, "broadcasts to (2, 3, 4) (y's shape)"),
    ("w_1d_vector_bias", fastconv.linear, (X, np.ones(5, f32), np.ones(1, f32)), {}, ValueError, "takes no b of shape (1,)"),
    ("integer_x", fastconv.linear, (X.astype(np.int64), W), {}, TypeError, "float32 or float64, got int64"),
    ("integer_w", fastconv.linear, (X, W.astype(np.int32)), {}, TypeError, "got int32"),
    ("mixed_dtypes", fastconv.linear, (X.astype(np.float64), W), {}, TypeError, "one dtype"),
    ("list_x", fastconv.linear, (X.tolist(), W), {}, TypeError, "numpy.ndarray"),
    ("dy_shape", fastconv.linear_backward, (np.ones((2, 3, 3), f32), X, W), {}, ValueError, "expected dy of shape (2, 3, 4)"),
    ("dy_rank", fastconv.linear_backward, (np.ones((6, 4), f32), X, W), {}, ValueError, "expected dy of shape (2, 3, 4)"),
    ("dy_dtype", fastconv.linear_backward, (DY.astype(np.float64), X, W), {}, TypeError, "one dtype"),
    ("backward_features", fastconv.linear_backward, (DY, X, np.ones((4, 2), f32)), {}, ValueError, "in_features=2"),
    ("needs_short", fastconv.linear_backward, (DY, X, W), {"needs": (True,)}, TypeError, "needs"),
    ("needs_not_bool", fastconv.linear_backward, (DY, X, W), {"needs": (1, 0, 1)}, TypeError, "needs"),
    ("b_shape_not_sizes", fastconv.linear_backward, (DY, X, W), {"b_shape": 4}, TypeError, "b_shape"),
    ("b_shape_bad", fastconv.linear_backward, (DY, X, W), {"b_shape": (3,)}, ValueError, "expected b that broadcasts"),
]


@pytest.mark.parametrize("op, args, kwargs, error, text", bad_input_cases(BAD))
def test_bad_input_raises_clear_error(op, args, kwargs, error, text, backend):
    check_bad_input(op, args, kwargs, error, text, backend)


# --------------------------------------------------------------------------------------------
# property: random valid shapes against PyTorch, every backend against the reference
# --------------------------------------------------------------------------------------------

@settings(max_examples=40, deadline=None)
@given(lead=st.lists(st.integers(0, 4), max_size=3), in_features=st.integers(1, 9),
       out_features=st.integers(1, 9), with_bias=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_property_matches_torch_on_every_backend(lead, in_features, out_features, with_bias, seed):
    rng = np.random.default_rng(seed)
    x, w, b = _inputs(randn, rng, (*lead, in_features), out_features, np.float64)
    b = b if with_bias else None
    dy = randn(rng, (*lead, out_features), np.float64)
    want = torch_linear(x, w, b, dy)
    for name in backends_implementing("linear", *FUNCS):
        y = fastconv.linear(x, w, b, backend=name)
        dx, dw, db = fastconv.linear_backward(dy, x, w, needs=(True, True, with_bias), backend=name)
        assert_close(y, want[0], f"forward on {name}")
        assert_close(dx, want[1], f"dx on {name}")
        assert_close(dw, want[2], f"dw on {name}")
        if with_bias:
            assert_close(db, want[3], f"db on {name}")
