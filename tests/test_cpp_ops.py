"""What only the C++ activation / loss / batch-norm / dropout kernels and the layout transpose have:
their threaded paths
(arrays large enough to be split among threads, which the generic tests' small shapes never are),
results independent of the thread count, dropout's counter-based masks, the float32 polynomial
exp/erf/tanh over their whole range, concurrent calls, and the binding's own checks. The generic
matrix in test_activation.py / test_loss.py / test_norm.py / test_dropout.py checks every op
against the reference, edge values included."""

import threading

import numpy as np
import pytest

import fastconv
from fastconv._threads import num_threads
from support import assert_close, assert_equal, randn

if fastconv.backend_status()["cpp"] is not None:
    pytest.skip(fastconv.backend_status()["cpp"], allow_module_level=True)

from fastconv import _cpp  # noqa: E402
from fastconv.backends.cpp import _util as cpp_util  # noqa: E402

BIG = 3 * 2**15 + 77  # elements: split among threads (32 Ki per thread), with a ragged end

# (op, backward, params) for every activation
ACTIVATIONS = [("relu", ()), ("leaky_relu", (0.2,)), ("elu", (1.3,)), ("selu", ()), ("gelu", ()), ("gelu", ("tanh",)),
               ("sigmoid", ()), ("tanh", ()), ("softplus", (1.5, 4.0)), ("silu", ())]
ACT_PARAMS = [pytest.param(name, params, id=f"{name}{params}") for name, params in ACTIVATIONS]


def _activation(name, params, x, dy, backend):
    return (getattr(fastconv, name)(x, *params, backend=backend),
            getattr(fastconv, f"{name}_backward")(dy, x, *params, backend=backend))


def _on_threads(run, counts=(1, 2, 3)):
    """run() under each thread count; the results must be bit-identical. Tiny conv and dense
    passes run threaded too here (by default they take one thread below SERIAL_FLOPS)."""
    results = []
    for n in counts:
        with num_threads(n), pytest.MonkeyPatch.context() as mp:
            mp.setattr(cpp_util, "SERIAL_FLOPS", 0)
            results.append(run())
    for n, other in zip(counts[1:], results[1:]):
        for a, b in zip(results[0], other):
            assert_equal(b, a, f"{n} threads vs 1")
    return results[0]


# --------------------------------------------------------------------------------------------
# threaded paths against the reference, and independent of the thread count
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, params", ACT_PARAMS)
def test_activation_threaded_matches_reference(name, params, dtype, rng):
    x, dy = (4 * randn(rng, (BIG,), dtype)).astype(dtype), randn(rng, (BIG,), dtype)
    got = _on_threads(lambda: _activation(name, params, x, dy, "cpp"))
    for g, w in zip(got, _activation(name, params, x, dy, "reference")):
        assert_close(g, w, name)


@pytest.mark.parametrize("log", [False, True], ids=["softmax", "log_softmax"])
@pytest.mark.parametrize("shape, dim", [((40, 3000), 1), ((3, 700, 90), 1), ((6, 5, 600), 0), ((2, 300, 257), 2)],
                         ids=str)
def test_softmax_threaded_matches_reference(shape, dim, log, dtype, rng):
    """Rows (inner = 1) and column blocks of 256 (inner > 1, ragged last block) over threads."""
    fwd, bwd = (fastconv.log_softmax, fastconv.log_softmax_backward) if log else (fastconv.softmax,
                                                                                 fastconv.softmax_backward)
    x, dy = (3 * randn(rng, shape, dtype)).astype(dtype), randn(rng, shape, dtype)

    def run():
        y = fwd(x, dim, backend="cpp")
        return y, bwd(dy, y, dim, backend="cpp")

    y, dx = _on_threads(run)
    assert_close(y, fwd(x, dim, backend="reference"))
    assert_close(dx, bwd(dy, y, dim, backend="reference"))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_losses_threaded_match_reference(reduction, dtype, rng):
    M, C = 3000, 40
    logits, probs = randn(rng, (M, C), dtype), rng.random((M, C)).astype(dtype)
    target = rng.integers(0, C, M)
    target[rng.random(M) < 0.2] = -100
    weight = rng.random(C).astype(dtype)
    x, t = randn(rng, (BIG,), dtype), randn(rng, (BIG,), dtype)
    dl_rows = np.asarray(randn(rng, (M,), dtype) if reduction == "none" else dtype(0.7))
    dl_x = np.asarray(randn(rng, (BIG,), dtype) if reduction == "none" else dtype(0.7))

    def run(backend):
        kw = dict(reduction=reduction, label_smoothing=0.1, backend=backend)
        return (fastconv.cross_entropy(logits, target, weight, **kw),
                fastconv.cross_entropy_backward(dl_rows, logits, target, weight, **kw),
                fastconv.cross_entropy(logits, probs, weight, **kw),
                fastconv.cross_entropy_backward(dl_rows, logits, probs, weight, **kw),
                fastconv.mse_loss(x, t, reduction, backend=backend),
                fastconv.mse_loss_backward(dl_x, x, t, reduction, backend=backend))

    for g, w in zip(_on_threads(lambda: run("cpp")), run("reference")):
        assert_close(g, w, scale=4)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("shape", [(8, 6, 40, 50), (4096, 24)], ids=str)
