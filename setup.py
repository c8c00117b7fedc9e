"""Build script: package metadata lives in pyproject.toml; compiled extensions are declared here.

fastconv._cpp (the C++ backend, csrc/) is built portably: no -march=native. The GEMM micro-kernels
live in one translation unit per instruction set, each compiled with its own flags (ISA_FLAGS) and
chosen at run time by CPU detection (csrc/gemm.cpp); other hot loops use GCC target_clones. The
wheel therefore runs on any x86-64 CPU and uses AVX2/FMA or AVX-512 where the CPU has them.
"""

from pybind11.setup_helpers import ParallelCompile, Pybind11Extension, build_ext
from setuptools import setup

# extra flags for the sources whose names end so (gcc/clang); the rest is baseline x86-64
ISA_FLAGS = {
    "_avx512.cpp": ["-mavx512f", "-mavx2", "-mfma"],
    "_avx2.cpp": ["-mavx2", "-mfma"],
}

ParallelCompile("FASTCONV_BUILD_JOBS", default=0).install()  # all cores; the env var caps it


class BuildExt(build_ext):
    """pybind11's build_ext, adding ISA_FLAGS per source file (setuptools has only per-extension flags)."""

    def build_extensions(self):
        if self.compiler.compiler_type == "unix":
            compile_one = self.compiler._compile

            def _compile(obj, src, ext, cc_args, extra_postargs, pp_opts):
                extra = [f for suffix, flags in ISA_FLAGS.items() if src.endswith(suffix) for f in flags]
                compile_one(obj, src, ext, cc_args, list(extra_postargs) + extra, pp_opts)

            self.compiler._compile = _compile
        super().build_extensions()


cpp = Pybind11Extension(
    "fastconv._cpp",
    sources=["csrc/bindings.cpp", "csrc/conv.cpp", "csrc/conv_chan_wgrad.cpp", "csrc/conv_col2im.cpp", "csrc/conv_depthwise.cpp",
             "csrc/conv_dot_wgrad.cpp", "csrc/conv_flat.cpp", "csrc/conv_gemm_wgrad.cpp", "csrc/conv_phases.cpp", "csrc/conv_subpixel.cpp",
             "csrc/gemm.cpp", "csrc/gemm_avx2.cpp", "csrc/gemm_avx512.cpp", "csrc/linear.cpp", "csrc/pool.cpp",
             "csrc/activation.cpp", "csrc/bindings_ops.cpp", "csrc/dropout.cpp", "csrc/loss.cpp", "csrc/norm.cpp",
             "csrc/layout.cpp", "csrc/winograd.cpp", "csrc/workspace.cpp"],
    include_dirs=["csrc"],
    depends=["csrc/common.h", "csrc/conv.h", "csrc/conv_impl.h", "csrc/gemm.h", "csrc/gemm_kernel.h", "csrc/linear.h",
             "csrc/pool.h", "csrc/pool_max_vec.h", "csrc/dw_vec.h", "csrc/dw_lanes.h", "csrc/ukernel.h",
             "csrc/activation.h", "csrc/bind_util.h", "csrc/dropout.h", "csrc/loss.h", "csrc/norm.h", "csrc/winograd.h",
             "csrc/lanes.h", "csrc/layout.h"],
    cxx_std=17,
    extra_compile_args=["-O3", "-fopenmp"],
    extra_link_args=["-fopenmp"],
)


# The Cython backend (src/fastconv/backends/cython/*.pyx): one extension module per .pyx, OpenMP for
# prange, no -march=native either. Bounds and wraparound checks are off: the kernels index only
# within the sizes the Python front has validated. -fno-tree-loop-distribute-patterns keeps GCC
# from turning the kernels' few-element copy and zero loops (im2col's runs) into memcpy/memset
# calls, which cost more than such loops.
from pathlib import Path  # noqa: E402

from Cython.Build import cythonize  # noqa: E402
from setuptools import Extension  # noqa: E402

CYTHON_DIR = Path("src/fastconv/backends/cython")


def cython_extensions():
    return cythonize(
        # depends: an sdist carries the .pyx/.pxd sources, so building from it compiles them too
        [Extension(f"fastconv.backends.cython.{pyx.stem}", [pyx.as_posix()],
                   depends=[pyx.as_posix(), *(pxd.as_posix() for pxd in sorted(CYTHON_DIR.glob("*.pxd")))],
                   extra_compile_args=["-O3", "-fopenmp", "-fno-tree-loop-distribute-patterns"],
                   extra_link_args=["-fopenmp"])
         for pyx in sorted(CYTHON_DIR.glob("*.pyx"))],
        include_path=["src"],
        compiler_directives={"language_level": 3, "boundscheck": False, "wraparound": False, "cdivision": True,
                             "initializedcheck": False},
    )


# FASTCONV_CPU_EXTENSIONS picks the CPU backends' extensions to compile: "cpp,cython" (the default),
# one of them, or "0" for none. `make gpu-check` builds none on a GPU machine, where only the GPU
# backend and the reference are timed and every minute of the machine counts (the package still
# works: those backends report as unavailable, with the reason); `make test-cpp-asan` builds the C++
# backend alone, with AddressSanitizer and UBSan, into build/asan.
import os  # noqa: E402

chosen = os.environ.get("FASTCONV_CPU_EXTENSIONS", "cpp,cython")
chosen = set() if chosen.strip() in ("0", "") else {name.strip() for name in chosen.split(",")}
if chosen - {"cpp", "cython"}:
    raise SystemExit(f"FASTCONV_CPU_EXTENSIONS: expected cpp, cython or 0, got {sorted(chosen - {'cpp', 'cython'})}")
setup(ext_modules=([cpp] if "cpp" in chosen else []) + (cython_extensions() if "cython" in chosen else []),
      cmdclass={"build_ext": BuildExt})
