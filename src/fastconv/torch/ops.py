"""fastconv's kernels as PyTorch custom ops (``torch.ops.fastconv.*``) and functional wrappers.

Each op family is registered from one table row, :data:`SPECS`, as two operators of a
``torch.library.Library``, the forward and its backward (so ``opcheck`` tests both, and
torch.compile sees both as opaque nodes in the forward and backward graphs):

=============================  =================================================================
``fastconv::conv2d``           ``(x, w, b?, stride[2], padding[4], dilation[2], groups, backend) -> y``
``fastconv::conv1d``           ``(x, w, b?, stride[1], padding[2], dilation[1], groups, backend) -> y``
``fastconv::conv_transpose2d`` ``(x, w, b?, stride[2], padding[2], output_padding[2], groups,
                               dilation[2], backend) -> y``
``fastconv::linear``           ``(x, w, b?, backend) -> y``
``fastconv::max_pool2d``       ``(x, kernel_size[2], stride[2], padding[2], dilation[2], ceil_mode,
                               backend) -> (y, indices)``
``fastconv::avg_pool2d``       ``(x, kernel_size[2], stride[2], padding[2], ceil_mode,
                               count_include_pad, divisor_override?, backend) -> y``
``fastconv::adaptive_avg_pool2d``  ``(x, output_size[2], backend) -> y``
``fastconv::batch_norm``       ``(x, weight?, bias?, running_mean?, running_var?, training, momentum,
                               eps, backend) -> (y, mean, invstd, new_running_mean, new_running_var)``
=============================  =================================================================

and ``fastconv::<name>_backward``: ``(dy, x, w, <params>, needs[3], backend) -> (dx, dw, db)`` for
the convolutions and linear; ``(dy, x, <params>, backend) -> dx`` for the pools (max pooling takes
the forward's ``indices`` after ``x``); ``(dy, x, weight?, mean, invstd, training, momentum, eps,
needs[3], backend) -> (dx, dweight, dbias)`` for batch norm. The ops take normalised
hyper-parameters (conv padding is explicit per side: top, bottom, left, right; conv1d's left,
right); the functional wrappers below accept every spelling ``torch.nn.functional`` accepts and
normalise with fastconv's own helpers.

Batch norm's op is pure: it returns the running statistics the training step gives (empty tensors
when none are updated: eval, or no running statistics) and :func:`batch_norm` copies them into the
caller's buffers, in place, as ``F.batch_norm`` updates them; the drop-in ``BatchNorm2d`` keeps
``num_batches_tracked`` and the momentum=None cumulative average as ``torch.nn`` does.

Memory format (channels_last). fastconv's kernels read and write NCHW-contiguous arrays. A call
whose 4-d ``x`` (or conv ``w``) is channels_last gets its 4-d results in channels_last, as PyTorch
does (:func:`_memory_format` states the rule: y, max pooling's indices, dx, dw), at exactly two
copies, each made by PyTorch and visible here: on the way in each channels_last tensor is made
NCHW-contiguous (``exchange.to_array``), on the way out each 4-d result is turned to channels_last
(:func:`_in_format`). The backward op does the same for its own inputs (dy, and x and w again:
the forward's NCHW copies are not kept, which would double the memory held for backward).
NCHW-contiguous tensors cross without any copy, as before; (C,) vectors never change layout.
Registration: what ``torch.library.custom_op`` registers, written out, because its generic layers
cost more than a tiny op (``Library.define`` with the pt2-compliant tag; the kernel for every device
as ``CompositeExplicitAutograd``; the fake kernel with ``torch.library.register_fake``; an
``Autograd`` kernel applying an ``autograd.Function``). The functional wrappers call each op
through :data:`CALL`: plain CPU/CUDA tensors with nothing intercepting ops (see :func:`_eager`)
go to the op's Autograd kernel directly, everything else (fake tensors, modes, torch.compile,
vmap) through the dispatcher, so both run the same kernels and the same autograd.Function.
On the eager path, a call whose tensors are plain NCHW-contiguous CPU tensors and whose signature
(shapes, dtypes, hyper-parameters, backend, ``use_backend`` context) ran before goes from the
tensors' NumPy views straight to the NumPy API's plan for that signature (:func:`_make_kernel`,
:func:`_caller`); the first call of a signature, and every call that raises, take the full path.
A forward that took the direct path keeps its backward's direct run per (needs, ``use_backend``
context), so backward builds no key (see :func:`_make_autograd`); max pooling whose indices
nobody keeps (no gradient to record, no ``return_indices``) runs a plan that skips them.
Autograd: the Function's forward saves the inputs (and max pooling's indices);
backward calls the backward op with ``needs`` taken from ``ctx.needs_input_grad``, so fastconv skips
gradients nobody asked for. A custom op cannot return ``None``, so an unneeded gradient comes back
from a backward op as an empty tensor of shape ``(0,)`` and autograd receives ``None`` for it.
The backward ops have no autograd formula themselves: double backward raises PyTorch's
"autograd not implemented" error for them.

Fake kernels compute output shapes for torch.compile / meta tensors: with concrete sizes through
fastconv's own shape logic (``fastconv._params``, which also validates, so tracing fails with the
eager message); with symbolic sizes through the same formulas written on SymInts.

Thread count: the kernels use fastconv's pool (``fastconv.set_num_threads``); nothing here touches
``torch.set_num_threads``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import FunctionType

import torch

import fastconv as fc

from .._checks import check_bool, check_float
from .._dispatch import _PLANS, _check_name, _current
from .._params import (
    adaptive_output_size,
    as_int,
    as_pair,
    as_single,
    batch_norm_channels,
    batch_norm_forward_channels,
    conv_output_size,
    conv_padding,
    conv_params,
    conv_transpose_params,
    linear_params,
    pool_output_size,
    pool_params,
    CACHE_SIZE,
    remembered,
)
from ..ops import conv as _conv_ops
from ..ops import linear as _linear_ops
from ..ops import norm as _norm_ops
from ..ops import pool as _pool_ops
from ..ops.conv import _padding_1d
from .exchange import (check_device, check_dtype, contiguous_array, float_dtypes, from_array, held_array,
                       in_channels_last, on_stream, to_array)

NAMESPACE = "fastconv"

Parameter = torch.nn.Parameter
#: the tensor types the eager path takes (a subclass, a FakeTensor say, goes to the dispatcher)
_PLAIN_TYPES = (torch.Tensor, Parameter)


# --------------------------------------------------------------------------------------------
# shape logic for the fake kernels
# --------------------------------------------------------------------------------------------

def _static(*shapes) -> bool:
    """True when every size is a plain int (not a SymInt being traced)."""
    return all(isinstance(s, int) for shape in shapes for s in shape)


def _conv2d_shape(op, x, w, stride, padding, dilation, groups):
    if _static(x.shape, w.shape):  # fastconv's validation and shape, the one place for both
        t, b, l, r = padding
        return conv_params(op, tuple(x.shape), tuple(w.shape), tuple(stride), ((t, b), (l, r)),
                           tuple(dilation), groups).y_shape
    N, _, H, W = x.shape
    C_out, _, KH, KW = w.shape
    return (N, C_out, conv_output_size(H, KH, padding[0], padding[1], stride[0], dilation[0]),
            conv_output_size(W, KW, padding[2], padding[3], stride[1], dilation[1]))


def _linear_shape(op, x, w):
    if _static(x.shape, w.shape):  # fastconv's validation and shape (the op's b is checked apart)
        return linear_params(op, tuple(x.shape), tuple(w.shape), None, True, True).y_shape
    return (*x.shape[:-1], *w.shape[:-1])  # w (out_features, in_features) or (in_features,)


def _pool_shape(op, x, kernel_size, stride, padding, dilation, ceil_mode, count_include_pad=True,
                divisor_override=None):
    if _static(x.shape):
        return pool_params(op, tuple(x.shape), tuple(kernel_size), tuple(stride), tuple(padding),
                           tuple(dilation), ceil_mode, count_include_pad, divisor_override).y_shape
    N, C, H, W = x.shape
    return (N, C, *(pool_output_size(size, k, p, s, d, ceil_mode)
                    for size, k, p, s, d in zip((H, W), kernel_size, padding, stride, dilation)))


def _max_pool2d_shape(op, x, kernel_size, stride, padding, dilation, ceil_mode):
    return _pool_shape(op, x, kernel_size, stride, padding, dilation, ceil_mode)


def _avg_pool2d_shape(op, x, kernel_size, stride, padding, ceil_mode, count_include_pad,
                      divisor_override):
    return _pool_shape(op, x, kernel_size, stride, padding, (1, 1), ceil_mode, count_include_pad,
                       divisor_override)


def _adaptive_avg_pool2d_shape(op, x, output_size):
    return (*x.shape[:2], *output_size)


def _conv1d_shape(op, x, w, stride, padding, dilation, groups):
    if _static(x.shape, w.shape):  # conv1d is conv2d over (N, C_in, 1, L), as fastconv runs it
        if x.dim() != 3 or w.dim() != 3:
            raise ValueError(f"{op}: expected x (N, C_in, L) and w (C_out, C_in/groups, K), got shapes "
                             f"{tuple(x.shape)} and {tuple(w.shape)}")
        N, C_out, _, OL = conv_params(op, (*x.shape[:2], 1, x.shape[2]), (*w.shape[:2], 1, w.shape[2]),
                                      (1, stride[0]), ((0, 0), tuple(padding)), (1, dilation[0]),
                                      groups).y_shape
        return (N, C_out, OL)
    return (x.shape[0], w.shape[0],
            conv_output_size(x.shape[2], w.shape[2], padding[0], padding[1], stride[0], dilation[0]))


def _conv_transpose2d_shape(op, x, w, stride, padding, output_padding, groups, dilation):
    if _static(x.shape, w.shape):
        if x.dim() != 4 or w.dim() != 4:
            raise ValueError(f"{op}: expected x (N, C_in, H, W) and w (C_in, C_out/groups, KH, KW), "
                             f"got shapes {tuple(x.shape)} and {tuple(w.shape)}")
        # the transposed convolution's output is the x-space of the convolution it transposes
        return conv_transpose_params(op, tuple(x.shape), tuple(w.shape), tuple(stride), tuple(padding),
                                     tuple(output_padding), groups, tuple(dilation)).x_shape
    return (x.shape[0], w.shape[1] * groups,
            *((size - 1) * s - 2 * p + d * (k - 1) + o + 1 for size, k, s, p, o, d in
              zip(x.shape[2:], w.shape[2:], stride, padding, output_padding, dilation)))


def _batch_norm_channels(op, x, training=None, **vectors):
    """Batch norm's C, after fastconv's own checks of x and the given (C,) vectors (``_params``,
    the rules the NumPy API applies; ``training`` given: the forward's too). With symbolic sizes
    only what needs no size is checked."""
    if _static(x.shape, *(v.shape for v in vectors.values() if v is not None)):
        shapes = {name: None if v is None else tuple(v.shape) for name, v in vectors.items()}
        if training is None:
            return batch_norm_channels(op, tuple(x.shape), **shapes)
        return batch_norm_forward_channels(op, tuple(x.shape), training, **shapes)
    return x.shape[1] if x.dim() >= 2 else 0


# --------------------------------------------------------------------------------------------
# the table
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class OpSpec:
    """One fastconv op family as a forward and a backward custom op.

    ``kind`` fixes the tensor arguments: ``"dense"`` is ``(x, w, b?) -> y`` with gradients
    ``(dx, dw, db)``; ``"pool"`` is ``x -> y``; ``"max_pool"`` is ``x -> (y, indices)``;
    ``"norm"`` is batch norm's ``(x, weight?, bias?, running_mean?, running_var?) -> (y, mean,
    invstd, new running_mean, new running_var)`` with gradients ``(dx, dweight, dbias)``.
    ``params`` is the schema of the hyper-parameters (the same for forward and backward);
    ``to_fastconv`` turns their values into fastconv keyword arguments; ``shape`` gives y's shape.
    ``bias_channels(w, *params)`` is the length of a dense op's b (C_out: ``w.shape[0]``, but
    ``w.shape[1] * groups`` for a transposed convolution). ``spatial``: 4-d results follow the
    inputs' memory format (see :func:`_memory_format`); linear's results are always contiguous, as
    PyTorch's are.
    """

    name: str
    kind: str
    params: str
    to_fastconv: Callable[..., dict]
    shape: Callable
    bias_channels: Callable = lambda w, *params: w.shape[0]
    spatial: bool = True
    #: ``(arrays, kwargs, needs, backend) -> run``: the NumPy API's plan for a call (validated
    #: there), ``run(*arrays)`` returning what the public op returns; arrays and results in this
    #: spec's order. For the direct path (:func:`_make_kernel`); None: the public op is called.
    plan: Callable | None = None
    plan_backward: Callable | None = None

    @property
    def qualname(self) -> str:
        return f"{NAMESPACE}::{self.name}"

    @property
    def n_params(self) -> int:
        return len(self.params.split(",")) if self.params else 0


def _conv2d_kwargs(stride, padding, dilation, groups):
    t, b, l, r = padding
    return dict(stride=tuple(stride), padding=((t, b), (l, r)), dilation=tuple(dilation), groups=groups)


def _max_pool2d_kwargs(kernel_size, stride, padding, dilation, ceil_mode):
    return dict(kernel_size=tuple(kernel_size), stride=tuple(stride), padding=tuple(padding),
                dilation=tuple(dilation), ceil_mode=ceil_mode)


def _avg_pool2d_kwargs(kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override):
    return dict(kernel_size=tuple(kernel_size), stride=tuple(stride), padding=tuple(padding),
                ceil_mode=ceil_mode, count_include_pad=count_include_pad,
                divisor_override=divisor_override)


def _conv1d_kwargs(stride, padding, dilation, groups):
    return dict(stride=stride[0], padding=tuple(padding), dilation=dilation[0], groups=groups)


def _conv_transpose2d_kwargs(stride, padding, output_padding, groups, dilation):
    return dict(stride=tuple(stride), padding=tuple(padding), output_padding=tuple(output_padding),
                groups=groups, dilation=tuple(dilation))


def _conv2d_plan(arrays, kw, needs, backend):
    return _conv_ops._conv2d_plan(*arrays, kw["stride"], kw["padding"], kw["dilation"], kw["groups"], backend)


def _conv2d_backward_plan(arrays, kw, needs, backend):
    return _conv_ops._conv2d_backward_plan(*arrays, kw["stride"], kw["padding"], kw["dilation"], kw["groups"],
                                           needs, backend)


def _linear_plan(arrays, kw, needs, backend):
    # the direct path's arrays are C-contiguous (views of contiguous tensors)
    return _linear_ops._linear_plan(*arrays, backend, True, True)


def _linear_backward_plan(arrays, kw, needs, backend):
    dy, x, w = arrays
    return _linear_ops._linear_backward_plan(dy, x, w, None, needs, backend, True)  # x: a contiguous view


def _max_pool2d_plan(arrays, kw, needs, backend):
    return _pool_ops._max_pool2d_plan(*arrays, kw["kernel_size"], kw["stride"], kw["padding"], kw["dilation"],
                                      kw["ceil_mode"], True, backend)


def _max_pool2d_backward_plan(arrays, kw, needs, backend):
    dy, x, indices = arrays
    return _pool_ops._max_pool2d_backward_plan(dy, x, kw["kernel_size"], kw["stride"], kw["padding"],
                                               kw["dilation"], kw["ceil_mode"], indices, backend)


def _avg_pool2d_args(kw):
    return (kw["kernel_size"], kw["stride"], kw["padding"], kw["ceil_mode"], kw["count_include_pad"],
            kw["divisor_override"])


def _avg_pool2d_plan(arrays, kw, needs, backend):
    return _pool_ops._avg_pool2d_plan(*arrays, *_avg_pool2d_args(kw), backend)


def _avg_pool2d_backward_plan(arrays, kw, needs, backend):
    run = _pool_ops._avg_pool2d_backward_plan(*arrays, *_avg_pool2d_args(kw), backend)
    return lambda dy, x: run(dy)  # x gave the plan its shape; the run needs only dy


def _batch_norm_plan(arrays, kw, needs, backend):
    x, weight, bias, running_mean, running_var = arrays
    run = _norm_ops._batch_norm_plan(x, running_mean, running_var, weight, bias, kw["training"],
                                     kw["momentum"], kw["eps"], backend)
    return lambda x, weight, bias, running_mean, running_var, in_place=False: run(
        x, running_mean, running_var, weight, bias, in_place)


def _batch_norm_backward_plan(arrays, kw, needs, backend):
    return _norm_ops._batch_norm_backward_plan(*arrays, kw["training"], needs, backend)


SPECS: tuple[OpSpec, ...] = (
    OpSpec("conv2d", "dense", "SymInt[2] stride, SymInt[4] padding, SymInt[2] dilation, SymInt groups",
           _conv2d_kwargs, _conv2d_shape, plan=_conv2d_plan, plan_backward=_conv2d_backward_plan),
    OpSpec("linear", "dense", "", dict, _linear_shape, spatial=False, plan=_linear_plan,
           plan_backward=_linear_backward_plan),
    OpSpec("max_pool2d", "max_pool",
           "SymInt[2] kernel_size, SymInt[2] stride, SymInt[2] padding, SymInt[2] dilation, bool ceil_mode",
           _max_pool2d_kwargs, _max_pool2d_shape, plan=_max_pool2d_plan, plan_backward=_max_pool2d_backward_plan),
    OpSpec("avg_pool2d", "pool",
           "SymInt[2] kernel_size, SymInt[2] stride, SymInt[2] padding, bool ceil_mode, "
           "bool count_include_pad, SymInt? divisor_override",
           _avg_pool2d_kwargs, _avg_pool2d_shape, plan=_avg_pool2d_plan, plan_backward=_avg_pool2d_backward_plan),
    OpSpec("adaptive_avg_pool2d", "pool", "SymInt[2] output_size",
           lambda output_size: dict(output_size=tuple(output_size)), _adaptive_avg_pool2d_shape),
    OpSpec("conv1d", "dense", "SymInt[1] stride, SymInt[2] padding, SymInt[1] dilation, SymInt groups",
           _conv1d_kwargs, _conv1d_shape),
    OpSpec("conv_transpose2d", "dense",
           "SymInt[2] stride, SymInt[2] padding, SymInt[2] output_padding, SymInt groups, SymInt[2] dilation",
           _conv_transpose2d_kwargs, _conv_transpose2d_shape,
           bias_channels=lambda w, stride, padding, output_padding, groups, dilation: w.shape[1] * groups),
    # momentum and eps reach the backward op only to keep one parameter list per row; it ignores them
    OpSpec("batch_norm", "norm", "bool training, float momentum, float eps",
           lambda training, momentum, eps: dict(training=training, momentum=momentum, eps=eps),
           lambda op, x, *vectors: tuple(x.shape), plan=_batch_norm_plan, plan_backward=_batch_norm_backward_plan),
)

#: per kind: (forward tensors, forward returns, backward tensors, backward extra params, backward returns)
_KINDS = {
    "dense": ("Tensor x, Tensor w, Tensor? b", "Tensor", "Tensor dy, Tensor x, Tensor w",
              "bool[3] needs, ", "(Tensor, Tensor, Tensor)"),
    "pool": ("Tensor x", "Tensor", "Tensor dy, Tensor x", "", "Tensor"),
    "max_pool": ("Tensor x", "(Tensor, Tensor)", "Tensor dy, Tensor x, Tensor indices", "", "Tensor"),
    "norm": ("Tensor x, Tensor? weight, Tensor? bias, Tensor? running_mean, Tensor? running_var",
             "(Tensor, Tensor, Tensor, Tensor, Tensor)", "Tensor dy, Tensor x, Tensor? weight, Tensor mean, "
             "Tensor invstd", "bool[3] needs, ", "(Tensor, Tensor, Tensor)"),
}


def _schemas(spec: OpSpec) -> tuple[str, str]:
    fwd_tensors, fwd_ret, bwd_tensors, bwd_extra, bwd_ret = _KINDS[spec.kind]
    params = f"{spec.params}, " if spec.params else ""
    return (f"({fwd_tensors}, {params}str backend) -> {fwd_ret}",
            f"({bwd_tensors}, {params}{bwd_extra}str backend) -> {bwd_ret}")


# --------------------------------------------------------------------------------------------
# kernels: tensors -> arrays (zero-copy), fastconv, arrays -> tensors
# --------------------------------------------------------------------------------------------

_TENSOR_NAMES = {("dense", False): ("x", "w", "b"), ("dense", True): ("dy", "x", "w"),
                 ("pool", False): ("x",), ("pool", True): ("dy", "x"),
                 ("max_pool", False): ("x",), ("max_pool", True): ("dy", "x", "indices"),
                 ("norm", False): ("x", "weight", "bias", "running_mean", "running_var"),
                 ("norm", True): ("dy", "x", "weight", "mean", "invstd")}


_EVERYWHERE = (torch.float32, torch.float64)  # the float dtypes every device takes


def _check_tensors(op: str, names, tensors) -> None:
    for name, t in zip(names, tensors):
        if t is not None:
            if name == "indices":
                check_dtype(op, name, t, (torch.int64,))
            elif t.dtype not in _EVERYWHERE:  # the device decides (float16 on CUDA)
                check_dtype(op, name, t, float_dtypes(t))


def _split(spec: OpSpec, backward: bool):
    """The op's name and a function splitting its arguments into (tensors, params), tensors checked."""
    op = spec.qualname + ("_backward" if backward else "")
    names = _TENSOR_NAMES[spec.kind, backward]
    n = len(names)

    def split(args):
        tensors, params = args[:n], args[n:n + spec.n_params]
        _check_tensors(op, names, tensors)
        return tensors, params

    return op, names, split


