"""The backend registry and the choice of backend for each call.

A backend is a package ``fastconv.backends.<name>`` with one module per op family
(``conv``, ``pool``, ``linear``, ``activation``, ``loss``, ``norm``, ``dropout``); every backend uses
the same function names and signatures in those modules. Backends are imported lazily, on first
use, so ``import fastconv`` compiles nothing and imports neither CuPy nor Numba. The GPU backend
``cupy`` and its emulator ``cupy-emu`` share one package (the adapters run the same code on CuPy
arrays and, through the emulator, on NumPy arrays); each has its own probe module, whose import
fails, with the reason, where that backend cannot run.

Which dtypes each backend takes, per op family, is declared here (:attr:`BackendSpec.half`) and
checked here, when a call is dispatched: every backend takes float32 and float64; the GPU backends
take float16 (stored as float16, computed in float32) for conv, linear, pooling and activations.

Choosing: ``backend=`` on the call wins, then the innermost ``use_backend(...)`` context, then
``"auto"``. ``"auto"`` sends CuPy arrays to ``cupy`` and NumPy arrays to the first available CPU
backend in :data:`AUTO_ORDER` that implements the op. A backend the user *named* is never replaced
by another: if it is missing, the error says why.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import importlib
from dataclasses import dataclass

import numpy as np

from ._checks import is_cupy
from ._params import _NotPlain, _plain, kept


class BackendUnavailableError(RuntimeError):
    """A known backend could not be loaded here; the message carries the original reason."""


#: The op families: one module each in every backend package.
FAMILIES = ("conv", "pool", "linear", "activation", "loss", "norm", "dropout")

#: The dtypes every backend takes, and those of the op families a backend lists in ``half``.
FLOAT_DTYPES: tuple[str, ...] = ("float32", "float64")
HALF_DTYPES: tuple[str, ...] = ("float16", "float32", "float64")


@dataclass(frozen=True)
class BackendSpec:
    name: str
    package: str  # where the family modules live
    device: str  # "cpu" or "gpu": the arrays it takes are NumPy's or CuPy's
    summary: str
    probe: str | None = None  # the module whose import checks it can run here (default: package)
    half: tuple[str, ...] = ()  # the op families for which it also takes float16
    emulated: bool = False  # runs GPU code on the CPU to verify it: benchmarks leave it out unless named

    def dtypes(self, family: str) -> tuple[str, ...]:
        """The float dtypes this backend takes for ``family``'s ops."""
        return HALF_DTYPES if family in self.half else FLOAT_DTYPES


_GPU_HALF = ("conv", "linear", "pool", "activation")

#: Every backend fastconv knows, in one visible place. Adding a backend means adding a line here.
REGISTRY: dict[str, BackendSpec] = {
    spec.name: spec
    for spec in (
        BackendSpec("reference", "fastconv.backends.reference", "cpu",
                    "NumPy, written to be obviously correct: the oracle"),
        BackendSpec("cpp", "fastconv.backends.cpp", "cpu", "C++ (pybind11, OpenMP): packed AVX-512/AVX2 GEMM, im2col"),
        BackendSpec("cython", "fastconv.backends.cython", "cpu",
                    "Cython (typed memoryviews, prange): im2col + SciPy's BLAS"),
        BackendSpec("numba", "fastconv.backends.numba", "cpu", "Numba (@njit, parallel, cached): kernels in Python"),
        BackendSpec("cupy", "fastconv.backends.cupy", "gpu",
                    "CUDA kernels (fastconv/cuda/*.cu) through CuPy (NVRTC) on NVIDIA GPUs, cuBLAS for GEMM",
                    probe="fastconv.backends.cupy._gpu", half=_GPU_HALF),
        BackendSpec("cupy-emu", "fastconv.backends.cupy", "cpu",
                    "the cupy backend's CUDA kernels on the CPU emulator: verification, never chosen by auto",
                    probe="fastconv.backends.cupy._emu", half=_GPU_HALF, emulated=True),
    )
}

#: The float dtypes some backend takes: what validation lets through to dispatch.
ACCEPTED_DTYPES: tuple[str, ...] = tuple(
    d for d in HALF_DTYPES if any(d in spec.dtypes(f) for spec in REGISTRY.values() for f in FAMILIES))

#: The order in which ``"auto"`` tries CPU backends: fastest first, the reference last (the
#: emulator is never among them).
AUTO_ORDER: tuple[str, ...] = ("cpp", "cython", "numba", "reference")

