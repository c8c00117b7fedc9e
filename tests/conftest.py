"""Fixtures shared by the whole suite: the backend matrix and fresh random generators."""

import secrets

import numpy as np
import pytest

import fastconv
from fastconv._dispatch import REGISTRY, backend_status
from fastconv.backends import _common

# every kernel output buffer starts as NaN, so a kernel that skips part of it cannot pass
_common.POISON = True


def _backend_params(include_reference: bool):
    status = backend_status()
    params = []
    for name in REGISTRY:
        if name == "reference" and not include_reference:
            continue
        marks = [] if status[name] is None else [pytest.mark.skip(reason=status[name])]
        params.append(pytest.param(name, id=name, marks=marks))
    return params


@pytest.fixture(params=_backend_params(include_reference=True))
def backend(request):
    """Every registered backend (unavailable ones skip with the reason they failed to load)."""
    return request.param


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
