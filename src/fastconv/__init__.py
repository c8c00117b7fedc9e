"""fastconv: fast, verified neural-network kernels behind one NumPy-style API.

Every op takes ``backend="auto"`` (or a backend name), validates its input once, and dispatches to
a backend (see :func:`available_backends`). Semantics are PyTorch's: NCHW, cross-correlation,
``torch.nn.functional`` argument names and defaults.
"""

from ._dispatch import BackendUnavailableError, available_backends, backend_status, use_backend  # noqa: F401
from ._threads import get_num_threads, set_num_threads  # noqa: F401
from .autotune import get_autotune, set_autotune  # noqa: F401
from .precision import get_float32_conv_precision, set_float32_conv_precision  # noqa: F401
from .ops.activation import *  # noqa: F401,F403
from .ops.conv import *  # noqa: F401,F403
from .ops.dropout import *  # noqa: F401,F403
from .ops.linear import *  # noqa: F401,F403
from .ops.loss import *  # noqa: F401,F403
from .ops.norm import *  # noqa: F401,F403
from .ops.pool import *  # noqa: F401,F403
from .ops.shape import *  # noqa: F401,F403

from . import nn  # noqa: E402,F401  (layers over the ops above; fastconv.torch is imported explicitly)

__version__ = "0.1.0"
