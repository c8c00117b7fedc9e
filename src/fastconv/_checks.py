"""Validation of user arrays: the one place that turns a bad input into a clear error.

Every public op calls these before dispatching, so every backend raises the same error type with
the same message for the same mistake. Backends assume what is checked here.
"""

from __future__ import annotations

import functools

import numpy as np


@functools.cache
def _float_dtypes() -> tuple[np.dtype, ...]:
    """The float dtypes some backend takes (``_dispatch.ACCEPTED_DTYPES``, from the registry, the one
    place where each backend's dtypes are declared). Anything else (integers, bool, complex) is a
    TypeError here; a float dtype the chosen backend does not take is one at dispatch."""
    from ._dispatch import ACCEPTED_DTYPES  # not at import: _dispatch imports this module

    return tuple(np.dtype(d) for d in ACCEPTED_DTYPES)


def is_cupy(a) -> bool:
    """True for a CuPy array, without importing CuPy (``import fastconv`` must not)."""
    kind = type(a)
    if kind is np.ndarray:  # the common case, on every call: no string work
        return False
    module = kind.__module__
    return module == "cupy" or module.startswith("cupy.")


def array_module(a):
    """numpy, or cupy for a CuPy array: lets the API allocate results on the input's device."""
    if is_cupy(a):
        import cupy  # only reached when the caller already holds a CuPy array

        return cupy
    return np


@functools.cache
def _rank(dims: str) -> int:
    """The number of axes a spelling such as ``"(N, C_in, H, W)"`` names."""
    return len([axis for axis in dims.strip("()").split(",") if axis.strip()])


def check_array(op: str, name: str, a, *, dims: str | None = None, ndim: int | None = None,
                min_ndim: int | None = None, float_only: bool = True):
    """Check that ``a`` is a NumPy/CuPy float array of the right rank, and return it.

    ``dims`` spells the expected axes for the message, e.g. ``"(N, C_in, H, W)"``; ``ndim``
    defaults to its number of axes.
    """
    if not (isinstance(a, np.ndarray) or is_cupy(a)):
        raise TypeError(f"{op}: expected {name} to be a numpy.ndarray (or a cupy.ndarray), "
                        f"got {type(a).__name__}")
    if ndim is None and dims is not None:
        ndim = _rank(dims)
    if ndim is not None and a.ndim != ndim:
        what = f"{ndim} dims {dims}" if dims else f"{ndim} dims"
        raise ValueError(f"{op}: expected {name} with {what}, got shape {tuple(a.shape)}")
    if min_ndim is not None and a.ndim < min_ndim:
        raise ValueError(f"{op}: expected {name} with at least {min_ndim} dims, got shape {tuple(a.shape)}")
    if float_only and a.dtype not in _float_dtypes():
        names = [d.name for d in _float_dtypes()]
        raise TypeError(f"{op}: expected {name} of dtype {', '.join(names[:-1])} or {names[-1]}, got {a.dtype}")
    return a


def check_batched(op: str, name: str, a, dims: str, *, unbatched: bool | None = None,
                  float_only: bool = True):
    """``a`` with the axes ``dims`` (``"(N, C, H, W)"``, the batch first), or unbatched, without
    the N, as PyTorch's conv and pooling ops take it. Returns ``(a4, unbatched)``: ``a`` with its
    batch axis (for an unbatched ``a`` a view of one item, never a copy) and whether it was added;
    :func:`unbatch` takes it off a result again. ``unbatched`` given (True/False) allows only that
    rank: a backward's dy and indices follow what its x was.
    """
    check_array(op, name, a, float_only=float_only)  # the type and dtype; the rank is checked here
    ndim = _rank(dims)
    if a.ndim == ndim and unbatched is not True:
        return a, False
    if a.ndim == ndim - 1 and unbatched is not False:
        return a[None], True
    single = f"({dims.strip('()').split(',', 1)[1].strip()})"  # "(C, H, W)"
    ranks = {False: ndim, True: ndim - 1} if unbatched is None else {unbatched: ndim - 1 if unbatched else ndim}
    spelled = " or ".join(f"{rank} dims {single if u else dims}" for u, rank in sorted(ranks.items(), key=lambda r: r[1]))
    raise ValueError(f"{op}: expected {name} with {spelled}, got shape {tuple(a.shape)}")


