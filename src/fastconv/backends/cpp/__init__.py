"""The C++ backend: kernels in ``csrc/`` compiled into the private extension ``fastconv._cpp``
(pybind11, OpenMP; GEMM micro-kernels for AVX-512 / AVX2+FMA / portable C++ chosen at run time).

Importing this package imports the extension, so a missing or broken build makes the backend
unavailable with the original ImportError as the reason (see ``fastconv.backend_status()``).
The modules here are thin adapters with the reference backend's function names and signatures:
they make inputs C-contiguous, allocate outputs, and pass the thread count in force.
"""

from ... import _cpp  # noqa: F401  (fails here, with its reason, when the extension is not built)

#: The micro-kernel set in use on this CPU: "avx512", "avx2" or "generic".
ISA = _cpp.gemm_isa()
