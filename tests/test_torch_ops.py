"""fastconv.torch custom ops: opcheck, gradcheck, agreement with torch.nn.functional, errors, and
tensor exchange (zero-copy, explicit contiguity, CUDA routing)."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from torch.library import opcheck

import fastconv
import fastconv.torch as ft
from fastconv.torch import exchange

F = torch.nn.functional
DTYPES = [pytest.param(torch.float32, id="f32"), pytest.param(torch.float64, id="f64")]


@pytest.fixture
def gen():
    """A torch generator with a fresh seed per test, printed so a failure can be replayed."""
    seed = int(np.random.SeedSequence().generate_state(1)[0])
    print(f"torch seed: {seed}")
    return torch.Generator().manual_seed(seed)


def randn(gen, *shape, dtype=torch.float64, requires_grad=False):
    return torch.randn(*shape, generator=gen, dtype=dtype).requires_grad_(requires_grad)


# --------------------------------------------------------------------------------------------
# the problem list: each case makes the op's inputs and the matching torch.nn.functional call
# --------------------------------------------------------------------------------------------

# conv2d: (x shape, w shape, has bias, stride, padding per side (t, b, l, r), dilation, groups)
CONV_CASES = {
    "stride21_pad12_dil12": ((2, 3, 7, 9), (4, 3, 3, 2), True, (2, 1), (1, 1, 2, 2), (1, 2), 1),
    "groups2_nobias_asym_pad": ((1, 4, 6, 5), (6, 2, 2, 3), False, (1, 2), (0, 1, 2, 0), (2, 1), 2),
    "depthwise_1x1_out": ((3, 3, 4, 5), (3, 1, 4, 5), True, (3, 2), (0, 0, 0, 0), (1, 1), 3),
}
# pools: (x shape, kernel, stride, padding, dilation, ceil_mode)
MAX_CASES = {
    "k32_s21_p11_d12_ceil": ((2, 3, 7, 9), (3, 2), (2, 1), (1, 1), (1, 2), True),
    "k2_default": ((1, 2, 5, 4), (2, 2), (2, 2), (0, 0), (1, 1), False),
}
# avg: (x shape, kernel, stride, padding, ceil_mode, count_include_pad, divisor_override)
AVG_CASES = {
    "k32_s21_p10_ceil_nopad": ((2, 3, 7, 9), (3, 2), (2, 1), (1, 0), True, False, None),
    "k2_divisor3": ((1, 2, 5, 4), (2, 3), (1, 2), (1, 1), False, True, 3),
}
ADAPTIVE_CASES = {"3x4_from_7x9": ((2, 3, 7, 9), (3, 4)), "global": ((2, 5, 4, 3), (1, 1))}
# linear: (x shape, w shape, has bias)
LINEAR_CASES = {"3d_bias": ((2, 5, 6), (4, 6), True), "2d_nobias": ((3, 7), (2, 7), False)}
# conv1d: (x shape, w shape, has bias, stride, padding per side (left, right), dilation, groups)
CONV1D_CASES = {
    "stride2_pad12_dil2_groups2": ((2, 4, 7), (6, 2, 3), True, 2, (1, 2), 2, 2),
    "k1_nobias_batch1": ((1, 3, 5), (2, 3, 1), False, 1, (0, 0), 1, 1),
}
# conv_transpose2d: (x shape, w shape (C_in, C_out/groups, KH, KW), has bias, stride, padding,
# output_padding, groups, dilation)
CONVT_CASES = {
    "s32_p10_op21_g2_d12": ((2, 4, 3, 2), (4, 3, 3, 2), True, (3, 2), (1, 0), (2, 1), 2, (1, 2)),
    "nobias_d21_op01": ((1, 3, 3, 5), (3, 2, 2, 3), False, (1, 2), (0, 1), (0, 1), 1, (2, 1)),
}
# batch_norm: (x shape, affine ("wb": weight and bias, "w": weight only, "": none), running
# statistics given, training, momentum, eps)
BN_CASES = {
    "train_affine_stats": ((3, 4, 5, 2), "wb", True, True, 0.3, 1e-5),
    "train_bare": ((4, 3, 2, 3), "", False, True, 0.1, 1e-3),
    "train_weight_only_2d": ((6, 3), "w", True, True, 0.5, 1e-5),
    "eval_affine": ((2, 3, 4, 5), "wb", True, False, 0.1, 1e-2),
    "train_6d": ((2, 3, 2, 1, 2, 2), "wb", True, True, 0.2, 1e-5),  # F.batch_norm takes any rank >= 2
}


def forward_args(op, case, gen, dtype, requires_grad):
    """The fastconv::<op> argument list for ``case``, tensors drawn fresh."""
    t = lambda *s: randn(gen, *s, dtype=dtype, requires_grad=requires_grad)
    if op == "conv2d":
        xs, ws, bias, stride, pad, dil, groups = CONV_CASES[case]
        return [t(*xs), t(*ws), t(ws[0]) if bias else None, list(stride), list(pad), list(dil), groups, "auto"]
    if op == "linear":
        xs, ws, bias = LINEAR_CASES[case]
        return [t(*xs), t(*ws), t(ws[0]) if bias else None, "auto"]
    if op == "max_pool2d":
        xs, k, s, p, d, ceil = MAX_CASES[case]
        return [t(*xs), list(k), list(s), list(p), list(d), ceil, "auto"]
    if op == "avg_pool2d":
        xs, k, s, p, ceil, cip, div = AVG_CASES[case]
        return [t(*xs), list(k), list(s), list(p), ceil, cip, div, "auto"]
    if op == "conv1d":
        xs, ws, bias, stride, pad, dil, groups = CONV1D_CASES[case]
        return [t(*xs), t(*ws), t(ws[0]) if bias else None, [stride], list(pad), [dil], groups, "auto"]
    if op == "conv_transpose2d":
        xs, ws, bias, stride, pad, out_pad, groups, dil = CONVT_CASES[case]
        return [t(*xs), t(*ws), t(ws[1] * groups) if bias else None, list(stride), list(pad), list(out_pad),
                groups, list(dil), "auto"]
    if op == "batch_norm":
        xs, affine, stats, training, momentum, eps = BN_CASES[case]
        C = xs[1]
        # running statistics are buffers: they never require grad
        running = [randn(gen, C, dtype=dtype), randn(gen, C, dtype=dtype).abs() + 0.5] if stats else [None, None]
        return [t(*xs), t(C) if "w" in affine else None, t(C) if "b" in affine else None, *running,
                training, momentum, eps, "auto"]
    xs, size = ADAPTIVE_CASES[case]
    return [t(*xs), list(size), "auto"]


def torch_reference(op, args):
    """torch.nn.functional's result for the fastconv::<op> arguments ``args``."""
    if op == "conv2d":
        x, w, b, stride, (t, bo, l, r), dil, groups, _ = args
        return F.conv2d(F.pad(x, (l, r, t, bo)), w, b, stride, 0, dil, groups)
    if op == "linear":
        return F.linear(*args[:3])
    if op == "max_pool2d":
        x, k, s, p, d, ceil, _ = args
        return F.max_pool2d(x, k, s, p, d, ceil, return_indices=True)
    if op == "avg_pool2d":
        x, k, s, p, ceil, cip, div, _ = args
        return F.avg_pool2d(x, k, s, p, ceil, cip, div)
    if op == "conv1d":
        x, w, b, (stride,), (left, right), (dil,), groups, _ = args
        return F.conv1d(F.pad(x, (left, right)), w, b, stride, 0, dil, groups)
    if op == "conv_transpose2d":
        return F.conv_transpose2d(*args[:-1])
    if op == "batch_norm":
        return batch_norm_reference(*args[:-1])
    return F.adaptive_avg_pool2d(args[0], args[1])


