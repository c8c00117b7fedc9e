"""PyTorch's own sample inputs for fastconv's ops, run through fastconv.

PyTorch tests each operator on the call forms its OpInfo entry lists
(``torch.testing._internal.common_methods_invocations.op_db``): batched and unbatched inputs,
int / pair / 1-tuple / empty-tuple / None spellings of the hyper-parameters, channels_last inputs,
empty batches. A drop-in must take every one of them. Here each sample runs through fastconv's
NumPy API (``fastconv.<op>`` and ``fastconv.<op>_backward``) on every CPU backend and, where it
exists, through the functional wrapper in ``fastconv.torch`` (forward and autograd backward); the
results and gradients must match PyTorch's within the float32 tolerance of ``tests/support.py``.
The OpInfo error inputs (calls PyTorch refuses) must raise ValueError or TypeError.

A sample fastconv leaves out by design is classified in :data:`SKIPS` with its reason;
:func:`test_sample_counts` pins how many samples run and how many are skipped per op and reason,
so a skip cannot grow silently. Below the OpInfo tests, :func:`test_call_forms_accepted_and_refused_as_pytorch`
checks spellings and empty shapes the samples leave out (``padding=(1,)``, ``kernel_size=(3,)``,
images with a zero-size side, linear's 1-d w and broadcast biases, tensors passed by keyword) for
acceptance and refusal against PyTorch.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pytest

torch = pytest.importorskip("torch")
_flags_frozen = torch.backends.flags_frozen()
# torch's test helpers import expecttest (in fastconv's [test] extra)
cmi = pytest.importorskip("torch.testing._internal.common_methods_invocations")
if not _flags_frozen:
    # importing them freezes torch.backends' global flags (torch.backends.disable_global_flags()),
    # after which a plain `torch.backends.cudnn.allow_tf32 = ...` (fastconv.bench's GPU contenders)
    # raises for the rest of the session; there is no public switch back
    torch.backends.flags_frozen.__globals__["__allow_nonbracketed_mutation_flag"] = True

import fastconv as fc  # noqa: E402
import fastconv.torch as ft  # noqa: E402
from fastconv._threads import num_threads  # noqa: E402
from support import assert_close, assert_equal, assert_fresh_output, require  # noqa: E402

F = torch.nn.functional

# PyTorch warns that its own padding='same' with an even kernel copies the input: not ours to heed
pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same':UserWarning")


# --------------------------------------------------------------------------------------------
# each op: how a sample runs through fastconv's NumPy API
# --------------------------------------------------------------------------------------------
#
# A runner takes the sample converted to NumPy (x, args, kwargs), the output gradient dy and the
# backend, and returns (outputs, grads): the outputs in the order PyTorch returns them, and the
# gradients keyed like :func:`_grad_paths` ("input", "args[0]", "kwargs[weight]").

def _conv(name, n_tensors=2):
    """conv1d / conv2d / conv_transpose2d: (x, w, b, *hyper); the backward takes (dy, x, w, *hyper)."""
    forward, backward = getattr(fc, name), getattr(fc, name + "_backward")

    def run(x, args, kwargs, dy, backend):
        w, b, hyper = args[0], (args[1] if len(args) > 1 else None), args[n_tensors:]
        y = forward(x, w, b, *hyper, backend=backend, **kwargs)
        dx, dw, db = backward(dy, x, w, *hyper, needs=(True, True, b is not None), backend=backend, **kwargs)
        return [y], {"input": dx, "args[0]": dw, "args[1]": db}

    return run


def _max_pool2d(x, args, kwargs, dy, backend):
    out = fc.max_pool2d(x, *args, backend=backend, **kwargs)
    hyper = {k: v for k, v in kwargs.items() if k != "return_indices"}
    y, indices = out if kwargs.get("return_indices") else (out, None)
    # with indices the backward scatters through them; without, it recomputes them from x
    dx = fc.max_pool2d_backward(dy, x, *args, indices=indices, backend=backend, **hyper)
    return [y] if indices is None else [y, indices], {"input": dx}


def _unary(name, *, takes_output=False):
    """An op of one array x (the pools but max, activations, softmaxes, flatten, cross-entropy):
    ``name(x, *args, **kwargs)``; its backward ``name_backward(dy, x, *args, **kwargs)``, or with
    ``takes_output`` (softmax, log_softmax) ``name_backward(dy, y, ...)``."""
    forward, backward = getattr(fc, name), getattr(fc, name + "_backward")

    def run(x, args, kwargs, dy, backend):
        y = forward(x, *args, backend=backend, **kwargs)
        return [y], {"input": backward(dy, y if takes_output else x, *args, backend=backend, **kwargs)}

    return run


def _linear(x, args, kwargs, dy, backend):
    w, b = args[0], (args[1] if len(args) > 1 else None)
    y = fc.linear(x, w, b, backend=backend)
    dx, dw, db = fc.linear_backward(dy, x, w, b_shape=None if b is None else b.shape,
                                    needs=(True, True, b is not None), backend=backend)
    return [y], {"input": dx, "args[0]": dw, "args[1]": db}


def _batch_norm(x, args, kwargs, dy, backend):
    """Outputs: y and the new running statistics (PyTorch updates the given ones in place)."""
    r = fc.batch_norm(x, *args, backend=backend, **kwargs)
    weight, bias = (list(args[2:4]) + [None, None])[:2]
    dx, dw, db = fc.batch_norm_backward(dy, x, weight, mean=r.mean, invstd=r.invstd,
                                        training=kwargs.get("training", False),
                                        needs=(True, weight is not None, bias is not None), backend=backend)
    stats = [s for s in (r.running_mean, r.running_var) if s is not None]
    return [r.y, *stats], {"input": dx, "args[2]": dw, "args[3]": db}


def _mse_loss(x, args, kwargs, dy, backend):
    loss = fc.mse_loss(x, *args, backend=backend, **kwargs)
    dx = fc.mse_loss_backward(dy, x, *args, backend=backend, **kwargs)
    return [loss], {"input": dx, "args[0]": -dx}  # (x - t)^2 is antisymmetric in x and t


def _dropout(x, args, kwargs, dy, backend):
    r = fc.dropout(x, *args, backend=backend, **kwargs)
    p = kwargs.get("p", 0.5)
    return [r.y], {"input": fc.dropout_backward(dy, mask=r.mask, p=p, backend=backend)}


# --------------------------------------------------------------------------------------------
# samples fastconv leaves out by design, each with its reason
# --------------------------------------------------------------------------------------------

_DTYPE_ARG = "dtype= (cast the input before the op) is not in fastconv's API: cast the array first"
_RANDOM = ("a random mask: fastconv draws it from its own Philox stream, not PyTorch's generator, "
           "so values cannot match (tests/test_dropout.py checks the distribution and the mask's use)")
_FLATTEN_DEFAULT = ("fastconv.flatten's start_dim defaults to 1 (nn.Flatten's, all but the batch; "
                    "pinned by tests/test_shape.py), torch.flatten's to 0")

#: reason -> the samples it covers (a predicate on the torch SampleInput)
SKIPS: dict[str, Callable] = {
    _DTYPE_ARG: lambda s: "dtype" in s.kwargs,
    _RANDOM: lambda s: (s.kwargs.get("training", True) and 0 < s.kwargs.get("p", 0.5) < 1),
    _FLATTEN_DEFAULT: lambda s: not s.args and "start_dim" not in s.kwargs,
}

#: gradients PyTorch computes that fastconv's API does not return
NOT_COMPARED = {
    "nn.functional.cross_entropy": {"args[0]": "fastconv's backward gives dlogits only, not the "
                                               "gradient with respect to probability targets"},
}


@dataclass(frozen=True)
class Op:
    """One OpInfo entry: its runner, the fastconv.torch functional taking the same call (if any),
    the SKIPS that apply, and the pinned counts ``(run, {reason: skipped})``. ``every`` thins a
    large product of samples for the other backends and the torch functional (see
    :func:`_selection`). ``kernel``
    (family, function) names a kernel not every backend implements (the Cython backend has no
    batch norm, losses or dropout): a backend without it is skipped."""

    run: Callable
    counts: tuple
    wrapper: str | None = None
    kernel: tuple | None = None
    every: int = 1  # beyond the reference backend's NumPy API, run every ``every``-th sample
    skips: tuple = ()
    extra_outputs: Callable = field(default=lambda args: [])  # of the call's args: tensors updated in place


_NORM = ("norm", "batch_norm_forward")


def _bn_stats(args):
    """The running statistics F.batch_norm (and fastconv.torch.batch_norm) update in place."""
    return [a for a in args[:2] if a is not None]


OPS: dict[str, Op] = {
    "nn.functional.conv2d": Op(_conv("conv2d"), (30, {}), wrapper="conv2d"),
    "nn.functional.conv1d": Op(_conv("conv1d"), (10, {}), wrapper="conv1d"),
    "nn.functional.conv_transpose2d": Op(_conv("conv_transpose2d"), (12, {}), wrapper="conv_transpose2d"),
    # 10 inputs x 144 hyper-parameter combinations; 7 is coprime to 144, so every 7th sample (206)
    # still holds every combination and every input (test_selection_covers_every_call_form)
    "nn.functional.max_pool2d": Op(_max_pool2d, (1440, {}), wrapper="max_pool2d", every=7),
    "nn.functional.avg_pool2d": Op(_unary("avg_pool2d"), (7, {}), wrapper="avg_pool2d"),
    "nn.functional.adaptive_avg_pool2d": Op(_unary("adaptive_avg_pool2d"), (10, {}), wrapper="adaptive_avg_pool2d"),
    "nn.functional.linear": Op(_linear, (18, {}), wrapper="linear"),
    "nn.functional.batch_norm": Op(_batch_norm, (12, {}), wrapper="batch_norm", kernel=_NORM,
                                   extra_outputs=_bn_stats),
    "nn.functional.batch_norm.without_cudnn": Op(_batch_norm, (12, {}), wrapper="batch_norm", kernel=_NORM,
                                                 extra_outputs=_bn_stats),
    **{f"nn.functional.{name}": Op(_unary(name), (n, {}))
       for name, n in (("relu", 4), ("leaky_relu", 9), ("elu", 3), ("selu", 3), ("gelu", 8),
                       ("softplus", 3), ("silu", 3))},
    "sigmoid": Op(_unary("sigmoid"), (3, {})),
    "tanh": Op(_unary("tanh"), (1, {})),
    "softmax": Op(_unary("softmax", takes_output=True), (7, {})),
    "log_softmax": Op(_unary("log_softmax", takes_output=True), (7, {})),
    "softmax.with_dtype": Op(_unary("softmax", takes_output=True), (0, {_DTYPE_ARG: 7}), skips=(_DTYPE_ARG,)),
    "log_softmax.with_dtype": Op(_unary("log_softmax", takes_output=True), (0, {_DTYPE_ARG: 7}), skips=(_DTYPE_ARG,)),
    "nn.functional.cross_entropy": Op(_unary("cross_entropy"), (21, {}), kernel=("loss", "cross_entropy_index_forward")),
    "nn.functional.mse_loss": Op(_mse_loss, (6, {}), kernel=("loss", "mse_loss_forward")),
    "flatten": Op(_unary("flatten"), (2, {_FLATTEN_DEFAULT: 4}), skips=(_FLATTEN_DEFAULT,)),
    "nn.functional.dropout": Op(_dropout, (15, {_RANDOM: 4}), skips=(_RANDOM,), kernel=("dropout", "dropout_forward")),
}

_OPINFOS = {op.name + (f".{op.variant_test_name}" if op.variant_test_name else ""): op
            for op in cmi.op_db}


# --------------------------------------------------------------------------------------------
# PyTorch's side: samples, reference outputs and gradients, computed once per op
# --------------------------------------------------------------------------------------------

def _tensors(s):
    """(path, tensor) for each tensor of a sample, in a fixed order."""
    yield "input", s.input
    for i, a in enumerate(s.args):
        if isinstance(a, torch.Tensor):
            yield f"args[{i}]", a
    for k, a in s.kwargs.items():
        if isinstance(a, torch.Tensor):
            yield f"kwargs[{k}]", a


def _grad_paths(s):
    return [(path, t) for path, t in _tensors(s) if t.requires_grad]


def _as_numpy(value):
    """A tensor as a NumPy array with its strides (channels_last stays non-contiguous), copied
    so that PyTorch's in-place updates (batch norm's running statistics) cannot reach it."""
    if isinstance(value, torch.Tensor):
        return value.detach().numpy().copy(order="K")
    return value


def _numpy_sample(s):
    return _as_numpy(s.input), [_as_numpy(a) for a in s.args], {k: _as_numpy(v) for k, v in s.kwargs.items()}


def _describe(s) -> str:
    def d(v):
        if isinstance(v, torch.Tensor):
            layout = "" if v.is_contiguous() else " non-contiguous"
            return f"tensor{tuple(v.shape)}{'' if v.dtype == torch.float32 else f' {v.dtype}'}{layout}"
        return repr(v)
    args = ", ".join([d(s.input), *map(d, s.args), *(f"{k}={d(v)}" for k, v in s.kwargs.items())])
    return f"({args})"


@dataclass
class Reference:
    """One sample and what PyTorch makes of it."""

    sample: object
    what: str
    numpy: tuple  # (x, args, kwargs) as NumPy, taken before PyTorch ran
    dy: torch.Tensor
    outputs: list  # tensors, detached
    grads: dict  # path -> tensor


def _skip_reason(name, s):
    for reason in OPS[name].skips:
        if SKIPS[reason](s):
            return reason
    return None


@functools.cache
def _references(name) -> tuple[list[Reference], dict[str, int]]:
    """The op's samples (float32, requires_grad) with PyTorch's results, and the skipped counts."""
    opinfo, spec = _OPINFOS[name], OPS[name]
    refs, skipped = [], {}
    for s in opinfo.sample_inputs("cpu", torch.float32, requires_grad=True):
        reason = _skip_reason(name, s)
        if reason is not None:
            skipped[reason] = skipped.get(reason, 0) + 1
            continue
        numpy = _numpy_sample(s)
        out = opinfo.op(s.input, *s.args, **s.kwargs)
        outputs = [*(out if isinstance(out, tuple) else (out,)), *spec.extra_outputs(s.args)]
        dy = torch.randn_like(outputs[0])
        paths = _grad_paths(s)
        grads = {}
        if paths and outputs[0].requires_grad:
            found = torch.autograd.grad(outputs[0], [t for _, t in paths], dy, allow_unused=True)
            grads = {path: g for (path, _), g in zip(paths, found) if g is not None}
        refs.append(Reference(s, f"{name}{_describe(s)}", numpy, dy.detach(),
                              [o.detach().clone() for o in outputs], grads))  # clone: a later sample may update a shared running stat
    return refs, skipped


def _selection(name) -> list[Reference]:
    """The samples the backends other than the reference, and the torch functional, run: all, or
    every ``every``-th of a large product. Kernels see the same handful of shapes in every one of
    them; what the full list adds is call forms, which the NumPy API's validation (one code path
    for every backend) meets on the reference backend."""
    return _references(name)[0][::OPS[name].every]


def _compare(what, got, expected):
    """A fastconv result against PyTorch's: integer (indices) exactly, floats within tolerance."""
    expected = expected.detach().numpy() if isinstance(expected, torch.Tensor) else expected
    got = got.detach().numpy() if isinstance(got, torch.Tensor) else got
    assert got is not None, f"{what}: fastconv gave None"
    if expected.dtype.kind in "iu":
        assert_equal(got, expected, what)
    else:
        assert_close(got, expected, what)


