"""``fastconv.nn``: layers, losses, optimizers and learning-rate schedules over the functional API.

Layers follow ``torch.nn`` (names, arguments, defaults, initialisation, ``state_dict`` keys); each
has ``forward(x)`` and ``backward(dy)`` (which returns dx and adds parameter gradients to
``param.grad``). See :mod:`fastconv.nn.module` for the contract and :mod:`fastconv.nn.optim` for
the optimizers' formulas.

Backends: a layer passes its ``backend`` (``"auto"`` by default, or set per layer or for a whole
model with ``model.set_backend(name)``) to each op it runs. A named backend that lacks an op
raises ``NotImplementedError`` from that op (Cython has no loss, batch-norm or dropout kernels);
nothing falls back silently. To train on such a backend, give the loss its own backend explicitly,
e.g. ``CrossEntropyLoss(backend="reference")``, as ``fastconv train`` does (and says so).
"""

from .layers import *  # noqa: F401,F403
from .losses import *  # noqa: F401,F403
from .module import Module, Parameter  # noqa: F401
from .optim import *  # noqa: F401,F403
from .schedules import *  # noqa: F401,F403
