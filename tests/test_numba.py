"""What only the Numba backend has: its convolution paths (direct loops, pointwise GEMM, the wide
layout with its tiles, channel blocks and wgrad slices) forced onto tiny shapes, the junk columns
of the wide layout, its threads (thread-count independence, repeated runs, concurrent Python
threads), its BLAS and threading-layer plumbing, lazy compilation and the on-disk cache, and the
kernels' Python bodies under ``NUMBA_DISABLE_JIT=1``. The generic matrix in test_conv.py,
test_pool.py, ... already checks every op against the reference."""

import os
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from support import assert_close, assert_equal, randn, small_ints
from test_conv import NAMES, _run_all

import fastconv
from fastconv._threads import num_threads
from fastconv.problems import CONV_PROBLEMS, Conv

if fastconv.backend_status()["numba"] is not None:
    pytest.skip(fastconv.backend_status()["numba"], allow_module_level=True)

import numba

from fastconv.backends.numba import _jit, conv


def _inputs(rng, c, make, dtype):
    """x, w, b and a dy of y's shape for problem c, drawn by ``make``."""
    y_shape = fastconv.conv2d(np.zeros(c.x_shape), np.zeros(c.w_shape), **c.kwargs, backend="reference").shape
    return tuple(make(rng, shape, dtype) for shape in (c.x_shape, c.w_shape, (c.C_out,), y_shape))


# Problems for each path of backends/numba/conv.py, beyond the general problem list:
PATHS = [
    Conv("direct_depthwise_strided", 2, 4, 11, 13, 4, 3, 2, stride=(2, 3), padding=(1, 2), dilation=(2, 1), groups=4),
    Conv("direct_multiplier", 2, 3, 7, 9, 6, 2, 3, padding=1, groups=3),
    Conv("direct_one_input_channel", 3, 1, 8, 6, 4, 3, 3, padding=((0, 2), (1, 0))),
    Conv("pointwise_groups", 2, 6, 5, 7, 4, 1, 1, groups=2),
    Conv("wide_stride_phases", 2, 3, 13, 12, 5, 3, 4, stride=(2, 3), padding=(1, 2)),
    Conv("wide_dilation_not_multiple", 2, 2, 14, 11, 3, 3, 2, stride=(2, 1), padding=(2, 1), dilation=(3, 2)),
    Conv("wide_unused_phases", 2, 3, 9, 10, 4, 1, 1, stride=(2, 3)),
    Conv("wide_groups_tall", 1, 4, 20, 5, 6, 3, 3, padding=1, groups=2),
]
PATH_PARAMS = [pytest.param(c, id=c.name) for c in CONV_PROBLEMS + PATHS]


@pytest.fixture(params=["default", "tiny_tiles"])
def tiling(request, monkeypatch):
    """The shipped tile plan, or one with tiles of 1 to 3 rows, channel blocks of 2 channels and
    up to 3 slices: several tiles per image, even and odd dgrad tiles, blocks and slices on tiny shapes."""
    if request.param == "tiny_tiles":
        monkeypatch.setattr(conv, "TILE_COLUMNS", 16)
        monkeypatch.setattr(conv, "MIN_COLUMNS", 1)
        monkeypatch.setattr(conv, "MIN_UNITS", 64)
        monkeypatch.setattr(conv, "MIN_BLOCK", 2)
        monkeypatch.setattr(conv, "MAX_SLICES", 3)
    return request.param


@pytest.mark.parametrize("c", PATH_PARAMS)
def test_every_path_exact_on_small_integers(c, tiling, rng):
    x, w, b, dy = _inputs(rng, c, small_ints, np.float32)
    for name, got, want in zip(NAMES, _run_all(c, x, w, b, dy, "numba"), _run_all(c, x, w, b, dy, "reference")):
        assert_equal(got, want, f"{c.name} {name} with {tiling} tiles")


@pytest.mark.parametrize("c", [pytest.param(c, id=c.name) for c in PATHS])
def test_every_path_close_on_random_data(c, tiling, dtype, rng):
    x, w, b, dy = _inputs(rng, c, randn, dtype)
    for name, got, want in zip(NAMES, _run_all(c, x, w, b, dy, "numba"), _run_all(c, x, w, b, dy, "reference")):
        assert_close(got, want, f"{c.name} {name} with {tiling} tiles")


