"""Layers over the functional API: Conv2d, Linear, pooling, the activations, BatchNorm2d, Dropout,
Flatten, Sequential and a residual block, each a :class:`~fastconv.nn.module.Module` with
PyTorch's constructor arguments, defaults, initialisation and parameter names.

Configuration is validated once, at construction, with errors naming the layer; each forward
checks only what the layer knows (its channels, features and dtype) and leaves the rest to the op.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import numpy as np

from .. import ops
from .._checks import check_bool, check_float
from .._params import adaptive_pool_params, as_int, as_pair, conv_padding, pool_params
from .module import Module, Parameter

_IMAGE = "(N, C, H, W)"
# a stand-in image for validating pooling settings at construction: big enough that only the
# settings themselves (not the image size) can be wrong
_LARGE = 1 << 16


def as_generator(owner: str, rng) -> np.random.Generator:
    """``rng`` as a Generator: None draws fresh entropy, an int seeds one, a Generator is used as is."""
    if rng is None or isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        return np.random.default_rng(rng)
    if isinstance(rng, np.random.Generator):
        return rng
    raise TypeError(f"{owner}: expected rng to be a numpy.random.Generator, an int seed or None, "
                    f"got {type(rng).__name__}")


def _float_dtype(owner: str, dtype) -> np.dtype:
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise TypeError(f"{owner}: expected dtype float32 or float64, got {dtype}")
    return dtype


def _uniform(rng: np.random.Generator, bound: float, shape, dtype) -> Parameter:
    return Parameter(rng.uniform(-bound, bound, size=shape).astype(dtype))  # shape


def _kaiming_parameters(layer: Module, w_shape, fan_in: int, bias: bool, rng, dtype) -> None:
    """PyTorch's default init of Conv2d and Linear.

    ``kaiming_uniform_(w, a=sqrt(5))`` draws from U(-b, b) with b = gain * sqrt(3 / fan_in) and
    gain = sqrt(2 / (1 + a^2)) = sqrt(1/3), i.e. b = 1 / sqrt(fan_in); the bias uses the same bound.
    """
    bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0.0
    layer.weight = _uniform(rng, bound, w_shape, dtype)  # w_shape
    layer.register_parameter("bias", _uniform(rng, bound, (w_shape[0],), dtype) if bias else None)


def _param_data(param: Parameter | None):
    return None if param is None else param.data


# --------------------------------------------------------------------------------------------
# convolution and dense
# --------------------------------------------------------------------------------------------

class Conv2d(Module):
    """2-d convolution, as ``torch.nn.Conv2d``: x (N, C_in, H, W) -> y (N, C_out, OH, OW).

    ``padding``: an int, a pair, ``'same'``, ``'valid'`` or ``((top, bottom), (left, right))``.
    Parameters ``weight`` (C_out, C_in/groups, KH, KW) and ``bias`` (C_out,) (absent with ``bias=False``).
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias=True, *, dtype=np.float32, rng=None, backend="auto"):
        super().__init__(backend=backend)
        op = "Conv2d"
        self.in_channels = as_int(op, "in_channels", in_channels, minimum=1)
        self.out_channels = as_int(op, "out_channels", out_channels, minimum=1)
        self.kernel_size = as_pair(op, "kernel_size", kernel_size, minimum=1)
        self.stride = as_pair(op, "stride", stride, minimum=1)
        self.dilation = as_pair(op, "dilation", dilation, minimum=1)
        self.groups = as_int(op, "groups", groups, minimum=1)
        conv_padding(op, padding, self.kernel_size, self.dilation, self.stride)  # raises if invalid
        self.padding = padding
        if self.in_channels % self.groups or self.out_channels % self.groups:
            raise ValueError(f"{op}: in_channels={self.in_channels} and out_channels={self.out_channels} "
                             f"must both be divisible by groups={self.groups}")
        check_bool(op, "bias", bias)
        fan_in = self.in_channels // self.groups * self.kernel_size[0] * self.kernel_size[1]
        w_shape = (self.out_channels, self.in_channels // self.groups, *self.kernel_size)
        _kaiming_parameters(self, w_shape, fan_in, bias, as_generator(op, rng), _float_dtype(op, dtype))

    def _conv_args(self):
        return dict(stride=self.stride, padding=self.padding, dilation=self.dilation, groups=self.groups)

    def forward(self, x):
        self._check_input(x, dims="(N, C_in, H, W)", channels=self.in_channels)
        self.save_for_backward(x=x)
        return ops.conv.conv2d(x, self.weight.data, _param_data(self.bias), **self._conv_args(),
                               backend=self.backend)  # (N, C_out, OH, OW)

    def backward(self, dy):
        x = self.saved()["x"]
        dx, dw, db = ops.conv.conv2d_backward(dy, x, self.weight.data, **self._conv_args(),
                                              needs=(True, True, self.bias is not None), backend=self.backend)
        self.weight.accumulate(dw)
        if self.bias is not None:
            self.bias.accumulate(db)
        return dx  # (N, C_in, H, W)

    def extra_repr(self):
        text = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        if self.padding != 0:
            text += f", padding={self.padding!r}"
        if self.dilation != (1, 1):
            text += f", dilation={self.dilation}"
        if self.groups != 1:
            text += f", groups={self.groups}"
        return text + ("" if self.bias is not None else ", bias=False")


class Linear(Module):
    """``y = x @ weight.T + bias``, as ``torch.nn.Linear``: x (*, in_features) -> y (*, out_features)."""

    def __init__(self, in_features, out_features, bias=True, *, dtype=np.float32, rng=None, backend="auto"):
        super().__init__(backend=backend)
        op = "Linear"
        self.in_features = as_int(op, "in_features", in_features, minimum=1)
        self.out_features = as_int(op, "out_features", out_features, minimum=1)
        check_bool(op, "bias", bias)
        _kaiming_parameters(self, (self.out_features, self.in_features), self.in_features, bias,
                            as_generator(op, rng), _float_dtype(op, dtype))

    def forward(self, x):
        self._check_input(x, channels=self.in_features, axis=-1, min_ndim=1)
        self.save_for_backward(x=x)
        return ops.linear.linear(x, self.weight.data, _param_data(self.bias), backend=self.backend)  # (*, out)

    def backward(self, dy):
        x = self.saved()["x"]
        dx, dw, db = ops.linear.linear_backward(dy, x, self.weight.data, needs=(True, True, self.bias is not None),
                                                backend=self.backend)
        self.weight.accumulate(dw)
        if self.bias is not None:
            self.bias.accumulate(db)
        return dx  # (*, in_features)

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


# --------------------------------------------------------------------------------------------
# pooling
# --------------------------------------------------------------------------------------------

class MaxPool2d(Module):
    """Max pooling, as ``torch.nn.MaxPool2d``; the argmax indices of the forward feed the backward."""

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, *, backend="auto"):
        super().__init__(backend=backend)
        pool_params("MaxPool2d", (1, 1, _LARGE, _LARGE), kernel_size, stride, padding, dilation, ceil_mode)
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self.dilation, self.ceil_mode = dilation, ceil_mode

    def _pool_args(self):
        return dict(kernel_size=self.kernel_size, stride=self.stride, padding=self.padding,
                    dilation=self.dilation, ceil_mode=self.ceil_mode)

    def forward(self, x):
        self._check_input(x, dims=_IMAGE)
        y, indices = ops.pool.max_pool2d(x, **self._pool_args(), return_indices=True,
                                         backend=self.backend)  # (N, C, OH, OW) twice
        self.save_for_backward(x=x, indices=indices)
        return y

    def backward(self, dy):
        saved = self.saved()
        return ops.pool.max_pool2d_backward(dy, saved["x"], **self._pool_args(), indices=saved["indices"],
                                            backend=self.backend)  # (N, C, H, W)

    def extra_repr(self):
        stride = self.kernel_size if self.stride is None else self.stride  # torch prints the default too
        return (f"kernel_size={self.kernel_size}, stride={stride}, padding={self.padding}, "
                f"dilation={self.dilation}, ceil_mode={self.ceil_mode}")