def batch_norm_reference(x, weight, bias, running_mean, running_var, training, momentum, eps):
    """What fastconv::batch_norm returns, from PyTorch: (y, mean, invstd, new running_mean, new
    running_var), the new statistics being F.batch_norm's in-place update (empty when not updated)."""
    new = [None if r is None else r.clone() for r in (running_mean, running_var)]
    y = F.batch_norm(x, *new, weight, bias, training, momentum, eps)
    if training:
        dims = [0, *range(2, x.dim())]
        mean, var = x.detach().mean(dims), x.detach().var(dims, unbiased=False)
    else:
        mean, var = running_mean, running_var
    new = [r if training and r is not None else x.new_empty(0) for r in new]
    return y, mean, 1 / (var + eps).sqrt(), *new


CASES = {"conv2d": CONV_CASES, "linear": LINEAR_CASES, "max_pool2d": MAX_CASES, "avg_pool2d": AVG_CASES,
         "adaptive_avg_pool2d": ADAPTIVE_CASES, "conv1d": CONV1D_CASES, "conv_transpose2d": CONVT_CASES,
         "batch_norm": BN_CASES}
OP_CASES = [pytest.param(op, case, id=f"{op}-{case}") for op, cases in CASES.items() for case in cases]
#: ops whose backward takes needs[3]: three gradients, any of them skipped
WITH_NEEDS = ("conv2d", "linear", "conv1d", "conv_transpose2d", "batch_norm")
DENSE_NEEDS = [[True, True, True], [True, False, True], [False, True, False]]


def backward_args(op, args, gen, needs=None):
    """The fastconv::<op>_backward argument list for forward arguments ``args``."""
    args = [a.detach() if isinstance(a, torch.Tensor) else a for a in args]
    out = torch_reference(op, args)
    y, indices = out[:2] if op in ("max_pool2d", "batch_norm") else (out, None)
    dy = randn(gen, *y.shape, dtype=y.dtype)
    x, rest = args[0], args[1:]
    if op == "batch_norm":
        _, mean, invstd, *_ = out
        return [dy, x, args[1], mean, invstd, *args[5:-1], needs, "auto"]
    if op in WITH_NEEDS:
        w, params = rest[0], rest[2:-1]  # drop b: the gradients do not depend on it
        return [dy, x, w, *params, needs, "auto"]
    if op == "max_pool2d":
        return [dy, x, indices, *rest]
    return [dy, x, *rest]


