"""GPU pooling (cuda/pool.cu): max with PyTorch's indices, average, adaptive average. Forwards take a
thread per output pixel; backwards gather, a thread per input pixel, so overlapping windows add up
in a fixed order without atomics. Max pooling's backward gathers through the indices of the windows
covering each pixel; its kernel flags indices outside the plane (an error) or outside their own
window (made up by a caller: dx is then scattered plane by plane instead)."""

import functools

import numpy as np

from ..._checks import indices_out_of_range
from ._device import Module, ctype, device_of, grid_blocks, instances, threads_per_block

_TYPES = ("__half", "float", "double")
KERNELS = Module("pool", tuple(
    name for kernel in ("max_pool2d_forward", "max_pool2d_backward", "max_pool2d_backward_scatter",
                        "avg_pool2d_forward", "avg_pool2d_backward",
                        "adaptive_avg_pool2d_forward", "adaptive_avg_pool2d_backward")
    for name in instances(kernel, _TYPES)))

# the bits max_pool2d_backward sets in its flag (FC_INDEX_* in pool.cu)
_OUT_OF_RANGE, _OUTSIDE_WINDOW = 1, 2


def _launch(dev, kernel, dtype, items, args):
    """``kernel`` instantiated for ``dtype``, a grid-stride loop over ``items``."""
    threads = threads_per_block(256)
    KERNELS.launch(dev, f"{kernel}<{ctype(dtype)}>", grid_blocks(dev, items, threads), threads, args)


@functools.lru_cache(maxsize=256)
def _axes(p, dilation=True):
    """The kernels' geometry arguments: per axis (H, then W) size, out, kernel, stride, padding and,
    for max pooling, dilation."""
    h = (p.H, p.OH, p.KH, p.stride_h, p.pad_h) + ((p.dil_h,) if dilation else ())
    w = (p.W, p.OW, p.KW, p.stride_w, p.pad_w) + ((p.dil_w,) if dilation else ())
    return tuple(np.int32(v) for v in h + w)


def _avg_mode(p):
    """count_include_pad and divisor_override (0: none; a given one is never 0) as kernel arguments."""
    return np.int32(p.count_include_pad), np.int32(p.divisor_override or 0)


def _planes(p):
    return np.int64(p.N * p.C)


# --------------------------------------------------------------------------------------------
# max pooling
# --------------------------------------------------------------------------------------------

def max_pool2d_forward(x, p, with_indices=True):
    dev = device_of(x)
    with dev.activate():
        x = dev.contiguous(x)
        y = dev.empty(p.y_shape, x.dtype)  # (N, C, OH, OW)
        # (N, C, OH, OW); without them the kernel writes y alone
        indices = dev.empty(p.y_shape, np.int64) if with_indices else None
        _launch(dev, "max_pool2d_forward", y.dtype, y.size, (x, y, indices, _planes(p), *_axes(p)))
    return y, indices


def max_pool2d_backward(dy, indices, p):
    dev = device_of(dy)
    with dev.activate():
        dy, indices = dev.contiguous(dy), dev.contiguous(indices)
        dx = dev.empty(p.x_shape, dy.dtype)  # (N, C, H, W)
        flag = dev.zeros((1,), np.int32)  # (1,): _OUT_OF_RANGE | _OUTSIDE_WINDOW, set by the kernel
        _launch(dev, "max_pool2d_backward", dx.dtype, dx.size, (dy, indices, dx, flag, _planes(p), *_axes(p)))
        bits = int(flag[0])
        if bits & _OUT_OF_RANGE:
            raise indices_out_of_range("max_pool2d_backward", indices, p.H * p.W)
        if bits & _OUTSIDE_WINDOW:  # made-up indices the gather cannot follow: scatter instead
            acc = np.float32 if dy.dtype == np.float16 else dy.dtype  # the kernels' acc_t
            dx = dev.empty(p.x_shape, acc)  # (N, C, H, W)
            _launch(dev, "max_pool2d_backward_scatter", dy.dtype, p.N * p.C,
                    (dy, indices, dx, _planes(p), np.int64(p.H * p.W), np.int64(p.OH * p.OW)))
            dx = dx.astype(dy.dtype, copy=False)  # float16: rounded once, after the sums
    return dx


# --------------------------------------------------------------------------------------------
# average pooling
# --------------------------------------------------------------------------------------------

def avg_pool2d_forward(x, p):
    dev = device_of(x)
    with dev.activate():
        x = dev.contiguous(x)
        y = dev.empty(p.y_shape, x.dtype)  # (N, C, OH, OW)
        _launch(dev, "avg_pool2d_forward", y.dtype, y.size,
                (x, y, _planes(p), *_axes(p, dilation=False), *_avg_mode(p)))
    return y


def avg_pool2d_backward(dy, p):
    dev = device_of(dy)
    with dev.activate():
        dy = dev.contiguous(dy)
        dx = dev.empty(p.x_shape, dy.dtype)  # (N, C, H, W)
        _launch(dev, "avg_pool2d_backward", dx.dtype, dx.size,
                (dy, dx, _planes(p), *_axes(p, dilation=False), *_avg_mode(p)))
    return dx


# --------------------------------------------------------------------------------------------
# adaptive average pooling
# --------------------------------------------------------------------------------------------

def _adaptive_sizes(p):
    return tuple(np.int32(v) for v in (p.H, p.W, p.OH, p.OW))


def adaptive_avg_pool2d_forward(x, p):
    dev = device_of(x)
    with dev.activate():
        x = dev.contiguous(x)
        y = dev.empty(p.y_shape, x.dtype)  # (N, C, OH, OW)
        _launch(dev, "adaptive_avg_pool2d_forward", y.dtype, y.size, (x, y, _planes(p), *_adaptive_sizes(p)))
    return y


def adaptive_avg_pool2d_backward(dy, p):
    dev = device_of(dy)
    with dev.activate():
        dy = dev.contiguous(dy)
        dx = dev.empty(p.x_shape, dy.dtype)  # (N, C, H, W)
        _launch(dev, "adaptive_avg_pool2d_backward", dx.dtype, dx.size, (dy, dx, _planes(p), *_adaptive_sizes(p)))
    return dx
