"""Batch norm followed by hardtanh (ReLU6 = hardtanh(0, 6)), fused: one op, one pass each way.

MobileNetV2 puts ``BatchNorm2d, ReLU6(inplace=True)`` after most of its convolutions. Unfused,
the activation costs PyTorch's own clone + clamp forward and ``hardtanh_backward``, three more
passes over each activation tensor (measured here, AMD EPYC Zen 1, 2 threads, batch 32: ~60 ms of
a ~650 ms training step). Fused, the forward clamps as it writes y and the backward masks dy as it
reads it, recomputing the value before the clamp from x (see ``csrc/norm.cpp``).

- ``fastconv::batch_norm_hardtanh(x, weight?, bias?, running_mean?, running_var?, training,
  momentum, eps, min_val, max_val, backend) -> (y, mean, invstd, new_running_mean,
  new_running_var)``: ``fastconv::batch_norm``'s schema with the clamp's bounds; pure, as that op
  (empty running statistics when none are updated); :func:`batch_norm_hardtanh` copies them into
  the caller's buffers in place.
- ``fastconv::batch_norm_hardtanh_backward(dy, x, weight?, bias?, mean, invstd, training, min_val,
  max_val, needs[3], backend) -> (dx, dweight, dbias)``; an unneeded gradient is an empty tensor.

Both are ``torch.library.custom_op`` ops (``opcheck``, autograd, torch.compile); they run on CPU
tensors through the NumPy API (``fastconv.batch_norm(..., hardtanh=)``). Semantics are exactly
``F.hardtanh(F.batch_norm(...), min_val, max_val)``: y is clamped (NaN stays NaN); the gradient
is zero where the batch norm's output is <= min_val or >= max_val, as ``hardtanh_backward`` makes
it, and the batch norm's gradients are taken of that masked dy.

:class:`BatchNorm2dHardtanh` is ``fastconv.torch.BatchNorm2d`` with the clamp after it; ``patch``
turns a ``BatchNorm2d`` directly followed by a ``ReLU6`` / ``Hardtanh`` in an ``nn.Sequential``
into it, and the activation into a pass-through (:class:`FusedReLU6`, :class:`FusedHardtanh`),
so ``state_dict`` keys and parameters stay the same. Inputs the op does not take (off the CPU,
not NCHW-contiguous, e.g. channels_last) run unfused: fastconv's batch norm, then PyTorch's
hardtanh.
"""

from __future__ import annotations

from typing import Optional

import torch

import fastconv as fc

from .exchange import from_array, to_array
from .modules import BatchNorm2d

Tensor = torch.Tensor
_NAME = "fastconv::batch_norm_hardtanh"


def _empty_or(like: Tensor, a) -> Tensor:
    # a custom op returns tensors, never None: what is absent is an empty tensor
    return like.new_empty(0) if a is None else from_array(a)


def _forward_kernel(x: Tensor, weight: Optional[Tensor], bias: Optional[Tensor], running_mean: Optional[Tensor],
                running_var: Optional[Tensor], training: bool, momentum: float, eps: float, min_val: float,
                max_val: float, backend: str) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    r = fc.batch_norm(to_array(x), to_array(running_mean), to_array(running_var), to_array(weight), to_array(bias),
                      training, momentum, eps, hardtanh=(min_val, max_val), backend=backend)
    # the new running statistics only when training updates them (eval returns copies; nobody needs those)
    new = [r.running_mean, r.running_var] if training else [None, None]
    return (from_array(r.y), from_array(r.mean), from_array(r.invstd), *(_empty_or(x, a) for a in new))


_forward_op = torch.library.custom_op(_NAME, mutates_args=())(_forward_kernel)


@_forward_op.register_fake
def _forward_fake(x, weight, bias, running_mean, running_var, training, momentum, eps, min_val, max_val, backend):
    C = x.shape[1] if x.dim() >= 2 else 0
    stats = [x.new_empty(C if training and v is not None else 0) for v in (running_mean, running_var)]
    return x.new_empty(x.shape), x.new_empty(C), x.new_empty(C), *stats


def _backward_kernel(dy: Tensor, x: Tensor, weight: Optional[Tensor], bias: Optional[Tensor], mean: Tensor,
                 invstd: Tensor, training: bool, min_val: float, max_val: float, needs: list[bool],
                 backend: str) -> tuple[Tensor, Tensor, Tensor]:
    grads = fc.batch_norm_backward(to_array(dy), to_array(x), to_array(weight), mean=to_array(mean),
                                   invstd=to_array(invstd), training=training, needs=tuple(needs),
                                   bias=to_array(bias), hardtanh=(min_val, max_val), backend=backend)
    return tuple(_empty_or(x, g) for g in grads)


_backward_op = torch.library.custom_op(_NAME + "_backward", mutates_args=())(_backward_kernel)


@_backward_op.register_fake
def _backward_fake(dy, x, weight, bias, mean, invstd, training, min_val, max_val, needs, backend):
    C = x.shape[1] if x.dim() >= 2 else 0
    dweight = x.new_empty(C if needs[1] and weight is not None else 0)
    return x.new_empty(x.shape if needs[0] else 0), dweight, x.new_empty(C if needs[2] else 0)


def _setup_context(ctx, inputs, output):
    x, weight, bias, _, _, training, _, _, min_val, max_val, backend = inputs
    _, mean, invstd, _, _ = output
    ctx.save_for_backward(x, weight, bias, mean, invstd)
    ctx.args = (training, min_val, max_val)
    ctx.backend = backend