_loaded: dict[str, object] = {}
_failed: dict[str, BaseException] = {}
_current: contextvars.ContextVar[str] = contextvars.ContextVar("fastconv_backend", default="auto")


def _check_name(name) -> str:
    if not isinstance(name, str):
        raise TypeError(f"backend must be a str, got {name!r}")
    if name != "auto" and name not in REGISTRY:
        raise ValueError(f"unknown backend {name!r}; known backends: {', '.join(REGISTRY)} (or 'auto')")
    return name


def _load(name: str):
    """Import a backend's package once; remember the failure (with its reason) if it fails."""
    if name in _loaded:
        return _loaded[name]
    if name not in _failed:
        spec = REGISTRY[name]
        try:
            if spec.probe:
                importlib.import_module(spec.probe)
            _loaded[name] = importlib.import_module(spec.package)
            return _loaded[name]
        except Exception as exc:  # an extension that fails to load raises more than ImportError
            _failed[name] = exc
    exc = _failed[name]
    raise BackendUnavailableError(
        f"backend {name!r} is not available: {type(exc).__name__}: {exc}") from exc


def backend_status() -> dict[str, str | None]:
    """``{name: None}`` for each usable backend, ``{name: reason}`` for each that failed to load."""
    status = {}
    for name in REGISTRY:
        try:
            _load(name)
            status[name] = None
        except BackendUnavailableError as exc:
            status[name] = str(exc)
    return status


def available_backends() -> list[str]:
    """Names of the backends that load on this machine, in registry order."""
    return [name for name, reason in backend_status().items() if reason is None]


@contextlib.contextmanager
def use_backend(name: str):
    """Run the enclosed calls on backend ``name`` (``"auto"`` restores the automatic choice).

    The backend is loaded on entry, so a missing one fails here, with its reason.
    """
    _check_name(name)
    if name != "auto":
        _load(name)
    token = _current.set(name)
    try:
        yield name
    finally:
        _current.reset(token)


def _function(name: str, family: str, func: str):
    """The function ``func`` of backend ``name``'s ``family`` module, or None if it has none."""
    package = _load(name)
    module_name = f"{package.__name__}.{family}"
    module = _modules.get(module_name)  # imported before: skip the import machinery
    if module is None:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:  # the family exists but something it needs is missing
                raise BackendUnavailableError(f"backend {name!r} cannot load {family} ops: {exc}") from exc
            return None
        _modules[module_name] = module
    return getattr(module, func, None)


#: family modules whose import has completed (not sys.modules: there a module another thread is
#: still importing is visible half-initialised, without the functions it is about to define)
_modules: dict[str, object] = {}


def implementers(family: str, func: str) -> list[str]:
    """The available backends that implement ``family.func``."""
    return [name for name in available_backends() if _function(name, family, func) is not None]


def _usable(name: str) -> bool:
    try:
        _load(name)
        return True
    except BackendUnavailableError:
        return False


def select(op: str, family: str, func: str, backend, *arrays) -> tuple[str, object]:
    """``(name, function)`` of the backend that runs ``family.func`` for this call.

    ``backend`` is the call's argument (None or ``"auto"`` defer to ``use_backend``). ``"auto"``
    sends CuPy arrays to ``cupy`` and NumPy arrays to the first usable backend in
    :data:`AUTO_ORDER` that implements the function. A named backend is used or fails loudly.
    """
    name = _check_name("auto" if backend is None else backend)
    if name == "auto":
        name = _current.get()
    # the common call, NumPy arrays, answered from the memo: its key holds everything the choice
    # below depends on (the name, the function, and each array's dtype, which the check tests)
    key = _memo_key(name, family, func, arrays)
    if key is not None:
        chosen = _chosen.get(key)
        if chosen is not None:
            return chosen
    on_gpu = False
    for a in arrays:
        if a is not None and is_cupy(a):
            on_gpu = True
            break
    if name == "auto":
        # the CPU backends in order, each tried only when the ones before it lack the function
        candidates = ["cupy"] if on_gpu else (n for n in AUTO_ORDER if _usable(n))
    else:
        device = REGISTRY[name].device
        if on_gpu != (device == "gpu"):
            where = "CuPy (GPU)" if on_gpu else "NumPy (CPU)"
            raise TypeError(f"{op}: backend {name!r} runs on the {device.upper()} but got {where} arrays")
        candidates = [name]
    first = None
    for candidate in candidates:
        first = first or candidate
        fn = _function(candidate, family, func)
        if fn is not None:
            check_dtypes(op, candidate, family, arrays)
            if key is not None:  # only choices that passed: an error is raised afresh every time
                _chosen[key] = candidate, fn
            return candidate, fn
    candidates = [first]
    raise NotImplementedError(f"{op}: backend {candidates[0]!r} does not implement {family}.{func}; "
                              f"backends that do: {', '.join(implementers(family, func)) or 'none'}")


