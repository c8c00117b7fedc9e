"""The emulator: the GPU backend's CUDA kernels compiled as host C++ and run on the CPU.

This module is the probe of the ``cupy-emu`` backend (importing it checks that a C++ compiler
builds the emulator runtime) and the device the adapters get for NumPy arrays. Each kernel file
``fastconv/cuda/<family>.cu`` becomes a shared library at its first launch: the file, then a
table of its name expressions (``emu/registry.h``), linked with the scheduler ``emu/runtime.cpp``;
every thread block runs as cooperative fibers on the calling thread (see ``emu/cuda_emu.h`` for
the semantics kept from the GPU). Libraries are cached under ``$FASTCONV_CACHE_DIR`` (default
``~/.cache/fastconv``), keyed by a hash of the sources, the flags and the compiler's version.

``FASTCONV_EMU_SANITIZE=1`` builds with AddressSanitizer and UndefinedBehaviorSanitizer: every
report becomes the launch's :class:`EmulatorError`, and array arguments are staged in exactly
sized heap blocks so that a read past a view is an overflow. The ASan runtime must then be loaded
first (``make test`` does this)::

    LD_PRELOAD=$(gcc -print-file-name=libasan.so) ASAN_OPTIONS=detect_leaks=0:halt_on_error=0 \\
        FASTCONV_EMU_SANITIZE=1 python ...
"""

from __future__ import annotations

import contextlib
import contextvars
import ctypes
import functools
import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import numpy as np

from ._device import CUDA_DIR, Device, KernelError, Module, fingerprint

SANITIZE = os.environ.get("FASTCONV_EMU_SANITIZE", "") not in ("", "0")

_COMMON_FLAGS = ["-std=c++17", "-fPIC", "-DFC_EMULATOR", f"-I{CUDA_DIR}"]
_OPTIMISED = ["-O2"]
_SANITIZED = ["-O1", "-g", "-fno-omit-frame-pointer", "-fsanitize=address,undefined", "-fno-sanitize=vptr",
              "-fsanitize-recover=address", "-DFC_EMU_SANITIZE"]
# UBSan's handlers are the runtime's own (runtime.cpp), so only ASan's library is linked
_LINK = ["-shared"] + (["-fsanitize=address"] if SANITIZE else [])


class EmulatorError(KernelError):
    """A kernel failed under the emulator: a barrier or warp collective that not every thread
    reached, a deadlock, arguments that do not match the kernel, or a sanitizer report."""


def _compiler() -> str:
    cxx = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")
    if not cxx:
        raise ImportError("the GPU emulator needs a C++ compiler (g++ or clang++; or set CXX)")
    return cxx


def _asan_loaded() -> bool:
    try:
        with open("/proc/self/maps") as maps:
            return "libasan" in maps.read()
    except OSError:
        return False


