"""fastconv.bench's pieces: the suite file, case inputs, verification, timing, statistics, summaries.

The command line end to end (options, output files, FAIL reporting) is in test_cli.py.
"""

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fastconv.bench import report
from fastconv.bench.cases import Case, Contender, make_inputs, torch_contenders, verify
from fastconv.bench.runner import run_case
from fastconv.bench.workers import start_workers
from fastconv.bench.suite import (PASSES, default_suite_path, load_suite, parse_passes, quick_subset,
                                  select)
from fastconv.bench.timing import EventTimer, Policy, Stats, Timed, measure
from support import TINY_SUITE as TINY
from support import write_shapes

REPO = Path(__file__).resolve().parents[1]



# --------------------------------------------------------------------------------------------
# the suite file
# --------------------------------------------------------------------------------------------

def test_default_suite_loads_and_agrees_with_its_own_numbers():
    suite = load_suite()
    raw = json.loads(default_suite_path().read_text())["shapes"]
    assert [s.name for s in suite.shapes] == [e["name"] for e in raw]
    assert suite.dtype == "float32"
    assert {s.kind for s in suite.shapes} == {"conv", "maxpool", "dense"}
    # load_suite rejects a file whose H_out/W_out/flops_fwd/bytes_fwd disagree; check a few by hand too
    by_name = {s.name: s for s in suite.shapes}
    assert by_name["dilated3x3_d2_256_28_b16"].work("forward", 4) == (14797504512.0, "FLOP")
    assert by_name["dense_4096x4096_b64"].work("backward-weight", 4) == (2 * 64 * 4096 * 4096, "FLOP")
    pool = by_name["maxpool3x3s2p1_64_112_b16"]
    assert (pool.OH, pool.OW) == (56, 56)
    assert pool.work("forward", 4) == ((16 * 64 * 112 * 112 + 16 * 64 * 56 * 56) * 4, "B")
    assert pool.passes == ("forward", "backward-input")


def test_shipped_suite_is_the_shared_one():
    shared = REPO.parent / "shared" / "bench" / "shapes.json"
    if not shared.exists():
        pytest.skip(f"{shared} is not here")
    assert json.loads(default_suite_path().read_text()) == json.loads(shared.read_text())


