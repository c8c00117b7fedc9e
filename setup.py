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
    sources=["csrc/bindings.cpp", "csrc/conv.cpp", "csrc/gemm.cpp", "csrc/gemm_avx2.cpp", "csrc/gemm_avx512.cpp",
             "csrc/linear.cpp", "csrc/pool.cpp",
             "csrc/activation.cpp", "csrc/bindings_ops.cpp", "csrc/dropout.cpp", "csrc/loss.cpp", "csrc/norm.cpp"],
    include_dirs=["csrc"],
    depends=["csrc/common.h", "csrc/conv.h", "csrc/gemm.h", "csrc/gemm_kernel.h", "csrc/linear.h", "csrc/pool.h",
             "csrc/ukernel.h",
             "csrc/activation.h", "csrc/bind_util.h", "csrc/dropout.h", "csrc/loss.h", "csrc/norm.h"],
    cxx_std=17,
    extra_compile_args=["-O3", "-fopenmp"],
    extra_link_args=["-fopenmp"],
)

setup(ext_modules=[cpp], cmdclass={"build_ext": BuildExt})
