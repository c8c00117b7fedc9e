"""``fastconv bench --e2e``: whole networks, PyTorch eager against the same model patched with
``fastconv.torch.patch()``, verified first, then timed in interleaved rounds.

Per model (:mod:`.models`: a CIFAR-size ResNet-18, a CIFAR-size MobileNetV2, LeNet-5; batch 32 of
3x32x32 float32 images, 10 classes) and per pass:

- ``train``: one SGD step, ``zero_grad(set_to_none=True)``, forward, ``cross_entropy``, backward,
  ``optimizer.step()`` (SGD, lr 0.01, momentum 0.9, weight decay 5e-4, the usual CIFAR recipe);
- ``inference``: ``model.eval()``, one forward pass under ``torch.no_grad()``.

Contenders (:data:`CONTENDERS`): PyTorch eager NCHW (the oracle), PyTorch eager channels_last (model
and batch in ``torch.channels_last``), and the same two with the model patched.

**Verification, before any timing.** Every contender builds the model from the same seed (the same
initial weights) and runs one training step on the same first batch, then one eval pass on it; the
loss, the logits, every parameter's gradient, every batch-norm buffer after the step and the eval
logits are compared with PyTorch NCHW's. float32 results of two correct implementations of a deep
network differ by more than rounding: a pre-activation near zero that lands on the other side of a
ReLU in one of them flips that unit's gradient, and on ResNet-18 PyTorch's own channels_last
gradients differ from its NCHW ones by up to 7% of a tensor's largest value (float64 agrees with
itself to 1e-14, but PyTorch's float64 depthwise convolutions ran 20-90 s per MobileNetV2 step here,
too slow to run before every benchmark). So the tolerance is calibrated in the same run by PyTorch
itself: a patched tensor passes when its largest difference from PyTorch NCHW is at most
:data:`NULL_FACTOR` times channels_last PyTorch's, plus :data:`FLOOR` of its scale (the tensor's
largest value, and no less than :data:`SCALE_FLOOR` of the largest value among the tensors of its
kind: batch-norm shifts followed by a 1x1 conv and another batch norm have gradients that are zero
but for rounding). Whether the null happens to flip the units that a contender flips is chance, so
a contender that fails is verified again on up to :data:`REDRAWS` fresh draws (the next seeds'
weights and batches, the oracle and the null drawn again with it) and passes on the first that
passes; the report says which draw it passed on. A contender that fails every draw is not timed; the
report names the tensors that differ and, from a second forward pass with hooks on every leaf
module, the first module whose output differs (:func:`locate`).

**Timing.** Each contender runs in a worker process of its own that is stopped while another one
runs (:mod:`.workers`: thread pools keep spinning after a step), with ``torch.set_num_threads`` and
``fastconv.set_num_threads`` both at the run's thread count (in one process both libraries use one
OpenMP runtime, whichever libgomp was loaded first; the report lists it). Warm-up steps, then
rounds: in each round every contender makes one step in turn, so all of them meet the same phases
of a shared machine; as many rounds as fit the budget, between ``min_rounds`` and ``max_rounds``.
The report gives the median and IQR per contender, steps/s, the ratio of PyTorch's median time to
each contender's (> 1: faster) and issue 21's bars for the patched NCHW model.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from .. import _threads

#: The issue's setting and the default here: the bars were set for 2 threads.
DEFAULT_THREADS = 2
DEFAULT_BATCH = 32
#: A patched tensor may differ from PyTorch NCHW's by this many times what PyTorch's own
#: channels_last result differs by (see the module docstring) ...
NULL_FACTOR = 4.0
#: ... plus this fraction of its scale (about 80 float32 ulps of the tensor's largest value) ...
FLOOR = 1e-5
#: ... the scale being no less than this fraction of the largest value of its kind.
SCALE_FLOOR = 1e-3
#: A patched contender that fails is verified again on up to this many fresh draws (initial
#: weights and batches from the seeds after the run's, the oracle and the null drawn again with it),
#: and passes on the first draw that passes. One flipped ReLU moves a gradient by far more than
#: rounding, and whether the null happens to flip the same units is chance: on a 2-core AMD EPYC
#: Zen 5, patched ResNet-18 (batch 32, float32) failed 3 of 12 seeds (1.1x, 1.6x and 166x the
#: tolerance) while its forward passes were as close to float64 as PyTorch's own (batch-norm outputs
#: within 3.7e-6 against PyTorch's 2.6e-6 and, channels_last, 1e-5; no more sign flips than
#: PyTorch's). A wrong layer fails every draw.
REDRAWS = 2
#: A module's forward output differs (in :func:`locate`) beyond this fraction of its largest value:
#: forward passes are continuous (no flipped ReLU gradients), their float32 differences ~1e-6.
TRACE_TOLERANCE = 1e-4
#: Batches the timed steps cycle through (the first one verifies): a network that saw a single
#: batch over and over would drive its loss, and then its gradients, towards subnormal numbers.
N_BATCHES = 4
PASSES = ("train", "inference")
ORACLE, NULL = "torch-nchw", "torch-cl"
#: (model, speed-up of patched NCHW over this PyTorch contender on the training step, at least)
BARS = (("resnet18", ORACLE, 1.2), ("resnet18", NULL, 1.0), ("mobilenetv2", ORACLE, 1.2),
        ("mobilenetv2", NULL, 1.0), ("lenet5", ORACLE, 1.0))
BAR_CONTENDER = "patched-nchw"


@dataclass(frozen=True)
class E2EContender:
    name: str
    patched: bool
    channels_last: bool

    @property
    def layout(self) -> str:
        return "channels_last" if self.channels_last else "nchw"


CONTENDERS = (E2EContender(ORACLE, False, False), E2EContender(NULL, False, True),
              E2EContender("patched-nchw", True, False), E2EContender("patched-cl", True, True))


@dataclass(frozen=True)
class E2EPolicy:
    warmup: int = 2  # steps per contender and pass after the verification step, not timed
    budget_s: float = 10.0  # timed steps per model and pass, all contenders together
    min_rounds: int = 10
    max_rounds: int = 100
    rounds: int | None = None  # a fixed number of rounds instead of the budget rule

    def rounds_for(self, round_s: float) -> int:
        """Rounds to run when one round (a step of each contender) takes ``round_s`` seconds."""
        if self.rounds is not None:
            return self.rounds
        wanted = math.ceil(self.budget_s / round_s) if round_s > 0 else self.max_rounds
        return max(self.min_rounds, min(self.max_rounds, wanted))

    def describe(self) -> str:
        rule = (f"{self.rounds} rounds" if self.rounds is not None else
                f"as many rounds as fit {self.budget_s:g} s per model and pass, at least {self.min_rounds} "
                f"and at most {self.max_rounds}")
        return (f"the verification step, then {self.warmup} warm-up step(s) per contender and pass, then "
                f"{rule}; each round times one step of every contender in turn; median and IQR reported")


#: ``--quick``: the pipeline end to end in seconds, timings only indicative
QUICK = E2EPolicy(warmup=1, budget_s=0.5, min_rounds=2, max_rounds=5)


# --------------------------------------------------------------------------------------------
# one contender's model, batches and steps (in its worker)
# --------------------------------------------------------------------------------------------

def _torch():
    import torch

    return torch


def make_batches(model: str, batch: int, seed: int):
    """``N_BATCHES`` (x, labels) pairs of unit-normal images and random labels, the same in every
    process: drawn from their own generator, seeded by the run's seed."""
    from .models import MODELS

    torch = _torch()
    spec = MODELS[model]
    g = torch.Generator().manual_seed(seed + 1)
    return [(torch.randn(batch, *spec.input_shape, generator=g), torch.randint(0, spec.num_classes, (batch,), generator=g))
            for _ in range(N_BATCHES)]


