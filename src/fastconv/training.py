"""``fastconv train``: a LeNet-style CNN trained with :mod:`fastconv.nn` on scikit-learn's digits.

The data set is ``sklearn.datasets.load_digits`` (1797 images of 8x8 pixels, 10 classes, shipped
with scikit-learn: no download), scaled to [0, 1] and split, stratified, into train, validation
and test sets. Training runs mini-batch epochs with a progress bar on stderr, evaluates on the
validation set after each epoch, stops early when the validation loss has not improved for
``patience`` epochs and restores the best epoch's parameters before measuring the test set.
It writes ``training.png`` (loss and accuracy per epoch), ``metrics.json`` and ``model.npz``.

Backends: the layers run on ``backend`` (all of them: no op falls back). A backend without
loss kernels (Cython) cannot run the cross-entropy; the loss then runs on the reference, chosen
explicitly here and reported in the output and in ``metrics.json``. Batch norm and dropout are
options, refused up front for a backend that lacks them.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from . import _dispatch
from ._threads import get_num_threads, set_num_threads
from . import nn

#: default learning rate per optimizer (``--lr`` overrides): values that train this net well
DEFAULT_LR = {"sgd": 0.05, "adam": 2e-3, "rmsprop": 1e-3, "adagrad": 0.05}
SCHEDULES = ("none", "step", "exponential", "inverse-time")


@dataclass
class TrainConfig:
    backend: str = "auto"
    epochs: int = 40
    batch_size: int = 32
    optimizer: str = "sgd"
    lr: float | None = None  # None: DEFAULT_LR[optimizer]
    momentum: float = 0.9  # SGD and RMSprop
    nesterov: bool = False
    weight_decay: float = 1e-4
    schedule: str = "step"
    patience: int = 5
    seed: int = 0
    val_fraction: float = 0.15
    test_fraction: float = 0.2
    batch_norm: bool = False
    dropout: float = 0.0
    threads: int | None = None


@dataclass
class TrainResult:
    config: dict
    backend: str  # the backend the layers ran on ("cpp", or what "auto" chose)
    loss_backend: str  # the backend the cross-entropy ran on
    threads: int
    epochs_run: int
    best_epoch: int  # 1-based; its parameters are the final model's
    stopped_early: bool
    seconds: float  # data loading excluded, training and evaluation included
    sizes: dict  # examples per split
    history: dict = field(default_factory=dict)  # per epoch: train/val loss and accuracy, lr, seconds
    final: dict = field(default_factory=dict)  # {split: {"loss", "accuracy"}} with the best parameters


# --------------------------------------------------------------------------------------------
# data and model
# --------------------------------------------------------------------------------------------

def load_digits_split(seed=0, val_fraction=0.15, test_fraction=0.2, dtype=np.float32) -> dict:
    """``{"train"|"val"|"test": (x (n, 1, 8, 8) in [0, 1], y (n,) int64)}``, stratified by class."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.images / 16.0).astype(dtype)[:, None]  # (1797, 1, 8, 8): pixel values are 0..16
    y = digits.target.astype(np.int64)  # (1797,)
    x_rest, x_test, y_rest, y_test = train_test_split(x, y, test_size=test_fraction, stratify=y,
                                                      random_state=seed)
    # the validation share is of the whole set, so rescale it to the remainder
    x_train, x_val, y_train, y_val = train_test_split(
        x_rest, y_rest, test_size=val_fraction / (1 - test_fraction), stratify=y_rest, random_state=seed)
    return {"train": (x_train, y_train), "val": (x_val, y_val), "test": (x_test, y_test)}


def lenet(num_classes=10, *, batch_norm=False, dropout=0.0, rng=None, dtype=np.float32,
          backend="auto") -> nn.Sequential:
    """Conv(1->16, 3x3, pad 1) [BN] ReLU MaxPool2 -> Conv(16->32, 3x3, pad 1) [BN] ReLU MaxPool2 ->
    Flatten -> Linear(128->64) ReLU [Dropout] -> Linear(64->num_classes), for 8x8 single-channel input."""
    rng = nn.layers.as_generator("lenet", rng)
    kw = dict(dtype=dtype, backend=backend)

    def stage(c_in, c_out):
        norm = [nn.BatchNorm2d(c_out, **kw)] if batch_norm else []
        # with batch norm after it a convolution's bias is redundant (the norm's shift replaces it)
        return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=not batch_norm, rng=rng, **kw), *norm,
                nn.ReLU(backend=backend), nn.MaxPool2d(2, backend=backend)]

    head = [nn.Flatten(backend=backend), nn.Linear(32 * 2 * 2, 64, rng=rng, **kw), nn.ReLU(backend=backend)]
    if dropout:
        head.append(nn.Dropout(dropout, rng=rng, backend=backend))
    head.append(nn.Linear(64, num_classes, rng=rng, **kw))
    return nn.Sequential(*stage(1, 16), *stage(16, 32), *head)