def test_flops_match_direct_count():
    s = load_suite().shapes[0]
    p = s.params
    macs = sum(1 for _n in range(s.N) for _co in range(s.C_out) for _i in range(p.OH * p.OW)) \
        * (s.C_in // s.groups) * s.KH * s.KW
    assert s.work("backward-input", 4)[0] == 2 * macs


def test_user_file_with_defaults(tmp_path):
    path = write_shapes(tmp_path / "mine.json", [dict(name="c", kind="conv", N=1, C_in=2, H=5, W=6, C_out=3,
                                                      kH=3, kW=1, stride=2)])
    (s,) = load_suite(path).shapes
    assert (s.stride, s.padding, s.dilation, s.groups) == ((2, 2), (0, 0), (1, 1), 1)
    assert (s.OH, s.OW) == (2, 3)
    assert s.describe() == "N1 2->3 5x6 k3x1 s2 p0 d1"


@pytest.mark.parametrize("entry, message", [
    (dict(kind="conv"), "missing name, N, C_in, H, W, C_out, kH, kW"),
    (dict(TINY[0], kind="deconv"), "kind must be one of conv, dense, maxpool, got 'deconv'"),
    (dict(TINY[0], N=0), "N must be a positive integer, got 0"),
    (dict(TINY[0], C_in=2.5), "C_in must be a positive integer, got 2.5"),
    (dict(TINY[0], flops_fwd=123), "flops_fwd is 123 in the file, but fastconv computes"),
    (dict(TINY[0], H_out=99), "H_out is 99 in the file, but fastconv computes 5"),
    (dict(TINY[1], bytes_fwd=1), "bytes_fwd is 1 in the file"),
    (dict(TINY[1], C_out=4), "max pooling keeps the channels"),
    (dict(TINY[2], H=2), "a dense layer has H = W = kH = kW = 1"),
    (dict(TINY[0], kH=30), "kernel 30x2 with dilation (1, 2) spans 30x3, larger than the padded input"),
    (dict(TINY[0], groups=3), "groups=3 must divide C_in=4"),
    (dict(TINY[0], stride=[1, 2, 3]), "stride to be an int or a pair"),
])
def test_bad_shape_entries(tmp_path, entry, message):
    path = write_shapes(tmp_path / "bad.json", [TINY[1], entry])
    with pytest.raises((ValueError, TypeError), match="shape #1") as info:
        load_suite(path)
    assert message in str(info.value)


@pytest.mark.parametrize("text, message", [
    ("{", "is not valid JSON"),
    ('{"shapes": []}', "needs a non-empty list under \"shapes\""),
    ('[1, 2]', "needs a non-empty list"),
    (json.dumps(dict(shapes=[TINY[0], TINY[0]])), "duplicate names tiny_conv"),
    (json.dumps(dict(shapes=TINY, dtype="float16")), "dtype must be float32 or float64, got 'float16'"),
])
def test_bad_files(tmp_path, text, message):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(ValueError, match="^bench: ") as info:
        load_suite(path)
    assert message in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(ValueError, match="bench: cannot read shapes file .*nope.json"):
        load_suite(tmp_path / "nope.json")


def test_passes_selection():
    assert parse_passes(None) == PASSES
    assert parse_passes("backward") == ("backward-input", "backward-weight")
    assert parse_passes("backward-weight, forward") == ("forward", "backward-weight")
    with pytest.raises(ValueError, match="bench: unknown pass 'sideways'"):
        parse_passes("forward,sideways")


def test_quick_subset_and_match():
    shapes = load_suite().shapes
    quick = quick_subset(shapes)
    assert [s.name for s in quick] == ["lenet5_conv1_b64", "maxpool2x2s2_64_224_b1", "dense_4096x4096_b64"]
    assert [s.name for s in select(shapes, "resnet20")] == [
        "resnet20_3x3_16_32_b128", "resnet20_3x3_32_16_b128", "resnet20_3x3_64_8_b128"]


# --------------------------------------------------------------------------------------------
# inputs, calls and verification
# --------------------------------------------------------------------------------------------

def _tiny_cases(tmp_path, dtype=np.float32):
    return [Case(s, p, np.dtype(dtype)) for s in load_suite(write_shapes(tmp_path / "t.json")).shapes
            for p in s.passes]


def test_inputs(tmp_path, rng):
    for case in _tiny_cases(tmp_path):
        arrays = make_inputs(case, rng)
        s = case.shape
        assert arrays["x"].shape == s.x_shape and arrays["dy"].shape == s.y_shape
        for a in arrays.values():
            assert a.dtype == np.float32 and not a.flags.writeable
        if s.kind == "maxpool":  # distinct values: no ties in any window
            assert len(np.unique(arrays["x"])) == arrays["x"].size
        else:
            assert arrays["w"].shape == s.w_shape
            assert set(np.unique(arrays["x"])) <= set(range(-3, 4))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_contender_matches_the_reference_exactly(tmp_path, rng, dtype):
    """The fastconv calls and the PyTorch peers compute the same pass (so verification is meaningful)."""
    torch = pytest.importorskip("torch")
    contenders = [Contender("reference", "fastconv", "cpu", backend="reference")] + torch_contenders(torch)
    workers = start_workers(contenders, 2, Policy(repeat=1), isolate=False)
    for case in _tiny_cases(tmp_path, dtype):
        records = run_case(case, workers, Policy(repeat=1), 0)
        expected = 2 if case.shape.kind == "dense" else 3  # dense has no channels_last
        assert len(records) == expected
        for r in records:
            assert (r["status"], r["exact"], r["repeats"]) == ("ok", True, 1), r


def test_process_workers_are_stopped_between_calls(tmp_path):
    """Each contender's worker process sleeps (SIGSTOP) whenever the parent is not calling it, so no
    thread of it runs while another contender is timed; closing ends it."""
    from fastconv.bench.workers import ProcessWorker, can_stop_processes

    if not can_stop_processes():
        pytest.skip("processes cannot be stopped on this platform")
    (case, *_) = _tiny_cases(tmp_path)
    workers = [ProcessWorker(Contender(n, "fastconv", "cpu", backend=n), 1, Policy(repeat=2))
               for n in ("reference", "cpp")]
    try:
        for w in workers:
            status, result = w.call("prepare", case, 0)
            assert status == "ok" and result.shape == case.shape.y_shape
            assert _process_state(w.process.pid) == "T"  # stopped again once the call returned
        status, times = workers[1].call("round", 1)
        assert status == "ok" and len(times) == 1
        assert _process_state(workers[0].process.pid) == "T"
    finally:
        for w in workers:
            w.close()
    assert not any(w.process.is_alive() for w in workers)


def test_run_spreads_each_case_rounds_over_sweeps_of_the_suite(tmp_path, monkeypatch):
    """Round r of every case runs in the r-th sweep over the suite: a worker prepares the case again
    there (its result not sent, nothing verified again, that call its warm-up) and goes on from its
    earlier runs."""
    from fastconv.bench import runner
    from fastconv.bench.workers import Session

    log = []
    prepare, round_ = Session.prepare, Session.round

    def logged_prepare(self, case, seed, send=True):
        status, out = prepare(self, case, seed, send)
        log.append(("prepare", self.contender.name, case.id, out is not None))
        return status, out

    def logged_round(self, step, times=()):
        status, out = round_(self, step, times)
        log.append(("round", self.contender.name, step, len(out)))
        return status, out

    monkeypatch.setattr(Session, "prepare", logged_prepare)
    monkeypatch.setattr(Session, "round", logged_round)
    shapes = load_suite(write_shapes(tmp_path / "t.json")).shapes[:2]
    config = runner.Config(shapes, ("forward",), ("cpp",), torch=False, isolate=False,
                           policy=Policy(repeat=6, rounds=3))
    doc = runner.run(config, show_progress=False)
    ids = [Case(s, "forward", np.dtype(np.float32)).id for s in shapes]
    cpp = [e for e in log if e[1] == "cpp"]
    prepares = [(e[2], e[3]) for e in cpp if e[0] == "prepare"]
    assert prepares == [(ids[0], True), (ids[1], True), (ids[0], False), (ids[1], False),
                        (ids[0], False), (ids[1], False)]  # verified once, prepared again per sweep
    rounds = [(e[2], e[3]) for e in cpp if e[0] == "round"]
    # the first sweep: warm-up and round 1, each case in turn; later ones: the round (the preparation
    # call warms up)
    assert rounds == [(0, 0), (1, 2), (0, 0), (1, 2), (2, 4), (2, 4), (3, 6), (3, 6)]
    assert not [e for e in log if e[1] == "reference" and e[0] == "round"]  # the oracle, not timed
    assert [(r["contender"], r["status"], r["repeats"]) for r in doc["results"]] == [("cpp", "ok", 6)] * 2
    assert [r["round_runs"] for r in doc["results"]] == [[2, 2, 2]] * 2  # which sweep each run met
    assert doc["settings"]["timing"]["rounds"] == 3
    assert len(doc["settings"]["sweeps"]) == 3  # the machine's speed and core distance before each
    assert all(w["cpu_gflops"] > 0 for w in doc["settings"]["sweeps"])
    # 2 runs in 4 rounds: one in round 1, one in round 3; rounds 2 and 4 have nothing to run, so
    # those sweeps do not prepare the case again either
    log.clear()
    doc = runner.run(runner.Config(shapes[:1], ("forward",), ("cpp",), torch=False, isolate=False,
                                   policy=Policy(repeat=2, rounds=4)), show_progress=False)
    assert [e[0] for e in log if e[1] == "cpp"] == ["prepare", "round", "round", "prepare", "round"]
    assert [e[2:] for e in log if e[1] == "cpp" and e[0] == "round"] == [(0, 0), (1, 1), (3, 2)]
    assert doc["results"][0]["repeats"] == 2
    assert doc["results"][0]["round_runs"] == [1, 0, 1, 0]


def _process_state(pid) -> str:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]  # the field after the command name


