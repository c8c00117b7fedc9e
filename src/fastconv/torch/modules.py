"""Drop-in ``torch.nn`` modules whose forward (and backward) runs on fastconv's kernels.

Each class *subclasses* its ``torch.nn`` counterpart and overrides only ``forward``: the
constructor signature (plus a keyword-only ``backend="auto"``), the parameters, ``state_dict``
keys, ``reset_parameters`` initialisation and ``isinstance(m, torch.nn.Conv2d)`` all stay
PyTorch's, so weights load across ``torch.nn`` and ``fastconv.torch`` in both directions.
``backend`` is a plain attribute, not a buffer, so it is not part of the ``state_dict``.

This also lets :func:`fastconv.torch.patch` turn an existing ``torch.nn`` module into its fastconv
counterpart by changing its class (see :mod:`fastconv.torch.patch`).
"""

from __future__ import annotations

import torch

from .._dispatch import _check_name
from . import ops
from .exchange import float_dtypes

_CALL = ops.CALL
#: the tensor types the modules' short paths take (anything else, subclasses included, takes the
#: functional wrapper, which hands it to the dispatcher)
_PLAIN = (torch.Tensor, torch.nn.Parameter)


def _immutable(value) -> bool:
    """Whether ``value`` is a plain int, bool, str or None, or a tuple of them (a value no code
    can change in place, so a result computed from it stays right while the attribute holds it)."""
    if type(value) is tuple:
        return all(map(_immutable, value))
    return value is None or type(value) in (int, bool, str)


def _member(module, table, name):
    """``module.<name>`` read from ``table`` (its ``_parameters`` or ``_buffers``) where it is
    registered there: an ``nn.Module.__getattr__`` read costs about 0.45 us, 5% of a tiny Linear's
    call (issue 21's per-call overhead). A parametrization's property, or a plain attribute that a
    hook sets (the old ``weight_norm``), is not in the table: read as an attribute."""
    return table[name] if name in table else getattr(module, name)


class _Fastconv:
    """What every drop-in shares: the ``backend`` attribute and its repr, and the hyper-parameters
    in the op's form, kept from one call to the next."""

    backend: str = "auto"
    #: the op's hyper-parameters as the last call made them (see :meth:`_hyper`); None when unknown
    _fc_hyper = None

    def _set_backend(self, backend: str) -> None:
        self.backend = _check_name(backend)

    def __setattr__(self, name, value):
        # any attribute set (kernel_size, padding, a new weight, ...) may change the hyper-parameters
        self.__dict__.pop("_fc_hyper", None)
        super().__setattr__(name, value)

    def _hyper(self, make, *config):
        """``make(*config)`` (the op's validated hyper-parameters, from this module's attributes
        ``config``), kept on the module until an attribute is set: a module repeats its own on every
        call, and even the remembered form costs a tiny layer ~3 us (issue 21: per-call overhead).
        Kept only when every value is immutable (a list attribute could change in place), and not
        while torch.compile traces (no side effects there)."""
        hyper = make(*config)
        if all(map(_immutable, config)) and not torch.compiler.is_compiling():
            self.__dict__["_fc_hyper"] = hyper
        return hyper

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, backend={self.backend!r}"


def unsupported_reason(module: torch.nn.Module) -> str | None:
    """Why fastconv cannot run ``module`` as configured, or None if it can.

    Used by the constructors (which raise) and by ``patch`` (which leaves the module alone and
    reports the reason).
    """
    if getattr(module, "padding_mode", "zeros") != "zeros":
        return f"padding_mode={module.padding_mode!r} (fastconv pads with zeros only)"
    # batch norm's running statistics reach the kernels too (num_batches_tracked, an int64
    # counter, stays in PyTorch)
    tensors = [("parameter", name, p) for name, p in module.named_parameters(recurse=False)]
    tensors += [("buffer", name, b) for name, b in module.named_buffers(recurse=False) if b.is_floating_point()]
    for what, name, p in tensors:
        if p.dtype not in float_dtypes(p):
            taken = " and ".join(str(d).removeprefix("torch.") for d in float_dtypes(p))
            return f"{what} {name!r} has dtype {p.dtype} (fastconv runs {taken} on {p.device.type})"
        if p.device.type == "meta":
            return f"{what} {name!r} is on the meta device"
    return None


