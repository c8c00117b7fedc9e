"""Reference inverted dropout.

The mask comes from NumPy's PCG64 generator seeded with the given seed, so a seed fixes the mask
for a shape on this backend (other backends use their own generators and give other masks).
"""

import numpy as np

from .._common import empty


def _noise(mask, p, dtype):
    """What x is multiplied by: 1/(1-p) where kept, 0 where dropped; in x's dtype.

    As in PyTorch's CPU dropout, y = x * noise, so a dropped NaN or Inf gives NaN, not 0.
    """
    # PyTorch: noise = bernoulli(1-p) / (1-p), the division in x's dtype; p = 1 drops everything
    scale = dtype.type(1) / dtype.type(1 - p) if p < 1 else dtype.type(0)
    return np.where(mask, scale, dtype.type(0))  # same shape as mask


def dropout_forward(x, p, seed):
    u = np.random.default_rng(seed).random(x.shape)  # uniform in [0, 1), x's shape
    # kept with probability 1 - p (p = 0 keeps all, p = 1 none); out= keeps a 0-d mask an array
    mask = np.greater_equal(u, p, out=np.empty(x.shape, dtype=bool))  # x's shape
    return _apply(x, mask, p), mask


def dropout_backward(dy, mask, p):
    return _apply(dy, mask, p)


def _apply(a, mask, p):
    """a * noise, C-contiguous whatever a's layout; Inf * 0 = NaN is the intended result here."""
    with np.errstate(invalid="ignore"):
        return np.multiply(a, _noise(mask, p, a.dtype), out=empty(a.shape, a.dtype))  # a's shape