# --------------------------------------------------------------------------------------------
# the tests
# --------------------------------------------------------------------------------------------

@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """PyTorch and fastconv on one thread each: the samples are a few hundred elements, where a
    second thread brings nothing but a barrier per call, and on a loaded two-core machine such a
    barrier was measured at 6 ms (a thread descheduled), 20x the call (the threaded kernels are
    tested on inputs worth threading elsewhere)."""
    torch_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with num_threads(1):
        yield
    torch.set_num_threads(torch_threads)


@pytest.mark.parametrize("name", OPS)
def test_samples_numpy_api(name, backend):
    """Every sample through fastconv.<op> and its backward on ``backend``: PyTorch's outputs and
    gradients."""
    if OPS[name].kernel:
        require(backend, *OPS[name].kernel)
    refs = _references(name)[0] if backend == "reference" else _selection(name)
    failures = []
    for ref in refs:
        x, args, kwargs = ref.numpy
        try:
            outputs, grads = OPS[name].run(x, args, kwargs, ref.dy.numpy(), backend)
            assert len(outputs) == len(ref.outputs), f"{len(outputs)} outputs, PyTorch gives {len(ref.outputs)}"
            for i, (got, expected) in enumerate(zip(outputs, ref.outputs)):
                _compare(f"output {i}", got, expected)
            for path, expected in ref.grads.items():
                if path not in NOT_COMPARED.get(name, {}):
                    _compare(f"grad of {path}", grads.get(path), expected)
        except Exception as e:  # collect every failing sample, not just the first
            failures.append(f"{ref.what}: {type(e).__name__}: {e}")
    assert not failures, f"{len(failures)} of {len(refs)} samples fail:\n" + "\n".join(failures)


