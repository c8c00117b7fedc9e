"""flatten: against direct index loops and torch.flatten, its backward by finite differences and
PyTorch autograd; fresh outputs; odd strides and read-only inputs; bad input."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastconv
from support import (check_bad_input, DTYPES, assert_equal, assert_fresh_output, assert_gradient, assert_unchanged,
                     randn, snapshot)

# (x shape, start_dim, end_dim): defaults, negative dims, a single dim, all dims, 0-d and 1-d
CASES = [
    pytest.param((2, 3, 4, 5), 1, -1, id="nchw_default"),
    pytest.param((2, 3, 4, 5), 0, -1, id="all"),
    pytest.param((2, 3, 4, 5), 1, 2, id="middle"),
    pytest.param((2, 3, 4, 5), -2, -1, id="negative_dims"),
    pytest.param((2, 3, 4, 5), 2, 2, id="single_dim"),
    pytest.param((3, 1, 7), 1, -1, id="unit_dim"),
    pytest.param((6,), 0, -1, id="vector"),
    pytest.param((), 0, -1, id="scalar"),
    pytest.param((0, 3, 2), 1, -1, id="empty_batch"),
    pytest.param((2, 0, 4), 0, 1, id="empty_middle"),
]


def direct_flatten(x, start, end):
    """y by moving every element to its row-major position in the merged shape, one at a time."""
    shape = x.shape or (1,)
    start, end = start % len(shape), end % len(shape)
    merged = int(np.prod(shape[start:end + 1]))
    y = np.empty((*shape[:start], merged, *shape[end + 1:]), x.dtype)
    for index in np.ndindex(*x.shape):
        index = index or (0,)
        flat = 0
        for i, n in zip(index[start:end + 1], shape[start:end + 1]):
            flat = flat * n + i
        y[(*index[:start], flat, *index[end + 1:])] = x[index] if x.ndim else x[()]
    return y


@pytest.mark.parametrize("shape, start, end", CASES)
def test_matches_direct_loops_and_torch(shape, start, end, dtype, backend, rng):
    torch = pytest.importorskip("torch")
    x = randn(rng, shape, dtype)
    before = snapshot(x)
    y = fastconv.flatten(x, start, end, backend=backend)
    assert_unchanged([x], before)
    assert_fresh_output(y, dtype, x)
    assert_equal(y, direct_flatten(x, start, end), "vs direct loops")
    xt = torch.tensor(x, requires_grad=True)
    yt = torch.flatten(xt, start, end)
    assert_equal(y, yt.detach().numpy(), "vs torch")
    dy = randn(rng, y.shape, dtype)
    yt.backward(torch.tensor(dy))
    dx = fastconv.flatten_backward(dy, x, start, end, backend=backend)
    assert_fresh_output(dx, dtype, x, dy)
    assert_equal(dx, xt.grad.numpy(), "backward vs torch")


def test_default_dims_flatten_all_but_the_batch():
    assert fastconv.flatten(np.ones((2, 3, 4, 5), np.float32)).shape == (2, 60)


def test_backward_matches_finite_differences(rng):
    x = randn(rng, (2, 3, 2), np.float64)
    dy = randn(rng, (2, 6), np.float64)
    assert_gradient(fastconv.flatten_backward(dy, x), fastconv.flatten, x, dy, "dx")


def test_result_is_a_copy_even_where_a_view_would_do(backend):
    """A C-contiguous x flattens to a view in NumPy; fastconv returns a fresh array regardless."""
    x = np.arange(24, dtype=np.float64).reshape(2, 3, 4)
    y = fastconv.flatten(x, backend=backend)
    y[0, 0] = -1
    assert x[0, 0, 0] == 0
    dx = fastconv.flatten_backward(y, x, backend=backend)
    assert not np.shares_memory(dx, y)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_non_contiguous_and_read_only_inputs(dtype, backend, rng):
    base = randn(rng, (5, 4, 6), dtype)
    x = base.transpose(2, 0, 1)[:, ::2]  # (6, 3, 4) with odd strides
    x.setflags(write=False)
    dy = np.asfortranarray(randn(rng, (6, 12), dtype))
    dy.setflags(write=False)
    y = fastconv.flatten(x, backend=backend)
    assert_fresh_output(y, dtype, x, base)
    assert_equal(y, np.ascontiguousarray(x).reshape(6, 12))
    dx = fastconv.flatten_backward(dy, x, backend=backend)
    assert_fresh_output(dx, dtype, x, dy)
    assert_equal(dx, np.ascontiguousarray(dy).reshape(6, 3, 4))


# --------------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------------

X = np.ones((2, 3, 4), np.float32)

BAD = [  # (id, op, args, error type, text the message must contain)
    ("start_out_of_range", fastconv.flatten, (X, 3), ValueError, "start_dim=3 is out of range for x with 3 dims"),
    ("end_out_of_range", fastconv.flatten, (X, 0, -4), ValueError, "end_dim=-4 is out of range"),
    ("vector_default_start", fastconv.flatten, (np.ones(4, np.float32),), ValueError, "start_dim=1 is out of range"),
    ("start_after_end", fastconv.flatten, (X, 2, 1), ValueError, "start_dim=2 comes after end_dim=1"),
    ("float_dim", fastconv.flatten, (X, 1.0), TypeError, "start_dim"),
    ("bool_dim", fastconv.flatten, (X, 1, True), TypeError, "end_dim"),
    ("integer_x", fastconv.flatten, (X.astype(np.int32),), TypeError, "float32 or float64, got int32"),
    ("list_x", fastconv.flatten, (X.tolist(),), TypeError, "numpy.ndarray"),
    ("dy_shape", fastconv.flatten_backward, (np.ones((2, 11), np.float32), X), ValueError, "expected dy of shape (2, 12)"),
    ("dy_dtype", fastconv.flatten_backward, (np.ones((2, 12)), X), TypeError, "one dtype"),
    ("backward_dims", fastconv.flatten_backward, (np.ones((2, 12), np.float32), X, 2, 0), ValueError, "comes after"),
]


@pytest.mark.parametrize("op, args, error, text", [pytest.param(*c[1:], id=c[0]) for c in BAD])
def test_bad_input_raises_clear_error(op, args, error, text, backend):
    check_bad_input(op, args, {}, error, text, backend)


def test_unknown_backend_is_an_error():
    with pytest.raises(ValueError, match="unknown backend 'nope'"):
        fastconv.flatten(X, backend="nope")


# --------------------------------------------------------------------------------------------
# property: random shapes and dims against torch.flatten
# --------------------------------------------------------------------------------------------

@st.composite
def flatten_configs(draw):
    shape = tuple(draw(st.lists(st.integers(0, 4), min_size=0, max_size=5)))
    ndim = max(len(shape), 1)
    start = draw(st.integers(-ndim, ndim - 1))
    end = draw(st.integers(start % ndim, ndim - 1))
    if draw(st.booleans()):
        end -= ndim  # the same dim, counted from the end
    return shape, start, end


@settings(max_examples=60, deadline=None)
@given(config=flatten_configs(), seed=st.integers(0, 2**32 - 1))
def test_property_matches_torch(config, seed):
    torch = pytest.importorskip("torch")
    shape, start, end = config
    x = randn(np.random.default_rng(seed), shape, np.float64)
    y = fastconv.flatten(x, start, end)
    assert_equal(y, torch.flatten(torch.tensor(x), start, end).numpy())
    assert_equal(fastconv.flatten_backward(y, x, start, end), x)
