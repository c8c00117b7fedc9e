"""Public activations (relu, leaky_relu, elu, selu, gelu, sigmoid, tanh, softplus, silu) and
softmax / log_softmax, each with its backward. Semantics are ``torch.nn.functional``'s, including
the gradient at kinks, NaN propagation and softplus's threshold.

Every op validates here, once, and dispatches to the backend's ``activation`` module:

- ``<name>_forward(x, *params) -> y`` and ``<name>_backward(dy, x, *params) -> dx`` for each
  activation, on 1-d arrays (this module flattens x, so kernels see one contiguous run of
  elements for any input shape, 0-d included), scalar parameters as plain Python values in the
  order of the public signature;
- ``softmax_forward(x, axis)``, ``softmax_backward(dy, y, axis)``, ``log_softmax_forward(x, axis)``,
  ``log_softmax_backward(dy, y, axis)`` on arrays of x's shape (at least 1-d), ``axis >= 0``.

Empty inputs never reach a kernel.
"""

from __future__ import annotations

from .._checks import check_array, check_choice, check_float, check_same_kind, check_shape, zeros
from .._dispatch import lookup
from .._params import as_int

# --------------------------------------------------------------------------------------------
# elementwise activations: validation and dispatch shared by all nine
# --------------------------------------------------------------------------------------------


def _forward(name, x, *params, backend):
    """y = name(x): x validated, flattened for the kernel, y returned in x's shape."""
    check_array(name, "x", x)
    if x.size == 0:
        return zeros(x, x.shape)
    kernel = lookup(name, "activation", f"{name}_forward", backend, x)
    return kernel(x.reshape(-1), *params).reshape(x.shape)


def _backward(name, dy, x, *params, backend):
    """dx of name at x given dy, both validated and flattened like in :func:`_forward`."""
    op = f"{name}_backward"
    check_array(op, "dy", dy)
    check_array(op, "x", x)
    check_same_kind(op, dy=dy, x=x)
    check_shape(op, "dy", dy, x.shape)
    if x.size == 0:
        return zeros(x, x.shape)
    kernel = lookup(op, "activation", f"{name}_backward", backend, dy, x)
    return kernel(dy.reshape(-1), x.reshape(-1), *params).reshape(x.shape)


def relu(x, *, backend="auto"):
    """max(x, 0). NaN stays NaN."""
    return _forward("relu", x, backend=backend)


def relu_backward(dy, x, *, backend="auto"):
    """dy where x > 0 or x is NaN, else 0 (PyTorch's gradient at x = 0 is 0)."""
    return _backward("relu", dy, x, backend=backend)


def leaky_relu(x, negative_slope=0.01, *, backend="auto"):
    """x where x > 0, else negative_slope * x."""
    slope = check_float("leaky_relu", "negative_slope", negative_slope)
    return _forward("leaky_relu", x, slope, backend=backend)


def leaky_relu_backward(dy, x, negative_slope=0.01, *, backend="auto"):
    """dy where x > 0, else negative_slope * dy (at x = 0 and at NaN too, as PyTorch)."""
    slope = check_float("leaky_relu_backward", "negative_slope", negative_slope)
    return _backward("leaky_relu", dy, x, slope, backend=backend)


def elu(x, alpha=1.0, *, backend="auto"):
    """x where x > 0, else alpha * (exp(x) - 1)."""
    alpha = check_float("elu", "alpha", alpha)
    return _forward("elu", x, alpha, backend=backend)


def elu_backward(dy, x, alpha=1.0, *, backend="auto"):
    """dy where x > 0, else alpha * exp(x) * dy: alpha * dy at x = 0, as PyTorch, and NaN at NaN
    (as PyTorch's vectorised loop; its scalar tail gives dy there)."""
    alpha = check_float("elu_backward", "alpha", alpha)
    return _backward("elu", dy, x, alpha, backend=backend)


def selu(x, *, backend="auto"):
    """scale * elu(x, alpha) with PyTorch's fixed alpha = 1.6732632... and scale = 1.0507009..."""
    return _forward("selu", x, backend=backend)


def selu_backward(dy, x, *, backend="auto"):
    """scale * dy where x > 0, else scale * alpha * exp(x) * dy."""
    return _backward("selu", dy, x, backend=backend)


_GELU_APPROXIMATIONS = ("none", "tanh")


def gelu(x, approximate="none", *, backend="auto"):
    """x * Phi(x), Phi the standard normal CDF; ``approximate='tanh'`` uses
    0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), as PyTorch."""
    check_choice("gelu", "approximate", approximate, _GELU_APPROXIMATIONS)
    return _forward("gelu", x, approximate, backend=backend)


def gelu_backward(dy, x, approximate="none", *, backend="auto"):
    check_choice("gelu_backward", "approximate", approximate, _GELU_APPROXIMATIONS)
    return _backward("gelu", dy, x, approximate, backend=backend)


def sigmoid(x, *, backend="auto"):
    """1 / (1 + exp(-x)), without overflow for large |x|."""
    return _forward("sigmoid", x, backend=backend)