def _backward(ctx, dy, *unused):
    x, weight, bias, mean, invstd = ctx.saved_tensors
    needs = list(ctx.needs_input_grad[:3])
    grads = _backward_op(dy.contiguous(), x, weight, bias, mean, invstd, *ctx.args, needs, ctx.backend)
    return (*(g if need else None for g, need in zip(grads, needs)), None, None, None, None, None, None, None, None)


_forward_op.register_autograd(_backward, setup_context=_setup_context)


class _Eager(torch.autograd.Function):
    """The eager path: the op's kernels and autograd without the dispatcher and custom_op's
    generic layers (which cost ~160 us of the forward's ~370 and ~250 us per training step on a
    tiny input, 2-core EPYC; ~9 ms of a MobileNetV2 step), as fastconv.torch.ops does for its ops.
    Taken only where nothing intercepts ops (:func:`fastconv.torch.ops._eager`); everything else
    (torch.compile, fake tensors, modes, vmap) goes through the registered op."""

    @staticmethod
    def forward(ctx, *inputs):
        output = _forward_kernel(*inputs)
        ctx.mark_non_differentiable(*output[1:])
        _setup_context(ctx, inputs, output)
        return output

    @staticmethod
    def backward(ctx, dy, *unused):
        x, weight, bias, mean, invstd = ctx.saved_tensors
        needs = list(ctx.needs_input_grad[:3])
        grads = _backward_kernel(dy.contiguous(), x, weight, bias, mean, invstd, *ctx.args, needs, ctx.backend)
        return (*(g if need else None for g, need in zip(grads, needs)), None, None, None, None, None, None, None,
                None)


def _call(*args):
    """``fastconv::batch_norm_hardtanh(*args)``: on the eager path without the dispatcher."""
    from .ops import _eager

    if not _eager(args[:5]):
        return _forward_op(*args)
    if torch.is_grad_enabled() and torch._C._any_requires_grad(*args[:5]):
        return _Eager.apply(*args)
    return _forward_kernel(*args)


def _fusable(input: Tensor, *tensors) -> bool:
    """Whether the fused op takes these: CPU tensors, x NCHW-contiguous (channels_last and CUDA
    inputs run unfused, keeping the unfused path's memory format and device rules)."""
    return input.device.type == "cpu" and input.is_contiguous() and all(
        t is None or t.device.type == "cpu" for t in tensors)


def batch_norm_hardtanh(input, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1,
                        eps=1e-5, min_val=-1.0, max_val=1.0, *, backend="auto"):
    """``F.hardtanh(F.batch_norm(input, ...), min_val, max_val)`` in one pass each way
    (``min_val=0, max_val=6``: ReLU6). Running statistics are updated in place as
    :func:`fastconv.torch.batch_norm` updates them."""
    if not isinstance(input, torch.Tensor):
        raise TypeError(f"fastconv.torch.batch_norm_hardtanh: expected input to be a torch.Tensor, "
                        f"got {type(input).__name__}")
    training = bool(training)
    if not _fusable(input, running_mean, running_var, weight, bias):
        from .ops import batch_norm  # the unfused path: fastconv's batch norm, PyTorch's hardtanh
        y = batch_norm(input, running_mean, running_var, weight, bias, training, momentum, eps, backend=backend)
        return torch.nn.functional.hardtanh(y, min_val, max_val)
    y, _, _, new_mean, new_var = _call(input, weight, bias, running_mean, running_var, training, float(momentum),
                                       float(eps), float(min_val), float(max_val), backend)
    if training:
        with torch.no_grad():
            for running, new in ((running_mean, new_mean), (running_var, new_var)):
                if running is not None:
                    running.copy_(new)
    return y


class BatchNorm2dHardtanh(BatchNorm2d):
    """``fastconv.torch.BatchNorm2d`` followed by ``hardtanh(min_val, max_val)``, fused; what
    :func:`fastconv.torch.patch` makes of a ``BatchNorm2d`` followed by a ``ReLU6`` / ``Hardtanh``.
    The parameters, buffers and ``state_dict`` keys are the batch norm's."""

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True,
                 device=None, dtype=None, *, min_val=0.0, max_val=6.0, bias=True, backend="auto"):
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype, bias=bias,
                         backend=backend)
        self.min_val, self.max_val = float(min_val), float(max_val)

    def forward(self, input):
        return batch_norm_hardtanh(input, *self._batch_norm_args(input), self.min_val, self.max_val,
                                   backend=self.backend)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, hardtanh=({self.min_val}, {self.max_val})"


class _Fused:
    """An activation whose work the batch norm before it does: the input passes through."""

    def forward(self, input):
        return input


class FusedReLU6(_Fused, torch.nn.ReLU6):
    """A ``ReLU6`` fused into the ``BatchNorm2dHardtanh`` before it (see :func:`fastconv.torch.patch`)."""


class FusedHardtanh(_Fused, torch.nn.Hardtanh):
    """A ``Hardtanh`` fused into the ``BatchNorm2dHardtanh`` before it (see :func:`fastconv.torch.patch`)."""


#: the activations patch() fuses into the batch norm before them, and what they become
FUSED_ACTIVATIONS: dict[type, type] = {torch.nn.ReLU6: FusedReLU6, torch.nn.Hardtanh: FusedHardtanh}

__all__ = ["FUSED_ACTIVATIONS", "BatchNorm2dHardtanh", "FusedHardtanh", "FusedReLU6", "batch_norm_hardtanh"]
