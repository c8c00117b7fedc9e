"""The backend registry: naming, the automatic choice, contexts, and loud failures."""

import types

import numpy as np
import pytest

import fastconv
from fastconv import _dispatch


@pytest.fixture(autouse=True)
def forget_choices():
    """Tests here swap AUTO_ORDER, the registry and the loaded backends: the remembered choices
    (select's memo, the ops' plans) are dropped before and after each, as a program that changed
    them at run time would call _dispatch.forget()."""
    _dispatch.forget()
    yield
    _dispatch.forget()


def test_reference_is_always_available():
    assert "reference" in fastconv.available_backends()
    assert fastconv.backend_status()["reference"] is None


def test_auto_choice_follows_auto_order():
    usable = [n for n in _dispatch.AUTO_ORDER if fastconv.backend_status()[n] is None]
    name, fn = _dispatch.select("conv2d", "conv", "conv2d_forward", "auto", np.ones(1))
    assert name == usable[0]
    assert fn.__module__ == f"fastconv.backends.{name}.conv"


def test_auto_order_lists_every_cpu_backend_and_ends_with_reference():
    cpu = {n for n, spec in _dispatch.REGISTRY.items() if spec.device == "cpu" and not spec.emulated}
    assert set(_dispatch.AUTO_ORDER) == cpu
    assert _dispatch.AUTO_ORDER[-1] == "reference"


def test_auto_never_picks_the_emulator(monkeypatch):
    assert _dispatch.REGISTRY["cupy-emu"].emulated and "cupy-emu" not in _dispatch.AUTO_ORDER
    # even when it is the only backend implementing the op
    monkeypatch.setattr(_dispatch, "AUTO_ORDER", ("reference",))
    monkeypatch.setattr(_dispatch, "_function", lambda name, family, func: None if name == "reference" else len)
    with pytest.raises(NotImplementedError, match="backend 'reference' does not implement"):
        _dispatch.select("relu", "activation", "relu_forward", "auto", np.ones(1))


def test_dtypes_are_declared_per_backend_and_family():
    assert _dispatch.REGISTRY["cpp"].dtypes("conv") == ("float32", "float64")
    for gpu in ("cupy", "cupy-emu"):
        spec = _dispatch.REGISTRY[gpu]
        assert {f for f in _dispatch.FAMILIES if "float16" in spec.dtypes(f)} == {"conv", "linear", "pool", "activation"}
    assert _dispatch.ACCEPTED_DTYPES == ("float16", "float32", "float64")


def test_float16_on_a_backend_that_does_not_take_it_is_a_type_error():
    x = np.ones(4, np.float16)
    with pytest.raises(TypeError, match=r"relu: backend 'reference' takes activation arrays of dtype float32 or "
                                        r"float64, got float16; float16 activation ops run on: cupy, cupy-emu"):
        fastconv.relu(x, backend="reference")
    with pytest.raises(TypeError, match="mse_loss: backend 'cupy-emu' takes loss arrays of dtype float32 or float64"):
        fastconv.mse_loss(x, x, backend="cupy-emu")
    with pytest.raises(TypeError, match="expected x of dtype float16, float32 or float64, got int32"):
        fastconv.relu(np.ones(4, np.int32))


def test_named_backend_and_context():
    x, w = np.ones((1, 1, 3, 3)), np.ones((1, 1, 2, 2))
    assert _dispatch.select("conv2d", "conv", "conv2d_forward", "reference", x)[0] == "reference"
    with fastconv.use_backend("reference") as name:
        assert name == "reference"
        assert fastconv.conv2d(x, w).shape == (1, 1, 2, 2)
        assert _dispatch.select("conv2d", "conv", "conv2d_forward", None, x)[0] == "reference"
        with fastconv.use_backend("auto"):
            assert _dispatch._current.get() == "auto"
    assert _dispatch._current.get() == "auto"


def test_unknown_backend_is_a_value_error():
    with pytest.raises(ValueError, match="unknown backend 'nope'; known backends: reference"):
        fastconv.conv2d(np.ones((1, 1, 3, 3)), np.ones((1, 1, 2, 2)), backend="nope")
    with pytest.raises(ValueError, match="unknown backend"):
        with fastconv.use_backend("nope"):
            pass
    with pytest.raises(TypeError, match="backend must be a str"):
        fastconv.conv2d(np.ones((1, 1, 3, 3)), np.ones((1, 1, 2, 2)), backend=3)


@pytest.fixture
def broken_backend(monkeypatch):
    """A registered backend whose package does not import, as a failed extension build would."""
    spec = _dispatch.BackendSpec("broken", "fastconv.backends.does_not_exist", "cpu", "test double")
    monkeypatch.setitem(_dispatch.REGISTRY, "broken", spec)
    monkeypatch.setattr(_dispatch, "AUTO_ORDER", ("broken", "reference"))
    monkeypatch.setattr(_dispatch, "_failed", {})
    return "broken"