def _memory_format(spec: OpSpec, names, tensors) -> torch.memory_format:
    """The memory format of this call's 4-d results: ``torch.channels_last`` when a 4-d ``x`` or
    ``w`` is channels_last (its strides are, and it is not also NCHW-contiguous, as a tensor with
    one channel or a 1x1 image is), else ``torch.contiguous_format``.

    PyTorch's own rule on the CPU: a convolution with x *or* w in channels_last gives y, dx and dw
    in channels_last; pooling and batch norm follow x. dy never decides (autograd's dy comes in any
    layout). Called by the real kernels and the fake ones, so both give the same strides.
    """
    if spec.spatial:
        for name, t in zip(names, tensors):
            if (name in ("x", "w") and t is not None and t.dim() == 4 and not t.is_contiguous()
                    and t.is_contiguous(memory_format=torch.channels_last)):
                return torch.channels_last
    return torch.contiguous_format


def _in_format(outputs, memory_format: torch.memory_format):
    """The op's results with each 4-d one in ``memory_format``. For channels_last this is the one
    copy on the way out (the kernels write NCHW); (C,) vectors and empty placeholders stay as they are."""
    if memory_format == torch.contiguous_format:
        return outputs
    if isinstance(outputs, tuple):
        return tuple(_in_format(o, memory_format) for o in outputs)
    return in_channels_last(outputs) if outputs.dim() == 4 else outputs