def _check_supported(module: torch.nn.Module) -> None:
    reason = unsupported_reason(module)
    if reason is not None:
        raise ValueError(f"fastconv.torch.{type(module).__name__}: unsupported configuration: {reason}")


class _Conv(_Fastconv):
    """What Conv1d and Conv2d share: PyTorch's constructor (the same arguments for both), checked,
    and a forward through the fastconv.torch function named ``_op``."""

    _op: str

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 groups=1, bias=True, padding_mode="zeros", device=None, dtype=None, *, backend="auto"):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups,
                         bias, padding_mode, device, dtype)
        _check_supported(self)
        self._set_backend(backend)

    def forward(self, input):
        return getattr(ops, self._op)(input, self.weight, self.bias, self.stride, self.padding, self.dilation,
                                      self.groups, backend=self.backend)


class Conv2d(_Conv, torch.nn.Conv2d):
    """``torch.nn.Conv2d`` on fastconv. ``padding_mode`` must be ``'zeros'`` (ValueError otherwise)."""

    _op = "conv2d"

    def forward(self, input):
        params = self._parameters
        weight, bias = _member(self, params, "weight"), _member(self, params, "bias")
        if type(input) in _PLAIN and input.dim() == 4 and weight.dim() == 4:
            # a batched call: straight to the op with the hyper-parameters in its form, skipping
            # the functional wrapper's layers (issue 21: per-call overhead)
            hyper = self._fc_hyper or self._hyper(ops._uncached(ops._conv2d_hyper), "fastconv.torch.conv2d",
                                                  self.stride, self.padding, self.dilation, self.groups,
                                                  tuple(weight.shape[2:]))
            return _CALL["conv2d"](input, weight, bias, *hyper, self.backend)
        return ops.conv2d(input, weight, bias, self.stride, self.padding, self.dilation, self.groups,
                          backend=self.backend)


class Conv1d(_Conv, torch.nn.Conv1d):
    """``torch.nn.Conv1d`` on fastconv. ``padding_mode`` must be ``'zeros'`` (ValueError otherwise)."""

    _op = "conv1d"