def test_verify():
    want = np.arange(6, dtype=np.float32).reshape(2, 3)
    assert verify(want.copy(), want) == verify(want + 0, want)
    v = verify(want.copy(), want)
    assert v.ok and v.exact and v.error_ratio == 0
    close = verify(want + np.float32(1e-5), want)
    assert close.ok and not close.exact
    off = verify(want + 1, want)
    assert not off.ok and off.error_ratio > 1
    assert not verify(want.T.copy(), want).ok  # wrong shape
    assert not verify(want.astype(np.float64), want).ok  # wrong dtype
    nan = want.copy()
    nan[0, 0] = np.nan
    assert not verify(nan, want).ok


# --------------------------------------------------------------------------------------------
# timing and statistics
# --------------------------------------------------------------------------------------------

class FakeClock:
    """A timer that does not run anything: each call 'takes' the next duration."""

    def __init__(self, seconds):
        self.seconds, self.calls = seconds, 0

    def __call__(self, fn):
        self.calls += 1
        return self.seconds


def test_measure_fixed_repeats():
    clock = FakeClock(0.01)
    assert measure([Timed(None, clock, 0.01)], Policy(repeat=7)) == [[0.01] * 7]
    assert clock.calls == 8  # one warm-up


def test_measure_budget_rule():
    clock = FakeClock(0.01)
    [times] = measure([Timed(None, clock, 0.01)], Policy(budget_s=0.095, min_repeats=3, max_repeats=50))
    assert len(times) == 10  # stops once the budget is spent
    [times] = measure([Timed(None, FakeClock(1e-6), 0.0)], Policy(budget_s=1, max_repeats=25))
    assert len(times) == 25