@pytest.mark.parametrize("name", [n for n, op in OPS.items() if op.wrapper])
def test_samples_torch_functional(name, backend):
    """Every sample through the fastconv.torch functional on ``backend``, forward and autograd
    backward: PyTorch's outputs and gradients."""
    if OPS[name].kernel:
        require(backend, *OPS[name].kernel)
    wrapper = getattr(ft, OPS[name].wrapper)
    refs = _selection(name)
    failures = []
    for ref in refs:
        s = ref.sample
        # the sample's tensors as they were before PyTorch ran (it updated batch norm's running
        # statistics in place), fresh, with their strides; the differentiable ones as leaves
        grad_paths = {path for path, _ in _grad_paths(s)}
        leaves = {}

        def pick(path, a):
            if not isinstance(a, np.ndarray):
                return a
            t = torch.from_numpy(a.copy(order="K"))
            if path in grad_paths:
                leaves[path] = t.requires_grad_(True)
            return t

        x_np, args_np, kwargs_np = ref.numpy
        x = pick("input", x_np)
        args = [pick(f"args[{i}]", a) for i, a in enumerate(args_np)]
        kwargs = {k: pick(f"kwargs[{k}]", v) for k, v in kwargs_np.items()}
        try:
            out = wrapper(x, *args, backend=backend, **kwargs)
            outputs = [*(out if isinstance(out, tuple) else (out,)), *OPS[name].extra_outputs(args)]
            assert len(outputs) == len(ref.outputs), f"{len(outputs)} outputs, PyTorch gives {len(ref.outputs)}"
            for i, (got, expected) in enumerate(zip(outputs, ref.outputs)):
                _compare(f"output {i}", got, expected)
            if ref.grads:
                found = torch.autograd.grad(outputs[0], list(leaves.values()), ref.dy, allow_unused=True)
                for path, g in zip(leaves, found):
                    if path in ref.grads:
                        _compare(f"grad of {path}", g, ref.grads[path])
        except Exception as e:
            failures.append(f"{ref.what}: {type(e).__name__}: {e}")
    assert not failures, f"{len(failures)} of {len(refs)} samples fail:\n" + "\n".join(failures)


