"""Optimizers with ``torch.optim``'s update formulas: SGD (momentum, dampening, Nesterov), Adagrad,
RMSprop (optionally centred, with momentum) and Adam.

An optimizer takes the parameters to train: a :class:`~fastconv.nn.module.Module`, its
``named_parameters()``, or an iterable of :class:`~fastconv.nn.module.Parameter`. ``step()``
reads each ``param.grad`` (parameters whose grad is None are skipped, as in PyTorch) and updates
``param.data`` in place. ``weight_decay`` is L2 regularisation added to the gradient
(``g + weight_decay * param``) before the update, PyTorch's convention for all four.

``lr`` is an attribute: the schedules in :mod:`fastconv.nn.schedules` set it between epochs.
Per-parameter state (momentum buffers, running averages, step counts) lives in ``state[name]``.
"""

from __future__ import annotations

import math

import numpy as np

from .._checks import check_bool, check_float
from .module import Module, Parameter


class Optimizer:
    """Base: parameter bookkeeping, validation, weight decay; subclasses define :meth:`_update`."""

    def __init__(self, params, lr: float, weight_decay: float = 0.0):
        self.named_params = self._collect(params)
        self.lr = self._number("lr", lr)
        self.weight_decay = self._number("weight_decay", weight_decay)
        self.state: dict[str, dict] = {name: {} for name, _ in self.named_params}

    def _number(self, name, value, *, high=None, low_open=False) -> float:
        return check_float(type(self).__name__, name, value, low=0.0, high=high, low_open=low_open)

    def _collect(self, params) -> list[tuple[str, Parameter]]:
        owner = type(self).__name__
        if isinstance(params, Module):
            params = params.named_parameters()
        named = []
        for i, item in enumerate(params):
            name, param = item if isinstance(item, tuple) else (str(i), item)
            if not isinstance(param, Parameter):
                raise TypeError(f"{owner}: expected Parameters (or (name, Parameter) pairs), "
                                f"got {type(param).__name__} for {name!r}")
            named.append((name, param))
        if not named:
            raise ValueError(f"{owner}: got an empty parameter list")
        if len({id(p) for _, p in named}) != len(named):
            raise ValueError(f"{owner}: a parameter appears more than once")
        return named

    def zero_grad(self) -> None:
        """Set every gradient to None (PyTorch's default)."""
        for _, param in self.named_params:
            param.grad = None

    def step(self) -> None:
        """One update of every parameter that has a gradient."""
        for name, param in self.named_params:
            g = param.grad
            if g is None:
                continue
            if g.shape != param.data.shape:
                raise ValueError(f"{type(self).__name__}: gradient of {name!r} has shape {g.shape}, "
                                 f"expected {param.data.shape}")
            if self.weight_decay:
                g = g + self.weight_decay * param.data  # a new array: param.grad is left as it was
            state = self.state[name]
            state["step"] = state.get("step", 0) + 1
            self._update(param.data, g.astype(param.data.dtype, copy=False), state)

    def _update(self, p: np.ndarray, g: np.ndarray, state: dict) -> None:
        """Update ``p`` in place from the (weight-decayed) gradient ``g``; ``state["step"]`` is 1 first."""
        raise NotImplementedError

    def __repr__(self) -> str:
        settings = ", ".join(f"{k}={v}" for k, v in vars(self).items() if isinstance(v, (int, float, bool)))
        return f"{type(self).__name__}({settings})"


class SGD(Optimizer):
    """Stochastic gradient descent, as ``torch.optim.SGD``:

    ``buf = g`` on the first step, then ``buf = momentum * buf + (1 - dampening) * g``; the step
    direction is ``g + momentum * buf`` with Nesterov, ``buf`` without, ``g`` when momentum is 0;
    ``p -= lr * direction``.
    """

    def __init__(self, params, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False):
        super().__init__(params, lr, weight_decay)
        self.momentum = self._number("momentum", momentum)
        self.dampening = self._number("dampening", dampening)
        check_bool("SGD", "nesterov", nesterov)
        if nesterov and (self.momentum <= 0 or self.dampening != 0):
            raise ValueError(f"SGD: Nesterov momentum needs momentum > 0 and dampening = 0, "
                             f"got momentum={self.momentum}, dampening={self.dampening}")
        self.nesterov = nesterov

    def _update(self, p, g, state):
        if self.momentum:
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = g.copy()  # torch: the first buffer is g, undampened
            else:
                buf = state["momentum_buffer"]
                buf *= self.momentum
                buf += (1 - self.dampening) * g
            buf = state["momentum_buffer"]
            g = g + self.momentum * buf if self.nesterov else buf
        p -= self.lr * g


