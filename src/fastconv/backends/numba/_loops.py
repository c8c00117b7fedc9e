"""Index arithmetic and the row loops that the convolution and pooling kernels share.

A kernel tap at offset ``off`` meets input position ``o * step + off`` at output position ``o``.
Instead of testing every position against the image bounds, kernels ask :func:`inside` once for
the range of output positions whose input lies in the image, and loop over that range unchecked.

The row loops take flat (1-d) arrays and start offsets rather than views of rows: a view is a
new array object (with a reference count to update) per row, which costs more than the copy
itself when rows are a few dozen elements long. They index with unsigned integers: Numba wraps a
negative signed index around (a test and a branch per element), which keeps LLVM from
vectorising; these indices are never negative, and unsigned they compile to plain vector loads
and stores. Each loop with a stride has a separate stride-1 loop, the one LLVM vectorises.
"""

import numpy as np

from ._jit import inline_jit

_u = np.uint64


@inline_jit
def inside(offset, step, size, count):
    """``(lo, hi)``: the outputs ``o`` in ``[0, count)`` with ``0 <= o * step + offset < size``
    are exactly ``lo <= o < hi`` (``lo == hi`` when there are none). ``step >= 1``."""
    lo = max(0, -(offset // step))  # ceil(-offset / step): the first o with o * step + offset >= 0
    hi = min(count, (size - 1 - offset) // step + 1)  # one past the last o with o * step + offset < size
    return lo, max(lo, hi)


@inline_jit
def fill(dst, start, count, value):
    """dst[start + i] = value for i < count."""
    for i in range(count):
        dst[_u(start + i)] = value


@inline_jit
def copy(dst, dst_start, src, src_start, count):
    """dst[dst_start + i] = src[src_start + i] for i < count."""
    for i in range(count):
        dst[_u(dst_start + i)] = src[_u(src_start + i)]


@inline_jit
def add(dst, dst_start, src, src_start, count):
    """dst[dst_start + i] += src[src_start + i] for i < count."""
    for i in range(count):
        dst[_u(dst_start + i)] += src[_u(src_start + i)]


@inline_jit
def gather(dst, dst_start, count, src, src_start, lo, hi, step):
    """dst[dst_start + o] = src[src_start + o * step] for lo <= o < hi, and 0 for the other o in
    [0, count): one zero-padded row of a strided read."""
    fill(dst, dst_start, lo, 0)
    if step == 1:
        for o in range(lo, hi):
            dst[_u(dst_start + o)] = src[_u(src_start + o)]
    else:
        for o in range(lo, hi):
            dst[_u(dst_start + o)] = src[_u(src_start + o * step)]
    fill(dst, dst_start + hi, count - hi, 0)


@inline_jit
def axpy(dst, dst_start, dst_step, weight, src, src_start, src_step, lo, hi):
    """dst[dst_start + o * dst_step] += weight * src[src_start + o * src_step] for lo <= o < hi: a
    kernel tap over a row, read through a stride (src_step) or added back through one (dst_step)."""
    if dst_step == 1 and src_step == 1:
        for o in range(lo, hi):
            dst[_u(dst_start + o)] += weight * src[_u(src_start + o)]
    else:
        for o in range(lo, hi):
            dst[_u(dst_start + o * dst_step)] += weight * src[_u(src_start + o * src_step)]


@inline_jit
def multiply_add(dst, dst_start, a, a_start, src, src_start, count):
    """dst[dst_start + i] += a[a_start + i] * src[src_start + i] for i < count: per-column partial
    sums of a product of two rows."""
    for i in range(count):
        dst[_u(dst_start + i)] += a[_u(a_start + i)] * src[_u(src_start + i)]


@inline_jit
def shift(dst, start, count, value):
    """dst[start + i] += value for i < count."""
    for i in range(count):
        dst[_u(start + i)] += value
