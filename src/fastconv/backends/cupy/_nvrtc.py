"""NVRTC for the kernel files, without a GPU: the options every file is compiled with, and the
compile check of CI (every declared name expression, for sm_80 and sm_90).

``cupy.cuda.nvrtc`` works without a device once the ``nvidia-cuda-nvrtc`` wheel is installed;
``RawModule`` (what the backend uses on a GPU) needs one.
"""

from __future__ import annotations

from ._device import CUDA_DIR, KernelError, Module

#: NVRTC options of every kernel file. The fingerprint define makes CuPy's on-disk kernel cache
#: (keyed by the source text and the options, not by included headers) miss when a header changes.
NVRTC_OPTIONS = ("-std=c++17", f"-I{CUDA_DIR}")

#: What CuPy's RawModule appends to them (cupy/cuda/compiler.py), the last of each option winning:
#: so float32 subnormals flush to zero on the GPU (the emulator keeps them; a result that small
#: is within every tolerance). The compile check passes them too, to compile what runs.
CUPY_APPENDS = ("--device-as-default-execution-space", "-ftz=true")


def nvrtc_options(module: Module) -> tuple[str, ...]:
    return (*NVRTC_OPTIONS, f"-DFC_FINGERPRINT={module.fingerprint()}")


def compile_check(modules, archs=("sm_80", "sm_90")) -> dict[tuple[str, str], int]:
    """Compile every name expression of ``modules`` with NVRTC for each architecture. Returns
    ``{(family, arch): cubin bytes}``; a kernel that does not compile raises :class:`KernelError`
    with NVRTC's log."""
    from cupy.cuda import nvrtc

    sizes = {}
    for module in modules:
        for arch in archs:
            prog = nvrtc.createProgram(module.source.read_text(), module.source.name, [], [])
            try:
                for kernel in module.kernels:
                    nvrtc.addNameExpression(prog, kernel)
                try:
                    nvrtc.compileProgram(prog, [*nvrtc_options(module), *CUPY_APPENDS, f"--gpu-architecture={arch}"])
                except nvrtc.NVRTCError as exc:
                    raise KernelError(f"{module.source.name} does not compile for {arch}: {exc}\n"
                                      f"{nvrtc.getProgramLog(prog)}") from exc
                for kernel in module.kernels:
                    nvrtc.getLoweredName(prog, kernel)  # raises if the expression named no kernel
                sizes[(module.family, arch)] = len(nvrtc.getCUBIN(prog))
            finally:
                nvrtc.destroyProgram(prog)
    return sizes
