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
:func:`unpatch` turns swapped modules back into their ``torch.nn`` classes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .._dispatch import _check_name
from .exchange import has_gpu_backend
from .modules import DROP_INS, unsupported_reason


@dataclass
class PatchReport:
    """What :func:`patch` did: ``swapped`` lists ``(name, torch.nn class name)``, ``skipped``
    lists ``(name, reason)`` for conv/batch norm/pool/linear modules left on PyTorch."""

    swapped: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"fastconv.torch.patch: {len(self.swapped)} modules swapped, {len(self.skipped)} left on PyTorch"]
        lines += [f"  swapped {name or '<root>'} ({kind})" for name, kind in self.swapped]
        lines += [f"  skipped {name or '<root>'}: {reason}" for name, reason in self.skipped]
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


def patch(model: torch.nn.Module, *, backend: str = "auto") -> PatchReport:
    """Swap ``model``'s (and its submodules') torch.nn modules of :data:`DROP_INS` (Conv1d, Conv2d,
    ConvTranspose2d, BatchNorm2d, Linear, the pools) to fastconv's.

    In place, keeping every Parameter object (see the module docstring); ``backend`` is set on
    each swapped module. Returns a :class:`PatchReport`. Patching an already patched model just
    sets the new ``backend`` on fastconv modules.
    """
    _check_name(backend)
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"fastconv.torch.patch: expected a torch.nn.Module, got {type(model).__name__}")
    report = PatchReport()
    drop_in_types = set(DROP_INS.values())
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
    return report


def unpatch(model: torch.nn.Module) -> int:
    """Turn every fastconv drop-in in ``model`` back into its ``torch.nn`` class, in place.

    Returns how many modules were turned back.
    """
    back = {fast: base for base, fast in DROP_INS.items()}
    count = 0
    for module in model.modules():
        base = back.get(type(module))
        if base is not None:
            module.__class__ = base
            del module.backend  # the instance attribute patch() set
            count += 1
    return count


__all__ = ["PatchReport", "patch", "unpatch"]
