"""A PNG of a result's per-claim latency distributions, next to its JSON.

One panel per span the scenario measured (an ECDF of the claims' values, p50 and p99 marked with
the summary's values) and, for the steady scenario, the overhead of each claim over the run.
matplotlib is a test tool, not a dependency of the controller: it is imported only here, with the
Agg backend, and a run without it skips the plot.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

#: The spans plotted, in this order, when the claims' rows have them.
METRICS: tuple[tuple[str, str], ...] = (
    ("launch_reaction_s", "launch reaction"),
    ("overhead_s", "overhead (controller)"),
    ("ready_reaction_s", "ready reaction"),
    ("time_to_ready_s", "time to Ready"),
    ("ready_after_raise_s", "Ready after the quota raise"),
    ("delete_s", "delete"),
)


def title(doc: Mapping[str, Any]) -> str:
    params, machine = doc.get("parameters") or {}, doc.get("machine") or {}
    commit = str(machine.get("git_commit") or "unknown")[:10]
    if machine.get("git_dirty"):
        commit += " (dirty)"
    return (
        f"{doc.get('scenario')}: N={params.get('claims')} claims, strategy {params.get('pool_strategy', 'dedicated')}, "
        f"commit {commit}"
    )


def panels(doc: Mapping[str, Any]) -> list[tuple[str, str, list[float], Mapping[str, Any]]]:
    """``(key, label, sorted values, summary)`` of each span with at least one value."""
    results = doc.get("results") or {}
    rows: Sequence[Mapping[str, Any]] = results.get("claims") or ()
    out = []
    for key, label in METRICS:
        values = sorted(float(r[key]) for r in rows if r.get(key) is not None)
        if values:
            out.append((key, label, values, results.get(key) or {}))
    return out


def write_plot(doc: Mapping[str, Any], path: Path) -> Path | None:
    """Write the PNG to ``path``; None when matplotlib is not installed."""
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    spans = panels(doc)
    rows: Sequence[Mapping[str, Any]] = (doc.get("results") or {}).get("claims") or ()
    timeline = [
        (float(r["created_s"]), float(r["overhead_s"]))
        for r in rows
        if r.get("created_s") is not None and r.get("overhead_s") is not None
    ]
    count = len(spans) + (1 if timeline else 0)
    cols = min(3, max(1, count))
    nrows = max(1, math.ceil(count / cols))
    fig = Figure(figsize=(5.2 * cols, 3.6 * nrows + 0.6), layout="constrained")
    fig.suptitle(title(doc), fontsize=12)
    axes = fig.subplots(nrows, cols, squeeze=False).flatten()
    for ax, (_key, label, values, summary) in zip(axes, spans, strict=False):
        n = len(values)
        ax.step(values, [(i + 1) / n for i in range(n)], where="post", color="tab:blue")
        if n <= 400:
            ax.plot(values, [(i + 1) / n for i in range(n)], "o", markersize=3, color="tab:blue", alpha=0.5)
        for q, color in (("p50", "tab:green"), ("p99", "tab:red")):
            v = summary.get(q)
            if v is not None:
                ax.axvline(v, color=color, linestyle="--", linewidth=1, label=f"{q} {v:.3f}s")
        ax.set_title(f"{label} (n={n})", fontsize=10)
        ax.set_xlabel("seconds")
        ax.set_ylabel("fraction of claims")
        ax.set_ylim(0, 1.05)
        ax.grid(True, alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
    used = len(spans)
    if timeline:
        ax = axes[used]
        ax.plot([t for t, _ in timeline], [o for _, o in timeline], "o", markersize=3, alpha=0.6)
        ax.set_title("overhead by arrival", fontsize=10)
        ax.set_xlabel("claim created (s after the start)")
        ax.set_ylabel("overhead (s)")
        ax.grid(True, alpha=0.3)
        used += 1
    for ax in axes[used:]:
        ax.set_visible(False)
    if not spans and not timeline:
        axes[0].set_visible(True)
        axes[0].text(0.5, 0.5, "no per-claim spans in this result", ha="center", va="center")
        axes[0].set_axis_off()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path