class AvgPool2d(Module):
    """Average pooling, as ``torch.nn.AvgPool2d``."""

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
                 divisor_override=None, *, backend="auto"):
        super().__init__(backend=backend)
        pool_params("AvgPool2d", (1, 1, _LARGE, _LARGE), kernel_size, stride, padding, 1, ceil_mode,
                    count_include_pad, divisor_override)
        self.kernel_size, self.stride, self.padding, self.ceil_mode = kernel_size, stride, padding, ceil_mode
        self.count_include_pad, self.divisor_override = count_include_pad, divisor_override

    def _pool_args(self):
        return dict(kernel_size=self.kernel_size, stride=self.stride, padding=self.padding,
                    ceil_mode=self.ceil_mode, count_include_pad=self.count_include_pad,
                    divisor_override=self.divisor_override)

    def forward(self, x):
        self._check_input(x, dims=_IMAGE)
        self.save_for_backward(x=x)  # the backward needs only x's shape and dtype
        return ops.pool.avg_pool2d(x, **self._pool_args(), backend=self.backend)  # (N, C, OH, OW)

    def backward(self, dy):
        return ops.pool.avg_pool2d_backward(dy, self.saved()["x"], **self._pool_args(),
                                            backend=self.backend)  # (N, C, H, W)

    def extra_repr(self):
        stride = self.kernel_size if self.stride is None else self.stride
        return f"kernel_size={self.kernel_size}, stride={stride}, padding={self.padding}"