def _error_inputs(name):
    opinfo = _OPINFOS[name]
    return list(opinfo.error_inputs("cpu")) if opinfo.error_inputs_func is not None else []


@pytest.mark.parametrize("name", [n for n in OPS if _error_inputs(n)])
def test_error_inputs_refused(name):
    """Every call PyTorch refuses (the OpInfo error inputs) is a ValueError or TypeError in the
    NumPy API and, where it exists, in the fastconv.torch functional."""
    forward = {"nn.functional.gelu": fc.gelu}.get(name) or getattr(fc, name.split(".")[-1])
    wrapper = getattr(ft, OPS[name].wrapper) if OPS[name].wrapper else None
    accepted = []
    for e in _error_inputs(name):
        s = e.sample_input
        x, args, kwargs = _numpy_sample(s)
        calls = [("numpy", lambda: forward(x, *args, **kwargs))]
        if wrapper is not None:
            calls.append(("fastconv.torch", lambda: wrapper(s.input, *s.args, **s.kwargs)))
        for api, call in calls:
            try:
                call()
            except (ValueError, TypeError):
                continue
            except Exception as exc:  # a crash of another kind is a failure too
                accepted.append(f"{api} {name}{_describe(s)}: {type(exc).__name__}: {exc}")
                continue
            accepted.append(f"{api} {name}{_describe(s)}: accepted (PyTorch: {e.error_regex!r})")
    assert not accepted, "\n".join(accepted)