def _resolve_backends(config: TrainConfig, x) -> tuple[str, str]:
    """(layer backend, loss backend) as they will run, or a ValueError for an impossible choice."""
    name = config.backend
    backend = _dispatch.select("train", "conv", "conv2d_forward", name, x)[0] if name == "auto" else name
    if name != "auto":
        _dispatch._load(name)  # a missing backend fails here, with the reason it failed to load
    needed = [("norm", "batch_norm_stats", config.batch_norm), ("dropout", "dropout_forward", config.dropout > 0)]
    for family, func, used in needed:
        if used and name != "auto" and backend not in _dispatch.implementers(family, func):
            raise ValueError(f"train: backend {backend!r} does not implement {family} ops, needed by "
                             f"--{'batch-norm' if family == 'norm' else 'dropout'}")
    loss_backend = name
    if name != "auto" and backend not in _dispatch.implementers("loss", "cross_entropy_index_forward"):
        loss_backend = "reference"  # explicit, and reported: the layers still run on `backend`
    elif name == "auto":
        loss_backend = _dispatch.select("train", "loss", "cross_entropy_index_forward", "auto", x)[0]
    return backend, loss_backend


def _optimizer(model, config: TrainConfig):
    lr = DEFAULT_LR[config.optimizer] if config.lr is None else config.lr
    name, wd = config.optimizer, config.weight_decay
    if name == "sgd":
        return nn.SGD(model.named_parameters(), lr, momentum=config.momentum, nesterov=config.nesterov,
                      weight_decay=wd)
    if name == "rmsprop":
        return nn.RMSprop(model.named_parameters(), lr, momentum=config.momentum, weight_decay=wd)
    return nn.OPTIMIZERS[name](model.named_parameters(), lr, weight_decay=wd)


