"""Batch norm + hardtanh fused (``fastconv.batch_norm(..., hardtanh=)``, ``fastconv.torch.fused``,
``patch()``'s fusion): the reference against PyTorch's F.hardtanh(F.batch_norm(...)) (values at
the clamp's bounds included), every backend against the reference (exact on small integers, the
masked positions exactly the forward's), thread counts, bad input; the torch op (opcheck,
torch.compile) and the fused modules ``patch()`` makes against the unpatched model."""

import copy

import numpy as np
import pytest

import fastconv
from fastconv._threads import num_threads
from support import assert_close, assert_equal, assert_fresh_output, assert_unchanged, randn, require, small_ints, snapshot

torch = pytest.importorskip("torch")
F = torch.nn.functional
nn = torch.nn

import fastconv.torch as ft  # noqa: E402
from fastconv.torch.fused import BatchNorm2dHardtanh, FusedHardtanh, FusedReLU6  # noqa: E402

FUNCS = ("batch_norm_stats", "batch_norm_forward_hardtanh", "batch_norm_backward_reduce_hardtanh",
         "batch_norm_backward_input_hardtanh")
NAMES = ("y", "mean", "invstd", "running_mean", "running_var", "dx", "dweight", "dbias")
# odd sizes, H != W, batch 1, 1x1 images, and planes longer than the C++ kernels' 512-value chunks
SHAPES = [pytest.param(s, id="x".join(map(str, s))) for s in
          [(2, 3, 5, 7), (1, 4, 3, 1), (5, 2, 1, 1), (3, 5), (2, 3, 33, 40)]]
RELU6 = (0.0, 6.0)


@pytest.fixture
def fused_backend(backend):
    return require(backend, "norm", *FUNCS)


def _run(x, weight, bias, rm, rv, dy, training, hardtanh, backend, eps=1e-5):
    r = fastconv.batch_norm(x, rm, rv, weight, bias, training, 0.1, eps, hardtanh=hardtanh, backend=backend)
    grads = fastconv.batch_norm_backward(dy, x, weight, mean=r.mean, invstd=r.invstd, training=training,
                                         bias=bias, hardtanh=hardtanh, backend=backend)
    return (*r, *grads)


def _torch_run(x, weight, bias, rm, rv, dy, training, hardtanh, eps=1e-5):
    """PyTorch's unfused batch norm then hardtanh, the same outputs as :func:`_run`."""
    xt, wt, bt = (torch.tensor(a, requires_grad=True) for a in (x, weight, bias))
    rmt, rvt = torch.tensor(rm), torch.tensor(rv)
    y = F.hardtanh(F.batch_norm(xt, rmt, rvt, wt, bt, training, 0.1, eps), *hardtanh)
    y.backward(torch.tensor(dy))
    return y.detach().numpy(), rmt.numpy(), rvt.numpy(), xt.grad.numpy(), wt.grad.numpy(), bt.grad.numpy()


def _balanced_signs(rng, shape, dtype):
    """±1 with as many of each per channel: mean 0 and biased variance 1 exactly."""
    C = shape[1]
    per_channel = np.moveaxis(np.empty(shape, dtype), 1, 0).reshape(C, -1)
    half = per_channel.shape[1] // 2
    for c in range(C):
        per_channel[c] = rng.permutation(np.r_[np.ones(half), -np.ones(half)])
    return np.ascontiguousarray(np.moveaxis(per_channel.reshape(C, shape[0], *shape[2:]), 0, 1))


