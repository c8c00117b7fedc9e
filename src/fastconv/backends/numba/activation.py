"""Numba activations and softmax.

Elementwise activations are two kernels, forward and backward, that apply the scalar formula of
the activation named by a code to every element (``prange`` over the flattened array); the
formulas are the reference's (PyTorch's), branch for branch: the comparison each one branches
on decides the gradient at a kink and where a NaN goes. Where the reference clips or rewrites a
formula so that a finite input cannot overflow, so does this file. Arithmetic is done in
float64 (Python float constants promote float32 values) and rounded once to the input dtype.

Softmax and log_softmax see x as (outer, L, inner), L the normalised axis: one ``outer`` slice
per unit of work, its ``inner`` lines handled together so the inner loops run along memory.
"""

import math
from functools import partial

import numpy as np
from numba import prange

from .._common import empty
from ..reference.activation import (
    _INV_SQRT_2PI,
    _SATURATED,
    _SQRT_HALF,
    _TANH_BETA,
    _TANH_KAPPA,
    SELU_ALPHA,
    SELU_SCALE,  # PyTorch's constants, shared
)
from ._jit import contiguous, jit, parallel_jit, run

# The activation codes the two kernels take (parameters a, b as in the public signatures).
RELU, LEAKY_RELU, ELU, GELU, GELU_TANH, SIGMOID, TANH, SOFTPLUS, SILU = range(9)


@jit
def _sigmoid(v):
    """1 / (1 + exp(-v)) without overflow: exp is only ever taken of -|v|."""
    e = math.exp(-abs(v))
    return 1.0 / (1.0 + e) if v >= 0 else e / (1.0 + e)


@jit
def _saturated(v):
    """v clipped to [-_SATURATED, _SATURATED]; NaN stays NaN (min/max would not keep it)."""
    if v > _SATURATED:
        return _SATURATED
    if v < -_SATURATED:
        return -_SATURATED
    return v


@jit
def _tanh_inner(v):
    """tanh(beta * (v + kappa v^3)), the tanh-gelu's smooth step."""
    s = _saturated(v)
    return math.tanh(_TANH_BETA * (s + _TANH_KAPPA * s * s * s))


@jit
def _value(code, v, a, b):
    """The activation ``code`` at v (a, b: its parameters; elu: alpha, scale)."""
    if code == RELU:
        return v if not v < 0 else 0.0  # NaN stays NaN, as with np.maximum
    if code == LEAKY_RELU:
        return v if v > 0 else v * a
    if code == ELU:
        return b * v if v > 0 else (b * a) * math.expm1(v)
    if code == GELU:
        return 0.5 * v * (1.0 + math.erf(v * _SQRT_HALF))  # gelu(-inf) = -inf * 0: NaN, as PyTorch
    if code == GELU_TANH:
        return 0.5 * v * (1.0 + _tanh_inner(v))
    if code == SIGMOID:
        return _sigmoid(v)
    if code == TANH:
        return math.tanh(v)
    if code == SOFTPLUS:  # log(1 + exp(beta v)) / beta, and v itself once beta v > threshold
        z = v * a
        if z > b:
            return v
        return ((z if z > 0 else 0.0) + math.log1p(math.exp(-abs(z)))) / a
    return v * _sigmoid(v)  # SILU


@jit
def _gradient(code, g, v, a, b):
    """dy * (the derivative of activation ``code`` at v)."""
    if code == RELU:
        return 0.0 if v <= 0 else g  # 0 at the kink, dy at NaN (nan <= 0 is false)
    if code == LEAKY_RELU:
        return g if v > 0 else g * a
    if code == ELU:  # the exponential branch at 0; NaN at NaN
        return g * b if v > 0 else g * (b * a) * math.exp(v)
    if code == GELU:
        s = _saturated(v)
        return g * (0.5 * (1.0 + math.erf(v * _SQRT_HALF)) + v * _INV_SQRT_2PI * math.exp(-0.5 * s * s))
    if code == GELU_TANH:
        t = _tanh_inner(v)
        s = _saturated(v)
        return g * (0.5 * (1.0 + t) + 0.5 * v * (1.0 - t * t) * _TANH_BETA * (1.0 + 3.0 * _TANH_KAPPA * s * s))
    if code == SIGMOID:
        y = _sigmoid(v)
        return g * (1.0 - y) * y
    if code == TANH:
        y = math.tanh(v)
        return g * (1.0 - y * y)
    if code == SOFTPLUS:
        z = v * a
        return g if z > b else g * _sigmoid(z)
    s = _sigmoid(v)  # SILU
    return g * s * (1.0 + v * (1.0 - s))


@parallel_jit
def _forward(code, x, a, b, y):
    for i in prange(x.size):
        y[i] = _value(code, x[i], a, b)


@parallel_jit
def _backward(code, dy, x, a, b, dx):
    for i in prange(x.size):
        dx[i] = _gradient(code, dy[i], x[i], a, b)