class Subject:
    """A contender's model, optimizer and batches; the two timed passes are :meth:`train_step` and
    :meth:`infer`, and the verification calls exactly these."""

    def __init__(self, contender: E2EContender, model: str, batch: int, seed: int):
        torch = _torch()
        from .models import build

        self.seed = seed
        self.model = build(model, seed)
        self.patch_report = None
        if contender.patched:
            import fastconv.torch

            self.patch_report = fastconv.torch.patch(self.model)
        memory_format = torch.channels_last if contender.channels_last else torch.contiguous_format
        self.model.to(memory_format=memory_format)  # in place: the Parameter objects stay
        self.batches = [(x.contiguous(memory_format=memory_format), y) for x, y in make_batches(model, batch, seed)]
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
        self.next_batch = 0

    def batch(self):
        x, y = self.batches[self.next_batch % len(self.batches)]
        self.next_batch += 1
        return x, y

    def train_step(self, x, y):
        """One SGD step; the logits and the loss."""
        torch = _torch()
        self.optimizer.zero_grad(set_to_none=True)
        logits = self.model(x)
        loss = torch.nn.functional.cross_entropy(logits, y)
        loss.backward()
        self.optimizer.step()
        return logits, loss

    def infer(self, x):
        with _torch().no_grad():
            return self.model(x)

    def set_mode(self, pass_name: str) -> None:
        self.model.train(pass_name == "train")

    def run(self, pass_name: str) -> float:
        """One timed step of ``pass_name`` on the next batch: seconds."""
        x, y = self.batch()
        start = time.perf_counter()
        if pass_name == "train":
            self.train_step(x, y)
        else:
            self.infer(x)
        return time.perf_counter() - start

    def verification(self) -> dict[str, np.ndarray]:
        """One training step on the first batch, then one eval pass on it: every tensor that
        verification compares, as NCHW-ordered float64 arrays keyed ``kind:name``."""
        x, y = self.batch()
        self.set_mode("train")
        logits, loss = self.train_step(x, y)
        out = {"loss:loss": _host(loss), "logits:train": _host(logits)}
        for name, p in self.model.named_parameters():
            out[f"grad:{name}"] = _host(p.grad)
        for name, b in self.model.named_buffers():
            out[f"buffer:{name}"] = _host(b)
        self.set_mode("inference")
        out["logits:eval"] = _host(self.infer(x))
        return out

    def trace(self) -> list[tuple[str, str, np.ndarray]]:
        """``(module name, class name, output)`` of every leaf module, in the order they ran, in one
        forward pass on the first batch in training mode (the model as built: call on a fresh one)."""
        leaves = [(n, m) for n, m in self.model.named_modules() if not list(m.children())]
        seen, handles = [], []
        for name, module in leaves:
            def hook(module, inputs, output, name=name):
                if hasattr(output, "detach"):  # in-place ReLUs overwrite it later: copy now
                    seen.append((name, type(module).__module__ + "." + type(module).__name__, _host(output)))
            handles.append(module.register_forward_hook(hook))
        try:
            self.set_mode("train")
            x, _ = self.batches[0]
            with _torch().no_grad():
                self.model(x)
        finally:
            for h in handles:
                h.remove()
        return seen


