"""One benchmark per (shape, pass, contender): verified against the reference once, warmed up, timed.

See conftest.py for the commands and options.
"""

import functools
import time
import zlib

import numpy as np
import pytest

from fastconv.bench.cases import Contender, make_inputs, verify
from fastconv.bench.report import RATE_UNIT


#: A pause before timing, long enough for the thread pools of what ran before (the reference's BLAS,
#: the previous test's contender) to stop spinning: a C++ conv right after a 2-thread NumPy matmul
#: ran 1.5-1.6x slower, and 0.3 s later at its usual speed (2-core AMD EPYC). pytest-benchmark times
#: one contender per test, so one pause per test keeps each contender's runs its own.
SETTLE_S = 0.3


@functools.lru_cache(maxsize=1)  # cases run case-major, so one case's inputs and result at a time
def reference_result(case):
    """The case's inputs (seeded by its name: the same values for every contender) and the reference's output."""
    arrays = make_inputs(case, np.random.default_rng(zlib.crc32(case.id.encode())))
    prepared = Contender("reference", "fastconv", "cpu", backend="reference").prepare(case, arrays)
    return arrays, prepared.to_host(prepared.fn())


def test_kernel(benchmark, case, contender, torch_module, pinned_threads):
    arrays, want = reference_result(case)
    try:
        prepared = contender.prepare(case, arrays, torch_module)
        got = prepared.to_host(prepared.fn())
    except NotImplementedError as exc:
        pytest.skip(str(exc))
    verdict = verify(got, want)
    assert verdict.ok, (f"{contender.name} differs from the reference on {case.id}: max error "
                        f"{verdict.error_ratio:.3g}x the tolerance; not timed")
    fn, sync = prepared.fn, prepared.sync
    timed = fn if sync is None else (lambda: (fn(), sync()))  # GPU: the clock waits for the device
    timed()  # warm-up beyond the verification call
    s = case.shape
    benchmark.group = case.id
    amount, unit = case.work()
    benchmark.extra_info.update(
        shape=s.name, kind=s.kind, pass_name=case.pass_name, contender=contender.name,
        device=contender.device, layout=contender.layout, dtype=case.dtype.name, threads=pinned_threads,
        geometry=s.describe(), x_shape=list(s.x_shape), w_shape=None if s.w_shape is None else list(s.w_shape),
        y_shape=list(s.y_shape), work=amount, work_unit=unit, exact=verdict.exact)
    if not benchmark.disabled:
        time.sleep(SETTLE_S)
    benchmark(timed)
    if benchmark.stats:  # None under --benchmark-disable
        benchmark.extra_info["rate_unit"] = RATE_UNIT[unit]
        benchmark.extra_info["rate"] = amount / benchmark.stats.stats.median / 1e9
