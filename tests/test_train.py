"""``fastconv train`` and fastconv.training: the command's output and files, early stopping,
reproducibility, the backend rules (Cython's loss on the reference, said aloud), the progress bar."""

import io
import json

import numpy as np
import pytest

from fastconv import _dispatch
from fastconv.cli import main
from fastconv.training import ProgressBar, TrainConfig, load_digits_split, run_train, train

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
FASTEST = next(name for name in _dispatch.AUTO_ORDER if name in _dispatch.available_backends())


@pytest.fixture(scope="module")
def digits():
    pytest.importorskip("sklearn")
    return load_digits_split(seed=0)


def _subset(data, n):
    """The first n images of each split: enough to exercise the loop in a fraction of a second."""
    return {split: (x[:n], y[:n]) for split, (x, y) in data.items()}


def test_split_is_stratified_and_scaled(digits):
    sizes = {split: len(y) for split, (_, y) in digits.items()}
    assert sizes == {"train": 1167, "val": 270, "test": 360} and sum(sizes.values()) == 1797
    everything = np.concatenate([y for _, y in digits.values()])  # (1797,)
    overall = np.bincount(everything, minlength=10) / len(everything)  # (10,)
    for x, y in digits.values():
        assert x.dtype == np.float32 and x.shape[1:] == (1, 8, 8)
        assert x.min() == 0 and x.max() == 1  # pixel values 0..16 scaled to [0, 1]
        # stratified: each split has each class in the proportion of the whole set
        np.testing.assert_allclose(np.bincount(y, minlength=10) / len(y), overall, atol=0.005)


def test_train_command_writes_plot_metrics_and_model(tmp_path, capsys, digits):
    pytest.importorskip("matplotlib")
    out_dir = tmp_path / "run"
    status = main(["train", "--backend", FASTEST, "--epochs", "3", "--threads", "1", "--out", str(out_dir),
                   "--quiet"])
    out, err = capsys.readouterr()
    assert status == 0, out + err
    assert err == ""  # --quiet: no bar, no epoch lines
    assert f"backend {FASTEST}, 1 threads, 3 epochs" in out
    test_line = next(line for line in out.splitlines() if line.startswith("test"))
    assert float(test_line.split()[2]) > 0.6  # three epochs already classify most digits
    assert (out_dir / "training.png").read_bytes()[:8] == PNG_SIGNATURE
    metrics = json.loads((out_dir / "metrics.json").read_text())
    assert metrics["backend"] == FASTEST and metrics["epochs_run"] == 3 and metrics["threads"] == 1
    assert len(metrics["history"]["val_loss"]) == 3 and metrics["sizes"]["test"] == 360
    assert metrics["final"]["test"]["accuracy"] == pytest.approx(float(test_line.split()[2]), abs=1e-4)
    with np.load(out_dir / "model.npz") as saved:
        assert saved["0.weight"].shape == (16, 1, 3, 3) and saved["9.weight"].shape == (10, 64)


def test_early_stopping_restores_the_best_epoch(digits):
    # lr 0: the parameters never change, so the validation loss never improves after epoch 1
    config = TrainConfig(backend=FASTEST, epochs=20, lr=0.0, patience=2, batch_size=64)
    result, _ = train(config, data=_subset(digits, 128))
    assert result.best_epoch == 1 and result.epochs_run == 3 and result.stopped_early
    assert len(set(result.history["val_loss"])) == 1

    config = TrainConfig(backend=FASTEST, epochs=4, patience=10, batch_size=32, optimizer="adam",
                         schedule="exponential")
    result, model = train(config, data=_subset(digits, 256))
    assert result.epochs_run == 4 and not result.stopped_early
    best = result.best_epoch - 1
    assert result.history["val_loss"][best] == min(result.history["val_loss"])
    # the final model is the best epoch's: its validation loss is the one recorded then
    assert result.final["val"]["loss"] == pytest.approx(result.history["val_loss"][best], rel=1e-5)
    lrs = result.history["lr"]
    assert lrs[0] == pytest.approx(2e-3) and all(a > b for a, b in zip(lrs, lrs[1:]))


def test_training_is_reproducible_from_the_seed(digits):
    config = TrainConfig(backend=FASTEST, epochs=2, seed=3, dropout=0.2 if FASTEST != "cython" else 0.0)
    first, _ = train(config, data=_subset(digits, 96))
    second, _ = train(config, data=_subset(digits, 96))
    assert first.history["train_loss"] == second.history["train_loss"]
    assert first.final == second.final
    other, _ = train(TrainConfig(backend=FASTEST, epochs=2, seed=4), data=_subset(digits, 96))
    assert other.history["train_loss"] != first.history["train_loss"]


@pytest.mark.skipif("cython" not in _dispatch.available_backends(), reason="cython backend not built")
def test_cython_runs_the_layers_and_says_the_loss_runs_on_the_reference(digits):
    out = io.StringIO()
    status = run_train(TrainConfig(backend="cython", epochs=1), None, quiet=True, stdout=out, stderr=io.StringIO())
    assert status == 0
    assert "backend cython (loss on reference: cython has no loss kernels)" in out.getvalue()
    err = io.StringIO()
    status = run_train(TrainConfig(backend="cython", batch_norm=True), None, stdout=io.StringIO(), stderr=err)
    assert status == 2
    assert "backend 'cython' does not implement norm ops, needed by --batch-norm" in err.getvalue()


@pytest.mark.parametrize("args, message", [
    (["--backend", "gpu"], "unknown backend 'gpu'"),
    (["--epochs", "0"], "expected epochs >= 1, got 0"),
    (["--dropout", "1"], "expected dropout in [0, 1), got 1.0"),
    (["--patience", "-1"], "expected patience >= 1, got -1"),
])
def test_bad_arguments_exit_2_with_the_reason(args, message, capsys, digits):
    status = main(["train", "--no-out", *args])
    _, err = capsys.readouterr()
    assert status == 2 and message in err


def test_progress_bar_on_a_terminal_and_epoch_lines(digits):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    err, out = Terminal(), io.StringIO()
    assert run_train(TrainConfig(backend=FASTEST, epochs=1), None, stdout=out, stderr=err) == 0
    text = err.getvalue()
    assert "\repoch 1/1 [" in text and "] 37/37 loss" in text  # 1167 images in batches of 32
    assert "epoch   1/1  train loss" in text  # the epoch's line replaces the bar

    plain = io.StringIO()  # not a terminal: epoch lines only, no bar
    assert run_train(TrainConfig(backend=FASTEST, epochs=1), None, stdout=io.StringIO(), stderr=plain) == 0
    assert "\r" not in plain.getvalue() and plain.getvalue().startswith("epoch   1/1")


def test_progress_bar_drawing():
    stream = io.StringIO()
    bar = ProgressBar(stream, enabled=True, width=10)
    bar.update("epoch 2/5", 3, 4, "loss 0.5")
    assert stream.getvalue() == "\repoch 2/5 [#######---] 3/4 loss 0.5\x1b[K"
    quiet = io.StringIO()
    ProgressBar(quiet, enabled=False).update("epoch", 1, 2)
    assert quiet.getvalue() == ""
