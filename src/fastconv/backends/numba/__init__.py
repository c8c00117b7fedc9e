"""The Numba backend: CPU kernels written in Python and compiled by Numba (``@njit``, parallel
``prange`` loops, on-disk cache), for users who want fast kernels they can read and change
without a compiler toolchain.

Importing this package imports Numba (so a missing Numba makes the backend unavailable, with the
ImportError as the reason) and picks its threading layer; nothing is compiled until an op runs.
The modules have the reference backend's function names and signatures. Flags, threads and how
kernels are run: :mod:`._jit`; the BLAS call kernels make: :mod:`._blas`.
"""

from . import _jit  # noqa: F401  (imports Numba and sets the threading layer before any kernel runs)
