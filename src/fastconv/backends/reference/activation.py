"""Reference activations and softmax: readable NumPy, computed in the input dtype.

Elementwise kernels get a 1-d array (the public op flattens once) and return a fresh 1-d array of
the same dtype, so every array they make is (K,), like x; softmax kernels get the array as it is
(at least 1-d) and the non-negative axis to normalise.

Every formula is PyTorch's own (``aten/src/ATen/native/cpu/Activation.cpp``,
``UnaryOpsKernel.cpp``, ``SoftMaxKernel.cpp``), including the comparison it branches on, because
that comparison decides the gradient at a kink (relu at 0 -> 0, elu at 0 -> the exponential
branch) and where a NaN goes (``nan > 0`` is false, so relu passes dy at NaN, as PyTorch does).
Where PyTorch's formula would overflow a finite input to inf (``exp(1000)`` in a naive sigmoid)
this file uses a stable form with the same value. Where an infinite input makes PyTorch's formula
produce NaN (``gelu(-inf) = -inf * 0``) the kernels produce the same NaN, quietly: the ``invalid``
warning NumPy would raise there is turned off by ``@_nan_from_inf_is_expected``. Overflow
warnings stay on.

Constants are Python floats, never NumPy float64 scalars: under NumPy 2's promotion rules a
float64 scalar would silently turn a float32 computation into a float64 one.
"""

import math

import numpy as np
from scipy.special import erf

_nan_from_inf_is_expected = np.errstate(invalid="ignore")

SELU_ALPHA = 1.6732632423543772848170429916717  # torch's constants, to double precision
SELU_SCALE = 1.0507009873554804934193349852946
_SQRT_HALF = math.sqrt(0.5)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)  # the standard normal density at 0
_TANH_BETA = math.sqrt(2.0 / math.pi)  # gelu's tanh approximation: tanh(beta * (x + kappa x^3))
_TANH_KAPPA = 0.044715
#: Beyond |x| = 1e4, exp(-x^2/2) is 0 and tanh(beta * (x + kappa x^3)) is +-1 exactly in both
#: dtypes, so clipping x to this range where it is squared or cubed changes no result; it only
#: keeps x^2 and x^3 from overflowing (float32 overflows at |x|^2 > 3.4e38).
_SATURATED = 1e4


def _sigmoid(x):
    """1 / (1 + exp(-x)) without overflow: exp is only ever taken of -|x|."""
    e = np.exp(-np.abs(x))  # in [0, 1]
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


def _saturated(x):
    return np.clip(x, -_SATURATED, _SATURATED)


# --------------------------------------------------------------------------------------------
# piecewise-linear
# --------------------------------------------------------------------------------------------

def relu_forward(x):
    return np.maximum(x, 0)  # maximum, not where(x > 0, ...): NaN stays NaN


def relu_backward(dy, x):
    # PyTorch: threshold_backward(dy, relu(x), 0) = 0 where relu(x) <= 0, else dy. So the gradient
    # at x = 0 is 0, and at x = NaN it is dy (nan <= 0 is false).
    return np.where(x <= 0, 0, dy)


def leaky_relu_forward(x, negative_slope):
    return np.where(x > 0, x, x * negative_slope)


def leaky_relu_backward(dy, x, negative_slope):
    return np.where(x > 0, dy, dy * negative_slope)  # the slope at x = 0 and at NaN


# --------------------------------------------------------------------------------------------
# exponential linear units: elu(x) = scale * (x if x > 0 else alpha * (exp(x) - 1)); selu is one
# --------------------------------------------------------------------------------------------

def _elu(x, alpha, scale):
    # np.where evaluates both branches: min(x, 0) keeps exp off large positive x
    return np.where(x > 0, scale * x, (scale * alpha) * np.expm1(np.minimum(x, 0)))


def _elu_backward(dy, x, alpha, scale):
    # The gradient at x = 0 is scale * alpha (PyTorch's exponential branch). At x = NaN it is NaN:
    # so is PyTorch's vectorised loop, which covers all but the last few elements of an array
    # (its scalar tail gives scale * dy instead).
    return np.where(x > 0, dy * scale, dy * (scale * alpha) * np.exp(np.minimum(x, 0)))


def elu_forward(x, alpha):
    return _elu(x, alpha, 1.0)


def elu_backward(dy, x, alpha):
    return _elu_backward(dy, x, alpha, 1.0)


