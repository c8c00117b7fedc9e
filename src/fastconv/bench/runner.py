"""Running the suite: for each case, the reference's result first, then every contender verified
against it and, only if it matches, timed.

Statuses of a (case, contender) result:

- ``ok``: matched the reference, then timed;
- ``FAIL``: ran but its result differs from the reference's (not timed);
- ``error``: raised an exception (not timed; the message is kept);
- ``n/a``: the backend does not implement this op (NotImplementedError from dispatch), or the
  layout does not exist for the kind (channels_last for dense), or the reference could not run the
  case, so nothing could be verified.

``FAIL`` and ``error`` make ``fastconv bench`` exit with status 1.
"""

from __future__ import annotations

import sys
import time
from datetime import datetime, timezone
from dataclasses import dataclass, field

import numpy as np

from .. import _threads
from .._dispatch import REGISTRY, backend_status
from .cases import Case, Contender, fastconv_contenders, torch_contenders, verify
from .machine import core_round_trip, cpu_speed, gpu_ceilings, machine_info, machine_now
from .suite import Shape
from .timing import Policy, Stats, round_done
from .workers import start_workers

FAILED = ("FAIL", "error")


@dataclass
class Config:
    shapes: tuple[Shape, ...]
    passes: tuple[str, ...]
    backends: tuple[str, ...]  # fastconv backends to time (the reference always runs as the oracle)
    dtype: str = "float32"
    threads: int | None = None  # None: fastconv.get_num_threads()
    policy: Policy = field(default_factory=Policy)
    torch: bool = True
    seed: int = 0
    unavailable: dict = field(default_factory=dict)  # backend -> why it cannot load here
    command: str = ""  # the command line, for the report
    devices: tuple[str, ...] = ("cpu", "gpu")  # whose contenders run
    isolate: bool = True  # each contender in a worker process, stopped while others run (.workers)

    def cases(self) -> list[Case]:
        dtype = np.dtype(self.dtype)
        return [Case(s, p, dtype) for s in self.shapes for p in s.passes if p in self.passes]


def resolve_backends(names: list[str] | None, devices=("cpu", "gpu")) -> tuple[tuple[str, ...], dict[str, str]]:
    """``(backends to run, {unavailable: reason})``. Default: every available backend on
    ``devices`` but the emulator (``cupy-emu`` runs GPU code on the CPU to verify it; its times
    mean nothing).

    Naming an unknown backend, one that cannot load here, or one on another device is an error
    that says why.
    """
    status = backend_status()
    if names is None:
        on = {n: reason for n, reason in status.items() if REGISTRY[n].device in devices}
        return (tuple(n for n, reason in on.items() if reason is None and not REGISTRY[n].emulated),
                {n: reason for n, reason in on.items() if reason is not None})
    for name in names:
        if name not in REGISTRY:
            raise ValueError(f"bench: unknown backend {name!r}; known backends: {', '.join(REGISTRY)}")
        if status[name] is not None:
            raise ValueError(f"bench: {status[name]}")
        if REGISTRY[name].device not in devices:
            raise ValueError(f"bench: backend {name!r} runs on the {REGISTRY[name].device.upper()}, "
                             f"outside --device {','.join(devices)}")
    return tuple(dict.fromkeys(names)), {}


def import_torch():
    """PyTorch, or None when it is not installed."""
    try:
        import torch
    except ImportError:
        return None
    return torch


class Progress:
    """A plain progress bar on stderr: redrawn in place on a terminal, one line per case otherwise."""

    def __init__(self, total: int, stream=None, width: int = 28):
        self.total, self.width, self.done = total, width, 0
        self.stream = sys.stderr if stream is None else stream
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.start = time.perf_counter()

    def _draw(self, label: str) -> None:
        filled = int(self.width * self.done / max(self.total, 1))
        bar = "#" * filled + "-" * (self.width - filled)
        elapsed = time.perf_counter() - self.start
        self.stream.write(f"\r\x1b[K[{bar}] {self.done}/{self.total} {elapsed:4.0f}s {label}"[:150])
        self.stream.flush()

    def start_case(self, label: str) -> None:
        if self.tty:
            self._draw(label)
        else:
            elapsed = time.perf_counter() - self.start
            self.stream.write(f"[{self.done + 1}/{self.total}] {elapsed:4.0f}s {label}\n")

    def step(self, label: str) -> None:
        if self.tty:
            self._draw(label)

    def finish_case(self) -> None:
        self.done += 1
        if self.tty:
            self._draw("")

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")


def floor_ms(case: Case, ceilings: dict | None) -> float | None:
    """The least time the case can take on the GPU measured by ``ceilings``: the larger of its FLOPs
    over the GEMM rate and its bytes over the copy bandwidth (None without ceilings)."""
    if not ceilings:
        return None
    amount, unit = case.work()
    compute = amount / (ceilings["gflops"] * 1e9) if unit == "FLOP" else 0.0
    memory = case.shape.min_bytes(case.pass_name, case.dtype.itemsize) / (ceilings["gbps"] * 1e9)
    return max(compute, memory) * 1e3