def _grads(like: torch.Tensor, grads) -> tuple:
    # a custom op returns tensors, never None: an unneeded gradient is an empty tensor
    return tuple(like.new_empty(0) if g is None else from_array(g) for g in grads)


def _call_fastconv(spec: OpSpec, backward: bool, arrays, params, args):
    """fastconv's public op for this spec on ``arrays`` (the spec's tensors as arrays), as it returns."""
    if spec.kind == "norm":
        training, momentum, eps = params
        if backward:
            dy, x, weight, mean, invstd = arrays
            return fc.batch_norm_backward(dy, x, weight, mean=mean, invstd=invstd, training=training,
                                          needs=tuple(args[-2]), backend=args[-1])
        x, weight, bias, running_mean, running_var = arrays
        return fc.batch_norm(x, running_mean, running_var, weight, bias, training, momentum, eps, backend=args[-1])
    kwargs = dict(spec.to_fastconv(*params), backend=args[-1])
    if not backward:
        if spec.kind == "max_pool":
            return getattr(fc, spec.name)(*arrays, return_indices=True, **kwargs)
        return getattr(fc, spec.name)(*arrays, **kwargs)
    if spec.kind == "dense":
        return getattr(fc, spec.name + "_backward")(*arrays, needs=tuple(args[-2]), **kwargs)
    if spec.kind == "max_pool":
        dy, x, indices = arrays
        return getattr(fc, spec.name + "_backward")(dy, x, indices=indices, **kwargs)
    return getattr(fc, spec.name + "_backward")(*arrays, **kwargs)


