"""What every test module shares: tolerances, comparisons, random inputs, finite differences.

One tolerance table per dtype; ``|a - ref| <= atol + rtol * |ref|`` everywhere.
"""

from __future__ import annotations

import contextlib
import json
import warnings

import numpy as np
import pytest

import fastconv
from fastconv._dispatch import FAMILIES, REGISTRY, implementers
from fastconv.verify import TOLERANCE  # the project's one tolerance table, shared with `fastconv check`

DTYPES = (np.float32, np.float64)


def assert_close(actual, expected, what: str = "", scale: float = 1.0):
    """``actual`` matches ``expected`` within the dtype's tolerance (times ``scale``); NaN matches NaN
    and an infinity matches the same infinity."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    assert actual.dtype == expected.dtype, f"{what}: dtype {actual.dtype} != {expected.dtype}"
    atol, rtol = (t * scale for t in TOLERANCE[expected.dtype])
    with np.errstate(invalid="ignore"):  # inf - inf: equal infinities are caught by the == below
        bad = ~(np.abs(actual - expected) <= atol + rtol * np.abs(expected))
    bad &= ~((actual == expected) | (np.isnan(actual) & np.isnan(expected)))
    if bad.any():
        i = np.unravel_index(np.argmax(bad), bad.shape)
        raise AssertionError(f"{what}: {bad.sum()} of {bad.size} elements differ; first at {i}: "
                             f"{actual[i]!r} vs expected {expected[i]!r}")


def assert_close_half(actual, expected, what: str = "", scale: float = 1.0):
    """A float16 result against the reference's float32 result on the same (upcast) inputs, within
    the float16 tolerance."""
    actual = np.asarray(actual)
    assert actual.dtype == np.float16, f"{what}: dtype {actual.dtype} is not float16"
    expected = np.asarray(expected, dtype=np.float32)
    atol, rtol = (t * scale for t in TOLERANCE[np.dtype(np.float16)])
    got = actual.astype(np.float32)
    with np.errstate(invalid="ignore"):
        bad = ~(np.abs(got - expected) <= atol + rtol * np.abs(expected))
    bad &= ~((got == expected) | (np.isnan(got) & np.isnan(expected)))
    assert got.shape == expected.shape, f"{what}: shape {got.shape} != {expected.shape}"
    if bad.any():
        i = np.unravel_index(np.argmax(bad), bad.shape)
        raise AssertionError(f"{what}: {bad.sum()} of {bad.size} float16 elements differ; first at {i}: "
                             f"{got[i]!r} vs expected {expected[i]!r}")


def half_backends(family: str) -> list[str]:
    """The available backends that take float16 arrays for ``family``'s ops."""
    return [name for name in fastconv.available_backends() if takes_float16(name, family)]


def assert_equal(actual, expected, what: str = ""):
    """Bit-for-bit equality (NaN equals NaN): for exact small-integer inputs."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    assert actual.dtype == expected.dtype, f"{what}: dtype {actual.dtype} != {expected.dtype}"
    np.testing.assert_array_equal(actual, expected, err_msg=what)


def assert_fresh_output(out, dtype, *inputs):
    """An op's result is a new C-contiguous array of the input dtype, sharing no memory with inputs."""
    assert isinstance(out, np.ndarray), type(out)
    assert out.dtype == np.dtype(dtype), (out.dtype, dtype)
    assert out.flags.c_contiguous, "result is not C-contiguous"
    for a in inputs:
        if a is not None:
            assert not np.shares_memory(out, a), "result shares memory with an input"


def small_ints(rng, shape, dtype, low=-3, high=4):
    """Random small integers as floats: products and sums of a few of them are exact in float32."""
    return rng.integers(low, high, size=shape).astype(dtype)


def randn(rng, shape, dtype):
    return rng.standard_normal(shape).astype(dtype)


def numerical_gradient(f, x, dy, eps=1e-6):
    """d/dx of ``sum(f(x) * dy)`` by central differences, in float64. ``x`` is not modified."""
    x = np.array(x, dtype=np.float64)
    grad = np.zeros_like(x)
    flat, gflat = x.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        orig = flat[i]
        flat[i] = orig + eps
        plus = np.sum(f(x) * dy)
        flat[i] = orig - eps
        minus = np.sum(f(x) * dy)
        flat[i] = orig
        gflat[i] = (plus - minus) / (2 * eps)
    return grad