class AdaptiveAvgPool2d(Module):
    """Adaptive average pooling to ``output_size``, as ``torch.nn.AdaptiveAvgPool2d`` (1: global)."""

    def __init__(self, output_size, *, backend="auto"):
        super().__init__(backend=backend)
        adaptive_pool_params("AdaptiveAvgPool2d", (1, 1, 1, 1), output_size)  # raises if invalid
        self.output_size = output_size

    def forward(self, x):
        self._check_input(x, dims=_IMAGE)
        self.save_for_backward(x=x)
        return ops.pool.adaptive_avg_pool2d(x, self.output_size, backend=self.backend)  # (N, C, OH, OW)

    def backward(self, dy):
        return ops.pool.adaptive_avg_pool2d_backward(dy, self.saved()["x"], self.output_size,
                                                     backend=self.backend)  # (N, C, H, W)

    def extra_repr(self):
        return f"output_size={self.output_size}"


# --------------------------------------------------------------------------------------------
# activations: one class, specialised by a table
# --------------------------------------------------------------------------------------------

class _Activation(Module):
    """An elementwise activation ``fc.<function>(x, *params)`` and its backward.

    Subclasses only set ``function`` (the functional op's name) and ``params`` (the op's scalar
    parameters with their defaults, in the op's order); see :func:`_activation`.
    """

    function: str = ""
    params: tuple[tuple[str, object], ...] = ()

    def __init__(self, *args, backend="auto", **kwargs):
        super().__init__(backend=backend)
        name = type(self).__name__
        names = [p for p, _ in self.params]
        if len(args) > len(names):
            raise TypeError(f"{name}: takes at most {len(names)} positional arguments ({', '.join(names)}), "
                            f"got {len(args)}")
        values = dict(self.params)
        values.update(zip(names, args))
        for key, value in kwargs.items():
            if key not in values:
                raise TypeError(f"{name}: unexpected argument {key!r} (expected one of {names})")
            if key in names[:len(args)]:
                raise TypeError(f"{name}: got {key!r} both by position and by keyword")
            values[key] = value
        self.values = tuple(values[p] for p in names)
        # validate once, here, through the op itself on a one-element array, naming the layer
        try:
            getattr(ops.activation, self.function)(np.zeros(1, np.float64), *self.values, backend="reference")
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"{name}: {exc}") from None

    def forward(self, x):
        self._check_input(x)
        self.save_for_backward(x=x)
        return getattr(ops.activation, self.function)(x, *self.values, backend=self.backend)  # x's shape

    def backward(self, dy):
        backward = getattr(ops.activation, f"{self.function}_backward")
        return backward(dy, self.saved()["x"], *self.values, backend=self.backend)  # x's shape

    def extra_repr(self):
        return ", ".join(f"{p}={v!r}" for (p, _), v in zip(self.params, self.values))


def _activation(name: str, function: str, params: tuple = ()) -> type:
    """A layer class for the functional activation ``function`` with scalar ``params``
    ((name, default) pairs, in the op's order), named and documented as ``torch.nn.<name>``."""
    listed = f"; parameters {', '.join(f'{p}={d!r}' for p, d in params)}" if params else ""
    return type(name, (_Activation,), {
        "function": function, "params": params, "__module__": __name__,
        "__doc__": f"``fastconv.{function}`` as a layer, as ``torch.nn.{name}``{listed}.",
    })


# the table of activation layers: one line each, PyTorch's names and defaults
ReLU = _activation("ReLU", "relu")
LeakyReLU = _activation("LeakyReLU", "leaky_relu", (("negative_slope", 0.01),))
ELU = _activation("ELU", "elu", (("alpha", 1.0),))
SELU = _activation("SELU", "selu")
GELU = _activation("GELU", "gelu", (("approximate", "none"),))
Sigmoid = _activation("Sigmoid", "sigmoid")
Tanh = _activation("Tanh", "tanh")
Softplus = _activation("Softplus", "softplus", (("beta", 1.0), ("threshold", 20.0)))
SiLU = _activation("SiLU", "silu")
ACTIVATIONS = (ReLU, LeakyReLU, ELU, SELU, GELU, Sigmoid, Tanh, Softplus, SiLU)


