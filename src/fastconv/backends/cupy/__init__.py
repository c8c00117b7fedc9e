"""The GPU backend ``cupy`` and its emulator ``cupy-emu``: CUDA kernels from ``fastconv/cuda/``,
one ``.cu`` file per op family (mirroring ``csrc/``), with cuBLAS for the matrix products.

The adapters here (``conv.py``, ``pool.py``, ... with every backend's function names) are written
once and run on two devices, picked by the arrays they are given (``_device.device_of``):

- CuPy arrays: the ``cupy`` backend. Kernels are compiled by NVRTC at their first launch (CuPy's
  ``RawModule``, cached per device) and run on CuPy's current stream; outputs are CuPy arrays on
  the input's device. Its probe is ``_gpu`` (CuPy and a CUDA device).
- NumPy arrays: the ``cupy-emu`` backend. The same ``.cu`` files compiled as host C++ and run by
  the emulator of ``fastconv/cuda/emu/`` (each thread block as cooperative fibers), so that every
  kernel is verified against the reference on machines without a GPU. Its probe is ``_emu`` (a
  C++ compiler). ``auto`` never picks it.

Importing this package imports neither CuPy nor a compiler: ``import fastconv`` stays light, and
the emulator works without CuPy installed.
"""

from ._device import launch_limits  # noqa: F401  (the tests force small launches through it)
