"""PNG charts of an `imp compare` report: headline per runtime, drop bounds, latency vs accuracy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.verdict import POINT_SCALE

SUITE = "suite mean"


def headline_points(report: dict[str, Any], name: str, index: int) -> float:
    """Headline of benchmark ``name`` in points for run ``index`` (0: the reference); NaN if none."""
    if index == 0:
        value = report["reference"]["headlines"].get(name)
    else:
        rows = report["candidates"][index - 1]["rows"]
        value = next((r["candidate"] for r in rows if r["benchmark"] == name), None)
    return float("nan") if value is None else value * POINT_SCALE.get(name, 1.0)


def _bars(ax: Any, names: list[str], series: list[tuple[str, list[float], Any]]) -> None:
    import numpy as np

    width = 0.8 / max(1, len(series))
    x = np.arange(len(names))
    for i, (label, values, errors) in enumerate(series):
        ax.bar(x + i * width, values, width, yerr=errors, capsize=2, label=label)
    ax.set_xticks(x + 0.4 - width / 2, names)
    ax.legend(fontsize=7)


def metric_chart(ax: Any, report: dict[str, Any]) -> None:
    names = report["benchmarks"]
    labels = [report["reference"]["label"]] + [c["label"] for c in report["candidates"]]
    _bars(
        ax,
        names,
        [(lab, [headline_points(report, n, i) for n in names], None) for i, lab in enumerate(labels)],
    )
    ax.set_ylabel("headline (points; MME / 20)")
    ax.set_title("metric per runtime")


def drop_chart(ax: Any, report: dict[str, Any]) -> None:
    """Observed drop with its simultaneous bounds per candidate x benchmark, and of the suite mean."""
    names, series = [*report["benchmarks"], SUITE], []
    for cand in report["candidates"]:
        bounds = {r["benchmark"]: r.get("confidence") for r in cand["rows"]}
        bounds[SUITE] = cand.get("suite")
        drops = [bounds[n]["evidence"]["drop"] if bounds.get(n) else 0.0 for n in names]
        low = [d - bounds[n]["bounds"]["drop_low"] if bounds.get(n) else 0.0 for d, n in zip(drops, names)]
        high = [bounds[n]["bounds"]["drop_high"] - d if bounds.get(n) else 0.0 for d, n in zip(drops, names)]
        series.append((cand["label"], drops, [low, high]))
    _bars(ax, names, series)
    ax.axhline(0, color="black", linewidth=0.5)
    ax.set_ylabel("drop vs reference (pt) with its bounds")
    ax.set_title("drop with simultaneous bounds")


def latency_chart(ax: Any, report: dict[str, Any]) -> None:
    entries = [(report["reference"]["label"], report["reference"]["timing"])]
    entries += [(c["label"], c["timing"]) for c in report["candidates"]]
    for index, (label, timing) in enumerate(entries):
        secs = [t.get("seconds", 0) / max(1, t.get("questions", 1)) for t in timing.values() if t]
        scores = [headline_points(report, n, index) for n in report["benchmarks"]]
        scores = [s for s in scores if s == s]
        if secs and scores:
            point = (sum(secs) / len(secs), sum(scores) / len(scores))
            ax.scatter(*point, label=label)
            ax.annotate(label, point, fontsize=7)
    ax.set_xlabel("mean seconds per question")
    ax.set_ylabel("mean headline (points)")
    ax.set_title("latency vs accuracy per runtime / quant")


CHARTS = (
    ("metric per runtime", "metric_per_runtime.png", metric_chart, True),
    ("delta with CI", "delta_ci.png", drop_chart, True),
    ("latency vs accuracy", "latency_vs_accuracy.png", latency_chart, False),
)


def write_charts(report: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    charts: dict[str, Path] = {}
    for title, file_name, draw, per_benchmark in CHARTS:
        width = max(6, len(report["benchmarks"]) * 1.3) if per_benchmark else 6
        fig, ax = plt.subplots(figsize=(width, 4))
        draw(ax, report)
        fig.tight_layout()
        charts[title] = Path(out_dir) / file_name
        fig.savefig(charts[title], dpi=100)
        plt.close(fig)
    return charts
