"""``fastconv check``: every available backend against the reference, and the reference against
PyTorch (when installed), on the asymmetric problem lists, forward and every backward.

Each check case makes named inputs, runs the op through fastconv (``run``) and, for the reference's
own row, through ``torch.nn.functional`` with autograd (``torch``); results are compared by name
with :data:`TOLERANCE`, the one tolerance table of the project (the test suite uses it too).

A GPU backend gets its inputs copied to the device and its results copied back. A backend that
takes float16 (the GPU backends, for conv, pooling, linear and activations) is also checked in
float16: its inputs are float16, and the reference runs on the same values in float32.
"""

from __future__ import annotations

import math
import sys
import time
import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np

import fastconv

from ._dispatch import REGISTRY, backend_status
from .problems import CONV_PROBLEMS, POOL_PROBLEMS

#: (atol, rtol) per dtype: a result passes when ``|got - want| <= atol + rtol * |want|``. A float16
#: result (the GPU backends: stored in float16, computed in float32) is compared, as float32, with
#: the reference run on its inputs upcast to float32. Rounding a result to float16 is off by at most
#: 2^-11 relative; a bias added to a float16 product (linear, conv_transpose2d's bias added to the
#: transposed convolution) rounds twice, up to 2^-10: the tolerance allows for that.
TOLERANCE = {
    np.dtype(np.float16): (2e-3, 2e-3),
    np.dtype(np.float32): (2e-4, 2e-4),
    np.dtype(np.float64): (1e-10, 1e-10),
}


def error_ratio(got, want) -> float:
    """max over elements of ``|got - want| / (atol + rtol*|want|)``: <= 1 passes (NaN matches NaN,
    an infinity the same infinity). A float16 ``got`` is compared with a float32 ``want`` (the
    reference on the upcast inputs) with the float16 tolerance."""
    got, want = np.asarray(got), np.asarray(want)
    half = got.dtype == np.float16 and want.dtype == np.float32
    if got.shape != want.shape or (got.dtype != want.dtype and not half):
        return math.inf
    if want.size == 0:
        return 0.0
    atol, rtol = TOLERANCE[got.dtype]
    both_nan = np.isnan(got) & np.isnan(want)
    with np.errstate(invalid="ignore"):
        ratio = np.abs(got.astype(np.float64) - want) / (atol + rtol * np.abs(want.astype(np.float64)))
    ratio = np.where(both_nan | (got == want), 0.0, ratio)  # equal infinities match
    return float(np.nan_to_num(ratio, nan=math.inf).max())


@dataclass(frozen=True)
class Case:
    op: str
    family: str  # the op family, which decides the dtypes a backend takes for it
    inputs: Callable  # (rng, dtype) -> dict of named arrays
    run: Callable  # (inputs, backend) -> dict of named results
    torch: Callable | None = None  # (inputs, torch module) -> dict of named results


def _t(torch, a, grad=True):
    return None if a is None else torch.tensor(a, requires_grad=grad)


def _grads(torch, out, dy, named):
    """Backpropagate ``dy`` through ``out`` and return ``{name: grad}`` for the named leaf tensors."""
    out.backward(torch.tensor(dy))
    return {name: t.grad.numpy() for name, t in named.items() if t is not None}


# --------------------------------------------------------------------------------------------
# the cases
# --------------------------------------------------------------------------------------------

