"""The pytest-benchmark suite: fastconv backend (and PyTorch peer) x shape x pass.

Not part of the plain test run (``testpaths = ["tests"]``). From the repository root:

    # time everything, write JSON, and save the run for later comparisons (.benchmarks/)
    python -m pytest benchmarks --benchmark-autosave --benchmark-json=bench-results/pytest-benchmark.json

    # compare with the last saved run (fail on a median 25% slower)
    python -m pytest benchmarks --benchmark-compare --benchmark-compare-fail=median:25%

    # CI smoke: the cheapest shape of each kind, every case verified, nothing timed
    python -m pytest benchmarks --quick --benchmark-disable

Options (besides pytest-benchmark's own --benchmark-*): --shapes FILE, --quick, --match TEXT,
--backends a,b, --passes forward,backward, --dtype, --threads N, --no-torch.

test_kernels.py holds the kernel cases; test_e2e.py whole networks, PyTorch against the same model
patched (``fastconv bench --e2e``'s models and verification; --quick, --match and --threads apply
to it too; --shapes, --backends and --no-torch leave it out).
"""

import numpy as np
import pytest

from fastconv import _threads
from fastconv._dispatch import REGISTRY, backend_status
from fastconv.bench.cases import Case, fastconv_contenders, torch_contenders
from fastconv.bench.runner import import_torch
from fastconv.bench.suite import load_suite, parse_passes, quick_subset, select


def pytest_addoption(parser):
    group = parser.getgroup("fastconv", "fastconv benchmarks")
    group.addoption("--shapes", metavar="FILE", help="shapes JSON file (default: the shipped suite)")
    group.addoption("--quick", action="store_true", help="only the cheapest shape of each kind")
    group.addoption("--match", metavar="TEXT", help="only shapes whose name contains TEXT")
    group.addoption("--backends", help="comma-separated fastconv backends (default: all registered but "
                                       "the emulator)")
    group.addoption("--passes", help="forward, backward-input, backward-weight, backward (default: all)")
    group.addoption("--dtype", default=None, choices=("float32", "float64"), help="default: the suite's")
    group.addoption("--threads", type=int, default=None, help="threads for fastconv and PyTorch alike")
    group.addoption("--no-torch", action="store_true", help="leave the PyTorch peers out")


CASES, CONTENDERS = pytest.StashKey[list](), pytest.StashKey[list]()


def pytest_configure(config):
    """Read the options once, up front, so a bad --shapes, --passes or --backends is a usage error."""
    try:
        config.stash[CASES] = _cases(config)
    except ValueError as exc:
        raise pytest.UsageError(str(exc)) from exc
    config.stash[CONTENDERS] = _contenders(config)


def _cases(config):
    suite = load_suite(config.getoption("--shapes"))
    passes = parse_passes(config.getoption("--passes"))
    shapes = select(suite.shapes, config.getoption("--match"))
    if config.getoption("--quick"):
        shapes = quick_subset(shapes)
    dtype = np.dtype(config.getoption("--dtype") or suite.dtype)
    return [Case(s, p, dtype) for s in shapes for p in s.passes if p in passes]


def _contenders(config):
    """Every fastconv backend (unavailable ones skip with their reason; the emulator only when
    named), then the PyTorch peers."""
    option = config.getoption("--backends")
    names = option.split(",") if option else [n for n, spec in REGISTRY.items() if not spec.emulated]
    unknown = [n for n in names if n not in REGISTRY]
    if unknown:
        raise pytest.UsageError(f"--backends: unknown {', '.join(unknown)}; known: {', '.join(REGISTRY)}")
    status = backend_status()
    params = [(c, status[c.backend]) for c in fastconv_contenders(names)]
    torch = None if config.getoption("--no-torch") else import_torch()
    if torch is not None:
        params += [(c, None) for c in torch_contenders(torch)]
    return params


def pytest_generate_tests(metafunc):
    if "case" not in metafunc.fixturenames:
        return
    params = []
    for case in metafunc.config.stash[CASES]:  # case-major: each case's reference result is computed once
        for contender, unavailable in metafunc.config.stash[CONTENDERS]:
            if contender.applies(case):
                marks = [pytest.mark.skip(reason=unavailable)] if unavailable else []
                params.append(pytest.param(case, contender, id=f"{case.id}-{contender.name}", marks=marks))
    metafunc.parametrize(("case", "contender"), params)


@pytest.fixture(scope="session")
def threads(request):
    return request.config.getoption("--threads") or _threads.get_num_threads()


@pytest.fixture(scope="session")
def torch_module(request, threads):
    """PyTorch pinned to the same number of threads as fastconv (None without PyTorch)."""
    torch = None if request.config.getoption("--no-torch") else import_torch()
    if torch is None:
        yield None
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    torch.backends.cudnn.benchmark = True
    yield torch
    torch.set_num_threads(previous)


@pytest.fixture(scope="session", autouse=True)
def pinned_threads(threads):
    with _threads.num_threads(threads):
        yield threads
