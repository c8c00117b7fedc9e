"""Fills in _blas.pxd's function pointers from SciPy's BLAS capsules: the functions
``scipy.linalg.cython_blas`` exports to Cython, looked up at import instead of at build time."""

from cpython.pycapsule cimport PyCapsule_GetName, PyCapsule_GetPointer

from scipy.linalg import cython_blas


cdef void* _blas_function(str name) except NULL:
    capsule = cython_blas.__pyx_capi__[name]
    return PyCapsule_GetPointer(capsule, PyCapsule_GetName(capsule))


sgemm = <sgemm_t>_blas_function("sgemm")
dgemm = <dgemm_t>_blas_function("dgemm")