def _to_tensors(spec: OpSpec, backward: bool, tensors, result, params):
    """What ``_call_fastconv`` returned, as the op's tensors (sharing the arrays' memory)."""
    if spec.kind == "norm":
        if backward:
            return _grads(tensors[1], result)
        # the new running statistics only when training updates them (eval returns copies; nobody needs those)
        training = params[0]
        new = [from_array(a) if training and a is not None else tensors[0].new_empty(0)
               for a in (result.running_mean, result.running_var)]
        return (from_array(result.y), from_array(result.mean), from_array(result.invstd), *new)
    if backward and spec.kind == "dense":
        return _grads(tensors[1], result)
    if not backward and spec.kind == "max_pool":
        return from_array(result[0]), from_array(result[1])
    return from_array(result)


def _direct_keyer(names):
    """``key(args)``: the direct path's key for a call (see :func:`_make_kernel`), or None when it
    does not apply: a tensor of another type than a plain Tensor or Parameter, off the CPU, or an
    x, w, ... not NCHW-contiguous (the full path copies it and decides the results' memory format
    from it; dy never decides, and the direct path makes it contiguous). Written out per tensor
    count: this runs on every call, and a generic loop cost a tiny op 2 us."""
    n = len(names)
    any_layout = tuple(name == "dy" for name in names)
    plain = _PLAIN_TYPES

    def ok(t, any_layout):
        return type(t) in plain and t.is_cpu and (any_layout or t.is_contiguous())

    if n == 1:
        def key(args):
            x = args[0]
            if type(x) in plain and x.is_cpu and x.is_contiguous():
                return (_current.get(), args[1:], x.shape, x.dtype)
            return None
        return key

    if n == 3:  # the dense ops' (x, w, b?) and (dy, x, w): the third may be None (b)
        loose = any_layout[0]

        def key(args):
            t0, t1, t2 = args[0], args[1], args[2]
            if (type(t0) in plain and t0.is_cpu and (loose or t0.is_contiguous())
                    and type(t1) in plain and t1.is_cpu and t1.is_contiguous()):
                if t2 is None:
                    return (_current.get(), args[3:], t0.shape, t0.dtype, t1.shape, t1.dtype, None)
                if type(t2) in plain and t2.is_cpu and t2.is_contiguous():
                    return (_current.get(), args[3:], t0.shape, t0.dtype, t1.shape, t1.dtype, t2.shape, t2.dtype)
            return None
        return key

    if n == 5 and not any_layout[0]:  # batch norm's forward: x, then four optional (C,) vectors
        def key(args):
            x = args[0]
            if not (type(x) in plain and x.is_cpu and x.is_contiguous()):
                return None
            parts = [_current.get(), args[5:], x.shape, x.dtype]
            for t in args[1:5]:
                if t is None:
                    parts.append(None)
                elif type(t) in plain and t.is_cpu and t.is_contiguous():
                    parts.append(t.shape)
                    parts.append(t.dtype)
                else:
                    return None
            return tuple(parts)
        return key

    def key(args):
        parts = [_current.get(), args[n:]]
        for t, loose in zip(args[:n], any_layout):
            if t is None:
                parts.append(None)
            elif ok(t, loose):
                parts.append(t.shape)
                parts.append(t.dtype)
            else:
                return None
        return tuple(parts)

    return key


def _direct_wrap(spec: OpSpec, backward: bool, params):
    """``wrap(result, tensors)``: what fastconv's plan returned as the op's tensors (the direct
    path's :func:`_to_tensors`, without the per-call branching: CPU arrays only)."""
    from_numpy = torch.from_numpy
    if backward:
        if spec.kind in ("dense", "norm"):
            return lambda result, tensors: tuple(tensors[1].new_empty(0) if g is None else from_numpy(g)
                                                 for g in result)
        return lambda result, tensors: from_numpy(result)
    if spec.kind == "max_pool":
        return lambda result, tensors: (from_numpy(result[0]), from_numpy(result[1]))
    if spec.kind == "norm":
        if params[0]:  # training: the new running statistics (None where not given)
            def wrap(result, tensors):
                y, mean, invstd, new_mean, new_var = result
                return (from_numpy(y), from_numpy(mean), from_numpy(invstd),
                        tensors[0].new_empty(0) if new_mean is None else from_numpy(new_mean),
                        tensors[0].new_empty(0) if new_var is None else from_numpy(new_var))
            return wrap
        return lambda result, tensors: (from_numpy(result[0]), from_numpy(result[1]), from_numpy(result[2]),
                                        tensors[0].new_empty(0), tensors[0].new_empty(0))
    return lambda result, tensors: from_numpy(result)


