"""Public dense ops: linear and its backward, as ``torch.nn.functional.linear``.

x is (*, in_features) with any number of leading dims; they are flattened here, once, so the
backend's ``linear`` module sees 2-d arrays only: ``linear_forward(x, w, b)``,
``linear_backward_input(dy, w)``, ``linear_backward_weight(dy, x)``, ``linear_backward_bias(dy)``
(the same four passes as convolution). A 1-d w (in_features,) reaches them as one output feature
(1, in_features). Backends never see an empty array: a product with an empty operand is a sum over
nothing, i.e. zeros, and is made here.

The bias: the backends add an ``(out_features,)`` b to each row. Any other shape PyTorch takes
(``()``, ``(1,)``, ``(M, out_features)``, ``(*, 1)``, ...; the rules are in
:func:`fastconv._params.linear_params`) is broadcast and added here, in the frame PyTorch adds it
in, and its gradient is dy summed to b's shape.
"""

from __future__ import annotations

from .._checks import check_array, check_needs, check_same_kind, check_shape, zeros
from .._dispatch import lookup, planned
from .._params import linear_params


def _check_linear(op, x, w, b, b_shape, b_contiguous):
    """Validate x, w (and b's shape and layout, which decide how PyTorch adds it); return the
    :class:`~fastconv._params.LinearParams`."""
    check_array(op, "x", x)
    check_array(op, "w", w)  # their ranks: linear_params, with the shapes
    check_same_kind(op, x=x, w=w, b=b)
    return linear_params(op, x.shape, w.shape, b_shape, x.flags.c_contiguous, b_contiguous)


def _sum_to(a, shape):
    """``a`` summed over the axes a broadcast of an array of ``shape`` to ``a.shape`` repeats it
    along: the gradient of a broadcast bias (a fresh array)."""
    lead = a.ndim - len(shape)
    axes = (*range(lead), *(lead + i for i, s in enumerate(shape) if s == 1 and a.shape[lead + i] != 1))
    return a.sum(axis=axes, keepdims=True).reshape(shape)


def linear(x, w, b=None, *, backend="auto"):
    """``y = x @ w.T + b``: x (*, in_features), w (out_features, in_features) -> y (*, out_features),
    or w (in_features,) -> y (*). b: None, ``(out_features,)``, or any shape
    ``torch.nn.functional.linear`` broadcasts (see :func:`fastconv._params.linear_params`)."""
    return _linear_plan(x, w, b, backend, _c_contiguous(x), _c_contiguous(b))(x, w, b)


def _c_contiguous(a):
    """Whether ``a`` is C-contiguous (None and what is not an array: True, validation names them):
    where PyTorch adds a bias depends on x's and b's layouts, so a plan is kept per layout too."""
    flags = getattr(a, "flags", None)
    return True if flags is None else bool(flags.c_contiguous)


@planned
def _linear_plan(x, w, b, backend, x_contiguous, b_contiguous):
    """linear validated and dispatched: the run for arrays of these shapes, dtypes and layouts."""
    op = "linear"
    if b is not None:
        check_array(op, "b", b)
    p = _check_linear(op, x, w, b, None if b is None else b.shape, b_contiguous)
    framed = p.b_frame is not None  # b added here, in the frame PyTorch adds it in; else by the backends
    x2, w2 = x.reshape(p.x2_shape), w.reshape(p.w2_shape)  # (M, in_features), (out_features, in_features)
    forward = None
    if x2.size and w2.size:
        forward = lookup(op, "linear", "linear_forward", backend, x2, w2, None if framed else b)
        if x.ndim == 2 and w.ndim == 2 and not framed:
            return forward

    def run(x, w, b):
        x2, w2 = x.reshape(p.x2_shape), w.reshape(p.w2_shape)
        fused = None if framed else b
        if forward is None:
            y = zeros(x, (x2.shape[0], w2.shape[0]))
            if fused is not None:  # with in_features = 0 the bias is all there is
                y += fused
        else:
            y = forward(x2, w2, fused)  # (M, out_features)
        if framed:
            in_frame = y.reshape(p.b_frame)  # a view of the fresh y
            in_frame += b
        return y.reshape(p.y_shape)
    return run


def linear_backward(dy, x, w, *, b_shape=None, needs=(True, True, True), backend="auto"):
    """Gradients ``(dx, dw, db)`` of :func:`linear` given dy (y's shape).

    ``b_shape``: the shape of the forward's b (in whichever frame takes it, see
    :func:`fastconv._params.linear_params`), which
    db has; None: ``(out_features,)``, or ``()`` for a 1-d w. ``needs`` picks which of the three
    to compute; the others are None.
    """
    return _linear_backward_plan(dy, x, w, b_shape, needs, backend, _c_contiguous(x))(dy, x, w)


@planned
def _linear_backward_plan(dy, x, w, b_shape, needs, backend, x_contiguous):
    """linear_backward validated and dispatched: the run for arrays of these shapes, dtypes and
    x's layout (which decides, with b_shape, the frame a broadcast bias was added in)."""
    op = "linear_backward"
    need_dx, need_dw, need_db = check_needs(op, needs, 3)
    check_array(op, "dy", dy)
    p = _check_linear(op, x, w, None, b_shape, None)  # reads x's layout, as x_contiguous keys it
    check_same_kind(op, dy=dy, x=x, w=w)
    check_shape(op, "dy", dy, p.y_shape)
    (M, C_in), C_out = p.x2_shape, p.w2_shape[0]
    # the backend's passes, picked once; None where an operand is empty (its product is zeros)
    dy2, x2, w2 = dy.reshape(M, C_out), x.reshape(p.x2_shape), w.reshape(p.w2_shape)

    def product(need, func, *arrays):
        if not need or any(a.size == 0 for a in arrays):
            return None
        return lookup(op, "linear", func, backend, *arrays)

    backward_input = product(need_dx, "linear_backward_input", dy2, w2)
    backward_weight = product(need_dw, "linear_backward_weight", dy2, x2)
    backward_bias = product(need_db and p.b_frame is None, "linear_backward_bias", dy2)
    db_shape = w.shape[:-1] if b_shape is None else tuple(b_shape)  # an (out_features,) bias's, or none's

    def run(dy, x, w):
        # dy2: (M, out_features), x2: (M, in_features), w2: (out_features, in_features)
        dy2, x2, w2 = dy.reshape(M, C_out), x.reshape(p.x2_shape), w.reshape(p.w2_shape)
        dx = dw = db = None
        if need_dx:
            dx = (zeros(x, (M, C_in)) if backward_input is None else backward_input(dy2, w2)).reshape(x.shape)
        if need_dw:
            dw = (zeros(w, p.w2_shape) if backward_weight is None else backward_weight(dy2, x2)).reshape(w.shape)
        if need_db:
            if p.b_frame is not None:  # a broadcast bias: dy summed to its shape, in its frame
                db = _sum_to(dy.reshape(p.b_frame), tuple(b_shape))
            else:  # an (out_features,) bias (or none given): the backend's column sums
                db = (zeros(w, (C_out,)) if backward_bias is None else backward_bias(dy2)).reshape(db_shape)
        return dx, dw, db

    return run


__all__ = ["linear", "linear_backward"]
