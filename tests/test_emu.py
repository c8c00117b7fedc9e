"""The GPU emulator itself (fastconv/cuda/emu/): warp collectives, barriers, shared memory, float16
conversions and launch geometry as on a GPU, and every kernel mistake reported as an error naming
the kernel, the place and the threads, never a hang. The sanitizer cases run where the emulator is
built with ASan/UBSan (``make test-emu``). The kernels are tests/cuda/emu_cases.cu."""

import contextlib
from pathlib import Path

import numpy as np
import pytest

from fastconv.backends.cupy import _emu, launch_limits
from fastconv.backends.cupy._device import KernelError, Module, grid_blocks, instances, threads_per_block

pytestmark = pytest.mark.emu

CASES = Module("emu_cases", (
    "warp_ops", "half_warp", *instances("sums", ("__half", "float", "double")), "reverse", "to_half", "from_half",
    "coordinates", "fill", "early_exit", "split_barrier", "warp_vs_barrier", "shfl_outside_mask",
    "mask_without_caller", "traps", "write_past", "shared_overflow", "signed_overflow", "shift"),
    directory=Path(__file__).parent / "cuda")

sanitized = pytest.mark.skipif(not _emu.SANITIZE, reason="the emulator is built without sanitizers here "
                                                        "(make test-emu builds it with them)")


@pytest.fixture(scope="module")
def dev():
    return _emu.emulator()


def launch(dev, kernel, grid, block, *args, shared_mem=0):
    CASES.launch(dev, kernel, grid, block, args, shared_mem)


# --------------------------------------------------------------------------------------------
# what must work as on a GPU
# --------------------------------------------------------------------------------------------

def test_warp_collectives(dev, rng):
    v = rng.integers(-5, 6, size=64).astype(np.int32)
    outs = [np.empty(64, np.int32) for _ in range(4)] + [np.empty(64, np.uint32), np.empty(64, np.int32)]
    launch(dev, "warp_ops", 1, 64, v, *outs)
    down, xor, idx, up8, ballot, any_all = outs
    lane, base = np.arange(64) % 32, np.arange(64) - np.arange(64) % 32
    np.testing.assert_array_equal(down, np.where(lane + 3 < 32, v[np.minimum(np.arange(64) + 3, 63)], v))
    np.testing.assert_array_equal(xor, v[base + (lane ^ 5)])
    np.testing.assert_array_equal(idx, v[base + 7])
    segment = np.arange(64) - lane % 8
    np.testing.assert_array_equal(up8, np.where(lane % 8 >= 2, v[np.arange(64) - 2], v))
    assert (segment >= 0).all()
    for w in range(2):
        bits = sum(1 << l for l in range(32) if v[32 * w + l] > 0)
        assert (ballot[32 * w:32 * w + 32] == bits).all()
        positive = v[32 * w:32 * w + 32] > 0
        assert (any_all[32 * w:32 * w + 32] == positive.any() * 2 + positive.all()).all()


def test_collective_over_part_of_a_warp(dev):
    v = np.arange(48, dtype=np.int32)
    out = np.empty(48, np.int32)
    launch(dev, "half_warp", 1, 48, v, out)  # a full warp and a partial one of 16 lanes
    lane = np.arange(48) % 32
    np.testing.assert_array_equal(out, np.where(lane < 16, v ^ 1, v))


@pytest.mark.parametrize("threads", [32, 96, 256, 1024])
@pytest.mark.parametrize("ctype, dtype", [("float", np.float32), ("double", np.float64)])
def test_block_sum_in_fixed_order(dev, rng, threads, ctype, dtype):
    x = rng.standard_normal(10_000).astype(dtype)
    blocks = grid_blocks(dev, x.size, threads)
    out = np.empty(blocks, dtype)
    launch(dev, f"sums<{ctype}>", blocks, threads, x, out, np.int64(x.size))
    exact = x.astype(np.float64).sum()  # each block's sum is within float rounding of its terms
    np.testing.assert_allclose(out.astype(np.float64).sum(), exact, atol=1e-3 if dtype == np.float32 else 1e-9)
    again = np.empty_like(out)
    launch(dev, f"sums<{ctype}>", blocks, threads, x, again, np.int64(x.size))
    np.testing.assert_array_equal(again, out)  # the same bits on every run


def test_float16_sums_accumulate_in_float(dev):
    x = np.full(4096, 0.1, np.float16)  # a float16 running sum would stall at 256
    out = np.empty(1, np.float16)
    launch(dev, "sums<__half>", 1, 256, x, out, np.int64(x.size))
    assert abs(float(out[0]) - 4096 * float(x[0])) <= 0.5