def _host(t) -> np.ndarray:
    # in its own dtype (float32): half the bytes of float64 through the worker's pipe; compare()
    # and locate() compute the differences in float64
    return t.detach().contiguous().numpy().copy()


def _openmp_runtimes() -> list[str]:
    """The OpenMP libraries mapped into this process (one libgomp serves both torch and fastconv
    when both link the same soname)."""
    try:
        with open("/proc/self/maps") as f:
            return sorted({line.split()[-1] for line in f if "gomp" in line or "libomp" in line or "iomp" in line})
    except OSError:
        return []


class E2ESession:
    """A contender's worker (see :mod:`.workers`): holds one model at a time."""

    def __init__(self, contender: E2EContender, threads: int, policy: E2EPolicy):
        torch = _torch()
        import fastconv.torch  # noqa: F401  (registers the ops before anything is timed)

        self.contender, self.policy = contender, policy
        torch.set_num_threads(threads)
        _threads.set_num_threads(threads)
        # an optimizer's first construction imports torch._dynamo (2 s here): done now, while the
        # workers start side by side, instead of in each one's first verification step
        torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
        self.subject = None

    def threads(self) -> dict:
        torch = _torch()
        return dict(torch=torch.get_num_threads(), torch_interop=torch.get_num_interop_threads(),
                    fastconv=_threads.get_num_threads(), openmp=_openmp_runtimes())

    def prepare(self, model: str, batch: int, seed: int):
        """Build the model and run the verification: ``("ok", arrays, info)`` (info: the parameter
        count and what patch() did) or ``("error", why, None)``."""
        self.subject = None
        try:
            self.subject = Subject(self.contender, model, batch, seed)
            arrays = self.subject.verification()
        except Exception as exc:  # reported against the contender; the run goes on
            self.subject = None
            return "error", f"{type(exc).__name__}: {exc}", None
        report = self.subject.patch_report
        patch = None if report is None else dict(swapped=_count(k for _, k in report.swapped),
                                                 skipped=[f"{n}: {r}" for n, r in report.skipped])
        return "ok", arrays, dict(parameters=sum(p.numel() for p in self.subject.model.parameters()), patch=patch)

    def warmup(self, pass_name: str):
        """``("ok", seconds of each warm-up step)`` or ``("error", why)``."""
        try:
            self.subject.set_mode(pass_name)
            return "ok", [self.subject.run(pass_name) for _ in range(self.policy.warmup)]
        except Exception as exc:  # reported against the contender; the others go on
            return "error", f"{type(exc).__name__}: {exc}"

    def step(self, pass_name: str):
        """``("ok", seconds)`` or ``("error", why)``."""
        try:
            return "ok", self.subject.run(pass_name)
        except Exception as exc:
            return "error", f"{type(exc).__name__}: {exc}"

    def trace(self, model: str, batch: int, seed: int):
        return Subject(self.contender, model, batch, seed).trace()

    def release(self):
        self.subject = None


def _count(kinds) -> dict[str, int]:
    out: dict[str, int] = {}
    for k in kinds:
        out[k] = out.get(k, 0) + 1
    return out


# --------------------------------------------------------------------------------------------
# verification
# --------------------------------------------------------------------------------------------

@dataclass
class Verdict:
    ok: bool
    ratio: float  # the largest difference / tolerance over the tensors (<= 1: passes)
    worst: str  # the tensor with that ratio
    failing: list[tuple[str, float]] = field(default_factory=list)  # (tensor, ratio) over 1, worst first
    note: str = ""  # e.g. what locate() found


