"""GPU inverted dropout (cuda/dropout.cu) with a counter-based generator, Philox4x32-10.

Element k (in C order) is kept iff its draw ``u``, word ``k % 4`` (x, y, z, w) of
Philox4x32-10 with counter ``(lo32(k // 4), hi32(k // 4), 0, 0)`` and key ``(lo32(seed),
hi32(seed))``, satisfies ``u >= ceil(p * 2**32)``: exactly ``u / 2**32 >= p``, so p = 0 keeps
everything and p = 1 nothing. The mask is a function of (seed, k) alone: any launch configuration
gives the same bits, and an array's mask is the leading part of a longer array's under the same
seed. A seed fixes the mask for a shape on this backend; the masks differ from other backends'
(the reference's NumPy PCG64, the C++ backend's splitmix64), only their distribution is the same.
y = x * mask / (1 - p) as PyTorch computes it (see the reference: a dropped NaN/Inf gives NaN).
"""

import math

import numpy as np

from ._device import Module, ctype, device_of, grid_blocks, instances, threads_per_block

KERNELS = Module("dropout", tuple(
    name for kernel in ("dropout_forward", "dropout_backward") for name in instances(kernel, ("float", "double"))))


def _scale(dtype, p):
    """What a kept element is multiplied by: 1 / (1 - p) rounded in x's dtype, as the reference."""
    one = dtype.type(1)
    return one / dtype.type(1 - p) if p < 1 else dtype.type(0)


def dropout_forward(x, p, seed):
    dev = device_of(x)
    with dev.activate():
        x = dev.contiguous(x)
        y = dev.empty(x.shape, x.dtype)  # x's shape
        mask = dev.empty(x.shape, np.bool_)  # x's shape; every entry written
        threads = threads_per_block(256)
        groups = -(-x.size // 4)  # a Philox call per 4 elements
        threshold = math.ceil(math.ldexp(p, 32))  # exact: p * 2^32 is a double without rounding
        KERNELS.launch(dev, f"dropout_forward<{ctype(x.dtype)}>", grid_blocks(dev, groups, threads), threads,
                       (x, y, mask, np.int64(x.size), np.uint64(seed), np.uint64(threshold), _scale(x.dtype, p)))
    return y, mask


def dropout_backward(dy, mask, p):
    dev = device_of(dy)
    with dev.activate():
        dy, mask = dev.contiguous(dy), dev.contiguous(mask)
        dx = dev.empty(dy.shape, dy.dtype)  # dy's shape
        threads = threads_per_block(256)
        KERNELS.launch(dev, f"dropout_backward<{ctype(dy.dtype)}>", grid_blocks(dev, dy.size, threads, per_thread=4),
                       threads, (dy, mask, dx, np.int64(dy.size), _scale(dy.dtype, p)))
    return dx
