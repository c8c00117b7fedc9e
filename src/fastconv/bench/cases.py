"""What a benchmark case runs: its inputs, the fastconv call on each backend, the PyTorch peers.

A *case* is one shape and one pass. A *contender* is one column of the report: a fastconv backend,
or PyTorch in one memory layout on one device. Every contender gets the same input values; each
call is wrapped as a no-argument function returning the pass's one output (y, dx or dw), so
verification and timing treat all contenders alike.

Inputs are small integers for conv and dense layers: every product and partial sum is then an
integer far below 2**24, exact in float32, so any correct backend, whatever its summation order,
matches the reference exactly (the report says so per case). Max pooling gets distinct values (a
permutation), so no window has a tie and the argmax is unique. Host inputs are read-only: a
backend that writes into its input raises instead of corrupting the next contender's inputs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

import fastconv

from .._dispatch import REGISTRY
from ..verify import error_ratio
from .suite import Shape
from .timing import cpu_timer, cupy_timer, torch_cuda_timer


@dataclass(frozen=True)
class Case:
    shape: Shape
    pass_name: str
    dtype: np.dtype

    @property
    def id(self) -> str:
        return f"{self.shape.name}:{self.pass_name}"

    def work(self) -> tuple[float, str]:
        return self.shape.work(self.pass_name, self.dtype.itemsize)


def make_inputs(case: Case, rng) -> dict[str, np.ndarray]:
    """The case's named host arrays (read-only); see the module docstring for why these values."""
    s, dtype = case.shape, case.dtype

    def small_ints(shape):
        return rng.integers(-3, 4, size=shape).astype(dtype)

    if s.kind == "maxpool":
        x = rng.permutation(math.prod(s.x_shape)).reshape(s.x_shape).astype(dtype)
        arrays = dict(x=x, dy=small_ints(s.y_shape))
    else:
        arrays = dict(x=small_ints(s.x_shape), w=small_ints(s.w_shape), dy=small_ints(s.y_shape))
    for a in arrays.values():
        a.setflags(write=False)
    return arrays


def _needs(pass_name: str) -> tuple[bool, bool, bool]:
    return (pass_name == "backward-input", pass_name == "backward-weight", False)


def _pool_args(s: Shape):
    return (s.KH, s.KW), s.stride, s.padding, s.dilation, False


def fastconv_call(case: Case, a: dict, backend: str):
    """The pass on fastconv ``backend`` with arrays ``a``, through the public API users call."""
    s, p = case.shape, case.pass_name
    grad = 0 if p == "backward-input" else 1  # which of (dx, dw, db) a backward pass returns
    if s.kind == "conv":
        geometry = (s.stride, s.padding, s.dilation, s.groups)
        if p == "forward":
            return lambda: fastconv.conv2d(a["x"], a["w"], None, *geometry, backend=backend)
        return lambda: fastconv.conv2d_backward(a["dy"], a["x"], a["w"], *geometry, needs=_needs(p),
                                                backend=backend)[grad]
    if s.kind == "dense":
        if p == "forward":
            return lambda: fastconv.linear(a["x"], a["w"], backend=backend)
        return lambda: fastconv.linear_backward(a["dy"], a["x"], a["w"], needs=_needs(p), backend=backend)[grad]
    pool = _pool_args(s)
    if p == "forward":
        return lambda: fastconv.max_pool2d(a["x"], *pool, backend=backend)
    # the indices come from the same backend's forward, as in a training step; not timed
    _, indices = fastconv.max_pool2d(a["x"], *pool, return_indices=True, backend=backend)
    return lambda: fastconv.max_pool2d_backward(a["dy"], a["x"], *pool, indices=indices, backend=backend)


def torch_call(case: Case, t: dict, torch):
    """The pass in PyTorch on tensors ``t``: the ATen kernels autograd runs, without the graph."""
    s, p = case.shape, case.pass_name
    F, aten = torch.nn.functional, torch.ops.aten
    if s.kind == "conv":
        if p == "forward":
            return lambda: F.conv2d(t["x"], t["w"], None, s.stride, s.padding, s.dilation, s.groups)
        grad = 0 if p == "backward-input" else 1
        args = (None, list(s.stride), list(s.padding), list(s.dilation), False, [0, 0], s.groups,
                list(_needs(p)))
        return lambda: aten.convolution_backward(t["dy"], t["x"], t["w"], *args)[grad]
    if s.kind == "dense":
        if p == "forward":
            return lambda: F.linear(t["x"], t["w"])
        if p == "backward-input":
            return lambda: torch.mm(t["dy"], t["w"])  # dx = dy @ w
        return lambda: torch.mm(t["dy"].t(), t["x"])  # dw = dy^T @ x
    pool = _pool_args(s)
    if p == "forward":
        return lambda: F.max_pool2d(t["x"], *pool)
    _, indices = aten.max_pool2d_with_indices(t["x"], *pool)
    return lambda: aten.max_pool2d_with_indices_backward(t["dy"], t["x"], *pool, indices)