def test_measure_expensive_case_gets_min_repeats_and_no_extra_warmup():
    clock = FakeClock(2.0)
    [times] = measure([Timed(None, clock, 2.0)], Policy(budget_s=0.5, min_repeats=4))
    assert len(times) == 4 and clock.calls == 4  # the verification call was the warm-up


def test_measure_interleaves_the_contenders_in_rounds():
    """Each round takes its share of every contender's runs, so they all meet the same phases of a
    noisy machine; a contender that raises is dropped and reported, the others go on."""
    log = []

    def clock(name, seconds):
        def timer(fn):
            log.append(name)
            return seconds
        return timer

    def broken(fn):
        log.append("broken")
        raise RuntimeError("boom")

    fast, slow = clock("fast", 0.001), clock("slow", 0.1)
    out = measure([Timed(None, fast, 0.001), Timed(None, slow, 0.1), Timed(None, broken, 0.1)],
                  Policy(budget_s=0.2, min_repeats=2, max_repeats=400, rounds=4))
    assert [len(t) for t in out[:2]] == [200, 2]
    assert isinstance(out[2], RuntimeError) and log.count("broken") == 1
    timed = [name for name in log if name != "broken"][2:]  # after the two warm-ups
    # round 1: 50 fast runs (a quarter of the budget), 1 slow run (ceil(2/4)); round 2: 50 fast,
    # nothing slow (1 run = ceil(2*2/4), its 0.1 s already covers half the budget); round 3: 50 fast,
    # 1 slow; round 4: 50 fast
    assert timed == ["fast"] * 50 + ["slow"] + ["fast"] * 50 + ["fast"] * 50 + ["slow"] + ["fast"] * 50


def test_event_timer_records_around_the_call_and_waits_for_the_end():
    log = []

    class Event:  # the part of cupy.cuda.Event / torch.cuda.Event the timer uses
        def record(self):
            log.append("record")

        def synchronize(self):
            log.append("synchronize")

    timer = EventTimer(Event, lambda start, end: 2.5)
    assert timer(lambda: log.append("call")) == pytest.approx(0.0025)
    assert log == ["record", "call", "record", "synchronize"]