def test_batch_norm_threaded_matches_reference(shape, training, dtype, rng):
    x, dy = (randn(rng, shape, dtype) + 3).astype(dtype), randn(rng, shape, dtype)
    C = shape[1]
    w, b, rm = randn(rng, (C,), dtype), randn(rng, (C,), dtype), randn(rng, (C,), dtype)
    rv = (rng.random(C) + 0.5).astype(dtype)

    def run(backend):
        r = fastconv.batch_norm(x, rm, rv, w, b, training, backend=backend)
        return (*r, *fastconv.batch_norm_backward(dy, x, w, mean=r.mean, invstd=r.invstd, training=training,
                                                  backend=backend))

    for g, want in zip(_on_threads(lambda: run("cpp")), run("reference")):
        assert_close(g, want, scale=4)


# --------------------------------------------------------------------------------------------
# dropout's counter-based masks
# --------------------------------------------------------------------------------------------

def test_dropout_mask_identical_for_any_thread_count(dtype, rng):
    x, dy = randn(rng, (5, BIG // 5), dtype), randn(rng, (5, BIG // 5), dtype)

    def run():
        y, mask = fastconv.dropout(x, 0.3, seed=1234, backend="cpp")
        return y, mask, fastconv.dropout_backward(dy, mask=mask, p=0.3, backend="cpp")

    _on_threads(run, counts=(1, 2, 3, 7))


def test_dropout_mask_is_a_function_of_seed_and_index():
    """Element k's draw depends on (seed, k) only: a shorter array gets the prefix of a longer one's
    mask, whatever its shape and dtype; other seeds give other masks."""
    long = fastconv.dropout(np.ones(BIG, np.float32), 0.5, seed=77, backend="cpp").mask
    short = fastconv.dropout(np.ones((7, 11)), 0.5, seed=77, backend="cpp").mask
    assert_equal(short.reshape(-1), long[:77])
    other = fastconv.dropout(np.ones(BIG, np.float32), 0.5, seed=78, backend="cpp").mask
    assert 0.45 < (other == long).mean() < 0.55  # independent draws agree half the time
    big_seed = fastconv.dropout(np.ones(BIG, np.float32), 0.5, seed=2**64 - 1, backend="cpp").mask
    assert 0.45 < big_seed.mean() < 0.55


def test_dropout_keep_rule_at_the_ends():
    x = np.ones(BIG, np.float32)
    assert fastconv.dropout(x, 0.0, seed=1, backend="cpp").mask.all()
    y, mask = fastconv.dropout(x, 1.0, seed=1, backend="cpp")
    assert not mask.any() and not y.any()
    tiny = fastconv.dropout(x, 1e-300, seed=1, backend="cpp").mask  # u >= p: only u = 0 drops
    assert tiny.mean() > 1 - 1e-4


# --------------------------------------------------------------------------------------------
# the float32 polynomial exp / erf / tanh over their whole range
# --------------------------------------------------------------------------------------------

def _sweep():
    """Every magnitude float32 can feed exp: subnormal results, overflow, the Cody-Waite seams."""
    x = np.concatenate([np.linspace(-110, 95, 400_001), np.linspace(-1, 1, 100_001), [0.0, -0.0, 88.72, 88.73]])
    return x.astype(np.float32)


@pytest.mark.parametrize("name", ["sigmoid", "tanh", "gelu", "silu", "softplus"])
def test_float32_math_accurate_over_the_whole_range(name):
    x = _sweep()
    got = getattr(fastconv, name)(x, backend="cpp").astype(np.float64)
    want = getattr(fastconv, name)(x.astype(np.float64), backend="reference")
    # erf's absolute error 1.5e-7 is scaled by 0.5 |x| in gelu: at most ~1e-6 where it matters
    with np.errstate(invalid="ignore"):
        err = np.abs(got - want) / (1e-6 + 2e-6 * np.abs(want))
    assert np.nanmax(err) < 1, (name, float(np.nanmax(err)), x[np.nanargmax(err)])
    assert_equal(np.isnan(got), np.isnan(want))


def test_float32_softmax_exp_near_overflow_and_underflow():
    """exp's argument reaches -103 (subnormal results) and its range reduction's largest n."""
    x = np.array([[0.0, -87.0, -95.0, -103.0, -104.5], [88.0, 0.0, 1.0, -1.0, 88.5]], np.float32)
    assert_close(fastconv.softmax(x, 1, backend="cpp"), fastconv.softmax(x.astype(np.float64), 1).astype(np.float32))
    assert_close(fastconv.log_softmax(x, 1, backend="cpp"),
                 fastconv.log_softmax(x.astype(np.float64), 1).astype(np.float32))


# --------------------------------------------------------------------------------------------
# concurrency and the binding's checks
# --------------------------------------------------------------------------------------------

def test_concurrent_calls_from_python_threads(rng):
    x = randn(rng, (3, 40_000), np.float64)
    want = [fastconv.gelu(x), fastconv.softmax(x, 1), fastconv.dropout(x, 0.5, seed=9, backend="cpp").y]
    errors = []

    def work():
        try:
            for _ in range(5):
                got = [fastconv.gelu(x, backend="cpp"), fastconv.softmax(x, 1, backend="cpp"),
                       fastconv.dropout(x, 0.5, seed=9, backend="cpp").y]
                for g, w in zip(got, want):
                    assert_close(g, w)
        except Exception as exc:  # reported below, from the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]


def test_binding_rejects_what_it_cannot_index():
    x = np.ones(6, np.float32)
    with pytest.raises(TypeError, match="activation_forward: y has dtype float64"):
        _cpp.activation_forward(_cpp.Activation.relu, x, np.empty(6), 0.0, 0.0, 1)
    with pytest.raises(TypeError, match="float32 or float64"):
        _cpp.activation_forward(_cpp.Activation.relu, x.astype(np.int32), np.empty(6, np.int32), 0.0, 0.0, 1)
    with pytest.raises(ValueError, match="C-contiguous"):
        _cpp.softmax_forward(False, np.ones((3, 4), np.float32).T, np.empty((4, 3), np.float32), 1, 1)
    with pytest.raises(ValueError, match="axis 2 out of range"):
        _cpp.softmax_forward(False, np.ones((3, 4)), np.empty((3, 4)), 2, 1)
    with pytest.raises(ValueError, match="unknown reduction 'avg'"):
        _cpp.mse_loss_forward(x, x, "avg", np.empty((), np.float32), 1)
    with pytest.raises(ValueError, match="loss has 6 elements, expected 1"):
        _cpp.mse_loss_forward(x, x, "sum", np.empty(6, np.float32), 1)
    with pytest.raises(TypeError, match="mask has dtype float32, expected bool"):
        _cpp.dropout_backward(x, x, 0.5, np.empty(6, np.float32), 1)
    with pytest.raises(ValueError, match="must be 3-d"):
        _cpp.batch_norm_stats(np.ones((2, 3)), np.empty(3), np.empty(3), 1)
    y = np.empty(6, np.float32)
    y.setflags(write=False)
    with pytest.raises(ValueError, match="writable"):
        _cpp.activation_forward(_cpp.Activation.relu, x, y, 0.0, 0.0, 1)
    with pytest.raises(ValueError, match="nthreads"):
        _cpp.activation_forward(_cpp.Activation.relu, x, np.empty(6, np.float32), 0.0, 0.0, 0)


# --------------------------------------------------------------------------------------------
# the batched transpose (NCHW <-> NHWC for fastconv.torch's channels_last tensors)
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(2, 3, 5), (1, 8, 8), (3, 16, 1024), (2, 144, 1024), (1, 1000, 3), (2, 67, 129),
                                   (0, 4, 4), (3, 0, 7), (1, 1, 1)], ids=str)