#: select's memo: ``{(name, family, func, dtypes...): (backend, function)}``. The registry,
#: AUTO_ORDER and the loaded backends do not change in a running program; code that changes
#: them (tests with stand-in backends) calls :func:`forget` afterwards.
_chosen: dict = {}


def _memo_key(name, family, func, arrays):
    """select's memo key for a call on NumPy arrays (or None entries), else None: CuPy arrays
    and anything else take the full path (their device and type decide too)."""
    key = [name, family, func]
    for a in arrays:
        if a is None:
            key.append(None)
        elif type(a) is np.ndarray:
            key.append(a.dtype)
        else:
            return None
    return tuple(key)


def forget() -> None:
    """Drop every remembered choice: select's memo and the per-signature plans of the ops
    (:func:`planned`). Needed only after changing the registry, AUTO_ORDER or a backend at run time."""
    _chosen.clear()
    for plans in _PLANS:
        plans.clear()


@functools.cache
def _taken(name: str, family: str) -> frozenset:
    """The float dtypes (as np.dtype objects: cheap to test) backend ``name`` takes for ``family``."""
    return frozenset(np.dtype(d) for d in REGISTRY[name].dtypes(family))


def check_dtypes(op: str, name: str, family: str, arrays) -> None:
    """Every float array is of a dtype backend ``name`` takes for ``family`` (TypeError if not)."""
    taken = _taken(name, family)
    for a in arrays:
        if a is not None and a.dtype.kind == "f" and a.dtype not in taken:
            taken = REGISTRY[name].dtypes(family)
            others = [n for n, spec in REGISTRY.items() if a.dtype.name in spec.dtypes(family)]
            where = f"; {a.dtype} {family} ops run on: {', '.join(others)}" if others else ""
            raise TypeError(f"{op}: backend {name!r} takes {family} arrays of dtype {' or '.join(taken)}, "
                            f"got {a.dtype}{where}")


def lookup(op: str, family: str, func: str, backend, *arrays):
    """The function that runs ``family.func`` for this call (see :func:`select`)."""
    return select(op, family, func, backend, *arrays)[1]


# --------------------------------------------------------------------------------------------
# plans: an op's validation and dispatch, done once per call signature
# --------------------------------------------------------------------------------------------

#: every planned op's plans, for :func:`forget`
_PLANS: list[dict] = []

_ARRAY = object()  # tags an array's entry in a plan key: no user value can spell it


def planned(build):
    """``build(*args) -> plan``: the part of a public op that validates its arguments (raising
    ValueError/TypeError) and picks the backend function, returning a callable that runs the op
    on arrays of the same shapes and dtypes. The plan is remembered per call signature: each
    NumPy array as its (shape, dtype), each other argument as :func:`_params._plain` keys it, the
    ``use_backend`` context in force. A model repeats a handful of signatures, so its calls then
    cost a dict lookup instead of the validation and the dispatch (issue 21: per-call overhead).

    What validation reads is exactly what the key holds: array types, ranks, shapes and dtypes,
    never values, so a plan holds for every call of its signature. Errors are never kept (a bad
    call raises its full message every time); arguments ``_plain`` does not key (CuPy arrays,
    NumPy scalars, ...) run ``build`` on every call. A plan must not keep the arrays it was built
    from: it receives them again at each call.
    """
    plans: dict = {}
    _PLANS.append(plans)

    @functools.wraps(build)
    def plan(*args):
        key = [_current.get()]
        try:
            for a in args:
                kind = type(a)
                if kind is np.ndarray:
                    key.append((_ARRAY, a.shape, a.dtype))
                elif kind is int or kind is str or a is None:
                    key.append(a)
                else:
                    key.append(_plain(a))
        except _NotPlain:
            return build(*args)
        return kept(plans, tuple(key), build, *args)

    plan.plans = plans  # for tests
    return plan