# --------------------------------------------------------------------------------------------
# normalisation, dropout, flatten
# --------------------------------------------------------------------------------------------

class BatchNorm2d(Module):
    """Batch normalisation over (N, H, W) per channel, as ``torch.nn.BatchNorm2d``.

    Parameters ``weight`` (ones) and ``bias`` (zeros) with ``affine``; buffers ``running_mean``
    (zeros), ``running_var`` (ones) and ``num_batches_tracked`` with ``track_running_stats``.
    Training normalises with the batch statistics and updates the running ones
    (``(1 - momentum) * running + momentum * batch``, the unbiased batch variance); eval mode
    normalises with the running ones. Without running statistics the batch's are used always.
    """

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True, *,
                 dtype=np.float32, backend="auto"):
        super().__init__(backend=backend)
        op = "BatchNorm2d"
        self.num_features = C = as_int(op, "num_features", num_features, minimum=1)
        self.eps = check_float(op, "eps", eps, low=0.0, low_open=True)
        self.momentum = check_float(op, "momentum", momentum, low=0.0, high=1.0)
        self.affine = check_bool(op, "affine", affine)
        self.track_running_stats = check_bool(op, "track_running_stats", track_running_stats)
        dtype = _float_dtype(op, dtype)
        self.register_parameter("weight", Parameter(np.ones(C, dtype)) if affine else None)  # (C,)
        self.register_parameter("bias", Parameter(np.zeros(C, dtype)) if affine else None)  # (C,)
        tracked = track_running_stats
        self.register_buffer("running_mean", np.zeros(C, dtype) if tracked else None)  # (C,)
        self.register_buffer("running_var", np.ones(C, dtype) if tracked else None)  # (C,)
        self.register_buffer("num_batches_tracked", np.array(0, np.int64) if tracked else None)  # ()

    def forward(self, x):
        self._check_input(x, dims=_IMAGE, channels=self.num_features)
        if self.running_mean is not None and x.dtype != self.running_mean.dtype:
            raise TypeError(f"{self._label()}: expected x of dtype {self.running_mean.dtype}, got {x.dtype}")
        batch_stats = self.training or self.running_mean is None
        result = ops.norm.batch_norm(x, self.running_mean, self.running_var, _param_data(self.weight),
                                     _param_data(self.bias), training=batch_stats, momentum=self.momentum,
                                     eps=self.eps, backend=self.backend)
        if self.training and self.running_mean is not None:
            # in place: whoever holds the buffers (a state_dict copy excepted) sees the update
            self.running_mean[...] = result.running_mean
            self.running_var[...] = result.running_var
            self.num_batches_tracked[...] += 1
        self.save_for_backward(x=x, mean=result.mean, invstd=result.invstd, batch_stats=batch_stats)
        return result.y  # (N, C, H, W)

    def backward(self, dy):
        saved = self.saved()
        dx, dw, db = ops.norm.batch_norm_backward(
            dy, saved["x"], _param_data(self.weight), mean=saved["mean"], invstd=saved["invstd"],
            training=saved["batch_stats"], needs=(True, self.affine, self.affine), backend=self.backend)
        if self.affine:
            self.weight.accumulate(dw)
            self.bias.accumulate(db)
        return dx  # (N, C, H, W)

    def extra_repr(self):
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
                f"track_running_stats={self.track_running_stats}")


class Dropout(Module):
    """Inverted dropout, as ``torch.nn.Dropout``: in training each element is zeroed with
    probability p and the rest scaled by 1/(1-p); in eval mode the identity.

    Each forward draws its mask's seed from ``rng`` (a Generator, an int seed or None), so a seeded
    rng gives the same masks on the same backend; the mask of the forward feeds the backward.
    """

    def __init__(self, p=0.5, *, rng=None, backend="auto"):
        super().__init__(backend=backend)
        self.p = check_float("Dropout", "p", p, low=0.0, high=1.0)
        self.rng = as_generator("Dropout", rng)

    def forward(self, x):
        self._check_input(x)
        seed = int(self.rng.integers(0, ops.dropout.SEED_LIMIT, dtype=np.uint64)) if self.training else None
        y, mask = ops.dropout.dropout(x, self.p, training=self.training, seed=seed,
                                      backend=self.backend)  # x's shape twice (mask None in eval)
        self.save_for_backward(mask=mask)
        return y

    def backward(self, dy):
        return ops.dropout.dropout_backward(dy, mask=self.saved()["mask"], p=self.p,
                                            backend=self.backend)  # dy's shape

    def extra_repr(self):
        return f"p={self.p}"


