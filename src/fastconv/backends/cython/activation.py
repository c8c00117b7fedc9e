"""Cython activations and softmax (_activation.pyx): elementwise kernels on the flattened array,
softmax along one axis of x viewed as (outer, L, inner), one OpenMP prange each."""

import math

from .._common import empty
from . import _activation
from ._activation import Kind
from ._util import contiguous, flat, nthreads

SELU_ALPHA = 1.6732632423543772848170429916717  # torch's constants, to double precision
SELU_SCALE = 1.0507009873554804934193349852946


def _named(name, forward, backward):
    """The pair, named ``<name>_forward`` and ``<name>_backward`` (for tracebacks and reprs)."""
    forward.__name__ = forward.__qualname__ = f"{name}_forward"
    backward.__name__ = backward.__qualname__ = f"{name}_backward"
    return forward, backward


def _kernels(name, spec):
    """``<name>_forward(x, *params)`` and ``<name>_backward(dy, x, *params)`` of the activation
    that ``spec(*params)`` describes as the kernel's ``(kind, a, b)``."""

    def forward(x, *params):
        kind, a, b = spec(*params)
        y = empty(x.shape, x.dtype)  # (K,)
        _activation.activation_forward(kind, flat(x), y, a, b, nthreads())
        return y

    def backward(dy, x, *params):
        kind, a, b = spec(*params)
        dx = empty(x.shape, x.dtype)  # (K,)
        _activation.activation_backward(kind, flat(dy), flat(x), dx, a, b, nthreads())
        return dx

    return _named(name, forward, backward)


relu_forward, relu_backward = _kernels("relu", lambda: (Kind.RELU, 0.0, 0.0))
leaky_relu_forward, leaky_relu_backward = _kernels(
    "leaky_relu", lambda negative_slope: (Kind.LEAKY_RELU, negative_slope, 0.0))
# elu's kernel takes (scale, scale * alpha), the product in double as the reference forms it
elu_forward, elu_backward = _kernels("elu", lambda alpha: (Kind.ELU, 1.0, alpha))
selu_forward, selu_backward = _kernels("selu", lambda: (Kind.ELU, SELU_SCALE, SELU_SCALE * SELU_ALPHA))
gelu_forward, gelu_backward = _kernels(
    "gelu", lambda approximate: (Kind.GELU_TANH if approximate == "tanh" else Kind.GELU, 0.0, 0.0))
sigmoid_forward, sigmoid_backward = _kernels("sigmoid", lambda: (Kind.SIGMOID, 0.0, 0.0))
tanh_forward, tanh_backward = _kernels("tanh", lambda: (Kind.TANH, 0.0, 0.0))
softplus_forward, softplus_backward = _kernels("softplus", lambda beta, threshold: (Kind.SOFTPLUS, beta, threshold))
silu_forward, silu_backward = _kernels("silu", lambda: (Kind.SILU, 0.0, 0.0))


def _slices(a, axis):
    """``a`` as (outer, L, inner) around ``axis``, C-contiguous: a view, or one copy of an input."""
    return contiguous(a).reshape(math.prod(a.shape[:axis]), a.shape[axis], math.prod(a.shape[axis + 1:]))


def _softmax_kernels(name, log):
    """``<name>_forward(x, axis)`` and ``<name>_backward(dy, y, axis)``: softmax, or log_softmax."""

    def forward(x, axis):
        y = empty(x.shape, x.dtype)  # (x.shape)
        _activation.softmax_forward(log, _slices(x, axis), _slices(y, axis), nthreads())
        return y

    def backward(dy, y, axis):
        dx = empty(y.shape, y.dtype)  # (y.shape)
        _activation.softmax_backward(log, _slices(dy, axis), _slices(y, axis), _slices(dx, axis), nthreads())
        return dx

    return _named(name, forward, backward)


softmax_forward, softmax_backward = _softmax_kernels("softmax", False)
log_softmax_forward, log_softmax_backward = _softmax_kernels("log_softmax", True)