@pytest.mark.parametrize("name", [n for n, op in OPS.items() if op.every > 1])
def test_selection_covers_every_call_form(name):
    """The thinned selection still holds every input (shape, layout) and every hyper-parameter
    spelling of the full sample list."""
    refs = _references(name)[0]
    inputs = lambda rs: {(tuple(r.sample.input.shape), r.sample.input.is_contiguous()) for r in rs}  # noqa: E731
    spellings = lambda rs: {repr(sorted(r.sample.kwargs.items())) + repr(r.sample.args) for r in rs}  # noqa: E731
    assert inputs(_selection(name)) == inputs(refs)
    assert spellings(_selection(name)) == spellings(refs)


def test_sample_counts():
    """How many samples run and are skipped (by reason) per op: pinned, so that a PyTorch update
    that adds call forms, or a skip that grows, shows here."""
    counts = {}
    for name, spec in OPS.items():
        refs, skipped = _references(name)
        counts[name] = (len(refs), skipped)
    expected = {name: spec.counts for name, spec in OPS.items()}
    assert counts == expected


# --------------------------------------------------------------------------------------------
# spellings and empty shapes the OpInfo samples leave out: accepted and refused as in PyTorch
# --------------------------------------------------------------------------------------------

_CONV2D_KW = [{}, {"padding": 1}, {"padding": (1,)}, {"padding": [2]}, {"stride": (2,)}, {"dilation": (2,)},
              {"padding": ()}, {"padding": (1, 1, 1)}, {"stride": ()}, {"padding": "same"}, {"padding": "SAME"},
              {"stride": True}, {"padding": 1.0}, {"groups": 0}]
