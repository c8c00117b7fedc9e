"""Cython activations and softmax, float32 and float64.

Elementwise kernels run one OpenMP ``prange`` over the flat array; the activation is a switch
inside the loop (it branches the same way for every element). The formulas and the comparisons
they branch on are the reference's (backends/reference/activation.py), which are PyTorch's: they
decide the gradient at kinks and where NaN goes. Every element is computed in double precision
and rounded once to the array's dtype: for float32 that is at least as accurate as the
reference's float32 steps, and one formula serves both dtypes. The parameters (slope, alpha,
beta, ...) are first rounded to the dtype, as the reference's arithmetic rounds them.

Softmax runs along the middle axis of x viewed as (outer, L, inner), one prange over the
outer*inner slices.
"""

from cython.parallel cimport prange
from libc.math cimport erf, exp, expm1, fabs, log, log1p, tanh

from ._blas cimport real

cdef double SQRT_HALF = 0.7071067811865476  # sqrt(1/2)
cdef double INV_SQRT_2PI = 0.3989422804014327  # the standard normal density at 0
cdef double TANH_BETA = 0.7978845608028654  # sqrt(2/pi): gelu's tanh(beta * (x + kappa x^3))
cdef double TANH_KAPPA = 0.044715
#: Beyond |x| = 1e4, exp(-x^2/2) is 0 and the tanh is +-1: clipping x there where it is squared or
#: cubed changes no result (and keeps the reference's float32 x^3 from overflowing).
cdef double SATURATED = 1e4
#: Below this many elements one thread does the work: starting the team would cost more.
cdef Py_ssize_t PARALLEL_MIN = 1 << 15


cpdef enum Kind:
    RELU
    LEAKY_RELU  # a: negative slope
    ELU  # a: scale, b: scale * alpha (selu is elu with its constants)
    GELU
    GELU_TANH
    SIGMOID
    TANH
    SOFTPLUS  # a: beta, b: threshold
    SILU


cdef inline double _sigmoid(double v) noexcept nogil:
    """1 / (1 + exp(-v)) without overflow: exp is only taken of -|v|. NaN gives NaN."""
    cdef double e = exp(-fabs(v))
    return 1 / (1 + e) if v >= 0 else e / (1 + e)


cdef inline double _saturated(double v) noexcept nogil:
    """v clipped to [-SATURATED, SATURATED]; NaN stays NaN."""
    return SATURATED if v > SATURATED else (-SATURATED if v < -SATURATED else v)


cdef inline double _tanh_gelu_inner(double v) noexcept nogil:
    cdef double s = _saturated(v)
    return tanh(TANH_BETA * (s + TANH_KAPPA * s * s * s))


cdef inline double _forward(Kind kind, double x, double a, double b) noexcept nogil:
    cdef double z
    if kind == RELU:
        return x if x >= 0 or x != x else 0  # NaN stays NaN, as np.maximum(x, 0)
    if kind == LEAKY_RELU:
        return x if x > 0 else x * a
    if kind == ELU:
        return a * x if x > 0 else b * expm1(x)  # expm1 only of x <= 0 (or NaN)
    if kind == GELU:
        return 0.5 * x * (1 + erf(x * SQRT_HALF))
    if kind == GELU_TANH:
        return 0.5 * x * (1 + _tanh_gelu_inner(x))
    if kind == SIGMOID:
        return _sigmoid(x)
    if kind == TANH:
        return tanh(x)
    if kind == SOFTPLUS:
        z = x * a
        if z > b:
            return x
        # log(1 + exp(z)) = max(z, 0) + log1p(exp(-|z|)): exp never of a large positive z
        return ((z if z >= 0 or z != z else 0) + log1p(exp(-fabs(z)))) / a
    return x * _sigmoid(x)  # SILU


cdef inline double _backward(Kind kind, double dy, double x, double a, double b) noexcept nogil:
    cdef double t, s, xs
    if kind == RELU:
        return 0 if x <= 0 else dy  # PyTorch: 0 at x = 0, dy at NaN
    if kind == LEAKY_RELU:
        return dy if x > 0 else dy * a
    if kind == ELU:
        return dy * a if x > 0 else dy * b * exp(x)  # NaN at x = NaN
    if kind == GELU:
        xs = _saturated(x)
        # x * pdf is inf * 0 = NaN at x = +-inf, as in PyTorch
        return dy * (0.5 * (1 + erf(x * SQRT_HALF)) + x * (INV_SQRT_2PI * exp(-0.5 * xs * xs)))
    if kind == GELU_TANH:
        xs = _saturated(x)
        t = _tanh_gelu_inner(x)
        # d/dx [0.5 x (1 + t)] = 0.5 (1 + t) + 0.5 x (1 - t^2) beta (1 + 3 kappa x^2)
        return dy * (0.5 * (1 + t) + 0.5 * x * (1 - t * t) * TANH_BETA * (1 + 3 * TANH_KAPPA * xs * xs))
    if kind == SIGMOID:
        s = _sigmoid(x)
        return dy * (1 - s) * s
    if kind == TANH:
        t = tanh(x)
        return dy * (1 - t * t)
    if kind == SOFTPLUS:
        s = x * a
        return dy if s > b else dy * _sigmoid(s)
    s = _sigmoid(x)  # SILU
    return dy * s * (1 + x * (1 - s))