def _conv_cases():
    for c in CONV_PROBLEMS:
        def inputs(rng, dtype, c=c):
            x = rng.standard_normal(c.x_shape).astype(dtype)
            w = rng.standard_normal(c.w_shape).astype(dtype)
            b = rng.standard_normal(c.C_out).astype(dtype)
            y = fastconv.conv2d(x, w, b, **c.kwargs, backend="reference")
            return dict(x=x, w=w, b=b, dy=rng.standard_normal(y.shape).astype(dtype))

        def run(a, backend, c=c):
            y = fastconv.conv2d(a["x"], a["w"], a["b"], **c.kwargs, backend=backend)
            dx, dw, db = fastconv.conv2d_backward(a["dy"], a["x"], a["w"], **c.kwargs, backend=backend)
            return dict(y=y, dx=dx, dw=dw, db=db)

        def torch_run(a, torch, c=c):
            F = torch.nn.functional
            x, w, b = (_t(torch, a[k]) for k in "xwb")
            padding, xin = c.padding, x
            if isinstance(padding, tuple) and isinstance(padding[0], tuple):  # per side: explicit pad
                (t, bo), (l, r) = padding
                xin, padding = F.pad(x, (l, r, t, bo)), 0
            y = F.conv2d(xin, w, b, c.stride, padding, c.dilation, c.groups)
            return dict(y=y.detach().numpy(), **_grads(torch, y, a["dy"], dict(dx=x, dw=w, db=b)))

        yield Case(f"conv2d {c.name}", "conv", inputs, run, torch_run)


def _transpose_case():
    args = dict(stride=(2, 3), padding=(1, 0), output_padding=(1, 2), groups=2, dilation=(1, 1))

    def inputs(rng, dtype):
        x, w, b = (rng.standard_normal(s).astype(dtype) for s in ((2, 4, 5, 7), (4, 3, 3, 2), (6,)))
        y = fastconv.conv_transpose2d(x, w, b, **args, backend="reference")
        return dict(x=x, w=w, b=b, dy=rng.standard_normal(y.shape).astype(dtype))

    def run(a, backend):
        y = fastconv.conv_transpose2d(a["x"], a["w"], a["b"], **args, backend=backend)
        dx, dw, db = fastconv.conv_transpose2d_backward(a["dy"], a["x"], a["w"], **args, backend=backend)
        return dict(y=y, dx=dx, dw=dw, db=db)

    def torch_run(a, torch):
        x, w, b = (_t(torch, a[k]) for k in "xwb")
        y = torch.nn.functional.conv_transpose2d(x, w, b, **args)
        return dict(y=y.detach().numpy(), **_grads(torch, y, a["dy"], dict(dx=x, dw=w, db=b)))

    yield Case("conv_transpose2d", "conv", inputs, run, torch_run)


def _pool_cases():
    for q in POOL_PROBLEMS:
        def inputs(rng, dtype, q=q):
            # a permutation: no ties, so max pooling's gradient is well defined everywhere
            x = rng.permutation(np.prod(q.x_shape)).reshape(q.x_shape).astype(dtype)
            y = fastconv.max_pool2d(x, q.kernel_size, q.stride, q.padding, q.dilation, q.ceil_mode,
                                    backend="reference")
            return dict(x=x, dy=rng.standard_normal(y.shape).astype(dtype))

        def run(a, backend, q=q):
            args = (q.kernel_size, q.stride, q.padding, q.dilation, q.ceil_mode)
            y = fastconv.max_pool2d(a["x"], *args, backend=backend)
            return dict(y=y, dx=fastconv.max_pool2d_backward(a["dy"], a["x"], *args, backend=backend))

        def torch_run(a, torch, q=q):
            x = _t(torch, a["x"])
            y = torch.nn.functional.max_pool2d(x, q.kernel_size, q.stride, q.padding, q.dilation, q.ceil_mode)
            return dict(y=y.detach().numpy(), **_grads(torch, y, a["dy"], dict(dx=x)))

        yield Case(f"max_pool2d {q.name}", "pool", inputs, run, torch_run)

        if q.dilation == 1:
            def avg_inputs(rng, dtype, q=q):
                x = rng.standard_normal(q.x_shape).astype(dtype)
                y = fastconv.avg_pool2d(x, q.kernel_size, q.stride, q.padding, q.ceil_mode, False,
                                        backend="reference")
                return dict(x=x, dy=rng.standard_normal(y.shape).astype(dtype))

            def avg_run(a, backend, q=q):
                args = (q.kernel_size, q.stride, q.padding, q.ceil_mode, False)
                y = fastconv.avg_pool2d(a["x"], *args, backend=backend)
                return dict(y=y, dx=fastconv.avg_pool2d_backward(a["dy"], a["x"], *args, backend=backend))

            def avg_torch(a, torch, q=q):
                x = _t(torch, a["x"])
                y = torch.nn.functional.avg_pool2d(x, q.kernel_size, q.stride, q.padding, q.ceil_mode, False)
                return dict(y=y.detach().numpy(), **_grads(torch, y, a["dy"], dict(dx=x)))

            yield Case(f"avg_pool2d {q.name}", "pool", avg_inputs, avg_run, avg_torch)

    for out in (1, (3, 4), (7, 2)):
        def ad_inputs(rng, dtype, out=out):
            x = rng.standard_normal((2, 3, 10, 7)).astype(dtype)
            y = fastconv.adaptive_avg_pool2d(x, out, backend="reference")
            return dict(x=x, dy=rng.standard_normal(y.shape).astype(dtype))

        def ad_run(a, backend, out=out):
            y = fastconv.adaptive_avg_pool2d(a["x"], out, backend=backend)
            return dict(y=y, dx=fastconv.adaptive_avg_pool2d_backward(a["dy"], a["x"], out, backend=backend))

        def ad_torch(a, torch, out=out):
            x = _t(torch, a["x"])
            y = torch.nn.functional.adaptive_avg_pool2d(x, out)
            return dict(y=y.detach().numpy(), **_grads(torch, y, a["dy"], dict(dx=x)))

        yield Case(f"adaptive_avg_pool2d {out}", "pool", ad_inputs, ad_run, ad_torch)