# --------------------------------------------------------------------------------------------
# the reference against PyTorch
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_reference_matches_torch_at_the_bounds(dtype, training, rng):
    """z exactly at the bounds (0 and 6: the gradient is zero there, as hardtanh_backward makes
    it), inside them and outside, per channel; then random data with Hardtanh(-1, 2)."""
    shape = (4, 4, 3, 2)
    # x = ±1.5: variance 2.25, and with eps 1.75 (PyTorch wants eps > 0 in training) invstd is
    # 1/2 exactly, so xhat = ±0.75 and z = ±0.75 * weight + bias is exact
    x = _balanced_signs(rng, shape, dtype) * dtype(1.5)
    # per channel z in {0, 6} (both bounds), {1.5, 4.5} (inside), {-3, 9} (outside), {-3, 3}
    weight, bias = np.array([4, 2, 8, 4], dtype), np.array([3, 3, 3, 0], dtype)
    rm, rv = np.zeros(4, dtype), np.full(4, 2.25, dtype)
    dy = randn(rng, shape, dtype)
    got = _run(x, weight, bias, rm, rv, dy, training, RELU6, "reference", eps=1.75)
    want = _torch_run(x, weight, bias, rm, rv, dy, training, RELU6, eps=1.75)
    for name, g, w in zip(("y", "running_mean", "running_var", "dx", "dweight", "dbias"),
                          (got[0], got[3], got[4], *got[5:]), want):
        assert_close(g, w, name)
    assert (got[0][:, 0] % 6 == 0).all() and (got[6][0] == 0 and got[7][0] == 0)  # channel 0: all at a bound

    x, dy = randn(rng, shape, dtype) * 2, randn(rng, shape, dtype)
    weight, bias, rm = randn(rng, (4,), dtype), randn(rng, (4,), dtype), randn(rng, (4,), dtype)
    rv = np.abs(randn(rng, (4,), dtype)) + 1
    got = _run(x, weight, bias, rm, rv, dy, training, (-1.0, 2.0), "reference")
    want = _torch_run(x, weight, bias, rm, rv, dy, training, (-1.0, 2.0))
    for name, g, w in zip(("y", "running_mean", "running_var", "dx", "dweight", "dbias"),
                          (got[0], got[3], got[4], *got[5:]), want):
        assert_close(g, w, name, scale=4)


def test_reference_nan_and_inf_as_torch():
    """NaN stays NaN and passes the gradient (no comparison holds in hardtanh_backward); ±inf
    clamp to the bounds and stop it."""
    x = np.array([[[np.nan, np.inf, -np.inf, 3.0]]], np.float32)
    ones = np.ones(1, np.float32)
    dy = np.full_like(x, 2.0)
    got = _run(x, ones, ones * 0, ones * 0, ones, dy, False, RELU6, "reference", eps=0.0)
    want = _torch_run(x, ones, ones * 0, ones * 0, ones, dy, False, RELU6, eps=0.0)
    assert_equal(got[0], want[0])
    assert_equal(got[5], want[3])


# --------------------------------------------------------------------------------------------
# every backend against the reference
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", SHAPES)
def test_backend_exact_on_small_integers(shape, fused_backend, rng):
    """Inference with unit running variance and eps 0: every value is a small integer, many of
    them exactly at ReLU6's bounds, so results are equal to the reference's, bit for bit."""
    for dtype in (np.float32, np.float64):
        x, dy = small_ints(rng, shape, dtype, -4, 8), small_ints(rng, shape, dtype)
        C = shape[1]
        weight, bias, rm = small_ints(rng, (C,), dtype), small_ints(rng, (C,), dtype), small_ints(rng, (C,), dtype)
        rv = np.ones(C, dtype)
        inputs = snapshot(x, weight, bias, rm, rv, dy)
        got = _run(x, weight, bias, rm, rv, dy, False, RELU6, fused_backend, eps=0.0)
        assert_unchanged((x, weight, bias, rm, rv, dy), inputs)
        for name, g, r in zip(NAMES, got, _run(x, weight, bias, rm, rv, dy, False, RELU6, "reference", eps=0.0)):
            assert_equal(g, r, f"{name} on {fused_backend}")
            assert_fresh_output(g, dtype, x, weight, bias, rm, rv, dy)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("shape", SHAPES)