def compare(got: dict, want: dict, null: dict) -> Verdict:
    """``got``'s tensors against ``want``'s (PyTorch NCHW), with tolerances from ``null``
    (PyTorch channels_last; see the module docstring)."""
    missing = sorted(set(want) ^ set(got))
    if missing:
        return Verdict(False, math.inf, missing[0], [(k, math.inf) for k in missing],
                       "the two models do not have the same parameters and buffers")
    kind_scale: dict[str, float] = {}
    for key, w in want.items():
        kind = key.split(":")[0]
        kind_scale[kind] = max(kind_scale.get(kind, 0.0), float(np.abs(w).max()) if w.size else 0.0)
    ratios = {}
    for key, w in want.items():
        g, w = got[key].astype(np.float64), w.astype(np.float64)
        if g.shape != w.shape:
            ratios[key] = math.inf
            continue
        if not w.size:
            ratios[key] = 0.0
            continue
        scale = max(float(np.abs(w).max()), SCALE_FLOOR * kind_scale[key.split(":")[0]])
        null_diff = float(np.abs(null[key].astype(np.float64) - w).max()) if key in null and null[key].shape == w.shape else 0.0
        tolerance = NULL_FACTOR * null_diff + FLOOR * scale
        diff = float(np.abs(g - w).max())  # NaN anywhere makes it NaN: a failure below
        ratios[key] = diff / tolerance if tolerance > 0 else (0.0 if diff == 0 else math.inf)
        if not math.isfinite(diff):
            ratios[key] = math.inf
    worst = max(ratios, key=ratios.get)
    failing = sorted(((k, r) for k, r in ratios.items() if not r <= 1.0), key=lambda kv: -kv[1])
    return Verdict(not failing, ratios[worst], worst, failing)


def locate(got: list, want: list) -> str:
    """The first leaf module whose forward output differs, from two :meth:`Subject.trace` lists."""
    for i, ((name, kind, g), (want_name, want_kind, w)) in enumerate(zip(got, want)):
        if name != want_name:
            return f"the modules ran in a different order: {name} where PyTorch ran {want_name}"
        if g.shape != w.shape:
            return f"first differing module: {name} ({kind}): output shape {g.shape}, PyTorch's {w.shape}"
        g, w = g.astype(np.float64), w.astype(np.float64)
        scale = float(np.abs(w).max()) if w.size else 0.0
        diff = float(np.abs(g - w).max()) if w.size else 0.0
        if not diff <= TRACE_TOLERANCE * max(scale, 1e-30):
            before = f"the output of {got[i - 1][0]} before it matched" if i else "it is the first module"
            return (f"first differing module: {name} ({kind}, PyTorch's {want_kind}): largest difference "
                    f"{diff:.3g} ({diff / max(scale, 1e-30):.2g} of its largest value); {before}")
    if len(got) != len(want):
        return f"{len(got)} leaf modules ran, PyTorch ran {len(want)}"
    return (f"every leaf module's forward output matches (within {TRACE_TOLERANCE:g} of its largest value): "
            f"the difference is in the backward pass or the optimizer step")


# --------------------------------------------------------------------------------------------
# the run
# --------------------------------------------------------------------------------------------

def _stats(seconds) -> dict:
    ms = np.asarray(seconds, dtype=np.float64) * 1e3
    q1, median, q3 = np.percentile(ms, [25, 50, 75])
    return dict(median_ms=float(median), q1_ms=float(q1), q3_ms=float(q3), min_ms=float(ms.min()),
                max_ms=float(ms.max()), steps=len(ms), spread_pct=float(100 * (q3 - q1) / median),
                steps_per_s=float(1e3 / median), times_ms=[float(t) for t in ms])


def _paired(mine, theirs) -> dict:
    """Speed-up over another contender from the same rounds: median and quartiles of the per-round
    ratios (their step's time / mine), steadier than a ratio of medians when the machine drifts."""
    r = np.asarray(theirs) / np.asarray(mine)
    q1, median, q3 = np.percentile(r, [25, 50, 75])
    return dict(median=float(median), q1=float(q1), q3=float(q3))


