"""What every adapter module of the C++ backend shares."""

import numpy as np

from ... import _cpp
from ..._threads import get_num_threads
from .. import _common


def empty(shape, dtype):
    """An output array the kernel overwrites completely, in memory kept from earlier calls' freed
    outputs (``_cpp.empty``: a large array given back when freed, so the next call of that size
    does not fault its pages in again)."""
    return _common.empty(shape, dtype, _cpp.empty)


def contiguous(a):
    """``a`` as a C-contiguous array: the kernels index raw row-major memory, so a non-contiguous
    input is copied once here (a contiguous one passes through; inputs are never written)."""
    return None if a is None else np.ascontiguousarray(a)


#: Convolution and dense passes of fewer flops than this run on one thread. Opening an OpenMP
#: team of two costs more than the second core gives back on tiny problems (2-core AMD EPYC,
#: benchmarks/overhead.py's companion measurement in the README): a 1x3x8x8 conv with 4 3x3
#: filters (13.8 kflop) took 7.2 us on one thread and 12.6 us on two; 295 kflop 19.8 against 23.4;
#: 1.18 Mflop 43 against 47 (wgrad 42 against 53); from 2.4 Mflop two threads won (81 against 72).
#: Dense: 16 kflop 5.3 against 10.9 us, 0.5 Mflop 27.5 against 41.7. Results are bit-identical
#: for any thread count, so this changes time only.
SERIAL_FLOPS = 1_000_000


def nthreads(flops: int | None = None) -> int:
    """The thread count in force (``fastconv.set_num_threads``), read on every call; 1 for a pass
    of fewer than :data:`SERIAL_FLOPS` flops."""
    if flops is not None and flops < SERIAL_FLOPS:
        return 1
    return get_num_threads()
