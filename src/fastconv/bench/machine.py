"""What machine a benchmark ran on: CPU model and flags, threads, library versions, GPUs.

Everything here is read-only and tolerant: a field that cannot be found is None, never an error,
so ``fastconv info`` and the reports work on any machine.
"""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata

from .. import _threads
from .._dispatch import REGISTRY, backend_status

#: CPU flags that matter to these kernels, in the order reports list them.
SIMD_FLAGS = ("sse4_2", "avx", "fma", "avx2", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
              "avx512_bf16", "amx_tile", "neon", "asimd", "sve")

#: Distributions whose versions a report records (the first installed spelling of each).
PACKAGES = {
    "numpy": ("numpy",), "scipy": ("scipy",), "torch": ("torch",), "threadpoolctl": ("threadpoolctl",),
    "numba": ("numba",), "cython": ("Cython",), "pybind11": ("pybind11",),
    "cupy": ("cupy", "cupy-cuda12x", "cupy-cuda11x", "cupy-cuda13x"),
    "matplotlib": ("matplotlib",), "pytest-benchmark": ("pytest-benchmark",),
}


def cpu_info() -> dict:
    model, flags = None, []
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key in ("model name", "Hardware", "Model") and model is None:
                    model = value.strip()
                elif key in ("flags", "Features") and not flags:
                    flags = value.split()
    except OSError:  # not Linux
        pass
    return dict(model=model or platform.processor() or platform.machine(), machine=platform.machine(),
                logical_cores=os.cpu_count(), usable_cores=_threads._usable_cores(),
                simd=[f for f in SIMD_FLAGS if f in flags], flags=flags)


def versions() -> dict:
    found = {"python": platform.python_version()}
    for label, dists in PACKAGES.items():
        for dist in dists:
            try:
                found[label] = metadata.version(dist)
                break
            except metadata.PackageNotFoundError:
                continue
    from .. import __version__

    found["fastconv"] = __version__
    return found