def activation_forward(Kind kind, const real[::1] x, real[::1] y, double a, double b, int nthreads):
    """y = kind(x) elementwise, x and y (K,)."""
    cdef Py_ssize_t i
    cdef double ra = <real>a, rb = <real>b
    for i in prange(x.shape[0], nogil=True, schedule="static",
                    num_threads=nthreads if x.shape[0] >= PARALLEL_MIN else 1):
        y[i] = <real>_forward(kind, x[i], ra, rb)


def activation_backward(Kind kind, const real[::1] dy, const real[::1] x, real[::1] dx, double a, double b,
                        int nthreads):
    """dx = dy * kind'(x) elementwise, all (K,)."""
    cdef Py_ssize_t i
    cdef double ra = <real>a, rb = <real>b
    for i in prange(x.shape[0], nogil=True, schedule="static",
                    num_threads=nthreads if x.shape[0] >= PARALLEL_MIN else 1):
        dx[i] = <real>_backward(kind, dy[i], x[i], ra, rb)


# --------------------------------------------------------------------------------------------
# softmax and log_softmax along the middle axis of (outer, L, inner)
# --------------------------------------------------------------------------------------------

cdef void _softmax_slice(const real* x, real* y, Py_ssize_t L, Py_ssize_t step, bint log_) noexcept nogil:
    """One slice x[0], x[step], ... (L of them): y = softmax or log_softmax, the maximum subtracted.
    A slice with NaN, +inf or only -inf is all NaN (inf - inf), as in PyTorch."""
    cdef double top = x[0], total = 0, v
    cdef Py_ssize_t l
    for l in range(1, L):
        v = x[l * step]
        if v > top or v != v:  # NaN is the maximum once met
            top = v
    for l in range(L):
        total += exp(x[l * step] - top)
    if log_:
        total = log(total)
    for l in range(L):
        y[l * step] = <real>(x[l * step] - top - total if log_ else exp(x[l * step] - top) / total)


cdef void _softmax_backward_slice(const real* dy, const real* y, real* dx, Py_ssize_t L, Py_ssize_t step,
                                  bint log_) noexcept nogil:
    """softmax: dx = y (dy - sum(dy y)); log_softmax: dx = dy - exp(y) sum(dy); from the output y."""
    cdef double total = 0
    cdef Py_ssize_t l
    for l in range(L):
        total += dy[l * step] if log_ else <double>dy[l * step] * y[l * step]
    for l in range(L):
        dx[l * step] = <real>(dy[l * step] - exp(y[l * step]) * total if log_ else
                              y[l * step] * (dy[l * step] - total))


def softmax_forward(bint log_, const real[:, :, ::1] x, real[:, :, ::1] y, int nthreads):
    """y = softmax (or log_softmax) of x (outer, L, inner) along L."""
    cdef Py_ssize_t L = x.shape[1], inner = x.shape[2], s
    for s in prange(x.shape[0] * inner, nogil=True, schedule="static",
                    num_threads=nthreads if x.shape[0] * inner * L >= PARALLEL_MIN else 1):
        _softmax_slice(&x[s // inner, 0, s % inner], &y[s // inner, 0, s % inner], L, inner, log_)


def softmax_backward(bint log_, const real[:, :, ::1] dy, const real[:, :, ::1] y, real[:, :, ::1] dx, int nthreads):
    """dx of softmax (or log_softmax) along L from dy and the forward's output y, all (outer, L, inner)."""
    cdef Py_ssize_t L = y.shape[1], inner = y.shape[2], s
    for s in prange(y.shape[0] * inner, nogil=True, schedule="static",
                    num_threads=nthreads if y.shape[0] * inner * L >= PARALLEL_MIN else 1):
        _softmax_backward_slice(&dy[s // inner, 0, s % inner], &y[s // inner, 0, s % inner],
                                &dx[s // inner, 0, s % inner], L, inner, log_)