class Adagrad(Optimizer):
    """Adagrad, as ``torch.optim.Adagrad``: ``sum += g^2``,
    ``p -= lr / (1 + (step - 1) * lr_decay) * g / (sqrt(sum) + eps)``."""

    def __init__(self, params, lr=1e-2, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0,
                 eps=1e-10):
        super().__init__(params, lr, weight_decay)
        self.lr_decay = self._number("lr_decay", lr_decay)
        self.initial_accumulator_value = self._number("initial_accumulator_value", initial_accumulator_value)
        self.eps = self._number("eps", eps)

    def _update(self, p, g, state):
        if "sum" not in state:
            state["sum"] = np.full_like(p, self.initial_accumulator_value)  # p's shape
        state["sum"] += g * g
        clr = self.lr / (1 + (state["step"] - 1) * self.lr_decay)
        p -= clr * g / (np.sqrt(state["sum"]) + self.eps)


class RMSprop(Optimizer):
    """RMSprop, as ``torch.optim.RMSprop``: ``v = alpha * v + (1 - alpha) * g^2``; centred, also
    ``m = alpha * m + (1 - alpha) * g`` and ``v - m^2`` in place of v; ``avg = sqrt(...) + eps``;
    with momentum ``buf = momentum * buf + g / avg``, ``p -= lr * buf``, else ``p -= lr * g / avg``."""

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False):
        super().__init__(params, lr, weight_decay)
        self.alpha = self._number("alpha", alpha, high=1.0)
        self.eps = self._number("eps", eps)
        self.momentum = self._number("momentum", momentum)
        self.centered = check_bool("RMSprop", "centered", centered)

    def _update(self, p, g, state):
        if "square_avg" not in state:
            state["square_avg"] = np.zeros_like(p)  # p's shape
            if self.centered:
                state["grad_avg"] = np.zeros_like(p)  # p's shape
            if self.momentum:
                state["momentum_buffer"] = np.zeros_like(p)  # p's shape
        square_avg = state["square_avg"]
        square_avg *= self.alpha
        square_avg += (1 - self.alpha) * g * g
        if self.centered:
            grad_avg = state["grad_avg"]
            grad_avg *= self.alpha
            grad_avg += (1 - self.alpha) * g
            avg = np.sqrt(square_avg - grad_avg * grad_avg) + self.eps  # p's shape
        else:
            avg = np.sqrt(square_avg) + self.eps  # p's shape
        if self.momentum:
            buf = state["momentum_buffer"]
            buf *= self.momentum
            buf += g / avg
            p -= self.lr * buf
        else:
            p -= self.lr * g / avg


class Adam(Optimizer):
    """Adam, as ``torch.optim.Adam`` (``weight_decay`` is L2 added to g, not AdamW's decoupled decay):
    ``m = b1 m + (1 - b1) g``, ``v = b2 v + (1 - b2) g^2``,
    ``p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)``."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(params, lr, weight_decay)
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise TypeError(f"Adam: expected betas to be a pair of numbers, got {betas!r}")
        self.betas = tuple(check_float("Adam", "betas", b, low=0.0, high=1.0) for b in betas)
        if max(self.betas) >= 1:
            raise ValueError(f"Adam: expected betas in [0, 1), got {self.betas}")
        self.eps = self._number("eps", eps)

    def _update(self, p, g, state):
        if "exp_avg" not in state:
            state["exp_avg"] = np.zeros_like(p)  # p's shape
            state["exp_avg_sq"] = np.zeros_like(p)  # p's shape
        beta1, beta2 = self.betas
        m, v = state["exp_avg"], state["exp_avg_sq"]
        m *= beta1
        m += (1 - beta1) * g
        v *= beta2
        v += (1 - beta2) * g * g
        t = state["step"]
        step_size = self.lr / (1 - beta1 ** t)
        denom = np.sqrt(v) / math.sqrt(1 - beta2 ** t) + self.eps  # p's shape
        p -= step_size * m / denom


#: the optimizers by the names the command line uses
OPTIMIZERS = {"sgd": SGD, "adagrad": Adagrad, "rmsprop": RMSprop, "adam": Adam}

__all__ = ["Optimizer", "SGD", "Adagrad", "RMSprop", "Adam", "OPTIMIZERS"]