def blas_info() -> list[dict] | str:
    """The thread pools threadpoolctl sees (BLAS, OpenMP), or why they cannot be listed."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "threadpoolctl is not installed: BLAS threads are neither listed nor capped"
    return [{k: pool.get(k) for k in ("user_api", "internal_api", "prefix", "version", "num_threads",
                                      "threading_layer", "architecture")}
            for pool in threadpool_info()]


def gpu_info(torch=None) -> list[dict]:
    """GPUs visible to PyTorch (CUDA) and to CuPy; empty without either."""
    gpus = []
    if torch is not None and torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            gpus.append(dict(via="torch", index=i, name=torch.cuda.get_device_name(i),
                             cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version()))
    try:
        import cupy

        for i in range(cupy.cuda.runtime.getDeviceCount()):
            name = cupy.cuda.runtime.getDeviceProperties(i)["name"]
            gpus.append(dict(via="cupy", index=i, name=name.decode() if isinstance(name, bytes) else name,
                             cuda_runtime=cupy.cuda.runtime.runtimeGetVersion()))
    except Exception:  # no CuPy, no driver or no device: there is simply no GPU to list
        pass
    return gpus


def gpu_ceilings(dtype: str = "float32") -> dict | None:
    """What CuPy's current GPU sustains, measured now (CUDA events, the best of 5 after a warm-up):
    ``gflops``, a large cuBLAS matrix product in ``dtype`` (TF32 off, CuPy's default), and ``gbps``,
    a device-to-device copy of 1 GiB counting the bytes read and written. The benchmark's GPU rows
    are held against the larger of FLOPs / gflops and bytes / gbps. None without CuPy or a GPU."""
    try:
        import cupy

        n = 8192 if dtype != "float64" else 4096
        a = cupy.ones((n, n), dtype=dtype)
        b = cupy.ones((n, n), dtype=dtype)
        src = cupy.ones(1 << 28, dtype=cupy.float32)  # 1 GiB
        dst = cupy.empty_like(src)

        def best_ms(fn):
            fn()
            times = []
            for _ in range(5):
                start, end = cupy.cuda.Event(), cupy.cuda.Event()
                start.record()
                fn()
                end.record()
                end.synchronize()
                times.append(cupy.cuda.get_elapsed_time(start, end))
            return min(times)

        gemm_ms = best_ms(lambda: cupy.matmul(a, b))
        copy_ms = best_ms(lambda: dst.__setitem__(Ellipsis, src))
        return dict(gflops=round(2 * n ** 3 / (gemm_ms * 1e-3) / 1e9, 1), gemm=f"{n}x{n}x{n} {dtype}",
                    gbps=round(2 * src.nbytes / (copy_ms * 1e-3) / 1e9, 1))
    except Exception:  # no CuPy, no driver, no device: nothing to measure against
        return None


def cpu_speed(seconds: float = 0.25) -> float | None:
    """GFLOP/s of the C++ backend's fp32 GEMM micro-kernel on one core now, its panels in L1: how
    fast this core runs at the moment. On a shared VM it moves up to 2x from minute to minute
    (another tenant on the same physical core), so a report records it before and after its run.
    None without the C++ backend."""
    try:
        from .. import _cpp
    except ImportError:
        return None
    return round(_cpp.kernel_gflops(seconds), 1)


def core_round_trip(seconds: float = 0.1) -> float | None:
    """Nanoseconds for two threads to hand a cache line to each other and back now, where the OS
    puts them. The two vCPUs of a shared VM sometimes sit on one die (Zen 5: ~80 ns) and sometimes
    on two (~390 ns, each with its own L3): work that shares data between the threads then runs
    slower (measured: a Winograd wgrad whose threads split every block ran 1.7x slower), so a report
    records this before and after its run. None without the C++ backend or a second usable core."""
    try:
        from .. import _cpp
    except ImportError:
        return None
    if _threads._usable_cores() < 2:
        return None
    return round(_cpp.core_round_trip_ns(seconds), 1)


def load_average() -> float | None:
    """The 1-minute load average: other processes on the machine make timings noisy."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):  # Windows
        return None


def machine_now(when: str) -> dict:
    """The state of the machine that a report records before and after its run (``when``: "before"
    or "after"): ``load_<when>``, ``cpu_gflops_<when>``, ``core_round_trip_ns_<when>``."""
    return {f"load_{when}": load_average(), f"cpu_gflops_{when}": cpu_speed(),
            f"core_round_trip_ns_{when}": core_round_trip()}


def malloc_settings() -> str:
    """glibc malloc's settings, which the worker processes inherit: ``GLIBC_TUNABLES`` where set.
    By default glibc hands large freed blocks back to the system and faults their pages in again
    at the next allocation: PyTorch's activations and gradients (and fastconv's outputs) pay that
    at every step (see the README's end-to-end section)."""
    return os.environ.get("GLIBC_TUNABLES") or "glibc's defaults"


def machine_info(torch=None) -> dict:
    """Everything a report records about the machine; ``torch`` adds its threads and GPUs."""
    threads = dict(fastconv=_threads.get_num_threads(), source=_threads.thread_source(),
                   torch=None if torch is None else torch.get_num_threads(), pools=blas_info())
    return dict(platform=platform.platform(), python=sys.version.split()[0], cpu=cpu_info(),
                malloc=malloc_settings(), threads=threads, versions=versions(), gpus=gpu_info(torch),
                backends={name: dict(device=REGISTRY[name].device, status=reason or "available")
                          for name, reason in backend_status().items()})


def format_info(info: dict) -> str:
    """``fastconv info``'s text."""
    lines = [f"fastconv {info['versions']['fastconv']} on {info['platform']}", "", "backends:"]
    for name, b in info["backends"].items():
        lines.append(f"  {name:<12} {b['device']:<4} {b['status']}  ({REGISTRY[name].summary})")
    cpu = info["cpu"]
    lines += ["", f"cpu:      {cpu['model']} ({cpu['machine']}), {cpu['usable_cores']} usable of "
                  f"{cpu['logical_cores']} logical cores",
              f"features: {' '.join(cpu['simd']) or 'none of ' + ' '.join(SIMD_FLAGS)}"]
    t = info["threads"]
    lines.append(f"threads:  fastconv {t['fastconv']} (from {t['source']}; set with "
                 f"fastconv.set_num_threads or {_threads.ENV})"
                 + ("" if t["torch"] is None else f", torch {t['torch']}"))
    if isinstance(t["pools"], str):
        lines.append(f"          {t['pools']}")
    for pool in t["pools"] if isinstance(t["pools"], list) else ():
        lines.append(f"          {pool['internal_api']} {pool['version'] or ''}".rstrip()
                     + f" ({pool['user_api']}, {pool['prefix']}): {pool['num_threads']} threads")
    lines += ["", "versions: " + ", ".join(f"{k} {v}" for k, v in info["versions"].items())]
    gpus = info["gpus"]
    lines.append("gpu:      " + ("; ".join(f"{g['name']} (via {g['via']})" for g in gpus) if gpus else "none found"))
    return "\n".join(lines)