def unbatch(y, unbatched: bool):
    """``y`` without the batch axis :func:`check_batched` added (a view: ``y[0]`` of a C-contiguous
    result is C-contiguous); None stays None."""
    return y[0] if unbatched and y is not None else y


def check_same_kind(op: str, **arrays) -> None:
    """All given arrays (None entries skipped) share one dtype and one device."""
    first = None
    for v in arrays.values():  # the common case first: NumPy arrays of one dtype
        if v is None:
            continue
        if type(v) is not np.ndarray or (first is not None and v.dtype != first):
            break
        first = v.dtype
    else:
        return
    given = {k: v for k, v in arrays.items() if v is not None}
    dtypes = {k: v.dtype for k, v in given.items()}
    if len(set(dtypes.values())) > 1:
        listed = ", ".join(f"{k} {d}" for k, d in dtypes.items())
        raise TypeError(f"{op}: expected arrays of one dtype, got {listed}")
    devices = {k: (f"cupy (GPU {v.device.id})" if is_cupy(v) else "numpy") for k, v in given.items()}
    if len(set(devices.values())) > 1:
        listed = ", ".join(f"{k} on {d}" for k, d in devices.items())
        raise TypeError(f"{op}: expected arrays on one device, got {listed}")


def check_shape(op: str, name: str, a, expected: tuple[int, ...]) -> None:
    if a is not None and tuple(a.shape) != tuple(expected):
        raise ValueError(f"{op}: expected {name} of shape {tuple(expected)}, got {tuple(a.shape)}")


def check_needs(op: str, needs, count: int) -> tuple[bool, ...]:
    """``needs`` is a tuple of ``count`` bools saying which gradients to compute."""
    if not isinstance(needs, (tuple, list)) or len(needs) != count or \
            not all(isinstance(n, (bool, np.bool_)) for n in needs):
        raise TypeError(f"{op}: expected needs to be a tuple of {count} bools, got {needs!r}")
    return tuple(bool(n) for n in needs)


def check_choice(op: str, name: str, value, choices: tuple) -> None:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{op}: expected {name} to be one of {', '.join(map(repr, choices))}, got {value!r}")


def check_bool(op: str, name: str, value) -> bool:
    """A real bool (not 0/1, not a NumPy bool): flags are spelled True/False, as in PyTorch."""
    if not isinstance(value, bool):
        raise TypeError(f"{op}: expected {name} to be a bool, got {value!r}")
    return value


def check_float(op: str, name: str, value, *, low: float | None = None, high: float | None = None,
                low_open: bool = False) -> float:
    """A Python/NumPy real scalar within [low, high] (or (low, high] with ``low_open``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{op}: expected {name} to be a number, got {value!r}")
    value = float(value)
    if value != value:
        raise ValueError(f"{op}: expected {name} to be a number, got nan")
    if low is not None and (value <= low if low_open else value < low):
        raise ValueError(f"{op}: expected {name} {'>' if low_open else '>='} {low}, got {value}")
    if high is not None and value > high:
        raise ValueError(f"{op}: expected {name} <= {high}, got {value}")
    return value


def indices_out_of_range(op: str, indices, size: int) -> ValueError:
    """The error for max-pool indices outside one plane's [0, H*W). Each backend's backward finds
    them as it scatters and raises this (a separate pass over the indices in the front cost a
    fifth of the op); the indices it skipped never reached memory outside dx."""
    return ValueError(f"{op}: expected indices in [0, H*W) = [0, {size}), got values from "
                      f"{int(indices.min())} to {int(indices.max())}")


def zeros(like, shape, dtype=None):
    """A zero array on the device of ``like``: the result of an op on an empty batch."""
    return array_module(like).zeros(shape, dtype=dtype or like.dtype)