# --------------------------------------------------------------------------------------------
# opcheck: schema, autograd registration, fake tensors, aot dispatch with dynamic shapes
# --------------------------------------------------------------------------------------------

def assert_opcheck(op_name, args):
    result = opcheck(getattr(torch.ops.fastconv, op_name).default, tuple(args))
    assert result == {k: "SUCCESS" for k in result} and len(result) == 4, result


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op,case", OP_CASES)
def test_opcheck_forward(op, case, dtype, gen):
    assert_opcheck(op, forward_args(op, case, gen, dtype, requires_grad=True))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op,case", OP_CASES)
def test_opcheck_backward(op, case, dtype, gen):
    needs_list = DENSE_NEEDS if op in WITH_NEEDS else [None]
    for needs in needs_list:
        assert_opcheck(op + "_backward", backward_args(op, forward_args(op, case, gen, dtype, False), gen, needs))


def test_every_op_is_registered_and_checked():
    """The table, the registry and the test cases cover the same ops, forward and backward."""
    names = {spec.name for spec in ft.ops.SPECS}
    assert names == set(CASES)
    assert set(ft.OPS) == names | {n + "_backward" for n in names}
    for name in ft.OPS:
        assert hasattr(torch.ops.fastconv, name)


# --------------------------------------------------------------------------------------------
# results: equal to torch.nn.functional, forward and gradients
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op,case", OP_CASES)
def test_ops_match_torch_forward_and_gradients(op, case, dtype, gen):
    args = forward_args(op, case, gen, dtype, requires_grad=True)
    out = getattr(torch.ops.fastconv, op)(*args)
    ref = torch_reference(op, args)
    if op == "max_pool2d":
        (y, indices), (ref, ref_indices) = out, ref
        assert indices.dtype == torch.int64 and torch.equal(indices, ref_indices)
    elif op == "batch_norm":  # the batch statistics and the new running statistics too
        torch.testing.assert_close(out[1:], ref[1:])
        y, ref = out[0], ref[0]
    else:
        y = out
    assert y.dtype == dtype and y.is_contiguous()
    torch.testing.assert_close(y, ref)
    inputs = [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad]
    dy = randn(gen, *y.shape, dtype=dtype)
    torch.testing.assert_close(torch.autograd.grad(y, inputs, dy), torch.autograd.grad(ref, inputs, dy))


@pytest.mark.parametrize("op,case", OP_CASES)
def test_gradcheck_f64(op, case, gen):
    args = forward_args(op, case, gen, torch.float64, requires_grad=True)
    tensor_at = [i for i, a in enumerate(args) if isinstance(a, torch.Tensor) and a.requires_grad]

    def f(*tensors):
        call = list(args)
        for i, t in zip(tensor_at, tensors):
            call[i] = t
        out = getattr(torch.ops.fastconv, op)(*call)
        return out[0] if op in ("max_pool2d", "batch_norm") else out

    assert torch.autograd.gradcheck(f, tuple(args[i] for i in tensor_at))


@pytest.mark.parametrize("requires", [(True, False, False), (False, True, True), (False, False, True)],
                         ids=["dx", "dw_db", "db"])
def test_backward_computes_only_the_gradients_autograd_needs(requires, gen, monkeypatch):
    fastconv._dispatch.forget()  # no plan kept from earlier calls: this call reaches fastconv.conv2d_backward
    seen = []
    real = fastconv.conv2d_backward

    def spy(*args, needs, **kwargs):
        seen.append(needs)
        return real(*args, needs=needs, **kwargs)

    monkeypatch.setattr(fastconv, "conv2d_backward", spy)
    x, w, b = (randn(gen, *s, requires_grad=r) for s, r in zip([(2, 3, 6, 5), (4, 3, 3, 3), (4,)], requires))
    ft.conv2d(x, w, b, padding=1).sum().backward()
    assert seen == [requires]  # one backward call, asked for exactly what autograd needs
    for t, r in zip((x, w, b), requires):
        assert (t.grad is not None) == r
    xr, wr, br = (t.detach().requires_grad_(r) for t, r in zip((x, w, b), requires))
    F.conv2d(xr, wr, br, padding=1).sum().backward()
    for t, ref, r in zip((x, w, b), (xr, wr, br), requires):
        if r:
            torch.testing.assert_close(t.grad, ref.grad)