@pytest.mark.filterwarnings("ignore:invalid value encountered")  # the reference's NaN, from Inf - Inf
@pytest.mark.parametrize("c", [pytest.param(c, id=c.name) for c in PATHS if c.name.startswith("wide")])
def test_junk_columns_never_reach_a_result(c, tiling, rng):
    """The wide layout computes Wq - OW junk columns per output row. Inf in x, w and dy (Inf times
    a junk 0 is NaN) must give exactly the reference's Inf and NaN, nothing more."""
    x, w, b, dy = _inputs(rng, c, small_ints, np.float64)
    x[0, 0, 1, -1] = x[-1, -1, -2, 0] = np.inf
    w[0, 0, 0, 0] = -np.inf
    dy[0, 0, 0, -1] = dy[-1, -1, -1, 0] = np.inf
    for name, got, want in zip(NAMES, _run_all(c, x, w, b, dy, "numba"), _run_all(c, x, w, b, dy, "reference")):
        assert_equal(got, want, f"{c.name} {name}")


def test_plan_keeps_tiles_apart_for_dgrad():
    """dgrad runs even and odd tiles apart; tiles two apart must stage disjoint input rows."""
    for c in CONV_PROBLEMS + PATHS:
        p = fastconv._params.conv_params("t", c.x_shape, c.w_shape, c.stride, c.padding, c.dilation, c.groups)
        plan = conv._plan(p, 4, p.C_in // p.groups, min_rows=conv._reach(p), at_once=2)
        assert plan.rows >= min(p.OH, (p.KH - 1) * p.dil_h // p.stride_h), c.name
        assert plan.tiles * plan.rows >= p.OH > (plan.tiles - 1) * plan.rows, c.name


# --------------------------------------------------------------------------------------------
# threads: subprocesses with a pool of 3 Numba threads (more than this machine may have cores)
# --------------------------------------------------------------------------------------------

def _python(code, **env):
    """Run ``code`` in a fresh interpreter (tests/ on its path) and return its stdout."""
    environment = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.dirname(__file__), os.environ.get("PYTHONPATH", "")]),
                       **env)
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=environment, capture_output=True,
                          text=True, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


_EVERY_OP = """
import numpy as np
import fastconv
from fastconv.problems import CONV_PROBLEMS, POOL_PROBLEMS

def every_op(backend, seed=0):
    '''Every numba kernel on small problems: a list of results (arrays).'''
    rng = np.random.default_rng(seed)
    out = []
    for c in (CONV_PROBLEMS[5], CONV_PROBLEMS[9], CONV_PROBLEMS[10], CONV_PROBLEMS[12]):
        x, w, b = (rng.standard_normal(s) for s in (c.x_shape, c.w_shape, (c.C_out,)))
        y = fastconv.conv2d(x, w, b, **c.kwargs, backend=backend)
        out += [y, *fastconv.conv2d_backward(rng.standard_normal(y.shape), x, w, **c.kwargs, backend=backend)]
    q = POOL_PROBLEMS[6]
    x = rng.standard_normal(q.x_shape)
    args = (q.kernel_size, q.stride, q.padding, q.dilation, q.ceil_mode)
    y, idx = fastconv.max_pool2d(x, *args, return_indices=True, backend=backend)
    dy = rng.standard_normal(y.shape)
    out += [y, idx, fastconv.max_pool2d_backward(dy, x, *args, indices=idx, backend=backend)]
    avg = (q.kernel_size, q.stride, q.padding, q.ceil_mode, False)
    out += [fastconv.avg_pool2d(x, *avg, backend=backend), fastconv.avg_pool2d_backward(dy, x, *avg, backend=backend)]
    out += [fastconv.adaptive_avg_pool2d(x, (3, 2), backend=backend),
            fastconv.adaptive_avg_pool2d_backward(rng.standard_normal((*x.shape[:2], 3, 2)), x, (3, 2), backend=backend)]
    x, w, b = rng.standard_normal((37, 29)), rng.standard_normal((300, 29)), rng.standard_normal(300)
    out += [fastconv.linear(x, w, b, backend=backend),
            *fastconv.linear_backward(rng.standard_normal((37, 300)), x, w, backend=backend)]
    x = rng.standard_normal((7, 5, 6, 3))
    for name in ("relu", "gelu", "softplus", "silu"):
        out += [getattr(fastconv, name)(x, backend=backend),
                getattr(fastconv, name + "_backward")(rng.standard_normal(x.shape), x, backend=backend)]
    for dim in (1, -1):
        y = fastconv.log_softmax(x, dim, backend=backend)
        out += [y, fastconv.log_softmax_backward(rng.standard_normal(x.shape), y, dim, backend=backend)]
    r = fastconv.batch_norm(x, training=True, weight=np.ones(5), bias=np.zeros(5), backend=backend)
    out += [r.y, r.mean, r.invstd, *fastconv.batch_norm_backward(rng.standard_normal(x.shape), x, np.ones(5),
                                                                 mean=r.mean, invstd=r.invstd, training=True,
                                                                 backend=backend)]
    logits, target = rng.standard_normal((40, 9)), rng.integers(0, 9, 40)
    for reduction in ("mean", "none"):
        dloss = np.asarray(rng.standard_normal(40) if reduction == "none" else 1.0)
        out += [fastconv.cross_entropy(logits, target, reduction=reduction, label_smoothing=0.1, backend=backend),
                fastconv.cross_entropy_backward(dloss, logits, target, reduction=reduction, label_smoothing=0.1,
                                                backend=backend)]
    out += [fastconv.mse_loss(x, x[::-1].copy(), backend=backend)]
    out += list(fastconv.dropout(x, 0.3, seed=99, backend=backend))
    return out
"""


