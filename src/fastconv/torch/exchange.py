"""Tensor <-> array exchange between PyTorch and fastconv, without copies where PyTorch allows.

CPU: ``tensor.detach().numpy()`` and ``torch.from_numpy(array)`` share memory, so a contiguous
float32/float64 CPU tensor reaches a fastconv kernel as a view of the same buffer, and the array a
kernel returns becomes the result tensor as is (fastconv's outputs are fresh C-contiguous arrays,
so the result never aliases an input; the C++ backend's large ones, and the channels_last copies
here, live in blocks kept from freed outputs, which a freed tensor gives back: no page faults for
each step's activations).

Non-contiguous tensors (a transposed view, ``channels_last`` memory format, a slice with steps)
are made contiguous here, *explicitly*: that is one copy, before fastconv sees the data. fastconv's
compiled kernels want C-contiguous NCHW, and copying once here keeps the rule "a backend never
makes a hidden copy" true. The arrays kernels return are NCHW-contiguous; the ops
(:mod:`fastconv.torch.ops`) turn 4-d results back to ``channels_last`` when the call's input was,
PyTorch's layout rule, with one copy out (:func:`in_channels_last`). A channels_last float CPU
tensor, the common case, is copied by the C++ backend's batched transpose (``transpose_batched``,
where it is built): PyTorch's ``contiguous()`` ran at 9-60 GB/s on a 2-core AMD EPYC Zen 5, and a
patched channels_last MobileNetV2 spent more of its training step in those copies than in its
convolutions; any other layout takes ``tensor.contiguous()``.

CUDA tensors travel over DLPack to CuPy arrays (again zero-copy) and run on fastconv's GPU
backend ``"cupy"``, on PyTorch's current stream of the tensors' device (CuPy is pointed at that
stream for the call), so fastconv's kernels are ordered with PyTorch's own work without a
synchronisation; results come back as tensors over DLPack. Where the GPU backend cannot run (no
CuPy), a CUDA tensor raises :class:`GpuBackendMissing` with the reason, instead of being copied to
the host behind the user's back. On CUDA, float16 tensors are taken too (fastconv's GPU kernels
store float16 and compute in float32).
"""

from __future__ import annotations

import contextlib
import weakref

import numpy as np
import torch

from .._checks import is_cupy
from .._dispatch import REGISTRY, BackendUnavailableError, backend_status
from .._threads import get_num_threads

try:
    from .. import _cpp
except ImportError:  # no C++ backend built: PyTorch's copies convert the memory format
    _cpp = None

#: the float dtypes fastconv's kernels take for the ops here (conv, linear, pooling), per device
#: type: the CPU backends', and the GPU backend's (float16 too), as the registry declares them
FLOAT_DTYPES = {
    "cpu": (torch.float32, torch.float64),
    "cuda": tuple(getattr(torch, d) for d in REGISTRY["cupy"].dtypes("conv")),
}


class GpuBackendMissing(BackendUnavailableError):
    """A CUDA tensor reached fastconv, whose GPU backend (``"cupy"``) cannot run here."""


def has_gpu_backend() -> bool:
    """True when fastconv's GPU backend loads here (CuPy and a CUDA device), so CUDA tensors run."""
    return backend_status()["cupy"] is None


def float_dtypes(t: torch.Tensor) -> tuple:
    """The float dtypes fastconv takes for a tensor on ``t``'s device."""
    return FLOAT_DTYPES["cuda" if t.device.type == "cuda" else "cpu"]


def check_dtype(op: str, name: str, t: torch.Tensor, allowed) -> None:
    """Raise a TypeError naming ``op`` unless ``t`` has one of the ``allowed`` dtypes.

    Called by the real kernels *and* the fake ones, so torch.compile fails at trace time with the
    same message an eager call gives.
    """
    if t.dtype not in allowed:
        names = " or ".join(str(d) for d in allowed)
        raise TypeError(f"{op}: expected {name} of dtype {names}, got {t.dtype}")


def check_device(op: str, tensors: dict[str, torch.Tensor | None]) -> str:
    """The one device type (``"cpu"`` or ``"cuda"``) of the given tensors, or a clear error."""
    device = None
    for t in tensors.values():  # the common case first: every tensor on the CPU
        if t is not None:
            device = t.device
            if device.type != "cpu":
                break
    else:
        return "cpu"
    devices = {name: t.device for name, t in tensors.items() if t is not None}
    kinds = {d.type for d in devices.values()}
    if len(kinds) > 1 or len(set(devices.values())) > 1:
        listed = ", ".join(f"{name} on {d}" for name, d in devices.items())
        raise ValueError(f"{op}: expected tensors on one device, got {listed}")
    kind = kinds.pop() if kinds else "cpu"
    if kind == "cuda" and not has_gpu_backend():
        raise GpuBackendMissing(
            f"{op}: got CUDA tensors, but fastconv's GPU backend cannot run here ({backend_status()['cupy']}). "
            f"Install CuPy (pip install 'fastconv[cuda]'), or move the model and inputs to the CPU.")
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
    if device != "cuda":
        return contiguous_array(t)
    if t.requires_grad:
        t = t.detach()  # the kernels run below autograd; detach() is a view, not a copy
    import cupy  # reached only when has_gpu_backend() said CuPy works

    return cupy.from_dlpack(t.contiguous())


