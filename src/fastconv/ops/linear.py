"""Public dense ops: linear and its backward, as ``torch.nn.functional.linear``.

x is (*, in_features) with any number of leading dims; they are flattened here, once, so the
backend's ``linear`` module sees 2-d arrays only: ``linear_forward(x, w, b)``,
``linear_backward_input(dy, w)``, ``linear_backward_weight(dy, x)``, ``linear_backward_bias(dy)``
(the same four passes as convolution). Backends never see an empty array: a product with an empty
operand is a sum over nothing, i.e. zeros, and is made here.
"""

from __future__ import annotations

import math

from .._checks import check_array, check_needs, check_same_kind, check_shape, zeros
from .._dispatch import lookup, planned

_W = "(out_features, in_features)"


def _check_linear(op, x, w, b):
    """Validate x (*, in_features), w, b; return x as 2-d (M, in_features)."""
    check_array(op, "x", x, min_ndim=1)
    check_array(op, "w", w, dims=_W)
    if b is not None:
        check_array(op, "b", b, dims="(out_features,)")
    check_same_kind(op, x=x, w=w, b=b)
    if x.shape[-1] != w.shape[1]:
        raise ValueError(f"{op}: x has {x.shape[-1]} features in its last dim (shape {tuple(x.shape)}), "
                         f"but w {tuple(w.shape)} expects in_features={w.shape[1]}")
    check_shape(op, "b", b, (w.shape[0],))
    # reshape, not reshape(-1, K): with M = 0 and K = 0 the -1 would be ambiguous
    return x.reshape(math.prod(x.shape[:-1]), x.shape[-1])  # (M, in_features)


def _product(op, func, backend, shape, like, *arrays):
    """``func`` of the backend on ``arrays``, or zeros of ``shape`` when one of them is empty."""
    if any(a.size == 0 for a in arrays):
        return zeros(like, shape)
    return lookup(op, "linear", func, backend, *arrays)(*arrays)


def linear(x, w, b=None, *, backend="auto"):
    """``y = x @ w.T + b``: x (*, in_features), w (out_features, in_features), b (out_features,)
    or None -> y (*, out_features)."""
    return _linear_plan(x, w, b, backend)(x, w, b)


@planned
def _linear_plan(x, w, b, backend):
    """linear validated and dispatched: the run for arrays of these shapes and dtypes."""
    op = "linear"
    x2 = _check_linear(op, x, w, b)
    out_shape = (*x.shape[:-1], w.shape[0])
    if x2.size == 0 or w.size == 0:
        def empty(x, w, b):
            y = zeros(x, out_shape)
            if b is not None:  # with in_features = 0 the bias is all there is
                y += b
            return y
        return empty
    forward = lookup(op, "linear", "linear_forward", backend, x2, w, b)
    if x.ndim == 2:
        return forward
    return lambda x, w, b: forward(x.reshape(x2.shape), w, b).reshape(out_shape)  # (M, out_features)


def linear_backward(dy, x, w, *, needs=(True, True, True), backend="auto"):
    """Gradients ``(dx, dw, db)`` of :func:`linear` given dy (*, out_features).

    ``needs`` picks which of the three to compute; the others are None.
    """
    op = "linear_backward"
    need_dx, need_dw, need_db = check_needs(op, needs, 3)
    x2 = _check_linear(op, x, w, None)
    check_array(op, "dy", dy, min_ndim=1)
    check_same_kind(op, dy=dy, x=x)
    check_shape(op, "dy", dy, (*x.shape[:-1], w.shape[0]))
    dy2 = dy.reshape(x2.shape[0], w.shape[0])  # (M, out_features)
    M, (C_out, C_in) = x2.shape[0], w.shape
    dx = _product(op, "linear_backward_input", backend, (M, C_in), x, dy2, w).reshape(x.shape) if need_dx else None
    dw = _product(op, "linear_backward_weight", backend, w.shape, w, dy2, x2) if need_dw else None
    db = _product(op, "linear_backward_bias", backend, (C_out,), w, dy2) if need_db else None
    return dx, dw, db


__all__ = ["linear", "linear_backward"]
