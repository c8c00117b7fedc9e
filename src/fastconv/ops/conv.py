"""Public convolution ops: conv2d, conv1d, conv_transpose2d, each with its backward.

Every op validates here, once per call signature (its plan, see
:func:`fastconv._dispatch.planned`), builds a :class:`~fastconv._params.ConvParams`, and dispatches to
the backend's ``conv`` module (``conv2d_forward``, ``conv2d_backward_input``,
``conv2d_backward_weight``, ``conv2d_backward_bias``). conv1d is conv2d with H = 1, and a
transposed convolution is the backward-input of the convolution it transposes, so three ops share
four kernels per backend. As in PyTorch, x may come without its batch axis ((C_in, H, W), or
(C_in, L) for conv1d): it runs as a batch of one (a view) and the results lose the axis again.
"""

from __future__ import annotations

from .._checks import check_array, check_batched, check_needs, check_same_kind, check_shape, unbatch, zeros
from .._dispatch import lookup, planned
from .._params import as_int, as_single, conv_params, conv_transpose_params

_X = "(N, C_in, H, W)"
_W = "(C_out, C_in/groups, KH, KW)"


def _check_conv2d(op, x, w, b, stride, padding, dilation, groups, *, unbatched=None):
    """``(x4, unbatched, p)``: x with its batch axis, whether it was added, the problem."""
    x, unbatched = check_batched(op, "x", x, _X, unbatched=unbatched)
    check_array(op, "w", w, dims=_W)
    if b is not None:
        check_array(op, "b", b, dims="(C_out,)")
    check_same_kind(op, x=x, w=w, b=b)
    p = conv_params(op, x.shape, w.shape, stride, padding, dilation, groups)
    check_shape(op, "b", b, (p.C_out,))
    return x, unbatched, p


def _check_dy(op, dy, x, shape, unbatched, dims):
    """dy of ``shape`` (batched), unbatched exactly when x was; returned with its batch axis."""
    dy4, _ = check_batched(op, "dy", dy, dims, unbatched=unbatched)
    check_same_kind(op, dy=dy, x=x)
    check_shape(op, "dy", dy, shape[1:] if unbatched else shape)
    return dy4


def _forward(op, x, w, b, p, backend):
    if p.N == 0:
        return zeros(x, p.y_shape)
    return lookup(op, "conv", "conv2d_forward", backend, x, w, b)(x, w, b, p)


def _backward(op, dy, x, w, p, needs, backend):
    """(dx, dw, db) of the convolution ``p`` given dy; None for what ``needs`` leaves out."""
    need_dx, need_dw, need_db = needs
    dx = dw = db = None
    if p.N == 0:  # nothing flows back from an empty batch
        return (zeros(x, p.x_shape) if need_dx else None, zeros(w, p.w_shape) if need_dw else None,
                zeros(w, (p.C_out,)) if need_db else None)
    if need_dx:
        dx = lookup(op, "conv", "conv2d_backward_input", backend, dy, w)(dy, w, p)
    if need_dw:
        dw = lookup(op, "conv", "conv2d_backward_weight", backend, dy, x)(dy, x, p)
    if need_db:
        db = lookup(op, "conv", "conv2d_backward_bias", backend, dy)(dy)
    return dx, dw, db


def conv2d(x, w, b=None, stride=1, padding=0, dilation=1, groups=1, *, backend="auto"):
    """2-d cross-correlation, as ``torch.nn.functional.conv2d``.

    x (N, C_in, H, W), w (C_out, C_in/groups, KH, KW), b (C_out,) or None -> y (N, C_out, OH, OW);
    an unbatched x (C_in, H, W) gives y (C_out, OH, OW). ``padding``: an int, a pair (ph, pw), ``'same'``, ``'valid'`` or ``((top, bottom), (left, right))``.
    """
    return _conv2d_plan(x, w, b, stride, padding, dilation, groups, backend)(x, w, b)