def _transposable(t: torch.Tensor) -> bool:
    """Whether the batched transpose converts ``t`` (a CPU tensor): float32/float64, 4-d,
    channels_last-contiguous (NHWC in memory)."""
    return (_cpp is not None and t.dtype in (torch.float32, torch.float64) and t.dim() == 4
            and t.is_contiguous(memory_format=torch.channels_last))


def contiguous_array(t: torch.Tensor) -> np.ndarray:
    """A CPU tensor as a C-contiguous NumPy array: a view of a contiguous one (``force=True``:
    detached, as the kernels run below autograd; on a float tensor a view), else one copy: a
    channels_last one through the batched transpose (NHWC -> NCHW), any other layout through
    ``tensor.contiguous()``."""
    if t.is_contiguous():
        return t.numpy(force=True)
    if not (type(t) in (torch.Tensor, torch.nn.Parameter) and _transposable(t)):
        return t.contiguous().numpy(force=True)
    N, C, H, W = t.shape
    nhwc = t.permute(0, 2, 3, 1).numpy(force=True)  # (N, H, W, C), contiguous: a view
    out = _cpp.empty((N, C, H, W), nhwc.dtype)  # a kept block (see csrc/bindings.cpp's empty)
    _cpp.transpose_batched(nhwc.reshape(N, H * W, C), out.reshape(N, C, H * W), get_num_threads())
    return out


def in_channels_last(y: torch.Tensor) -> torch.Tensor:
    """A 4-d result ``y`` in channels_last: a fresh tensor, one copy (NCHW -> NHWC through the
    batched transpose for a plain contiguous float CPU tensor, else ``contiguous(memory_format=...)``,
    as for the fake tensors of the ops' fake kernels)."""
    if not (type(y) is torch.Tensor and y.device.type == "cpu" and y.is_contiguous() and _cpp is not None
            and y.dtype in (torch.float32, torch.float64) and not y.requires_grad):
        return y.contiguous(memory_format=torch.channels_last)
    N, C, H, W = y.shape
    nchw = y.numpy()
    nhwc = _cpp.empty((N, H, W, C), nchw.dtype)  # a kept block, as the kernels' outputs
    _cpp.transpose_batched(nchw.reshape(N, C, H * W), nhwc.reshape(N, H * W, C), get_num_threads())
    # (N, C, H, W) in channels_last over that storage: a tensor of its own, not a view (a custom op
    # must not return one; autograd forbids modifying it in place then, as ReLU(inplace=True) does)
    return torch.empty(0, dtype=y.dtype).set_(torch.from_numpy(nhwc).untyped_storage(), 0, (N, C, H, W),
                                              (H * W * C, 1, W * C, C))


def held_array(held: dict, t: torch.Tensor):
    """The NumPy view of a contiguous CPU tensor that lives across calls (a parameter, batch
    norm's running statistics), made once and kept in ``held``: ``t.numpy()`` costs about 2 us, a
    tiny layer's whole kernel (issue 21: per-call overhead), the look-up a third of that.

    ``held`` (``id(t) -> (weakref to t, t.data_ptr(), view)``) belongs to one call signature (the
    direct path's: shapes, dtypes, contiguity checked by its key), so a kept view has t's shape
    and dtype; it is t's memory while t still points there (a new ``t.data`` gives a new pointer,
    and a new view). An entry leaves with its tensor.
    """
    key = id(t)
    kept = held.get(key)
    if kept is not None and kept[0]() is t and kept[1] == t.data_ptr():
        return kept[2]
    a = t.numpy(force=True)
    # t's death drops the entry (before its id can be reused); the view keeps only t's memory alive
    held[key] = (weakref.ref(t, lambda _, key=key: held.pop(key, None)), t.data_ptr(), a)
    return a


def from_array(a) -> torch.Tensor:
    """A NumPy or CuPy array as a tensor sharing its memory (``torch.from_numpy`` / DLPack)."""
    if is_cupy(a):
        return torch.from_dlpack(a)
    return torch.from_numpy(a)


def on_stream(device: str, tensor: torch.Tensor):
    """The context fastconv's kernels run in: for CUDA tensors, CuPy's current device and stream
    set to the tensor's device and PyTorch's current stream there, so the kernels queue behind
    PyTorch's work on that stream instead of racing it (and DLPack needs no synchronisation)."""
    if device != "cuda":
        return contextlib.nullcontext()
    import cupy

    index = tensor.device.index if tensor.device.index is not None else torch.cuda.current_device()
    stack = contextlib.ExitStack()
    stack.enter_context(cupy.cuda.Device(index))
    stack.enter_context(cupy.cuda.ExternalStream(torch.cuda.current_stream(index).cuda_stream, index))
    return stack