def test_missing_backend_reports_the_original_reason_and_never_falls_back(broken_backend):
    status = fastconv.backend_status()
    assert "No module named 'fastconv.backends.does_not_exist'" in status["broken"]
    assert "broken" not in fastconv.available_backends()
    with pytest.raises(fastconv.BackendUnavailableError, match="backend 'broken' is not available: ModuleNotFoundError"):
        fastconv.conv2d(np.ones((1, 1, 3, 3)), np.ones((1, 1, 2, 2)), backend="broken")
    with pytest.raises(fastconv.BackendUnavailableError):
        with fastconv.use_backend("broken"):
            pass
    # auto skips it, with the same result as the reference
    assert _dispatch.select("conv2d", "conv", "conv2d_forward", "auto", np.ones(1))[0] == "reference"


@pytest.fixture
def partial_backend(monkeypatch):
    """A backend that implements conv only: auto uses the next backend for other families."""
    package = types.ModuleType("fastconv_partial")
    package.__path__ = []
    conv = types.ModuleType("fastconv_partial.conv")
    conv.conv2d_forward = lambda x, w, b, p: "partial"
    monkeypatch.setitem(__import__("sys").modules, "fastconv_partial", package)
    monkeypatch.setitem(__import__("sys").modules, "fastconv_partial.conv", conv)
    monkeypatch.setitem(_dispatch.REGISTRY, "partial", _dispatch.BackendSpec("partial", "fastconv_partial", "cpu", "test"))
    monkeypatch.setattr(_dispatch, "AUTO_ORDER", ("partial", "reference"))
    monkeypatch.setattr(_dispatch, "_loaded", {})
    return "partial"


def test_auto_picks_first_backend_that_implements_the_op(partial_backend):
    x = np.ones(1)
    assert _dispatch.select("conv2d", "conv", "conv2d_forward", "auto", x)[0] == "partial"
    assert _dispatch.select("conv2d", "conv", "conv2d_backward_input", "auto", x)[0] == "reference"
    with pytest.raises(NotImplementedError, match="backend 'partial' does not implement conv.conv2d_backward_input; backends that do: reference"):
        _dispatch.select("conv2d", "conv", "conv2d_backward_input", "partial", x)


def test_cupy_arrays_without_gpu_backend_fail_loudly(monkeypatch):
    fake = type("ndarray", (), {"__module__": "cupy._core.core"})()
    monkeypatch.setitem(_dispatch._failed, "cupy", ImportError("CuPy sees no CUDA device"))
    monkeypatch.delitem(_dispatch._loaded, "cupy", raising=False)
    with pytest.raises(fastconv.BackendUnavailableError,
                       match="backend 'cupy' is not available: ImportError: CuPy sees no CUDA device"):
        _dispatch.select("conv2d", "conv", "conv2d_forward", "auto", fake)
    with pytest.raises(TypeError, match="runs on the CPU but got CuPy"):
        _dispatch.select("conv2d", "conv", "conv2d_forward", "reference", fake)


def test_import_fastconv_loads_no_optional_heavy_module():
    import subprocess
    import sys

    code = ("import sys, fastconv; bad = [m for m in ('cupy', 'numba', 'torch') if m in sys.modules]; "
            "print(','.join(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""


def test_plans_are_kept_per_signature_and_errors_never():
    """An op's validation and dispatch run once per call signature (issue 21: per-call overhead);
    a call whose arguments only compare equal to a valid one's (True, 1.0 for 1) and every bad
    call still get the full checks, every time."""
    from fastconv.ops.conv import _conv2d_plan

    x, w = np.ones((1, 1, 4, 4), np.float32), np.ones((1, 1, 2, 2), np.float32)
    assert fastconv.conv2d(x, w, stride=1).shape == (1, 1, 3, 3)
    assert len(_conv2d_plan.plans) == 1
    assert (fastconv.conv2d(2 * x, w, stride=1) == 8).all()  # same signature, new values
    assert len(_conv2d_plan.plans) == 1
    for _ in range(2):
        for bad in (True, 1.0):
            with pytest.raises(TypeError, match="conv2d: expected stride to be an int or a pair"):
                fastconv.conv2d(x, w, stride=bad)
        with pytest.raises(ValueError, match="conv2d"):
            fastconv.conv2d(x[:, :, :1, :1], w)  # kernel larger than the image
        with pytest.raises(TypeError, match="conv2d"):
            fastconv.conv2d(x.astype(np.int32), w)
    assert len(_conv2d_plan.plans) == 1
    with fastconv.use_backend("reference"):  # the backend in force is part of the signature
        assert (fastconv.conv2d(x, w) == 4).all()
    assert {key[0] for key in _conv2d_plan.plans} == {"auto", "reference"}
    _dispatch.forget()
    assert not _conv2d_plan.plans and not _dispatch._chosen