def _record(case: Case, contender: Contender, status: str, reason: str = "", verdict=None,
            stats: Stats | None = None, times=(), ceilings: dict | None = None) -> dict:
    amount, unit = case.work()
    rec = dict(shape=case.shape.name, kind=case.shape.kind, pass_name=case.pass_name,
               contender=contender.name, family=contender.family, backend=contender.backend,
               device=contender.device, layout=contender.layout, mode=contender.mode, group=contender.group,
               status=status, reason=reason, work=amount, work_unit=unit, error_ratio=None, exact=None)
    if verdict is not None:
        rec.update(error_ratio=verdict.error_ratio if np.isfinite(verdict.error_ratio) else None,
                   exact=verdict.exact)
    if stats is not None:
        rec.update(median_ms=stats.median, q1_ms=stats.q1, q3_ms=stats.q3, min_ms=stats.min,
                   max_ms=stats.max, repeats=stats.repeats, spread_pct=stats.spread_pct,
                   rate=amount / (stats.median * 1e-3) / 1e9, times_ms=[t * 1e3 for t in times])
        if contender.device == "gpu":
            rec.update(floor_ms=floor_ms(case, ceilings))
    return rec


class CaseRun:
    """One case's contenders across the run: verified once, then timed round by round, all rounds
    at once (:func:`run_case`) or one round per sweep over the suite (:func:`run`)."""

    def __init__(self, case: Case, workers, seed: int, progress=None, oracle=None):
        """The reference's result, then each contender's first call verified against it.
        ``workers``: one per contender; ``oracle``: the reference's worker (default: the contender
        named "reference" among them)."""
        self.case, self.seed = case, seed
        self.records: list[dict | None] = []
        self.ready = []  # (slot in records, worker, verdict) of the contenders to time
        self.times = {}  # id(worker) -> its runs so far (seconds), or "error: why"
        self.ends = {}  # id(worker) -> its runs so far at the end of each round, round 1 first
        oracle = oracle or next(w for w in workers if w.contender.name == "reference")
        self.holding = {id(oracle): oracle}  # the workers that hold the case's arrays now
        status, want = oracle.call("prepare", case, seed)
        if status != "ok":  # without the oracle nothing can be verified, so nothing is timed
            reason = f"the reference cannot run this case: {want}"
            self.records = [_record(case, w.contender, "n/a", reason) for w in workers if w.contender.applies(case)]
            return
        for w in workers:
            contender = w.contender
            if progress is not None:
                progress.step(f"{case.id} {contender.name}")
            if not contender.applies(case):
                continue
            status, got = (status, want) if w is oracle else w.call("prepare", case, seed)
            self.holding[id(w)] = w
            if status != "ok":
                self.records.append(_record(case, contender, status, got))
                continue
            verdict = verify(got, want)
            if not verdict.ok:
                self.records.append(_record(case, contender, "FAIL", f"differs from the reference: max error "
                                            f"{verdict.error_ratio:.3g}x the tolerance", verdict))
                continue
            self.ready.append((len(self.records), w, verdict))
            self.records.append(None)  # filled in once timed
            self.times[id(w)] = []
            self.ends[id(w)] = []

    def time(self, steps, policy: Policy) -> None:
        """Rounds ``steps`` (1-based) of every verified contender, after a warm-up the first time; a
        worker that no longer holds the case (an earlier sweep's :meth:`release`) prepares it again
        first, and that untimed call is its warm-up (JIT compilation and thread start-up are behind
        it by then), unless its runs so far already make its share of these rounds."""
        timing, again = [], set()  # the workers to time now; those prepared again
        for _, w, _ in self.ready:
            t = self.times[id(w)]
            if isinstance(t, str) or (id(w) not in self.holding and round_done(t, policy, max(steps))):
                continue  # failed in an earlier round, or nothing to run in these rounds
            if id(w) not in self.holding:
                status, why = w.call("prepare", self.case, self.seed, False)
                self.holding[id(w)] = w
                if status != "ok":
                    self.times[id(w)] = f"error: {why}"
                    continue
                again.add(id(w))
            timing.append(w)
        for step in (0, *steps):  # step 0: the warm-ups
            for w in timing:
                if isinstance(self.times[id(w)], str) or (step == 0 and id(w) in again):
                    continue  # failed in an earlier round, or warmed up by its preparation
                status, result = w.call("round", step, self.times[id(w)])
                self.times[id(w)] = result if status == "ok" else f"error: {result}"
            for _, w, _ in self.ready if step else ():  # timed now or skipped: where its runs stand
                if not isinstance(self.times[id(w)], str):
                    self.ends[id(w)].append(len(self.times[id(w)]))

    def release(self) -> None:
        """Every worker that holds the case's arrays lets them go."""
        for w in self.holding.values():
            w.call("release")
        self.holding = {}

    def results(self, ceilings: dict | None = None) -> list[dict]:
        """The case's records (``ceilings``, the GPU's measured rates, give GPU records their
        roofline floor)."""
        records = list(self.records)
        for slot, w, verdict in self.ready:
            t = self.times[id(w)]
            if isinstance(t, str):
                records[slot] = _record(self.case, w.contender, "error", t.removeprefix("error: "))
                continue
            records[slot] = _record(self.case, w.contender, "ok", "", verdict, Stats.of(t), t, ceilings)
            ends = self.ends[id(w)]
            records[slot]["round_runs"] = [b - a for a, b in zip([0, *ends], ends)]  # runs of round 1, 2, ...
        return records