def _linear_case():
    def inputs(rng, dtype):
        x, w, b = (rng.standard_normal(s).astype(dtype) for s in ((3, 5, 7), (4, 7), (4,)))
        return dict(x=x, w=w, b=b, dy=rng.standard_normal((3, 5, 4)).astype(dtype))

    def run(a, backend):
        y = fastconv.linear(a["x"], a["w"], a["b"], backend=backend)
        dx, dw, db = fastconv.linear_backward(a["dy"], a["x"], a["w"], backend=backend)
        return dict(y=y, dx=dx, dw=dw, db=db)

    def torch_run(a, torch):
        x, w, b = (_t(torch, a[k]) for k in "xwb")
        y = torch.nn.functional.linear(x, w, b)
        return dict(y=y.detach().numpy(), **_grads(torch, y, a["dy"], dict(dx=x, dw=w, db=b)))

    yield Case("linear", "linear", inputs, run, torch_run)


#: activation name -> (extra keyword arguments, the torch.nn.functional call)
_ACTIVATIONS = {
    "relu": ({}, lambda F, x: F.relu(x)),
    "leaky_relu": ({"negative_slope": 0.2}, lambda F, x: F.leaky_relu(x, 0.2)),
    "elu": ({"alpha": 1.3}, lambda F, x: F.elu(x, 1.3)),
    "selu": ({}, lambda F, x: F.selu(x)),
    "gelu": ({}, lambda F, x: F.gelu(x)),
    "gelu_tanh": ({"approximate": "tanh"}, lambda F, x: F.gelu(x, approximate="tanh")),
    "sigmoid": ({}, lambda F, x: x.sigmoid()),
    "tanh": ({}, lambda F, x: x.tanh()),
    "softplus": ({"beta": 2.0, "threshold": 5.0}, lambda F, x: F.softplus(x, 2.0, 5.0)),
    "silu": ({}, lambda F, x: F.silu(x)),
}


def _activation_cases():
    for label, (kwargs, torch_fn) in _ACTIVATIONS.items():
        name = "gelu" if label == "gelu_tanh" else label

        def inputs(rng, dtype):
            x = (rng.standard_normal((3, 4, 5)) * 3).astype(dtype)
            return dict(x=x, dy=rng.standard_normal(x.shape).astype(dtype))

        def run(a, backend, name=name, kwargs=kwargs):
            forward, backward = getattr(fastconv, name), getattr(fastconv, f"{name}_backward")
            return dict(y=forward(a["x"], **kwargs, backend=backend),
                        dx=backward(a["dy"], a["x"], **kwargs, backend=backend))

        def torch_run(a, torch, torch_fn=torch_fn):
            x = _t(torch, a["x"])
            y = torch_fn(torch.nn.functional, x)
            return dict(y=y.detach().numpy(), **_grads(torch, y, a["dy"], dict(dx=x)))

        yield Case(label, "activation", inputs, run, torch_run)


