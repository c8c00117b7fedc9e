"""C++ activations and softmax (csrc/activation.cpp): elementwise kernels on the flattened array,
softmax along one axis without moving it. Float32 exp/erf/tanh are vectorised polynomial forms
(error ~1e-7); float64 uses libm."""

from ... import _cpp
from ._util import contiguous, empty, nthreads

_Act = _cpp.Activation
SELU_ALPHA = 1.6732632423543772848170429916717  # torch's constants, to double precision
SELU_SCALE = 1.0507009873554804934193349852946


def _forward(act, x, a=0.0, b=0.0):
    y = empty(x.shape, x.dtype)  # (K,)
    _cpp.activation_forward(act, contiguous(x), y, a, b, nthreads())
    return y


def _backward(act, dy, x, a=0.0, b=0.0):
    dx = empty(x.shape, x.dtype)  # (K,)
    _cpp.activation_backward(act, contiguous(dy), contiguous(x), dx, a, b, nthreads())
    return dx


def _gelu(approximate):
    return _Act.gelu_tanh if approximate == "tanh" else _Act.gelu


def relu_forward(x):
    return _forward(_Act.relu, x)


def relu_backward(dy, x):
    return _backward(_Act.relu, dy, x)


def leaky_relu_forward(x, negative_slope):
    return _forward(_Act.leaky_relu, x, negative_slope)


def leaky_relu_backward(dy, x, negative_slope):
    return _backward(_Act.leaky_relu, dy, x, negative_slope)


def elu_forward(x, alpha):
    return _forward(_Act.elu, x, alpha, 1.0)


def elu_backward(dy, x, alpha):
    return _backward(_Act.elu, dy, x, alpha, 1.0)


def selu_forward(x):
    return _forward(_Act.elu, x, SELU_ALPHA, SELU_SCALE)


def selu_backward(dy, x):
    return _backward(_Act.elu, dy, x, SELU_ALPHA, SELU_SCALE)


def gelu_forward(x, approximate):
    return _forward(_gelu(approximate), x)


def gelu_backward(dy, x, approximate):
    return _backward(_gelu(approximate), dy, x)


def sigmoid_forward(x):
    return _forward(_Act.sigmoid, x)


def sigmoid_backward(dy, x):
    return _backward(_Act.sigmoid, dy, x)


def tanh_forward(x):
    return _forward(_Act.tanh, x)


def tanh_backward(dy, x):
    return _backward(_Act.tanh, dy, x)


def softplus_forward(x, beta, threshold):
    return _forward(_Act.softplus, x, beta, threshold)


def softplus_backward(dy, x, beta, threshold):
    return _backward(_Act.softplus, dy, x, beta, threshold)


def silu_forward(x):
    return _forward(_Act.silu, x)


def silu_backward(dy, x):
    return _backward(_Act.silu, dy, x)


def softmax_forward(x, axis):
    y = empty(x.shape, x.dtype)  # (x.shape)
    _cpp.softmax_forward(False, contiguous(x), y, axis, nthreads())
    return y


def log_softmax_forward(x, axis):
    y = empty(x.shape, x.dtype)  # (x.shape)
    _cpp.softmax_forward(True, contiguous(x), y, axis, nthreads())
    return y


def softmax_backward(dy, y, axis):
    dx = empty(y.shape, y.dtype)  # (y.shape)
    _cpp.softmax_backward(False, contiguous(dy), contiguous(y), dx, axis, nthreads())
    return dx


def log_softmax_backward(dy, y, axis):
    dx = empty(y.shape, y.dtype)  # (y.shape)
    _cpp.softmax_backward(True, contiguous(dy), contiguous(y), dx, axis, nthreads())
    return dx
