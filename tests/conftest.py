"""Fixtures shared by the whole suite: the backend matrix and fresh random generators.

The matrix holds every registered CPU backend (the GPU backend ``cupy`` takes CuPy arrays: its
suite is ``test_gpu.py``), and the GPU emulator twice: ``cupy-emu`` with the launch sizes the
adapters choose, and ``cupy-emu-small`` with every launch capped at one warp per block and two
blocks per grid, so that partial blocks, grid-stride loops and tails run on the tests' small
inputs, and with threads and blocks scheduled from the last to the first, so that a barrier a
kernel lacks shows (a thread reading another's write sees it in one order only). ``--emu`` splits the run: ``without`` leaves out every emulator test (the
emulator's own tests are marked ``emu``), ``only`` keeps just those. ``make test`` runs the first
plainly and the second with the emulator built under AddressSanitizer and UBSan.

Tests marked ``huge`` (inputs past 2^31 elements: 8.6 GB each, some 18 GB in all) run only with
``--huge``; they are skipped otherwise.
"""

import contextlib
import secrets

import numpy as np
import pytest

import fastconv
from fastconv._dispatch import REGISTRY, backend_status
from fastconv.backends import _common

# every kernel output buffer starts as NaN, so a kernel that skips part of it cannot pass
_common.POISON = True

EMULATOR = "cupy-emu"


def pytest_addoption(parser):
    parser.addoption("--emu", choices=("with", "without", "only"), default="with",
                     help="the GPU emulator's tests: with the rest (default), without them, or only them")
    parser.addoption("--huge", action="store_true",
                     help="run the tests marked huge: inputs past 2^31 elements (about 18 GB of memory)")


def pytest_configure(config):
    config.addinivalue_line("markers", "emu: a test of the GPU emulator itself (selected by --emu)")
    config.addinivalue_line("markers", "huge: an input past 2^31 elements (run with --huge)")


def _is_emulator_test(item) -> bool:
    params = getattr(item, "callspec", None)
    backend = params.params.get("backend") if params else None
    return item.get_closest_marker("emu") is not None or (isinstance(backend, tuple) and backend[0] == EMULATOR)


def pytest_collection_modifyitems(config, items):
    if not config.getoption("--huge"):
        skip = pytest.mark.skip(reason="an input past 2^31 elements: run with --huge (about 18 GB of memory)")
        for item in items:
            if item.get_closest_marker("huge") is not None:
                item.add_marker(skip)
    mode = config.getoption("--emu")
    if mode == "with":
        return
    keep, drop = [], []
    for item in items:
        (keep if _is_emulator_test(item) == (mode == "only") else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def _backend_params():
    status = backend_status()
    params = []
    for name, spec in REGISTRY.items():
        if spec.device == "gpu":  # takes CuPy arrays: its suite is test_gpu.py (this matrix passes NumPy)
            reason = "the backend matrix passes NumPy arrays; the GPU backend's suite is tests/test_gpu.py"
        else:
            reason = status[name]
        marks = [] if reason is None else [pytest.mark.skip(reason=reason)]
        params.append(pytest.param((name, False), id=name, marks=marks))
        if name == EMULATOR:
            params.append(pytest.param((name, True), id=f"{name}-small", marks=marks))
    return params


@pytest.fixture(params=_backend_params())
def backend(request):
    """Every registered backend (unavailable ones skip with the reason they failed to load); the
    emulator a second time with small launches."""
    name, small = request.param
    with contextlib.ExitStack() as stack:
        if small:
            from fastconv.backends.cupy import _emu, launch_limits

            stack.enter_context(launch_limits(threads=32, blocks=2))
            stack.enter_context(_emu.descending_schedule())
        yield name


@pytest.fixture
def rng(request):
    """A generator with a fresh seed per test; the seed is printed so a failure can be replayed."""
    seed = secrets.randbits(32)
    print(f"rng seed for {request.node.nodeid}: {seed}")
    return np.random.default_rng(seed)


@pytest.fixture(params=[np.float32, np.float64], ids=["f32", "f64"])
def dtype(request):
    return request.param


def pytest_report_header(config):
    lines = [f"fastconv {fastconv.__version__}; backends:"]
    for name, reason in backend_status().items():
        lines.append(f"  {name}: {'available' if reason is None else reason}")
    return lines