def _softmax_cases():
    for name in ("softmax", "log_softmax"):
        def inputs(rng, dtype):
            x = (rng.standard_normal((4, 6, 3)) * 4).astype(dtype)
            return dict(x=x, dy=rng.standard_normal(x.shape).astype(dtype))

        def run(a, backend, name=name):
            y = getattr(fastconv, name)(a["x"], dim=1, backend=backend)
            dx = getattr(fastconv, f"{name}_backward")(a["dy"], y, dim=1, backend=backend)
            return dict(y=y, dx=dx)

        def torch_run(a, torch, name=name):
            x = _t(torch, a["x"])
            y = getattr(torch.nn.functional, name)(x, dim=1)
            return dict(y=y.detach().numpy(), **_grads(torch, y, a["dy"], dict(dx=x)))

        yield Case(name, "activation", inputs, run, torch_run)


def _loss_cases():
    kwargs = dict(reduction="mean", label_smoothing=0.1)

    def ce_inputs(rng, dtype):
        logits = (rng.standard_normal((6, 5, 3)) * 3).astype(dtype)
        target = rng.integers(0, 5, size=(6, 3))
        target[0, 0] = -100  # ignored
        # dloss is an input, so that it lives on the backend's device with the others
        return dict(logits=logits, target=target, weight=rng.uniform(0.5, 2, 5).astype(dtype),
                    dloss=np.ones((), dtype))

    def ce_run(a, backend):
        loss = fastconv.cross_entropy(a["logits"], a["target"], a["weight"], **kwargs, backend=backend)
        d = fastconv.cross_entropy_backward(a["dloss"], a["logits"], a["target"], a["weight"], **kwargs,
                                            backend=backend)
        return dict(loss=loss, dlogits=d)

    def ce_torch(a, torch):
        logits = _t(torch, a["logits"])
        loss = torch.nn.functional.cross_entropy(logits, torch.tensor(a["target"]), torch.tensor(a["weight"]),
                                                 **kwargs)
        return dict(loss=loss.detach().numpy(), **_grads(torch, loss, a["dloss"], dict(dlogits=logits)))

    yield Case("cross_entropy", "loss", ce_inputs, ce_run, ce_torch)

    def mse_inputs(rng, dtype):
        return dict({k: rng.standard_normal((4, 7)).astype(dtype) for k in ("x", "target")}, dloss=np.ones((), dtype))

    def mse_run(a, backend):
        loss = fastconv.mse_loss(a["x"], a["target"], backend=backend)
        dx = fastconv.mse_loss_backward(a["dloss"], a["x"], a["target"], backend=backend)
        return dict(loss=loss, dx=dx)

    def mse_torch(a, torch):
        x = _t(torch, a["x"])
        loss = torch.nn.functional.mse_loss(x, torch.tensor(a["target"]))
        return dict(loss=loss.detach().numpy(), **_grads(torch, loss, a["dloss"], dict(dx=x)))

    yield Case("mse_loss", "loss", mse_inputs, mse_run, mse_torch)


