"""The command line: ``fastconv bench`` (options, output files, failing backends) and ``fastconv info``."""

import json
import subprocess
import sys
import types

import pytest

from fastconv import _dispatch
from fastconv._dispatch import REGISTRY, BackendSpec
from fastconv.backends.reference import conv as reference_conv
from fastconv.cli import main

from support import write_shapes

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def shapes(tmp_path):
    return str(write_shapes(tmp_path / "tiny.json"))


def bench(capsys, *args, isolate=False):
    """Run ``fastconv bench ARGS`` in-process: (exit status, stdout, stderr). Every contender runs in
    this process too (``--in-process``, quicker) unless ``isolate``."""
    status = main(["bench", *args, *(() if isolate else ("--in-process",))])
    out, err = capsys.readouterr()
    return status, out, err


def test_bench_writes_json_markdown_and_png(tmp_path, shapes, capsys):
    out_dir = tmp_path / "results"
    status, out, err = bench(capsys, "--shapes", shapes, "--backends", "reference", "--repeat", "2",
                             "--out", str(out_dir), isolate=True)  # the default: a worker process each
    assert status == 0, out + err
    # the printed table: one row per case, the reference and PyTorch groups, geometric means
    lines = out.splitlines()
    assert any(line.startswith("shape") and "vs torch" in line for line in lines)
    for name, passes in (("tiny_conv", 3), ("tiny_pool", 2), ("tiny_dense", 3)):
        assert sum(line.startswith(name + " ") for line in lines) == passes
    assert "geometric mean" in out and "wrote" in out
    assert "[1/64]" in err and "(sweep 8/8)" in err  # progress on stderr: a line per case and sweep (not a terminal)

    doc = json.loads((out_dir / "bench.json").read_text())
    assert set(doc) == {"schema", "settings", "machine", "shapes", "results", "summary"}
    settings = {"dtype", "threads", "passes", "backends", "contenders", "timing", "seconds", "command"}
    assert settings <= set(doc["settings"])
    assert {"cpu", "threads", "versions", "gpus", "platform", "backends"} <= set(doc["machine"])
    assert doc["machine"]["cpu"]["model"] and "numpy" in doc["machine"]["versions"]
    assert [s["name"] for s in doc["shapes"]] == ["tiny_conv", "tiny_pool", "tiny_dense"]
    reference = [r for r in doc["results"] if r["contender"] == "reference"]
    assert len(reference) == 8
    for r in doc["results"]:
        assert r["status"] == "ok", r
        assert r["repeats"] == 2 and len(r["times_ms"]) == 2
        assert r["q1_ms"] <= r["median_ms"] <= r["q3_ms"] and r["rate"] > 0
    assert doc["summary"]["geomean"]["reference"]["forward"]["vs_ref"] == pytest.approx(1)

    markdown = (out_dir / "report.md").read_text()
    assert "| shape | pass | unit | reference ms |" in markdown
    assert "![speedup vs PyTorch per shape and backend](speedup.png)" in markdown
    for section in ("## Results", "## Geometric means", "## Machine", "## Method"):
        assert section in markdown
    assert (out_dir / "speedup.png").read_bytes()[:8] == PNG_SIGNATURE


def test_bench_options(tmp_path, shapes, capsys):
    out_dir = tmp_path / "r"
    status, out, _ = bench(capsys, "--shapes", shapes, "--backends", "reference", "--passes", "backward",
                           "--match", "conv", "--threads", "1", "--dtype", "float64", "--repeat", "3",
                           "--no-torch", "--no-chart", "--seed", "5", "--out", str(out_dir))
    assert status == 0
    doc = json.loads((out_dir / "bench.json").read_text())
    s = doc["settings"]
    assert (s["dtype"], s["threads"], s["seed"], s["contenders"]) == ("float64", 1, 5, ["reference"])
    assert doc["machine"]["threads"]["fastconv"] == 1
    assert [(r["shape"], r["pass_name"], r["repeats"]) for r in doc["results"]] == [
        ("tiny_conv", "backward-input", 3), ("tiny_conv", "backward-weight", 3)]
    assert not (out_dir / "speedup.png").exists()
    assert "No chart: --no-chart" in (out_dir / "report.md").read_text()
    assert "torch" not in out.split("geometric mean")[0].splitlines()[3]  # no PyTorch column group


def test_bench_quick_default_suite(tmp_path, capsys):
    out_dir = tmp_path / "q"
    status, out, _ = bench(capsys, "--quick", "--passes", "forward", "--backends", "reference", "--no-chart",
                           "--out", str(out_dir))
    assert status == 0, out
    doc = json.loads((out_dir / "bench.json").read_text())
    assert [s["name"] for s in doc["shapes"]] == ["lenet5_conv1_b64", "maxpool2x2s2_64_224_b1", "dense_4096x4096_b64"]
    assert doc["settings"]["timing"]["budget_s"] == 0.05
    assert all(r["status"] == "ok" for r in doc["results"])