class ConvTranspose2d(_Fastconv, torch.nn.ConvTranspose2d):
    """``torch.nn.ConvTranspose2d`` on fastconv, ``forward(input, output_size=None)`` as PyTorch's."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, output_padding=0,
                 groups=1, bias=True, dilation=1, padding_mode="zeros", device=None, dtype=None, *,
                 backend="auto"):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, output_padding, groups,
                         bias, dilation, padding_mode, device, dtype)
        _check_supported(self)
        self._set_backend(backend)

    def forward(self, input, output_size=None):
        # PyTorch's own helper turns output_size into output_padding (and checks it)
        output_padding = self._output_padding(input, output_size, self.stride, self.padding,
                                              self.kernel_size, 2, self.dilation)
        return ops.conv_transpose2d(input, self.weight, self.bias, self.stride, self.padding,
                                    output_padding, self.groups, self.dilation, backend=self.backend)


class BatchNorm2d(_Fastconv, torch.nn.BatchNorm2d):
    """``torch.nn.BatchNorm2d`` on fastconv: training and eval, ``affine=False``,
    ``track_running_stats=False``, ``momentum=None`` (cumulative average); the running statistics
    and ``num_batches_tracked`` are updated in place as PyTorch does."""

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True,
                 device=None, dtype=None, *, bias=True, backend="auto"):
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype, bias=bias)
        _check_supported(self)
        self._set_backend(backend)

    def forward(self, input):
        return ops.batch_norm(input, *self._batch_norm_args(input), backend=self.backend)

    def _batch_norm_args(self, input) -> tuple:
        """``(running_mean, running_var, weight, bias, training, momentum, eps)`` for this call,
        ``num_batches_tracked`` counted (shared with the fused batch norm + hardtanh of
        :mod:`fastconv.torch.fused`)."""
        # torch.nn.modules.batchnorm._BatchNorm.forward's decisions, step for step: which factor
        # updates the running statistics, and whether batch or running statistics normalise
        self._check_input_dim(input)
        # each buffer and parameter read once, from its table (_member)
        buffers, params = self._buffers, self._parameters
        running_mean, running_var = _member(self, buffers, "running_mean"), _member(self, buffers, "running_var")
        training, momentum = self.training, self.momentum
        factor = 0.0 if momentum is None else momentum
        if training and self.track_running_stats:
            num_batches_tracked = _member(self, buffers, "num_batches_tracked")
            if num_batches_tracked is not None:
                num_batches_tracked.add_(1)
                # momentum=None: the cumulative average over the batches seen so far
                factor = 1.0 / float(num_batches_tracked) if momentum is None else momentum
        # batch statistics when training, and in eval when there are no running statistics
        use_batch = training or (running_mean is None and running_var is None)
        # running statistics are passed when they are to be updated or to normalise
        tracked = not training or self.track_running_stats
        return (running_mean if tracked else None, running_var if tracked else None, _member(self, params, "weight"),
                _member(self, params, "bias"), use_batch, factor, self.eps)


class Linear(_Fastconv, torch.nn.Linear):
    """``torch.nn.Linear`` on fastconv."""

    def __init__(self, in_features, out_features, bias=True, device=None, dtype=None, *, backend="auto"):
        super().__init__(in_features, out_features, bias, device, dtype)
        _check_supported(self)
        self._set_backend(backend)

    def forward(self, input):
        params = self._parameters
        weight, bias = _member(self, params, "weight"), _member(self, params, "bias")
        if bias is None or (weight.dim() == 2 and bias.dim() == 1 and bias.shape[0] == weight.shape[0]):
            # the op takes this bias itself (what ops.linear decides), without the wrapper's layers
            return _CALL["linear"](input, weight, bias, self.backend)
        return ops.linear(input, weight, bias, backend=self.backend)


class MaxPool2d(_Fastconv, torch.nn.MaxPool2d):
    """``torch.nn.MaxPool2d`` on fastconv (``return_indices=True`` returns ``(y, indices)``)."""

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, return_indices=False,
                 ceil_mode=False, *, backend="auto"):
        super().__init__(kernel_size, stride, padding, dilation, return_indices, ceil_mode)
        self._set_backend(backend)

    def forward(self, input):
        if type(input) in _PLAIN and input.dim() == 4:  # batched: the op, without the wrapper's layers
            hyper = self._fc_hyper or self._hyper(ops._uncached(ops._max_pool2d_hyper), "fastconv.torch.max_pool2d",
                                                  self.kernel_size, self.stride, self.padding, self.dilation,
                                                  self.ceil_mode, self.backend)
            if self.return_indices:
                return _CALL["max_pool2d"](input, *hyper, self.backend)
            return _CALL["max_pool2d"].y_only(input, *hyper, self.backend)
        return ops.max_pool2d(input, self.kernel_size, self.stride, self.padding, self.dilation,
                              self.ceil_mode, self.return_indices, backend=self.backend)


class AvgPool2d(_Fastconv, torch.nn.AvgPool2d):
    """``torch.nn.AvgPool2d`` on fastconv."""

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
                 divisor_override=None, *, backend="auto"):
        super().__init__(kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)
        self._set_backend(backend)

    def forward(self, input):
        return ops.avg_pool2d(input, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                              self.count_include_pad, self.divisor_override, backend=self.backend)


class AdaptiveAvgPool2d(_Fastconv, torch.nn.AdaptiveAvgPool2d):
    """``torch.nn.AdaptiveAvgPool2d`` on fastconv (``AdaptiveAvgPool2d(1)`` is global pooling)."""

    def __init__(self, output_size, *, backend="auto"):
        super().__init__(output_size)
        self._set_backend(backend)

    def forward(self, input):
        return ops.adaptive_avg_pool2d(input, self.output_size, backend=self.backend)


#: each torch.nn class fastconv replaces, and its drop-in
DROP_INS: dict[type, type] = {
    torch.nn.Conv1d: Conv1d,
    torch.nn.Conv2d: Conv2d,
    torch.nn.ConvTranspose2d: ConvTranspose2d,
    torch.nn.BatchNorm2d: BatchNorm2d,
    torch.nn.Linear: Linear,
    torch.nn.MaxPool2d: MaxPool2d,
    torch.nn.AvgPool2d: AvgPool2d,
    torch.nn.AdaptiveAvgPool2d: AdaptiveAvgPool2d,
}

__all__ = [
    "DROP_INS",
    "AdaptiveAvgPool2d",
    "AvgPool2d",
    "BatchNorm2d",
    "Conv1d",
    "Conv2d",
    "ConvTranspose2d",
    "Linear",
    "MaxPool2d",
    "unsupported_reason",
]