def test_stats():
    s = Stats.of([0.004, 0.001, 0.002, 0.003, 0.005])
    assert (s.median, s.q1, s.q3, s.min, s.max, s.repeats) == pytest.approx((3, 2, 4, 1, 5, 5))
    assert s.spread_pct == pytest.approx(100 * 2 / 3)


# --------------------------------------------------------------------------------------------
# summaries
# --------------------------------------------------------------------------------------------

def _rec(shape, pass_name, contender, status, ms=None, family="fastconv", layout="nchw", device="cpu"):
    r = dict(shape=shape, kind="conv", pass_name=pass_name, contender=contender, family=family,
             backend=contender if family == "fastconv" else None, device=device, layout=layout, status=status,
             reason="" if status == "ok" else "why", work=2e9, work_unit="FLOP", exact=True)
    if ms is not None:
        r.update(median_ms=ms, spread_pct=1.0, rate=2e9 / (ms * 1e-3) / 1e9)
    return r


def test_summarize_speedups_and_geomeans():
    results = [
        _rec("a", "forward", "reference", "ok", 100.0), _rec("a", "forward", "fast", "ok", 10.0),
        _rec("a", "forward", "torch/nchw", "ok", 40.0, "torch"),
        _rec("a", "forward", "torch/channels_last", "ok", 20.0, "torch", "channels_last"),
        _rec("b", "forward", "reference", "ok", 10.0), _rec("b", "forward", "fast", "ok", 5.0),
        _rec("b", "forward", "torch/nchw", "ok", 5.0, "torch"),
        _rec("b", "forward", "torch/channels_last", "error", None, "torch", "channels_last"),
        _rec("a", "backward-input", "reference", "ok", 100.0), _rec("a", "backward-input", "fast", "FAIL"),
        _rec("a", "backward-input", "torch/nchw", "ok", 50.0, "torch"),
        _rec("a", "backward-input", "torch/channels_last", "ok", 60.0, "torch", "channels_last"),
    ]
    doc = dict(settings=dict(contenders=["reference", "fast", "torch/nchw", "torch/channels_last"]),
               results=results)
    s = report.summarize(doc)
    assert s["backends"] == ["reference", "fast"] and s["torch_groups"] == ["torch"]
    assert s["passes"] == ["forward", "backward-input"]
    a_fwd = s["rows"][0]
    assert a_fwd["cells"]["fast"]["vs_ref"] == pytest.approx(10)
    assert a_fwd["cells"]["fast"]["vs_torch"] == pytest.approx(2)  # vs channels_last, the faster layout
    assert a_fwd["torch"]["torch"]["best_layout"] == "channels_last"
    assert a_fwd["cells"]["fast"]["rate"] == pytest.approx(200)
    g = s["geomean"]
    assert g["fast"]["forward"]["vs_ref"] == pytest.approx(math.sqrt(10 * 2))
    assert g["fast"]["forward"]["vs_torch"] == pytest.approx(math.sqrt(2 * 1))
    assert g["fast"]["backward-input"]["vs_ref"] is None  # its only case failed
    assert g["torch"]["forward"]["vs_ref"] == pytest.approx(math.sqrt(5 * 2))
    assert s["failures"] == ["torch/channels_last on b forward: error: why", "fast on a backward-input: FAIL: why"]

    columns, rows = report.results_table(s)
    assert len(rows) == 3 and all(len(r) == len(columns) for r in rows)
    assert rows[2][3] == "100" and rows[2][8] == "FAIL"  # reference ms, then fast ms
    text = report.format_text(columns, rows)
    assert "reference" in text.splitlines()[0] and "vs torch" in text.splitlines()[1]
    markdown = report.format_markdown_table(columns, rows)
    assert markdown.splitlines()[0].startswith("| shape | pass | unit | reference ms |")