_POOL_KW = [{"kernel_size": 3}, {"kernel_size": (3,)}, {"kernel_size": (3,), "stride": (2,)},
            {"kernel_size": 3, "padding": (1,)}, {"kernel_size": 3, "stride": ()}, {"kernel_size": ()},
            {"kernel_size": 3, "padding": ()}, {"kernel_size": (3, 3, 3)}, {"kernel_size": 3, "ceil_mode": 1},
            {"kernel_size": 3, "padding": 2}, {"kernel_size": 4, "stride": 3, "ceil_mode": True}]
_POOL_X = [(2, 3, 6, 6), (3, 6, 6), (6, 6), (1, 1, 3, 6, 6), (1, 3, 6, 0), (1, 0, 6, 6), (0, 3, 6, 6),
           (3, 0, 6), (0, 3, 6), (0, 0, 6, 6)]

#: (op, x shape, other tensor shapes, keyword arguments): a grid per op
_FORMS = [
    *(("conv2d", x, [(2, 4, 3, 3)], kw) for x in
      [(2, 4, 5, 5), (4, 5, 5), (5, 5), (1, 1, 4, 5, 5), (1, 4, 9, 0), (1, 4, 0, 9), (0, 4, 9, 9), (0, 4, 0, 9),
       (4, 9, 0), (1, 4, 0, 0)] for kw in _CONV2D_KW),
    *(("conv2d", x, [(2, 4, 1, 1)], kw) for x in [(1, 4, 9, 0), (0, 4, 0, 9), (4, 0, 9)]
      for kw in [{}, {"padding": 1}]),
    *(("conv1d", x, [(2, 4, 3)], kw) for x in [(2, 4, 7), (4, 7), (7,), (1, 4, 0), (0, 4, 7), (4, 0), (0, 4, 0)]
      for kw in [{}, {"padding": 1}, {"padding": (1,)}, {"stride": (2,)}, {"dilation": (2,)}, {"padding": ()},
                 {"stride": (1, 1)}, {"padding": "same"}]),
    *(("conv_transpose2d", x, [(4, 2, 3, 3)], kw) for x in
      [(2, 4, 5, 5), (4, 5, 5), (5, 5), (1, 4, 5, 0), (0, 4, 5, 5), (0, 4, 0, 5), (0, 4, 5, 5)]
      for kw in [{}, {"stride": (2,)}, {"padding": (1,)}, {"stride": 2, "output_padding": (1,)},
                 {"dilation": (2,)}, {"padding": ()}, {"output_padding": ()}, {"padding": "same"}]),
    *(("max_pool2d", x, [], kw) for x in _POOL_X for kw in
      [*_POOL_KW, {"kernel_size": 3, "dilation": (2,)}, {"kernel_size": 3, "return_indices": 1}]),
    *(("avg_pool2d", x, [], kw) for x in _POOL_X for kw in
      [*_POOL_KW, {"kernel_size": 3, "divisor_override": -2}, {"kernel_size": 3, "count_include_pad": 0}]),
    *(("adaptive_avg_pool2d", x, [], {"output_size": o}) for x in
      [(2, 3, 6, 6), (3, 6, 6), (6, 6), (1, 3, 6, 0), (1, 0, 6, 6), (0, 6, 6), (0, 3, 6, 6), (1, 1, 3, 6, 6)]
      for o in [2, (2,), (2, 3), (None, 2), (0, 2), (-1, 2), (), (2, 2, 2), (2.0, 2)]),
    *(("batch_norm", x, [(c,), (c,)] + [(c,)] * affine, {"training": training})
      for x, c in [((0,), 0), ((5,), 5), ((5,), 0), ((), 1), ((3, 0), 0), ((0, 3), 3), ((2, 3), 3), ((1, 3), 3),
                   ((2, 3, 0), 3), ((1, 3, 1, 1), 3), ((2, 3, 4, 5, 6, 7), 3)]
      for affine in (0, 2) for training in (True, False)),
    *(("linear", x, [(4, 3)], {}) for x in [(3,), (0, 3), (2, 0, 3), (2, 3, 3), (3, 4)]),
    # a 1-d w, and the bias shapes F.linear broadcasts (or refuses: which depends on x's rank)
    *(("linear", x, others, {}) for x in [(3,), (2, 3), (4, 2, 3), (0, 3)]
      for others in [[(3,)], [(3,), ()], [(3,), (1,)], [(3,), (1, 1)], [(4, 3), ()], [(4, 3), (1,)],
                     [(4, 3), (1, 4)], [(4, 3), (2, 4)], [(4, 3), (2, 1)], [(4, 3), (4, 2, 4)], [(4, 3), (1, 1)]]),
]