@dataclass(frozen=True)
class Prepared:
    fn: object  # () -> the pass's output, on the contender's device
    to_host: object  # output -> numpy array (NCHW, C-contiguous) for verification
    timer: object  # fn -> seconds
    sync: object = None  # GPU: waits for the device (for clocks that are not CUDA events)


@dataclass(frozen=True)
class Contender:
    """One column of the report: a fastconv backend, or PyTorch in one layout on one device (and,
    on CUDA, in one precision mode: ``""`` fp32 with TF32 off, ``"tf32"`` PyTorch's defaults)."""

    name: str
    family: str  # "fastconv" or "torch"
    device: str  # "cpu" or "gpu"
    backend: str | None = None
    layout: str = "nchw"
    mode: str = ""

    @property
    def group(self) -> str:
        """The report's column group: the backend, or PyTorch's label on its device and mode."""
        return self.name if self.family == "fastconv" else torch_label(self.device, self.mode)

    def applies(self, case: Case) -> bool:
        """channels_last exists only for images: dense layers have one layout."""
        return self.layout == "nchw" or case.shape.kind != "dense"

    def prepare(self, case: Case, arrays: dict, torch=None) -> Prepared:
        """The contender's call on copies of ``arrays`` on its device (host arrays as they are)."""
        return self._prepare_torch(case, arrays, torch) if self.family == "torch" else \
            self._prepare_fastconv(case, arrays)

    def _prepare_fastconv(self, case, arrays):
        if self.device == "cpu":
            return Prepared(fastconv_call(case, arrays, self.backend), np.asarray, cpu_timer)
        import cupy

        a = {k: cupy.asarray(v) for k, v in arrays.items()}
        return Prepared(fastconv_call(case, a, self.backend), cupy.asnumpy, cupy_timer(),
                        cupy.cuda.get_current_stream().synchronize)

    def _prepare_torch(self, case, arrays, torch):
        on_gpu = self.device == "gpu"

        def tensor(a):
            t = torch.tensor(a, device="cuda" if on_gpu else "cpu")  # a copy: torch may not share read-only memory
            if self.layout == "channels_last" and t.ndim == 4:
                return t.contiguous(memory_format=torch.channels_last)
            return t

        t = {k: tensor(v) for k, v in arrays.items()}
        call = torch_call(case, t, torch)
        if on_gpu:  # the precision flags are global: set them for every call of this contender
            cudnn_tf32, matmul_tf32 = CUDA_PRECISION[self.mode]

            def fn():
                torch.backends.cudnn.allow_tf32 = cudnn_tf32
                torch.backends.cuda.matmul.allow_tf32 = matmul_tf32
                return call()
        else:
            fn = call
        return Prepared(fn, lambda out: out.contiguous().cpu().numpy(),
                        torch_cuda_timer(torch) if on_gpu else cpu_timer, torch.cuda.synchronize if on_gpu else None)


def fastconv_contenders(names) -> list[Contender]:
    return [Contender(n, "fastconv", REGISTRY[n].device, backend=n) for n in names]


#: PyTorch's CUDA precision modes: (cudnn.allow_tf32, cuda.matmul.allow_tf32). "" is fp32 with
#: TF32 off, as fastconv's GPU backend computes (CuPy's cuBLAS calls use no TF32 unless CUPY_TF32
#: is set); "tf32" is PyTorch's defaults, under which cuDNN may round conv inputs to TF32.
CUDA_PRECISION = {"": (False, False), "tf32": (True, False)}


def torch_label(device: str, mode: str = "") -> str:
    """PyTorch's name on a device and in a precision mode, as contender names start (torch/nchw,
    torch-cuda/nchw, torch-cuda-tf32/nchw)."""
    return "torch" if device == "cpu" else "torch-cuda" + (f"-{mode}" if mode else "")


def torch_contenders(torch, devices=("cpu", "gpu")) -> list[Contender]:
    """PyTorch on the CPU, NCHW and channels_last; and on CUDA (cuDNN) when it has a GPU: both
    layouts with TF32 off (the peers fastconv's fp32 GPU kernels are held to), and NCHW once more
    with PyTorch's defaults (TF32 allowed in cuDNN's convolutions)."""
    chosen = [("cpu", layout, "") for layout in ("nchw", "channels_last")] if "cpu" in devices else []
    if "gpu" in devices and torch.cuda.is_available():
        chosen += [("gpu", layout, "") for layout in ("nchw", "channels_last")] + [("gpu", "nchw", "tf32")]
    return [Contender(f"{torch_label(device, mode)}/{layout}", "torch", device, layout=layout, mode=mode)
            for device, layout, mode in chosen]


@dataclass(frozen=True)
class Verdict:
    ok: bool
    error_ratio: float  # max |got - want| / (atol + rtol |want|); <= 1 passes
    exact: bool


def verify(got: np.ndarray, want: np.ndarray) -> Verdict:
    """``got`` against the reference's ``want`` with the project's tolerance table."""
    ratio = error_ratio(got, want)
    exact = bool(got.shape == want.shape and got.dtype == want.dtype and np.array_equal(got, want))
    return Verdict(bool(ratio <= 1.0), ratio, exact)
