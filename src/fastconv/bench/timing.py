"""Timing: how many runs, which clock, and the statistics reported.

A case's first call is its verification; one more warm-up call follows (JIT compilation, NVRTC,
first-touch page faults, BLAS thread start-up all land in those), unless the first call alone took
longer than the budget. Then timed runs: ``repeat`` of them when given, otherwise at least
``min_repeats`` and more until ``budget_s`` seconds of runs have been spent (at most
``max_repeats``). So cheap cases get many runs and the NumPy reference's multi-second passes get
``min_repeats``; the full default suite finishes in minutes on two cores.

The contenders of one case are timed in ``rounds`` interleaved rounds, each taking its share of
every contender's runs and budget, so all of them meet the same phases of a noisy machine: on these
shared VMs a process's speed can halve for seconds at a time, and timing one contender after the
other turned that into ratios off by up to 2x. ``fastconv bench`` runs round r of every case in
the r-th sweep over the whole suite (:class:`.runner.SuiteRun`; a worker prepares the case again in
each sweep, and that first call is not timed), so a case's runs are spread over the run's whole
length rather than a few seconds of it: a slow phase of the machine (they last tens of seconds to
minutes) then moves a few of a case's runs, not all of them, and two runs of the bench (the full
one and a one-backend one) can agree shape by shape. With each case's rounds back to back, the 18
consecutive cases of the batch-1 ResNet-50 layers ran 1.02-1.51x (geometric mean 1.24x) their
times in a cpp-only run, PyTorch NCHW's 1.21x: the full run met a slow phase there, and its other
cases ran faster than the cpp-only run's.

CPU contenders are timed with ``time.perf_counter`` around the call. GPU contenders record CUDA
events on the stream around the call and synchronise on the end event, so the time is the
device's, not the launch's.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace

import numpy as np


@dataclass(frozen=True)
class Policy:
    budget_s: float = 0.5
    min_repeats: int = 3
    max_repeats: int = 200
    repeat: int | None = None  # a fixed number of timed runs instead of the budget rule
    warmup: int = 1
    rounds: int = 8  # interleaved rounds over the contenders of a case

    def describe(self) -> str:
        if self.repeat is not None:
            runs = f"{self.repeat} timed runs"
        else:
            runs = (f"timed runs until {self.budget_s:g} s spent, at least {self.min_repeats} "
                    f"and at most {self.max_repeats}")
        return (f"verification call, then {self.warmup} warm-up call(s) (skipped when one call exceeds "
                f"the budget), then {runs}, in {self.rounds} rounds interleaving the contenders, "
                f"each round in its own sweep over the suite; "
                f"median and IQR reported")


#: The policy of ``--quick``: the pipeline end to end in seconds, timings only indicative.
QUICK = Policy(budget_s=0.05, min_repeats=3, max_repeats=20)


def check_count(command: str, name: str, value) -> None:
    """A count option (threads, repeat, batch size) given to ``command``: None (the default) or a
    positive int (not a bool). Else a ValueError naming the command and the option."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"{command}: {name} must be a positive integer, got {value!r}")


def with_budget(command: str, policy, budget):
    """``policy`` (a :class:`Policy` or the e2e one) with its timing budget set to ``budget``
    seconds, which must be positive; ``budget`` None leaves it as it is."""
    if budget is None:
        return policy
    if not budget > 0:
        raise ValueError(f"{command}: budget must be positive seconds, got {budget!r}")
    return replace(policy, budget_s=budget)


def cpu_timer(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


class EventTimer:
    """Times a GPU call with CUDA events: ``new_event()`` makes one, ``elapsed_ms(start, end)``."""

    def __init__(self, new_event, elapsed_ms):
        self.new_event, self.elapsed_ms = new_event, elapsed_ms

    def __call__(self, fn) -> float:
        start, end = self.new_event(), self.new_event()
        start.record()
        fn()
        end.record()
        end.synchronize()
        return self.elapsed_ms(start, end) / 1e3


def cupy_timer():
    import cupy

    return EventTimer(cupy.cuda.Event, cupy.cuda.get_elapsed_time)


def torch_cuda_timer(torch):
    return EventTimer(lambda: torch.cuda.Event(enable_timing=True), lambda s, e: s.elapsed_time(e))


@dataclass(frozen=True)
class Timed:
    """One contender of a case, ready to time: its call, its timer, and how long its first call took."""

    fn: object
    timer: object
    first_call_s: float


def run_round(c: Timed, times: list[float], policy: Policy, step: int) -> None:
    """One contender's share of round ``step`` (0: its warm-up), appended to ``times``: round r (of
    R) runs it until it has r/R of its runs and of its budget, at least ceil(min_repeats*r/R) runs
    (``repeat*r/R`` when fixed), at most ceil(max_repeats*r/R)."""
    if step == 0:
        if c.first_call_s < policy.budget_s:
            for _ in range(policy.warmup):
                c.timer(c.fn)
        return
    while not round_done(times, policy, step):
        times.append(c.timer(c.fn))


def measure(contenders: list[Timed], policy: Policy) -> list[list[float] | Exception]:
    """Timed runs (seconds each) of every contender, after its warm-up, in interleaved rounds (see
    the module docstring and :func:`run_round`). A contender whose call raises is left out of the
    later rounds; its entry is the exception."""
    out: list[list[float] | Exception] = [[] for _ in contenders]
    for step in range(max(1, policy.rounds) + 1):  # step 0: the warm-ups
        for i, c in enumerate(contenders):
            if isinstance(out[i], Exception):
                continue
            try:
                run_round(c, out[i], policy, step)
            except Exception as exc:  # reported against this contender; the others go on
                out[i] = exc
    return out


def round_done(times: list[float], policy: Policy, step: int) -> bool:
    """Whether the runs ``times`` already make a contender's share of round ``step`` (1-based): an
    expensive contender (at its min_repeats) has nothing to run in some rounds."""
    share = step / max(1, policy.rounds)
    if policy.repeat is not None:
        return len(times) >= math.ceil(policy.repeat * share)
    return len(times) >= math.ceil(policy.max_repeats * share) or (
        len(times) >= math.ceil(policy.min_repeats * share) and sum(times) >= policy.budget_s * share)


@dataclass(frozen=True)
class Stats:
    """Statistics of the timed runs, in milliseconds."""

    median: float
    q1: float
    q3: float
    min: float
    max: float
    repeats: int

    @classmethod
    def of(cls, seconds) -> "Stats":
        ms = np.asarray(seconds, dtype=np.float64) * 1e3
        q1, median, q3 = np.percentile(ms, [25, 50, 75])
        return cls(float(median), float(q1), float(q3), float(ms.min()), float(ms.max()), len(ms))

    @property
    def spread_pct(self) -> float:
        """The interquartile range as a percentage of the median."""
        return 100.0 * (self.q3 - self.q1) / self.median if self.median > 0 else 0.0
