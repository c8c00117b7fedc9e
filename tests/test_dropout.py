"""dropout: mask statistics, scaling, p = 0 and 1, seeds, eval mode, the backward's use of the
mask, PyTorch's formula given the same mask (NaN/Inf included), finite differences; every
backend against the reference formula on its own mask; bad input."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastconv
from support import (bad_input_cases, check_bad_input, backends_implementing, require, DTYPES, assert_close, assert_equal, assert_fresh_output, assert_gradient,
                     assert_unchanged, randn, small_ints, snapshot)

FUNCS = ("dropout_forward", "dropout_backward")
# (name, x shape): every rank the layers use, odd sizes, a single element
SHAPES = [pytest.param(s, id=name) for name, s in (
    ("dense", (7, 13)), ("nchw", (2, 3, 5, 4)), ("vector", (11,)), ("seq", (3, 1, 9)), ("one", (1,)))]


@pytest.fixture
def dropout_backend(backend):
    """The suite's backend matrix, less the backends that do not implement dropout yet."""
    return require(backend, "dropout", *FUNCS)


def torch_formula(x, mask, p):
    """PyTorch's CPU dropout given its Bernoulli draw: noise = mask / (1 - p) in x's dtype, y = x * noise
    (``_dropout_impl`` in ATen's Dropout.cpp; p = 1 is ``x * 0``)."""
    torch = pytest.importorskip("torch")
    xt = torch.tensor(x)
    if p == 1:
        return (xt * torch.zeros((), dtype=xt.dtype)).numpy()
    noise = torch.tensor(mask).to(xt.dtype).div_(1 - p)
    return (xt * noise).numpy()


