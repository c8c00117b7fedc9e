"""``patch(model)``: run a model's conv, batch norm, pooling and linear layers on fastconv, in place.

Decision: a patched module is the *same object* with its class changed to the fastconv
drop-in (``module.__class__ = fastconv.torch.Conv2d``, which subclasses ``torch.nn.Conv2d`` and
only overrides ``forward``). Nothing is copied and nothing is re-created, so

- the Parameters are the same objects: an optimizer built before ``patch`` keeps working, with its
  state (momentum buffers, Adam moments) intact, and ``state_dict`` keys do not change;
- hooks, ``training`` mode, device and dtype are kept, and references held elsewhere still point
  at the live module.

Only modules whose type is *exactly* one of :data:`fastconv.torch.modules.DROP_INS`' keys are
swapped: a user subclass may override ``forward``, so it is left alone (and reported). Modules
fastconv cannot serve as configured (``padding_mode`` other than ``'zeros'``, parameters or batch
norm running statistics of dtypes other than float32/float64, CUDA tensors while fastconv has no
GPU backend) are left alone and reported too.

Fusion (``fuse=True``, the default): a ``BatchNorm2d`` directly followed by a ``ReLU6`` or
``Hardtanh`` inside a ``torch.nn.Sequential`` (its exact type: a subclass may run its children
otherwise) becomes :class:`fastconv.torch.fused.BatchNorm2dHardtanh`, which clamps in the same
pass, and the activation a pass-through (``FusedReLU6`` / ``FusedHardtanh``, still subclasses of
the activation's class). In a plain Sequential the batch norm's output reaches the activation
alone, so the model computes exactly what it did. Left unfused: modules with hooks (a hook would
see the clamped output, or none), modules that appear more than once in the model, and
``inplace`` makes no difference (the fused op writes a new tensor, as the unfused batch norm does).
:func:`unpatch` turns swapped modules back into their ``torch.nn`` classes, fused ones included.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .._dispatch import _check_name
from .exchange import has_gpu_backend
from .fused import FUSED_ACTIVATIONS, BatchNorm2dHardtanh
from .modules import DROP_INS, unsupported_reason


@dataclass
class PatchReport:
    """What :func:`patch` did: ``swapped`` lists ``(name, torch.nn class name)``, ``skipped``
    lists ``(name, reason)`` for conv/batch norm/pool/linear modules left on PyTorch."""

    swapped: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    #: ``(batch norm name, activation name)`` pairs fused into one op
    fused: list[tuple[str, str]] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"fastconv.torch.patch: {len(self.swapped)} modules swapped, {len(self.skipped)} left on PyTorch"]
        lines += [f"  swapped {name or '<root>'} ({kind})" for name, kind in self.swapped]
        lines += [f"  skipped {name or '<root>'}: {reason}" for name, reason in self.skipped]
        lines += [f"  fused {bn} + {act}" for bn, act in self.fused]
        return "\n".join(lines)


def _skip_reason(module: torch.nn.Module) -> str | None:
    reason = unsupported_reason(module)
    if reason is None:
        # buffers too: an affine=False batch norm has only its running statistics
        tensors = [("parameter", name, p) for name, p in module.named_parameters(recurse=False)]
        tensors += [("buffer", name, b) for name, b in module.named_buffers(recurse=False)]
        for what, name, p in tensors:
            if p.device.type == "cuda" and not has_gpu_backend():
                return f"{what} {name!r} is on {p.device}, and fastconv's GPU backend cannot run here"
            if p.device.type not in ("cpu", "cuda"):
                return f"{what} {name!r} is on {p.device}: fastconv runs on the CPU and on CUDA GPUs"
    return reason


def _hooked(module: torch.nn.Module) -> bool:
    return any(getattr(module, name, None) for name in (
        "_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks"))


def _fuse(model: torch.nn.Module, report: PatchReport) -> None:
    """Fuse each (fastconv BatchNorm2d, ReLU6 / Hardtanh) pair of a plain Sequential (see the
    module docstring)."""
    uses: dict[int, int] = {}
    for _, module in model.named_modules(remove_duplicate=False):
        uses[id(module)] = uses.get(id(module), 0) + 1
    for name, seq in model.named_modules():
        if type(seq) is not torch.nn.Sequential:
            continue
        children = list(seq.named_children())
        for (bn_name, bn), (act_name, act) in zip(children, children[1:]):
            if (type(bn) is DROP_INS[torch.nn.BatchNorm2d] and type(act) in FUSED_ACTIVATIONS
                    and uses[id(bn)] == 1 and uses[id(act)] == 1 and not _hooked(bn) and not _hooked(act)):
                bn.__class__ = BatchNorm2dHardtanh
                bn.min_val, bn.max_val = float(act.min_val), float(act.max_val)
                act.__class__ = FUSED_ACTIVATIONS[type(act)]
                prefix = f"{name}." if name else ""
                report.fused.append((prefix + bn_name, prefix + act_name))


def patch(model: torch.nn.Module, *, backend: str = "auto", fuse: bool = True) -> PatchReport:
    """Swap ``model``'s (and its submodules') torch.nn modules of :data:`DROP_INS` (Conv1d, Conv2d,
    ConvTranspose2d, BatchNorm2d, Linear, the pools) to fastconv's.

    In place, keeping every Parameter object (see the module docstring); ``backend`` is set on
    each swapped module. ``fuse``: fuse batch norm + ReLU6 / Hardtanh pairs (module docstring).
    Returns a :class:`PatchReport`. Patching an already patched model just sets the new
    ``backend`` on fastconv modules (and fuses what it may).
    """
    _check_name(backend)
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"fastconv.torch.patch: expected a torch.nn.Module, got {type(model).__name__}")
    report = PatchReport()
    drop_in_types = set(DROP_INS.values()) | {BatchNorm2dHardtanh}
    for name, module in model.named_modules():
        kind = type(module)
        if kind in drop_in_types:
            module.backend = backend
            continue
        if kind in DROP_INS:
            reason = _skip_reason(module)
            if reason is None:
                module.__class__ = DROP_INS[kind]
                module.backend = backend
                report.swapped.append((name, kind.__name__))
            else:
                report.skipped.append((name, reason))
        elif isinstance(module, torch.nn.modules.lazy.LazyModuleMixin) and isinstance(module, tuple(DROP_INS)):
            report.skipped.append((name, f"{kind.__name__} is lazy: run one forward pass to "
                                         f"materialise it, then patch"))
        elif isinstance(module, tuple(DROP_INS)):
            base = next(b for b in DROP_INS if isinstance(module, b))
            report.skipped.append((name, f"{kind.__qualname__} subclasses torch.nn.{base.__name__} "
                                         f"and may change its behaviour"))
    if fuse:
        _fuse(model, report)
    return report


def unpatch(model: torch.nn.Module) -> int:
    """Turn every fastconv drop-in in ``model`` back into its ``torch.nn`` class, in place.

    Returns how many modules were turned back.
    """
    back = {fast: base for base, fast in DROP_INS.items()}
    back[BatchNorm2dHardtanh] = torch.nn.BatchNorm2d
    activations = {fused: base for base, fused in FUSED_ACTIVATIONS.items()}
    count = 0
    for module in model.modules():
        base = back.get(type(module))
        if base is not None:
            if type(module) is BatchNorm2dHardtanh:
                del module.min_val, module.max_val  # the instance attributes the fusion set
            module.__class__ = base
            del module.backend  # the instance attribute patch() set
            module.__dict__.pop("_fc_hyper", None)  # and the hyper-parameters the drop-in kept
            count += 1
        elif type(module) in activations:
            module.__class__ = activations[type(module)]
            count += 1
    return count


__all__ = ["PatchReport", "patch", "unpatch"]