def run_model(model: str, workers: list, batch: int, seed: int, policy: E2EPolicy, log) -> tuple[list, dict]:
    """Verify every contender on ``model``, then time the verified ones: (records, model info)."""
    prepared = {}
    info = dict(patch={})
    for w in workers:
        log(f"{model}: {w.contender.name}: verification step")
        status, arrays, about = w.call("prepare", model, batch, seed)
        prepared[w.contender.name] = (status, arrays)
        if about is not None:
            info["parameters"] = about["parameters"]
            if about["patch"] is not None:
                info["patch"][w.contender.name] = about["patch"]
    records, ready = [], []
    oracle_status, want = prepared[ORACLE]
    null_status, null = prepared[NULL]
    for w in workers:
        name = w.contender.name
        status, arrays = prepared[name]
        rec = dict(model=model, contender=name, patched=w.contender.patched, layout=w.contender.layout)
        if status != "ok":
            rec.update(status="error", reason=arrays)
        elif name == ORACLE:
            rec.update(status="ok", reason="", verification="the oracle")
        elif oracle_status != "ok":
            rec.update(status="error", reason=f"{ORACLE} could not run, so nothing could be verified: {want}")
        elif name == NULL:
            rec.update(status="ok", reason="", verification="the null: the tolerance is calibrated on it")
        else:
            verdict = compare(arrays, want, null if null_status == "ok" else {})
            if null_status != "ok":
                verdict.note = f"({NULL} could not run: the tolerance is its floor alone) " + verdict.note
            draws = [] if verdict.ok else _redraw(model, w, workers, batch, seed, log)
            rec["draws"] = [dict(seed=s, ok=v.ok, ratio=v.ratio, worst=v.worst, failing=[[k, r] for k, r in v.failing])
                            for s, v in [(seed, verdict), *draws]]
            final = draws[-1][1] if draws and draws[-1][1].ok else verdict
            rec.update(verification_ratio=final.ratio, worst_tensor=final.worst)
            if verdict.ok:
                rec.update(status="ok", reason="", verification=f"ok: worst {verdict.ratio:.2f} of the tolerance "
                                                               f"({verdict.worst})")
            elif final.ok:
                rec.update(status="ok", reason="", verification=(
                    f"ok on draw {len(draws) + 1} (seed {draws[-1][0]}): worst {final.ratio:.2f} of the tolerance "
                    f"({final.worst}); seed {seed} differed in {len(verdict.failing)} tensor(s), worst "
                    f"{verdict.failing[0][0]} ({verdict.ratio:.3g}x)"))
            else:
                log(f"{model}: {name}: FAILED verification; locating the first differing module")
                try:
                    where = locate(w.call("trace", model, batch, seed),
                                   next(o for o in workers if o.contender.name == ORACLE).call("trace", model, batch, seed))
                except Exception as exc:  # the diagnosis is a help; the failure stands without it
                    where = f"could not trace the modules: {type(exc).__name__}: {exc}"
                shown = ", ".join(f"{k} ({r:.3g}x)" for k, r in verdict.failing[:8])
                more = len(verdict.failing) - 8
                again = "".join(f"; seed {s}: {v.failing[0][0]} ({v.ratio:.3g}x)" for s, v in draws if v.failing)
                rec.update(status="FAIL", failing=[[k, r] for k, r in verdict.failing],
                           reason=f"differs from {ORACLE} beyond the tolerance in {len(verdict.failing)} "
                                  f"tensor(s): {shown}{f' and {more} more' if more > 0 else ''}; {where}"
                                  + (f" {verdict.note}" if verdict.note else "")
                                  + (f" (failed on every draw{again})" if draws else ""))
        records.append(rec)
        if rec["status"] == "ok":
            ready.append((rec, w))
    for pass_name in PASSES:
        times = {}
        for rec, w in ready:
            log(f"{model}: {pass_name}: {w.contender.name}: {policy.warmup} warm-up step(s)")
            times[w.contender.name] = _or_error(rec, pass_name, w.call("warmup", pass_name))
        ready = [(rec, w) for rec, w in ready if rec["status"] == "ok"]
        round_s = sum(float(np.median(t)) for t in times.values() if t)
        rounds = policy.rounds_for(round_s)
        log(f"{model}: {pass_name}: {rounds} rounds of {len(ready)} contenders")
        timed = {w.contender.name: [] for _, w in ready}
        for _ in range(rounds):
            for rec, w in ready:
                if rec["status"] == "ok":
                    timed[w.contender.name].append(_or_error(rec, pass_name, w.call("step", pass_name)))
        ready = [(rec, w) for rec, w in ready if rec["status"] == "ok"]
        timed = {name: t for name, t in timed.items() if name in {w.contender.name for _, w in ready}}
        for rec, w in ready:
            rec.setdefault("passes", {})[pass_name] = dict(_stats(timed[w.contender.name]),
                                                           warmup_ms=[t * 1e3 for t in times[w.contender.name]])
        for rec, _ in ready:
            mine = rec["passes"][pass_name]
            for peer in (ORACLE, NULL):
                if timed.get(peer):  # the peer was verified and timed (rounds >= 1)
                    mine[f"vs_{peer}"] = float(np.median(timed[peer])) / mine["median_ms"] * 1e3
                    mine[f"paired_vs_{peer}"] = _paired(timed[rec["contender"]], timed[peer])
    for w in workers:
        w.call("release")
    return records, info


