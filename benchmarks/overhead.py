"""Per-call overhead on tiny inputs: fastconv against PyTorch, where the call costs more than the math.

    python benchmarks/overhead.py [--seconds 0.05] [--rounds 5] [--threads 1,2]

Two APIs, each next to its PyTorch counterpart on the same tiny problem (a 1x3x8x8 image, 4
filters 3x3; 2x2 pools; batch norm over 3 channels; a 1x64 -> 16 dense layer):

- the NumPy API (``fastconv.conv2d`` ...) against ``torch.nn.functional`` (no autograd), and
- the ``fastconv.torch`` modules against ``torch.nn`` (parameters requiring grad, as in training):
  forward, and forward + backward (``y.sum().backward()``).

Every pair is checked to agree before it is timed. Timing: interleaved rounds (each round runs
the fastconv call and the PyTorch call back to back, ``--seconds`` of calls each), the median of
the rounds' per-call times, so both contenders meet the same phases of a noisy machine. PyTorch
runs on 2 threads (``torch.set_num_threads(2)``); fastconv on each count of ``--threads``.
Prints a table: microseconds per call, fastconv / PyTorch. issue 21's bar is a ratio of 2 or less.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import time

import numpy as np
import torch
import torch.nn.functional as F

import fastconv as fc
import fastconv.torch as ft


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    import platform

    return platform.processor() or platform.machine()


def _per_call(f, seconds: float) -> float:
    """Microseconds per call of ``f`` over about ``seconds`` (the call count fixed from a probe)."""
    start, n = time.perf_counter(), 0
    while time.perf_counter() - start < seconds / 10:
        f()
        n += 1
    n = max(10, n * 10)
    start = time.perf_counter_ns()
    for _ in range(n):
        f()
    return (time.perf_counter_ns() - start) / n / 1e3


def compare(ours, theirs, seconds: float, rounds: int) -> tuple[float, float]:
    """Median microseconds per call of ``ours`` and ``theirs`` over interleaved rounds."""
    for f in (ours, theirs):  # warm up: caches, first-call paths
        for _ in range(50):
            f()
    times = [(_per_call(ours, seconds), _per_call(theirs, seconds)) for _ in range(rounds)]
    return statistics.median(t[0] for t in times), statistics.median(t[1] for t in times)


def _close(a, b, what):
    a = a.detach().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
    b = b.detach().numpy() if isinstance(b, torch.Tensor) else np.asarray(b)
    if not np.allclose(a, b, rtol=1e-4, atol=1e-5):
        raise SystemExit(f"{what}: fastconv and PyTorch disagree (max |diff| {np.abs(a - b).max()})")


def numpy_cases():
    """(name, fastconv call, PyTorch call): the NumPy API against torch.nn.functional."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 3, 8, 8)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    v = rng.standard_normal((1, 64)).astype(np.float32)
    wl, bl = rng.standard_normal((16, 64)).astype(np.float32), rng.standard_normal(16).astype(np.float32)
    mean, var = rng.standard_normal(3).astype(np.float32), rng.random(3).astype(np.float32) + 0.5
    gamma, beta = rng.standard_normal(3).astype(np.float32), rng.standard_normal(3).astype(np.float32)
    t = {k: torch.from_numpy(a) for k, a in dict(x=x, w=w, b=b, v=v, wl=wl, bl=bl, mean=mean, var=var,
                                                   gamma=gamma, beta=beta).items()}
    return [
        ("conv2d 1x3x8x8, 4x3x3", lambda: fc.conv2d(x, w, b), lambda: F.conv2d(t["x"], t["w"], t["b"])),
        ("max_pool2d 2", lambda: fc.max_pool2d(x, 2), lambda: F.max_pool2d(t["x"], 2)),
        ("avg_pool2d 2", lambda: fc.avg_pool2d(x, 2), lambda: F.avg_pool2d(t["x"], 2)),
        ("linear 64 -> 16", lambda: fc.linear(v, wl, bl), lambda: F.linear(t["v"], t["wl"], t["bl"])),
        ("batch_norm eval", lambda: fc.batch_norm(x, mean, var, gamma, beta).y,
         lambda: F.batch_norm(t["x"], t["mean"], t["var"], t["gamma"], t["beta"])),
        ("batch_norm train", lambda: fc.batch_norm(x, None, None, gamma, beta, training=True).y,
         lambda: F.batch_norm(t["x"], None, None, t["gamma"], t["beta"], training=True)),
    ]


def module_cases():
    """(name, fastconv module, torch.nn module, input): the same parameters in both."""
    torch.manual_seed(0)
    image, vector = torch.randn(1, 3, 8, 8), torch.randn(1, 64)
    pairs = [("Conv2d 3->4, 3x3", ft.Conv2d(3, 4, 3), torch.nn.Conv2d(3, 4, 3), image),
             ("MaxPool2d 2", ft.MaxPool2d(2), torch.nn.MaxPool2d(2), image),
             ("Linear 64 -> 16", ft.Linear(64, 16), torch.nn.Linear(64, 16), vector),
             ("BatchNorm2d 3, train", ft.BatchNorm2d(3), torch.nn.BatchNorm2d(3), image)]
    for _, ours, theirs, _ in pairs:
        theirs.load_state_dict(ours.state_dict())
    return pairs


def run(threads, seconds, rounds):
    torch.set_num_threads(2)
    rows = []
    for n in threads:
        fc.set_num_threads(n)
        for name, ours, theirs in numpy_cases():
            _close(ours(), theirs(), name)
            rows.append(("NumPy API vs F", name, "fwd", n, *compare(ours, theirs, seconds, rounds)))
        for name, ours, theirs, x in module_cases():
            _close(ours(x), theirs(x), name)
            x_grad = x.clone().requires_grad_(True)  # the backward reaches x too, as inside a network
            for pass_name, f in (("fwd", lambda m: m(x)), ("fwd+bwd", lambda m: m(x_grad).sum().backward())):
                rows.append(("fastconv.torch vs torch.nn", name, pass_name, n,
                             *compare(lambda: f(ours), lambda: f(theirs), seconds, rounds)))
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=0.05, help="per contender and round (default 0.05)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    parser.add_argument("--threads", default="1,2", help="fastconv thread counts (default 1,2)")
    args = parser.parse_args(argv)
    threads = [int(n) for n in args.threads.split(",")]
    print(f"CPU: {cpu_model()}; torch {torch.__version__} on 2 threads; fastconv {fc.__version__}")
    rows = run(threads, args.seconds, args.rounds)
    header = f"{'API':<27} {'op':<24} {'pass':<8} {'fc thr':>6} {'fastconv us':>12} {'torch us':>9} {'ratio':>6}"
    print(header)
    print("-" * len(header))
    for api, name, pass_name, n, ours, theirs in rows:
        print(f"{api:<27} {name:<24} {pass_name:<8} {n:>6} {ours:>12.1f} {theirs:>9.1f} {ours / theirs:>6.2f}")


if __name__ == "__main__":
    main()