@pytest.mark.filterwarnings("ignore:Using padding='same'")  # torch's own call warns, not ours
@pytest.mark.parametrize("dtype", DTYPES)
def test_functional_wrappers_accept_torch_spellings(dtype, gen):
    x = randn(gen, 2, 4, 7, 6, dtype=dtype)
    w = randn(gen, 6, 2, 3, 2, dtype=dtype)
    checks = [
        (ft.conv2d(x, w, None, 1, "same", (2, 1), 2), F.conv2d(x, w, None, 1, "same", (2, 1), 2)),
        (ft.conv2d(x, w, None, 2, "valid", 1, 2), F.conv2d(x, w, None, 2, "valid", 1, 2)),
        (ft.conv2d(x[0], w, padding=(1, 2), groups=2), F.conv2d(x[0], w, padding=(1, 2), groups=2)),  # unbatched
        (ft.max_pool2d(x, 3, padding=1), F.max_pool2d(x, 3, padding=1)),
        (ft.max_pool2d(x[1], (2, 3), stride=[], ceil_mode=True), F.max_pool2d(x[1], (2, 3), ceil_mode=True)),
        (ft.avg_pool2d(x, 2, 1, 1, count_include_pad=False), F.avg_pool2d(x, 2, 1, 1, count_include_pad=False)),
        (ft.adaptive_avg_pool2d(x, (None, 4)), F.adaptive_avg_pool2d(x, (None, 4))),
        (ft.adaptive_avg_pool2d(x[0], 2), F.adaptive_avg_pool2d(x[0], 2)),
        (ft.linear(x, w[:, 0, 0, :].repeat(1, 3)), F.linear(x, w[:, 0, 0, :].repeat(1, 3))),
    ]
    for got, want in checks:
        assert got.shape == want.shape
        torch.testing.assert_close(got, want)
    _, indices = ft.max_pool2d(x, 2, return_indices=True)
    assert torch.equal(indices, F.max_pool2d(x, 2, return_indices=True)[1])


@pytest.mark.filterwarnings("ignore:Using padding='same'")  # torch's own call warns, not ours
def test_conv1d_conv_transpose_batch_norm_wrappers_accept_torch_spellings(gen):
    x1, w1 = randn(gen, 2, 4, 9), randn(gen, 6, 2, 4)
    x, wt, b = randn(gen, 2, 4, 5, 3), randn(gen, 4, 3, 3, 2), randn(gen, 6)
    checks = [
        (ft.conv1d(x1, w1, None, 1, "same", 2, 2), F.conv1d(x1, w1, None, 1, "same", 2, 2)),
        (ft.conv1d(x1, w1, b, (2,), (3,), (1,), 2), F.conv1d(x1, w1, b, (2,), (3,), (1,), 2)),
        (ft.conv1d(x1[0], w1, groups=2, padding="valid"), F.conv1d(x1[0], w1, groups=2, padding="valid")),
        (ft.conv_transpose2d(x, wt, b, 2, 1, 1, 2), F.conv_transpose2d(x, wt, b, 2, 1, 1, 2)),
        (ft.conv_transpose2d(x[1], wt, groups=2, dilation=(2, 1)),  # unbatched
         F.conv_transpose2d(x[1], wt, groups=2, dilation=(2, 1))),
    ]
    for got, want in checks:
        assert got.shape == want.shape
        torch.testing.assert_close(got, want)
    # batch norm updates the running statistics it is given, in place, in training only
    stats = [randn(gen, 4), randn(gen, 4).abs() + 0.5]
    ref_stats = [t.clone() for t in stats]
    for training in (True, False):
        y = ft.batch_norm(x, *stats, training=training, momentum=0.25, eps=1e-3)
        torch.testing.assert_close(y, F.batch_norm(x, *ref_stats, training=training, momentum=0.25, eps=1e-3))
        torch.testing.assert_close(stats, ref_stats)


@pytest.mark.parametrize("backend", ["reference", "cpp"])
def test_named_backend_reaches_fastconv(backend, gen, monkeypatch):
    if backend not in fastconv.available_backends():
        pytest.skip(fastconv.backend_status()[backend])
    fastconv._dispatch.forget()  # no plan kept from earlier calls: this call reaches fastconv.conv2d
    seen = []
    real = fastconv.conv2d
    monkeypatch.setattr(fastconv, "conv2d", lambda *a, backend, **k: seen.append(backend) or real(*a, backend=backend, **k))
    x, w = randn(gen, 1, 2, 5, 5), randn(gen, 3, 2, 3, 3)
    torch.testing.assert_close(ft.conv2d(x, w, backend=backend), F.conv2d(x, w))
    assert seen == [backend]


# --------------------------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.int64])
def test_other_dtypes_raise_type_error_naming_the_op(dtype):
    x = torch.ones(1, 2, 4, 4, dtype=dtype)
    with pytest.raises(TypeError, match=rf"fastconv::max_pool2d: expected x of dtype .*got {dtype}"):
        ft.max_pool2d(x, 2)
    with pytest.raises(TypeError, match=rf"fastconv::conv2d: expected w of dtype .*got {dtype}"):
        ft.conv2d(torch.ones(1, 2, 4, 4), torch.ones(3, 2, 2, 2, dtype=dtype))


