"""The Cython backend: kernels in the ``.pyx`` modules here (typed memoryviews, ``nogil`` loops,
OpenMP ``prange``; GEMM through SciPy's BLAS), compiled into extension modules by ``pip install``.

Importing this package imports every compiled module, so a missing or broken build makes the
backend unavailable with the reason (see ``fastconv.backend_status()``). The modules ``conv``,
``pool``, ``linear`` and ``activation`` are thin adapters with the reference backend's function
names and signatures; losses, batch norm and dropout are not implemented here.
"""

import importlib

for _name in ("_blas", "_conv", "_pool", "_linear", "_activation"):
    try:
        importlib.import_module(f"{__name__}.{_name}")
    except ImportError as exc:
        raise ImportError(f"the compiled module {__name__}.{_name} cannot be imported ({exc}); build the "
                          f"Cython extensions with `pip install .` (a C compiler with OpenMP and Cython>=3)") from exc