def test_summarize_gpu_rows_against_both_precisions_and_the_floor():
    def gpu(contender, ms, family="torch", layout="nchw", mode=""):
        r = _rec("a", "forward", contender, "ok", ms, family, layout, device="gpu")
        r.update(mode=mode, floor_ms=0.5 if family == "fastconv" else None)
        return r

    results = [_rec("a", "forward", "reference", "ok", 100.0), gpu("cupy", 2.0, "fastconv"),
               gpu("torch-cuda/nchw", 1.5), gpu("torch-cuda/channels_last", 1.0, layout="channels_last"),
               gpu("torch-cuda-tf32/nchw", 0.5, mode="tf32")]
    doc = dict(settings=dict(contenders=[r["contender"] for r in results]), results=results)
    s = report.summarize(doc)
    assert s["gpu_backends"] == ["cupy"] and s["torch_groups"] == ["torch-cuda", "torch-cuda-tf32"]
    cell = s["rows"][0]["cells"]["cupy"]
    assert cell["vs_torch"] == pytest.approx(0.5)  # the faster TF32-off layout, channels_last
    assert cell["vs_torch_tf32"] == pytest.approx(0.25)
    assert cell["of_floor"] == pytest.approx(0.25)
    assert s["geomean"]["cupy vs torch-cuda-tf32"]["forward"]["vs_torch"] == pytest.approx(0.25)
    columns, rows = report.results_table(s)
    assert ("cupy", "% floor") in columns and rows[0][columns.index(("cupy", "% floor"))] == "25%"


def test_gpu_floor_and_torch_peers_per_precision(tmp_path):
    from fastconv.bench.runner import floor_ms

    (shape,) = load_suite(write_shapes(tmp_path / "t.json", TINY[:1])).shapes
    case = Case(shape, "forward", np.dtype(np.float32))
    flops, _ = case.work()
    nbytes = shape.min_bytes("forward", 4)
    assert nbytes == 4 * (np.prod(shape.x_shape) + np.prod(shape.w_shape) + np.prod(shape.y_shape))
    assert floor_ms(case, None) is None
    assert floor_ms(case, dict(gflops=flops / 1e9, gbps=1e-9)) == pytest.approx(nbytes * 1e3)  # memory-bound
    assert floor_ms(case, dict(gflops=flops / 1e9, gbps=1e9)) == pytest.approx(1e3)  # compute-bound: 1 s

    class FakeTorch:  # what torch_contenders asks of PyTorch
        class cuda:
            @staticmethod
            def is_available():
                return True

    names = [c.name for c in torch_contenders(FakeTorch, devices=("gpu",))]
    assert names == ["torch-cuda/nchw", "torch-cuda/channels_last", "torch-cuda-tf32/nchw"]
    assert [c.name for c in torch_contenders(FakeTorch, devices=("cpu",))] == ["torch/nchw", "torch/channels_last"]


