# GEMM through SciPy's BLAS (scipy.linalg.cython_blas), in row-major terms.
#
# The function pointers are the ones `from scipy.linalg.cython_blas cimport sgemm` would give, taken
# from the same capsules at import (see _blas.pyx), so building needs no SciPy headers.

ctypedef fused real:
    float
    double

ctypedef void (*sgemm_t)(char *transa, char *transb, int *m, int *n, int *k, float *alpha, float *a, int *lda,
                         float *b, int *ldb, float *beta, float *c, int *ldc) noexcept nogil
ctypedef void (*dgemm_t)(char *transa, char *transb, int *m, int *n, int *k, double *alpha, double *a, int *lda,
                         double *b, int *ldb, double *beta, double *c, int *ldc) noexcept nogil

cdef sgemm_t sgemm
cdef dgemm_t dgemm


cdef inline void gemm(bint trans_a, bint trans_b, Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, real alpha,
                      const real* A, Py_ssize_t lda, const real* B, Py_ssize_t ldb, real beta,
                      real* C, Py_ssize_t ldc) noexcept nogil:
    """Row-major C (M x N) = alpha op(A) (M x K) op(B) (K x N) + beta C; op transposes when asked.

    BLAS is column-major, and a row-major matrix is its transpose in column-major: so this asks
    for C^T = op(B)^T op(A)^T, i.e. the same flags with the operands (and M, N) swapped.
    Sizes must fit BLAS's int (the callers check).
    """
    cdef char ta = b'T' if trans_a else b'N'
    cdef char tb = b'T' if trans_b else b'N'
    cdef int m = <int>N, n = <int>M, k = <int>K, la = <int>lda, lb = <int>ldb, lc = <int>ldc
    if real is float:
        sgemm(&tb, &ta, &m, &n, &k, &alpha, <float*>B, &lb, <float*>A, &la, &beta, C, &lc)
    else:
        dgemm(&tb, &ta, &m, &n, &k, &alpha, <double*>B, &lb, <double*>A, &la, &beta, C, &lc)
