"""The one set of ``@njit`` flags of the Numba backend, its threading layer, and how a kernel is run.

Every kernel is compiled lazily, on its first call with a given set of argument types, and cached
on disk (``cache=True``: ``__pycache__`` next to the sources), so a second process loads it
instead of compiling it. ``nogil=True`` lets several Python threads run kernels at once. Numba
invalidates a cached kernel when *its own* file changes, not when a helper it calls from another
module does: after editing ``_loops.py``, ``_blas.py`` or this file, delete the ``*.nbi``/``*.nbc``
files in ``__pycache__``.

Threads: every op runs its kernel through :func:`run`, which sets Numba's thread count to
``fastconv.get_num_threads()`` in the calling Python thread (Numba's count is per thread) on
every call. The threading layer is chosen here as ``threadsafe`` (TBB if installed, else OpenMP),
because Numba's ``workqueue`` layer aborts the process when two Python threads launch parallel
kernels at once. Should the process end up on ``workqueue`` anyway (the user forced it, or
other code launched Numba's threads first), parallel kernels are serialised by a lock instead.
(GNU OpenMP does not survive ``fork``: a forked child of a process that ran a parallel kernel
must not run one; use the ``spawn`` start method for multiprocessing.)

BLAS: kernels that call :func:`~._blas.gemm` inside ``prange`` run through :func:`run_with_blas`,
which holds the BLAS libraries at one thread meanwhile, so that the only thread pool of an op
is Numba's (a multithreaded BLAS call from every Numba thread would oversubscribe the cores).
"""

from __future__ import annotations

import contextlib
import os
import threading

import numba
import numpy as np

from ..._threads import get_num_threads

if "NUMBA_THREADING_LAYER" not in os.environ:  # an explicit choice of the user's is respected
    numba.config.THREADING_LAYER = "threadsafe"

#: The flags of every kernel: cached on disk, GIL released while it runs, and NumPy's error model
#: (a float division by zero gives inf or NaN, as in NumPy and PyTorch, instead of raising). No
#: ``fastmath``: it would let LLVM assume there are no NaN or Inf, which kernels must propagate.
FLAGS = {"cache": True, "nogil": True, "error_model": "numpy"}

#: Decorator of the serial kernels and of the helpers that kernels call.
jit = numba.njit(**FLAGS)
#: Decorator of the small helpers that kernels call once per row: inlined into their callers by
#: Numba, since a call costs as much as copying a row of a few dozen elements.
inline_jit = numba.njit(inline="always", **FLAGS)
#: Decorator of the kernels that run ``prange`` loops on Numba's thread pool.
parallel_jit = numba.njit(parallel=True, **FLAGS)


def contiguous(a):
    """``a`` as a read-only C-contiguous array, the one kind of input the kernels are compiled for.

    Only a non-contiguous input is copied. A contiguous one, writable or not, is viewed read-only
    without a copy: Numba types a read-only array apart from a writable one, so typing every input
    read-only gives each kernel one specialisation whatever the caller passes (a read-only array
    must not cost a copy or a second compile), and a kernel that wrote to an input would not compile.
    """
    a = np.require(a, requirements="C")  # unlike np.ascontiguousarray, keeps a 0-d array 0-d
    if a.flags.writeable:
        a = a.view()  # the caller's array keeps its flag
        a.flags.writeable = False
    return a


class _BlasPin:
    """Holds every loaded BLAS library at one thread while at least one op is inside it.

    Reference-counted across Python threads: the first op in saves the libraries' thread counts,
    the last one out restores them.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._inside = 0
        self._libraries = None  # threadpoolctl's controllers, found on first use
        self._saved: list[int] = []

    def _find(self):
        if self._libraries is None:
            try:
                import scipy.linalg.cython_blas  # noqa: F401  (the BLAS that Numba calls: loaded before the search)
                from threadpoolctl import ThreadpoolController
            except ImportError:  # without threadpoolctl the BLAS keeps its own setting
                self._libraries = []
            else:
                self._libraries = ThreadpoolController().select(user_api="blas").lib_controllers
        return self._libraries

    def __enter__(self):
        with self._lock:
            if self._inside == 0:
                libraries = self._find()
                self._saved = [lib.get_num_threads() for lib in libraries]
                for lib in libraries:
                    lib.set_num_threads(1)
            self._inside += 1

    def __exit__(self, *exc):
        with self._lock:
            self._inside -= 1
            if self._inside == 0:
                for lib, n in zip(self._libraries, self._saved):
                    lib.set_num_threads(n)


_BLAS_PIN = _BlasPin()
_layer_guard: contextlib.AbstractContextManager | None = None  # set on the first run


def _guard():
    """A lock if the threading layer cannot take concurrent launches, else nothing."""
    global _layer_guard
    if _layer_guard is None:
        unsafe = numba.threading_layer() == "workqueue"  # threads are launched by now
        _layer_guard = threading.Lock() if unsafe else contextlib.nullcontext()
    return _layer_guard


def run(kernel, *args):
    """``kernel(*args)`` on ``fastconv.get_num_threads()`` threads (at most Numba's pool size)."""
    numba.set_num_threads(min(get_num_threads(), numba.config.NUMBA_NUM_THREADS))
    with _guard():
        return kernel(*args)


def run_with_blas(kernel, *args):
    """:func:`run` for a kernel that calls BLAS from its ``prange`` loops: BLAS on one thread meanwhile."""
    with _BLAS_PIN:
        return run(kernel, *args)