def test_user_errors_name_the_op_and_values():
    x, w = torch.ones(1, 2, 4, 4), torch.ones(3, 2, 2, 2)
    with pytest.raises(ValueError, match="unknown backend 'fast'"):
        ft.conv2d(x, w, backend="fast")
    with pytest.raises(ValueError, match=r"fastconv.torch.conv2d: padding='same' needs stride 1"):
        ft.conv2d(x, w, stride=2, padding="same")
    with pytest.raises(ValueError, match=r"w has 2 input channels per group.*C_in=3"):
        ft.conv2d(torch.ones(1, 3, 4, 4), w)
    with pytest.raises(ValueError, match=r"fastconv.torch.max_pool2d: expected x with 3 .* or 4 .* got shape \(4, 4\)"):
        ft.max_pool2d(torch.ones(4, 4), 2)
    with pytest.raises(ValueError, match=r"fastconv::linear: x has 3 features in its last dim \(shape \(2, 3\)\), but w \(3, 2\) expects in_features=2"):
        ft.linear(torch.ones(2, 3, device="meta"), torch.ones(3, 2, device="meta"))  # the fake kernel's check
    with pytest.raises(ValueError, match=r"fastconv::conv2d: expected b of shape \(3,\), got \(2,\)"):
        ft.conv2d(x.to("meta"), w.to("meta"), torch.ones(2, device="meta"))
    with pytest.raises(ValueError, match=r"conv1d: expected weight with 3 dims \(C_out, C_in/groups, K\), got shape"):
        ft.conv1d(torch.ones(1, 2, 5), w)
    with pytest.raises(ValueError, match=r"conv_transpose2d: w has 3 input channels \(dim 0\), x has C_in=2"):
        ft.conv_transpose2d(x, w)
    with pytest.raises(ValueError, match=r"fastconv::conv_transpose2d: expected b of shape \(4,\), got \(3,\)"):
        ft.conv_transpose2d(x.to("meta"), torch.ones(2, 2, 3, 3, device="meta"), torch.ones(3, device="meta"),
                            groups=2)  # C_out = w.shape[1] * groups
    with pytest.raises(ValueError, match=r"batch_norm: expected more than 1 value per channel when training"):
        ft.batch_norm(torch.ones(1, 2), None, None, training=True)
    with pytest.raises(ValueError, match=r"fastconv::batch_norm: expected running_var of shape \(2,\), got \(3,\)"):
        ft.batch_norm(x.to("meta"), torch.ones(2, device="meta"), torch.ones(3, device="meta"))
    # the fake kernel applies the NumPy API's rules: an empty 1-d x has no channels, a 1-d x with
    # values is refused, and inference needs the running statistics
    meta = lambda *shape: torch.ones(*shape, device="meta")  # noqa: E731
    assert ft.batch_norm(meta(0), meta(0), meta(0), training=True).shape == (0,)
    with pytest.raises(ValueError, match=r"fastconv::batch_norm: expected x with 2 or more dims .* got shape \(5,\)"):
        ft.batch_norm(meta(5), meta(5), meta(5))
    with pytest.raises(ValueError, match=r"fastconv::batch_norm: running_mean and running_var are required"):
        ft.batch_norm(meta(2, 3), None, None)
    with pytest.raises(TypeError, match=r"fastconv.torch.batch_norm: expected momentum to be a number, got None"):
        ft.batch_norm(x, None, None, training=True, momentum=None)


# --------------------------------------------------------------------------------------------
# tensor exchange
# --------------------------------------------------------------------------------------------

def _spy_on(monkeypatch, name):
    """Record the arrays fastconv.<name> receives and the array it returns."""
    fastconv._dispatch.forget()  # no plan kept from earlier calls: this call reaches fastconv.<name>
    calls = []
    real = getattr(fastconv, name)

    def spy(*args, **kwargs):
        result = real(*args, **kwargs)
        calls.append((args, result))
        return result

    monkeypatch.setattr(fastconv, name, spy)
    return calls


def _address(a: np.ndarray) -> int:
    return a.__array_interface__["data"][0]


def test_contiguous_cpu_tensors_cross_without_copies(gen, monkeypatch):
    calls = _spy_on(monkeypatch, "conv2d")
    x, w, b = randn(gen, 2, 3, 6, 5), randn(gen, 4, 3, 3, 3), randn(gen, 4)
    y = ft.conv2d(x, w, b)
    (xa, wa, ba), ya = calls[0]
    # the kernel reads the tensors' own memory ...
    assert [_address(a) for a in (xa, wa, ba)] == [t.data_ptr() for t in (x, w, b)]
    # ... and the array it returns becomes the result tensor as is
    assert y.data_ptr() == _address(ya)
    assert np.shares_memory(xa, x.numpy()) and not np.shares_memory(ya, xa)


def test_non_contiguous_inputs_are_made_contiguous_explicitly(gen, monkeypatch):
    calls = _spy_on(monkeypatch, "max_pool2d")
    base = randn(gen, 2, 3, 5, 6)
    x = base.transpose(2, 3)  # (2, 3, 6, 5), a view: neither NCHW- nor channels_last-contiguous
    assert not x.is_contiguous() and not x.is_contiguous(memory_format=torch.channels_last)
    y = ft.max_pool2d(x, 2)
    (xa,), _ = calls[0]
    assert xa.flags.c_contiguous and _address(xa) != base.data_ptr()  # one explicit copy
    torch.testing.assert_close(y, F.max_pool2d(x, 2))
    assert y.is_contiguous()


