"""Tensor <-> array exchange between PyTorch and fastconv, without copies where PyTorch allows.

CPU: ``tensor.detach().numpy()`` and ``torch.from_numpy(array)`` share memory, so a contiguous
float32/float64 CPU tensor reaches a fastconv kernel as a view of the same buffer, and the array a
kernel returns becomes the result tensor as is (fastconv's outputs are fresh C-contiguous arrays,
so the result never aliases an input).

Non-contiguous tensors (a transposed view, ``channels_last`` memory format, a slice with steps)
are made contiguous here, *explicitly*, with ``tensor.contiguous()``: that is one copy, made by
PyTorch, before fastconv sees the data. fastconv's compiled kernels want C-contiguous NCHW, and
copying once here keeps the rule "a backend never makes a hidden copy" true. Results are always
contiguous NCHW, also for a ``channels_last`` input.

CUDA tensors would travel over DLPack to CuPy arrays (again zero-copy) and run on fastconv's GPU
backend ``"cupy"``. That backend does not exist yet: a CUDA tensor raises :class:`GpuBackendMissing`
saying so, instead of being copied to the host behind the user's back.
"""

from __future__ import annotations

import torch

from .._dispatch import REGISTRY, BackendUnavailableError

#: the dtypes fastconv's kernels take; anything else is a TypeError naming the op and the tensor
FLOAT_DTYPES = (torch.float32, torch.float64)


class GpuBackendMissing(BackendUnavailableError):
    """A CUDA tensor reached fastconv, which has no GPU backend (``"cupy"``) in this build."""


def has_gpu_backend() -> bool:
    """True when fastconv knows a GPU backend that CUDA tensors can be routed to."""
    return "cupy" in REGISTRY


def check_dtype(op: str, name: str, t: torch.Tensor, allowed=FLOAT_DTYPES) -> None:
    """Raise a TypeError naming ``op`` unless ``t`` has one of the ``allowed`` dtypes.

    Called by the real kernels *and* the fake ones, so torch.compile fails at trace time with the
    same message an eager call gives.
    """
    if t.dtype not in allowed:
        names = " or ".join(str(d) for d in allowed)
        raise TypeError(f"{op}: expected {name} of dtype {names}, got {t.dtype}")


def check_device(op: str, tensors: dict[str, torch.Tensor | None]) -> str:
    """The one device type (``"cpu"`` or ``"cuda"``) of the given tensors, or a clear error."""
    devices = {name: t.device for name, t in tensors.items() if t is not None}
    kinds = {d.type for d in devices.values()}
    if len(kinds) > 1 or len(set(devices.values())) > 1:
        listed = ", ".join(f"{name} on {d}" for name, d in devices.items())
        raise ValueError(f"{op}: expected tensors on one device, got {listed}")
    kind = kinds.pop() if kinds else "cpu"
    if kind == "cuda" and not has_gpu_backend():
        raise GpuBackendMissing(
            f"{op}: got CUDA tensors, but fastconv has no GPU backend yet (backend 'cupy' is not in "
            f"this build; known backends: {', '.join(REGISTRY)}). Move the model and inputs to the "
            f"CPU, or use torch.nn for CUDA tensors.")
    if kind not in ("cpu", "cuda"):
        raise ValueError(f"{op}: fastconv runs on CPU tensors (and CUDA tensors through its GPU "
                         f"backend); got a tensor on {kind!r}")
    return kind


def to_array(t: torch.Tensor | None, *, device: str = "cpu"):
    """``t`` as a NumPy array (CPU) or CuPy array (CUDA) sharing its memory; None stays None.

    A non-contiguous tensor is made contiguous first: that explicit copy is the only one.
    """
    if t is None:
        return None
    t = t.detach()  # the kernels run below autograd; detach() is a view, not a copy
    if not t.is_contiguous():
        t = t.contiguous()
    if device == "cuda":  # pragma: no cover - needs a GPU backend this build does not have
        import cupy  # only reached with a GPU backend registered

        return cupy.from_dlpack(t)
    return t.numpy()


def from_array(a) -> torch.Tensor:
    """A NumPy or CuPy array as a tensor sharing its memory (``torch.from_numpy`` / DLPack)."""
    if type(a).__module__.split(".")[0] == "cupy":  # pragma: no cover - GPU backend only
        return torch.from_dlpack(a)
    return torch.from_numpy(a)