def _make_kernel(spec: OpSpec, backward: bool):
    """The op's kernel for every device: tensors to arrays (zero-copy), fastconv, arrays to tensors.

    Direct path: a call whose tensors are all CPU and NCHW-contiguous is keyed by its signature
    (shapes, dtypes, hyper-parameters, backend, ``use_backend`` context). The first call of a
    signature takes the full path below (the device, dtype and memory-format checks, and the NumPy
    API's validation, raising as always), then keeps fastconv's plan for the signature
    (:func:`fastconv._dispatch.planned`) and how its results become tensors; later calls run
    that plan on ``t.numpy()`` views, skipping about ten Python layers (issue 21: a tiny
    MaxPool2d's forward spent 60 us of 76 between the tensors and the kernel). Errors are never
    kept, and ``fastconv._dispatch.forget`` drops the plans with the NumPy API's.
    """
    op, names, split = _split(spec, backward)
    n = len(names)
    planner = spec.plan_backward if backward else spec.plan
    direct: dict = {}
    _PLANS.append(direct)
    direct_key = _direct_keyer(names)

    def kernel(*args):
        key = direct_key(args)
        if key is not None:
            try:
                found = direct.get(key)
            except TypeError:  # an unhashable hyper-parameter (a list; the wrappers pass tuples)
                found = key = None
            if found is not None:
                return found(args)
        tensors, params = split(args)
        device = check_device(op, dict(zip(names, tensors)))
        memory_format = _memory_format(spec, names, tensors)
        if device == "cpu":
            result = _in_format(run(device, tensors, params, args), memory_format)
            if key is not None:
                if len(direct) >= CACHE_SIZE:
                    direct.clear()
                direct[key] = _direct_run(tensors, params, args)
            return result
        with on_stream(device, tensors[0]):
            return _in_format(run(device, tensors, params, args), memory_format)

    def run(device, tensors, params, args):
        arrays = [to_array(t, device=device) for t in tensors]  # channels_last: the one copy in
        return _to_tensors(spec, backward, tensors, _call_fastconv(spec, backward, arrays, params, args), params)

    def _direct_run(tensors, params, args):
        """The direct path's run for this call's signature: fastconv's plan where the spec names
        one, else the public op with these hyper-parameters."""
        if planner is None:
            def plan(*arrays):
                return _call_fastconv(spec, backward, arrays, params, args)
        else:
            kwargs = spec.to_fastconv(*params)
            needs = tuple(args[-2]) if backward and spec.kind in ("dense", "norm") else None
            plan = planner([contiguous_array(t) if t is not None else None for t in tensors], kwargs, needs, args[-1])
        wrap = _direct_wrap(spec, backward, params)

        # the views of the tensors a model holds across calls, per signature (held_array): the
        # parameters, and batch norm's running statistics (buffers); other tensors (a weight made
        # afresh for each call) are viewed anew
        held: dict = {}

        def param(t):
            if type(t) is Parameter:
                return held_array(held, t)
            return None if t is None else t.numpy(force=True)

        def view(t):
            return None if t is None else held_array(held, t)

        if n == 1:  # a pool's forward: x, NCHW-contiguous (the key said so)
            def run_direct(args):
                return wrap(plan(args[0].numpy(force=True)), args)
        elif n == 3 and not backward:  # x, w, b: NCHW-contiguous (the key said so)
            def run_direct(args):
                return wrap(plan(args[0].numpy(force=True), param(args[1]), param(args[2])), args)
        elif n == 5 and not backward:  # batch norm: x and the (C,) vectors, contiguous (the key said so)
            def run_direct(args):
                return wrap(plan(args[0].numpy(force=True), param(args[1]), param(args[2]), view(args[3]),
                                 view(args[4])), args)
        elif n == 3:  # a dense backward: dy (any layout), x, w
            def run_direct(args):
                return wrap(plan(contiguous_array(args[0]), args[1].numpy(force=True), param(args[2])), args)
        else:
            def run_direct(args):
                return wrap(plan(*[None if t is None else contiguous_array(t) for t in args[:n]]), args)

        if spec.kind == "norm" and not backward and params[0]:
            # training with the new running statistics written into the given tensors' memory:
            # fastconv.torch.batch_norm's update of a module's buffers. Returns (y, mean, invstd)
            # alone (the autograd.Function's forward takes any tuple whose first is y, and saves
            # the second and third): two empty placeholders less to make and mark.
            from_numpy = torch.from_numpy

            def run_in_place(args):
                x, weight, bias, running_mean, running_var = args[:5]
                y, mean, invstd, _, _ = plan(x.numpy(force=True), param(weight), param(bias), view(running_mean),
                                             view(running_var), in_place=True)
                # an in-place update, counted as PyTorch counts it
                torch._C._increment_version([t for t in (running_mean, running_var) if t is not None])
                return from_numpy(y), from_numpy(mean), from_numpy(invstd)

            run_direct.in_place = run_in_place
        if spec.kind == "max_pool" and not backward:
            # y alone, for a call nobody keeps indices of (no gradient to record, no
            # return_indices): the kernel then skips computing and storing them
            kwargs = spec.to_fastconv(*params)
            plan_y = _pool_ops._max_pool2d_plan(contiguous_array(tensors[0]), *kwargs.values(), False, args[-1])

            def run_y(x):
                return torch.from_numpy(plan_y(x.numpy(force=True)))

            run_direct.y_only = run_y
        if not backward:
            # the backward's direct runs (see _make_autograd), the in-place run's too
            run_direct.backward_runs = {}
            if hasattr(run_direct, "in_place"):
                run_direct.in_place.backward_runs = run_direct.backward_runs
        return run_direct

    kernel.__name__ = kernel.__qualname__ = op.replace("::", "_")
    kernel.direct, kernel.names = direct, names  # for the wrappers' calls (_caller)
    return kernel


def _make_fake(spec: OpSpec, backward: bool):
    op, names, split = _split(spec, backward)

    def fake(*args):
        tensors, params = split(args)
        return _in_format(shapes(tensors, params, args), _memory_format(spec, names, tensors))

    def shapes(tensors, params, args):
        if spec.kind == "norm":
            if backward:
                _, x, weight, mean, invstd = tensors
                C = _batch_norm_channels(op, x, weight=weight, mean=mean, invstd=invstd)
                needs = args[-2]
                return tuple(x.new_empty(shape if need else (0,)) for shape, need in
                             zip((x.shape, (C,), (C,)), (needs[0], needs[1] and weight is not None, needs[2])))
            x, weight, bias, running_mean, running_var = tensors
            training = params[0]
            C = _batch_norm_channels(op, x, training, running_mean=running_mean, running_var=running_var,
                                     weight=weight, bias=bias)
            y = x.new_empty(spec.shape(op, *tensors))
            new = [x.new_empty((C,) if training and r is not None else (0,)) for r in tensors[3:]]
            return (y, x.new_empty((C,)), x.new_empty((C,)), *new)
        if not backward:
            x = tensors[0]
            w = tensors[1:2]  # dense kinds pass w to the shape function, pools do not
            y = x.new_empty(spec.shape(op, x, *w, *params))
            b = tensors[2] if spec.kind == "dense" else None
            if b is not None and _static(b.shape, w[0].shape):
                C_out = spec.bias_channels(w[0], *params)
                if tuple(b.shape) != (C_out,):
                    raise ValueError(f"{op}: expected b of shape ({C_out},), got {tuple(b.shape)}")
            if spec.kind == "max_pool":
                return y, x.new_empty(y.shape, dtype=torch.int64)
            return y
        if spec.kind == "dense":
            _, x, w = tensors
            needs = args[-2]
            sizes = (x.shape, w.shape, (spec.bias_channels(w, *params),))
            return tuple(x.new_empty(size if need else (0,)) for size, need in zip(sizes, needs))
        return torch.empty_like(tensors[1], memory_format=torch.contiguous_format)

    return fake


# --------------------------------------------------------------------------------------------
# autograd: save inputs, call the backward op with needs from ctx.needs_input_grad
# --------------------------------------------------------------------------------------------

def _below_autograd(op, kernel, keyset, args):
    """The op's result below autograd: redispatched with the dispatcher's ``keyset``, or, on the
    eager path (see :func:`_eager`), from ``kernel`` called directly (``keyset`` None) or from the
    kernel's direct run for this call's signature, which :func:`_caller` found (``keyset`` that run)."""
    if keyset is None:
        # nothing below autograd to reach: the kernel only moves tensors to arrays and back, and
        # runs either inside the autograd.Function's forward (grad mode off) or with no tensor
        # that requires grad, so there is nothing for autograd to record (the guard cost 1.3 us)
        return kernel(*args)
    if type(keyset) is not torch._C.DispatchKeySet:
        return keyset(args)
    with torch._C._AutoDispatchBelowAutograd():
        return op.redispatch(keyset & torch._C._after_autograd_keyset, *args)


