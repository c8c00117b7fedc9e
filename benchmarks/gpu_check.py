"""``make gpu-check``: the GPU backend on a machine with an NVIDIA GPU, CuPy and PyTorch already
installed and no network. After ``make`` has installed fastconv (no build isolation, no dependency
resolution, no CPU extensions), this runs, each step under a time limit so that the whole stays
within 8 minutes on an H100:

1. the GPU test suite (tests/test_gpu.py): every op family against the reference in float16,
   float32 and float64, launch sizes as chosen and forced small, bit-identical reruns, PyTorch CUDA
   tensors under autograd and torch.compile;
2. the GPU benchmark: ``fastconv bench --device gpu`` (the ``cupy`` backend next to PyTorch CUDA,
   fp32 with TF32 off, and PyTorch's defaults; each case verified first, timed with CUDA events);
3. a summary, ``<out>/summary.md``: the machine, the test counts, and the bars of the GPU issue
   (conv geometric mean >= 0.5x cuDNN per pass, pooling >= 0.8x, both TF32 off), with the rows
   furthest from their roofline floor.

Usage: ``python benchmarks/gpu_check.py [--out DIR]`` (default ``gpu-results``). Exit status 1 when
a test or a verification failed, or a step ran out of time.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEST_LIMIT_S = 240
BENCH_LIMIT_S = 180
CONV_BAR, POOL_BAR = 0.5, 0.8


def run(cmd, limit, log: Path) -> tuple[int | None, float]:
    """Run ``cmd`` with its output in ``log``; (exit status or None when it ran out of time, seconds)."""
    start = time.perf_counter()
    with log.open("w") as out:
        try:
            status = subprocess.run(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, timeout=limit,
                                    env=dict(os.environ, PYTHONUNBUFFERED="1")).returncode
        except subprocess.TimeoutExpired:
            status = None
    return status, time.perf_counter() - start


def test_counts(junit: Path) -> dict:
    if not junit.exists():
        return {}
    suite = ET.parse(junit).getroot()
    suite = suite.find("testsuite") if suite.tag == "testsuites" else suite
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    counts["failed"] = [case.get("name") for case in suite.iter("testcase")
                        if case.find("failure") is not None or case.find("error") is not None][:20]
    return counts


def geomean(values):
    values = [v for v in values if v]
    return math.exp(sum(map(math.log, values)) / len(values)) if values else None


def bench_lines(doc: dict) -> list[str]:
    s = doc["summary"]
    lines = []
    for b in s["gpu_backends"]:
        lines += [f"### {b} vs PyTorch CUDA (cuDNN), fp32, TF32 off on both sides", "",
                  "| kind | pass | geomean vs torch-cuda | bar | met | geomean vs torch-cuda-tf32 |",
                  "|---|---|---:|---:|---|---:|"]
        for kind, bar in (("conv", CONV_BAR), ("maxpool", POOL_BAR), ("dense", None)):
            for p in s["passes"]:
                rows = [r for r in s["rows"] if r["kind"] == kind and r["pass_name"] == p and b in r["cells"]]
                if not rows:
                    continue
                strict = geomean(r["cells"][b].get("vs_torch") for r in rows)
                tf32 = geomean(r["cells"][b].get("vs_torch_tf32") for r in rows)
                met = "-" if bar is None or strict is None else ("yes" if strict >= bar else "NO")
                lines.append(f"| {kind} | {p} | {_x(strict)} | {'-' if bar is None else f'{bar}x'} | {met} | {_x(tf32)} |")
        floors = sorted((r["cells"][b]["of_floor"], r["shape"], r["pass_name"], r["cells"][b]["ms"])
                        for r in s["rows"] if r["cells"].get(b, {}).get("of_floor"))
        if floors:
            lines += ["", "Furthest from the roofline floor (floor / time):", ""]
            lines += [f"- {shape} {p}: {100 * f:.0f}% ({ms:.3f} ms)" for f, shape, p, ms in floors[:8]]
        lines.append("")
    return lines


def _x(v):
    return "-" if v is None else f"{v:.2f}x"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="gpu-results", help="where the logs, results and summary go")
    args = parser.parse_args(argv)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    py = sys.executable

    smi = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True).stdout.strip() or "nvidia-smi: none"
    info = subprocess.run([py, "-m", "fastconv.cli", "info"], cwd=ROOT, capture_output=True, text=True).stdout
    (out / "info.txt").write_text(smi + "\n\n" + info)

    tests_status, tests_s = run([py, "-m", "pytest", "tests/test_gpu.py", "-q", "-p", "no:cacheprovider", "--maxfail=50",
                                 "--junitxml", str(out / "tests.xml")], TEST_LIMIT_S, out / "tests.log")
    bench_status, bench_s = run([py, "-m", "fastconv.cli", "bench", "--device", "gpu", "--budget", "0.25",
                                 "--out", str(out / "bench")], BENCH_LIMIT_S, out / "bench.log")

    counts = test_counts(out / "tests.xml")
    lines = ["# fastconv gpu-check", "", "```", smi, "```", "",
             f"- tests (tests/test_gpu.py): {_status(tests_status)} in {tests_s:.0f} s; "
             + (", ".join(f"{k} {v}" for k, v in counts.items() if k != "failed") or "no report"),
             *[f"  - failed: {name}" for name in counts.get("failed", [])],
             f"- benchmark (fastconv bench --device gpu): {_status(bench_status)} in {bench_s:.0f} s", ""]
    bench_json = out / "bench" / "bench.json"
    if bench_json.exists():
        doc = json.loads(bench_json.read_text())
        ceilings = doc["settings"].get("gpu_ceilings")
        if ceilings:
            lines += [f"Measured ceilings: {ceilings['gflops']} GFLOP/s ({ceilings['gemm']} cuBLAS GEMM, TF32 off), "
                      f"{ceilings['gbps']} GB/s (device-to-device copy, read + write).", ""]
        lines += bench_lines(doc)
        lines += [f"Failures: {f}" for f in doc["summary"]["failures"]]
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0 if tests_status == 0 and bench_status == 0 else 1


def _status(status) -> str:
    return "ran out of time" if status is None else ("passed" if status == 0 else f"FAILED (exit {status})")


if __name__ == "__main__":
    sys.exit(main())