def test_backend_close_on_random_data(shape, training, fused_backend, rng):
    for dtype in (np.float32, np.float64):
        x, dy = randn(rng, shape, dtype) * 3, randn(rng, shape, dtype)
        C = shape[1]
        weight, bias, rm = randn(rng, (C,), dtype), randn(rng, (C,), dtype) + 1, randn(rng, (C,), dtype)
        rv = np.abs(randn(rng, (C,), dtype)) + 1
        for weight_, bias_ in ((weight, bias), (None, None)):
            got = _run(x, weight_, bias_, rm, rv, dy, training, RELU6, fused_backend)
            want = _run(x, weight_, bias_, rm, rv, dy, training, RELU6, "reference")
            for name, g, r in zip(NAMES, got, want):
                if r is None:
                    assert g is None, name
                else:
                    assert_close(g, r, f"{name} on {fused_backend}", scale=4)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_backend_mask_is_the_forwards(training, fused_backend, rng):
    """The backward recomputes the value before the clamp: its mask must be exactly where the
    forward's y sits at a bound (weight nonzero, dy = 1: dx is zero exactly there in eval; the
    sums count exactly the passing values in training)."""
    shape = (3, 4, 17, 35)
    x = randn(rng, shape, np.float32) * 4
    weight = np.array([1.5, -2.0, 0.75, 3.0], np.float32)
    bias, rm, rv = randn(rng, (4,), np.float32), randn(rng, (4,), np.float32), np.abs(randn(rng, (4,), np.float32)) + 1
    dy = np.ones(shape, np.float32)
    y, mean, invstd, *_, dx, dweight, dbias = _run(x, weight, bias, rm, rv, dy, training, RELU6, fused_backend)
    flat = (y <= 0) | (y >= 6)
    assert flat.any() and not flat.all()
    if training:
        assert_equal(dbias, (~flat).sum(axis=(0, 2, 3)).astype(np.float32))
    else:
        assert_equal(dx == 0, flat)


def test_cpp_bit_identical_across_thread_counts(rng):
    require("cpp", "norm", *FUNCS)
    shape = (3, 5, 19, 41)
    x, dy = randn(rng, shape, np.float32) * 3, randn(rng, shape, np.float32)
    weight, bias, rm, rv = randn(rng, (5,), np.float32), randn(rng, (5,), np.float32), randn(rng, (5,), np.float32), \
        np.abs(randn(rng, (5,), np.float32)) + 1
    for training in (True, False):
        runs = []
        for n in (1, 2, 3):
            with num_threads(n):
                runs.append(_run(x, weight, bias, rm, rv, dy, training, RELU6, "cpp"))
        for other in runs[1:]:
            for name, a, b in zip(NAMES, runs[0], other):
                assert_equal(b, a, name)


def test_cpp_kernels_refuse_bad_arrays():
    from fastconv import _cpp

    x = np.zeros((2, 3, 4), np.float32)
    v = np.zeros(3, np.float32)
    with pytest.raises(ValueError, match="batch_norm_forward_hardtanh"):
        _cpp.batch_norm_forward_hardtanh(x, v, np.zeros(2, np.float32), v, v, 0.0, 6.0, np.empty_like(x), 1)
    with pytest.raises(TypeError):
        _cpp.batch_norm_forward_hardtanh(x.astype(np.int32), v, v, v, v, 0.0, 6.0, np.empty_like(x), 1)
    with pytest.raises(ValueError, match="training needs sum_dy"):
        _cpp.batch_norm_backward_input_hardtanh(x, x, v, v, v, v, 0.0, 6.0, None, None, True, np.empty_like(x), 1)


