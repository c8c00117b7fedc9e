"""Which Winograd tile wins, per layer and pass, against the tile the C++ chooser takes.

For each stride-1, undilated 3x3 conv of the suite (fp32), each pass: autotune run as a user runs
it (``fastconv.set_autotune(True)``, a fresh cache folder: its winner among every candidate, the
Cython backend's im2col + BLAS included where built), then the C++ candidates (``"auto"``, the
heuristics, and every algorithm ``conv2d_algorithms`` lists) timed in interleaved rounds, each
result checked against ``"auto"``'s within the float32 tolerance first. Prints one row per layer and
pass: the chooser's tile, autotune's winner, the median ms of the heuristics and of each tile, and
the heuristics' time over the fastest cpp candidate's (1.00: the heuristics chose it).

Usage (from the repository root, nothing else running; 2 threads as the suite's reports):

    python benchmarks/autotune_tiles.py [--precision highest|high] [--rounds 7] [--match TEXT]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time

import numpy as np

import fastconv
from fastconv import _cpp, autotune
from fastconv._params import conv_params
from fastconv._threads import num_threads
from fastconv.backends.cpp.conv import cpp_pass
from fastconv.autotune import _cpu_model
from fastconv.bench.suite import load_suite

PASSES = ("fwd", "dgrad", "wgrad")


def _autotune_winners(s, x, w, dy):
    """autotune's winner per pass, through the public API, timed afresh (an empty cache folder)."""
    with tempfile.TemporaryDirectory() as cache:
        os.environ["FASTCONV_CACHE_DIR"] = cache
        autotune.forget()
        autotune.set_autotune(True)
        try:
            kw = dict(stride=s.stride, padding=s.padding, dilation=s.dilation, groups=s.groups, backend="cpp")
            fastconv.conv2d(x, w, None, **kw)
            fastconv.conv2d_backward(dy, x, w, needs=(True, True, False), **kw)
            with open(autotune.cache_path(), encoding="utf-8") as f:
                entries = json.load(f)["entries"]
        finally:
            autotune.set_autotune(False)
            autotune.forget()
    return {key.split("|")[4]: algo for key, algo in entries.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--precision", default="highest", choices=("highest", "high"))
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--match", default="")
    args = ap.parse_args()
    fastconv.set_float32_conv_precision(args.precision)
    rng = np.random.default_rng(0)
    print(f"CPU: {_cpu_model()}, kernels {_cpp.gemm_isa()}, {args.threads} threads, precision {args.precision}, "
          f"medians of {args.rounds} interleaved rounds")
    print("| layer | pass | chooser | autotune | auto ms | " + " | ".join(f"F({m}x{m}) ms" for m in (2, 3, 4))
          + " | other cpp (ms) | auto / fastest cpp |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    layers = [s for s in load_suite().shapes
              if s.kind == "conv" and (s.KH, s.KW, s.stride, s.dilation, s.groups) == (3, 3, (1, 1), (1, 1), 1)
              and args.match in s.name]
    with num_threads(args.threads):
        for s in layers:
            p = conv_params("conv2d", (s.N, s.C_in, s.H, s.W), (s.C_out, s.C_in, 3, 3), s.stride, s.padding,
                            s.dilation, s.groups)
            x = rng.standard_normal((s.N, s.C_in, s.H, s.W)).astype(np.float32)
            w = rng.standard_normal((s.C_out, s.C_in, 3, 3)).astype(np.float32)
            dy = rng.standard_normal(p.y_shape).astype(np.float32)
            winners = _autotune_winners(s, x, w, dy)
            for pass_name in PASSES:
                algos = ["auto", *_cpp.conv2d_algorithms(p, pass_name, np.dtype(np.float32))]
                want = cpp_pass(pass_name, p, "auto", x, w, dy, args.threads)
                scale = np.abs(want).max()
                for a in algos:  # verified (and warmed up) before any timing
                    err = np.abs(cpp_pass(pass_name, p, a, x, w, dy, args.threads) - want).max() / scale
                    assert err < 1e-3, f"{s.name} {pass_name} {a}: relative error {err}"
                times = {a: [] for a in algos}
                for _ in range(args.rounds):
                    for a in algos:
                        t0 = time.perf_counter()
                        cpp_pass(pass_name, p, a, x, w, dy, args.threads)
                        times[a].append(time.perf_counter() - t0)
                med = {a: statistics.median(t) * 1e3 for a, t in times.items()}
                fastest = min((a for a in algos if a != "auto"), key=med.get)
                chooser = _cpp.conv2d_uses_winograd(p, pass_name, np.dtype(np.float32))
                tiles = " | ".join(f"{med[f'winograd{m}']:.2f}" if f"winograd{m}" in med else "–" for m in (2, 3, 4))
                others = ", ".join(f"{a} {med[a]:.2f}" for a in algos[1:] if not a.startswith("winograd"))
                print(f"| {s.name} | {pass_name} | {f'F({chooser}x{chooser})' if chooser else 'direct'} | "
                      f"{winners.get(pass_name, '?')} | {med['auto']:.2f} | {tiles} | {others} | "
                      f"{med['auto'] / med[fastest]:.2f} ({fastest}) |", flush=True)


if __name__ == "__main__":
    main()