def test_benchmark_suite_smoke(tmp_path):
    """The pytest-benchmark suite collects from --shapes and verifies every case (timing disabled)."""
    shapes = write_shapes(tmp_path / "t.json")
    out = subprocess.run([sys.executable, "-m", "pytest", str(REPO / "benchmarks"), "-q", "-p", "no:cacheprovider",
                          "--shapes", str(shapes), "--benchmark-disable", "--backends", "reference"],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    try:
        import torch  # noqa: F401

        torch_cases = 8 + 5  # NCHW for the 8 cases, channels_last for the 5 that are not dense
    except ImportError:
        torch_cases = 0
    assert f"{8 + torch_cases} passed" in out.stdout


def test_agreement_script_interleaves_a_full_and_a_cpp_only_run(tmp_path):
    """benchmarks/agreement.py: the full run and the cpp-only run take turns sweep by sweep and
    cpp's medians are compared case by case; both runs' reports are written."""
    pytest.importorskip("fastconv._cpp")
    out = subprocess.run([sys.executable, str(REPO / "benchmarks" / "agreement.py"), "--match", "lenet5_conv1",
                          "--budget", "0.005", "--out", str(tmp_path)],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "full run / cpp-only run" in out.stdout and "3 cases: geometric mean" in out.stdout
    for name in ("full", "cpp-only"):
        doc = json.loads((tmp_path / name / "bench.json").read_text())
        assert len(doc["settings"]["sweeps"]) == Policy().rounds
        assert "cpp" in {r["contender"] for r in doc["results"]}
        backends = doc["settings"]["backends"]
        assert backends == ["cpp"] if name == "cpp-only" else "cpp" in backends


def test_noise_warnings_name_a_busy_machine_a_speed_change_and_far_cores():
    def doc(load, before, after, trips=(80.0, 85.0)):
        return dict(settings=dict(load_before=load, cpu_gflops_before=before, cpu_gflops_after=after,
                                  core_round_trip_ns_before=trips[0], core_round_trip_ns_after=trips[1]),
                    machine=dict(cpu=dict(usable_cores=2)))

    assert report.noise_warnings(doc(0.1, 100.0, 90.0)) == []
    assert report.noise_warnings(doc(None, None, None, (None, None))) == []  # no load average, no C++ backend
    busy = report.noise_warnings(doc(1.5, 100.0, 100.0))
    assert len(busy) == 1 and "load average 1.50" in busy[0]
    drift = report.noise_warnings(doc(0.1, 150.0, 80.0))
    assert len(drift) == 1 and "150.0 GFLOP/s before, 80.0 after" in drift[0]
    far = report.noise_warnings(doc(0.1, 100.0, 100.0, (80.0, 395.0)))
    assert len(far) == 1 and "different dies" in far[0] and "80.0 ns before, 395.0 after" in far[0]
    swept = doc(0.1, 100.0, 100.0)  # on one die before and after, on two at the start of a sweep
    swept["settings"]["sweeps"] = [dict(cpu_gflops=100.0, core_round_trip_ns=t) for t in (81.0, 402.0, 79.0)]
    far = report.noise_warnings(swept)
    assert len(far) == 1 and "81.0, 402.0, 79.0 at the start of each sweep, 85.0 after" in far[0]
    # with each run's sweep known (round_runs): each contender's far / near medians, geomean over cases
    rec = dict(status="ok", contender="cpp", round_runs=[2, 1, 2], times_ms=[1.0, 1.2, 3.0, 1.1, 0.9])
    swept["results"] = [rec, dict(rec, times_ms=[2.0, 2.0, 2.0, 2.0, 2.0]),
                        dict(rec, contender="torch/nchw", times_ms=[1.0, 1.0, 1.1, 1.0, 1.0])]
    assert report.far_over_near(swept) == pytest.approx({"cpp": (3.0 / 1.05 * 1.0) ** 0.5, "torch/nchw": 1.1})
    far = report.noise_warnings(swept)
    assert len(far) == 1 and "over the cases: cpp 1.69x, torch/nchw 1.10x)" in far[0]
    assert report.far_over_near(dict(swept, settings=dict(sweeps=swept["settings"]["sweeps"][::2]))) == {}


def test_cpu_speed_is_the_micro_kernel_rate_now():
    from fastconv.bench.machine import cpu_speed

    pytest.importorskip("fastconv._cpp")
    assert 0.01 < cpu_speed(0.02) < 1e5  # GFLOP/s of one core: positive and physically sane


def test_core_round_trip_is_a_sane_latency_or_none_on_one_core():
    from fastconv import _threads
    from fastconv.bench.machine import core_round_trip

    pytest.importorskip("fastconv._cpp")
    trip = core_round_trip(0.02)
    if _threads._usable_cores() < 2:
        assert trip is None
    else:
        assert 1.0 < trip < 1e7  # ns: above a cache hit, below a 10 ms scheduler stall


def test_machine_records_the_malloc_settings_the_workers_inherit(monkeypatch):
    """glibc's malloc settings change PyTorch's step times (page faults of freed activations), so
    reports record GLIBC_TUNABLES, which spawned workers inherit, or glibc's defaults."""
    from fastconv.bench.machine import malloc_settings

    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    assert malloc_settings() == "glibc's defaults"
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.trim_threshold=4294967296")
    assert malloc_settings() == "glibc.malloc.trim_threshold=4294967296"