@pytest.mark.parametrize("args, message", [
    (["--backends", "reference,nope"], "fastconv bench: unknown backend 'nope'; known backends: reference"),
    (["--passes", "sideways"], "fastconv bench: unknown pass 'sideways'"),
    (["--threads", "0"], "fastconv bench: threads must be a positive integer, got 0"),
    (["--repeat", "0"], "fastconv bench: repeat must be a positive integer, got 0"),
    (["--budget", "-1"], "fastconv bench: budget must be positive seconds"),
    (["--match", "resnet"], "fastconv bench: no shape of"),
])
def test_bench_bad_options(tmp_path, shapes, capsys, args, message):
    status, out, err = bench(capsys, "--shapes", shapes, "--out", str(tmp_path / "never"), *args)
    assert status == 2 and message in err and out == ""
    assert not (tmp_path / "never").exists()


def test_bench_bad_shapes_file(tmp_path, capsys):
    status, _, err = bench(capsys, "--shapes", str(tmp_path / "missing.json"), "--out", str(tmp_path))
    assert status == 2 and "cannot read shapes file" in err


def test_bench_unavailable_backend_named(monkeypatch, tmp_path, shapes, capsys):
    monkeypatch.setitem(REGISTRY, "ghost", BackendSpec("ghost", "fastconv_test_no_such_package", "cpu", "test"))
    monkeypatch.setattr(_dispatch, "_failed", dict(_dispatch._failed))
    status, _, err = bench(capsys, "--shapes", shapes, "--backends", "ghost", "--out", str(tmp_path))
    assert status == 2 and "backend 'ghost' is not available: ModuleNotFoundError" in err


@pytest.fixture
def wrong_backend(monkeypatch):
    """A backend 'wrong' whose conv forward is off by one, backward-input crashes, backward-weight is
    right, and which has no pool or linear module."""
    package = types.ModuleType("fastconv_test_wrong")
    package.__path__ = []  # a package: its missing families fail to import, as in a real backend
    conv = types.ModuleType("fastconv_test_wrong.conv")
    conv.conv2d_forward = lambda x, w, b, p: reference_conv.conv2d_forward(x, w, b, p) + 1

    def crash(dy, w, p):
        raise RuntimeError("kernel crashed")

    conv.conv2d_backward_input = crash
    conv.conv2d_backward_weight = reference_conv.conv2d_backward_weight
    conv.conv2d_backward_bias = reference_conv.conv2d_backward_bias
    monkeypatch.setitem(sys.modules, package.__name__, package)
    monkeypatch.setitem(sys.modules, conv.__name__, conv)
    monkeypatch.setitem(REGISTRY, "wrong", BackendSpec("wrong", package.__name__, "cpu", "deliberately wrong"))
    monkeypatch.setattr(_dispatch, "_loaded", dict(_dispatch._loaded))  # forget it afterwards
    return "wrong"


def test_failing_backend_is_reported_and_not_timed(wrong_backend, tmp_path, shapes, capsys):
    out_dir = tmp_path / "r"
    status, out, _ = bench(capsys, "--shapes", shapes, "--backends", "reference,wrong", "--repeat", "2",
                           "--out", str(out_dir))
    assert status == 1
    doc = json.loads((out_dir / "bench.json").read_text())
    wrong = {(r["shape"], r["pass_name"]): r for r in doc["results"] if r["contender"] == "wrong"}
    forward = wrong[("tiny_conv", "forward")]
    assert forward["status"] == "FAIL" and "differs from the reference" in forward["reason"]
    assert "median_ms" not in forward and forward["error_ratio"] > 1
    crashed = wrong[("tiny_conv", "backward-input")]
    assert crashed["status"] == "error" and crashed["reason"] == "RuntimeError: kernel crashed"
    assert wrong[("tiny_conv", "backward-weight")]["status"] == "ok"
    assert wrong[("tiny_pool", "forward")]["status"] == "n/a"
    assert "does not implement pool.max_pool2d_forward" in wrong[("tiny_pool", "forward")]["reason"]
    assert all(r["status"] == "ok" for r in doc["results"] if r["contender"] != "wrong")

    row = next(line for line in out.splitlines() if line.startswith("tiny_conv") and " forward " in line)
    assert "FAIL" in row
    assert "FAILED (not timed):" in out and "wrong on tiny_conv forward: FAIL" in out
    assert "wrong on tiny_conv backward-input: error: RuntimeError: kernel crashed" in out
    markdown = (out_dir / "report.md").read_text()
    assert "## Failed verification (not timed)" in markdown and "| FAIL |" in markdown


def test_info(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    for expected in ("backends:", "reference", "available", "cpu:", "features:", "threads:", "versions:", "gpu:"):
        assert expected in out
    assert main(["info", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["backends"]["reference"]["status"] == "available"
    assert data["threads"]["fastconv"] >= 1


def test_info_lists_why_a_backend_is_unavailable(monkeypatch, capsys):
    monkeypatch.setitem(REGISTRY, "ghost", BackendSpec("ghost", "fastconv_test_no_such_package", "cpu", "test"))
    monkeypatch.setattr(_dispatch, "_failed", dict(_dispatch._failed))
    assert main(["info"]) == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if line.strip().startswith("ghost"))
    assert "not available: ModuleNotFoundError" in line


def test_console_script_entry_point():
    out = subprocess.run([sys.executable, "-m", "fastconv.cli", "bench", "--help"], capture_output=True,
                         text=True, check=True).stdout
    for option in ("--shapes", "--backends", "--passes", "--threads", "--dtype", "--repeat", "--quick", "--out"):
        assert option in out