def run_case(case: Case, workers, policy: Policy, seed: int, progress=None, ceilings: dict | None = None,
             oracle=None) -> list[dict]:
    """All contenders on one case, every round at once: verify-then-time (see :class:`CaseRun`)."""
    c = CaseRun(case, workers, seed, progress, oracle)
    c.time(range(1, max(1, policy.rounds) + 1), policy)
    c.release()
    return c.results(ceilings)


class SuiteRun:
    """One run of the suite, driven sweep by sweep: its workers start here, :meth:`sweep` runs
    round n of every case (the first sweep verifies each case first), :meth:`close` ends the
    workers and :meth:`document` returns the results. :func:`run` runs every sweep in turn; two SuiteRuns can take
    turns sweep by sweep (their workers stopped while the other's run), so that both meet the same
    phases of the machine (``benchmarks/agreement.py``)."""

    def __init__(self, config: Config, progress_stream=None, show_progress: bool = True):
        self.config = config
        self.torch = import_torch() if config.torch else None
        self.contenders = fastconv_contenders(config.backends)
        if self.torch is not None:
            self.contenders += torch_contenders(self.torch, config.devices)
        self.ceilings = gpu_ceilings(config.dtype) if any(c.device == "gpu" for c in self.contenders) else None
        self.threads = _threads.get_num_threads() if config.threads is None else config.threads
        self.cases = config.cases()
        self.sweeps = max(1, config.policy.rounds)  # round r of every case in sweep r over the suite (.timing)
        self.progress = Progress(len(self.cases) * self.sweeps, progress_stream) if show_progress else None
        self.started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
        self.before = machine_now("before")
        self.started = time.perf_counter()
        with _threads.num_threads(self.threads):
            self.machine = machine_info(self.torch)
        self.machine["threads"]["torch"] = self.threads if self.torch is not None else None  # the workers' setting
        self.runs: list[CaseRun] = []
        self.states = []  # the machine at the start of each sweep
        oracle = Contender("reference", "fastconv", "cpu", backend="reference")
        self.workers = start_workers([oracle] + [c for c in self.contenders if c != oracle], self.threads,
                                     config.policy, config.isolate)
        self.timed = [w for w in self.workers if w.contender in self.contenders]

    def sweep(self, n: int) -> None:
        """Sweep ``n`` (1-based) over the suite."""
        # the machine at the start of each sweep (every worker stopped): which sweeps met a slow
        # phase or the cores on two dies
        self.states.append(dict(cpu_gflops=cpu_speed(0.1), core_round_trip_ns=core_round_trip(0.05)))
        for i, case in enumerate(self.cases):
            if self.progress is not None:
                self.progress.start_case(f"{case.id} (sweep {n}/{self.sweeps})")
            if n == 1:
                self.runs.append(CaseRun(case, self.timed, self.config.seed, self.progress, self.workers[0]))
            self.runs[i].time((n,), self.config.policy)
            self.runs[i].release()
            if self.progress is not None:
                self.progress.finish_case()

    def close(self) -> None:
        """End the workers (also when a sweep raised)."""
        for w in self.workers:
            w.close()
        if self.progress is not None:
            self.progress.close()

    def document(self) -> dict:
        """The raw results (plain JSON-able dicts) with the settings they were taken under."""
        config, policy = self.config, self.config.policy
        return dict(
            schema=1,
            settings=dict(started_at=self.started_at, command=config.command, dtype=config.dtype,
                          threads=self.threads, passes=list(config.passes),
                          backends=list(config.backends), unavailable=dict(config.unavailable),
                          devices=list(config.devices), gpu_ceilings=self.ceilings,
                          contenders=[c.name for c in self.contenders],
                          torch=None if self.torch is None else self.torch.__version__, seed=config.seed,
                          timing=dict(budget_s=policy.budget_s, min_repeats=policy.min_repeats,
                                      max_repeats=policy.max_repeats, repeat=policy.repeat, rounds=self.sweeps,
                                      warmup=policy.warmup, rule=policy.describe()),
                          seconds=time.perf_counter() - self.started, **self.before, sweeps=self.states,
                          **machine_now("after")),
            machine=self.machine,
            shapes=[s.to_json() for s in config.shapes],
            results=[r for c in self.runs for r in c.results(self.ceilings)],
        )


def run(config: Config, progress_stream=None, show_progress: bool = True) -> dict:
    """Run the suite; the raw results (plain JSON-able dicts) with the settings they were taken under."""
    suite = SuiteRun(config, progress_stream, show_progress)
    try:
        for n in range(1, suite.sweeps + 1):
            suite.sweep(n)
    finally:
        suite.close()
    return suite.document()
