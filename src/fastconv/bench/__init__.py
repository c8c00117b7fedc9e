"""Benchmarks: every backend verified against the reference, then timed side by side with PyTorch.

``fastconv bench`` (see :func:`bench`) and the pytest-benchmark suite in ``benchmarks/`` share
these modules:

- :mod:`.suite`: the shapes (``fastconv/data/shapes.json`` or a user file) and the work per pass;
- :mod:`.cases`: inputs, the fastconv call per backend, the PyTorch peers, verification;
- :mod:`.timing`: warm-up, how many runs, CPU and CUDA-event clocks, statistics;
- :mod:`.runner`: verify-then-time over the suite;
- :mod:`.report`, :mod:`.chart`: the table, Markdown, JSON and PNG;
- :mod:`.machine`: CPU, threads, versions, GPUs (also ``fastconv info``).
"""

from __future__ import annotations

import sys
from dataclasses import replace

from .machine import format_info, machine_info
from .report import format_summary, write_reports
from .runner import FAILED, Config, import_torch, resolve_backends, run
from .suite import load_suite, parse_passes, quick_subset, select
from .timing import QUICK, Policy, check_count, with_budget

__all__ = ["bench", "info", "load_suite", "machine_info", "run", "Config", "Policy"]


#: ``--device``: whose contenders run (fastconv backends and PyTorch peers on that device)
DEVICES = {"all": ("cpu", "gpu"), "cpu": ("cpu",), "gpu": ("gpu",)}


def bench(shapes=None, backends=None, passes=None, threads=None, dtype=None, repeat=None, budget=None,
          quick=False, match=None, out="bench-results", torch=True, chart=True, seed=0, stdout=None,
          stderr=None, progress=True, command="", device="all", isolate=True) -> int:
    """Run the benchmark and write ``out``/{bench.json, report.md, speedup.png}.

    Returns 0, or 1 when a contender failed verification or crashed. Bad options raise ValueError.
    ``backends`` is a list of names (default: every available backend); ``passes`` a comma list
    (``forward``, ``backward-input``, ``backward-weight``, ``backward`` = both); ``quick`` keeps the
    cheapest shape of each kind and a short timing budget; ``device`` ('all', 'cpu' or 'gpu')
    keeps the contenders of that device (a GPU run times the ``cupy`` backend next to PyTorch CUDA);
    ``isolate`` runs each contender in a worker process that is stopped while the others run
    (:mod:`.workers`), else every contender runs in this process.
    """
    stdout = sys.stdout if stdout is None else stdout
    suite = load_suite(shapes)
    chosen = select(suite.shapes, match)
    if quick:
        chosen = quick_subset(chosen)
    if not chosen:
        raise ValueError(f"bench: no shape of {suite.path} matches {match!r}")
    dtype = dtype or suite.dtype
    if dtype not in ("float32", "float64"):
        raise ValueError(f"bench: dtype must be float32 or float64, got {dtype!r}")
    check_count("bench", "threads", threads)
    policy = with_budget("bench", QUICK if quick else Policy(), budget)
    check_count("bench", "repeat", repeat)
    if repeat is not None:
        policy = replace(policy, repeat=repeat)
    if device not in DEVICES:
        raise ValueError(f"bench: device must be one of {', '.join(DEVICES)}, got {device!r}")
    names, unavailable = resolve_backends(backends, DEVICES[device])
    if torch and import_torch() is None:
        unavailable = dict(unavailable, torch="PyTorch is not installed (pip install torch)")
        torch = False
    if device == "gpu" and not names and not (torch and import_torch().cuda.is_available()):
        raise ValueError(f"bench: --device gpu, but nothing here runs on a GPU ({unavailable.get('cupy', '')})")
    config = Config(chosen, parse_passes(passes), names, dtype, threads, policy, torch, seed,
                    unavailable, command, DEVICES[device], isolate)
    doc = run(config, progress_stream=stderr, show_progress=progress)
    written = write_reports(doc, out, chart=chart)
    print(format_summary(doc, written["summary"]), file=stdout)
    print("\nwrote " + ", ".join(str(p) for p in written["paths"].values())
          + (f" (no chart: {written['chart_note']})" if written["chart_note"] else ""), file=stdout)
    return 1 if any(r["status"] in FAILED for r in doc["results"]) else 0


def info(stdout=None, as_json=False) -> int:
    """``fastconv info``: backends, versions, CPU features, threads, GPUs."""
    import json

    data = machine_info(import_torch())
    print(json.dumps(data, indent=1) if as_json else format_info(data), file=stdout or sys.stdout)
    return 0
