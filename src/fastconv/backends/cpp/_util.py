"""What every adapter module of the C++ backend shares."""

import numpy as np

from ..._threads import get_num_threads


def contiguous(a):
    """``a`` as a C-contiguous array: the kernels index raw row-major memory, so a non-contiguous
    input is copied once here (a contiguous one passes through; inputs are never written)."""
    return None if a is None else np.ascontiguousarray(a)


def nthreads() -> int:
    """The thread count in force (``fastconv.set_num_threads``), read on every call."""
    return get_num_threads()
