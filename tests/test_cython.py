"""What only the Cython backend has: its im2col / col2im index maps on rectangular problems that
reach each of its paths (exact), its threads (any thread count, SciPy's BLAS held at one thread
inside the OpenMP loops and given back afterwards, concurrent callers, the released GIL), its
bounded im2col workspace, and a clear reason when a compiled module is missing. The generic matrix
in test_conv.py / test_pool.py / test_linear.py / test_activation.py already checks every op
against the reference."""

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import fastconv
from fastconv._threads import num_threads
from fastconv.problems import Conv
from support import assert_close, assert_equal, randn, small_ints

if fastconv.backend_status()["cython"] is not None:
    pytest.skip(fastconv.backend_status()["cython"], allow_module_level=True)

from fastconv.backends.cython import _conv, _linear, _util  # noqa: E402

NAMES = ("y", "dx", "dw", "db")

# Rectangular everything (KH != KW, stride_h != stride_w, dil_h != dil_w, four different paddings),
# on each path of _conv.pyx. A KH/KW or stride/dilation mix-up in the index maps changes results.
PATHS = [
    # im2col + GEMM; dgrad by GEMM + col2im
    Conv("tall_kernel", 2, 3, 11, 9, 4, 5, 2, stride=(1, 3), padding=((2, 0), (1, 3)), dilation=(1, 2)),
    Conv("wide_kernel", 2, 3, 8, 13, 5, 2, 5, stride=(3, 1), padding=((0, 1), (2, 2)), dilation=(3, 1)),
    Conv("padding_beyond_kernel", 1, 2, 5, 4, 3, 2, 3, stride=(2, 1), padding=((4, 1), (0, 5)), dilation=(2, 1)),
    Conv("groups_rect", 2, 6, 10, 7, 9, 3, 2, stride=(2, 1), padding=((1, 0), (1, 1)), dilation=(1, 3), groups=3),
    # one image in several im2col chunks, whose edges fall inside output rows
    Conv("chunked_image", 2, 32, 31, 41, 6, 3, 4, padding=((1, 1), (2, 2))),
    # pointwise: x is the cols matrix; strided 1x1 goes through im2col
    Conv("pointwise_groups", 2, 6, 5, 9, 4, 1, 1, groups=2),
    Conv("pointwise_strided", 2, 4, 9, 7, 3, 1, 1, stride=(2, 3)),
    # depthwise: direct loops; at stride 1 in register tiles of 16 columns (rows of several tiles
    # and a ragged end, rows narrower than a tile), dgrad as a forward with padding d*(K-1) - pad
    # (negative when the padding exceeds the kernel's span)
    Conv("depthwise_tiles", 2, 3, 7, 37, 3, 3, 5, padding=((1, 2), (2, 0)), dilation=(2, 1), groups=3),
    Conv("depthwise_narrow", 2, 2, 6, 9, 2, 2, 3, padding=((0, 1), (1, 1)), groups=2),
    Conv("depthwise_wide_pad", 1, 2, 5, 20, 2, 2, 3, padding=((3, 1), (4, 4)), groups=2),
    Conv("depthwise_rect", 2, 4, 9, 12, 4, 3, 5, stride=(2, 1), padding=((1, 2), (3, 0)), dilation=(1, 2), groups=4),
    Conv("depthwise_strided_w", 1, 3, 7, 15, 3, 4, 2, stride=(1, 3), padding=(1, 1), groups=3),
    # depthwise with a channel multiplier (and C_in = 1): the GEMM path
    Conv("multiplier_3", 2, 2, 8, 11, 6, 2, 3, stride=(1, 2), padding=((1, 0), (0, 2)), dilation=(2, 1), groups=2),
    Conv("single_channel", 3, 1, 12, 10, 6, 5, 3, padding=2),
]
PATH_PARAMS = [pytest.param(c, id=c.name) for c in PATHS]