def _batch_norm_cases():
    for training in (True, False):
        def inputs(rng, dtype):
            x = rng.standard_normal((4, 3, 5, 2)).astype(dtype)
            return dict(x=x, dy=rng.standard_normal(x.shape).astype(dtype),
                        running_mean=rng.standard_normal(3).astype(dtype),
                        running_var=rng.uniform(0.5, 2, 3).astype(dtype),
                        weight=rng.standard_normal(3).astype(dtype), bias=rng.standard_normal(3).astype(dtype))

        def run(a, backend, training=training):
            r = fastconv.batch_norm(a["x"], a["running_mean"], a["running_var"], a["weight"], a["bias"],
                                    training=training, backend=backend)
            dx, dweight, dbias = fastconv.batch_norm_backward(a["dy"], a["x"], a["weight"], mean=r.mean,
                                                              invstd=r.invstd, training=training, backend=backend)
            return dict(y=r.y, running_mean=r.running_mean, running_var=r.running_var, dx=dx,
                        dweight=dweight, dbias=dbias)

        def torch_run(a, torch, training=training):
            x, weight, bias = (_t(torch, a[k]) for k in ("x", "weight", "bias"))
            rm, rv = torch.tensor(a["running_mean"]), torch.tensor(a["running_var"])
            y = torch.nn.functional.batch_norm(x, rm, rv, weight, bias, training=training)
            return dict(y=y.detach().numpy(), running_mean=rm.numpy(), running_var=rv.numpy(),
                        **_grads(torch, y, a["dy"], dict(dx=x, dweight=weight, dbias=bias)))

        yield Case(f"batch_norm {'training' if training else 'inference'}", "norm", inputs, run, torch_run)


def _dropout_case():
    """Masks are backend-specific random draws; what must hold is y = x * mask / (1 - p) and dx likewise."""

    def inputs(rng, dtype):
        x = rng.standard_normal((8, 64)).astype(dtype)
        return dict(x=x, dy=rng.standard_normal(x.shape).astype(dtype))

    def run(a, backend):
        r = fastconv.dropout(a["x"], 0.3, True, 1234, backend=backend)
        dx = fastconv.dropout_backward(a["dy"], mask=r.mask, p=0.3, backend=backend)
        scale = a["x"].dtype.type(1 / 0.7)
        return dict(y_error=r.y - np.where(r.mask, a["x"] * scale, 0),
                    dx_error=dx - np.where(r.mask, a["dy"] * scale, 0))

    def expected(a, torch):
        zero = np.zeros_like(a["x"])
        return dict(y_error=zero, dx_error=zero)

    yield Case("dropout", "dropout", inputs, run, expected)


def all_cases() -> list[Case]:
    return [case for make in (_conv_cases, _transpose_case, _pool_cases, _linear_case, _activation_cases,
                              _softmax_cases, _loss_cases, _batch_norm_cases, _dropout_case)
            for case in make()]


# --------------------------------------------------------------------------------------------
# running the checks
# --------------------------------------------------------------------------------------------

@dataclass
class Row:
    backend: str
    oracle: str
    dtype: str
    cases: int = 0
    results: int = 0
    failures: list = None
    missing: list = None  # ops the backend does not implement (yet): not a failure
    worst: float = 0.0
    seconds: float = 0.0


@dataclass
class CaseResult:
    op: str
    results: int = 0  # named results compared
    worst: float = 0.0  # the largest error / tolerance
    failures: list = None
    skipped: str | None = None  # why the case did not run: not implemented, float16 not taken


def _transfer(name: str):
    """``(to the backend's device, back to NumPy)`` for a dict of named arrays."""
    if REGISTRY[name].device != "gpu":
        return (lambda a: a), (lambda r: r)
    import cupy

    return (lambda a: {k: cupy.asarray(v) if isinstance(v, np.ndarray) else v for k, v in a.items()},
            lambda r: {k: None if v is None else cupy.asnumpy(v) for k, v in r.items()})


def _cast_floats(a: dict, dtype) -> dict:
    return {k: v.astype(dtype) if isinstance(v, np.ndarray) and v.dtype.kind == "f" else v for k, v in a.items()}