def selu_forward(x):
    return _elu(x, SELU_ALPHA, SELU_SCALE)


def selu_backward(dy, x):
    return _elu_backward(dy, x, SELU_ALPHA, SELU_SCALE)


# --------------------------------------------------------------------------------------------
# gelu: x * Phi(x), exact ('none') or with PyTorch's tanh approximation ('tanh')
# --------------------------------------------------------------------------------------------

@_nan_from_inf_is_expected  # gelu(-inf) = -inf * 0 is NaN in PyTorch
def gelu_forward(x, approximate):
    if approximate == "tanh":
        xs = _saturated(x)
        return 0.5 * x * (1 + np.tanh(_TANH_BETA * (xs + _TANH_KAPPA * xs * xs * xs)))
    return 0.5 * x * (1 + erf(x * _SQRT_HALF))


@_nan_from_inf_is_expected  # the x * pdf(x) term is inf * 0 at x = +-inf: NaN, as in PyTorch
def gelu_backward(dy, x, approximate):
    xs = _saturated(x)
    if approximate == "tanh":
        t = np.tanh(_TANH_BETA * (xs + _TANH_KAPPA * xs * xs * xs))
        # d/dx [0.5 x (1 + t)] = 0.5 (1 + t) + 0.5 x (1 - t^2) beta (1 + 3 kappa x^2)
        return dy * (0.5 * (1 + t) + 0.5 * x * (1 - t * t) * _TANH_BETA * (1 + 3 * _TANH_KAPPA * xs * xs))
    cdf = 0.5 * (1 + erf(x * _SQRT_HALF))
    pdf = _INV_SQRT_2PI * np.exp(-0.5 * xs * xs)
    return dy * (cdf + x * pdf)


# --------------------------------------------------------------------------------------------
# sigmoid family
# --------------------------------------------------------------------------------------------

def sigmoid_forward(x):
    return _sigmoid(x)


def sigmoid_backward(dy, x):
    y = _sigmoid(x)
    return dy * (1 - y) * y


def tanh_forward(x):
    return np.tanh(x)


def tanh_backward(dy, x):
    y = np.tanh(x)
    return dy * (1 - y * y)


def softplus_forward(x, beta, threshold):
    """log(1 + exp(beta x)) / beta, and x itself once beta x > threshold (PyTorch's cut-off)."""
    z = x * beta
    # log(1 + exp(z)) = max(z, 0) + log1p(exp(-|z|)): exp is never taken of a large positive z
    return np.where(z > threshold, x, (np.maximum(z, 0) + np.log1p(np.exp(-np.abs(z)))) / beta)


def softplus_backward(dy, x, beta, threshold):
    z = x * beta
    return np.where(z > threshold, dy, dy * _sigmoid(z))


@_nan_from_inf_is_expected  # silu(-inf) = -inf * 0 is NaN in PyTorch
def silu_forward(x):
    return x * _sigmoid(x)


@_nan_from_inf_is_expected  # x * (1 - s) is inf * 0 at x = +inf: NaN, as in PyTorch
def silu_backward(dy, x):
    s = _sigmoid(x)
    return dy * s * (1 + x * (1 - s))


# --------------------------------------------------------------------------------------------
# softmax and log_softmax along one axis; the backwards take the forward's *output* y
# --------------------------------------------------------------------------------------------

@_nan_from_inf_is_expected  # a row holding +inf or only -inf is NaN: inf - inf, as in PyTorch
def softmax_forward(x, axis):
    e = np.exp(x - x.max(axis=axis, keepdims=True))  # (x.shape), every entry in [0, 1]
    return np.ascontiguousarray(e / e.sum(axis=axis, keepdims=True))  # (x.shape)


@_nan_from_inf_is_expected
def log_softmax_forward(x, axis):
    shifted = x - x.max(axis=axis, keepdims=True)  # (x.shape), every entry <= 0
    return np.ascontiguousarray(shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True)))


def softmax_backward(dy, y, axis):
    """dx = y * (dy - sum(dy * y)), from the output y = softmax(x)."""
    return np.ascontiguousarray(y * (dy - (dy * y).sum(axis=axis, keepdims=True)))  # (y.shape)


def log_softmax_backward(dy, y, axis):
    """dx = dy - exp(y) * sum(dy), from the output y = log_softmax(x)."""
    return np.ascontiguousarray(dy - np.exp(y) * dy.sum(axis=axis, keepdims=True))  # (y.shape)