def test_dynamic_shared_memory_starts_as_nan(dev, rng):
    x = rng.standard_normal(3 * 64).astype(np.float32)
    y = np.empty_like(x)
    launch(dev, "reverse", 3, 64, x, y, np.int32(0), shared_mem=64 * 4)
    np.testing.assert_array_equal(y, x.reshape(3, 64)[:, ::-1].reshape(-1))
    launch(dev, "reverse", 3, 64, x, y, np.int32(1), shared_mem=65 * 4)  # reads a slot nobody wrote
    assert np.isnan(y).all()


def test_float16_conversions_match_numpy(dev, rng):
    special = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 65504, 65519.99, 65520, 2 ** -24, 2 ** -25,
                        2 ** -25 * 1.0000001, 2 ** -14, 2 ** -14 * (1 - 2 ** -11), 1 + 2 ** -11, 1 + 3 * 2 ** -11,
                        -1e-8, 1e30], np.float32)
    bits = rng.integers(0, 2 ** 32, size=200_000, dtype=np.uint64).astype(np.uint32)
    x = np.concatenate([special, bits.view(np.float32)])
    h = np.empty(x.size, np.float16)
    launch(dev, "to_half", 8, 256, x, h, np.int64(x.size))
    with np.errstate(over="ignore"):  # large floats round to infinity, as they must
        want = x.astype(np.float16)
    finite = ~np.isnan(want)
    np.testing.assert_array_equal(h.view(np.uint16)[finite], want.view(np.uint16)[finite])
    assert np.isnan(h[~finite]).all()
    back = np.empty(x.size, np.float32)
    launch(dev, "from_half", 8, 256, h, back, np.int64(x.size))
    np.testing.assert_array_equal(back[finite], h[finite].astype(np.float32))


def test_grid_and_block_coordinates(dev):
    grid, block = (3, 2, 2), (4, 2, 3)
    out = np.full(np.prod(grid) * np.prod(block), -1, np.int32)
    launch(dev, "coordinates", grid, block, out)
    want = [((bx * 8 + by) * 8 + bz) * 1000 + (tx * 8 + ty) * 8 + tz
            for bz in range(2) for by in range(2) for bx in range(3)
            for tz in range(3) for ty in range(2) for tx in range(4)]
    np.testing.assert_array_equal(out, want)


@pytest.mark.parametrize("descending", [False, True], ids=["ascending", "descending"])
def test_a_missing_barrier_shows_in_one_schedule(dev, descending):
    """Thread t reads what t - 1 wrote: correct with the barrier in either schedule; without it,
    right only when t - 1 happened to run first (the race a GPU would have)."""
    order = _emu.descending_schedule if descending else contextlib.nullcontext
    want = np.arange(64, dtype=np.float32) + 99.0
    for base, barrier in ((100.0, 1), (200.0, 0)):
        y = np.empty(64, np.float32)
        with order():
            launch(dev, "shift", 1, 64, y, np.float32(base), np.int32(barrier))
        if barrier or not descending:
            np.testing.assert_array_equal(y, want + (base - 100.0))
        else:  # it read the shared array before thread t - 1 wrote this launch's values
            assert not np.array_equal(y, want + (base - 100.0))


def test_launch_limits_cap_blocks_and_threads(dev):
    assert threads_per_block(256) == 256
    with launch_limits(threads=32, blocks=2):
        assert threads_per_block(256) == 32 and grid_blocks(dev, 10 ** 6, 32) == 2
    with pytest.raises(ValueError, match="multiple of 32"):
        with launch_limits(threads=48):
            pass


# --------------------------------------------------------------------------------------------
# mistakes: each an error that names the kernel, never a hang; the next launch works
# --------------------------------------------------------------------------------------------

MISTAKES = [
    ("early_exit", 32, "thread (5,0,0) reached __syncthreads"),
    ("split_barrier", 32, "while 16 thread(s) wait at the one at "),
    ("warp_vs_barrier", 32, "deadlock in block (0,0,0) of 32 threads"),
    ("shfl_outside_mask", 32, "lane 3 reads lane 20, which is not in the mask 0x0000ffff"),
    ("mask_without_caller", 32, "does not name the calling lane"),
    ("traps", 32, "__trap() at "),
    ("half_warp", 40, "mask 0x0000ffff names lanes beyond the 8 threads of warp 1"),
]