def _eager(tensors) -> bool:
    """True when the dispatcher would take this call straight to the op's kernels: plain CPU or
    CUDA tensors (not meta, no subclass such as a FakeTensor), and nothing that intercepts ops
    active: no torch.compile / dynamo tracing, no dispatch or torch-function mode, no functorch
    transform (vmap, grad), no jit tracing (see :func:`_intercepted`). Then a call skips the dispatcher: the kernel, or the same autograd.Function the op's
    Autograd kernel applies, is called directly. The dispatcher's trip into Python and back
    costs more than a tiny conv itself (about 50 us of 150 on a 2-core EPYC); anything the test
    above does not vouch for takes the registered op.
    """
    if _intercepted():
        return False
    for t in tensors:
        if t is not None and (type(t) not in _PLAIN_TYPES or t.is_meta):
            return False
    return True


def _make_autograd(spec: OpSpec, forward_op, kernel, call_backward):
    """The op's Autograd-key kernel: without a gradient to record, straight to the kernel below
    autograd; with one, through an autograd.Function whose backward calls the backward op.

    This is what ``torch.library.custom_op``'s ``register_autograd`` builds, less its generic
    layers (each call re-filling schema defaults, which these schemas do not have, cost 50 us of a
    tiny conv's 100 on a 2-core EPYC): the same dispatcher path, so opcheck, fake tensors, AOT
    autograd and torch.compile see the same op.
    """
    n_fwd = len(_TENSOR_NAMES[spec.kind, False])
    kind = spec.kind

    # what backward needs, per kind (one branch-free function each: this runs on every call)
    if kind == "dense":
        def save(ctx, args, output):
            ctx.save_for_backward(args[0], args[1])  # x, w (b is not needed for gradients)
    elif kind == "norm":
        def save(ctx, args, output):
            ctx.mark_non_differentiable(*output[1:])  # mean, invstd and the new running statistics
            ctx.save_for_backward(args[0], args[1], output[1], output[2])  # x, weight, mean, invstd
    elif kind == "max_pool":
        def save(ctx, args, output):
            indices = output[1]
            ctx.mark_non_differentiable(indices)
            ctx.save_for_backward(args[0], indices)
    else:
        def save(ctx, args, output):
            ctx.save_for_backward(args[0])

    def forward(ctx, keyset, *args):
        if type(keyset) is FunctionType:
            # the forward's direct run (see _caller), whose signature fixes the backward's but
            # for needs and the use_backend context: the backward keeps its runs there
            output = keyset(args)
            ctx.direct = keyset
        else:
            output = _below_autograd(forward_op, kernel, keyset, args)
            ctx.direct = None
        ctx.params, ctx.backend = args[n_fwd:-1], args[-1]
        save(ctx, args, output)
        return output

    n_bwd = len(_TENSOR_NAMES[spec.kind, True])
    found_backward = call_backward.found_for

    def run_backward(ctx, args, needs):
        """``call_backward(*args)``; on the eager path, for a forward that took the direct path,
        the backward op's direct run kept on the forward's run per (needs, use_backend context):
        no key to build (dy has y's shape and dtype, autograd sees to it; any layout is taken)."""
        found, dy = ctx.direct, args[0]
        if found is None or type(dy) not in _PLAIN_TYPES or not dy.is_cpu or _intercepted():
            return call_backward(*args)
        if torch.is_grad_enabled() and torch._C._any_requires_grad(*args[:n_bwd]):
            return call_backward(*args)  # create_graph: the backward op refuses double backward
        runs, key = found.backward_runs, (needs, _current.get())
        run = runs.get(key)
        if run is None:
            run = found_backward(args)
            if not run:  # the backward's first call of this signature: the full path plans it
                return call_backward(*args)
            runs[key] = run
        return run(args)

    def backward(ctx, *grads):
        dy = grads[0]  # max pooling's indices and batch norm's statistics get no gradient
        none_for_rest = (None,) * (len(ctx.params) + 1)  # hyper-parameters and backend
        if spec.kind in ("dense", "norm"):
            needs = tuple(bool(n) for n in ctx.needs_input_grad[1:4])  # x, w, b (x, weight, bias)
            dx, dw, db = run_backward(ctx, (dy, *ctx.saved_tensors, *ctx.params, needs, ctx.backend), needs)
            running = (None, None) if spec.kind == "norm" else ()  # running statistics: buffers
            return (None, dx if needs[0] else None, dw if needs[1] else None, db if needs[2] else None,
                    *running, *none_for_rest)
        dx = run_backward(ctx, (dy, *ctx.saved_tensors, *ctx.params, ctx.backend), None)
        return (None, dx, *none_for_rest)

    # custom_op's name for the class, so grad_fn names stay as they were
    function = type(f"GeneratedBackwardFor_{NAMESPACE}_{spec.name}_default", (torch.autograd.Function,),
                    {"forward": staticmethod(forward), "backward": staticmethod(backward)})

    # autograd.Function.apply less its Python layer (functorch's dead-wrapper unwrapping, default
    # arguments for setup_context, which this class does not define): 5 us of 15 per call. Only on
    # the eager path, where _eager has ruled out functorch transforms.
    eager_apply = super(torch.autograd.Function, function).apply

    def autograd_kernel(keyset, *args):
        """``keyset``: the dispatcher's, or None on the eager path."""
        if torch.is_grad_enabled() and torch._C._any_requires_grad(*args):
            return (eager_apply if keyset is None else function.apply)(keyset, *args)
        return _below_autograd(forward_op, kernel, keyset, args)

    autograd_kernel.apply_eager = eager_apply
    return autograd_kernel


def _no_autograd(op, kernel):
    """The backward ops' Autograd kernel: they have no derivative, so double backward is refused."""
    def autograd_kernel(keyset, *args):
        if torch.is_grad_enabled() and torch._C._any_requires_grad(*args):
            return _Refused.apply(op, kernel, keyset, *args)
        return _below_autograd(op, kernel, keyset, args)

    autograd_kernel.apply_eager = lambda below, *args: _Refused.apply(op, kernel, below, *args)
    return autograd_kernel


_is_compiling = torch.compiler.is_compiling
_function_mode = torch._C._is_torch_function_mode_enabled
_dispatch_modes = torch._C._len_torch_dispatch_stack
_functorch = torch._C._are_functorch_transforms_active
_jit_tracing = torch._C._is_tracing


def _intercepted() -> bool:
    """Whether anything that intercepts ops is active (see :func:`_eager`): torch.compile, a
    torch-function mode, a dispatch mode (FakeTensorMode, ...), a functorch transform, jit tracing.
    Five flag reads: the thread's included dispatch keys (what those add to) cost 1.1 us to read."""
    return _is_compiling() or _function_mode() or _dispatch_modes() > 0 or _functorch() or _jit_tracing()


def _caller(op, autograd_kernel, kernel, n_tensors: int):
    """``op(*args)`` as the wrappers call it: on the eager path (:func:`_eager`) the op's own
    Autograd kernel without the dispatcher, else through the dispatcher.

    A call whose signature the kernel has a direct run for (:func:`_make_kernel`: plain CPU
    tensors, x and w NCHW-contiguous) goes to that run at once, inside the autograd.Function when
    a gradient is to be recorded: one look-up replaces the autograd kernel's and the kernel's
    layers."""
    direct, direct_key = kernel.direct, _direct_keyer(kernel.names)
    apply_eager = autograd_kernel.apply_eager
    grad_enabled, any_requires_grad = torch.is_grad_enabled, torch._C._any_requires_grad

    def found_for(args):
        """The kernel's direct run for this call, None when there is none yet, False when the call
        cannot take the direct path (not plain CPU tensors, or an unhashable hyper-parameter)."""
        key = direct_key(args)
        if key is None:
            return False
        try:
            return direct.get(key)
        except TypeError:  # an unhashable hyper-parameter: the kernel's full path
            return False

    def call(*args):
        if _intercepted():
            return op(*args)
        found = found_for(args)
        if found:
            if grad_enabled() and any_requires_grad(*args[:n_tensors]):
                return apply_eager(found, *args)
            return found(args)
        if found is None or _eager(args[:n_tensors]):
            return autograd_kernel(None, *args)
        return op(*args)

    def y_only(*args):
        """max pooling's y alone (the wrappers' call without return_indices): with no gradient
        to record, the direct run that skips the indices; else ``call(*args)[0]``."""
        if not _intercepted():
            found = found_for(args)
            if found:
                if grad_enabled() and any_requires_grad(args[0]):
                    return apply_eager(found, *args)[0]
                return found.y_only(args[0])
        return call(*args)[0]

    def in_place(*args):
        """batch norm's training call with the running statistics it is given updated in place
        and returned empty (the direct run's ``in_place``); None when the call cannot take the
        direct path, or when a running statistic requires grad (not a buffer: the caller then
        copies the statistics ``call`` returns, outside autograd's graph)."""
        if not _intercepted() and not any_requires_grad(args[3], args[4]):
            found = found_for(args)
            if found:
                run = found.in_place
                if grad_enabled() and any_requires_grad(*args[:n_tensors]):
                    return apply_eager(run, *args)
                return run(args)
        return None

    call.y_only = y_only
    call.in_place = in_place
    call.found_for = found_for
    call.direct = direct  # for tests
    return call


