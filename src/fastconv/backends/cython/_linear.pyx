"""Cython dense layer, float32 and float64: every pass one GEMM through SciPy's BLAS (_blas.pxd),
the transposes expressed as GEMM flags; the adapter (linear.py) gives BLAS the thread count in
force. x is (M, in_features), w (out_features, in_features), y and dy (M, out_features)."""

from libc.limits cimport INT_MAX

from ._blas cimport gemm, real


cdef int _check(Py_ssize_t M, Py_ssize_t K, Py_ssize_t N) except -1:
    if max(M, K, N) > INT_MAX:
        raise OverflowError(f"linear: a GEMM size ({M}, {K} or {N}) exceeds BLAS's 32-bit int")
    return 0


def linear_forward(const real[:, ::1] x, const real[:, ::1] w, const real[::1] b, real[:, ::1] y):
    """y = x w^T (+ b): y starts as b in every row and the GEMM adds onto it (beta = 1)."""
    cdef Py_ssize_t M = x.shape[0], K = x.shape[1], N = w.shape[0], i
    _check(M, K, N)
    if b is not None:
        for i in range(M):
            y[i, :] = b
    with nogil:
        gemm(False, True, M, N, K, <real>1, &x[0, 0], K, &w[0, 0], K, <real>(0 if b is None else 1), &y[0, 0], N)


def linear_backward_input(const real[:, ::1] dy, const real[:, ::1] w, real[:, ::1] dx):
    """dx (M, in_features) = dy w."""
    cdef Py_ssize_t M = dy.shape[0], N = dy.shape[1], K = w.shape[1]
    _check(M, K, N)
    with nogil:
        gemm(False, False, M, K, N, <real>1, &dy[0, 0], N, &w[0, 0], K, <real>0, &dx[0, 0], K)


def linear_backward_weight(const real[:, ::1] dy, const real[:, ::1] x, real[:, ::1] dw):
    """dw (out_features, in_features) = dy^T x."""
    cdef Py_ssize_t M = dy.shape[0], N = dy.shape[1], K = x.shape[1]
    _check(M, K, N)
    with nogil:
        gemm(True, False, N, K, M, <real>1, &dy[0, 0], N, &x[0, 0], K, <real>0, &dw[0, 0], K)


def linear_backward_bias(const real[:, ::1] dy, real[::1] db):
    """db (out_features,) = dy summed over rows, row by row in order (as the reference)."""
    cdef Py_ssize_t i, j
    db[:] = 0
    with nogil:
        for i in range(dy.shape[0]):
            for j in range(dy.shape[1]):
                db[j] += dy[i, j]