# --------------------------------------------------------------------------------------------
# channels_last: results and gradients in PyTorch's memory format, one conversion each way
# --------------------------------------------------------------------------------------------

def layout(t):
    if t.dim() == 4 and not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last):
        return "channels_last"
    return "contiguous" if t.is_contiguous() else f"strides {t.stride()}"


def as_tuple(out):
    return out if isinstance(out, tuple) else (out,)


# (op, case, which 4-d inputs are channels_last): conv with x, with w only (PyTorch then gives a
# channels_last y too) and with both; every other 4-d op with x
CL_CASES = [("conv2d", "stride21_pad12_dil12", "x"), ("conv2d", "groups2_nobias_asym_pad", "w"),
            ("conv_transpose2d", "s32_p10_op21_g2_d12", "xw"), ("max_pool2d", "k32_s21_p11_d12_ceil", "x"),
            ("avg_pool2d", "k32_s21_p10_ceil_nopad", "x"), ("adaptive_avg_pool2d", "3x4_from_7x9", "x"),
            ("batch_norm", "train_affine_stats", "x"), ("batch_norm", "eval_affine", "x")]


@pytest.mark.parametrize("op,case,which", [pytest.param(*c, id="-".join(c)) for c in CL_CASES])
def test_channels_last_results_and_gradients_keep_torch_memory_format(op, case, which, gen):
    args = forward_args(op, case, gen, torch.float32, requires_grad=True)
    for i in {"x": [0], "w": [1], "xw": [0, 1]}[which]:
        args[i] = args[i].detach().to(memory_format=torch.channels_last).requires_grad_()
    out, ref = as_tuple(getattr(torch.ops.fastconv, op)(*args)), as_tuple(torch_reference(op, args))
    assert layout(out[0]) == "channels_last"
    for got, want in zip(out, ref):  # y, max pooling's indices, batch norm's statistics
        assert layout(got) == layout(want)
        torch.testing.assert_close(got, want)
    inputs = [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad]
    dy = randn(gen, *out[0].shape, dtype=torch.float32)  # NCHW: PyTorch's layout rule ignores dy's
    grads, ref_grads = torch.autograd.grad(out[0], inputs, dy), torch.autograd.grad(ref[0], inputs, dy)
    for got, want in zip(grads, ref_grads):
        assert layout(got) == layout(want)
        torch.testing.assert_close(got, want)
    # the fake kernels give the real ones' strides, so torch.compile plans the same layouts
    assert_opcheck(op, args)
    needs = [True, True, True] if op in WITH_NEEDS else None
    assert_opcheck(op + "_backward", backward_args(op, args, gen, needs))


def test_channels_last_costs_one_copy_in_and_one_out(gen, monkeypatch):
    calls = _spy_on(monkeypatch, "conv2d")
    x = randn(gen, 2, 3, 6, 5).to(memory_format=torch.channels_last)
    w = randn(gen, 4, 3, 3, 3)
    y = ft.conv2d(x, w, padding=1)
    (xa, wa, _), ya = calls[0]
    assert xa.flags.c_contiguous and _address(xa) != x.data_ptr()  # in: NHWC -> NCHW (the batched transpose)
    assert _address(wa) == w.data_ptr()  # an NCHW-contiguous w crosses as is
    assert layout(y) == "channels_last" and y.data_ptr() != _address(ya)  # out: NCHW -> NHWC


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(2, 19, 7, 9), (1, 3, 32, 32), (3, 144, 8, 8), (2, 1, 5, 5), (0, 4, 3, 3)], ids=str)
def test_memory_format_conversions_are_pytorchs(shape, dtype, gen):
    """The copies in and out of NCHW (exchange.contiguous_array, in_channels_last) give PyTorch's
    own contiguous() results, bit for bit, whichever way they are made (the batched transpose for
    channels_last float CPU tensors; PyTorch's copy for other layouts), and leave the input alone."""
    cl = randn(gen, *shape, dtype=dtype).to(memory_format=torch.channels_last).requires_grad_()
    before = cl.detach().clone()
    a = exchange.contiguous_array(cl)
    assert a.flags.c_contiguous and np.array_equal(a, cl.detach().contiguous().numpy())
    torch.testing.assert_close(cl.detach(), before, rtol=0, atol=0)
    y = randn(gen, *shape, dtype=dtype)
    got = exchange.in_channels_last(y)
    assert layout(got) == layout(y.contiguous(memory_format=torch.channels_last))
    assert got.data_ptr() != y.data_ptr() or y.numel() == 0  # a copy
    torch.testing.assert_close(got, y, rtol=0, atol=0)
    other = randn(gen, shape[0], shape[2], shape[1], shape[3], dtype=dtype).transpose(1, 2)  # neither layout
    assert np.array_equal(exchange.contiguous_array(other), other.contiguous().numpy())


