"""`fastconv check`: the verification table, and that it catches a wrong backend."""

import io
import sys

import numpy as np
import pytest

from fastconv import _dispatch, verify


def test_check_passes_every_available_backend():
    out = io.StringIO()
    assert verify.run_check(out=out, seed=0) == 0, out.getvalue()
    table = out.getvalue()
    assert "FAIL" not in table
    for name in _dispatch.REGISTRY:
        assert name in table


def test_reference_is_checked_against_torch():
    pytest.importorskip("torch")
    out = io.StringIO()
    verify.run_check(["reference"], out=out, seed=1)
    row = next(line for line in out.getvalue().splitlines() if line.startswith("reference"))
    assert "torch" in row and row.rstrip().endswith("PASS")


@pytest.fixture
def wrong_backend(monkeypatch):
    """A backend whose convolution forgets the bias and whose pooling is fine."""
    import types

    from fastconv.backends.reference import conv, pool

    package = types.ModuleType("fastconv_wrong")
    package.__path__ = []
    wrong_conv = types.ModuleType("fastconv_wrong.conv")
    for name in ("conv2d_backward_input", "conv2d_backward_weight", "conv2d_backward_bias"):
        setattr(wrong_conv, name, getattr(conv, name))
    wrong_conv.conv2d_forward = lambda x, w, b, p: conv.conv2d_forward(x, w, None, p)
    monkeypatch.setitem(sys.modules, "fastconv_wrong", package)
    monkeypatch.setitem(sys.modules, "fastconv_wrong.conv", wrong_conv)
    monkeypatch.setitem(sys.modules, "fastconv_wrong.pool", pool)
    monkeypatch.setitem(_dispatch.REGISTRY, "wrong", _dispatch.BackendSpec("wrong", "fastconv_wrong", "cpu", "test"))
    return "wrong"


def test_check_reports_a_wrong_backend_as_failing(wrong_backend):
    out = io.StringIO()
    assert verify.run_check([wrong_backend], out=out, seed=2) == 1
    text = out.getvalue()
    assert "FAIL" in text and "conv2d basic_3x3 y: error" in text
    assert "does not implement (yet): conv_transpose2d" not in text  # dgrad exists, so it runs
    assert "relu" in text  # reported as not implemented, not as a failure


def test_check_rejects_unknown_backend():
    with pytest.raises(ValueError, match="check: unknown backend 'nope'"):
        verify.run_check(["nope"], out=io.StringIO())


def test_error_ratio():
    a = np.array([1.0, np.nan, np.inf], np.float32)
    assert verify.error_ratio(a, a.copy()) == 0.0
    assert verify.error_ratio(a[:2], a) == float("inf")  # shape mismatch
    assert verify.error_ratio(np.float32(1.001) * np.ones(1, np.float32), np.ones(1, np.float32)) > 1
