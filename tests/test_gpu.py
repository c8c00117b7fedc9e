"""The GPU backend ``cupy`` on a real GPU (skipped without CuPy and a CUDA device; ``make gpu-check``
runs it): every op family against the reference in float16, float32 and float64, with the launch
sizes the adapters choose and forced small; bit-identical reruns; CuPy arrays in and out, on the
input's device; the emulator and the GPU agreeing; PyTorch CUDA tensors through ``fastconv.torch``.

The backend matrix of the other test files passes NumPy arrays, so there the GPU backend's kernels
run on the emulator (``cupy-emu``); this file is where they run on the hardware.
"""

import numpy as np
import pytest

import fastconv
from fastconv import verify
from fastconv._dispatch import backend_status

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(backend_status()["cupy"] is not None,
                                 reason=f"no GPU backend here: {backend_status()['cupy']}")]

CASES = verify.all_cases()
CASE_PARAMS = [pytest.param(c, id=c.op.replace(" ", "-")) for c in CASES]


@pytest.fixture(scope="module")
def cp():
    import cupy

    return cupy


@pytest.mark.parametrize("small", [False, True], ids=["launch", "small"])
@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
@pytest.mark.parametrize("case", CASE_PARAMS)
def test_case_matches_reference(case, dtype, small, rng):
    from fastconv.backends.cupy import launch_limits

    limits = launch_limits(threads=32, blocks=2) if small else launch_limits()
    with limits:
        result = verify.check_case(case, "cupy", dtype, rng)
    if result.skipped:
        pytest.skip(result.skipped)
    assert not result.failures, result.failures
    assert result.results > 0


@pytest.mark.parametrize("case", CASE_PARAMS)
def test_reruns_are_bit_identical(case, cp, rng):
    """No floating-point atomics, reductions in a fixed order: the same bits on every run."""
    a = {k: cp.asarray(v) if isinstance(v, np.ndarray) else v for k, v in case.inputs(rng, np.float32).items()}
    first, second = case.run(a, "cupy"), case.run(a, "cupy")
    for key in first:
        if first[key] is not None:
            np.testing.assert_array_equal(cp.asnumpy(first[key]), cp.asnumpy(second[key]), err_msg=f"{case.op} {key}")


def test_results_are_fresh_cupy_arrays_on_the_input_device(cp, rng):
    x = cp.asarray(rng.standard_normal((2, 3, 9, 7)).astype(np.float32))
    w = cp.asarray(rng.standard_normal((4, 3, 3, 2)).astype(np.float32))
    x_before = x.copy()
    y = fastconv.conv2d(x, w, padding=1)  # auto: CuPy arrays go to the GPU backend
    dx, dw, db = fastconv.conv2d_backward(cp.ones_like(y), x, w, padding=1)
    for out in (y, dx, dw, db):
        assert isinstance(out, cp.ndarray) and out.device.id == x.device.id and out.flags.c_contiguous
    cp.testing.assert_array_equal(x, x_before)
    assert _dispatch_name(x, w) == "cupy"


def _dispatch_name(*arrays):
    from fastconv._dispatch import select

    return select("conv2d", "conv", "conv2d_forward", "auto", *arrays)[0]


def test_non_contiguous_and_mixed_inputs(cp, rng):
    x = rng.standard_normal((2, 3, 8, 6)).astype(np.float32)
    w = rng.standard_normal((5, 3, 3, 3)).astype(np.float32)
    want = fastconv.conv2d(x, w, backend="reference")
    xt = cp.asarray(np.ascontiguousarray(x.transpose(0, 1, 3, 2))).transpose(0, 1, 3, 2)  # same values, odd strides
    assert not xt.flags.c_contiguous
    verify_close(fastconv.conv2d(xt, cp.asarray(w)), want)
    with pytest.raises(TypeError, match="conv2d: expected arrays on one device"):
        fastconv.conv2d(cp.asarray(x), w)
    with pytest.raises(TypeError, match="backend 'cpp' runs on the CPU but got CuPy"):
        fastconv.conv2d(cp.asarray(x), cp.asarray(w), backend="cpp")


def verify_close(got, want):
    import cupy

    assert verify.error_ratio(cupy.asnumpy(got), want) <= 1