def test_cuda_tensors_without_gpu_backend_raise_a_clear_error():
    if exchange.has_gpu_backend():
        pytest.skip("fastconv has a GPU backend: the CUDA route is tested by test_cuda_tensors_run_on_gpu_backend")

    class CudaStandIn:  # this machine has no CUDA: only the device matters to the check
        device = torch.device("cuda", 0)

    with pytest.raises(ft.GpuBackendMissing, match=r"fastconv::conv2d: got CUDA tensors, but fastconv's GPU backend "
                                                   r"cannot run here \(backend 'cupy' is not available: "):
        exchange.check_device("fastconv::conv2d", {"x": CudaStandIn(), "w": CudaStandIn()})
    assert isinstance(ft.GpuBackendMissing("m"), fastconv.BackendUnavailableError)


@pytest.mark.skipif(not exchange.has_gpu_backend(),
                    reason="fastconv's GPU backend ('cupy') cannot run here: CUDA tensors raise GpuBackendMissing")
def test_cuda_tensors_run_on_gpu_backend(gen):
    if not torch.cuda.is_available():
        pytest.skip("fastconv has a GPU backend, but this machine has no CUDA device")
    x, w = randn(gen, 2, 3, 8, 7).cuda(), randn(gen, 4, 3, 3, 2).cuda()
    y = ft.conv2d(x, w, stride=(2, 1), padding=(1, 2))
    assert y.device == x.device
    torch.testing.assert_close(y, F.conv2d(x, w, stride=(2, 1), padding=(1, 2)))


# --------------------------------------------------------------------------------------------
# packaging and limits
# --------------------------------------------------------------------------------------------

def test_import_fastconv_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, fastconv; fastconv.conv2d; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_double_backward_is_refused_clearly(gen):
    x = randn(gen, 1, 2, 5, 5, requires_grad=True)
    dx, = torch.autograd.grad(ft.conv2d(x, randn(gen, 3, 2, 3, 3)).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="fastconv.conv2d_backward.* no autograd formula"):
        dx.sum().backward()


# --------------------------------------------------------------------------------------------
# the eager path: plain tensors skip the dispatcher, anything that intercepts ops does not
# --------------------------------------------------------------------------------------------

