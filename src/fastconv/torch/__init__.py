"""PyTorch interop for fastconv: custom ops, drop-in modules, ``patch(model)``.

Imported explicitly (``import fastconv.torch``); ``import fastconv`` never imports torch.

- ``torch.ops.fastconv.{conv2d, linear, max_pool2d, avg_pool2d, adaptive_avg_pool2d}`` and their
  ``*_backward`` ops, registered with ``torch.library.custom_op`` (fake kernels, autograd), so they
  work under autograd, ``torch.compile`` and ``torch.library.opcheck`` (:mod:`.ops`);
- functional wrappers with ``torch.nn.functional``'s signatures plus ``backend=``:
  :func:`conv2d`, :func:`linear`, :func:`max_pool2d`, :func:`avg_pool2d`, :func:`adaptive_avg_pool2d`;
- drop-in modules :class:`Conv2d`, :class:`Linear`, :class:`MaxPool2d`, :class:`AvgPool2d`,
  :class:`AdaptiveAvgPool2d` (subclasses of the ``torch.nn`` ones, same ``state_dict``) (:mod:`.modules`);
- :func:`patch` / :func:`unpatch` a model in place (:mod:`.patch`);
- tensor exchange without copies for contiguous tensors: CPU tensors as NumPy arrays, CUDA
  tensors as CuPy arrays over DLPack on PyTorch's current stream (the ``cupy`` backend; where it
  cannot run, CUDA tensors raise :class:`GpuBackendMissing`) (:mod:`.exchange`).

Which backend runs: ``backend="auto"`` (the default) or a name, per module / call / patch.
Threads: fastconv's own pool (``fastconv.set_num_threads``); PyTorch's is left alone.
"""

from .exchange import GpuBackendMissing, has_gpu_backend
from .modules import AdaptiveAvgPool2d, AvgPool2d, Conv2d, Linear, MaxPool2d
from .ops import OPS, adaptive_avg_pool2d, avg_pool2d, conv2d, linear, max_pool2d
from .patch import PatchReport, patch, unpatch

__all__ = [
           "OPS",
           "AdaptiveAvgPool2d",
           "AvgPool2d",
           "Conv2d",
           "GpuBackendMissing",
           "Linear",
           "MaxPool2d",
           "PatchReport",
           "adaptive_avg_pool2d",
           "avg_pool2d",
           "conv2d",
           "has_gpu_backend",
           "linear",
           "max_pool2d",
           "patch",
           "unpatch",
]