class _Refused(torch.autograd.Function):
    """Records a backward op in the graph (create_graph=True) so that going back through it raises."""

    @staticmethod
    def forward(ctx, op, kernel, keyset, *args):
        ctx.op = op
        return _below_autograd(op, kernel, keyset, args)

    @staticmethod
    def backward(ctx, *grads):
        raise RuntimeError(f"Trying to backward through {ctx.op} but no autograd formula was registered: "
                           f"fastconv's backward ops have no derivative (double backward is not supported)")


#: the library the ops are defined in (a FRAGMENT: other code may add to the namespace)
_LIB = torch.library.Library(NAMESPACE, "FRAGMENT")


def _register(spec: OpSpec):
    """Define ``fastconv::<name>`` and ``fastconv::<name>_backward``: schema, kernel (every device:
    the kernel moves CPU tensors to NumPy and CUDA tensors to CuPy itself), fake kernel, autograd."""
    ops, kernels = [], []
    for backward, schema in zip((False, True), _schemas(spec)):
        name = spec.name + ("_backward" if backward else "")
        kernels.append(_make_kernel(spec, backward))
        _LIB.define(name + schema, tags=(torch.Tag.pt2_compliant_tag,))
        _LIB.impl(name, kernels[-1], "CompositeExplicitAutograd")
        torch.library.register_fake(f"{NAMESPACE}::{name}", _make_fake(spec, backward), lib=_LIB)
        ops.append(getattr(getattr(torch.ops, NAMESPACE), name).default)
    forward_op, backward_op = ops
    n_fwd, n_bwd = (len(_TENSOR_NAMES[spec.kind, backward]) for backward in (False, True))
    backward_autograd = _no_autograd(backward_op, kernels[1])
    call_backward = _caller(backward_op, backward_autograd, kernels[1], n_bwd)
    forward_autograd = _make_autograd(spec, forward_op, kernels[0], call_backward)
    _LIB.impl(spec.name, forward_autograd, "Autograd", with_keyset=True)
    _LIB.impl(spec.name + "_backward", backward_autograd, "Autograd", with_keyset=True)
    CALL[spec.name] = _caller(forward_op, forward_autograd, kernels[0], n_fwd)
    CALL[spec.name + "_backward"] = call_backward
    return forward_op, backward_op


#: ``{name: OpOverload}`` for every registered op, forward and backward (e.g. "conv2d_backward")
OPS: dict = {}
#: ``{name: call}``: each op as the functional wrappers below call it (see :func:`_caller`)
CALL: dict = {}
for _spec in SPECS:
    OPS[_spec.name], OPS[_spec.name + "_backward"] = _register(_spec)
del _spec


# --------------------------------------------------------------------------------------------
# functional API: torch.nn.functional's signatures, plus backend=
# --------------------------------------------------------------------------------------------
#
# The parameters carry torch.nn.functional's names (input, weight, bias), so a call that names
# them, F.conv2d(input=x, weight=w), runs unchanged here; the NumPy API keeps fastconv's own
# vocabulary (x, w, b: DESIGN.md).