def _redraw(model: str, worker, workers: list, batch: int, seed: int, log) -> list:
    """``worker``'s contender verified again against the oracle and the null drawn afresh (see
    :data:`REDRAWS`): ``[(seed, Verdict), ...]`` up to the first that passes; shorter when one of the
    three cannot run. The three workers keep the last draw's model for the timing (the same network)."""
    peers = [next(o for o in workers if o.contender.name == name) for name in (ORACLE, NULL)]
    draws = []
    for k in range(1, REDRAWS + 1):
        log(f"{model}: {worker.contender.name}: verification on another draw (seed {seed + k})")
        (oracle_status, want), (null_status, null), (status, arrays) = (
            w.call("prepare", model, batch, seed + k)[:2] for w in [*peers, worker])
        if oracle_status != "ok" or null_status != "ok" or status != "ok":
            break
        verdict = compare(arrays, want, null)
        draws.append((seed + k, verdict))
        if verdict.ok:
            break
    return draws


def _or_error(rec: dict, pass_name: str, reply):
    """A session's ``(status, value)`` reply: the value, or None after marking ``rec`` an error."""
    status, value = reply
    if status == "ok":
        return value
    rec.update(status="error", reason=f"{pass_name}: {value}")  # passes timed before it stay reported
    return None


def bars(results: list[dict]) -> list[dict]:
    """Issue 21's bars, each from this run's training-step medians."""
    out = []
    for model, peer, bar in BARS:
        rec = next((r for r in results if r["model"] == model and r["contender"] == BAR_CONTENDER), None)
        if rec is None:
            continue  # the model was not run
        ratio = rec.get("passes", {}).get("train", {}).get(f"vs_{peer}")
        out.append(dict(model=model, contender=BAR_CONTENDER, peer=peer, bar=bar, ratio=ratio,
                        verdict="n/a" if ratio is None else "PASS" if ratio >= bar else "FAIL"))
    return out


def run(models, batch=DEFAULT_BATCH, threads=DEFAULT_THREADS, policy=None, seed=0, isolate=True,
        command="", progress=None) -> dict:
    """Verify and time ``models`` (names of :data:`.models.MODELS`); the raw results."""
    from .machine import machine_info, machine_now
    from .workers import start_workers

    torch = _torch()
    policy = policy or E2EPolicy()

    def log(line):
        if progress is not None:
            progress.write(f"[{time.perf_counter() - started:5.0f}s] {line}\n")
            progress.flush()

    started = time.perf_counter()
    started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    before = machine_now("before")
    log(f"starting {len(CONTENDERS)} workers")
    workers = start_workers(CONTENDERS, threads, policy, isolate, session=E2ESession)
    results, models_info = [], {}
    try:
        worker_threads = {w.contender.name: w.call("threads") for w in workers}
        for model in models:
            records, info = run_model(model, workers, batch, seed, policy, log)
            results += records
            models_info[model] = info
    finally:
        for w in workers:
            w.close()
    from .models import MODELS

    with _threads.num_threads(threads):
        machine = machine_info(torch)
    machine["threads"]["torch"] = threads
    return dict(
        schema=1, kind="e2e",
        settings=dict(started_at=started_at, command=command, batch=batch, dtype="float32", threads=threads,
                      threads_set=f"torch.set_num_threads({threads}) and fastconv.set_num_threads({threads}) "
                                  f"in every worker",
                      worker_threads=worker_threads, seed=seed, isolate=isolate,
                      contenders=[c.name for c in CONTENDERS], passes=list(PASSES),
                      optimizer="SGD(lr=0.01, momentum=0.9, weight_decay=5e-4)", loss="cross_entropy",
                      verification=dict(null_factor=NULL_FACTOR, floor=FLOOR, scale_floor=SCALE_FLOOR,
                                        oracle=ORACLE, null=NULL),
                      timing=dict(warmup=policy.warmup, budget_s=policy.budget_s, min_rounds=policy.min_rounds,
                                  max_rounds=policy.max_rounds, rounds=policy.rounds, rule=policy.describe()),
                      torch=torch.__version__, seconds=time.perf_counter() - started,
                      **before, **machine_now("after")),
        machine=machine,
        models={m: dict(description=MODELS[m].description, input=[batch, *MODELS[m].input_shape],
                        **models_info.get(m, {})) for m in models},
        results=results,
        bars=bars(results),
    )


# --------------------------------------------------------------------------------------------
# reports
# --------------------------------------------------------------------------------------------

def _ms(v) -> str:
    return "-" if v is None else f"{v:.3f}" if v < 1 else f"{v:.2f}" if v < 10 else f"{v:.1f}" if v < 100 else f"{v:.0f}"


def _x(v) -> str:
    return "-" if v is None else f"{v:.2f}x"