@planned
def _conv2d_plan(x, w, b, stride, padding, dilation, groups, backend):
    """conv2d validated and dispatched: the run for arrays of these shapes and dtypes."""
    x4, unbatched, p = _check_conv2d("conv2d", x, w, b, stride, padding, dilation, groups)
    if p.N == 0:
        return lambda x, w, b: unbatch(zeros(x, p.y_shape), unbatched)
    forward = lookup("conv2d", "conv", "conv2d_forward", backend, x4, w, b)
    if unbatched:
        return lambda x, w, b: forward(x[None], w, b, p)[0]
    return lambda x, w, b: forward(x, w, b, p)


def conv2d_backward(dy, x, w, stride=1, padding=0, dilation=1, groups=1, *,
                    needs=(True, True, True), backend="auto"):
    """Gradients ``(dx, dw, db)`` of :func:`conv2d` given dy (N, C_out, OH, OW).

    ``needs`` picks which of the three to compute; the others are None.
    """
    return _conv2d_backward_plan(dy, x, w, stride, padding, dilation, groups, needs, backend)(dy, x, w)


@planned
def _conv2d_backward_plan(dy, x, w, stride, padding, dilation, groups, needs, backend):
    op = "conv2d_backward"
    needs = check_needs(op, needs, 3)
    x4, unbatched, p = _check_conv2d(op, x, w, None, stride, padding, dilation, groups)
    _check_dy(op, dy, x4, p.y_shape, unbatched, "(N, C_out, OH, OW)")

    def run(dy, x, w):
        if unbatched:
            dy, x = dy[None], x[None]
        dx, dw, db = _backward(op, dy, x, w, p, needs, backend)
        return unbatch(dx, unbatched), dw, db

    return run


# --------------------------------------------------------------------------------------------
# conv1d: conv2d over (N, C, 1, L)
# --------------------------------------------------------------------------------------------

def _padding_1d(op, padding):
    """1-d padding (int, ``(p,)``, ``(left, right)``, 'same', 'valid') in conv2d's per-side form."""
    if isinstance(padding, str):
        return padding
    if isinstance(padding, (tuple, list)) and len(padding) == 2:
        left, right = (as_int(op, "padding", v) for v in padding)
        return ((0, 0), (left, right))
    return (0, as_single(op, "padding", padding))


def _params_1d(op, x, w, b, stride, padding, dilation, groups):
    """``(x2, w2, unbatched, p)``: x and w as the conv2d operands (views), the problem."""
    x, unbatched = check_batched(op, "x", x, "(N, C_in, L)")
    check_array(op, "w", w, dims="(C_out, C_in/groups, K)")
    x2, w2 = x[:, :, None, :], w[:, :, None, :]  # views: (N, C_in, 1, L), (C_out, C_in/g, 1, K)
    _, _, p = _check_conv2d(op, x2, w2, b, (1, as_single(op, "stride", stride)), _padding_1d(op, padding),
                            (1, as_single(op, "dilation", dilation)), groups, unbatched=False)
    return x2, w2, unbatched, p


def conv1d(x, w, b=None, stride=1, padding=0, dilation=1, groups=1, *, backend="auto"):
    """1-d cross-correlation, as ``torch.nn.functional.conv1d``: x (N, C_in, L) -> y (N, C_out, OL),
    unbatched x (C_in, L) -> y (C_out, OL).

    ``padding``: an int, ``(p,)``, ``'same'``, ``'valid'`` or per side ``(left, right)``.
    """
    x2, w2, unbatched, p = _params_1d("conv1d", x, w, b, stride, padding, dilation, groups)
    return unbatch(_forward("conv1d", x2, w2, b, p, backend)[:, :, 0, :], unbatched)


