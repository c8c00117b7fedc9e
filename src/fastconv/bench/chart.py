"""The PNG chart: speedup vs PyTorch per shape and backend, one panel per pass.

Bars start at 1x (PyTorch, the vertical line) and grow right when the backend is faster, left when
it is slower, on a log axis so 2x faster and 2x slower look the same size. Each bar carries its
value; a backend that failed verification shows a red FAIL instead of a bar. Without PyTorch in
the run the chart shows the speedup vs the reference instead.
"""

from __future__ import annotations

from pathlib import Path


def write_chart(doc: dict, summary: dict, path: str | Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed, works headless
    import matplotlib.pyplot as plt

    key, peer = ("vs_torch", "PyTorch (best layout)")
    if not any(c.get("vs_torch") for r in summary["rows"] for c in r["cells"].values()):
        key, peer = ("vs_ref", "the NumPy reference")
    passes, backends = summary["passes"], summary["backends"]
    shapes = list(dict.fromkeys(r["shape"] for r in summary["rows"]))
    cells = {(r["shape"], r["pass_name"]): r["cells"] for r in summary["rows"]}
    # a last row per panel: each backend's geometric mean over the shapes above
    mean_label = "geometric mean"
    for p in passes:
        cells[(mean_label, p)] = {b: dict(status="ok", **{key: summary["geomean"][b][p][key]}) for b in backends}
    shapes.append(mean_label)
    values = [c[key] for r in summary["rows"] for c in r["cells"].values() if c.get(key)]
    lo = min(values + [1.0]) / 3  # room for the value printed left of a bar
    hi = max(values + [1.0]) * 3

    bar_h = 0.8 / max(len(backends), 1)
    height = 2.2 + 0.24 * len(shapes) * max(1.0, 0.6 * len(backends))
    fig, axes = plt.subplots(1, max(len(passes), 1), sharey=True, squeeze=False, layout="constrained",
                             figsize=(3.6 * max(len(passes), 1) + 2.6, height))
    colors = plt.get_cmap("tab10").colors
    for ax, pass_name in zip(axes[0], passes):
        ax.axvspan(lo, 1, color="#d62728", alpha=0.05)
        ax.axvspan(1, hi, color="#2ca02c", alpha=0.05)
        ax.axvline(1, color="black", linewidth=1)
        for i, shape in enumerate(shapes):
            row = cells.get((shape, pass_name), {})
            for j, b in enumerate(backends):
                y = i - 0.4 + bar_h * (j + 0.5)
                c = row.get(b)
                if c is None:
                    continue
                if c["status"] != "ok":  # FAIL and error in red; n/a (not run) in grey
                    failed = c["status"] in ("FAIL", "error")
                    ax.text(1, y, f" {c['status']}", color="#d62728" if failed else "grey", va="center",
                            fontsize=7, fontweight="bold" if failed else "normal")
                elif c.get(key):
                    v = c[key]
                    ax.barh(y, v - 1, left=1, height=bar_h * 0.9, color=colors[j % len(colors)],
                            label=b if i == 0 else None)
                    ax.text(v * (1.04 if v >= 1 else 1 / 1.04), y, f"{v:.2g}x", va="center",
                            ha="left" if v >= 1 else "right", fontsize=6.5)
        ax.set_xscale("log")
        ax.set_xlim(lo, hi)
        ax.set_title(pass_name, fontsize=10)
        ax.grid(axis="x", which="major", alpha=0.3)
        ax.set_xlabel(f"speedup vs {peer.split(' (')[0]}")
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}x"))
    axes[0][0].set_yticks(range(len(shapes)))
    axes[0][0].set_yticklabels(shapes, fontsize=7.5)
    axes[0][0].get_yticklabels()[-1].set_fontweight("bold")
    for ax in axes[0]:
        ax.axhline(len(shapes) - 1.5, color="grey", linewidth=0.8)  # sets the mean apart
    axes[0][0].set_ylim(len(shapes) - 0.5, -0.5)  # the suite's first shape on top
    s, m = doc["settings"], doc["machine"]
    fig.suptitle(f"fastconv speedup vs {peer}: right of 1x is faster, left is slower\n"
                 f"{s['dtype']}, {s['threads']} threads, {m['cpu']['model']}", fontsize=10)
    handles = [plt.Rectangle((0, 0), 1, 1, color=colors[j % len(colors)]) for j in range(len(backends))]
    fig.legend(handles, backends, loc="outside lower center", ncol=max(1, min(len(backends), 6)),
               fontsize=8, frameon=False)
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