def table(doc: dict) -> tuple[list[str], list[list[str]]]:
    columns = ["model", "pass", "contender", "ms", "±", "steps/s", "vs torch-nchw", "vs torch-cl", "verification"]
    rows = []
    for pass_name in PASSES:
        for r in doc["results"]:
            p = r.get("passes", {}).get(pass_name)
            status = r.get("verification") or f"{r['status']}: {r['reason']}"
            if p is None:
                rows.append([r["model"], pass_name, r["contender"], r["status"], "", "", "", "", status])
                continue
            rows.append([r["model"], pass_name, r["contender"], _ms(p["median_ms"]), f"{p['spread_pct']:.0f}%",
                         f"{p['steps_per_s']:.2f}" if p["steps_per_s"] < 100 else f"{p['steps_per_s']:.0f}",
                         _x(p.get(f"vs_{ORACLE}")), _x(p.get(f"vs_{NULL}")), status])
    return columns, rows


def _bar_lines(doc: dict) -> list[str]:
    lines = []
    for b in doc["bars"]:
        rec = next(r for r in doc["results"] if r["model"] == b["model"] and r["contender"] == b["contender"])
        paired = rec.get("passes", {}).get("train", {}).get(f"paired_vs_{b['peer']}")
        rounds = "" if paired is None else f" (per round: median {paired['median']:.2f}x, IQR {paired['q1']:.2f}-{paired['q3']:.2f}x)"
        lines.append(f"{b['model']} train: {b['contender']} vs {b['peer']} {_x(b['ratio'])} (bar {b['bar']:.1f}x): "
                     f"{b['verdict']}{rounds}")
    return lines


def _text_table(columns, rows) -> str:
    widths = [max(len(c), *(len(r[i]) for r in rows)) if rows else len(c) for i, c in enumerate(columns[:-1])]
    numeric = {3, 4, 5, 6, 7}

    def line(cells):
        parts = [cells[i].rjust(widths[i]) if i in numeric else cells[i].ljust(widths[i]) for i in range(len(widths))]
        return "  ".join(parts) + "  " + cells[-1]
    return "\n".join([line(columns), "-" * (sum(widths) + 2 * len(widths) + len(columns[-1]))] + [line(r) for r in rows])


def _settings_line(doc: dict) -> str:
    s, m = doc["settings"], doc["machine"]
    inputs = ", ".join(f"{name} {'x'.join(map(str, info['input'][1:]))}" for name, info in doc["models"].items())
    return (f"batch {s['batch']} ({inputs}), float32, {s['threads_set']}; {m['cpu']['model']}, "
            f"{m['cpu']['usable_cores']} usable cores; {s['seconds']:.0f} s")


def _threads_line(doc: dict) -> str:
    read = doc["settings"]["worker_threads"]
    first = next(iter(read.values()))
    same = all(t == first for t in read.values())
    runtime = ", ".join(first["openmp"]) or "none found"
    return (f"threads read back in the workers: torch {first['torch']} (inter-op {first['torch_interop']}), fastconv "
            f"{first['fastconv']}{'' if same else ' (not the same in every worker: see e2e.json)'}; OpenMP "
            f"runtime, one per process, shared by torch and fastconv: {runtime}")


def format_summary(doc: dict) -> str:
    from .report import noise_warnings

    parts = [f"fastconv bench --e2e: {_settings_line(doc)}",
             "times: median ms per step (± the IQR as % of the median); vs: PyTorch's median time / the "
             "contender's (> 1 = faster), measured in this run", "", _text_table(*table(doc)), "",
             f"issue 21's bars (patched NCHW, training step; set for 2 threads, this run: "
             f"{doc['settings']['threads']}):"]
    parts += [f"  {line}" for line in _bar_lines(doc)] or ["  (none of the bars' models ran)"]
    parts += ["", _threads_line(doc)]
    for w in noise_warnings(doc):
        parts += [f"warning: {w}"]
    failures = [r for r in doc["results"] if r["status"] in ("FAIL", "error")]
    if failures:
        parts += ["", "FAILED (not timed):"] + [f"  {r['model']} {r['contender']}: {r['status']}: {r['reason']}"
                                                for r in failures]
    return "\n".join(parts)