def _inputs(rng, c, make, dtype):
    x, w, b = make(rng, c.x_shape, dtype), make(rng, c.w_shape, dtype), make(rng, (c.C_out,), dtype)
    dy = make(rng, fastconv.conv2d(x, w, b, **c.kwargs, backend="reference").shape, dtype)
    return x, w, b, dy


def _all_passes(c, x, w, b, dy, backend):
    y = fastconv.conv2d(x, w, b, **c.kwargs, backend=backend)
    return (y, *fastconv.conv2d_backward(dy, x, w, **c.kwargs, backend=backend))


@pytest.mark.parametrize("c", PATH_PARAMS)
def test_index_maps_exact_on_small_integers(c, dtype, rng):
    """im2col (forward, wgrad) and col2im (dgrad) against the reference, bit for bit."""
    x, w, b, dy = _inputs(rng, c, small_ints, dtype)
    for name, got, want in zip(NAMES, _all_passes(c, x, w, b, dy, "cython"), _all_passes(c, x, w, b, dy, "reference")):
        assert_equal(got, want, f"{c.name} {name}")


@pytest.mark.parametrize("c", PATH_PARAMS)
def test_paths_close_on_random_data(c, dtype, rng):
    x, w, b, dy = _inputs(rng, c, randn, dtype)
    for name, got, want in zip(NAMES, _all_passes(c, x, w, b, dy, "cython"), _all_passes(c, x, w, b, dy, "reference")):
        assert_close(got, want, f"{c.name} {name}")


@pytest.mark.parametrize("c", [pytest.param(c, id=c.name) for c in PATHS if c.name in
                               ("tall_kernel", "groups_rect", "chunked_image", "pointwise_groups", "depthwise_tiles")])
def test_any_thread_count(c, rng):
    """The work is split differently for 1, 2 and 3 threads (pixel chunks, channel parts, dw
    columns); every split gives the exact result, more threads than cores included."""
    x, w, b, dy = _inputs(rng, c, small_ints, np.float32)
    want = _all_passes(c, x, w, b, dy, "reference")
    for n in (1, 2, 3):
        with num_threads(n):
            got = _all_passes(c, x, w, b, dy, "cython")
        for name, g, r in zip(NAMES, got, want):
            assert_equal(g, r, f"{c.name} {name} on {n} threads")


def _blas_counts():
    """The thread counts of the BLAS libraries the backend controls (SciPy's among them)."""
    return sorted({lib.get_num_threads() for lib in _util._BLAS})


def _spy(monkeypatch, module, name, seen):
    """Wrap module.name to record the BLAS thread counts in force while it runs."""
    kernel = getattr(module, name)

    def spy(*args):
        seen.append(_blas_counts())
        return kernel(*args)

    monkeypatch.setattr(module, name, spy)


def test_one_blas_thread_inside_the_openmp_loops_and_restored_after(monkeypatch, rng):
    """Conv kernels call BLAS from every OpenMP thread, so BLAS runs on one thread meanwhile;
    linear is one GEMM, so BLAS gets the thread count in force. The counts come back after."""
    seen = {}
    for module, name in ((_conv, "conv2d_forward"), (_conv, "conv2d_backward_input"),
                         (_conv, "conv2d_backward_weight"), (_linear, "linear_forward")):
        _spy(monkeypatch, module, name, seen.setdefault(name, []))
    c = PATHS[0]
    x, w, b, dy = _inputs(rng, c, randn, np.float32)
    with num_threads(2):
        before = _blas_counts()
        _all_passes(c, x, w, b, dy, "cython")
        fastconv.linear(randn(rng, (5, 3), np.float32), randn(rng, (4, 3), np.float32), backend="cython")
        after = _blas_counts()
    assert before == after == [2]
    for name in ("conv2d_forward", "conv2d_backward_input", "conv2d_backward_weight"):
        assert seen[name] == [[1]], (name, seen[name])
    assert seen["linear_forward"] == [[2]]


