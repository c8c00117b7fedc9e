"""GPU dense layer (cuda/linear.cu): every pass one GEMM through the device (cuBLAS on a GPU;
float16 multiplied with float32 accumulation), the transposes as views; the bias add and the
backward-bias (column sums of dy, in a fixed order) as small kernels.

With float16 and a bias, the forward rounds twice (the product to float16, then the sum with the
bias), where PyTorch's fused GEMM epilogue rounds once; the difference is within a float16 ulp of
the product (verify.TOLERANCE allows for it). A cuBLAS GEMM with a float32 result (gemmEx) would
round once and keep the float16 tensor cores: not done yet.
"""

import math

import numpy as np

from ._device import Module, ctype, device_of, grid_blocks, instances, threads_per_block

_TYPES = ("__half", "float", "double")
KERNELS = Module("linear", tuple(
    name for kernel in ("add_bias", "column_partials", "column_sums") for name in instances(kernel, _TYPES)))

_MIN_ROWS = 64  # the backward-bias's rows per chunk, at least


def _acc_dtype(dtype):
    """The kernels' accumulation type (acc_t in common.cuh): float for float16 and float32."""
    return np.dtype(np.float64) if dtype == np.float64 else np.dtype(np.float32)


def linear_forward(x, w, b):
    dev = device_of(x)
    with dev.activate():
        y = dev.matmul(x, w.T)  # (M, out_features)
        if b is not None:
            b = dev.contiguous(b)
            threads = threads_per_block(256)
            KERNELS.launch(dev, f"add_bias<{ctype(y.dtype)}>", grid_blocks(dev, y.size, threads, per_thread=4),
                           threads, (y, b, np.int64(y.size), np.int64(y.shape[1])))
    return y


def linear_backward_input(dy, w):
    dev = device_of(dy)
    with dev.activate():
        return dev.matmul(dy, w)  # (M, in_features)


def linear_backward_weight(dy, x):
    dev = device_of(dy)
    with dev.activate():
        return dev.matmul(dy.T, x)  # (out_features, in_features)


def linear_backward_bias(dy):
    dev = device_of(dy)
    M, C = dy.shape
    # rows per chunk: ceil(sqrt(M)), so both passes are about sqrt(M) long, but at least _MIN_ROWS,
    # so a small batch is summed row after row, the order of the CPU backends (and of PyTorch)
    rows = max(_MIN_ROWS, math.isqrt(M - 1) + 1)
    chunks = -(-M // rows)
    t = ctype(dy.dtype)
    with dev.activate():
        dy = dev.contiguous(dy)
        partial = dev.empty((chunks, C), _acc_dtype(dy.dtype))  # (chunks, out_features)
        db = dev.empty((C,), dy.dtype)  # (out_features,)
        threads = threads_per_block(256)
        KERNELS.launch(dev, f"column_partials<{t}>", grid_blocks(dev, partial.size, threads), threads,
                       (dy, partial, np.int64(M), np.int64(C), np.int64(rows)))
        KERNELS.launch(dev, f"column_sums<{t}>", grid_blocks(dev, C, threads), threads,
                       (partial, db, np.int64(chunks), np.int64(C)))
    return db
