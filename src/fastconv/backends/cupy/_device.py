"""The seam between the GPU backend's adapters and what runs their kernels.

The adapters (``conv.py``, ``pool.py``, ...) are written once. Every call starts with
``dev = device_of(x)``: for CuPy arrays a :class:`Device` that launches the kernels of
``fastconv/cuda/*.cu`` on that GPU through CuPy (``_gpu.py``); for NumPy arrays the emulator,
which runs the same kernels compiled as host C++ (``_emu.py``, the ``cupy-emu`` backend). Through
the device an adapter reaches all it needs: the array module (``dev.xp``), buffers
(``dev.empty``), matrix products (``dev.matmul``: cuBLAS, or NumPy's BLAS) and kernel launches
(``module.launch(dev, ...)``), so grid sizes, chunking, argument packing and GEMM calls run the same
code on both.

Kernels are declared per file (:class:`Module`): the name expressions an adapter may launch, e.g.
``im2col<float>``. The same list goes to NVRTC (CuPy's ``RawModule``), to the emulator's kernel
table, and to the sm_80/sm_90 compile check, so a kernel that is launched is also compiled and
checked.

Launch arguments follow one rule on both devices: arrays (C-contiguous, of the device's kind),
``None`` for a null pointer, and NumPy scalars of the kernel parameter's exact type
(``np.int32(n)``, ``np.float32(alpha)``). A bare Python number is refused: CUDA would read its
bytes as whatever the parameter is. The emulator also checks each argument against the kernel's
signature.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..._checks import is_cupy
from .. import _common

#: The CUDA sources, shipped inside the package: <family>.cu, common.cuh, emu/.
CUDA_DIR = Path(__file__).resolve().parent.parent.parent / "cuda"

#: NumPy dtype -> the C++ type a kernel template is instantiated with.
CTYPES = {
    np.dtype(np.float16): "__half",
    np.dtype(np.float32): "float",
    np.dtype(np.float64): "double",
}


def ctype(dtype) -> str:
    return CTYPES[np.dtype(dtype)]


class KernelError(RuntimeError):
    """A kernel launch that the device (or the emulator) refused or that failed while running."""


# --------------------------------------------------------------------------------------------
# kernel files and their name expressions
# --------------------------------------------------------------------------------------------

def instances(kernel: str, *params) -> list[str]:
    """Name expressions of ``kernel`` for every combination of template arguments, e.g.
    ``instances("im2col", ("float", "double"))`` -> ``["im2col<float>", "im2col<double>"]``."""
    names = [kernel]
    for options in params:
        names = [f"{n}, {o}" if "<" in n else f"{n}<{o}" for n in names for o in options]
    return [n + ">" if "<" in n else n for n in names]


@dataclass(frozen=True)
class Module:
    """One kernel file and the name expressions launched from it."""

    family: str  # the file is <family>.cu in `directory`
    kernels: tuple[str, ...]
    directory: Path = CUDA_DIR

    @property
    def source(self) -> Path:
        return self.directory / f"{self.family}.cu"

    def launch(self, dev, kernel: str, grid, block, args, shared_mem: int = 0) -> None:
        """Launch the name expression ``kernel`` (one of :attr:`kernels`) on ``dev``."""
        if kernel not in self.kernels:
            raise KernelError(f"{self.family}.cu: {kernel!r} is not among its declared kernels")
        dev.launch(self, kernel, _dims(grid), _dims(block), list(args), int(shared_mem))

    def fingerprint(self) -> str:
        """A hash of everything a build of this module depends on: its file, the shared headers
        (common.cuh and the emulator's) and the name expressions."""
        paths = sorted([self.source, *CUDA_DIR.glob("*.cuh"), *(CUDA_DIR / "emu").glob("*")])
        return fingerprint(paths, "\n".join(self.kernels))


def fingerprint(paths, extra: str = "") -> str:
    """A short hash of the files' names and contents (and ``extra``): a build's cache key."""
    h = hashlib.sha256()
    for path in paths:
        h.update(path.name.encode() + b"\0" + path.read_bytes())
    h.update(extra.encode())
    return h.hexdigest()[:16]


def _dims(d) -> tuple[int, int, int]:
    d = (d,) if isinstance(d, (int, np.integer)) else tuple(d)
    if not 1 <= len(d) <= 3:
        raise KernelError(f"launch dimensions must have 1 to 3 entries, got {d!r}")
    return tuple(int(v) for v in d) + (1,) * (3 - len(d))


# --------------------------------------------------------------------------------------------
# launch sizes
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Limits:
    """Caps on the launch sizes adapters choose: the tests force them small (a warp per block, a
    couple of blocks) so that partial blocks, grid-stride loops and tails run on small inputs."""

    threads: int | None = None  # at most this many threads per block (a multiple of 32)
    blocks: int | None = None  # at most this many blocks per grid-stride launch


_limits: contextvars.ContextVar[Limits] = contextvars.ContextVar("fastconv_gpu_limits", default=Limits())


@contextlib.contextmanager
def launch_limits(threads: int | None = None, blocks: int | None = None):
    """Cap every launch of the enclosed calls at ``threads`` per block and ``blocks`` per grid."""
    if threads is not None and (threads < 32 or threads % 32):
        raise ValueError(f"launch_limits: threads must be a positive multiple of 32, got {threads}")
    if blocks is not None and blocks < 1:
        raise ValueError(f"launch_limits: blocks must be >= 1, got {blocks}")
    token = _limits.set(Limits(threads, blocks))
    try:
        yield
    finally:
        _limits.reset(token)


def threads_per_block(preferred: int = 256) -> int:
    """``preferred`` (a multiple of 32), capped by :func:`launch_limits`."""
    cap = _limits.get().threads
    return preferred if cap is None else min(preferred, cap)


def grid_blocks(dev, items: int, threads: int, per_thread: int = 1) -> int:
    """Blocks for a grid-stride loop over ``items``: enough for every thread to take
    ``per_thread`` items, at most a few waves of the device, capped by :func:`launch_limits`."""
    blocks = max(1, min(math.ceil(items / (threads * per_thread)), dev.max_blocks(threads)))
    cap = _limits.get().blocks
    return blocks if cap is None else min(blocks, cap)


def capped_blocks(blocks: int) -> int:
    """A grid of ``blocks`` blocks for a kernel that loops over its work with a grid stride,
    capped by :func:`launch_limits`."""
    cap = _limits.get().blocks
    return max(1, blocks if cap is None else min(blocks, cap))


# --------------------------------------------------------------------------------------------
# the device interface
# --------------------------------------------------------------------------------------------

class Device:
    """What an adapter needs from where its kernels run. Subclasses: ``_gpu.CudaDevice`` and
    ``_emu.Emulator``."""

    xp = np  # the array module of this device's arrays
    label = "device"
    multiprocessors = 1

    def max_blocks(self, threads: int) -> int:
        """A grid-stride launch's grid: 4 waves of full occupancy (2048 threads per SM)."""
        return max(1, self.multiprocessors * 4 * (2048 // threads))

    def activate(self):
        """A context in which this device is current (allocations and launches land on it)."""
        return contextlib.nullcontext()

    def empty(self, shape, dtype):
        """An output buffer a kernel overwrites: under the tests (``_common.POISON``) it starts as
        NaN (floats) or as the smallest integer, so a kernel that skips part of it is caught."""
        out = self.xp.empty(shape, dtype=dtype)
        if _common.POISON and out.size:
            kind = np.dtype(dtype).kind
            if kind == "f":
                out.fill(np.nan)
            elif kind in "iu":
                out.fill(np.iinfo(dtype).min)
        return out

    def zeros(self, shape, dtype):
        return self.xp.zeros(shape, dtype=dtype)

    def contiguous(self, a):
        """``a`` as a C-contiguous array of the same shape (a copy only when it is not; inputs are
        never written). Not ``ascontiguousarray``, which turns a 0-d array into a 1-d one."""
        return None if a is None else self.xp.asarray(a, order="C")

    def matmul(self, a, b):
        """``a @ b`` (batched over leading axes, broadcasting): cuBLAS on a GPU."""
        return self.xp.matmul(a, b)

    def launch(self, module: Module, kernel: str, grid, block, args, shared_mem: int) -> None:
        raise NotImplementedError

    def check_args(self, module: Module, kernel: str, args) -> list:
        """The launch-argument rule of the module docstring; returns the arguments as given."""
        for i, a in enumerate(args):
            if a is None or isinstance(a, np.generic):
                continue
            if isinstance(a, self.xp.ndarray) and type(a).__module__.split(".")[0] == self.xp.__name__:
                if not a.flags.c_contiguous:
                    raise KernelError(f"{kernel}: argument {i} is a non-contiguous array {a.shape} "
                                      f"(strides {a.strides}); kernels index C-contiguous memory")
                continue
            raise KernelError(f"{kernel}: argument {i} is {type(a).__name__} {a!r:.60}; pass an array of "
                              f"the device ({self.label}), None, or a NumPy scalar of the parameter's type")
        return args


def device_of(a) -> Device:
    """The device of array ``a``: the GPU it lives on (CuPy), or the emulator (NumPy)."""
    if is_cupy(a):
        from ._gpu import cuda_device

        return cuda_device(a.device.id)
    from ._emu import emulator

    return emulator()
