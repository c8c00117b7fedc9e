"""The GPU side of the seam: kernels compiled by NVRTC through CuPy's ``RawModule`` (at their first
launch, once per device) and launched on CuPy's current stream; matrix products through CuPy
(cuBLAS).

This module is also the probe of the ``cupy`` backend: importing it fails, with the reason, when
CuPy is missing or sees no CUDA device.
"""

from __future__ import annotations

import functools
import threading

import numpy as np

from ._device import Device, Module
from ._nvrtc import nvrtc_options


class CudaDevice(Device):
    """One GPU, as CuPy sees it."""

    def __init__(self, index: int):
        import cupy

        self.xp = cupy
        self.index = index
        props = cupy.cuda.runtime.getDeviceProperties(index)
        self.label = f"GPU {index} ({props['name'].decode() if isinstance(props['name'], bytes) else props['name']})"
        self.multiprocessors = int(props["multiProcessorCount"])
        self.modules: dict[Module, object] = {}
        self.lock = threading.Lock()

    def activate(self):
        return self.xp.cuda.Device(self.index)

    def function(self, module: Module, kernel: str):
        """The compiled kernel: the module is compiled at its first launch on this device."""
        with self.lock:
            raw = self.modules.get(module)
            if raw is None:
                with self.activate():
                    raw = self.xp.RawModule(code=module.source.read_text(), options=nvrtc_options(module),
                                            name_expressions=list(module.kernels))
                    raw.compile()
                self.modules[module] = raw
        return raw.get_function(kernel)

    def launch(self, module: Module, kernel: str, grid, block, args, shared_mem: int) -> None:
        self.check_args(module, kernel, args)
        fn = self.function(module, kernel)
        # a null pointer is 8 zero bytes: CuPy passes a NumPy scalar by its bytes
        packed = tuple(np.uint64(0) if a is None else a for a in args)
        with self.activate():
            fn(grid, block, packed, shared_mem=shared_mem)


_devices: dict[int, CudaDevice] = {}
_devices_lock = threading.Lock()


def cuda_device(index: int) -> CudaDevice:
    with _devices_lock:
        if index not in _devices:
            _devices[index] = CudaDevice(index)
        return _devices[index]


@functools.lru_cache(maxsize=None)
def _probe() -> int:
    import cupy  # noqa: F401  (ImportError: the backend is unavailable, with this reason)

    count = cupy.cuda.runtime.getDeviceCount()
    if count < 1:
        raise ImportError("CuPy sees no CUDA device")
    return count


try:
    _probe()
except ImportError:
    raise
except Exception as exc:  # no driver, no device: CuPy raises its own runtime errors
    raise ImportError(f"CuPy cannot reach a CUDA device: {type(exc).__name__}: {exc}") from exc