def _schedule(optimizer, name: str, epochs: int):
    """The per-epoch schedule: the rate falls to about a tenth over the run (none: constant)."""
    if name == "step":
        return nn.StepLR(optimizer, step_size=max(1, epochs // 3), gamma=0.3)
    if name == "exponential":
        return nn.ExponentialLR(optimizer, gamma=0.1 ** (1 / max(1, epochs)))
    if name == "inverse-time":
        return nn.InverseTimeDecay(optimizer, decay=9 / max(1, epochs))
    return None


def _check_config(config: TrainConfig) -> None:
    def positive(name, value, minimum=1):
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise ValueError(f"train: expected {name} >= {minimum}, got {value!r}")

    _dispatch._check_name(config.backend)  # an unknown name is a ValueError listing the known ones
    positive("epochs", config.epochs)
    positive("batch_size", config.batch_size)
    positive("patience", config.patience)
    if config.threads is not None:
        positive("threads", config.threads)
    if config.optimizer not in nn.OPTIMIZERS:
        raise ValueError(f"train: unknown optimizer {config.optimizer!r}; choose from {', '.join(nn.OPTIMIZERS)}")
    if config.schedule not in SCHEDULES:
        raise ValueError(f"train: unknown schedule {config.schedule!r}; choose from {', '.join(SCHEDULES)}")
    if not (0 < config.val_fraction and 0 < config.test_fraction and config.val_fraction + config.test_fraction < 1):
        raise ValueError(f"train: expected positive val and test fractions summing to less than 1, "
                         f"got {config.val_fraction} and {config.test_fraction}")
    if not 0 <= config.dropout < 1:
        raise ValueError(f"train: expected dropout in [0, 1), got {config.dropout}")


# --------------------------------------------------------------------------------------------
# progress
# --------------------------------------------------------------------------------------------

class ProgressBar:
    """A one-line text bar, redrawn in place with a carriage return; drawn only when enabled."""

    def __init__(self, stream, enabled: bool, width: int = 24):
        self.stream, self.enabled, self.width = stream, enabled, width

    def update(self, label: str, done: int, total: int, text: str = "") -> None:
        if not self.enabled:
            return
        filled = self.width * done // max(total, 1)
        bar = "#" * filled + "-" * (self.width - filled)
        self.stream.write(f"\r{label} [{bar}] {done}/{total} {text}\x1b[K")
        self.stream.flush()

    def line(self, text: str) -> None:
        """A permanent line (replacing the bar on a terminal)."""
        self.stream.write(("\r\x1b[K" if self.enabled else "") + text + "\n")
        self.stream.flush()


# --------------------------------------------------------------------------------------------
# training
# --------------------------------------------------------------------------------------------

def evaluate(model, criterion, x, y, batch_size=512) -> tuple[float, float]:
    """(mean loss, accuracy) of ``model`` on (x, y) in eval mode; the model's mode is restored."""
    was_training = model.training
    model.eval()
    total_loss, correct = 0.0, 0
    try:
        for start in range(0, len(x), batch_size):
            logits = model(x[start:start + batch_size])  # (n, classes)
            target = y[start:start + batch_size]
            total_loss += float(criterion(logits, target)) * len(target)
            correct += int((logits.argmax(axis=1) == target).sum())
    finally:
        model.train(was_training)
    return total_loss / len(x), correct / len(x)


def train(config: TrainConfig, *, data=None, progress=None, log=None) -> tuple[TrainResult, nn.Module]:
    """Train :func:`lenet` as ``config`` says; returns the result and the model (best parameters).

    ``data`` defaults to :func:`load_digits_split`; ``progress`` is a :class:`ProgressBar` (None:
    silent), ``log`` a callable for per-epoch lines (None: silent).
    """
    _check_config(config)
    if config.threads is not None:
        set_num_threads(config.threads)
    if data is None:
        data = load_digits_split(config.seed, config.val_fraction, config.test_fraction)
    (x_train, y_train), (x_val, y_val) = data["train"], data["val"]
    backend, loss_backend = _resolve_backends(config, x_train)
    # independent streams for initialisation, shuffling and dropout, all from one seed
    init_seq, shuffle_seq = np.random.SeedSequence(config.seed).spawn(2)
    model = lenet(int(data["train"][1].max()) + 1, batch_norm=config.batch_norm, dropout=config.dropout,
                  rng=np.random.default_rng(init_seq), dtype=x_train.dtype, backend=config.backend)
    criterion = nn.CrossEntropyLoss(backend=loss_backend)
    optimizer = _optimizer(model, config)
    schedule = _schedule(optimizer, config.schedule, config.epochs)
    shuffle_rng = np.random.default_rng(shuffle_seq)

    history = {key: [] for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "seconds")}
    best_loss, best_epoch, best_state, stopped_early = np.inf, 0, None, False
    n, B = len(x_train), config.batch_size
    batches = -(-n // B)
    start_time = time.perf_counter()
    for epoch in range(1, config.epochs + 1):
        epoch_start = time.perf_counter()
        model.train()
        order = shuffle_rng.permutation(n)  # (n,)
        total_loss, correct = 0.0, 0
        for i in range(batches):
            idx = order[i * B:(i + 1) * B]  # (B,), the last batch may be smaller
            xb, yb = x_train[idx], y_train[idx]  # (B, 1, 8, 8), (B,)
            logits = model(xb)  # (B, classes)
            loss = float(criterion(logits, yb))
            optimizer.zero_grad()
            model.backward(criterion.backward())
            optimizer.step()
            total_loss += loss * len(idx)
            correct += int((logits.argmax(axis=1) == yb).sum())
            if progress is not None:
                progress.update(f"epoch {epoch}/{config.epochs}", i + 1, batches, f"loss {loss:.4f}")
        val_loss, val_acc = evaluate(model, criterion, x_val, y_val)
        history["train_loss"].append(total_loss / n)
        history["train_accuracy"].append(correct / n)
        history["val_loss"].append(val_loss)
        history["val_accuracy"].append(val_acc)
        history["lr"].append(optimizer.lr)
        history["seconds"].append(time.perf_counter() - epoch_start)
        improved = val_loss < best_loss
        if improved:
            best_loss, best_epoch, best_state = val_loss, epoch, model.state_dict()
        if log is not None:
            log(f"epoch {epoch:3d}/{config.epochs}  train loss {total_loss / n:.4f} acc {correct / n:.4f}  "
                f"val loss {val_loss:.4f} acc {val_acc:.4f}  lr {optimizer.lr:.3g}  "
                f"{history['seconds'][-1]:.2f}s{'  *' if improved else ''}")
        if epoch - best_epoch >= config.patience:
            stopped_early = epoch < config.epochs
            break
        if schedule is not None:
            schedule.step()
    model.load_state_dict(best_state)
    final = {}
    for split, (x, y) in data.items():
        loss, acc = evaluate(model, criterion, x, y)
        final[split] = {"loss": loss, "accuracy": acc}
    seconds = time.perf_counter() - start_time
    result = TrainResult(config=asdict(config), backend=backend, loss_backend=loss_backend, threads=get_num_threads(),
                         epochs_run=len(history["val_loss"]), best_epoch=best_epoch, stopped_early=stopped_early,
                         seconds=seconds, sizes={k: len(v[1]) for k, v in data.items()}, history=history,
                         final=final)
    return result, model


def plot_history(result: TrainResult, path) -> str:
    """Loss and accuracy per epoch (train and validation), the best epoch marked, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed; the figure only goes to a file
    import matplotlib.pyplot as plt

    h = result.history
    epochs = np.arange(1, len(h["val_loss"]) + 1)  # (epochs_run,)
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, title in ((ax_loss, "loss", "cross-entropy loss"), (ax_acc, "accuracy", "accuracy")):
        ax.plot(epochs, h[f"train_{key}"], label="train")
        ax.plot(epochs, h[f"val_{key}"], label="validation")
        ax.axvline(result.best_epoch, color="grey", linestyle=":", label=f"best epoch ({result.best_epoch})")
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
    ax_loss.set_yscale("log")
    fig.suptitle(f"fastconv LeNet on digits: backend {result.backend}, {result.threads} threads, "
                 f"test accuracy {result.final['test']['accuracy']:.2%}, {result.seconds:.1f} s")
    fig.tight_layout()
    path = os.fspath(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def run_train(config: TrainConfig, out_dir: str | None, *, quiet=False, stdout=None, stderr=None) -> int:
    """The ``fastconv train`` command: train, print the summary, write the plot, metrics and model."""
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    try:
        _check_config(config)
        if out_dir is not None:
            import matplotlib  # noqa: F401 (the plot: missing, it should fail now, not after training)
        data = load_digits_split(config.seed, config.val_fraction, config.test_fraction)
        _resolve_backends(config, data["train"][0])
    except ImportError as exc:
        print(f"fastconv train: needs scikit-learn and matplotlib (pip install 'fastconv[train]'): {exc}",
              file=stderr)
        return 2
    except (TypeError, ValueError, _dispatch.BackendUnavailableError) as exc:
        print(f"fastconv {exc}", file=stderr)
        return 2
    is_tty = hasattr(stderr, "isatty") and stderr.isatty()
    bar = ProgressBar(stderr, enabled=is_tty and not quiet)
    log = None if quiet else bar.line
    result, model = train(config, data=data, progress=bar, log=log)

    loss_note = "" if result.loss_backend == result.backend else \
        f" (loss on {result.loss_backend}: {result.backend} has no loss kernels)"
    print(f"backend {result.backend}{loss_note}, {result.threads} threads, {result.epochs_run} epochs "
          f"(best {result.best_epoch}{', stopped early' if result.stopped_early else ''}), "
          f"{result.seconds:.2f} s", file=stdout)
    for split in ("train", "val", "test"):
        f = result.final[split]
        print(f"{split:5s} accuracy {f['accuracy']:.4f}  loss {f['loss']:.4f}  ({result.sizes[split]} images)",
              file=stdout)
    if out_dir is not None:
        os.makedirs(out_dir, exist_ok=True)
        written = [plot_history(result, os.path.join(out_dir, "training.png")),
                   model.save(os.path.join(out_dir, "model.npz"))]
        metrics = os.path.join(out_dir, "metrics.json")
        with open(metrics, "w") as fh:
            json.dump(asdict(result), fh, indent=2)
        written.append(metrics)
        print("wrote " + ", ".join(written), file=stdout)
    return 0