def test_cpp_float32_statistics_in_one_pass(rng):
    """The C++ float32 statistics take one pass (sums shifted by the channel's first value): as
    accurate as float64's mean and variance where the mean is 10^4 standard deviations, exact
    for a constant channel, inf and NaN where the two-pass reference puts them (a non-finite first
    value included), bit-identical for 1, 2 and 3 threads."""
    from fastconv import _cpp

    x = randn(rng, (6, 5, 300), np.float32)
    x[:, 0] = x[:, 0] * np.float32(0.01) + np.float32(100.0)  # mean 10^4 standard deviations
    x[:, 1] = -3.5  # constant
    x[0, 2, 0], x[3, 3, 7], x[2, 4, 0], x[2, 4, 1] = np.inf, np.nan, -np.inf, np.inf
    results = []
    for n in (1, 2, 3):
        mean, var = np.empty(5, np.float32), np.empty(5, np.float32)
        _cpp.batch_norm_stats(x, mean, var, n)
        results.append((mean, var))
    for mean, var in results[1:]:
        assert_equal(mean, results[0][0]), assert_equal(var, results[0][1])
    mean, var = results[0]
    x64 = x[:, :2].astype(np.float64)
    assert_close(mean[:2], x64.mean(axis=(0, 2)).astype(np.float32), "mean")
    assert_close(var[:2], x64.var(axis=(0, 2)).astype(np.float32), "variance", scale=4)
    assert mean[1] == -3.5 and var[1] == 0
    from fastconv.backends.reference import norm as reference_norm

    with np.errstate(invalid="ignore"):  # inf - inf, on purpose
        ref_mean, ref_var = reference_norm.batch_norm_stats(x)
    assert_equal(mean[2:], ref_mean[2:]), assert_equal(var[2:], ref_var[2:])  # inf, NaN, NaN; NaN, NaN, NaN


@pytest.mark.parametrize("hardtanh, error, text", [
    ((6.0, 0.0), ValueError, r"min_val < max_val, got \(6.0, 0.0\)"),
    ((1.0, 1.0), ValueError, "min_val < max_val"),
    ((0.0,), TypeError, "pair"),
    ("relu6", TypeError, "pair"),
    ((0.0, "6"), TypeError, "max_val"),
    ((float("nan"), 6.0), ValueError, "nan"),
])
def test_bad_hardtanh_raises(hardtanh, error, text):
    x = np.zeros((2, 3, 4), np.float32)
    with pytest.raises(error, match=text):
        fastconv.batch_norm(x, training=True, hardtanh=hardtanh)
    with pytest.raises(error, match=text):
        fastconv.batch_norm_backward(x, x, mean=np.zeros(3, np.float32), invstd=np.ones(3, np.float32), training=True,
                                     hardtanh=hardtanh)


# --------------------------------------------------------------------------------------------
# the torch op and the fused modules
# --------------------------------------------------------------------------------------------

def test_opcheck_forward_and_backward():
    from torch.library import opcheck

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 4, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    w, b = (torch.randn(3, generator=gen, dtype=torch.float64, requires_grad=True) for _ in range(2))
    rm, rv = torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)
    for training in (True, False):
        args = (x, w, b, rm, rv, training, 0.1, 1e-5, 0.0, 6.0, "auto")
        result = opcheck(torch.ops.fastconv.batch_norm_hardtanh.default, args)
        assert set(result.values()) == {"SUCCESS"}, result
        y, mean, invstd, _, _ = torch.ops.fastconv.batch_norm_hardtanh(*args)
        dy = torch.randn(2, 3, 4, 5, generator=gen, dtype=torch.float64)
        args = (dy, x.detach(), w.detach(), b.detach(), mean.detach(), invstd.detach(), training, 0.0, 6.0, [True, True, True], "auto")
        result = opcheck(torch.ops.fastconv.batch_norm_hardtanh_backward.default, args)
        assert set(result.values()) == {"SUCCESS"}, result


def _block(momentum=0.1):
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1, bias=False), nn.BatchNorm2d(6, momentum=momentum),
                         nn.ReLU6(inplace=True), nn.Conv2d(6, 4, 1), nn.BatchNorm2d(4), nn.Hardtanh(-0.5, 0.5))