#: each op's tensor parameters by name: torch.nn.functional's (fastconv.torch's too), and the
#: NumPy API's (fastconv's vocabulary, DESIGN.md: x, w, b)
_TENSOR_NAMES = {
    **dict.fromkeys(["conv2d", "conv1d", "conv_transpose2d", "linear"], (("input", "weight", "bias"), ("x", "w", "b"))),
    **dict.fromkeys(["max_pool2d", "avg_pool2d", "adaptive_avg_pool2d"], (("input",), ("x",))),
    "batch_norm": (("input", "running_mean", "running_var", "weight", "bias"),
                   ("x", "running_mean", "running_var", "weight", "bias")),
}

#: forms whose tensors are passed by keyword: F.conv2d(input=x, weight=w, bias=b, ...)
_KEYWORD_FORMS = [
    ("conv2d", (2, 4, 5, 5), [(2, 4, 3, 3), (2,)], {"padding": 1}),
    ("conv2d", (4, 5, 5), [(2, 4, 3, 3)], {}),
    ("conv2d", (2, 4, 5, 5), [(2, 3, 3, 3)], {}),  # refused: 3 input channels in w for 4 in x
    ("conv1d", (2, 4, 7), [(2, 4, 3), (2,)], {"stride": 2}),
    ("conv_transpose2d", (2, 4, 5, 5), [(4, 2, 3, 3), (2,)], {"stride": 2}),
    ("linear", (2, 3), [(4, 3), (4,)], {}),
    ("linear", (4, 2, 3), [(3,)], {}),
    ("linear", (2, 3), [(4, 3), (2, 1)], {}),
    ("max_pool2d", (2, 3, 6, 6), [], {"kernel_size": 2}),
    ("max_pool2d", (3, 6, 6), [], {"kernel_size": 3, "stride": 2, "return_indices": True}),
    ("avg_pool2d", (2, 3, 6, 6), [], {"kernel_size": (3, 2), "count_include_pad": False}),
    ("adaptive_avg_pool2d", (2, 3, 6, 6), [], {"output_size": (2, 3)}),
    ("batch_norm", (2, 3, 4, 4), [(3,), (3,), (3,), (3,)], {"training": True}),
    ("batch_norm", (2, 3), [(3,), (3,)], {}),
]


def _form_id(form):
    op, x, others, kw = form
    return f"{op}-x{x}-{others}-{kw}".replace(" ", "")


def _call(function, tensors, names, kw, **more):
    """``function`` with ``tensors`` positional, or by the keywords ``names`` when given."""
    if names is None:
        return function(*tensors, **kw, **more)
    return function(**dict(zip(names, tensors)), **kw, **more)


@pytest.mark.parametrize("form, by_name", [pytest.param(f, False, id=_form_id(f)) for f in _FORMS]
                         + [pytest.param(f, True, id=_form_id(f) + "-by_name") for f in _KEYWORD_FORMS])