def test_emulator_and_gpu_agree(cp, rng):
    """The same kernels on the CPU emulator and on the GPU: close everywhere; dropout's integer
    Philox masks identical."""
    if backend_status()["cupy-emu"] is not None:
        pytest.skip(backend_status()["cupy-emu"])
    x = rng.standard_normal((3, 5, 11, 9)).astype(np.float32)
    w = rng.standard_normal((6, 5, 3, 2)).astype(np.float32)
    args = dict(stride=(2, 1), padding=(1, 0), dilation=(1, 2))
    emu = fastconv.conv2d(x, w, **args, backend="cupy-emu")
    verify_close(fastconv.conv2d(cp.asarray(x), cp.asarray(w), **args), emu)
    on_emu = fastconv.dropout(x, 0.4, seed=77, backend="cupy-emu")
    on_gpu = fastconv.dropout(cp.asarray(x), 0.4, seed=77)
    np.testing.assert_array_equal(cp.asnumpy(on_gpu.mask), on_emu.mask)


def test_a_batch_larger_than_the_workspace_runs_in_chunks(cp, rng, monkeypatch):
    from fastconv.backends.cupy import conv

    monkeypatch.setattr(conv, "WORKSPACE_BYTES", 1 << 12)  # a few images' columns at a time
    x = rng.standard_normal((9, 4, 12, 10)).astype(np.float32)
    w = rng.standard_normal((5, 4, 3, 3)).astype(np.float32)
    dy = rng.standard_normal((9, 5, 10, 8)).astype(np.float32)
    got = fastconv.conv2d_backward(cp.asarray(dy), cp.asarray(x), cp.asarray(w))
    for g, want in zip(got, fastconv.conv2d_backward(dy, x, w, backend="reference")):
        verify_close(g, want)
    verify_close(fastconv.conv2d(cp.asarray(x), cp.asarray(w)), fastconv.conv2d(x, w, backend="reference"))


# --------------------------------------------------------------------------------------------
# PyTorch CUDA tensors through fastconv.torch
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def torch():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("PyTorch sees no CUDA device")
    import fastconv.torch  # noqa: F401

    return torch


def test_torch_cuda_tensors_under_autograd(torch):
    import fastconv.torch as ft

    F = torch.nn.functional
    g = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(2, 3, 9, 8, device="cuda", generator=g, requires_grad=True)
    w = torch.randn(4, 3, 3, 2, device="cuda", generator=g, requires_grad=True)
    b = torch.randn(4, device="cuda", generator=g, requires_grad=True)
    with torch.backends.cudnn.flags(allow_tf32=False):
        want = F.max_pool2d(F.conv2d(x, w, b, stride=(2, 1), padding=(1, 2)), 2)
        grads_want = torch.autograd.grad(want.square().sum(), (x, w, b))
    y = ft.max_pool2d(ft.conv2d(x, w, b, stride=(2, 1), padding=(1, 2)), 2)
    assert y.device == x.device
    torch.testing.assert_close(y, want, rtol=2e-4, atol=2e-4)
    for got, expected in zip(torch.autograd.grad(y.square().sum(), (x, w, b)), grads_want):
        torch.testing.assert_close(got, expected, rtol=2e-4, atol=2e-4)


def test_torch_cuda_tensors_are_not_copied(torch):
    from fastconv.torch.exchange import to_array

    t = torch.arange(12.0, device="cuda").reshape(3, 4)
    a = to_array(t, device="cuda")
    assert a.data.ptr == t.data_ptr()  # DLPack: the same device memory


def test_torch_cuda_on_a_side_stream_and_compiled(torch):
    import fastconv.torch as ft

    model = torch.nn.Sequential(ft.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), ft.AdaptiveAvgPool2d(1),
                                torch.nn.Flatten(), ft.Linear(8, 4)).cuda()
    x = torch.randn(4, 3, 16, 16, device="cuda")
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):  # fastconv's kernels queue on PyTorch's current stream
        eager = model(x)
    stream.synchronize()
    compiled = torch.compile(model)
    torch.testing.assert_close(compiled(x), eager, rtol=1e-4, atol=1e-4)


def test_torch_float16_on_cuda(torch):
    import fastconv.torch as ft

    conv = ft.Conv2d(4, 6, 3, padding=1).cuda().half()
    x = torch.randn(2, 4, 10, 10, device="cuda", dtype=torch.float16)
    want = torch.nn.functional.conv2d(x.float(), conv.weight.float(), conv.bias.float(), padding=1)
    torch.testing.assert_close(conv(x).float(), want, rtol=2e-3, atol=2e-3)
