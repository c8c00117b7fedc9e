"""PyTorch interop for fastconv: custom ops, drop-in modules, ``patch(model)``.

Imported explicitly (``import fastconv.torch``); ``import fastconv`` never imports torch.

- ``torch.ops.fastconv.{conv2d, conv1d, conv_transpose2d, linear, max_pool2d, avg_pool2d,
  adaptive_avg_pool2d, batch_norm}`` and their ``*_backward`` ops, registered with
  ``torch.library.Library`` (fake kernels, autograd), so they work under autograd,
  ``torch.compile`` and ``torch.library.opcheck`` (:mod:`.ops`);
- functional wrappers with ``torch.nn.functional``'s signatures plus ``backend=``:
  :func:`conv2d`, :func:`conv1d`, :func:`conv_transpose2d`, :func:`linear`, :func:`max_pool2d`,
  :func:`avg_pool2d`, :func:`adaptive_avg_pool2d`, :func:`batch_norm` (running statistics updated
  in place, as ``F.batch_norm``);
- drop-in modules :class:`Conv2d`, :class:`Conv1d`, :class:`ConvTranspose2d`, :class:`BatchNorm2d`,
  :class:`Linear`, :class:`MaxPool2d`, :class:`AvgPool2d`, :class:`AdaptiveAvgPool2d` (subclasses of
  the ``torch.nn`` ones, same ``state_dict``) (:mod:`.modules`);
- ``channels_last`` tensors keep their memory format: results and gradients come back in PyTorch's
  layout, the kernels running NCHW between one copy in and one copy out (see :mod:`.ops`);
- :func:`patch` / :func:`unpatch` a model in place (:mod:`.patch`);
- tensor exchange without copies for contiguous tensors: CPU tensors as NumPy arrays, CUDA
  tensors as CuPy arrays over DLPack on PyTorch's current stream (the ``cupy`` backend; where it
  cannot run, CUDA tensors raise :class:`GpuBackendMissing`) (:mod:`.exchange`).

Which backend runs: ``backend="auto"`` (the default) or a name, per module / call / patch.
Threads: fastconv's own pool (``fastconv.set_num_threads``); PyTorch's is left alone.
"""

from .exchange import GpuBackendMissing, has_gpu_backend
from .modules import AdaptiveAvgPool2d, AvgPool2d, BatchNorm2d, Conv1d, Conv2d, ConvTranspose2d, Linear, MaxPool2d
from .ops import (
    OPS,
    adaptive_avg_pool2d,
    avg_pool2d,
    batch_norm,
    conv1d,
    conv2d,
    conv_transpose2d,
    linear,
    max_pool2d,
)
from .fused import BatchNorm2dHardtanh, batch_norm_hardtanh
from .patch import PatchReport, patch, unpatch

__all__ = [
           "OPS",
           "AdaptiveAvgPool2d",
           "AvgPool2d",
           "BatchNorm2d",
           "BatchNorm2dHardtanh",
           "Conv1d",
           "Conv2d",
           "ConvTranspose2d",
           "GpuBackendMissing",
           "Linear",
           "MaxPool2d",
           "PatchReport",
           "adaptive_avg_pool2d",
           "avg_pool2d",
           "batch_norm",
           "batch_norm_hardtanh",
           "conv1d",
           "conv2d",
           "conv_transpose2d",
           "has_gpu_backend",
           "linear",
           "max_pool2d",
           "patch",
           "unpatch",
]