def assert_gradient(analytic, f, x, dy, what: str = "", eps=1e-6, tol=1e-6):
    """Compare an analytic gradient with central differences of ``sum(f(x) * dy)``."""
    numeric = numerical_gradient(f, x, dy, eps)
    err = np.max(np.abs(analytic - numeric) / (1.0 + np.abs(numeric))) if numeric.size else 0.0
    assert err < tol, f"{what}: finite-difference mismatch, max relative error {err:.3g}"


def backends_implementing(family: str, *funcs: str) -> list[str]:
    """The available backends that implement every one of ``family``'s kernels ``funcs``."""
    return [name for name in fastconv.available_backends()
            if all(name in implementers(family, f) for f in funcs)]


def require(backend: str, family: str, *funcs: str) -> str:
    """Skip a backend-matrix test for a backend that does not implement these kernels yet."""
    missing = [f for f in funcs if backend not in implementers(family, f)]
    if missing:
        pytest.skip(f"backend {backend!r} does not implement {family}.{', '.join(missing)} yet")
    return backend


def without_warnings(op, *args, **kwargs):
    """op(...), failing on any warning (an overflow or invalid-value RuntimeWarning above all)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return op(*args, **kwargs)


def bad_input_cases(cases):
    """pytest params from ``(id, op, args, kwargs, error type, text the message must contain)`` rows."""
    return [pytest.param(*c[1:], id=c[0]) for c in cases]


def takes_float16(backend: str, family: str) -> bool:
    """Whether ``backend`` takes float16 arrays for ``family``'s ops (declared in the registry)."""
    return "float16" in REGISTRY[backend].dtypes(family)


def check_bad_input(op, args, kwargs, error, text, backend):
    """``op(*args, **kwargs)`` raises ``error`` whose message starts with the op's name and contains
    ``text``, and leaves every array argument unchanged. A float16 case is no error on a backend
    that takes float16 for the op's family (its float16 results are tested on their own)."""
    arrays = [a for a in (*args, *kwargs.values()) if isinstance(a, np.ndarray)]
    family = op.__module__.rsplit(".", 1)[-1]
    if family in FAMILIES and takes_float16(backend, family) and any(a.dtype == np.float16 for a in arrays):
        pytest.skip(f"{backend} takes float16 {family} arrays")
    before = snapshot(*arrays)
    with pytest.raises(error) as info:
        op(*args, **kwargs, backend=backend)
    message = str(info.value)
    assert message.startswith(op.__name__ + ":"), message
    assert text in message, message
    assert_unchanged(arrays, before)


#: Tiny layers of every benchmark kind, asymmetric where the kind allows, for fast bench runs.
TINY_SUITE = [
    dict(name="tiny_conv", kind="conv", N=2, C_in=4, H=9, W=7, C_out=6, kH=3, kW=2, stride=[2, 1],
         pad=[1, 0], dilation=[1, 2], groups=2),
    dict(name="tiny_pool", kind="maxpool", N=2, C_in=3, H=9, W=8, C_out=3, kH=3, kW=2, stride=[2, 2],
         pad=[1, 1], dilation=1),
    dict(name="tiny_dense", kind="dense", N=5, C_in=7, H=1, W=1, C_out=3, kH=1, kW=1),
]


def write_shapes(path, shapes=TINY_SUITE, **extra):
    """A shapes file for ``fastconv bench --shapes``."""
    path.write_text(json.dumps(dict(extra, shapes=shapes)))
    return path


def snapshot(*arrays):
    """Copies of the inputs, to check afterwards that an op left them unchanged."""
    return [None if a is None else np.array(a, copy=True) for a in arrays]


def assert_unchanged(arrays, copies):
    for a, c in zip(arrays, copies):
        if a is not None:
            np.testing.assert_array_equal(a, c, err_msg="an op modified its input")


@contextlib.contextmanager
def float32_conv_precision(precision):
    """fastconv's float32 conv precision for the block ("high": the C++ chooser may take F(4x4)),
    the default ("highest") after."""
    fastconv.set_float32_conv_precision(precision)
    try:
        yield
    finally:
        fastconv.set_float32_conv_precision("highest")


def reference_conv_pass(kwargs, pass_name, x, w, dy):
    """The reference's result of one conv pass ("fwd": y, "dgrad": dx, "wgrad": dw, as the C++
    backend's cpp_pass), the conv's hyper-parameters in ``kwargs``."""
    if pass_name == "fwd":
        return fastconv.conv2d(x, w, None, **kwargs, backend="reference")
    dx, dw, _ = fastconv.conv2d_backward(dy, x, w, **kwargs, needs=(True, True, False), backend="reference")
    return dx if pass_name == "dgrad" else dw
