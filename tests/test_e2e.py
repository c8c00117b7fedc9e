"""``fastconv bench --e2e``: whole networks verified, then timed (tiny batches, one thread, a couple of
rounds: whether the pipeline runs and verifies, never how fast anything is)."""

import json

import numpy as np
import pytest

pytest.importorskip("torch")

from fastconv.bench import e2e  # noqa: E402  (after the skip: it needs torch)
from fastconv.cli import main  # noqa: E402


def check_results(doc, models, rounds, warmup):
    """Every contender verified and timed on every model; the numbers consistent with each other."""
    names = [c.name for c in e2e.CONTENDERS]
    assert [(r["model"], r["contender"]) for r in doc["results"]] == [(m, c) for m in models for c in names]
    for r in doc["results"]:
        assert r["status"] == "ok", r
        if r["patched"]:
            assert 0 <= r["verification_ratio"] <= 1
        for pass_name in e2e.PASSES:
            p = r["passes"][pass_name]
            assert p["steps"] == rounds and len(p["warmup_ms"]) == warmup
            assert p["q1_ms"] <= p["median_ms"] <= p["q3_ms"]
            assert p["vs_torch-nchw"] > 0 and p["vs_torch-cl"] > 0
        if r["contender"] == e2e.ORACLE:
            assert r["passes"]["train"]["vs_torch-nchw"] == 1.0
            assert r["passes"]["train"]["paired_vs_torch-nchw"]["median"] == 1.0


def test_models_verified_and_timed_in_worker_processes(tmp_path, capsys):
    """The default path, a worker process per contender, through the command line."""
    status = main(["bench", "--e2e", "--models", "lenet5", "--batch-size", "2", "--threads", "1",
                   "--repeat", "2", "--quick", "--out", str(tmp_path)])
    out, err = capsys.readouterr()
    assert status == 0, out + err
    doc = json.loads((tmp_path / "e2e.json").read_text())
    assert doc["settings"]["batch"] == 2 and doc["settings"]["isolate"]
    for read in doc["settings"]["worker_threads"].values():  # what every worker set, read back
        assert (read["torch"], read["fastconv"]) == (1, 1)
    check_results(doc, ["lenet5"], rounds=2, warmup=e2e.QUICK.warmup)
    # patch() swapped every conv, pool and linear layer and left nothing behind
    assert doc["models"]["lenet5"]["patch"]["patched-nchw"] == dict(
        swapped={"Conv2d": 2, "MaxPool2d": 2, "Linear": 3}, skipped=[])
    assert doc["models"]["lenet5"]["parameters"] == 62006
    # the bars of the models run: each printed with its verdict, measured (whatever it is), never asserted
    assert [(b["model"], b["peer"], b["bar"]) for b in doc["bars"]] == [b for b in e2e.BARS if b[0] == "lenet5"]
    for b in doc["bars"]:
        assert b["verdict"] in ("PASS", "FAIL")
        assert f"{b['model']} train: patched-nchw vs {b['peer']}" in out
    assert ["lenet5", "inference", "patched-cl"] in [line.split()[:3] for line in out.splitlines()]
    assert "Issue 21's bars" in (tmp_path / "e2e.md").read_text()