def _cache_dir() -> Path:
    root = os.environ.get("FASTCONV_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "fastconv")
    return Path(root) / "emu"


class _Builder:
    """Compiles the runtime once and each kernel file on demand, into the cache."""

    def __init__(self):
        self.cxx = _compiler()
        version = subprocess.run([self.cxx, "--version"], capture_output=True, text=True, check=True).stdout
        self.flags = _COMMON_FLAGS + (_SANITIZED if SANITIZE else _OPTIMISED)
        self.key = hashlib.sha256("\n".join([version, *self.flags, *_LINK]).encode()).hexdigest()[:12]
        self.dir = _cache_dir() / (("asan-" if SANITIZE else "") + self.key)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.lock = threading.Lock()
        self.runtime = self._build("runtime", CUDA_DIR / "emu" / "runtime.cpp", ["-c"], ".o",
                                   fingerprint(sorted((CUDA_DIR / "emu").glob("*"))))

    def _build(self, name, source: Path, extra, suffix, fingerprint, inputs=()) -> Path:
        target = self.dir / f"{name}-{fingerprint}{suffix}"
        if target.exists():
            return target
        with self.lock, tempfile.TemporaryDirectory(dir=self.dir) as tmp:
            out = Path(tmp) / target.name
            cmd = [self.cxx, *self.flags, *extra, str(source), *map(str, inputs), "-o", str(out)]
            run = subprocess.run(cmd, capture_output=True, text=True)
            if run.returncode:
                raise EmulatorError(f"building {source.name} for the emulator failed:\n{' '.join(cmd)}\n"
                                    f"{run.stderr[-6000:]}")
            os.replace(out, target)  # atomic: another process may be building the same file
        return target

    def library(self, module: Module) -> Path:
        """The shared library of ``module``: its .cu file plus the table of its kernels."""
        table = "\n".join([f'#include "{module.source}"', '#include "emu/registry.h"',
                           "FC_EMU_TABLE(" + ",\n    ".join(f"FC_EMU_KERNEL({k})" for k in module.kernels) + ")"])
        fingerprint = hashlib.sha256((module.fingerprint() + table).encode()).hexdigest()[:16]
        unit = self.dir / f"{module.family}-{fingerprint}.cpp"
        if not unit.exists():
            tmp = unit.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(table + "\n")
            os.replace(tmp, unit)
        return self._build(module.family, unit, _LINK, ".so", fingerprint, [self.runtime])


class _Library:
    """A loaded emulator module: its kernel table, and launches through ``fc_emu_launch``."""

    def __init__(self, path: Path, module: Module):
        self.lib = lib = ctypes.CDLL(str(path))
        lib.fc_emu_kernel_name.restype = ctypes.c_char_p
        lib.fc_emu_launch.argtypes = [ctypes.c_int, ctypes.POINTER(ctypes.c_uint), ctypes.POINTER(ctypes.c_uint),
                                      ctypes.c_size_t, ctypes.c_int, ctypes.POINTER(ctypes.c_void_p),
                                      ctypes.POINTER(ctypes.c_char_p), ctypes.POINTER(ctypes.c_size_t),
                                      ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        self.index = {lib.fc_emu_kernel_name(i).decode(): i for i in range(lib.fc_emu_kernel_count())}
        missing = set(module.kernels) - set(self.index)
        if missing:  # the table is generated from module.kernels: this would be a build bug
            raise EmulatorError(f"{module.family}.cu: the emulator library lacks {sorted(missing)}")
        self.sanitized = bool(lib.fc_emu_sanitized())


def _code(dtype) -> str:
    """An array or scalar's type as the kernel table spells it: NumPy's kind and item size."""
    dtype = np.dtype(dtype)
    return f"{dtype.kind}{dtype.itemsize}"


class Emulator(Device):
    """The device of NumPy arrays: kernels run on the CPU, one block after another."""

    xp = np
    label = "the CPU emulator"
    multiprocessors = 4  # small: grid-stride loops then take several turns even on small inputs

    def __init__(self):
        if SANITIZE and not _asan_loaded():
            raise ImportError(
                "FASTCONV_EMU_SANITIZE=1 needs the AddressSanitizer runtime loaded first: run with "
                "LD_PRELOAD=$(gcc -print-file-name=libasan.so) ASAN_OPTIONS=detect_leaks=0:halt_on_error=0")
        if SANITIZE and "halt_on_error=0" not in os.environ.get("ASAN_OPTIONS", ""):
            raise ImportError("FASTCONV_EMU_SANITIZE=1 needs ASAN_OPTIONS=detect_leaks=0:halt_on_error=0, so that "
                              "a report fails the launch instead of ending the process")
        self.builder = _Builder()
        self.libraries: dict[Module, _Library] = {}
        self.lock = threading.Lock()

    def library(self, module: Module) -> _Library:
        with self.lock:
            if module not in self.libraries:
                self.libraries[module] = _Library(self.builder.library(module), module)
            return self.libraries[module]

    def matmul(self, a, b):
        """NumPy's matmul; float16 is multiplied in float32 and rounded once, as cuBLAS does."""
        if a.dtype == np.float16:
            return np.matmul(a.astype(np.float32), b.astype(np.float32)).astype(np.float16)
        return np.matmul(a, b)

    def launch(self, module: Module, kernel: str, grid, block, args, shared_mem: int) -> None:
        lib = self.library(module)
        self.check_args(module, kernel, args)
        n = len(args)
        values, codes, sizes, keep = [], [], [], []
        for a in args:
            if a is None:
                cell, code, size = ctypes.c_void_p(0), "p0", 0
            elif isinstance(a, np.ndarray):
                cell = ctypes.c_void_p(a.ctypes.data)
                code, size = ("*" if a.flags.writeable else "&") + _code(a.dtype), a.nbytes
            else:  # a NumPy scalar, by value
                cell = np.ctypeslib.as_ctypes_type(a.dtype)(a.item())
                code, size = _code(a.dtype), 0
            keep.append(cell)
            values.append(ctypes.cast(ctypes.pointer(cell), ctypes.c_void_p))
            codes.append(code.encode())
            sizes.append(size)
        _check_no_overlap(kernel, args)
        message = ctypes.create_string_buffer(8192)
        status = lib.lib.fc_emu_launch(
            lib.index[kernel], (ctypes.c_uint * 3)(*grid), (ctypes.c_uint * 3)(*block), shared_mem, n,
            (ctypes.c_void_p * n)(*values), (ctypes.c_char_p * n)(*codes), (ctypes.c_size_t * n)(*sizes),
            int(_descending.get()), message, len(message))
        if status:
            raise EmulatorError(f"cupy-emu: {message.value.decode(errors='replace')}")


def _check_no_overlap(kernel, args) -> None:
    """A kernel's output must not overlap any other argument: on a GPU the result would depend on
    the order the threads run in (and the sanitized emulator stages each array separately)."""
    arrays = [(i, a) for i, a in enumerate(args) if isinstance(a, np.ndarray) and a.nbytes]
    for i, a in arrays:
        if not a.flags.writeable:
            continue
        for j, b in arrays:
            if j != i and np.may_share_memory(a, b):
                raise EmulatorError(f"cupy-emu: {kernel}: argument {i} (written) overlaps argument {j}")


_descending: contextvars.ContextVar[bool] = contextvars.ContextVar("fastconv_emu_descending", default=False)


@contextlib.contextmanager
def descending_schedule():
    """Run the enclosed launches' threads, released threads and blocks from the last to the first.
    A kernel that reads what another thread wrote without a barrier in between (a race on a GPU)
    sees the write in one schedule and not in the other: the tests run both."""
    token = _descending.set(True)
    try:
        yield
    finally:
        _descending.reset(token)


@functools.lru_cache(maxsize=None)
def emulator() -> Emulator:
    return Emulator()


emulator()  # the probe: no compiler (or a sanitized build without ASan loaded) -> backend unavailable