@pytest.mark.parametrize("kernel, threads, text", MISTAKES)
def test_kernel_mistakes_are_errors(dev, kernel, threads, text):
    args = (np.zeros(threads, np.int32), np.zeros(threads, np.int32)) if kernel == "half_warp" else \
        (np.zeros(threads, np.float32),)
    with pytest.raises(_emu.EmulatorError, match=r"cupy-emu: " + kernel) as info:
        launch(dev, kernel, 1, threads, *args)
    assert text in str(info.value)
    ok = np.empty(100, np.float32)
    launch(dev, "fill", 2, 64, ok, np.float32(3), np.int64(100))  # the emulator recovered
    assert (ok == 3).all()


@pytest.mark.parametrize("args, text", [
    ((np.zeros(4, np.float64), np.float32(1), np.int64(4)), "argument 0 is *f8, the kernel's parameter is *f4"),
    ((np.zeros(4, np.float32), np.float64(1), np.int64(4)), "argument 1 is f8, the kernel's parameter is f4"),
    ((np.zeros(4, np.float32), np.float32(1), np.int32(4)), "argument 2 is i4, the kernel's parameter is i8"),
    ((np.zeros(4, np.float32), np.float32(1)), "launched with 2 arguments, the kernel takes 3"),
])
def test_arguments_must_match_the_signature(dev, args, text):
    with pytest.raises(_emu.EmulatorError, match="fill: ") as info:
        launch(dev, "fill", 1, 32, *args)
    assert text in str(info.value)


def test_argument_rules_before_any_launch(dev):
    y = np.zeros(8, np.float32)
    with pytest.raises(KernelError, match="argument 2 is int"):
        launch(dev, "fill", 1, 32, y, np.float32(1), 8)  # a bare Python int: CUDA would misread it
    with pytest.raises(KernelError, match="non-contiguous"):
        launch(dev, "fill", 1, 32, y[::2], np.float32(1), np.int64(4))
    read_only = np.zeros(8, np.float32)
    read_only.setflags(write=False)
    with pytest.raises(_emu.EmulatorError, match="read-only array, but the kernel writes through parameter 0"):
        launch(dev, "fill", 1, 32, read_only, np.float32(1), np.int64(8))
    with pytest.raises(KernelError, match="not among its declared kernels"):
        launch(dev, "fill<float>", 1, 32, y, np.float32(1), np.int64(8))


def test_written_arrays_must_not_overlap_others(dev):
    x = np.zeros(64, np.float32)
    source = x[:32]
    source.setflags(write=False)
    with pytest.raises(_emu.EmulatorError, match="argument 1 \\(written\\) overlaps argument 0"):
        launch(dev, "reverse", 1, 32, source, x[16:48], np.int32(0), shared_mem=32 * 4)


@pytest.mark.parametrize("grid, block, shared, text", [
    ((1,), (2048,), 0, "has 2048 threads; a block has 1 to 1024"),
    ((1, 70000), (32,), 0, "out of range"),
    ((1,), (32,), 64 << 10, "dynamic shared memory"),
])
def test_launch_geometry_is_checked(dev, grid, block, shared, text):
    with pytest.raises(_emu.EmulatorError, match=text):
        launch(dev, "fill", grid, block, np.zeros(4, np.float32), np.float32(0), np.int64(4), shared_mem=shared)


@sanitized
def test_write_past_a_view_is_an_overflow(dev):
    y = np.zeros(40, np.float32)
    with pytest.raises(_emu.EmulatorError, match="AddressSanitizer: heap-buffer-overflow") as info:
        launch(dev, "write_past", 1, 32, y[:30], np.int32(30), np.int32(1))  # y[30] lies in y, past the view
    assert "write_past" in str(info.value) and "emu_cases.cu" in str(info.value)


@sanitized
def test_shared_array_overflow_is_reported(dev):
    with pytest.raises(_emu.EmulatorError, match="Sanitizer") as info:
        launch(dev, "shared_overflow", 1, 32, np.zeros(32, np.float32), np.int32(1))
    assert "emu_cases.cu" in str(info.value)


@sanitized
def test_signed_overflow_is_reported(dev):
    with pytest.raises(_emu.EmulatorError, match=r"UndefinedBehaviorSanitizer: signed integer overflow \(\+\) at "
                                                 r".*emu_cases.cu:\d+:\d+, block \(0,0,0\) thread \(1,0,0\)"):
        launch(dev, "signed_overflow", 1, 32, np.zeros(32, np.int32), np.int32(2 ** 31 - 1))
