"""Loss layers over the functional losses: ``CrossEntropyLoss`` (softmax + negative log-likelihood)
and ``MSELoss``, with ``torch.nn``'s arguments and defaults.

``loss = criterion(logits, target)`` returns the loss (a 0-d array unless ``reduction='none'``)
and keeps logits and target by name; ``criterion.backward()`` returns dlogits for dloss = 1
(or for the given ``dloss``), ready for ``model.backward``.
"""

from __future__ import annotations

import numpy as np

from .. import ops
from .._checks import check_array, check_choice, check_float
from .._params import as_int
from .module import Module

_REDUCTIONS = ("mean", "sum", "none")


class _Loss(Module):
    """A loss: ``forward(input, target) -> loss``, ``backward(dloss=None) -> dinput``."""

    def __init__(self, reduction="mean", *, backend="auto"):
        super().__init__(backend=backend)
        check_choice(type(self).__name__, "reduction", reduction, _REDUCTIONS)
        self.reduction = reduction

    def __call__(self, input, target):  # noqa: A002 (PyTorch's argument names)
        return self.forward(input, target)

    def _dloss(self, dloss, loss_shape, like):
        """dloss, defaulting to ones of the loss's shape (dloss = 1 for a reduced loss)."""
        if dloss is None:
            return np.ones(loss_shape if self.reduction == "none" else (), like.dtype)  # the loss's shape
        return dloss

    def extra_repr(self):
        return f"reduction={self.reduction!r}"


class CrossEntropyLoss(_Loss):
    """Cross-entropy of softmax(logits) against class indices or probabilities, as
    ``torch.nn.CrossEntropyLoss`` (``weight`` (C,), ``ignore_index``, ``label_smoothing``)."""

    def __init__(self, weight=None, reduction="mean", ignore_index=-100, label_smoothing=0.0, *,
                 backend="auto"):
        super().__init__(reduction, backend=backend)
        op = "CrossEntropyLoss"
        if weight is not None:
            check_array(op, "weight", weight, dims="(C,)")
        self.weight = weight
        self.ignore_index = as_int(op, "ignore_index", ignore_index)
        self.label_smoothing = check_float(op, "label_smoothing", label_smoothing, low=0.0, high=1.0)

    def _args(self):
        return dict(weight=self.weight, reduction=self.reduction, ignore_index=self.ignore_index,
                    label_smoothing=self.label_smoothing, backend=self.backend)

    def forward(self, logits, target):
        self._check_input(logits, min_ndim=1)
        loss = ops.loss.cross_entropy(logits, target, **self._args())  # () or (N, d1, ...)
        self.save_for_backward(logits=logits, target=target, loss_shape=np.shape(loss))
        return loss

    def backward(self, dloss=None):
        saved = self.saved()
        dloss = self._dloss(dloss, saved["loss_shape"], saved["logits"])
        return ops.loss.cross_entropy_backward(dloss, saved["logits"], saved["target"],
                                               **self._args())  # logits' shape


class MSELoss(_Loss):
    """Mean squared error, as ``torch.nn.MSELoss`` (target of the input's shape)."""

    def forward(self, x, target):
        self._check_input(x)
        loss = ops.loss.mse_loss(x, target, self.reduction, backend=self.backend)  # () or x's shape
        self.save_for_backward(x=x, target=target)
        return loss

    def backward(self, dloss=None):
        saved = self.saved()
        dloss = self._dloss(dloss, saved["x"].shape, saved["x"])
        return ops.loss.mse_loss_backward(dloss, saved["x"], saved["target"], self.reduction,
                                          backend=self.backend)  # x's shape


__all__ = ["CrossEntropyLoss", "MSELoss"]
