"""How many threads fastconv's CPU kernels use: ``set_num_threads(n)``, ``get_num_threads()``.

The number in force is, in order: the last :func:`set_num_threads` call, else the environment
variable ``FASTCONV_NUM_THREADS``, else the cores this process may run on. Compiled backends
(C++/OpenMP, Cython ``prange``, Numba) read :func:`get_num_threads` on every call.

The NumPy reference gets its parallelism only from the BLAS library NumPy links, so setting a
number (or starting with ``FASTCONV_NUM_THREADS`` set) also caps every BLAS library loaded in the
process at that moment, through ``threadpoolctl`` (a dependency; should it be missing, the BLAS
keeps its own setting, e.g. ``OPENBLAS_NUM_THREADS``).
PyTorch keeps its own pool: the benchmarks pin it separately with ``torch.set_num_threads``.
"""

from __future__ import annotations

import contextlib
import os

from ._params import as_int

ENV = "FASTCONV_NUM_THREADS"

_requested: int | None = None  # set by set_num_threads / num_threads; None defers to ENV


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))  # honours taskset/cgroup pinning, unlike cpu_count
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def _from_env() -> int | None:
    value = os.environ.get(ENV, "").strip()
    if not value:
        return None
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise ValueError(f"{ENV}: expected a positive integer, got {value!r}")
    return n


def get_num_threads() -> int:
    """The number of threads fastconv's CPU backends use."""
    if _requested is not None:
        return _requested
    from_env = _from_env()
    return _usable_cores() if from_env is None else from_env


def thread_source() -> str:
    """Where :func:`get_num_threads`'s number comes from, for reports."""
    if _requested is not None:
        return "set_num_threads"
    return ENV if _from_env() is not None else "usable cores"


def _limit_blas(n: int):
    """Cap the BLAS libraries loaded now at ``n`` threads; the limiter, or None without threadpoolctl."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return None
    return threadpool_limits(limits=n, user_api="blas")


def set_num_threads(n: int) -> None:
    """Use ``n`` threads (n >= 1) in every CPU backend, and in the BLAS NumPy uses."""
    global _requested
    _requested = as_int("set_num_threads", "n", n, minimum=1)
    _limit_blas(_requested)


@contextlib.contextmanager
def num_threads(n: int):
    """``set_num_threads(n)`` for the enclosed block; the previous number and BLAS limits come back."""
    global _requested
    n = as_int("num_threads", "n", n, minimum=1)
    previous, _requested = _requested, n
    limiter = _limit_blas(n)
    try:
        yield n
    finally:
        _requested = previous
        if limiter is not None:
            limiter.restore_original_limits()


if _from_env() is not None:  # the variable promises to control the BLAS too, from the start
    _limit_blas(get_num_threads())