@pytest.mark.parametrize("momentum", [0.1, None], ids=["momentum", "cumulative"])
def test_patch_fuses_and_matches_the_unpatched_model(momentum, rng):
    """Two training steps (SGD) and an eval pass: outputs, gradients, running statistics and
    num_batches_tracked as the unpatched model's; the same state_dict keys; unpatch restores."""
    torch.manual_seed(int(rng.integers(1 << 31)))
    model = _block(momentum).double()
    patched = copy.deepcopy(model)
    report = ft.patch(patched)
    assert report.fused == [("1", "2"), ("4", "5")]
    assert type(patched[1]) is BatchNorm2dHardtanh and type(patched[2]) is FusedReLU6
    assert type(patched[5]) is FusedHardtanh and isinstance(patched[2], nn.ReLU6)
    assert list(patched.state_dict()) == list(model.state_dict())
    opts = [torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9) for m in (model, patched)]
    for _ in range(2):
        x = torch.randn(4, 3, 7, 5, dtype=torch.float64) * 2
        for m, opt in zip((model, patched), opts):
            opt.zero_grad()
            m(x).sin().sum().backward()
        for (name, p), q in zip(model.named_parameters(), patched.parameters()):
            torch.testing.assert_close(q.grad, p.grad, msg=name)
        for opt in opts:
            opt.step()
    for (name, b), c in zip(model.named_buffers(), patched.buffers()):
        torch.testing.assert_close(c, b, msg=name)
    model.eval(), patched.eval()
    x = torch.randn(2, 3, 7, 5, dtype=torch.float64, requires_grad=True)
    x2 = x.detach().clone().requires_grad_()
    torch.testing.assert_close(patched(x2), model(x))
    model(x).sum().backward(), patched(x2).sum().backward()
    torch.testing.assert_close(x2.grad, x.grad)
    assert ft.unpatch(patched) == 6
    assert [type(m) for m in patched] == [type(m) for m in model]
    assert not hasattr(patched[1], "min_val") and patched[5].min_val == -0.5


def test_patch_leaves_what_it_cannot_fuse():
    """Hooks, a Sequential subclass, a shared batch norm, ReLU (not a hardtanh) and fuse=False
    stay unfused (the batch norm still swapped)."""
    hooked = _block()
    hooked[2].register_forward_hook(lambda *a: None)

    class MySequential(nn.Sequential):
        pass

    sub = MySequential(nn.BatchNorm2d(3), nn.ReLU6())
    bn = nn.BatchNorm2d(3)
    shared = nn.Sequential(nn.Sequential(bn, nn.ReLU6()), bn)
    relu = nn.Sequential(nn.BatchNorm2d(3), nn.ReLU())
    for model, kwargs, fused in ((hooked, {}, [("4", "5")]), (sub, {}, []), (shared, {}, []), (relu, {}, []),
                                 (_block(), {"fuse": False}, [])):
        report = ft.patch(model, **kwargs)
        assert report.fused == fused
        assert not any(type(m) in (FusedReLU6, FusedHardtanh) for m in model.modules()) or fused


def test_fused_module_channels_last_runs_unfused_with_its_format():
    model = nn.Sequential(nn.BatchNorm2d(3), nn.ReLU6())
    patched = copy.deepcopy(model)
    ft.patch(patched)
    x = (torch.randn(2, 3, 4, 5) * 4).to(memory_format=torch.channels_last)
    y = patched(x)
    assert y.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(y, model(x))


@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated")  # inside inductor
def test_torch_compile_fullgraph(rng):
    torch.manual_seed(int(rng.integers(1 << 31)))
    model = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4), nn.ReLU6())
    ft.patch(model)
    eager = copy.deepcopy(model)
    x = torch.randn(4, 3, 8, 8)
    y_eager = eager(x)
    y_eager.square().sum().backward()
    compiled = torch.compile(model, fullgraph=True, backend="inductor")
    y = compiled(x)
    y.square().sum().backward()
    torch.testing.assert_close(y, y_eager)
    for p, q in zip(model.parameters(), eager.parameters()):
        torch.testing.assert_close(p.grad, q.grad)
    for b, c in zip(model.buffers(), eager.buffers()):
        torch.testing.assert_close(b, c)