def _apply(code, x, a=0.0, b=1.0):
    """y = activation ``code`` of x (K,); b defaults to elu's scale of 1."""
    y = empty(x.shape, x.dtype)  # (K,)
    run(_forward, code, contiguous(x), float(a), float(b), y)
    return y


def _apply_backward(code, dy, x, a=0.0, b=1.0):
    dx = empty(x.shape, x.dtype)  # (K,)
    run(_backward, code, contiguous(dy), contiguous(x), float(a), float(b), dx)
    return dx


def _gelu(approximate):
    return GELU_TANH if approximate == "tanh" else GELU


def gelu_forward(x, approximate):
    return _apply(_gelu(approximate), x)


def gelu_backward(dy, x, approximate):
    return _apply_backward(_gelu(approximate), dy, x)


# The backend's functions: each activation's code, its parameters passed on in the order of the
# public signature (leaky_relu: slope; elu: alpha; softplus: beta, threshold).
relu_forward, relu_backward = partial(_apply, RELU), partial(_apply_backward, RELU)
leaky_relu_forward, leaky_relu_backward = partial(_apply, LEAKY_RELU), partial(_apply_backward, LEAKY_RELU)
elu_forward, elu_backward = partial(_apply, ELU), partial(_apply_backward, ELU)
selu_forward = partial(_apply, ELU, a=SELU_ALPHA, b=SELU_SCALE)
selu_backward = partial(_apply_backward, ELU, a=SELU_ALPHA, b=SELU_SCALE)
sigmoid_forward, sigmoid_backward = partial(_apply, SIGMOID), partial(_apply_backward, SIGMOID)
tanh_forward, tanh_backward = partial(_apply, TANH), partial(_apply_backward, TANH)
softplus_forward, softplus_backward = partial(_apply, SOFTPLUS), partial(_apply_backward, SOFTPLUS)
silu_forward, silu_backward = partial(_apply, SILU), partial(_apply_backward, SILU)


# --------------------------------------------------------------------------------------------
# softmax and log_softmax along one axis; the backwards take the forward's *output* y
# --------------------------------------------------------------------------------------------

@parallel_jit
def _softmax_forward(x, y, log):
    """x, y (outer, L, inner). softmax = exp(x - max) / sum; log_softmax = (x - max) - log(sum).
    A line holding +inf, or only -inf, is NaN (inf - inf), and so is one holding NaN."""
    outer, L, inner = x.shape
    for o in prange(outer):
        top = np.full(inner, -np.inf)  # (inner,) each line's maximum, NaN if it holds one
        for l in range(L):
            for i in range(inner):
                v = x[o, l, i]
                if v > top[i] or np.isnan(v):
                    top[i] = v
        total = np.zeros(inner)  # (inner,) sum of exp(x - max), in float64
        for l in range(L):
            for i in range(inner):
                total[i] += math.exp(x[o, l, i] - top[i])
        for l in range(L):
            for i in range(inner):
                shifted = x[o, l, i] - top[i]
                y[o, l, i] = shifted - math.log(total[i]) if log else math.exp(shifted) / total[i]


@parallel_jit
def _softmax_backward(dy, y, dx, log):
    """softmax: dx = y * (dy - sum(dy * y)); log_softmax: dx = dy - exp(y) * sum(dy); all (outer, L, inner)."""
    outer, L, inner = y.shape
    for o in prange(outer):
        total = np.zeros(inner)  # (inner,) float64
        for l in range(L):
            for i in range(inner):
                total[i] += dy[o, l, i] if log else dy[o, l, i] * y[o, l, i]
        for l in range(L):
            for i in range(inner):
                if log:
                    dx[o, l, i] = dy[o, l, i] - math.exp(y[o, l, i]) * total[i]
                else:
                    dx[o, l, i] = y[o, l, i] * (dy[o, l, i] - total[i])


def _lines(shape, axis):
    """(outer, L, inner) of an array of ``shape`` normalised along ``axis``."""
    return (int(np.prod(shape[:axis])), shape[axis], int(np.prod(shape[axis + 1:])))


def _softmax(x, axis, log):
    x = contiguous(x)
    y = empty(x.shape, x.dtype)  # (x.shape)
    run(_softmax_forward, x.reshape(_lines(x.shape, axis)), y.reshape(_lines(x.shape, axis)), log)
    return y


def _softmax_grad(dy, y, axis, log):
    dy, y = contiguous(dy), contiguous(y)
    dx = empty(y.shape, y.dtype)  # (y.shape)
    lines = _lines(y.shape, axis)
    run(_softmax_backward, dy.reshape(lines), y.reshape(lines), dx.reshape(lines), log)
    return dx


softmax_forward, log_softmax_forward = partial(_softmax, log=False), partial(_softmax, log=True)
softmax_backward, log_softmax_backward = partial(_softmax_grad, log=False), partial(_softmax_grad, log=True)