# --------------------------------------------------------------------------------------------
# the mask and the scaling
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_kept_fraction_is_close_to_one_minus_p(p, dropout_backend):
    n = 200_000
    mask = fastconv.dropout(np.ones(n, np.float32), p, backend=dropout_backend).mask
    assert mask.dtype == np.bool_ and mask.shape == (n,)
    sigma = (p * (1 - p) / n) ** 0.5
    assert abs(mask.mean() - (1 - p)) < 6 * sigma, mask.mean()
    # no structure a uniform draw would not have: both halves and neighbours look alike
    assert abs(mask[: n // 2].mean() - mask[n // 2:].mean()) < 12 * sigma
    assert abs((mask[1:] & mask[:-1]).mean() - (1 - p) ** 2) < 12 * sigma


@pytest.mark.parametrize("p", [0.25, 0.5, 0.9])
def test_kept_values_are_scaled_and_dropped_are_zero(p, dtype, dropout_backend, rng):
    x = randn(rng, (6, 50), dtype)
    y, mask = fastconv.dropout(x, p, seed=3, backend=dropout_backend)
    assert_fresh_output(y, dtype, x)
    assert_close(y[mask], x[mask] / dtype(1 - p), "kept values")
    assert (y[~mask] == 0).all()


def test_p_zero_keeps_everything_and_p_one_drops_everything(dtype, dropout_backend, rng):
    x = randn(rng, (4, 9), dtype)
    x[0, 0] = np.nan
    y, mask = fastconv.dropout(x, 0.0, backend=dropout_backend)
    assert mask.all()
    assert_equal(y, x)
    y, mask = fastconv.dropout(x, 1.0, backend=dropout_backend)
    assert not mask.any()
    assert (y[1:] == 0).all()
    assert np.isnan(y[0, 0]), "PyTorch computes x * 0 for p = 1, so NaN stays NaN"
    dx = fastconv.dropout_backward(x, mask=mask, p=1.0, backend=dropout_backend)
    assert (dx[1:] == 0).all()


def test_seed_fixes_the_mask(dropout_backend, rng):
    x = randn(rng, (3, 40), np.float32)
    first = fastconv.dropout(x, 0.4, seed=12345, backend=dropout_backend)
    again = fastconv.dropout(x, 0.4, seed=12345, backend=dropout_backend)
    assert_equal(again.mask, first.mask)
    assert_equal(again.y, first.y)
    # the mask depends on the seed and the shape only, not on the values or the dtype
    other_values = fastconv.dropout(randn(rng, (3, 40), np.float64), 0.4, seed=12345, backend=dropout_backend)
    assert_equal(other_values.mask, first.mask)
    assert (fastconv.dropout(x, 0.4, seed=12346, backend=dropout_backend).mask != first.mask).any()
    # seed None draws fresh entropy: two calls agree on all 120 elements with probability ~1e-30
    fresh = [fastconv.dropout(x, 0.4, backend=dropout_backend).mask for _ in range(2)]
    assert (fresh[0] != fresh[1]).any()


def test_eval_mode_returns_a_copy_and_no_mask(dtype, dropout_backend, rng):
    x = randn(rng, (2, 3, 4), dtype)
    y, mask = fastconv.dropout(x, 0.7, training=False, backend=dropout_backend)
    assert mask is None
    assert_fresh_output(y, dtype, x)
    assert_equal(y, x)
    dy = randn(rng, x.shape, dtype)
    dx = fastconv.dropout_backward(dy, mask=None, p=0.7, backend=dropout_backend)
    assert_fresh_output(dx, dtype, dy)
    assert_equal(dx, dy)


def test_empty_input(dropout_backend):
    x = np.zeros((0, 5), np.float32)
    y, mask = fastconv.dropout(x, 0.5, backend=dropout_backend)
    assert y.shape == (0, 5) and y.dtype == np.float32 and mask.shape == (0, 5) and mask.dtype == np.bool_
    dx = fastconv.dropout_backward(y, mask=mask, p=0.5, backend=dropout_backend)
    assert dx.shape == (0, 5) and dx.dtype == np.float32


# --------------------------------------------------------------------------------------------
# the backward, and PyTorch's formula
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("p", [0.3, 0.5])
def test_backward_uses_the_mask(p, dtype, dropout_backend, rng):
    x, dy = randn(rng, (5, 8), dtype), randn(rng, (5, 8), dtype)
    y, mask = fastconv.dropout(x, p, backend=dropout_backend)
    before = snapshot(dy, mask)
    dx = fastconv.dropout_backward(dy, mask=mask, p=p, backend=dropout_backend)
    assert_unchanged((dy, mask), before)
    assert_fresh_output(dx, dtype, dy, mask)
    assert_close(dx[mask], dy[mask] / dtype(1 - p), "kept gradients")
    assert (dx[~mask] == 0).all()


def test_backward_matches_finite_differences(rng):
    x = randn(rng, (4, 6), np.float64)
    dy = randn(rng, x.shape, np.float64)
    forward = lambda v: fastconv.dropout(v, 0.35, seed=7).y  # noqa: E731  (a fixed seed: a fixed mask)
    dx = fastconv.dropout_backward(dy, mask=fastconv.dropout(x, 0.35, seed=7).mask, p=0.35)
    assert_gradient(dx, forward, x, dy, "dx")


@pytest.mark.parametrize("p", [0.0, 0.2, 0.5, 0.7, 1.0])
@pytest.mark.parametrize("shape", SHAPES)
def test_matches_torch_formula_and_autograd_given_the_same_mask(shape, p, dtype, dropout_backend, rng):
    torch = pytest.importorskip("torch")
    x = randn(rng, shape, dtype)
    x.reshape(-1)[::5] = np.inf  # a dropped Inf becomes NaN in PyTorch (Inf * 0)
    x.reshape(-1)[2::7] = np.nan
    y, mask = fastconv.dropout(x, p, seed=int(rng.integers(2**63)), backend=dropout_backend)
    assert_equal(y, torch_formula(x, mask, p), "forward vs torch's formula")
    # autograd through the same formula gives torch's backward
    xt = torch.tensor(x, requires_grad=True)
    noise = torch.zeros((), dtype=xt.dtype) if p == 1 else torch.tensor(mask).to(xt.dtype).div_(1 - p)
    dy = randn(rng, shape, dtype)
    (xt * noise).backward(torch.tensor(dy))
    assert_equal(fastconv.dropout_backward(dy, mask=mask, p=p, backend=dropout_backend), xt.grad.numpy(),
                 "backward vs torch autograd")


def test_torch_dropout_itself_behaves_like_the_formula(rng):
    """F.dropout on CPU: its output reveals its mask where x is finite and non-zero, and the
    formula with that mask reproduces it, Inf and NaN included."""
    torch = pytest.importorskip("torch")
    x = randn(rng, (4000,), np.float32)
    x[::10] = np.inf
    yt = torch.nn.functional.dropout(torch.tensor(x), 0.3).numpy()
    mask = (yt != 0) & ~np.isnan(yt)
    assert_equal(yt, torch_formula(x, mask, 0.3))
    assert_equal(fastconv.dropout_backward(x, mask=mask, p=0.3), yt)


# --------------------------------------------------------------------------------------------
# every backend against the reference formula, applied to the backend's own mask
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", SHAPES)
def test_backend_exact_on_small_integers(shape, dropout_backend, rng):
    """With p = 0.5 the scale is 2, so every product is exact on every backend."""
    x, dy = small_ints(rng, shape, np.float32), small_ints(rng, shape, np.float32)
    inputs = snapshot(x, dy)
    y, mask = fastconv.dropout(x, 0.5, seed=11, backend=dropout_backend)
    dx = fastconv.dropout_backward(dy, mask=mask, p=0.5, backend=dropout_backend)
    assert_unchanged((x, dy), inputs)
    # the reference's backward is its formula y = x * noise(mask): apply it to this backend's mask
    assert_equal(y, fastconv.dropout_backward(x, mask=mask, p=0.5, backend="reference"), "forward")
    assert_equal(dx, fastconv.dropout_backward(dy, mask=mask, p=0.5, backend="reference"), "backward")
    assert_fresh_output(y, np.float32, x, dy)
    assert_fresh_output(dx, np.float32, x, dy, mask)
    assert mask.dtype == np.bool_ and mask.shape == shape and mask.flags.c_contiguous


@pytest.mark.parametrize("shape", SHAPES)
def test_backend_close_on_random_data(shape, dtype, dropout_backend, rng):
    x = randn(rng, shape, dtype)
    y, mask = fastconv.dropout(x, 0.3, backend=dropout_backend)
    assert_close(y, fastconv.dropout_backward(x, mask=mask, p=0.3, backend="reference"), "forward")
    assert_close(fastconv.dropout_backward(x, mask=mask, p=0.3, backend=dropout_backend), y, "backward")


def test_backend_accepts_non_contiguous_and_read_only_inputs(dropout_backend, rng):
    x = np.asfortranarray(randn(rng, (5, 6, 7), np.float32))[:, ::2]
    x.setflags(write=False)
    y, mask = fastconv.dropout(x, 0.4, seed=5, backend=dropout_backend)
    assert_fresh_output(y, np.float32, x)
    assert_close(y, fastconv.dropout(np.ascontiguousarray(x), 0.4, seed=5, backend=dropout_backend).y)
    mask_odd = np.asfortranarray(mask)
    dy = np.asfortranarray(randn(rng, x.shape, np.float32))
    for a in (mask_odd, dy):
        a.setflags(write=False)
    dx = fastconv.dropout_backward(dy, mask=mask_odd, p=0.4, backend=dropout_backend)
    assert_fresh_output(dx, np.float32, dy, mask_odd)
    assert_close(dx, fastconv.dropout_backward(np.ascontiguousarray(dy), mask=mask, p=0.4))


# --------------------------------------------------------------------------------------------
# the GPU backend's mask: Philox4x32-10 of (seed, element index), whatever the launch
# --------------------------------------------------------------------------------------------

PHILOX_M, PHILOX_W, LOW32 = (0xD2511F53, 0xCD9E8D57), (0x9E3779B9, 0xBB67AE85), 0xFFFFFFFF


def philox4x32_10(counter, key):
    """Philox4x32-10 in NumPy: ``counter`` four arrays of 32-bit words, ``key`` two words."""
    c0, c1, c2, c3 = (np.asarray(c, np.uint64) for c in counter)
    k0, k1 = key
    for r in range(10):
        if r:
            k0, k1 = (k0 + PHILOX_W[0]) & LOW32, (k1 + PHILOX_W[1]) & LOW32
        p0, p1 = c0 * np.uint64(PHILOX_M[0]), c2 * np.uint64(PHILOX_M[1])  # 64-bit products, exact
        c0, c1, c2, c3 = ((p1 >> np.uint64(32)) ^ c1 ^ np.uint64(k0), p1 & np.uint64(LOW32),
                          (p0 >> np.uint64(32)) ^ c3 ^ np.uint64(k1), p0 & np.uint64(LOW32))
    return c0, c1, c2, c3


@pytest.mark.parametrize("counter, key, want", [  # Random123's known-answer vectors
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((LOW32,) * 4, (LOW32,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
])
def test_numpy_philox_matches_known_answers(counter, key, want):
    assert tuple(int(v) for v in philox4x32_10(counter, key)) == want


def gpu_mask(n, p, seed):
    """The mask the GPU backend documents: element k keeps iff word k % 4 of Philox4x32-10 with
    counter (lo32(k // 4), hi32(k // 4), 0, 0) and key (lo32(seed), hi32(seed)) is >= ceil(p * 2^32)."""
    q = np.arange(-(-n // 4), dtype=np.uint64)
    zero = np.zeros_like(q)
    words = philox4x32_10((q & np.uint64(LOW32), q >> np.uint64(32), zero, zero), (seed & LOW32, seed >> 32))
    draws = np.stack(words, axis=1).reshape(-1)[:n]  # element 4q + j is word j of group q
    return draws >= np.uint64(math.ceil(math.ldexp(p, 32)))


@pytest.mark.emu
@pytest.mark.parametrize("p", [0.0, 0.3, 0.5, 1.0])
def test_gpu_mask_is_philox_of_seed_and_index_whatever_the_launch(p):
    """The mask is a function of (seed, element index) alone: the same with any launch size, and
    for any shape the leading part of a longer array's (0-d included)."""
    if "cupy-emu" not in fastconv.available_backends():
        pytest.skip("the GPU emulator is not available")
    from fastconv.backends.cupy import launch_limits

    seed, n = 0xDEADBEEF12345678, 1003
    x = np.ones(n, np.float32)
    mask = fastconv.dropout(x, p, seed=seed, backend="cupy-emu").mask
    assert_equal(mask, gpu_mask(n, p, seed), "the documented Philox mapping")
    with launch_limits(threads=32, blocks=2):
        assert_equal(fastconv.dropout(x, p, seed=seed, backend="cupy-emu").mask, mask, "small launches")
    prefix = fastconv.dropout(np.ones((17, 31), np.float64), p, seed=seed, backend="cupy-emu").mask
    assert_equal(prefix.reshape(-1), mask[:17 * 31], "a shorter array of another shape and dtype")
    scalar = fastconv.dropout(np.ones((), np.float32), p, seed=seed, backend="cupy-emu")
    assert scalar.y.shape == () and scalar.mask.shape == ()
    assert_equal(scalar.mask, mask[0], "a 0-d array")


# --------------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------------

X = np.ones((3, 4), np.float32)
M = np.ones((3, 4), bool)

BAD = [  # (id, op, args, kwargs, error type, text the message must contain)
    ("p_above_one", fastconv.dropout, (X, 1.5), {}, ValueError, "expected p <= 1.0, got 1.5"),
    ("p_negative", fastconv.dropout, (X, -0.1), {}, ValueError, "expected p >= 0.0, got -0.1"),
    ("p_nan", fastconv.dropout, (X, float("nan")), {}, ValueError, "p"),
    ("p_string", fastconv.dropout, (X, "0.5"), {}, TypeError, "expected p to be a number"),
    ("p_bool", fastconv.dropout, (X, True), {}, TypeError, "expected p to be a number"),
    ("training_int", fastconv.dropout, (X, 0.5, 1), {}, TypeError, "expected training to be a bool"),
    ("seed_negative", fastconv.dropout, (X, 0.5, True, -1), {}, ValueError, "expected seed >= 0, got -1"),
    ("seed_too_big", fastconv.dropout, (X, 0.5, True, 2**64), {}, ValueError, "expected seed < 2**64"),
    ("seed_float", fastconv.dropout, (X, 0.5, True, 1.0), {}, TypeError, "expected seed to be an int"),
    ("seed_bool", fastconv.dropout, (X, 0.5, True, True), {}, TypeError, "expected seed to be an int"),
    ("integer_x", fastconv.dropout, (X.astype(np.int64),), {}, TypeError, "float32 or float64, got int64"),
    ("list_x", fastconv.dropout, (X.tolist(),), {}, TypeError, "numpy.ndarray"),
    ("mask_dtype", fastconv.dropout_backward, (X,), {"mask": X, "p": 0.5}, TypeError, "expected mask of dtype bool, got float32"),
    ("mask_shape", fastconv.dropout_backward, (X,), {"mask": M[:2], "p": 0.5}, ValueError, "expected mask of shape (3, 4), got (2, 4)"),
    ("mask_list", fastconv.dropout_backward, (X,), {"mask": M.tolist(), "p": 0.5}, TypeError, "expected mask to be a numpy.ndarray"),
    ("backward_p", fastconv.dropout_backward, (X,), {"mask": M, "p": 2}, ValueError, "expected p <= 1.0"),
    ("integer_dy", fastconv.dropout_backward, (X.astype(np.int32),), {"mask": M, "p": 0.5}, TypeError, "got int32"),
]


@pytest.mark.parametrize("op, args, kwargs, error, text", bad_input_cases(BAD))
def test_bad_input_raises_clear_error(op, args, kwargs, error, text, backend):
    check_bad_input(op, args, kwargs, error, text, backend)


# --------------------------------------------------------------------------------------------
# property: random shapes, p and seeds against PyTorch's formula on every backend
# --------------------------------------------------------------------------------------------

@settings(max_examples=40, deadline=None)
@given(shape=st.lists(st.integers(0, 5), min_size=0, max_size=4).map(tuple),
       p=st.one_of(st.sampled_from([0.0, 0.5, 1.0]), st.floats(0, 1)),
       seed=st.integers(0, 2**64 - 1), dtype=st.sampled_from(DTYPES))
def test_property_matches_torch_formula(shape, p, seed, dtype):
    x = randn(np.random.default_rng(seed % 2**32), shape, dtype)
    for name in backends_implementing("dropout", *FUNCS):
        y, mask = fastconv.dropout(x, p, seed=seed, backend=name)
        assert mask.shape == x.shape and mask.dtype == np.bool_
        assert_equal(y, torch_formula(x, mask, p), f"forward on {name}")
        assert_equal(fastconv.dropout(x, p, seed=seed, backend=name).mask, mask, f"seed on {name}")
        assert_equal(fastconv.dropout_backward(x, mask=mask, p=p, backend=name), y, f"backward on {name}")
