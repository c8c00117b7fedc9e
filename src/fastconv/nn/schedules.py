"""Learning-rate schedules, stepped once per epoch, as ``torch.optim.lr_scheduler``:

- :class:`StepLR`: ``lr0 * gamma ** (epoch // step_size)``;
- :class:`ExponentialLR`: ``lr0 * gamma ** epoch``;
- :class:`InverseTimeDecay` (1/t): ``lr0 / (1 + decay * epoch)`` (PyTorch has no class for it;
  it is ``LambdaLR(opt, lambda t: 1 / (1 + decay * t))``).

Each computes its closed form from the epoch count, so no rounding accumulates; ``step()``
advances the epoch and writes the new rate into ``optimizer.lr``.
"""

from __future__ import annotations

from .._checks import check_float
from .._params import as_int
from .optim import Optimizer


class LRScheduler:
    """Base: holds the optimizer, its initial rate ``base_lr`` and the epoch count ``last_epoch``."""

    def __init__(self, optimizer: Optimizer):
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{type(self).__name__}: expected an Optimizer, got {type(optimizer).__name__}")
        self.optimizer = optimizer
        self.base_lr = optimizer.lr
        self.last_epoch = 0

    def lr_at(self, epoch: int) -> float:
        raise NotImplementedError

    def step(self) -> float:
        """Advance one epoch; set and return the optimizer's new learning rate."""
        self.last_epoch += 1
        self.optimizer.lr = self.lr_at(self.last_epoch)
        return self.optimizer.lr

    def get_last_lr(self) -> float:
        return self.optimizer.lr

    def _positive(self, name, value) -> float:
        return check_float(type(self).__name__, name, value, low=0.0, low_open=True)


class StepLR(LRScheduler):
    """Multiply the rate by ``gamma`` every ``step_size`` epochs."""

    def __init__(self, optimizer, step_size, gamma=0.1):
        super().__init__(optimizer)
        self.step_size = as_int("StepLR", "step_size", step_size, minimum=1)
        self.gamma = self._positive("gamma", gamma)

    def lr_at(self, epoch):
        return self.base_lr * self.gamma ** (epoch // self.step_size)


class ExponentialLR(LRScheduler):
    """Multiply the rate by ``gamma`` every epoch."""

    def __init__(self, optimizer, gamma):
        super().__init__(optimizer)
        self.gamma = self._positive("gamma", gamma)

    def lr_at(self, epoch):
        return self.base_lr * self.gamma ** epoch


class InverseTimeDecay(LRScheduler):
    """1/t decay: ``lr0 / (1 + decay * epoch)``."""

    def __init__(self, optimizer, decay):
        super().__init__(optimizer)
        self.decay = check_float("InverseTimeDecay", "decay", decay, low=0.0)

    def lr_at(self, epoch):
        return self.base_lr / (1 + self.decay * epoch)


__all__ = ["LRScheduler", "StepLR", "ExponentialLR", "InverseTimeDecay"]
