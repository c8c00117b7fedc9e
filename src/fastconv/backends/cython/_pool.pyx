"""Cython 2-d pooling kernels, float32 and float64: max pooling with PyTorch's indices, and window
sums divided by a divisor, which serve both average and adaptive average pooling.

Every kernel is one OpenMP ``prange`` over the N*C planes; a plane is one thread's alone, so
backward passes scatter into their dx plane without races, in output order. The window of an
output pixel is the product of one window per axis, described by per-axis arrays the adapter
(pool.py) computes.
"""

from cython.parallel cimport prange, threadid
from libc.stdint cimport INT32_MAX, int32_t, int64_t, uint64_t
from libc.string cimport memset

import numpy as np

from ._blas cimport real


# --------------------------------------------------------------------------------------------
# max pooling
# --------------------------------------------------------------------------------------------

cdef inline void _max_tap(const real* x, real* top, int32_t* best, Py_ssize_t at, Py_ssize_t lo, Py_ssize_t hi,
                          Py_ssize_t sw) noexcept nogil:
    """One tap over windows [lo, hi) of an output row: window ow meets pixel at + ow*sw, which wins
    when ``v > top or isnan(v)``. A select, not a branch: which tap wins is unpredictable. The
    positions are int32 (the caller checks the plane fits) because GCC vectorises a float select
    alongside an int32 one, not alongside an int64 one."""
    cdef Py_ssize_t ow
    cdef real v
    cdef bint take
    for ow in range(lo, hi):
        v = x[at + ow * sw]
        take = (v > top[ow]) | (v != v)
        top[ow] = v if take else top[ow]
        best[ow] = <int32_t>(at + ow * sw) if take else best[ow]


cdef void _max_plane(const real* x, real* y, int64_t* indices, int32_t* best, Py_ssize_t W, Py_ssize_t OH,
                     Py_ssize_t OW, Py_ssize_t KW, Py_ssize_t sw, Py_ssize_t dil_h, Py_ssize_t dil_w,
                     const Py_ssize_t* rows, const Py_ssize_t* cols, const Py_ssize_t* taps) noexcept nogil:
    """One plane, PyTorch's scan: per window the taps in row-major order, inside the image only;
    the first one starts the window, later ones win when ``v > max or isnan(v)``. So ties keep
    the first position and a NaN wins (the last NaN's position is kept).

    An output row at a time, tap by tap, over all the row's windows that the tap falls inside:
    y holds the running maximum, best (OW,) its position. The first tap is simply scanned again:
    it cannot win against itself, or wins as the same NaN. Strides 1 and 2 get loops of their
    own, which the compiler vectorises (a constant stride needs no gather)."""
    cdef Py_ssize_t oh, ow, kh, kw, ih, at, first_row, lo, hi
    cdef real* top
    for oh in range(OH):
        top = y + oh * OW
        first_row = rows[3 * oh] + rows[3 * oh + 1] * dil_h
        for ow in range(OW):
            best[ow] = <int32_t>(first_row * W + cols[3 * ow] + cols[3 * ow + 1] * dil_w)
            top[ow] = x[best[ow]]
        for kh in range(rows[3 * oh + 1], rows[3 * oh + 2]):
            ih = rows[3 * oh] + kh * dil_h
            for kw in range(KW):
                at = ih * W + taps[3 * kw]
                lo, hi = taps[3 * kw + 1], taps[3 * kw + 2]
                if sw == 1:
                    _max_tap(x, top, best, at, lo, hi, 1)
                elif sw == 2:
                    _max_tap(x, top, best, at, lo, hi, 2)
                else:
                    _max_tap(x, top, best, at, lo, hi, sw)
        for ow in range(OW):
            indices[oh * OW + ow] = best[ow]


