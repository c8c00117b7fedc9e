"""Convolution algorithms chosen by measurement: the C++ backend's autotune.

Off by default: each pass of a conv then runs the algorithm the C++ heuristics choose (conv.cpp's
lists, measured on Intel AVX-512 and AMD AVX2 machines). With ``fastconv.set_autotune(True)`` or
``FASTCONV_AUTOTUNE=1``, the first call of a layer shape times every algorithm that applies to it
(``fastconv._cpp.conv2d_algorithms``: each Winograd tile, ``"winograd2"``, ``"winograd3"`` and
``"winograd4"``, where the float32 conv precision allows it (``fastconv.precision``), the flat GEMM,
col2im, the dot, flat and packed wgrads; and im2col + SciPy's BLAS through its ``cython_blas``
pointers, the Cython backend's algorithm, where that backend is built) and keeps the fastest, in
memory and on disk, as FFTW keeps its wisdom. The winners are keyed by CPU model, kernel set,
thread count, fastconv version, float32 conv precision (it decides which tiles compete), pass,
dtype and shape, in ``$FASTCONV_CACHE_DIR/autotune.json`` (default ``~/.cache/fastconv``). A file
that cannot be read, or that another format wrote, is ignored with a warning (and replaced at the
next save); an entry naming an algorithm that no longer applies, or that this version no longer
offers (``"winograd"``, the heuristics' tile, which files of the versions before the tiles
competed hold), is timed again and replaced.

Each algorithm is bit-identical for any thread count; which one wins may differ between machines
and thread counts, so results with autotune on can differ from those with it off in the last bits
(within the tolerances every algorithm is verified to).
"""

from __future__ import annotations

import functools
import json
import os
import platform
import tempfile
import threading
import time
import warnings

ENV = "FASTCONV_AUTOTUNE"
FORMAT = 1  # the file's layout; a file of another is ignored
IM2COL = "im2col-blas"  # the Cython backend's im2col + SciPy BLAS, a candidate beside cpp's own
# After one untimed warm-up run, each candidate runs at least this often and this long, and its
# fastest run decides: OpenBLAS's threads spin for ~100 ms after im2col + BLAS has run and slow the
# calls that follow (1.3-1.6x measured), so a candidate timed right after it needs runs past that.
_MIN_RUNS = 3
_MIN_SECONDS = 0.2

_lock = threading.Lock()
_enabled = os.environ.get(ENV, "").strip().lower() in ("1", "true", "yes", "on")
_wisdom: dict[str, str] | None = None  # key -> algorithm; None until the file is read


def set_autotune(enabled: bool) -> None:
    """Choose conv algorithms by timing them (the first call of each shape), or by the heuristics."""
    global _enabled
    if not isinstance(enabled, bool):
        raise TypeError(f"set_autotune: enabled must be a bool, got {type(enabled).__name__}")
    _enabled = enabled


def get_autotune() -> bool:
    return _enabled


def cache_path() -> str:
    """Where the winners are kept: ``$FASTCONV_CACHE_DIR/autotune.json``."""
    root = os.environ.get("FASTCONV_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "fastconv")
    return os.path.join(root, "autotune.json")


def forget() -> None:
    """Drop the winners held in memory (the file stays): the next call reads it again."""
    global _wisdom
    with _lock:
        _wisdom = None


@functools.lru_cache(maxsize=None)
def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _read_file(path: str) -> dict[str, str]:
    """The winners in the file; {} (with a warning) for a file that is corrupt or of another format."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:  # ValueError: not JSON, or not UTF-8
        warnings.warn(f"fastconv autotune: ignoring {path}: cannot read it ({exc})", RuntimeWarning, stacklevel=4)
        return {}
    entries = data.get("entries") if isinstance(data, dict) else None
    if (not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(entries, dict)
            or not all(isinstance(k, str) and isinstance(v, str) for k, v in entries.items())):
        warnings.warn(f"fastconv autotune: ignoring {path}: not a format-{FORMAT} autotune file",
                      RuntimeWarning, stacklevel=4)
        return {}
    return entries


def _save(key: str, algo: str) -> None:
    """Adds one winner to the file: read (another process may have added some), merge, replace
    atomically. A cache that cannot be written costs the timing again next time, nothing else."""
    path = cache_path()
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a bad file was reported when it was first read
            entries = _read_file(path)
        entries[key] = algo
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".autotune-", suffix=".json")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump({"format": FORMAT, "entries": entries}, f, indent=0, sort_keys=True)
        os.replace(tmp, path)
    except OSError as exc:
        warnings.warn(f"fastconv autotune: cannot write {path} ({exc})", RuntimeWarning, stacklevel=4)


def _key(pass_name: str, p, dtype, threads: int) -> str:
    from . import __version__
    from . import _cpp
    from .precision import get_float32_conv_precision

    shape = (p.N, p.C_in, p.H, p.W, p.C_out, p.KH, p.KW, p.stride_h, p.stride_w, p.pad_t, p.pad_b, p.pad_l,
             p.pad_r, p.dil_h, p.dil_w, p.groups)
    # the precision last: the fields before keep the places they had (pass_name is field 4)
    return "|".join([_cpu_model(), _cpp.gemm_isa(), f"threads={threads}", f"fastconv={__version__}", pass_name,
                     str(dtype), "x".join(map(str, shape)), f"precision={get_float32_conv_precision()}"])


def _time(run, algo):
    """The result of ``run(algo)`` and the fastest of its timed runs, after an untimed one."""
    result = run(algo)
    best, runs, start = float("inf"), 0, time.perf_counter()
    while runs < _MIN_RUNS or time.perf_counter() - start < _MIN_SECONDS:
        t0 = time.perf_counter()
        result = run(algo)
        best, runs = min(best, time.perf_counter() - t0), runs + 1
    return result, best


def tuned(pass_name: str, p, dtype, candidates, threads: int, run):
    """``run(algo)`` with the algorithm autotune picks for this pass and shape: "auto" (the
    heuristics) when autotune is off or only one candidate applies, else the cached winner, or the
    fastest of ``candidates()`` timed now (whose result is returned)."""
    if not _enabled:
        return run("auto")
    global _wisdom
    key = _key(pass_name, p, dtype, threads)
    with _lock:
        if _wisdom is None:
            _wisdom = _read_file(cache_path())
        algo = _wisdom.get(key)
    names = candidates()
    if algo in names:
        return run(algo)
    if len(names) == 1:
        return run(names[0])
    timed = {name: _time(run, name) for name in names}
    algo = min(timed, key=lambda name: timed[name][1])
    with _lock:
        _wisdom[key] = algo
        _save(key, algo)
    return timed[algo][0]