def test_resnet18_and_mobilenetv2_verified_and_timed(tmp_path, capsys):
    """In this process (quicker: each new process pays seconds of first builds and first calls)."""
    assert e2e.bench_e2e(models=["resnet18", "mobilenetv2"], batch=2, threads=1, quick=True, repeat=1,
                         out=tmp_path, in_process=True, progress=False) == 0
    doc = json.loads((tmp_path / "e2e.json").read_text())
    assert not doc["settings"]["isolate"]
    check_results(doc, ["resnet18", "mobilenetv2"], rounds=1, warmup=e2e.QUICK.warmup)
    # patch() swapped every conv, batch norm, pool and linear layer and left nothing behind
    assert doc["models"]["resnet18"]["patch"]["patched-nchw"] == dict(
        swapped={"Conv2d": 20, "BatchNorm2d": 20, "AdaptiveAvgPool2d": 1, "Linear": 1}, skipped=[])
    assert doc["models"]["mobilenetv2"]["patch"]["patched-cl"] == dict(
        swapped={"Conv2d": 52, "BatchNorm2d": 52, "AdaptiveAvgPool2d": 1, "Linear": 1}, skipped=[])
    assert doc["models"]["resnet18"]["parameters"] == 11173962
    assert [b["model"] for b in doc["bars"]] == ["resnet18"] * 2 + ["mobilenetv2"] * 2
    out = capsys.readouterr().out
    assert ["resnet18", "inference", "patched-cl"] in [line.split()[:3] for line in out.splitlines()]


@pytest.fixture
def wrong_second_conv(monkeypatch):
    """fastconv's Conv2d drop-in 1% off on convolutions with 6 input channels: LeNet's second conv
    (``features.3``). In this process only, so the run below is --in-process."""
    import fastconv.torch

    forward = fastconv.torch.Conv2d.forward

    def off(self, x):
        y = forward(self, x)
        return y * 1.01 if self.in_channels == 6 else y

    monkeypatch.setattr(fastconv.torch.Conv2d, "forward", off)


def test_a_wrong_layer_fails_verification_and_is_named(wrong_second_conv, tmp_path, capsys):
    status = e2e.bench_e2e(models=["lenet5"], batch=2, threads=1, quick=True, repeat=1, out=tmp_path,
                           in_process=True, progress=False)
    out = capsys.readouterr().out
    assert status == 1
    by_name = {r["contender"]: r for r in json.loads((tmp_path / "e2e.json").read_text())["results"]}
    for name in ("patched-nchw", "patched-cl"):
        r = by_name[name]
        assert r["status"] == "FAIL" and "passes" not in r  # never timed
        assert "logits:train" in dict(r["failing"]) and "grad:features.3.weight" in dict(r["failing"])
        assert "first differing module: features.3 (fastconv.torch.modules.Conv2d" in r["reason"]
        assert [d["ok"] for d in r["draws"]] == [False] * (1 + e2e.REDRAWS) and "failed on every draw" in r["reason"]
        assert "the output of features.2 before it matched" in r["reason"]
    assert all(by_name[n]["status"] == "ok" and "passes" in by_name[n] for n in (e2e.ORACLE, e2e.NULL))
    assert "FAILED (not timed):" in out and "lenet5 patched-nchw: FAIL" in out
    assert [b["verdict"] for b in json.loads((tmp_path / "e2e.json").read_text())["bars"]] == ["n/a"]


def test_a_chance_failure_passes_on_another_draw(monkeypatch, tmp_path, capsys):
    """A patched model whose gradients differ on the run's own draw only (as a flipped ReLU makes
    them) is verified again on the next seed's draw, the oracle and the null with it, and passes
    there: timed, the record telling both draws; a model that fails every draw stays FAIL (see the
    wrong layer above)."""
    verification = e2e.Subject.verification

    def unlucky(self):
        out = verification(self)
        if self.patch_report is not None and self.seed == 0:
            out["grad:features.0.bias"] = out["grad:features.0.bias"] * 1.5
        return out

    monkeypatch.setattr(e2e.Subject, "verification", unlucky)
    status = e2e.bench_e2e(models=["lenet5"], batch=2, threads=1, quick=True, repeat=1, out=tmp_path,
                           in_process=True, progress=False)
    assert status == 0
    by_name = {r["contender"]: r for r in json.loads((tmp_path / "e2e.json").read_text())["results"]}
    for name in ("patched-nchw", "patched-cl"):
        r = by_name[name]
        assert r["status"] == "ok" and list(r["passes"]) == ["train", "inference"], r
        assert [(d["seed"], d["ok"]) for d in r["draws"]] == [(0, False), (1, True)]
        assert r["draws"][0]["worst"] == "grad:features.0.bias" and 0 <= r["verification_ratio"] <= 1
        assert r["verification"].startswith("ok on draw 2 (seed 1)") and "seed 0 differed in" in r["verification"]
    assert by_name[e2e.ORACLE]["status"] == "ok" and "draws" not in by_name[e2e.ORACLE]


