"""GPU activations and softmax (cuda/activation.cu): one grid-stride kernel per direction for the
nine activations (which one is an argument), softmax along contiguous rows with a block per row,
along a strided axis with a thread per column."""

import math

import numpy as np

from ._device import Module, ctype, device_of, grid_blocks, instances, threads_per_block

_TYPES = ("__half", "float", "double")
KERNELS = Module("activation", tuple(
    name for kernel in ("activation_forward", "activation_backward", "softmax_rows", "softmax_rows_backward",
                        "softmax_cols", "softmax_cols_backward")
    for name in instances(kernel, _TYPES)))

# the kernels' Act enum, and the parameters (a, b) each takes, as csrc/activation.h
RELU, LEAKY_RELU, ELU, GELU, GELU_TANH, SIGMOID, TANH, SOFTPLUS, SILU = range(9)
SELU_ALPHA = 1.6732632423543772848170429916717  # torch's constants, to double precision
SELU_SCALE = 1.0507009873554804934193349852946


def _elementwise(kernel, act, out_like, arrays, a=0.0, b=0.0):
    """``kernel`` over the K elements of the 1-d ``arrays`` into a new array like ``out_like``."""
    dev = device_of(out_like)
    with dev.activate():
        arrays = [dev.contiguous(v) for v in arrays]
        out = dev.empty(out_like.shape, out_like.dtype)  # (K,)
        threads = threads_per_block(256)
        KERNELS.launch(dev, f"{kernel}<{ctype(out.dtype)}>", grid_blocks(dev, out.size, threads, per_thread=4),
                       threads, (np.int32(act), *arrays, out, np.int64(out.size), np.float64(a), np.float64(b)))
    return out


def _forward(act, x, a=0.0, b=0.0):
    return _elementwise("activation_forward", act, x, [x], a, b)


def _backward(act, dy, x, a=0.0, b=0.0):
    return _elementwise("activation_backward", act, x, [dy, x], a, b)


def _gelu(approximate):
    return GELU_TANH if approximate == "tanh" else GELU


def relu_forward(x):
    return _forward(RELU, x)


def relu_backward(dy, x):
    return _backward(RELU, dy, x)


def leaky_relu_forward(x, negative_slope):
    return _forward(LEAKY_RELU, x, negative_slope)


def leaky_relu_backward(dy, x, negative_slope):
    return _backward(LEAKY_RELU, dy, x, negative_slope)


def elu_forward(x, alpha):
    return _forward(ELU, x, alpha, 1.0)


def elu_backward(dy, x, alpha):
    return _backward(ELU, dy, x, alpha, 1.0)


def selu_forward(x):
    return _forward(ELU, x, SELU_ALPHA, SELU_SCALE)


def selu_backward(dy, x):
    return _backward(ELU, dy, x, SELU_ALPHA, SELU_SCALE)


def gelu_forward(x, approximate):
    return _forward(_gelu(approximate), x)


def gelu_backward(dy, x, approximate):
    return _backward(_gelu(approximate), dy, x)


def sigmoid_forward(x):
    return _forward(SIGMOID, x)


def sigmoid_backward(dy, x):
    return _backward(SIGMOID, dy, x)


def tanh_forward(x):
    return _forward(TANH, x)


def tanh_backward(dy, x):
    return _backward(TANH, dy, x)


def softplus_forward(x, beta, threshold):
    return _forward(SOFTPLUS, x, beta, threshold)


def softplus_backward(dy, x, beta, threshold):
    return _backward(SOFTPLUS, dy, x, beta, threshold)


def silu_forward(x):
    return _forward(SILU, x)


def silu_backward(dy, x):
    return _backward(SILU, dy, x)


# --------------------------------------------------------------------------------------------
# softmax and log_softmax along one axis
# --------------------------------------------------------------------------------------------

def _softmax(kernel, log, arrays, axis):
    """``kernel`` (rows or cols variant chosen here) on ``arrays`` viewed as (outer, D, inner)."""
    like = arrays[-1]
    dev = device_of(like)
    shape = like.shape
    outer, D, inner = math.prod(shape[:axis]), shape[axis], math.prod(shape[axis + 1:])
    with dev.activate():
        arrays = [dev.contiguous(v) for v in arrays]
        out = dev.empty(shape, like.dtype)  # (x.shape)
        t = ctype(out.dtype)
        if inner == 1:  # contiguous rows: a block per row, its reductions across the block
            threads = threads_per_block(256 if D >= 256 else 32 * math.ceil(D / 32))
            KERNELS.launch(dev, f"softmax_rows{kernel}<{t}>", grid_blocks(dev, outer * threads, threads), threads,
                           (np.int32(log), *arrays, out, np.int64(outer), np.int32(D)))
        else:  # a strided axis: a thread per column, walking D with stride inner
            threads = threads_per_block(256)
            KERNELS.launch(dev, f"softmax_cols{kernel}<{t}>", grid_blocks(dev, outer * inner, threads), threads,
                           (np.int32(log), *arrays, out, np.int64(outer), np.int32(D), np.int64(inner)))
    return out


def softmax_forward(x, axis):
    return _softmax("", False, [x], axis)


def log_softmax_forward(x, axis):
    return _softmax("", True, [x], axis)


def softmax_backward(dy, y, axis):
    return _softmax("_backward", False, [dy, y], axis)


def log_softmax_backward(dy, y, axis):
    return _softmax("_backward", True, [dy, y], axis)