def test_eager_path_only_where_the_dispatcher_would_go_straight_to_the_kernel(gen):
    """``fastconv.torch.ops._eager`` lets plain CPU tensors call the op's kernels directly; a fake
    or meta tensor, a dispatch mode, a torch-function mode, vmap and jit tracing take the
    registered op, so they see ``fastconv::conv2d`` as they would without the eager path."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.overrides import TorchFunctionMode
    from torch.utils._python_dispatch import TorchDispatchMode

    eager = ft.ops._eager
    x, w = randn(gen, 1, 2, 5, 5), torch.nn.Parameter(randn(gen, 3, 2, 3, 3))
    assert eager((x, w, None))
    with torch.no_grad():
        assert eager((x, w))
    with torch.inference_mode():
        assert eager((x, w))
    assert not eager((x.to("meta"), w))

    seen = []

    class Log(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            seen.append(str(func))
            return func(*args, **(kwargs or {}))

    with Log():
        assert not eager((x, w))
        ft.conv2d(x, w)
    assert "fastconv.conv2d.default" in seen

    class Functions(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            return func(*args, **(kwargs or {}))

    with Functions():
        assert not eager((x, w))
    with FakeTensorMode() as mode:
        fake = mode.from_tensor(x)
        assert not eager((fake, w))
        assert ft.conv2d(fake, mode.from_tensor(w)).shape == (1, 3, 3, 3)
    flags = []
    torch.vmap(lambda xi: flags.append(eager((xi, w))) or xi)(x)
    assert flags == [False]
    # under vmap the op runs through the dispatcher: with no batching rule, PyTorch's fallback
    # loops over the batch, and the result is the per-sample one
    xs = randn(gen, 2, 1, 2, 5, 5)
    y = torch.vmap(lambda xi: ft.conv2d(xi, w))(xs)
    torch.testing.assert_close(y, torch.stack([F.conv2d(xi, w) for xi in xs]).detach())


def test_direct_path_runs_fastconvs_plan_after_a_signatures_first_call(gen, monkeypatch):
    """After a signature's first call (the full path: every check, fastconv's public op), plain
    NCHW-contiguous CPU tensors go straight to the NumPy API's plan for it
    (``fastconv.torch.ops._make_kernel``): the same results and gradients, every error still
    raised, channels_last inputs still on the full path, plans per ``use_backend`` context."""
    fastconv._dispatch.forget()
    call, call_backward = ft.ops.CALL["conv2d"], ft.ops.CALL["conv2d_backward"]
    x = randn(gen, 2, 3, 6, 5, requires_grad=True)
    w, b = torch.nn.Parameter(randn(gen, 4, 3, 3, 3)), torch.nn.Parameter(randn(gen, 4))
    xr, wr, br = (t.detach().clone().requires_grad_() for t in (x, w, b))
    F.conv2d(xr, wr, br, padding=1).sum().backward()
    for step in range(3):  # the first call plans; the others run the plans (dy of sum(): not contiguous)
        if step == 2:  # the direct path does not come back to fastconv's public ops
            monkeypatch.setattr(fastconv, "conv2d", None)
            monkeypatch.setattr(fastconv, "conv2d_backward", None)
        for t in (x, w, b):
            t.grad = None
        y = ft.conv2d(x, w, b, padding=1)
        y.sum().backward()
        torch.testing.assert_close(y, F.conv2d(xr, wr, br, padding=1))
        for t, ref in zip((x, w, b), (xr, wr, br)):
            torch.testing.assert_close(t.grad, ref.grad)
        assert (len(call.direct), len(call_backward.direct)) == (1, 1)
    monkeypatch.undo()
    # channels_last: the full path, results in channels_last
    y = ft.conv2d(x.detach().contiguous(memory_format=torch.channels_last), w, b, padding=1)
    assert y.is_contiguous(memory_format=torch.channels_last) and len(call.direct) == 1
    # another use_backend context: a plan of its own
    if "reference" in fastconv.available_backends():
        with fastconv.use_backend("reference"):
            ft.conv2d(x, w, b, padding=1)
        assert len(call.direct) == 2
    # errors are never kept: raised on every call
    for _ in range(2):
        with pytest.raises(TypeError, match=r"fastconv::max_pool2d: expected x of dtype"):
            ft.max_pool2d(torch.ones(1, 2, 4, 4, dtype=torch.float16), 2)
        with pytest.raises(ValueError, match=r"conv2d: expected b of shape \(4,\), got \(5,\)"):
            ft.ops.CALL["conv2d"](x, w, torch.ones(5, dtype=x.dtype), (1, 1), (1, 1, 1, 1), (1, 1), 1, "auto")
    assert len(ft.ops.CALL["max_pool2d"].direct) == 0
    # hyper-parameters as lists (a direct caller of CALL): the full path, every call
    for _ in range(2):
        y, _ = ft.ops.CALL["max_pool2d"](x, [2, 2], [2, 2], [0, 0], [1, 1], False, "auto")
        torch.testing.assert_close(y, F.max_pool2d(xr, 2))
    fastconv._dispatch.forget()
    assert len(call.direct) == 0


def test_direct_path_keeps_backward_runs_and_skips_unkept_indices(gen, monkeypatch):
    """A forward on the direct path keeps the backward op's run per (needs, use_backend context):
    repeated training steps give PyTorch's gradients, another context gets a run of its own, double
    backward is still refused; max pooling nobody keeps indices of (no gradient, no
    return_indices) asks the backend for y alone."""
    import fastconv.backends.reference.pool as reference_pool

    fastconv._dispatch.forget()
    asked = []
    forward = reference_pool.max_pool2d_forward

    def spy(x, p, with_indices=True):
        asked.append(with_indices)
        return forward(x, p, with_indices=with_indices)

    monkeypatch.setattr(reference_pool, "max_pool2d_forward", spy)
    pool, call = ft.MaxPool2d(2, backend="reference"), ft.ops.CALL["max_pool2d"]
    x = randn(gen, 2, 3, 6, 4, requires_grad=True)
    xr = x.detach().clone().requires_grad_()
    F.max_pool2d(xr, 2).mul(torch.arange(36.0, dtype=x.dtype).reshape(2, 3, 3, 2)).sum().backward()
    for step in range(3):  # the first call plans; then the backward runs come from the forward's run
        x.grad = None
        pool(x).mul(torch.arange(36.0, dtype=x.dtype).reshape(2, 3, 3, 2)).sum().backward()
        torch.testing.assert_close(x.grad, xr.grad)
    (found,) = call.direct.values()
    assert len(found.backward_runs) == 1
    for _ in range(2):  # the backward's context, not the forward's, picks its run (the first call plans it)
        loss = pool(x).sum()
        with fastconv.use_backend("reference"):
            loss.backward()
    assert len(found.backward_runs) == 2
    dx, = torch.autograd.grad(pool(x).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="fastconv.max_pool2d_backward.* no autograd formula"):
        dx.sum().backward()
    asked.clear()
    for _ in range(2):  # no gradient to record: y alone, after the first (planning) call
        torch.testing.assert_close(pool(x.detach()), F.max_pool2d(xr.detach(), 2))
    with torch.no_grad():
        torch.testing.assert_close(pool(x), F.max_pool2d(xr.detach(), 2))
    assert asked[-2:] == [False, False]
    y, indices = ft.max_pool2d(x.detach(), 2, return_indices=True, backend="reference")
    torch.testing.assert_close(indices, F.max_pool2d(xr.detach(), 2, return_indices=True)[1])
    assert asked[-1] is True
    fastconv._dispatch.forget()
