"""What every adapter module of the Cython backend shares: flat C-ordered inputs, the thread count
in force, and the thread count of the BLAS library the kernels call."""

import contextlib
import threading

import numpy as np
from threadpoolctl import ThreadpoolController

from ..._threads import get_num_threads
from . import _blas  # noqa: F401  (loads SciPy's BLAS, so that the controller below finds it)


def contiguous(a):
    """``a`` C-contiguous for the kernels' memoryviews: ``a`` itself when it is, else one copy
    (inputs are never written; None stays None)."""
    return None if a is None else np.ascontiguousarray(a)


def flat(a):
    """``a`` as a flat C-ordered array for the kernels' 1-d memoryviews (see :func:`contiguous`)."""
    return None if a is None else contiguous(a).reshape(-1)


def nthreads() -> int:
    """The thread count in force (``fastconv.set_num_threads``), read on every call."""
    return get_num_threads()


# Every BLAS library loaded now, SciPy's (the one the kernels call) among them.
_BLAS = ThreadpoolController().select(user_api="blas").lib_controllers
_lock = threading.Lock()
_users = 0  # kernels now inside blas_threads
_saved: list[int] = []  # the BLAS thread counts before the first of them entered


@contextlib.contextmanager
def blas_threads(n: int):
    """Run the enclosed kernel with BLAS on ``n`` threads; the previous counts come back after the
    last kernel running concurrently (from other Python threads) has left.

    n = 1 where a kernel calls BLAS from inside its own OpenMP loop, so the two thread pools
    never run at once (OpenBLAS would otherwise start its threads from every OpenMP thread).
    """
    global _users, _saved
    with _lock:
        if _users == 0:
            _saved = [lib.get_num_threads() for lib in _BLAS]
        _users += 1
        for lib in _BLAS:
            lib.set_num_threads(n)
    try:
        yield
    finally:
        with _lock:
            _users -= 1
            if _users == 0:
                for lib, count in zip(_BLAS, _saved):
                    lib.set_num_threads(count)
