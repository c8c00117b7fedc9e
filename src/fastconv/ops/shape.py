"""flatten and its backward, as ``torch.flatten``: a reshape and a copy, so no backend kernel.

Both still take ``backend=`` like every op (a layer can pass it through unchanged); the name is
checked, nothing is dispatched.
"""

from __future__ import annotations

import math

from .._checks import check_array, check_same_kind, check_shape
from .._dispatch import _check_name
from .._params import as_int


def _flat_shape(op, shape, start_dim, end_dim) -> tuple[int, ...]:
    """The shape after merging dims ``start_dim..end_dim`` (negative dims count from the end)."""
    # PyTorch treats a 0-d tensor as 1-d here: flatten(scalar) is a 1-element vector
    shape = tuple(shape) or (1,)
    ndim = len(shape)
    dims = []
    for name, dim in (("start_dim", start_dim), ("end_dim", end_dim)):
        dim = as_int(op, name, dim)
        if not -ndim <= dim < ndim:
            raise ValueError(f"{op}: {name}={dim} is out of range for x with {ndim} dims "
                             f"(expected a dim in [{-ndim}, {ndim - 1}])")
        dims.append(dim % ndim)
    start, end = dims
    if start > end:
        raise ValueError(f"{op}: start_dim={start_dim} comes after end_dim={end_dim} "
                         f"for x of shape {shape}")
    return (*shape[:start], math.prod(shape[start:end + 1]), *shape[end + 1:])


def flatten(x, start_dim=1, end_dim=-1, *, backend="auto"):
    """x with dims ``start_dim..end_dim`` merged into one, as a fresh C-contiguous array."""
    op = "flatten"
    _check_name(backend)
    check_array(op, "x", x)
    return x.reshape(_flat_shape(op, x.shape, start_dim, end_dim)).copy()  # copy() is C order


def flatten_backward(dy, x, start_dim=1, end_dim=-1, *, backend="auto"):
    """dx of :func:`flatten` given dy of the flattened shape: dy reshaped to x's shape, fresh."""
    op = "flatten_backward"
    _check_name(backend)
    check_array(op, "x", x)
    check_array(op, "dy", dy)
    check_same_kind(op, dy=dy, x=x)
    check_shape(op, "dy", dy, _flat_shape(op, x.shape, start_dim, end_dim))
    return dy.reshape(x.shape).copy()


__all__ = ["flatten", "flatten_backward"]