def check_case(case: Case, name: str, dtype, rng, oracle: str = "reference", torch=None) -> CaseResult:
    """Run ``case`` on backend ``name`` in ``dtype`` and compare every named result with the
    oracle's ('reference', or 'torch' with the module given). In float16 the oracle runs on the
    same input values in float32."""
    dtype = np.dtype(dtype)
    result = CaseResult(case.op, failures=[])
    if dtype.name not in REGISTRY[name].dtypes(case.family):
        result.skipped = f"{name} does not take {dtype} {case.family} ops"
        return result
    half = dtype == np.float16
    a = case.inputs(rng, np.float32 if half else dtype)
    if half:
        a = _cast_floats(a, np.float16)
    to_device, to_host = _transfer(name)
    try:
        got = to_host(case.run(to_device(a), name))
        oracle_inputs = _cast_floats(a, np.float32) if half else a
        with warnings.catch_warnings():  # torch's performance hints are not findings
            warnings.simplefilter("ignore", UserWarning)
            want = case.torch(oracle_inputs, torch) if oracle == "torch" else case.run(oracle_inputs, "reference")
    except NotImplementedError:
        result.skipped = f"{name} does not implement {case.op} (yet)"
        return result
    except Exception as exc:  # a crash is a failure to report, not a reason to stop checking
        result.failures.append(f"{case.op}: {type(exc).__name__}: {exc}")
        return result
    for key, w in want.items():
        result.results += 1
        ratio = error_ratio(got[key], w)
        result.worst = max(result.worst, ratio)
        if not ratio <= 1.0:
            result.failures.append(f"{case.op} {key}: error {ratio:.3g}x tolerance")
    return result


def check_backend(name: str, dtype, rng, oracle: str) -> Row:
    """Run every case on backend ``name`` and compare with the oracle ('reference' or 'torch')."""
    row = Row(name, oracle, np.dtype(dtype).name, failures=[], missing=[])
    torch = None
    if oracle == "torch":
        import torch

        torch.set_num_threads(1)
    start = time.perf_counter()
    for case in all_cases():
        r = check_case(case, name, dtype, rng, oracle, torch)
        if r.skipped:
            row.missing.append(case.op)
            continue
        row.cases += 1
        row.results += r.results
        row.worst = max(row.worst, r.worst)
        row.failures += r.failures
    row.seconds = time.perf_counter() - start
    return row


def run_check(names=None, out=sys.stdout, seed: int | None = None) -> int:
    """Check the named (default: all available) backends; print a table; 0 when everything passes."""
    status = backend_status()
    names = list(status) if names is None else names
    for name in names:
        if name not in status:
            raise ValueError(f"check: unknown backend {name!r}; known backends: {', '.join(status)}")
    try:
        import torch  # noqa: F401

        have_torch = True
    except ImportError:
        have_torch = False
    rng = np.random.default_rng(seed)
    rows, skipped = [], []
    for name in names:
        if status[name] is not None:
            skipped.append(f"{name}: {status[name]}")
            continue
        if name == "reference" and not have_torch:
            skipped.append("reference vs torch: PyTorch is not installed (pip install torch==2.13.0)")
            continue
        dtypes = (np.float16, np.float32, np.float64) if REGISTRY[name].half else (np.float32, np.float64)
        for dtype in dtypes:
            rows.append(check_backend(name, dtype, rng, "torch" if name == "reference" else "reference"))

    header = f"{'backend':<12}{'checked against':<18}{'dtype':<9}{'cases':>6}{'results':>9}" \
             f"{'worst err/tol':>15}{'not impl.':>10}{'time s':>8}  status"
    print(header, file=out)
    print("-" * len(header), file=out)
    for r in rows:
        status_text = "PASS" if not r.failures else f"FAIL ({len(r.failures)})"
        print(f"{r.backend:<12}{r.oracle:<18}{r.dtype:<9}{r.cases:>6}{r.results:>9}{r.worst:>15.3g}"
              f"{len(r.missing):>10}{r.seconds:>8.1f}  {status_text}", file=out)
    for r in rows:
        for failure in r.failures:
            print(f"  {r.backend} {r.dtype}: {failure}", file=out)
    for r in rows:
        if r.missing and r.dtype in ("float16", "float32"):
            what = "does not take float16 for" if r.dtype == "float16" else "does not implement (yet)"
            print(f"  {r.backend} {what}: {', '.join(r.missing)}", file=out)
    for s in skipped:
        print(f"skipped {s}", file=out)
    print("err/tol is max |got - want| / (atol + rtol*|want|) over all elements; <= 1 passes. "
          "Tolerances: " + ", ".join(f"{d.name} atol={a:g} rtol={t:g}" for d, (a, t) in TOLERANCE.items()),
          file=out)
    return 1 if any(r.failures for r in rows) else 0