def sigmoid_backward(dy, x, *, backend="auto"):
    """dy * s * (1 - s) with s = sigmoid(x). Takes x (not the output, unlike PyTorch's
    ``sigmoid_backward(grad, output)``), like every activation backward here."""
    return _backward("sigmoid", dy, x, backend=backend)


def tanh(x, *, backend="auto"):
    return _forward("tanh", x, backend=backend)


def tanh_backward(dy, x, *, backend="auto"):
    """dy * (1 - tanh(x)^2); takes x, not the output."""
    return _backward("tanh", dy, x, backend=backend)


def _softplus_params(op, beta, threshold):
    beta = check_float(op, "beta", beta)
    if beta == 0:  # PyTorch divides by beta and returns inf/NaN; a zero beta is always a mistake
        raise ValueError(f"{op}: expected beta != 0, got {beta}")
    return beta, check_float(op, "threshold", threshold)


def softplus(x, beta=1.0, threshold=20.0, *, backend="auto"):
    """log(1 + exp(beta x)) / beta, and x itself where beta * x > threshold (PyTorch's cut-off)."""
    return _forward("softplus", x, *_softplus_params("softplus", beta, threshold), backend=backend)


def softplus_backward(dy, x, beta=1.0, threshold=20.0, *, backend="auto"):
    """dy where beta * x > threshold, else dy * sigmoid(beta x)."""
    params = _softplus_params("softplus_backward", beta, threshold)
    return _backward("softplus", dy, x, *params, backend=backend)


def silu(x, *, backend="auto"):
    """x * sigmoid(x) (swish)."""
    return _forward("silu", x, backend=backend)


def silu_backward(dy, x, *, backend="auto"):
    """dy * s * (1 + x (1 - s)) with s = sigmoid(x)."""
    return _backward("silu", dy, x, backend=backend)


# --------------------------------------------------------------------------------------------
# softmax and log_softmax along one axis
# --------------------------------------------------------------------------------------------

def _axis(op, dim, ndim) -> int:
    """``dim`` as a non-negative axis; a 0-d array has one axis, -1 or 0, as in PyTorch."""
    dim = as_int(op, "dim", dim)
    rank = max(ndim, 1)
    if not -rank <= dim < rank:
        raise ValueError(f"{op}: expected dim in [{-rank}, {rank - 1}] for an array with {ndim} dims, "
                         f"got {dim}")
    return dim % rank


def _softmax_forward(name, x, dim, backend):
    check_array(name, "x", x)
    axis = _axis(name, dim, x.ndim)
    if x.size == 0:
        return zeros(x, x.shape)
    kernel = lookup(name, "activation", f"{name}_forward", backend, x)
    return kernel(x.reshape(x.shape or (1,)), axis).reshape(x.shape)


def _softmax_backward(name, dy, y, dim, backend):
    op = f"{name}_backward"
    check_array(op, "dy", dy)
    check_array(op, "y", y)
    check_same_kind(op, dy=dy, y=y)
    check_shape(op, "dy", dy, y.shape)
    axis = _axis(op, dim, y.ndim)
    if y.size == 0:
        return zeros(y, y.shape)
    kernel = lookup(op, "activation", f"{name}_backward", backend, dy, y)
    return kernel(dy.reshape(y.shape or (1,)), y.reshape(y.shape or (1,)), axis).reshape(y.shape)


def softmax(x, dim=-1, *, backend="auto"):
    """exp(x) / sum(exp(x)) along ``dim``, computed with the maximum subtracted (no overflow).

    As in PyTorch, a slice holding +inf, NaN, or only -inf entries is all NaN.
    """
    return _softmax_forward("softmax", x, dim, backend)


def softmax_backward(dy, y, dim=-1, *, backend="auto"):
    """dx = y * (dy - sum(dy * y, dim)).

    ``y`` is softmax's *output*, not its input: that is all the gradient needs (PyTorch's
    ``_softmax_backward_data(grad_output, output, dim, input_dtype)`` convention).
    """
    return _softmax_backward("softmax", dy, y, dim, backend)


def log_softmax(x, dim=-1, *, backend="auto"):
    """x - log(sum(exp(x))) along ``dim``, computed with the maximum subtracted (no overflow)."""
    return _softmax_forward("log_softmax", x, dim, backend)


def log_softmax_backward(dy, y, dim=-1, *, backend="auto"):
    """dx = dy - exp(y) * sum(dy, dim).

    ``y`` is log_softmax's *output* (PyTorch's ``_log_softmax_backward_data`` convention).
    """
    return _softmax_backward("log_softmax", dy, y, dim, backend)


__all__ = ["relu", "relu_backward", "leaky_relu", "leaky_relu_backward", "elu", "elu_backward",
           "selu", "selu_backward", "gelu", "gelu_backward", "sigmoid", "sigmoid_backward", "tanh",
           "tanh_backward", "softplus", "softplus_backward", "silu", "silu_backward", "softmax",
           "softmax_backward", "log_softmax", "log_softmax_backward"]