def conv1d_backward(dy, x, w, stride=1, padding=0, dilation=1, groups=1, *,
                    needs=(True, True, True), backend="auto"):
    """Gradients ``(dx, dw, db)`` of :func:`conv1d` given dy (N, C_out, OL)."""
    op = "conv1d_backward"
    needs = check_needs(op, needs, 3)
    x2, w2, unbatched, p = _params_1d(op, x, w, None, stride, padding, dilation, groups)
    dy = _check_dy(op, dy, x, (p.N, p.C_out, p.OW), unbatched, "(N, C_out, OL)")
    dx, dw, db = _backward(op, dy[:, :, None, :], x2, w2, p, needs, backend)
    return (None if dx is None else unbatch(dx[:, :, 0, :], unbatched),
            None if dw is None else dw[:, :, 0, :], db)


# --------------------------------------------------------------------------------------------
# conv_transpose2d: the backward-input of a convolution from y-space to x-space
# --------------------------------------------------------------------------------------------

def _params_transpose(op, x, w, b, stride, padding, output_padding, groups, dilation):
    """``(x4, unbatched, p)``, as :func:`_check_conv2d`."""
    x, unbatched = check_batched(op, "x", x, _X)
    check_array(op, "w", w, dims="(C_in, C_out/groups, KH, KW)")
    if b is not None:
        check_array(op, "b", b, dims="(C_out,)")
    check_same_kind(op, x=x, w=w, b=b)
    p = conv_transpose_params(op, x.shape, w.shape, stride, padding, output_padding, groups, dilation)
    check_shape(op, "b", b, (p.C_in,))  # the equivalent convolution's input channels are y's
    return x, unbatched, p


def conv_transpose2d(x, w, b=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1, *,
                     backend="auto"):
    """Transposed 2-d convolution, as ``torch.nn.functional.conv_transpose2d``.

    x (N, C_in, H, W), w (C_in, C_out/groups, KH, KW), b (C_out,) -> y (N, C_out, OH, OW); an
    unbatched x (C_in, H, W) gives y (C_out, OH, OW).
    """
    op = "conv_transpose2d"
    x, unbatched, p = _params_transpose(op, x, w, b, stride, padding, output_padding, groups, dilation)
    if p.N == 0:
        return zeros(x, p.x_shape)
    # the equivalent convolution maps y-space (its x) to x-space (its y): x plays its dy
    y = lookup(op, "conv", "conv2d_backward_input", backend, x, w)(x, w, p)  # (N, C_out, OH, OW)
    if b is not None:
        y += b.reshape(1, -1, 1, 1)
    return unbatch(y, unbatched)


def conv_transpose2d_backward(dy, x, w, stride=1, padding=0, output_padding=0, groups=1, dilation=1, *,
                              needs=(True, True, True), backend="auto"):
    """Gradients ``(dx, dw, db)`` of :func:`conv_transpose2d` given dy (N, C_out, OH, OW)."""
    op = "conv_transpose2d_backward"
    need_dx, need_dw, need_db = check_needs(op, needs, 3)
    x, unbatched, p = _params_transpose(op, x, w, None, stride, padding, output_padding, groups, dilation)
    dy = _check_dy(op, dy, x, p.x_shape, unbatched, "(N, C_out, OH, OW)")
    if p.N == 0:
        return (zeros(x, x.shape) if need_dx else None, zeros(w, w.shape) if need_dw else None,
                zeros(w, (p.C_in,)) if need_db else None)
    # in the equivalent convolution dy is the input and x the output gradient
    dx = lookup(op, "conv", "conv2d_forward", backend, dy, w)(dy, w, None, p) if need_dx else None
    dw = lookup(op, "conv", "conv2d_backward_weight", backend, x, dy)(x, dy, p) if need_dw else None
    db = lookup(op, "conv", "conv2d_backward_bias", backend, dy)(dy) if need_db else None
    return unbatch(dx, unbatched), dw, db


__all__ = ["conv2d", "conv2d_backward", "conv1d", "conv1d_backward", "conv_transpose2d",
           "conv_transpose2d_backward"]