def test_results_identical_on_any_thread_count_and_every_run():
    """Every kernel gives bit-identical results on 1, 2 and 3 threads and on repeated runs (the
    reductions of wgrad, bias, batch norm and the losses are split by the shape alone); the
    dropout mask included. Numba's pool is 3 threads in the subprocess, whatever the cores."""
    out = _python(_EVERY_OP + """
from fastconv._threads import num_threads
results = {}
for n in (1, 2, 3, 3, 3):
    with num_threads(n):
        results.setdefault(n, []).append(every_op("numba"))
first = results[1][0]
for n, runs in results.items():
    for run in runs:
        assert len(run) == len(first)
        for i, (a, b) in enumerate(zip(first, run)):
            assert a.shape == b.shape and a.dtype == b.dtype, (n, i)
            assert np.array_equal(a, b, equal_nan=True), f"result {i} differs on {n} threads"
import numba
print("ok", numba.config.NUMBA_NUM_THREADS, numba.threading_layer())
""", NUMBA_NUM_THREADS="3")
    status, pool, layer = out.split()
    assert (status, pool) == ("ok", "3")
    assert layer in ("omp", "tbb")  # never workqueue, which aborts on concurrent launches


def test_concurrent_calls_from_python_threads():
    """Six Python threads each run every op five times at once, on 2 Numba threads each (in a pool
    of 3): each gets the reference's answers."""
    _python(_EVERY_OP + """
from concurrent.futures import ThreadPoolExecutor
import fastconv
from support import assert_close, assert_equal
want = [every_op("reference", seed) for seed in range(6)]

def work(seed):
    fastconv.set_num_threads(2)
    for _ in range(5):
        for i, (got, ref) in enumerate(zip(every_op("numba", seed), want[seed])):
            if i < len(want[seed]) - 2:  # not dropout: each backend draws its own mask
                (assert_close if got.dtype.kind == "f" else assert_equal)(got, ref, f"result {i}")

with ThreadPoolExecutor(6) as pool:
    list(pool.map(work, range(6)))  # a thread's failure is raised here
""", NUMBA_NUM_THREADS="3")


def test_kernels_python_bodies_without_jit():
    """With ``NUMBA_DISABLE_JIT=1`` every kernel runs as the Python it is written in (prange is
    range, gemm is NumPy's matmul): the same results as the reference on small problems."""
    _python(_EVERY_OP + """
import numba
assert numba.config.DISABLE_JIT
from fastconv.backends.numba import conv
assert not hasattr(conv._forward_gemm, "signatures")  # a plain function
from support import assert_close, assert_equal
got, want = every_op("numba"), every_op("reference")
for i, (g, w) in enumerate(zip(got, want)):
    if i >= len(want) - 2:  # dropout: its own mask, checked below
        continue
    (assert_close if g.dtype.kind == "f" else assert_equal)(g, w, f"result {i}")
y, mask = got[-2:]
assert mask.dtype == bool and mask.shape == y.shape and 0 < mask.mean() < 1 and (y[~mask] == 0).all()
""", NUMBA_DISABLE_JIT="1")


# --------------------------------------------------------------------------------------------
# plumbing: threads, BLAS, lazy compilation, the cache
# --------------------------------------------------------------------------------------------

def test_thread_count_follows_set_num_threads(rng):
    x = randn(rng, (4, 5), np.float32)
    for n in (1, numba.config.NUMBA_NUM_THREADS, numba.config.NUMBA_NUM_THREADS + 5):
        with num_threads(n):
            fastconv.relu(x, backend="numba")
            assert numba.get_num_threads() == min(n, numba.config.NUMBA_NUM_THREADS)