def max_pool2d_forward(const real[:, ::1] x, real[:, ::1] y, int64_t[:, ::1] indices, Py_ssize_t W, Py_ssize_t OH,
                       Py_ssize_t OW, Py_ssize_t KW, Py_ssize_t sw, Py_ssize_t dil_h, Py_ssize_t dil_w,
                       const Py_ssize_t[::1] rows, const Py_ssize_t[::1] cols, const Py_ssize_t[::1] taps,
                       int nthreads):
    """x (planes, H*W) -> y, indices (planes, OH*OW). rows (3*OH,): per output row its first tap's
    input row and its taps [k0, k1) inside the image; cols (3*OW,) the same per output column;
    taps (3*KW,): per kernel column kw its input column offset (+ ow*sw) and the output columns
    [lo, hi) whose window it falls inside."""
    cdef Py_ssize_t u
    cdef int32_t[:, ::1] best = np.empty((nthreads, OW), dtype=np.int32)  # per thread: one output row's positions
    if x.shape[1] > INT32_MAX:
        raise OverflowError(f"max_pool2d: planes of {x.shape[1]} pixels exceed the int32 positions of this backend")
    for u in prange(x.shape[0], nogil=True, num_threads=nthreads, schedule="static"):
        _max_plane(&x[u, 0], &y[u, 0], &indices[u, 0], &best[threadid(), 0], W, OH, OW, KW, sw, dil_h, dil_w,
                   &rows[0], &cols[0], &taps[0])


def max_pool2d_backward(const real[:, ::1] dy, const int64_t[:, ::1] indices, real[:, ::1] dx, int nthreads):
    """dx (planes, H*W): zeros, then dy (planes, OH*OW) added at each index in output order, so
    windows that chose the same pixel add up as in the reference. Returns how many indices lay
    outside [0, H*W): those are skipped (the caller raises)."""
    cdef Py_ssize_t u, o, outside = 0
    cdef uint64_t i, size = dx.shape[1]
    for u in prange(dx.shape[0], nogil=True, num_threads=nthreads, schedule="static"):
        memset(&dx[u, 0], 0, dx.shape[1] * sizeof(real))
        for o in range(dy.shape[1]):
            i = <uint64_t>indices[u, o]  # a negative index is huge unsigned
            if i < size:
                dx[u, i] += dy[u, o]
            else:
                outside += 1
    return outside


# --------------------------------------------------------------------------------------------
# window sums: average and adaptive average pooling
# --------------------------------------------------------------------------------------------

cdef inline Py_ssize_t _divisor(const Py_ssize_t* rows, const Py_ssize_t* cols, Py_ssize_t oh, Py_ssize_t ow,
                                Py_ssize_t override) noexcept nogil:
    """The divisor of window (oh, ow): ``override`` unless 0, else the product of the axes' sizes."""
    return override if override != 0 else rows[3 * oh + 2] * cols[3 * ow + 2]


def window_sum_forward(const real[:, ::1] x, real[:, ::1] y, Py_ssize_t W, Py_ssize_t OH, Py_ssize_t OW,
                       const Py_ssize_t[::1] rows, const Py_ssize_t[::1] cols, Py_ssize_t override, int nthreads):
    """y (planes, OH*OW) = the sum of each window's pixels in row-major order, divided by its
    divisor (one division, no reciprocal: exact where the reference is). rows (3*OH,): per output
    row its input rows [r0, r1) and its size; cols (3*OW,) likewise."""
    cdef Py_ssize_t u, oh, ow, ih, iw
    cdef real total
    cdef const real* xp
    for u in prange(x.shape[0], nogil=True, num_threads=nthreads, schedule="static"):
        xp = &x[u, 0]
        for oh in range(OH):
            for ow in range(OW):
                total = 0
                for ih in range(rows[3 * oh], rows[3 * oh + 1]):
                    for iw in range(cols[3 * ow], cols[3 * ow + 1]):
                        total = total + xp[ih * W + iw]
                y[u, oh * OW + ow] = total / <real>_divisor(&rows[0], &cols[0], oh, ow, override)


def window_sum_backward(const real[:, ::1] dy, real[:, ::1] dx, Py_ssize_t W, Py_ssize_t OH, Py_ssize_t OW,
                        const Py_ssize_t[::1] rows, const Py_ssize_t[::1] cols, Py_ssize_t override, int nthreads):
    """dx (planes, H*W): each window's dy / divisor added to every pixel of the window."""
    cdef Py_ssize_t u, oh, ow, ih, iw
    cdef real share
    cdef real* dxp
    for u in prange(dx.shape[0], nogil=True, num_threads=nthreads, schedule="static"):
        dxp = &dx[u, 0]
        memset(dxp, 0, dx.shape[1] * sizeof(real))
        for oh in range(OH):
            for ow in range(OW):
                share = dy[u, oh * OW + ow] / <real>_divisor(&rows[0], &cols[0], oh, ow, override)
                for ih in range(rows[3 * oh], rows[3 * oh + 1]):
                    for iw in range(cols[3 * ow], cols[3 * ow + 1]):
                        dxp[ih * W + iw] += share
