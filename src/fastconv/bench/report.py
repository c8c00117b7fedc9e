"""From raw results to what people read: speedups, geometric means, the text table, Markdown, JSON.

Speedups are ratios of medians measured in the same run (> 1: faster). ``vs ref`` divides the
reference's time by the backend's; ``vs torch`` divides PyTorch's time in its faster layout on the
backend's device (NCHW or channels_last, CPU or CUDA) by the backend's. On CUDA that peer computes
in fp32 with TF32 off, as fastconv's GPU kernels do; ``vs tf32`` compares with PyTorch's defaults
(TF32 allowed in cuDNN's convolutions) too. A GPU row's ``floor`` is the least time its work can
take on that GPU (the larger of FLOPs over the measured GEMM rate and bytes over the measured copy
bandwidth); ``% floor`` is that floor over the measured time. Geometric means run over the cases
where both sides were timed.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

from .cases import torch_label
from .runner import FAILED
from .suite import PASSES

RATE_UNIT = {"FLOP": "GFLOP/s", "B": "GB/s"}


# --------------------------------------------------------------------------------------------
# the numbers
# --------------------------------------------------------------------------------------------

def _geomean(values) -> float | None:
    values = [v for v in values if v is not None and v > 0]
    return math.exp(sum(map(math.log, values)) / len(values)) if values else None


def _best_torch(recs: dict, torch_names: list[str]) -> dict | None:
    timed = [recs[n] for n in torch_names if n in recs and recs[n]["status"] == "ok"]
    return min(timed, key=lambda r: r["median_ms"]) if timed else None


def summarize(doc: dict) -> dict:
    """Per (shape, pass) row: each backend's cell and PyTorch's best per device; then geometric means."""
    contenders = {r["contender"]: r for r in doc["results"]}  # name -> any record (family, device)
    names = doc["settings"]["contenders"]
    backends = [n for n in names if contenders.get(n, {}).get("family") == "fastconv"]
    torch_groups = {}  # PyTorch's label on a device and in a precision mode -> its contenders
    for n in names:
        rec = contenders.get(n, {})
        if rec.get("family") == "torch":
            torch_groups.setdefault(rec.get("group") or torch_label(rec["device"], rec.get("mode", "")), []).append(n)
    gpu_backends = [b for b in backends if contenders[b]["device"] == "gpu"]
    grouped = {}
    for r in doc["results"]:
        grouped.setdefault((r["shape"], r["pass_name"]), {})[r["contender"]] = r

    rows = []
    for (shape, pass_name), recs in grouped.items():
        any_rec = next(iter(recs.values()))
        reference = recs.get("reference")
        ref_ms = reference["median_ms"] if reference and reference["status"] == "ok" else None
        torch_best = {label: _best_torch(recs, ns) for label, ns in torch_groups.items()}
        row = dict(shape=shape, pass_name=pass_name, kind=any_rec["kind"],
                   unit=RATE_UNIT[any_rec["work_unit"]], cells={}, torch={})
        for b in backends:
            r = recs.get(b)
            if r is None:
                continue
            cell = dict(status=r["status"], reason=r["reason"], exact=r["exact"])
            if r["status"] == "ok":
                ms = r["median_ms"]
                best = torch_best.get(torch_label(r["device"]))
                cell.update(ms=ms, spread_pct=r["spread_pct"], rate=r["rate"], vs_ref=ref_ms / ms if ref_ms else None,
                            vs_torch=best["median_ms"] / ms if best else None)
                if r["device"] == "gpu":
                    tf32 = torch_best.get(torch_label("gpu", "tf32"))
                    floor = r.get("floor_ms")
                    cell.update(vs_torch_tf32=tf32["median_ms"] / ms if tf32 else None, floor_ms=floor,
                                of_floor=floor / ms if floor else None)
            row["cells"][b] = cell
        for label, ns in torch_groups.items():
            best = torch_best[label]
            row["torch"][label] = dict(
                layouts={recs[n]["layout"]: (recs[n]["median_ms"] if recs[n]["status"] == "ok" else recs[n]["status"])
                         for n in ns if n in recs},
                best_layout=best["layout"] if best else None, ms=best["median_ms"] if best else None,
                rate=best["rate"] if best else None,
                vs_ref=ref_ms / best["median_ms"] if best and ref_ms else None)
        rows.append(row)

    passes = [p for p in PASSES if any(r["pass_name"] == p for r in rows)]
    geomean = {}
    for b in backends:
        geomean[b] = {}
        for p in passes + ["all"]:
            cells = [r["cells"][b] for r in rows if b in r["cells"] and p in ("all", r["pass_name"])]
            geomean[b][p] = dict(vs_ref=_geomean(c.get("vs_ref") for c in cells),
                                 vs_torch=_geomean(c.get("vs_torch") for c in cells),
                                 n=sum(c["status"] == "ok" for c in cells))
    for b in gpu_backends:  # a second line: the same GPU backend against PyTorch's TF32 defaults
        geomean[f"{b} vs {torch_label('gpu', 'tf32')}"] = {
            p: dict(vs_ref=geomean[b][p]["vs_ref"], n=geomean[b][p]["n"],
                    vs_torch=_geomean(r["cells"][b].get("vs_torch_tf32") for r in rows
                                      if b in r["cells"] and p in ("all", r["pass_name"])))
            for p in passes + ["all"]}
    for label in torch_groups:
        geomean[label] = {p: dict(vs_ref=_geomean(r["torch"][label]["vs_ref"] for r in rows
                                                  if p in ("all", r["pass_name"])), vs_torch=1.0)
                          for p in passes + ["all"]}
    failures = [f"{r['contender']} on {r['shape']} {r['pass_name']}: {r['status']}: {r['reason']}"
                for r in doc["results"] if r["status"] in FAILED]
    not_run = {}  # one line per reason: the contenders and the cases it kept from running
    for r in doc["results"]:
        if r["status"] == "n/a":
            names, cases = not_run.setdefault(r["reason"], ({}, {}))
            names[r["contender"]] = cases[f"{r['shape']} {r['pass_name']}"] = None
    not_run = [f"{', '.join(names)}: {reason} ({len(cases)} case{'s' * (len(cases) > 1)}: "
               f"{', '.join(list(cases)[:3])}{', ...' if len(cases) > 3 else ''})"
               for reason, (names, cases) in not_run.items()]
    return dict(backends=backends, gpu_backends=gpu_backends, torch_groups=list(torch_groups), passes=passes,
                rows=rows, geomean=geomean, failures=failures, not_run=not_run)


# --------------------------------------------------------------------------------------------
# formatting
# --------------------------------------------------------------------------------------------

def _ms(v) -> str:
    if isinstance(v, str):
        return v
    if v is None:
        return "-"
    return f"{v:.3f}" if v < 1 else f"{v:.2f}" if v < 10 else f"{v:.1f}" if v < 100 else f"{v:.0f}"


def _x(v) -> str:
    return "-" if v is None else f"{v:.2f}x" if v < 100 else f"{v:.0f}x"


def _rate(v) -> str:
    return "-" if v is None else f"{v:.1f}" if v < 1000 else f"{v:.0f}"


def results_table(summary: dict) -> tuple[list[tuple[str, str]], list[list[str]]]:
    """Columns ``(group, name)`` and rows of strings, shared by the text and Markdown tables."""
    columns = [("", "shape"), ("", "pass"), ("", "unit")]
    gpu = set(summary.get("gpu_backends", ()))
    for b in summary["backends"]:
        columns += [(b, "ms"), (b, "±"), (b, "rate"), (b, "vs ref"), (b, "vs torch")]
        if b in gpu:
            columns += [(b, "vs tf32"), (b, "floor ms"), (b, "% floor")]
    for g in summary["torch_groups"]:
        columns += [(g, "nchw ms"), (g, "cl ms"), (g, "rate")]
    rows = []
    for r in summary["rows"]:
        line = [r["shape"], r["pass_name"], r["unit"]]
        for b in summary["backends"]:
            c = r["cells"].get(b)
            if c is None or c["status"] != "ok":
                line += [c["status"] if c else "-"] + [""] * (7 if b in gpu else 4)
                continue
            line += [_ms(c["ms"]), f"{c['spread_pct']:.0f}%", _rate(c["rate"]), _x(c["vs_ref"]), _x(c["vs_torch"])]
            if b in gpu:
                of_floor = c.get("of_floor")
                line += [_x(c.get("vs_torch_tf32")), _ms(c.get("floor_ms")),
                         "-" if of_floor is None else f"{100 * of_floor:.0f}%"]
        for g in summary["torch_groups"]:
            t = r["torch"][g]
            line += [_ms(t["layouts"].get("nchw")), _ms(t["layouts"].get("channels_last")), _rate(t["rate"])]
        rows.append(line)
    return columns, rows


def geomean_table(summary: dict) -> tuple[list[tuple[str, str]], list[list[str]]]:
    columns = [("", "geometric mean")]
    for p in summary["passes"] + ["all"]:
        columns += [(p, "vs ref"), (p, "vs torch")]
    rows = []
    for name, by_pass in summary["geomean"].items():
        line = [name]
        for p in summary["passes"] + ["all"]:
            g = by_pass[p]
            line += [_x(g["vs_ref"]), _x(g["vs_torch"])]
        rows.append(line)
    return columns, rows


def format_text(columns, rows) -> str:
    """A fixed-width table with group names above their columns and ' | ' between groups."""
    widths = [max([len(name)] + [len(row[i]) for row in rows]) for i, (_, name) in enumerate(columns)]
    spans = []  # (group, first column, last column)
    for i, (group, _) in enumerate(columns):
        if spans and spans[-1][0] == group:
            spans[-1][2] = i
        else:
            spans.append([group, i, i])

    def line(cells):
        parts = []
        for group, first, last in spans:
            # the row labels (the first group) align left, the numbers right
            parts.append("  ".join(cells[i].ljust(widths[i]) if first == 0 else cells[i].rjust(widths[i])
                                   for i in range(first, last + 1)))
        return " | ".join(parts).rstrip()

    group_cells = []
    for group, first, last in spans:
        span_width = sum(widths[first:last + 1]) + 2 * (last - first)
        group_cells.append(group.center(span_width))
    head = [" | ".join(group_cells).rstrip(), line([name for _, name in columns])]
    rule = "-" * max(len(h) for h in head)
    return "\n".join(head + [rule] + [line(r) for r in rows])


def format_markdown_table(columns, rows) -> str:
    header = [f"{group} {name}".strip() for group, name in columns]
    out = ["| " + " | ".join(header) + " |",
           "|" + "|".join("---" if group == "" else "---:" for group, _ in columns) + "|"]  # labels left
    out += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(out)


def _settings_line(doc: dict) -> str:
    s, m = doc["settings"], doc["machine"]
    threads = m["threads"]
    return (f"{len(doc['shapes'])} shapes, {s['dtype']}, {s['threads']} threads (fastconv "
            f"{threads['fastconv']}, torch {threads['torch'] if threads['torch'] is not None else 'not run'}), "
            f"{m['cpu']['model']}; {s['seconds']:.0f} s")


#: A 1-minute load average above this before the run means other processes were competing.
BUSY_LOAD = 0.5


#: The CPU's speed (cpu_gflops) at the end of a run differing from its start by more than this
#: fraction means rates changed during the run.
SPEED_DRIFT = 0.2
#: A core-to-core round trip (ns) at or above which the run's two cores sat on different dies: about
#: 80 ns on one die of a 2-vCPU Zen 5 VM, 380-410 ns on two.
FAR_CORES_NS = 250.0


def far_over_near(doc: dict) -> dict[str, float]:
    """Per contender: its median over the sweeps that began with the cores on different dies over its
    median over the others, geometric mean over the cases (a sweep's state is taken at its start:
    the machine can change within one). Empty unless the run had sweeps of both kinds."""
    far = [(w.get("core_round_trip_ns") or 0) >= FAR_CORES_NS for w in doc["settings"].get("sweeps", [])]
    if not any(far) or all(far):
        return {}
    ratios = {}
    for r in doc.get("results", []):
        runs = r.get("round_runs")
        if r["status"] != "ok" or runs is None or len(runs) != len(far):
            continue
        parts = {True: [], False: []}
        at = 0
        for n, is_far in zip(runs, far):
            parts[is_far] += r["times_ms"][at:at + n]
            at += n
        if parts[True] and parts[False]:
            ratios.setdefault(r["contender"], []).append(statistics.median(parts[True]) / statistics.median(parts[False]))
    return {name: _geomean(v) for name, v in ratios.items()}


def noise_warnings(doc: dict) -> list[str]:
    s, found = doc["settings"], []
    load = s.get("load_before")
    if load is not None and load >= BUSY_LOAD:
        found.append(f"the machine was busy: 1-minute load average {load:.2f} before the run "
                     f"({doc['machine']['cpu']['usable_cores']} usable cores); other processes competed for "
                     f"the cores, so multi-threaded timings (PyTorch's especially) are noisy: rerun on a quiet "
                     f"machine")
    before, after = s.get("cpu_gflops_before"), s.get("cpu_gflops_after")
    if before and after and abs(after - before) > SPEED_DRIFT * max(before, after):
        found.append(f"the CPU's speed changed during the run (the GEMM micro-kernel on one core: {before} "
                     f"GFLOP/s before, {after} after): rates and ratios measured at different times are not "
                     f"comparable; compare contenders within a case")
    sweeps = [w.get("core_round_trip_ns") for w in s.get("sweeps", [])]
    trips = [t for t in (s.get("core_round_trip_ns_before"), *sweeps, s.get("core_round_trip_ns_after"))
             if t is not None]
    if trips and max(trips) >= FAR_CORES_NS:
        found.append(f"the two cores sat on different dies for part of the run (a core-to-core round trip of "
                     f"{s.get('core_round_trip_ns_before')} ns before, "
                     + (f"{', '.join(map(str, sweeps))} at the start of each sweep, " if sweeps else "")
                     + f"{s.get('core_round_trip_ns_after')} after; under {FAR_CORES_NS:g} on one die): "
                     f"multi-threaded work that shares data between the cores runs slower then, fastconv's and "
                     f"PyTorch's alike but not equally"
                     + ("" if not (slower := far_over_near(doc)) else
                        " (medians in the sweeps begun on two dies over those on one, geometric mean over the "
                        "cases: " + ", ".join(f"{n} {v:.2f}x" for n, v in slower.items()) + ")")
                     + "; rerun to compare")
    return found


def _speed(s: dict) -> str:
    """The CPU speed line of a report (runs written before it was recorded have none)."""
    if s.get("cpu_gflops_before") is None:
        return "not measured (no C++ backend)"
    sweeps = s.get("sweeps", [])
    trips = ("" if s.get("core_round_trip_ns_before") is None else
             f"; a core-to-core round trip took {s['core_round_trip_ns_before']} ns before, "
             f"{s['core_round_trip_ns_after']} after (about 80 when the cores share a die)")
    if sweeps and sweeps[0].get("cpu_gflops") is not None:
        trips += ("; at the start of each sweep over the suite: " +
                  ", ".join(f"{w['cpu_gflops']} GFLOP/s and {w['core_round_trip_ns']} ns" for w in sweeps))
    return (f"the fp32 GEMM micro-kernel ran at {s['cpu_gflops_before']} GFLOP/s on one core before the run, "
            f"{s['cpu_gflops_after']} after (it moves up to 2x with other tenants of a shared machine: compare "
            f"rates only between runs at a similar speed){trips}")


def format_summary(doc: dict, summary: dict) -> str:
    """What ``fastconv bench`` prints."""
    parts = [f"fastconv bench: {_settings_line(doc)}",
             "times: median ms of the timed runs, ± the IQR as % of the median; rate: GFLOP/s "
             "(conv, dense) or GB/s (max pooling); vs: speedup (>1 = faster) vs the reference / vs "
             "PyTorch's faster layout (nchw or cl = channels_last), measured in this run", "",
             format_text(*results_table(summary)), "", format_text(*geomean_table(summary))]
    for w in noise_warnings(doc):
        parts += ["", f"warning: {w}"]
    if summary["failures"]:
        parts += ["", "FAILED (not timed):"] + [f"  {f}" for f in summary["failures"]]
    if summary["not_run"]:
        parts += ["", "not run:"] + [f"  {n}" for n in summary["not_run"]]
    unavailable = doc["settings"]["unavailable"]
    if unavailable:
        parts += ["", "backends not available here:"] + [f"  {n}: {r}" for n, r in unavailable.items()]
    return "\n".join(parts)


def format_markdown(doc: dict, summary: dict, chart: str | None, chart_note: str = "") -> str:
    s, m = doc["settings"], doc["machine"]
    t = m["threads"]
    lines = ["# fastconv bench", "", f"{s['started_at']}: {_settings_line(doc)}.", ""]
    for w in noise_warnings(doc):
        lines += [f"**Warning**: {w}.", ""]
    if chart:
        lines += [f"![speedup vs PyTorch per shape and backend]({chart})", ""]
    elif chart_note:
        lines += [f"(No chart: {chart_note}.)", ""]
    lines += ["## Results", "",
              "Times are medians in ms over the timed runs (±: interquartile range as % of the median); "
              "rate is GFLOP/s for conv and dense layers, GB/s for max pooling; `vs ref` and `vs torch` "
              "are speedups (> 1 = faster) against the NumPy reference and against PyTorch in its "
              "faster layout (`nchw` or `cl` = channels_last), all measured in this run.", "",
              format_markdown_table(*results_table(summary)), "",
              "## Geometric means", "", format_markdown_table(*geomean_table(summary)), ""]
    if summary["failures"]:
        lines += ["## Failed verification (not timed)", ""] + [f"- {f}" for f in summary["failures"]] + [""]
    if summary["not_run"] or s["unavailable"]:
        lines += ["## Not run", ""] + [f"- {n}" for n in summary["not_run"]]
        lines += [f"- {n}: {r}" for n, r in s["unavailable"].items()] + [""]
    pools = t["pools"] if isinstance(t["pools"], str) else "; ".join(
        f"{p['internal_api']} {p['version'] or ''}".strip() + f" ({p['user_api']}): {p['num_threads']} threads"
        for p in t["pools"])
    gpus = "; ".join(f"{g['name']} (via {g['via']})" for g in m["gpus"]) or "none"
    lines += ["## Machine", "",
              f"- CPU: {m['cpu']['model']} ({m['cpu']['machine']}), {m['cpu']['usable_cores']} usable of "
              f"{m['cpu']['logical_cores']} logical cores; features: {' '.join(m['cpu']['simd']) or 'none listed'}",
              f"- threads: fastconv {t['fastconv']} (from {t['source']}), torch {t['torch']}; thread pools: {pools}",
              f"- GPU: {gpus}",
              f"- platform: {m['platform']}; malloc: {m.get('malloc', 'not recorded')}; 1-minute load average "
              f"{s['load_before']} before the run, {s['load_after']} after",
              f"- CPU speed: {_speed(s)}",
              "- versions: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()), "",
              "## Method", "",
              "- Every contender's result is compared with the reference's on the same inputs before it "
              "is timed; one that differs is reported as FAIL and not timed. Conv and dense inputs are "
              "small integers, so every partial sum is exact in float32 and correct backends match "
              "exactly; max-pooling inputs are distinct values (no ties).",
              f"- Timing: {s['timing']['rule']}. CPU times use `time.perf_counter`; GPU times use CUDA "
              "events with synchronisation.",
              f"- Threads are pinned to {s['threads']} for fastconv (and the BLAS NumPy uses) and PyTorch alike.",
              "- Work per pass: `2*N*C_out*OH*OW*(C_in/groups)*KH*KW` FLOP for conv and dense (the same for "
              "every pass); for max pooling the bytes a pass must move (forward: x and y; backward: dy, "
              "int64 indices, dx).",
              f"- GPU: {_gpu_method(s)}",
              f"- Command: `{s.get('command') or 'fastconv bench'}`", ""]
    return "\n".join(lines)


def _gpu_method(s: dict) -> str:
    ceilings = s.get("gpu_ceilings")
    text = ("fastconv's `cupy` backend against PyTorch CUDA (cuDNN, `cudnn.benchmark` on) with TF32 off "
            "on both sides (`vs torch`), and against PyTorch's defaults (`torch-cuda-tf32`: TF32 allowed in "
            "cuDNN's convolutions; `vs tf32`)")
    if not ceilings:
        return text + "; no GPU ceilings were measured (no GPU contender ran)"
    return (text + f"; the floor of a GPU row is the larger of its FLOPs over {ceilings['gflops']} GFLOP/s (a "
            f"{ceilings['gemm']} cuBLAS GEMM, TF32 off) and its bytes (each operand read once, the result "
            f"written once) over {ceilings['gbps']} GB/s (a 1 GiB device-to-device copy, read + write), both "
            f"measured on this GPU at the start of the run")


def write_reports(doc: dict, out_dir: str | Path, chart: bool = True) -> dict:
    """Write ``bench.json``, ``report.md`` and ``speedup.png`` into ``out_dir``; their paths."""
    from .chart import write_chart

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = summarize(doc)
    paths = {"json": out / "bench.json", "markdown": out / "report.md"}
    chart_note = ""
    if chart:
        try:
            paths["chart"] = write_chart(doc, summary, out / "speedup.png")
        except ImportError as exc:
            chart_note = f"matplotlib is not installed ({exc}); pip install 'fastconv[bench]'"
    else:
        chart_note = "--no-chart"
    paths["json"].write_text(json.dumps(dict(doc, summary=summary), indent=1, allow_nan=False))
    paths["markdown"].write_text(format_markdown(doc, summary, "speedup.png" if "chart" in paths else None,
                                                 chart_note))
    return dict(paths=paths, summary=summary, chart_note=chart_note)