def test_transpose_batched_is_every_matrix_transposed(shape, dtype, rng):
    """dst[n] = src[n].T exactly: whole tiles of a vector's lanes (8 fp32, 4 fp64) and 64 x 64
    blocks, ragged rows and columns past them, one matrix and several, empty ones; the same on 1,
    2 and 3 threads (a copy), src untouched."""
    src = rng.standard_normal(shape).astype(dtype)
    before = src.copy()
    for nthreads in (1, 2, 3):
        dst = np.full((shape[0], shape[2], shape[1]), np.nan, dtype)
        _cpp.transpose_batched(src, dst, nthreads)
        assert_equal(dst, src.transpose(0, 2, 1), f"{shape} on {nthreads} threads")
    assert_equal(src, before, "src")


def test_transpose_batched_checks_its_arrays():
    src = np.zeros((2, 3, 4), np.float32)
    with pytest.raises(ValueError, match=r"transpose_batched: dst must have shape \(2, 4, 3\), the transposes of src's"):
        _cpp.transpose_batched(src, np.zeros((2, 3, 4), np.float32), 1)
    with pytest.raises(ValueError, match="transpose_batched: src and dst must be 3-d"):
        _cpp.transpose_batched(src.reshape(6, 4), np.zeros((4, 6), np.float32), 1)
    with pytest.raises(TypeError, match="transpose_batched: dst has dtype float64, expected float32"):
        _cpp.transpose_batched(src, np.zeros((2, 4, 3)), 1)
    with pytest.raises(ValueError, match="transpose_batched: dst must be C-contiguous"):
        _cpp.transpose_batched(src, np.zeros((2, 3, 4), np.float32).transpose(0, 2, 1), 1)
    with pytest.raises(ValueError, match="transpose_batched: dst must not be src"):
        square = np.zeros((2, 3, 3), np.float32)
        _cpp.transpose_batched(square, square, 1)
    with pytest.raises(TypeError, match="transpose_batched: expected float32 or float64 arrays, got int32"):
        _cpp.transpose_batched(src.astype(np.int32), np.zeros((2, 4, 3), np.int32), 1)
