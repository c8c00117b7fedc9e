"""``gemm``: a BLAS matrix product on strided 2-d views, callable from kernels (and from Python).

Unlike ``np.dot`` in Numba, it takes views whose rows are apart by more than their length (a tile
of an image's columns, a block of a weight matrix), a transposed operand without a copy, and
accumulates into ``c`` with ``beta = 1``. With ``NUMBA_DISABLE_JIT=1`` the Python body below
runs instead, with the same meaning.

Which BLAS. Compiled kernels call the row-major CBLAS function ``fastconv_numba_?gemm`` (64-bit
integers), a name this module gives to an address with LLVM at import, before any kernel is
compiled or loaded from the cache: so kernels link by name and can be cached, and every process
picks its BLAS afresh. The address is NumPy's own BLAS when it exports an ILP64 CBLAS (the
scipy-openblas64 of NumPy's wheels, 20 to 100% faster here than SciPy's at these sizes), else a
Numba ``cfunc`` with that interface over SciPy's BLAS (``numba_xxgemm``, the wrapper behind
Numba's ``np.dot``).
"""

import ctypes

import llvmlite.binding as llvm
import numpy as np
from numba import cfunc, types
from numba.extending import overload
from numba.np.numpy_support import as_dtype

from ._jit import FLAGS, jit

_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112  # CBLAS's enum values
_KINDS = {types.float32: "s", types.float64: "d"}


def gemm(alpha, a, b, beta, c):
    """``c = alpha * a @ b + beta * c`` in place; c (M, N), a (M, K), b (K, N), one dtype.

    Each array is a 2-d view with one unit-stride axis (a row-major block, or the transpose of
    one). With ``beta == 0`` c is not read, so it may hold anything (NaN included).
    """
    product = a @ b  # (M, N)
    if beta == 0:
        c[...] = alpha * product
    else:
        c[...] = alpha * product + beta * c


def _cblas_signature(dtype):
    """cblas_?gemm(order, transa, transb, M, N, K, alpha, a*, lda, b*, ldb, beta, c*, ldc), ILP64."""
    ptr = types.CPointer(dtype)
    return types.void(types.int32, types.int32, types.int32, types.int64, types.int64, types.int64,
                      dtype, ptr, types.int64, ptr, types.int64, dtype, ptr, types.int64)


def _symbol(kind):
    return f"fastconv_numba_{kind}gemm"


def _numpy_cblas(kind):
    """The address of NumPy's ILP64 cblas_?gemm, or None."""
    try:  # its handle also finds the BLAS it links
        from numpy._core import _multiarray_umath
    except ImportError:  # NumPy 1
        from numpy.core import _multiarray_umath
    library = ctypes.CDLL(_multiarray_umath.__file__)
    for name in (f"scipy_cblas_{kind}gemm64_", f"cblas_{kind}gemm64_"):
        try:
            return ctypes.cast(getattr(library, name), ctypes.c_void_p).value
        except AttributeError:
            continue
    return None


def _xxgemm(dtype):
    """Numba's column-major wrapper of SciPy's ?gemm: kind, transa, transb, m, n, k, alpha*, a*,
    lda, b*, ldb, beta*, c*, ldc; it returns non-zero when SciPy has no BLAS."""
    ptr = types.CPointer(dtype)
    return types.ExternalFunction("numba_xxgemm", types.intc(
        types.char, types.char, types.char, types.intp, types.intp, types.intp,
        ptr, ptr, types.intp, ptr, types.intp, ptr, ptr, types.intp))


def _scipy_cblas(dtype):
    """A cfunc with cblas_?gemm's row-major interface that calls SciPy's BLAS (column-major: the
    row-major product c = a b is c^T = b^T a^T, and a transpose flag means the same in both)."""
    xxgemm, kind, np_dtype = _xxgemm(dtype), ord(_KINDS[dtype]), as_dtype(dtype)

    @cfunc(_cblas_signature(dtype), cache=True, error_model=FLAGS["error_model"])
    def cblas(order, transa, transb, M, N, K, alpha, a, lda, b, ldb, beta, c, ldc):
        scalars = np.empty(2, np_dtype)  # the wrapper takes alpha and beta by pointer
        scalars[0] = alpha
        scalars[1] = beta
        flag_a = ord("t") if transa == _TRANS else ord("n")
        flag_b = ord("t") if transb == _TRANS else ord("n")
        if xxgemm(kind, flag_b, flag_a, N, M, K, scalars[0:].ctypes, b, ldb, a, lda, scalars[1:].ctypes, c, ldc):
            raise RuntimeError("gemm: SciPy's BLAS is not available to Numba")

    return cblas.address


def _register():
    """Give ``fastconv_numba_?gemm`` its address for this process."""
    for dtype, kind in _KINDS.items():
        llvm.add_symbol(_symbol(kind), _numpy_cblas(kind) or _scipy_cblas(dtype))


_register()


@jit
def _operand(a):
    """(CBLAS transpose flag, leading dimension) of a row-major 2-d view: a view with unit-stride
    rows is read as is; a transposed view (unit-stride columns) is the transpose of what it views.
    CBLAS wants the leading dimension at least the stored row length, which a size-1 axis's
    arbitrary stride may not give."""
    item = a.itemsize
    if a.strides[1] == item or a.shape[1] == 1:
        return np.int32(_NO_TRANS), max(a.strides[0] // item, a.shape[1], 1)
    return np.int32(_TRANS), max(a.strides[1] // item, a.shape[0], 1)


@overload(gemm)
def _gemm_compiled(alpha, a, b, beta, c):
    cblas = types.ExternalFunction(_symbol(_KINDS[c.dtype]), _cblas_signature(c.dtype))
    scalar = as_dtype(c.dtype).type

    def impl(alpha, a, b, beta, c):
        M, N = c.shape
        trans_a, lda = _operand(a)
        trans_b, ldb = _operand(b)
        ldc = _operand(c)[1]
        cblas(np.int32(_ROW_MAJOR), trans_a, trans_b, M, N, a.shape[1], scalar(alpha), a.ctypes, lda, b.ctypes, ldb,
              scalar(beta), c.ctypes, ldc)

    return impl
