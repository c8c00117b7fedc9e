"""Public dropout ops: inverted dropout and its backward, as ``torch.nn.functional.dropout``.

The forward returns the mask it drew (True = kept) by name, and the backward takes it back by
name. The backend's ``dropout`` module has ``dropout_forward(x, p, seed) -> (y, mask)`` and
``dropout_backward(dy, mask, p)``; ``seed`` is always a concrete int there (drawn here when the
caller gives None), and backends never see an empty array.
"""

from __future__ import annotations

import secrets
from typing import Any, NamedTuple

import numpy as np

from .._checks import (
    array_module,
    check_array,
    check_bool,
    check_float,
    check_shape,
    is_cupy,
)
from .._dispatch import lookup
from .._params import as_int

#: Seeds are unsigned 64-bit integers, what every backend's generator can take.
SEED_LIMIT = 2 ** 64


class DropoutResult(NamedTuple):
    """``y`` and the boolean ``mask`` of x's shape (True = kept; None in eval mode). Pass
    ``mask=`` to :func:`dropout_backward`."""

    y: Any
    mask: Any


def _check_p(op, p) -> float:
    return check_float(op, "p", p, low=0.0, high=1.0)


def _seed(op, seed) -> int:
    if seed is None:
        return secrets.randbits(64)
    seed = as_int(op, "seed", seed, minimum=0)
    if seed >= SEED_LIMIT:
        raise ValueError(f"{op}: expected seed < 2**64, got {seed}")
    return seed


def dropout(x, p=0.5, training=True, seed=None, *, backend="auto"):
    """Inverted dropout: each element is kept with probability 1 - p and scaled by 1/(1-p).

    ``y = x * mask / (1 - p)`` (as PyTorch computes it, so a dropped NaN/Inf gives NaN); p = 1
    gives ``x * 0``. ``training=False`` gives a copy of x and mask None. ``seed`` None draws fresh
    entropy; an int seed gives the same mask for the same shape on the same backend.
    """
    op = "dropout"
    check_array(op, "x", x)
    p = _check_p(op, p)
    check_bool(op, "training", training)
    seed = _seed(op, seed)
    if not training:
        return DropoutResult(x.copy(), None)
    if x.size == 0:
        return DropoutResult(x.copy(), array_module(x).ones(x.shape, dtype=bool))
    y, mask = lookup(op, "dropout", "dropout_forward", backend, x)(x, p, seed)
    return DropoutResult(y, mask)


def dropout_backward(dy, *, mask, p, backend="auto"):
    """dx of :func:`dropout` given dy: ``dy * mask / (1 - p)``; mask None (eval mode) copies dy."""
    op = "dropout_backward"
    check_array(op, "dy", dy)
    p = _check_p(op, p)
    if mask is None:
        return dy.copy()
    check_array(op, "mask", mask, float_only=False)
    if mask.dtype != np.bool_:
        raise TypeError(f"{op}: expected mask of dtype bool, got {mask.dtype}")
    if is_cupy(mask) != is_cupy(dy):
        raise TypeError(f"{op}: expected mask on the device of dy")
    check_shape(op, "mask", mask, dy.shape)
    if dy.size == 0:
        return dy.copy()
    return lookup(op, "dropout", "dropout_backward", backend, dy, mask)(dy, mask, p)


__all__ = ["DropoutResult", "dropout", "dropout_backward"]