def _batched(op, x, call, unbatched="C, H, W"):
    """Run ``call`` on batched x; an ``unbatched`` x (one dim fewer) runs as a batch of one, as in PyTorch."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{op}: expected x to be a torch.Tensor, got {type(x).__name__}")
    dims = 2 if unbatched == "C, L" else 3
    if x.dim() == dims:
        out = call(x.unsqueeze(0))
        return tuple(o.squeeze(0) for o in out) if isinstance(out, tuple) else out.squeeze(0)
    if x.dim() != dims + 1:
        raise ValueError(f"{op}: expected x with {dims} ({unbatched}) or {dims + 1} (N, {unbatched}) dims, "
                         f"got shape {tuple(x.shape)}")
    return call(x)


def _pool_stride(op, kernel_size, stride):
    # PyTorch: stride None (or an empty list) means the kernel size
    if stride is None or (isinstance(stride, (tuple, list)) and len(stride) == 0):
        return kernel_size
    return as_pair(op, "stride", stride, minimum=1)


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, backend="auto"):
    """``torch.nn.functional.conv2d`` on fastconv: padding an int, a pair, ``'same'``, ``'valid'``
    or ``((top, bottom), (left, right))``; input (N, C_in, H, W) or unbatched (C_in, H, W)."""
    op = "fastconv.torch.conv2d"
    _check_name(backend)
    if weight.dim() != 4:
        raise ValueError(f"{op}: expected weight with 4 dims (C_out, C_in/groups, KH, KW), got shape {tuple(weight.shape)}")
    stride, sides, dilation, groups = _conv2d_hyper(op, stride, padding, dilation, groups, tuple(weight.shape[2:]))
    if isinstance(input, torch.Tensor) and input.dim() == 4:  # batched: no _batched closure (1 us)
        return CALL["conv2d"](input, weight, bias, stride, sides, dilation, groups, backend)
    return _batched(op, input, lambda x4: CALL["conv2d"](x4, weight, bias, stride, sides, dilation, groups, backend))


@remembered
def _conv2d_hyper(op, stride, padding, dilation, groups, K):
    """conv2d's hyper-parameters in the op's form (padding per side), validated; remembered per
    spelling, as a module repeats its own on every call."""
    stride = as_pair(op, "stride", stride, minimum=1)
    dilation = as_pair(op, "dilation", dilation, minimum=1)
    groups = as_int(op, "groups", groups, minimum=1)
    return stride, conv_padding(op, padding, K, dilation, stride), dilation, groups


def conv1d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, backend="auto"):
    """``torch.nn.functional.conv1d`` on fastconv: padding an int, ``(p,)``, ``'same'``, ``'valid'``
    or per side ``(left, right)``; input (N, C_in, L) or unbatched (C_in, L)."""
    op = "fastconv.torch.conv1d"
    _check_name(backend)
    stride = as_single(op, "stride", stride, minimum=1)
    dilation = as_single(op, "dilation", dilation, minimum=1)
    groups = as_int(op, "groups", groups, minimum=1)
    if weight.dim() != 3:
        raise ValueError(f"{op}: expected weight with 3 dims (C_out, C_in/groups, K), got shape {tuple(weight.shape)}")
    # the NumPy API's 1-d spellings, as conv2d's per-side padding over (1, L); keep (left, right)
    sides = list(conv_padding(op, _padding_1d(op, padding), (1, weight.shape[2]), (1, dilation), (1, stride))[2:])
    return _batched(op, input, lambda x3: CALL["conv1d"](
        x3, weight, bias, [stride], sides, [dilation], groups, backend), unbatched="C, L")


def conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1, *,
                     backend="auto"):
    """``torch.nn.functional.conv_transpose2d`` on fastconv: input (N, C_in, H, W) or unbatched
    (C_in, H, W), weight (C_in, C_out/groups, KH, KW)."""
    op = "fastconv.torch.conv_transpose2d"
    _check_name(backend)
    stride, padding, output_padding, dilation = (
        list(as_pair(op, name, value, minimum=low)) for name, value, low in
        (("stride", stride, 1), ("padding", padding, 0), ("output_padding", output_padding, 0),
         ("dilation", dilation, 1)))
    groups = as_int(op, "groups", groups, minimum=1)
    if weight.dim() != 4:
        raise ValueError(f"{op}: expected weight with 4 dims (C_in, C_out/groups, KH, KW), got shape {tuple(weight.shape)}")
    return _batched(op, input, lambda x4: CALL["conv_transpose2d"](
        x4, weight, bias, stride, padding, output_padding, groups, dilation, backend))


def batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1,
               eps=1e-5, *, backend="auto"):
    """``torch.nn.functional.batch_norm`` on fastconv, input (N, C, *) with 2 to 5 dims.

    As in PyTorch, training normalises with the batch's statistics and updates ``running_mean``
    and ``running_var`` (when given) *in place*: ``(1 - momentum) * running + momentum * batch``,
    the unbiased batch variance for running_var. The op itself is pure (it returns the new
    statistics); the copy into the buffers happens here, under ``torch.no_grad``.
    """
    op = "fastconv.torch.batch_norm"
    _check_name(backend)
    if not isinstance(input, torch.Tensor):
        raise TypeError(f"{op}: expected input to be a torch.Tensor, got {type(input).__name__}")
    momentum = check_float(op, "momentum", momentum)
    eps = check_float(op, "eps", eps, low=0.0)
    training = bool(training)
    args = (input, weight, bias, running_mean, running_var, training, momentum, eps, backend)
    if training and (running_mean is not None or running_var is not None):
        # buffers: their memory written by the kernel's run itself, where it can be
        outputs = CALL["batch_norm"].in_place(*args)
        if outputs is not None:
            return outputs[0]
    y, _, _, new_mean, new_var = CALL["batch_norm"](*args)
    if training:
        for running, new in ((running_mean, new_mean), (running_var, new_var)):
            if running is not None:
                if running.requires_grad:  # not a buffer: keep the update out of autograd's graph
                    with torch.no_grad():
                        running.copy_(new)
                else:  # nothing for autograd to record (new never requires grad); no_grad cost 2 us
                    running.copy_(new)
    return y


def linear(input, weight, bias=None, *, backend="auto"):
    """``torch.nn.functional.linear`` on fastconv: input (*, in_features) and weight (out_features,
    in_features) -> (*, out_features), or weight (in_features,) -> (*).

    The op takes a bias of shape (out_features,). Any other bias PyTorch takes (``()``, ``(1,)``,
    ``(M, out_features)``, ...: :func:`fastconv._params.linear_params`, the NumPy API's rules) is
    added to the op's result here, by PyTorch, in the frame ``F.linear`` adds it in, so autograd
    sums its gradient to its shape.
    """
    _check_name(backend)
    if bias is None or (isinstance(bias, torch.Tensor) and isinstance(weight, torch.Tensor) and weight.dim() == 2
                        and bias.shape == weight.shape[:1]):
        return CALL["linear"](input, weight, bias, backend)
    op = "fastconv.torch.linear"
    for name, t in (("input", input), ("weight", weight), ("bias", bias)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{op}: expected {name} to be a torch.Tensor, got {type(t).__name__}")
    if (bias.dtype, bias.device) != (input.dtype, input.device):  # F.linear would not promote either
        raise TypeError(f"{op}: expected bias of input's dtype and device ({input.dtype}, {input.device}), "
                        f"got {bias.dtype}, {bias.device}")
    p = linear_params(op, tuple(input.shape), tuple(weight.shape), tuple(bias.shape), input.is_contiguous(),
                      bias.is_contiguous())
    y = CALL["linear"](input, weight, None, backend)
    return (y.reshape(p.y_shape if p.b_frame is None else p.b_frame) + bias).reshape(p.y_shape)


def _pool_window(op, backend, kernel_size, stride, padding):
    """The backend name checked; kernel_size, stride (default: the kernel) and padding as pairs."""
    _check_name(backend)
    kernel_size = as_pair(op, "kernel_size", kernel_size, minimum=1)
    stride = _pool_stride(op, kernel_size, stride)
    return kernel_size, stride, as_pair(op, "padding", padding, minimum=0)


def _uncached(hyper):
    """``hyper`` itself while torch.compile traces (dynamo cannot compare the private tags the cache
    keys bools with, and the compiled graph runs none of this anyway), else its remembered form."""
    return hyper.__wrapped__ if torch.compiler.is_compiling() else hyper


@remembered
def _max_pool2d_hyper(op, kernel_size, stride, padding, dilation, ceil_mode, backend):
    """max_pool2d's hyper-parameters in the op's form, validated; remembered per spelling, as a
    module repeats its own on every call."""
    return (*_pool_window(op, backend, kernel_size, stride, padding), as_pair(op, "dilation", dilation, minimum=1),
            check_bool(op, "ceil_mode", ceil_mode))


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False, *, backend="auto"):
    """``torch.nn.functional.max_pool2d`` on fastconv; ``return_indices`` gives ``(y, indices)``."""
    op = "fastconv.torch.max_pool2d"
    hyper = _uncached(_max_pool2d_hyper)(op, kernel_size, stride, padding, dilation, ceil_mode, backend)
    call = CALL["max_pool2d"] if return_indices else CALL["max_pool2d"].y_only
    if isinstance(input, torch.Tensor) and input.dim() == 4:  # batched: no _batched closure (1 us)
        return call(input, *hyper, backend)
    return _batched(op, input, lambda x4: call(x4, *hyper, backend))


@remembered
def _avg_pool2d_hyper(op, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override, backend):
    """avg_pool2d's hyper-parameters in the op's form, validated; remembered per spelling."""
    if divisor_override is not None:
        divisor_override = as_int(op, "divisor_override", divisor_override)
    return (*_pool_window(op, backend, kernel_size, stride, padding), check_bool(op, "ceil_mode", ceil_mode),
            check_bool(op, "count_include_pad", count_include_pad), divisor_override)


def avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None, *, backend="auto"):
    """``torch.nn.functional.avg_pool2d`` on fastconv."""
    op = "fastconv.torch.avg_pool2d"
    hyper = _uncached(_avg_pool2d_hyper)(op, kernel_size, stride, padding, ceil_mode, count_include_pad,
                                         divisor_override, backend)
    if isinstance(input, torch.Tensor) and input.dim() == 4:  # batched: no _batched closure (1 us)
        return CALL["avg_pool2d"](input, *hyper, backend)
    return _batched(op, input, lambda x4: CALL["avg_pool2d"](x4, *hyper, backend))


def adaptive_avg_pool2d(input, output_size, *, backend="auto"):
    """``torch.nn.functional.adaptive_avg_pool2d`` on fastconv; a None in ``output_size`` keeps
    that input size."""
    op = "fastconv.torch.adaptive_avg_pool2d"
    _check_name(backend)

    def call(x4):
        size = list(adaptive_output_size(op, output_size, tuple(x4.shape[2:])))
        return CALL["adaptive_avg_pool2d"](x4, size, backend)

    return _batched(op, input, call)


__all__ = ["OPS", "SPECS", "OpSpec", "adaptive_avg_pool2d", "avg_pool2d", "batch_norm", "conv1d", "conv2d",
           "conv_transpose2d", "linear", "max_pool2d"]
