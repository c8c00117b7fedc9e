"""The GPU backend's kernels on a machine without a GPU: every declared name expression compiles
with NVRTC for sm_80 and sm_90 (the device code the emulator cannot check: inline PTX, NVRTC's
dialect), and the CUDA sources ship inside the package, in a wheel and in an editable install.

NVRTC comes from the ``nvidia-cuda-nvrtc`` wheel through ``cupy.cuda.nvrtc`` (no device needed).
Where they are missing the compile check skips, unless ``FASTCONV_REQUIRE_NVRTC`` is set, as
``make test`` sets it: in CI a kernel that does not compile must fail the run.
"""

import importlib
import os
import warnings
from importlib import resources
from pathlib import Path

import pytest

from fastconv._dispatch import FAMILIES

ROOT = Path(__file__).resolve().parent.parent


def _require_nvrtc():
    try:
        from cupy.cuda import nvrtc

        nvrtc.getVersion()
    except Exception as exc:  # CuPy missing, or its NVRTC library
        reason = f"NVRTC is not available ({type(exc).__name__}: {exc}); pip install cupy-cuda13x nvidia-cuda-nvrtc"
        if os.environ.get("FASTCONV_REQUIRE_NVRTC"):
            pytest.fail(reason)
        pytest.skip(reason)


def _kernels(family):
    return importlib.import_module(f"fastconv.backends.cupy.{family}").KERNELS


@pytest.mark.parametrize("family", FAMILIES)
def test_every_kernel_compiles_for_sm80_and_sm90(family):
    _require_nvrtc()
    from fastconv.backends.cupy._nvrtc import compile_check

    sizes = compile_check([_kernels(family)], archs=("sm_80", "sm_90"))
    assert set(sizes) == {(family, "sm_80"), (family, "sm_90")}
    assert all(size > 0 for size in sizes.values())


def test_a_kernel_that_does_not_compile_fails_the_check(tmp_path):
    _require_nvrtc()
    from fastconv.backends.cupy._device import KernelError, Module
    from fastconv.backends.cupy._nvrtc import compile_check

    (tmp_path / "broken.cu").write_text('#include "common.cuh"\n__global__ void k(float* y) { y[0] = undeclared; }\n')
    with pytest.raises(KernelError, match="broken.cu does not compile for sm_80"):
        compile_check([Module("broken", ("k",), directory=tmp_path)])


def _expected_sources(root: Path) -> list[Path]:
    return [root / f"{f}.cu" for f in FAMILIES] + [root / "common.cuh"] + [
        root / "emu" / n for n in ("cuda_emu.h", "registry.h", "runtime.cpp")]


def test_cuda_sources_are_in_the_installed_package():
    root = Path(str(resources.files("fastconv") / "cuda"))
    missing = [p for p in _expected_sources(root) if not p.is_file()]
    assert not missing, f"not in the installed package: {missing}"


def test_cuda_sources_go_into_a_wheel(tmp_path):
    """setuptools' build_py with the project's configuration copies what a wheel's package gets."""
    from setuptools.config.pyprojecttoml import apply_configuration
    from setuptools.dist import Distribution

    cwd = os.getcwd()
    os.chdir(ROOT)  # the configuration's paths (src/) are relative to the project
    try:
        dist = Distribution(dict(script_name="setup.py"))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # setuptools' notes on the configuration
            apply_configuration(dist, ROOT / "pyproject.toml")
            build = dist.get_command_obj("build_py")
            build.build_lib = str(tmp_path)
            dist.run_command("build_py")
    finally:
        os.chdir(cwd)
    missing = [p for p in _expected_sources(tmp_path / "fastconv" / "cuda") if not p.is_file()]
    assert not missing, f"a wheel would lack: {missing}"