class Flatten(Module):
    """Merge dims ``start_dim..end_dim`` (default: all but the batch), as ``torch.nn.Flatten``."""

    def __init__(self, start_dim=1, end_dim=-1, *, backend="auto"):
        super().__init__(backend=backend)
        self.start_dim = as_int("Flatten", "start_dim", start_dim)
        self.end_dim = as_int("Flatten", "end_dim", end_dim)

    def forward(self, x):
        self._check_input(x)
        self.save_for_backward(x=x)
        return ops.shape.flatten(x, self.start_dim, self.end_dim, backend=self.backend)  # (N, C*H*W) by default

    def backward(self, dy):
        return ops.shape.flatten_backward(dy, self.saved()["x"], self.start_dim, self.end_dim,
                                          backend=self.backend)  # x's shape

    def extra_repr(self):
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"


# --------------------------------------------------------------------------------------------
# containers
# --------------------------------------------------------------------------------------------

class Sequential(Module):
    """Modules applied in order; backward runs them in reverse. Children are named ``"0"``,
    ``"1"``, ... (or by the keys of an ``OrderedDict``), as in ``torch.nn.Sequential``."""

    def __init__(self, *modules, backend=None):
        super().__init__()
        if len(modules) == 1 and isinstance(modules[0], OrderedDict):
            named = list(modules[0].items())
        else:
            named = [(str(i), m) for i, m in enumerate(modules)]
        for name, module in named:
            if not isinstance(module, Module):
                raise TypeError(f"Sequential: expected Module children, got {type(module).__name__} "
                                f"for {name!r}")
            setattr(self, name, module)
        if backend is not None:  # None leaves each child's own backend as it was built
            self.set_backend(backend)

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def __getitem__(self, index):
        modules = list(self._modules.values())
        if isinstance(index, slice):
            return Sequential(OrderedDict(list(self._modules.items())[index]))
        return modules[index]

    def forward(self, x):
        for module in self._modules.values():
            x = module(x)
        return x

    def backward(self, dy):
        for module in reversed(self._modules.values()):
            dy = module.backward(dy)
        return dy


class ResidualBlock(Module):
    """The basic residual block of ResNet-18/34 (torchvision's ``BasicBlock``):
    ``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``, 3x3 convolutions without bias.

    The shortcut is the identity, or ``downsample`` = 1x1 convolution + batch norm when the stride
    or the channel count changes. Two ReLU modules, not one reused: each caches its own input.
    """

    def __init__(self, in_channels, out_channels, stride=1, *, dtype=np.float32, rng=None, backend="auto"):
        super().__init__(backend=backend)
        rng = as_generator("ResidualBlock", rng)
        kw = dict(dtype=dtype, backend=backend)
        self.conv1 = Conv2d(in_channels, out_channels, 3, stride, padding=1, bias=False, rng=rng, **kw)
        self.bn1 = BatchNorm2d(out_channels, **kw)
        self.relu1 = ReLU(backend=backend)
        self.conv2 = Conv2d(out_channels, out_channels, 3, 1, padding=1, bias=False, rng=rng, **kw)
        self.bn2 = BatchNorm2d(out_channels, **kw)
        if self.conv1.stride != (1, 1) or in_channels != out_channels:
            self.downsample = Sequential(Conv2d(in_channels, out_channels, 1, stride, bias=False, rng=rng, **kw),
                                         BatchNorm2d(out_channels, **kw))
        else:
            self.downsample = None
        self.relu2 = ReLU(backend=backend)

    def forward(self, x):
        out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))  # (N, C_out, OH, OW)
        shortcut = x if self.downsample is None else self.downsample(x)  # (N, C_out, OH, OW)
        return self.relu2(out + shortcut)

    def backward(self, dy):
        dsum = self.relu2.backward(dy)  # (N, C_out, OH, OW): the gradient of both branches' sum
        dx = self.conv1.backward(self.bn1.backward(self.relu1.backward(self.conv2.backward(self.bn2.backward(dsum)))))
        return dx + (dsum if self.downsample is None else self.downsample.backward(dsum))  # (N, C_in, H, W)


__all__ = ["Conv2d", "Linear", "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d", "ReLU", "LeakyReLU", "ELU", "SELU",
           "GELU", "Sigmoid", "Tanh", "Softplus", "SiLU", "ACTIVATIONS", "BatchNorm2d", "Dropout", "Flatten",
           "Sequential", "ResidualBlock"]