def test_blas_held_at_one_thread_only_inside_an_op(rng, monkeypatch):
    """Kernels that call BLAS from prange hold every BLAS library at one thread while they run
    and restore the previous counts after (also when the kernel raises)."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    seen = []
    real = _jit.run

    def spy(kernel, *args):
        seen.append({lib["num_threads"] for lib in threadpoolctl.threadpool_info() if lib["user_api"] == "blas"})
        return real(kernel, *args)

    with threadpoolctl.threadpool_limits(limits=2, user_api="blas"):
        before = {lib["filepath"]: lib["num_threads"] for lib in threadpoolctl.threadpool_info()}
        monkeypatch.setattr(_jit, "run", spy)
        x, w = randn(rng, (3, 8), np.float32), randn(rng, (5, 8), np.float32)
        fastconv.linear(x, w, backend="numba")
        assert seen == [{1}]
        with pytest.raises(TypeError):
            _jit.run_with_blas(conv._forward_gemm, x)  # a wrong call: the pin must still be released
        assert {lib["filepath"]: lib["num_threads"] for lib in threadpoolctl.threadpool_info()} == before


def test_import_compiles_nothing_and_second_process_loads_the_cache():
    """Importing the backend's modules compiles no kernel; running an op compiles (or loads) only
    what it calls; a second process loads those kernels from the on-disk cache, compiling nothing."""
    code = """
import numpy as np, numba
import fastconv
from fastconv.backends.numba import activation, conv, dropout, linear, loss, norm, pool
kernels = [f for m in (activation, conv, dropout, linear, loss, norm, pool) for f in vars(m).values()
           if isinstance(f, numba.core.registry.CPUDispatcher)]
assert kernels and not any(k.signatures for k in kernels), "compiled at import"
fastconv.conv2d(np.ones((1, 2, 5, 5), np.float32), np.ones((3, 2, 3, 3), np.float32), padding=1, backend="numba")
used = [k for k in kernels if k.signatures]
names = {k.__name__ for k in used}
assert "_forward_gemm" in names and not names & {"_forward_direct", "_backward_input_gemm"}, names
print(sum(k.stats.cache_misses.get(s, 0) for k in used for s in k.signatures))
"""
    _python(code)  # fills the cache if this checkout has not yet
    assert _python(code).strip() == "0"


def test_read_only_input_is_neither_copied_nor_compiled_again(rng):
    """Inputs reach the kernels as read-only views: a contiguous array, writable or not, is never
    copied, and a read-only one runs the very kernels compiled for a writable one."""
    a = randn(rng, (2, 3, 4, 5), np.float32)
    view = _jit.contiguous(a)
    assert np.shares_memory(view, a) and not view.flags.writeable and a.flags.writeable
    a.flags.writeable = False
    assert np.shares_memory(_jit.contiguous(a), a)
    strided = _jit.contiguous(a[:, :, ::2])  # the one case that copies: not C-contiguous
    assert strided.flags.c_contiguous and not np.shares_memory(strided, a)

    from fastconv.backends.numba import pool

    x, w = randn(rng, (2, 3, 9, 8), np.float32), randn(rng, (4, 3, 3, 3), np.float32)
    y, indices = fastconv.max_pool2d(x, 2, return_indices=True, backend="numba")
    dy = randn(rng, y.shape, np.float32)

    def run():
        return (fastconv.conv2d(x, w, padding=1, backend="numba"),
                fastconv.max_pool2d_backward(dy, x, 2, indices=indices, backend="numba"))

    kernels = (conv._forward_gemm, pool._max_backward)
    want = run()
    compiled = [len(k.signatures) for k in kernels]
    for array in (x, w, dy, indices):
        array.flags.writeable = False
    for got, ref in zip(run(), want):
        assert_equal(got, ref, "read-only inputs")
    assert [len(k.signatures) for k in kernels] == compiled


def test_threading_layer_is_thread_safe():
    fastconv.relu(np.ones(3), backend="numba")
    assert numba.threading_layer() in ("omp", "tbb")


def test_concurrent_calls_in_this_process(rng):
    """Python threads calling conv kernels at once in the test process itself (its own Numba pool)."""
    cases = []
    for c in PATHS[::2]:
        x, w, b, dy = _inputs(rng, c, randn, np.float64)
        cases.append((c, x, w, b, dy, _run_all(c, x, w, b, dy, "reference")))

    def work(case):
        c, x, w, b, dy, want = case
        for _ in range(3):
            for name, got, ref in zip(NAMES, _run_all(c, x, w, b, dy, "numba"), want):
                assert_close(got, ref, f"{c.name} {name} (concurrent)")

    with ThreadPoolExecutor(len(cases)) as pool:
        list(pool.map(work, cases))  # a thread's failure is raised here
