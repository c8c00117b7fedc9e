"""Helpers shared by the backends' Python adapters."""

import numpy as np

#: When True (the test suite sets it), :func:`empty` fills new buffers with NaN, so a kernel that
#: forgets to write part of its output fails the comparison instead of passing on leftover zeros.
POISON = False


def empty(shape, dtype, allocate=np.empty):
    """An output buffer a kernel will overwrite completely: (poisoned) ``allocate(shape, dtype)``."""
    out = allocate(shape, dtype)
    if POISON:
        out.fill(np.nan)
    return out