def format_markdown(doc: dict) -> str:
    s, m = doc["settings"], doc["machine"]
    columns, rows = table(doc)
    from .report import noise_warnings

    lines = ["# fastconv bench --e2e", "", f"{s['started_at']}: {_settings_line(doc)}.", ""]
    lines += [line for w in noise_warnings(doc) for line in (f"**Warning**: {w}.", "")]
    lines += ["| " + " | ".join(columns) + " |", "|" + "|".join("---:" if 3 <= i <= 7 else "---" for i in range(len(columns))) + "|"]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows]
    lines += ["", "## Issue 21's bars", "", "Patched NCHW model, training step, speed-up over PyTorch (its median "
              "time / the patched model's):", ""] + [f"- {line}" for line in _bar_lines(doc)]
    lines += ["", "## Models", ""]
    for name, info in doc["models"].items():
        patched = info.get("patch", {}).get(BAR_CONTENDER)
        swapped = "" if patched is None else "; patch() swapped " + ", ".join(f"{n} {k}" for k, n in patched["swapped"].items())
        count = f", {info['parameters']:,} parameters" if "parameters" in info else ""
        lines.append(f"- `{name}`: {info['description']}; input {'x'.join(map(str, info['input']))}{count}{swapped}")
    lines += ["", "## Method", "",
              f"- One training step: `zero_grad(set_to_none=True)`, forward, `{s['loss']}`, backward, "
              f"`{s['optimizer']}.step()`; inference: `model.eval()`, forward under `torch.no_grad()`.",
              f"- Verification before timing: every contender from the same initial weights (seed {s['seed']}) on "
              f"the same batch: loss, logits, every gradient, every batch-norm buffer after the step and the eval "
              f"logits against {ORACLE}; a tensor passes when its largest difference is at most "
              f"{NULL_FACTOR:g}x {NULL}'s plus {FLOOR:g} of its largest value (at least {SCALE_FLOOR:g} of its kind's "
              f"largest). The verification column gives the worst tensor's difference as a fraction of its tolerance.",
              f"- Timing: {s['timing']['rule']}. Each contender in a worker process stopped while the others run"
              + ("" if s["isolate"] else " (not here: --in-process)") + ".",
              f"- Threads: {s['threads_set']}. {_threads_line(doc)}.",
              f"- malloc: {m.get('malloc', 'not recorded')} (the workers inherit it).",
              f"- CPU: {m['cpu']['model']}; features {' '.join(m['cpu']['simd'])}; 1-minute load average "
              f"{_load(s['load_before'])} before, {_load(s['load_after'])} after; fp32 GEMM micro-kernel on one core "
              f"{s['cpu_gflops_before']} GFLOP/s before, {s['cpu_gflops_after']} after; core-to-core round trip "
              f"{s.get('core_round_trip_ns_before')} ns before, {s.get('core_round_trip_ns_after')} after.",
              "- Versions: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()) + ".",
              f"- Command: `{s.get('command') or 'fastconv bench --e2e'}`", ""]
    failures = [r for r in doc["results"] if r["status"] in ("FAIL", "error")]
    if failures:
        lines += ["## Failed (not timed)", ""] + [f"- {r['model']} {r['contender']}: {r['status']}: {r['reason']}"
                                                  for r in failures] + [""]
    return "\n".join(lines)


def _load(v) -> str:
    return "unknown" if v is None else f"{v:.2f}"


def bench_e2e(models=None, batch=None, threads=None, quick=False, repeat=None, budget=None, seed=0,
              out="bench-results", in_process=False, command="", stdout=None, stderr=None, progress=True) -> int:
    """``fastconv bench --e2e``: verify, time, print the table and write ``out``/{e2e.json, e2e.md}.
    0, or 1 when a contender failed verification or raised. Bad options raise ValueError."""
    import json

    from .models import MODELS
    from .runner import import_torch
    from .timing import check_count, with_budget

    stdout = sys.stdout if stdout is None else stdout
    if import_torch() is None:
        raise ValueError("bench --e2e: needs PyTorch (pip install torch)")
    models = list(MODELS) if models is None else list(dict.fromkeys(models))
    unknown = [m for m in models if m not in MODELS]
    if unknown or not models:
        raise ValueError(f"bench --e2e: unknown model(s) {', '.join(unknown) or '(none given)'}; "
                         f"known: {', '.join(MODELS)}")
    batch = DEFAULT_BATCH if batch is None else batch
    threads = DEFAULT_THREADS if threads is None else threads
    for name, value in (("batch size", batch), ("threads", threads), ("repeat", repeat)):
        check_count("bench --e2e", name, value)
    policy = with_budget("bench --e2e", QUICK if quick else E2EPolicy(), budget)
    if repeat is not None:
        policy = replace(policy, rounds=repeat)
    doc = run(models, batch, threads, policy, seed, not in_process, command,
              progress=(sys.stderr if stderr is None else stderr) if progress else None)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / "e2e.json", out_dir / "e2e.md"]
    paths[0].write_text(json.dumps(_finite(doc), indent=1, allow_nan=False))
    paths[1].write_text(format_markdown(doc))
    print(format_summary(doc), file=stdout)
    print("\nwrote " + ", ".join(map(str, paths)), file=stdout)
    return 1 if any(r["status"] in ("FAIL", "error") for r in doc["results"]) else 0


def _finite(v):
    """``v`` with every infinite or NaN float (a verification ratio of a NaN result or a missing
    tensor) as None: strict JSON has no such numbers."""
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_finite(x) for x in v]
    return v