def test_a_step_that_raises_is_an_error_and_the_others_go_on(monkeypatch, tmp_path, capsys):
    run = e2e.Subject.run

    def flaky(self, pass_name):
        if pass_name == "inference" and self.patch_report is not None and self.batches[0][0].is_contiguous():
            raise RuntimeError("no inference today")
        return run(self, pass_name)

    monkeypatch.setattr(e2e.Subject, "run", flaky)
    status = e2e.bench_e2e(models=["lenet5"], batch=2, threads=1, quick=True, repeat=1, out=tmp_path,
                           in_process=True, progress=False)
    assert status == 1
    by_name = {r["contender"]: r for r in json.loads((tmp_path / "e2e.json").read_text())["results"]}
    broken = by_name["patched-nchw"]  # its training step was timed; its inference raised in the warm-up
    assert broken["status"] == "error" and broken["reason"] == "inference: RuntimeError: no inference today"
    assert list(broken["passes"]) == ["train"]
    assert all(list(by_name[n]["passes"]) == ["train", "inference"] for n in ("torch-nchw", "torch-cl", "patched-cl"))
    assert "lenet5 patched-nchw: error: inference: RuntimeError" in capsys.readouterr().out


def test_compare_calibrates_on_the_null():
    want = {"grad:a": np.array([1.0, -2.0]), "grad:b": np.array([0.0, 1e-9]), "loss:loss": np.array(3.0)}
    null = {"grad:a": np.array([1.1, -2.0]), "grad:b": np.array([0.0, 1e-9]), "loss:loss": np.array(3.0)}
    # within 4x PyTorch's own layout difference on a, rounding-size on b (scale: 1e-3 of the gradients')
    assert e2e.compare({"grad:a": np.array([1.3, -2.0]), "grad:b": np.array([1e-8, 0.0]),
                        "loss:loss": np.array(3.0)}, want, null).ok
    verdict = e2e.compare({"grad:a": np.array([1.5, -2.0]), "grad:b": np.array([1e-6, 0.0]),
                           "loss:loss": np.array(3.0 + 1e-3)}, want, null)
    assert not verdict.ok
    assert [k for k, _ in verdict.failing] == ["grad:b", "loss:loss", "grad:a"]  # worst first
    assert verdict.failing[-1][1] == pytest.approx(0.5 / (4 * 0.1 + 1e-5 * 2))
    nan = e2e.compare({"grad:a": np.array([np.nan, -2.0]), "grad:b": want["grad:b"], "loss:loss": want["loss:loss"]},
                      want, null)
    assert not nan.ok and nan.worst == "grad:a"
    missing = e2e.compare({"grad:a": want["grad:a"]}, want, null)
    assert not missing.ok and "do not have the same parameters" in missing.note


@pytest.mark.parametrize(("args", "message"), [
    (["--e2e", "--backends", "cpp"], "--backends choose kernel cases"),
    (["--e2e", "--device", "gpu", "--passes", "forward"], "--passes, --device choose kernel cases"),
    (["--models", "lenet5"], "--models is an option of --e2e"),
    (["--e2e", "--models", "lenet5,vgg"], "unknown model(s) vgg"),
    (["--e2e", "--batch-size", "0"], "batch size must be a positive integer"),
    (["--e2e", "--repeat", "0"], "bench --e2e: repeat must be a positive integer, got 0"),
    (["--e2e", "--budget", "0"], "bench --e2e: budget must be positive seconds, got 0"),
])
def test_e2e_bad_options(args, message, tmp_path, capsys):
    assert main(["bench", *args, "--out", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "e2e.json").exists()
