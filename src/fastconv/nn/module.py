"""``Parameter`` and ``Module``: the base of every layer, with PyTorch's naming and state rules.

A module owns parameters (arrays with a gradient), buffers (arrays without one, e.g. batch-norm
running statistics) and child modules, all registered by attribute assignment as in PyTorch.
Their dotted names (``"0.weight"``, ``"block.conv1.weight"``) are the keys of
:meth:`Module.state_dict`, of :meth:`Module.named_parameters` and of :meth:`Module.grads`, so a
PyTorch ``state_dict`` of the same architecture loads as is.

The contract of a layer:

- ``forward(x)`` returns y and saves, by name, what its backward needs (:meth:`Module.save_for_backward`);
- ``backward(dy)`` returns dx and *adds* each parameter's gradient to ``param.grad`` (None until
  the first backward, as in PyTorch; :meth:`Module.zero_grad` sets them back to None);
- ``backend`` (``"auto"`` or a backend name) is passed to every functional op the layer calls, so a
  named backend that lacks an op fails loudly there (the dispatcher's rule: no silent fallback).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np

from .._dispatch import _check_name


class Parameter:
    """A trainable array ``data`` and its gradient ``grad`` (None until a backward sets it).

    Optimizers update ``data`` in place, so every holder of the array sees the new values.
    """

    __slots__ = ("data", "grad")

    def __init__(self, data: np.ndarray):
        if not isinstance(data, np.ndarray) or data.dtype.kind != "f":
            raise TypeError(f"Parameter: expected a float numpy.ndarray, got {data!r}")
        self.data = data
        self.grad: np.ndarray | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    def accumulate(self, grad: np.ndarray) -> None:
        """Add ``grad`` to ``self.grad`` (a parameter used twice gets both contributions)."""
        self.grad = grad if self.grad is None else self.grad + grad

    def __repr__(self) -> str:
        return f"Parameter(shape={self.shape}, dtype={self.dtype})"


class Module:
    """Base class of layers and containers (see the module docstring for the contract)."""

    def __init__(self, *, backend: str = "auto"):
        # object.__setattr__: our __setattr__ reads these registries, so they must exist first
        object.__setattr__(self, "_parameters", {})
        object.__setattr__(self, "_buffers", {})
        object.__setattr__(self, "_modules", {})
        object.__setattr__(self, "_saved", {})
        self.training = True
        self.backend = _check_name(backend)

    # ----------------------------------------------------------------------------------------
    # registration, by attribute assignment as in PyTorch
    # ----------------------------------------------------------------------------------------

    def __setattr__(self, name, value):
        if isinstance(value, Parameter):
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._modules[name] = value
        elif name in self._parameters:
            if value is not None:  # a plain array here would silently stop being trained
                raise TypeError(f"{self._label()}: {name} is a parameter; assign a Parameter or None, "
                                f"got {type(value).__name__}")
            self._parameters[name] = None
        elif name in self._buffers:
            self._buffers[name] = value
        else:
            object.__setattr__(self, name, value)

    def __getattr__(self, name):
        # only called when normal lookup fails: parameters, buffers and children live in registries
        for registry in ("_parameters", "_buffers", "_modules"):
            entries = self.__dict__.get(registry, {})
            if name in entries:
                return entries[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def register_parameter(self, name: str, param: Parameter | None) -> None:
        """Register ``param`` (None: an absent optional parameter such as ``bias=False``)."""
        self._parameters[name] = param

    def register_buffer(self, name: str, array: np.ndarray | None) -> None:
        """Register a state array that is saved and loaded but not trained."""
        self._buffers[name] = array

    # ----------------------------------------------------------------------------------------
    # traversal
    # ----------------------------------------------------------------------------------------

    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, "Module"]]:
        """``(name, module)`` for this module (name ``prefix``) and every descendant, depth first."""
        yield prefix, self
        for name, child in self._modules.items():
            yield from child.named_modules(f"{prefix}.{name}" if prefix else name)

    def modules(self) -> Iterator["Module"]:
        for _, module in self.named_modules():
            yield module

    def children(self) -> Iterator["Module"]:
        yield from self._modules.values()

    def _named(self, registry: str) -> Iterator[tuple[str, object]]:
        for prefix, module in self.named_modules():
            for name, value in getattr(module, registry).items():
                if value is not None:
                    yield (f"{prefix}.{name}" if prefix else name), value

    def named_parameters(self) -> Iterator[tuple[str, Parameter]]:
        """``(dotted name, Parameter)`` pairs, in registration order (PyTorch's ``state_dict`` order)."""
        return self._named("_parameters")

    def parameters(self) -> Iterator[Parameter]:
        for _, param in self.named_parameters():
            yield param

    def named_buffers(self) -> Iterator[tuple[str, np.ndarray]]:
        return self._named("_buffers")

    def grads(self) -> dict[str, np.ndarray | None]:
        """``{name: gradient}`` under the names of :meth:`named_parameters` (None before a backward)."""
        return {name: param.grad for name, param in self.named_parameters()}

    def zero_grad(self) -> None:
        """Forget every parameter gradient (PyTorch's ``set_to_none=True`` default)."""
        for param in self.parameters():
            param.grad = None

    # ----------------------------------------------------------------------------------------
    # modes, backend, dtype
    # ----------------------------------------------------------------------------------------

    def train(self, mode: bool = True) -> "Module":
        """Training mode (batch statistics, dropout on) for this module and its descendants."""
        if not isinstance(mode, bool):
            raise TypeError(f"{self._label()}: train(mode) expects a bool, got {mode!r}")
        for module in self.modules():
            module.training = mode
        return self

    def eval(self) -> "Module":
        """Inference mode: running statistics, no dropout."""
        return self.train(False)

    def set_backend(self, backend: str) -> "Module":
        """Run every op of this module and its descendants on ``backend`` (or ``"auto"``)."""
        backend = _check_name(backend)
        for module in self.modules():
            module.backend = backend
        return self

    def astype(self, dtype) -> "Module":
        """Convert every parameter and floating buffer to ``dtype`` (float32 or float64), in place.

        Gradients and saved forward values are dropped: they belong to the old precision.
        """
        dtype = np.dtype(dtype)
        if dtype not in (np.float32, np.float64):
            raise TypeError(f"{self._label()}: astype expects float32 or float64, got {dtype}")
        for module in self.modules():
            for name, param in module._parameters.items():
                if param is not None:
                    param.data, param.grad = param.data.astype(dtype), None
            for name, buf in module._buffers.items():
                if buf is not None and buf.dtype.kind == "f":
                    module._buffers[name] = buf.astype(dtype)
            module._saved.clear()
        return self

    # ----------------------------------------------------------------------------------------
    # state: save / load
    # ----------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, np.ndarray]:
        """Copies of every parameter and buffer, by dotted name (PyTorch's ``state_dict`` keys)."""
        # module by module, parameters then buffers: PyTorch's order, not only its keys
        state = {}
        for key, (module, registry, name) in self._state_targets().items():
            value = getattr(module, registry)[name]
            state[key] = (value.data if registry == "_parameters" else value).copy()
        return state

    def _state_targets(self) -> dict[str, tuple["Module", str, str]]:
        """``{dotted name: (owning module, registry, attribute)}`` for every entry of the state."""
        targets = {}
        for prefix, module in self.named_modules():
            for registry in ("_parameters", "_buffers"):
                for name, value in getattr(module, registry).items():
                    if value is not None:
                        targets[f"{prefix}.{name}" if prefix else name] = (module, registry, name)
        return targets

    def load_state_dict(self, state: dict) -> None:
        """Copy ``state`` (e.g. from :meth:`state_dict`, an ``.npz`` file, or PyTorch tensors
        converted with ``.numpy()``) into this module's arrays, in place and cast to their dtype.

        Every key must match and every shape must agree; nothing is changed otherwise.
        """
        targets = self._state_targets()
        missing = sorted(set(targets) - set(state))
        unexpected = sorted(set(state) - set(targets))
        if missing or unexpected:
            raise ValueError(f"{self._label()}: load_state_dict: missing keys {missing}, "
                             f"unexpected keys {unexpected}")
        values = {}
        for key, (module, registry, name) in targets.items():
            current = getattr(module, registry)[name]
            current = current.data if registry == "_parameters" else current
            value = np.asarray(state[key])
            if value.shape != current.shape:
                raise ValueError(f"{self._label()}: load_state_dict: {key} has shape {value.shape}, "
                                 f"expected {current.shape}")
            values[key] = (current, value)
        for current, value in values.values():  # all checked: now write, in place
            np.copyto(current, value, casting="unsafe")

    def save(self, path) -> str:
        """Write :meth:`state_dict` to ``path`` as an uncompressed NumPy ``.npz``; returns the path
        written (NumPy appends ``.npz`` when the name lacks it)."""
        path = os.fspath(path)
        if not path.endswith(".npz"):
            path += ".npz"
        np.savez(path, **self.state_dict())
        return path

    def load(self, path) -> None:
        """Load parameters and buffers saved by :meth:`save`."""
        with np.load(os.fspath(path), allow_pickle=False) as data:
            self.load_state_dict({key: data[key] for key in data.files})

    # ----------------------------------------------------------------------------------------
    # forward / backward plumbing
    # ----------------------------------------------------------------------------------------

    def forward(self, x):
        raise NotImplementedError(f"{type(self).__name__} does not define forward")

    def backward(self, dy):
        raise NotImplementedError(f"{type(self).__name__} does not define backward")

    def __call__(self, x):
        return self.forward(x)

    def save_for_backward(self, **values) -> None:
        """Keep what backward needs, by name; replaces what the previous forward kept."""
        self._saved.clear()
        self._saved.update(values)

    def saved(self) -> dict:
        """What the last forward kept, released here: each forward feeds exactly one backward."""
        if not self._saved:
            raise RuntimeError(f"{self._label()}: backward called without a forward before it")
        saved = dict(self._saved)
        self._saved.clear()
        return saved

    # ----------------------------------------------------------------------------------------
    # description and input checks (errors name the layer and its configuration)
    # ----------------------------------------------------------------------------------------

    def extra_repr(self) -> str:
        return ""

    def _label(self) -> str:
        return f"{type(self).__name__}({self.extra_repr()})"

    def __repr__(self) -> str:
        if not self._modules:
            return self._label()
        lines = [f"{type(self).__name__}("]
        for name, child in self._modules.items():
            lines.append(f"  ({name}): " + repr(child).replace("\n", "\n  "))
        lines.append(")")
        return "\n".join(lines)

    def _check_input(self, x, *, dims: str | None = None, channels: int | None = None,
                     axis: int = 1, min_ndim: int = 0):
        """x is a float array of this layer's parameter dtype, with the given dims and channel count.

        The functional ops check the rest; this is what only the layer knows (its configured
        channels, features and dtype), so the message can name the layer.
        """
        label = self._label()
        if not isinstance(x, np.ndarray):
            raise TypeError(f"{label}: expected x to be a numpy.ndarray, got {type(x).__name__}")
        ndim = None if dims is None else len(dims.strip("()").split(","))
        if ndim is not None and x.ndim != ndim:
            raise ValueError(f"{label}: expected x with {ndim} dims {dims}, got shape {x.shape}")
        if x.ndim < min_ndim:
            raise ValueError(f"{label}: expected x with at least {min_ndim} dims, got shape {x.shape}")
        if channels is not None and x.shape[axis] != channels:
            raise ValueError(f"{label}: expected x with size {channels} in dim {axis % x.ndim}, "
                             f"got shape {x.shape}")
        dtypes = {p.dtype for p in self._parameters.values() if p is not None}
        if dtypes and x.dtype not in dtypes:
            raise TypeError(f"{label}: expected x of dtype {dtypes.pop()} (the parameters'), got {x.dtype}")
        if x.dtype not in (np.float32, np.float64):
            raise TypeError(f"{label}: expected x of dtype float32 or float64, got {x.dtype}")
        return x