def test_concurrent_calls_from_python_threads(rng):
    """Python threads calling conv and linear at once (each conv with its own OpenMP team and
    workspace, the BLAS count shared) all get the right answers, and the BLAS count comes back."""
    cases = [(c, *_inputs(rng, c, randn, np.float64)) for c in PATHS[:6]]
    xl, wl = randn(rng, (40, 30), np.float64), randn(rng, (20, 30), np.float64)

    def passes(case, backend):
        c, x, w, b, dy = case
        return [*_all_passes(c, x, w, b, dy, backend), fastconv.linear(xl, wl, backend=backend)]

    before = _blas_counts()
    with ThreadPoolExecutor(len(cases)) as pool:
        runs = [pool.submit(passes, case, "cython") for case in cases for _ in range(5)]
        got = [run.result() for run in runs]
    assert _blas_counts() == before
    for i, results in enumerate(got):
        case = cases[i // 5]
        for name, g, r in zip(NAMES + ("linear",), results, passes(case, "reference")):
            assert_close(g, r, f"{case[0].name} {name} (concurrent)")


def test_gil_released_during_a_long_conv(rng):
    """A Python thread keeps running while another one runs convolutions (the kernels run nogil)."""
    x, w = randn(rng, (1, 64, 112, 112), np.float32), randn(rng, (64, 64, 3, 3), np.float32)
    with num_threads(1), ThreadPoolExecutor(1) as pool:
        convs = pool.submit(lambda: [fastconv.conv2d(x, w, padding=1, backend="cython") for _ in range(3)])
        ticks = 0
        while not convs.done():
            ticks += 1
        convs.result()
    # holding the GIL for a whole call would leave this loop a handful of iterations per call
    assert ticks > 10_000, f"the main thread ran only {ticks} iterations during the convolutions"


def test_workspace_bounded_independent_of_batch(monkeypatch, rng):
    """No im2col matrix for a whole batch, nor for a whole image of a big layer: the per-thread
    workspace of every pass is the same for a batch of 1 and of 8, and smaller than one image's
    cols (C_in*KH*KW x OH*OW)."""
    requests = []
    workspace = _conv._workspace

    def spy(nthreads, size, dtype):
        requests.append(size)
        return workspace(nthreads, size, dtype)

    monkeypatch.setattr(_conv, "_workspace", spy)
    sizes = {}
    for N in (1, 8):
        c = Conv("big_image", N, 16, 96, 80, 8, 3, 3, padding=1)
        x, w, b, dy = _inputs(rng, c, randn, np.float32)
        requests.clear()
        with num_threads(1):
            _all_passes(c, x, w, b, dy, "cython")
        sizes[N] = list(requests)
    image_cols = 16 * 3 * 3 * 96 * 80
    assert len(sizes[1]) == 3 and sizes[1] == sizes[8], sizes  # forward, dgrad, wgrad
    assert max(sizes[1]) < image_cols // 2, (sizes[1], image_cols)


def test_missing_compiled_module_is_a_clear_load_error():
    """With one compiled module unimportable, the backend is unavailable, and says which module
    and how to build it; a call naming the backend fails with that reason."""
    code = """
import sys
import numpy as np
from importlib.abc import MetaPathFinder

class Missing(MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "fastconv.backends.cython._pool":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)

sys.meta_path.insert(0, Missing())
import fastconv
print(fastconv.backend_status()["cython"])
try:
    fastconv.relu(np.ones(3), backend="cython")
except fastconv.BackendUnavailableError as exc:
    print("raised:", exc)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "fastconv.backends.cython._pool cannot be imported" in out, out
    assert "pip install" in out, out
    assert "raised: backend 'cython' is not available" in out, out


@pytest.mark.parametrize("family, func, op, args", [
    ("loss", "mse_loss_forward", fastconv.mse_loss, (np.ones(3), np.zeros(3))),
    ("dropout", "dropout_forward", fastconv.dropout, (np.ones(3), 0.5)),
])
def test_families_it_lacks_are_reported_not_emulated(family, func, op, args):
    """Losses, batch norm and dropout are not in this backend: named, it says so."""
    with pytest.raises(NotImplementedError, match=f"backend 'cython' does not implement {family}.{func}"):
        op(*args, backend="cython")