def test_call_forms_accepted_and_refused_as_pytorch(form, by_name):
    """One spelling or shape: if PyTorch accepts it, fastconv's NumPy API and the fastconv.torch
    functional (where there is one) give PyTorch's result; if PyTorch refuses it, they raise
    ValueError or TypeError. ``by_name``: the tensors go by keyword, each API's own names
    (PyTorch's in fastconv.torch, fastconv's x, w, b in the NumPy API)."""
    op, x_shape, others, kw = form
    torch_names, numpy_names = _TENSOR_NAMES[op] if by_name else (None, None)
    tensors = [torch.randn(x_shape)] + [torch.randn(s) for s in others]
    if op == "batch_norm":
        tensors[2] = tensors[2].abs() + 0.5  # a variance
    calls = {"numpy": lambda: _call(getattr(fc, op), [t.numpy().copy() for t in tensors], numpy_names, kw,
                                    backend="reference")}
    if hasattr(ft, op):
        calls["fastconv.torch"] = lambda: _call(getattr(ft, op), [t.clone() for t in tensors], torch_names, kw,
                                                backend="reference")
    try:
        expected = _call(getattr(F, op), [t.clone() for t in tensors], torch_names, kw)
    except Exception as e:  # noqa: BLE001  (PyTorch refuses with RuntimeError, IndexError, ...)
        for api, call in calls.items():
            with pytest.raises((ValueError, TypeError)):
                call()
        return
    expected = list(expected) if isinstance(expected, tuple) else [expected]
    for api, call in calls.items():
        got = call()
        if op == "batch_norm" and api == "numpy":
            got = got.y  # the NumPy API also returns the statistics; the torch functional, y as F does
        got = list(got) if isinstance(got, tuple) else [got]
        assert len(got) == len(expected), api
        for g, e in zip(got, expected):
            _compare(f"{api} {_form_id(form)}", g, e.detach())


# --------------------------------------------------------------------------------------------
# unbatched inputs: a batch of one, on every backend
# --------------------------------------------------------------------------------------------

_UNBATCHED = {  # op: (x shape without N, other tensor shapes, hyper-parameters)
    "conv2d": ((4, 6, 5), [(3, 4, 3, 2), (3,)], {"padding": 1, "stride": (2, 1)}),
    "conv1d": ((4, 7), [(6, 2, 3), (6,)], {"groups": 2, "dilation": 2}),
    "conv_transpose2d": ((4, 5, 6), [(4, 2, 3, 2), (2,)], {"stride": 2, "output_padding": 1}),
    "max_pool2d": ((3, 6, 5), [], {"kernel_size": (3, 2), "padding": 1, "ceil_mode": True}),
    "avg_pool2d": ((3, 6, 5), [], {"kernel_size": 3, "stride": 2, "padding": (1,)}),
    "adaptive_avg_pool2d": ((3, 6, 5), [], {"output_size": (4, None)}),
}


@pytest.mark.parametrize("name", _UNBATCHED)
def test_unbatched_is_a_batch_of_one(name, backend, rng):
    """An unbatched x gives exactly the batched result of x[None] without its batch axis: a fresh
    C-contiguous array; the backward's dy and dx are unbatched likewise."""
    x_shape, others, hyper = _UNBATCHED[name]
    x = rng.standard_normal(x_shape).astype(np.float32)
    tensors = [rng.standard_normal(s).astype(np.float32) for s in others]
    forward, backward = getattr(fc, name), getattr(fc, name + "_backward")
    y = forward(x, *tensors, backend=backend, **hyper)
    assert_equal(y, forward(x[None], *tensors, backend=backend, **hyper)[0], f"{name} forward")
    assert_fresh_output(y, np.float32, x, *tensors)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    w = tensors[:1]  # the convolutions' backward takes w, not b
    grads = backward(dy, x, *w, backend=backend, **hyper)
    batched = backward(dy[None], x[None], *w, backend=backend, **hyper)
    dx, dx4 = (grads[0], batched[0]) if isinstance(grads, tuple) else (grads, batched)
    assert_equal(dx, dx4[0], f"{name} dx")
    assert_fresh_output(dx, np.float32, x, dy, *tensors)
    if isinstance(grads, tuple):  # dw and db: the batch of one contributes all there is
        for g, g4 in zip(grads[1:], batched[1:]):
            assert_equal(g, g4, f"{name} dw/db")
    with pytest.raises(ValueError, match="expected dy with"):  # dy follows x: no batch axis
        backward(dy[None], x, *w, backend=backend, **hyper)
