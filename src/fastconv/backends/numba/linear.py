"""Numba dense layer: forward, backward-input, backward-weight, backward-bias on 2-d arrays.

Each product pass is one matrix product cut into blocks of the output's longer side, one block
per unit of work on Numba's threads, each block one single-threaded BLAS call
(:func:`~._blas.gemm`, transposes passed as strides). Every output element comes from one BLAS
call over the whole inner dimension, so results do not depend on the thread count. The bias
gradient sums rows in order, in float64, one block of columns per unit.
"""

import numpy as np
from numba import prange

from .._common import empty
from ._blas import gemm
from ._jit import contiguous, parallel_jit, run, run_with_blas

#: Output rows or columns per block, at least (thinner BLAS calls run slowly) ...
MIN_BLOCK = 128
#: ... and at most this many blocks.
MAX_BLOCKS = 16


@parallel_jit
def _product(a, b, bias, c, blocks, by_rows):
    """c = a @ b, plus ``bias`` on every row unless it is empty: a (M, K), b (K, N), c (M, N).
    ``blocks`` blocks of c's rows (``by_rows``) or of its columns."""
    M, N = c.shape
    size = M if by_rows else N
    per_block = -(-size // blocks)
    for block_ in prange(blocks):
        start = np.int64(block_) * per_block  # signed: an unsigned prange index turns arithmetic float
        stop = min(size, start + per_block)
        if by_rows:
            gemm(1.0, a[start:stop], b, 0.0, c[start:stop])
            if bias.size:
                for m in range(start, stop):
                    c[m] += bias
        else:
            gemm(1.0, a, b[:, start:stop], 0.0, c[:, start:stop])
            if bias.size:
                for m in range(M):
                    c[m, start:stop] += bias[start:stop]


@parallel_jit
def _column_sums(dy, db, blocks):
    """db = dy summed over its rows, in row order, in float64: dy (M, N), db (N,)."""
    M, N = dy.shape
    per_block = -(-N // blocks)
    for block_ in prange(blocks):
        start = np.int64(block_) * per_block  # signed: an unsigned prange index turns arithmetic float
        stop = min(N, start + per_block)
        total = np.zeros(stop - start)  # (block,) float64
        for m in range(M):
            total += dy[m, start:stop]
        db[start:stop] = total


def _blocks(size: int) -> int:
    return max(1, min(MAX_BLOCKS, size // MIN_BLOCK))


def _run_product(a, b, bias, c):
    """c = a @ b (+ bias), cut along c's longer side."""
    by_rows = c.shape[0] > c.shape[1]
    run_with_blas(_product, a, b, bias, c, _blocks(max(c.shape)), by_rows)
    return c


def linear_forward(x, w, b):
    x, w = contiguous(x), contiguous(w)
    bias = contiguous(np.zeros(0, x.dtype) if b is None else b)  # (out_features,) or (0,): no bias
    return _run_product(x, w.T, bias, empty((x.shape[0], w.shape[0]), x.dtype))  # (M, out_features)


def linear_backward_input(dy, w):
    dy, w = contiguous(dy), contiguous(w)
    return _run_product(dy, w, contiguous(np.zeros(0, dy.dtype)), empty((dy.shape[0], w.shape[1]), dy.dtype))  # (M, in_features)


def linear_backward_weight(dy, x):
    dy, x = contiguous(dy), contiguous(x)
    return _run_product(dy.T, x, contiguous(np.zeros(0, dy.dtype)), empty((dy.shape[1], x.shape[1]), dy.dtype))  # (out, in)


def linear_backward_bias(dy):
    dy = contiguous(dy)
    db = empty((dy.shape[1],), dy.dtype)  # (out_features,)
    run(_column_sums, dy, db, _blocks(dy.shape[1]))
    return db
