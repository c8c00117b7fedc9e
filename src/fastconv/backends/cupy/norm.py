"""GPU batch norm passes (cuda/norm.cu) on x viewed as (N, C, L). The statistics and the
backward's reductions are summed in double, as the C++ backend's: a block per segment of a
channel's N * L values, then one thread per channel combines its segments in order (no atomics);
the elementwise passes follow the reference's operation order."""

import numpy as np

from ._device import Module, ctype, device_of, grid_blocks, instances, threads_per_block

KERNELS = Module("norm", tuple(
    name for kernel in ("bn_segment_moments", "bn_stats_finish", "bn_segment_dy_sums", "bn_backward_reduce_finish",
                        "bn_forward", "bn_backward_input") for name in instances(kernel, ("float", "double"))))

_PER_THREAD = 8  # values per thread of a segment, at least: a block's work outweighs its start
_MAX_SEGMENTS = 256  # segments per channel, at most: the finishing thread walks them in order


def _segments(NL, threads):
    """(values per segment, segments per channel) for a channel of NL values."""
    seg = threads * max(_PER_THREAD, -(-NL // (threads * _MAX_SEGMENTS)))
    return seg, -(-NL // seg)


def _per_segment(dev, kernel, x, inputs):
    """Launch ``kernel``, a block per (channel, segment) of x (N, C, L), on ``inputs``; returns the
    pair of doubles it writes per segment, (C, segments, 2), the segment length and the count."""
    N, C, L = x.shape
    threads = threads_per_block(256)
    seg, segments = _segments(N * L, threads)
    pairs = dev.empty((C, segments, 2), np.float64)  # (C, segments, 2)
    KERNELS.launch(dev, f"{kernel}<{ctype(x.dtype)}>", grid_blocks(dev, C * segments * threads, threads), threads,
                   (*inputs, pairs, np.int64(N), np.int64(C), np.int64(L), np.int64(seg), np.int64(segments)))
    return pairs, seg, segments


def batch_norm_stats(x):
    dev = device_of(x)
    N, C, L = x.shape
    with dev.activate():
        x = dev.contiguous(x)
        mean, var = dev.empty((C,), x.dtype), dev.empty((C,), x.dtype)  # (C,), (C,)
        moments, seg, segments = _per_segment(dev, "bn_segment_moments", x, (x,))  # each segment's mean and M2
        threads = threads_per_block(256)
        KERNELS.launch(dev, f"bn_stats_finish<{ctype(x.dtype)}>", grid_blocks(dev, C, threads), threads,
                       (moments, mean, var, np.int64(C), np.int64(N * L), np.int64(seg), np.int64(segments)))
    return mean, var


def batch_norm_forward(x, mean, invstd, weight, bias):
    dev = device_of(x)
    _, C, L = x.shape
    with dev.activate():
        x, mean, invstd = dev.contiguous(x), dev.contiguous(mean), dev.contiguous(invstd)
        weight, bias = dev.contiguous(weight), dev.contiguous(bias)
        y = dev.empty(x.shape, x.dtype)  # (N, C, L)
        threads = threads_per_block(256)
        KERNELS.launch(dev, f"bn_forward<{ctype(x.dtype)}>", grid_blocks(dev, x.size, threads, per_thread=4), threads,
                       (x, mean, invstd, weight, bias, y, np.int64(x.size), np.int64(C), np.int64(L)))
    return y


def batch_norm_backward_reduce(dy, x, mean, invstd):
    dev = device_of(x)
    C = x.shape[1]
    with dev.activate():
        dy, x, mean, invstd = dev.contiguous(dy), dev.contiguous(x), dev.contiguous(mean), dev.contiguous(invstd)
        sum_dy, sum_dy_xhat = dev.empty((C,), x.dtype), dev.empty((C,), x.dtype)  # (C,), (C,)
        # each segment's sum dy and sum dy (x - mean)
        sums, _, segments = _per_segment(dev, "bn_segment_dy_sums", x, (dy, x, mean))
        threads = threads_per_block(256)
        KERNELS.launch(dev, f"bn_backward_reduce_finish<{ctype(x.dtype)}>", grid_blocks(dev, C, threads), threads,
                       (sums, invstd, sum_dy, sum_dy_xhat, np.int64(C), np.int64(segments)))
    return sum_dy, sum_dy_xhat


def batch_norm_backward_input(dy, x, mean, invstd, weight, sum_dy, sum_dy_xhat):
    dev = device_of(x)
    N, C, L = x.shape
    with dev.activate():
        dy, x, mean, invstd = dev.contiguous(dy), dev.contiguous(x), dev.contiguous(mean), dev.contiguous(invstd)
        weight, sum_dy, sum_dy_xhat = dev.contiguous(weight), dev.contiguous(sum_dy), dev.contiguous(sum_dy_xhat)
        dx = dev.empty(x.shape, x.dtype)  # (N, C, L)
        threads = threads_per_block(256)
        KERNELS.launch(dev, f"bn_backward_input<{ctype(x.dtype)}>", grid_blocks(dev, x.size, threads, per_thread=4),
                       threads, (dy, x, mean, invstd, weight, sum_dy, sum_dy_xhat, dx, np.int64(x.size), np.int64(C),
                                 np.int64(L), np.int64(N * L)))
    return dx
