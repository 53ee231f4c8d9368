"""The report of `imp compare`: the verdict table, how the verdicts were reached, charts (``report.md``,
``report.json`` and PNGs)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from benchmarks.compare import NOT_COMPARABLE
from benchmarks.report import table_head
from benchmarks.verdict import DROPS, HOLDS, NOT_DECIDED


def holds_line(report: dict[str, Any]) -> str:
    """The answer of the report, and what decided it."""
    decision, candidates = report["decision"], report["candidates"]
    if decision == HOLDS:
        if all((c.get("suite") or {}).get("verdict") == HOLDS for c in candidates):
            return "accuracy holds: **yes** (the suite mean of every candidate HOLDS and no benchmark DROPS)"
        return "accuracy holds: **yes** (every candidate HOLDS: its suite mean or each of its benchmarks)"
    if decision == DROPS:
        dropped = [
            f"{c['label']} {r['benchmark']}" for c in candidates for r in c["rows"] if r["decision"] == DROPS
        ]
        dropped += [
            f"{c['label']} suite mean" for c in candidates if (c.get("suite") or {}).get("verdict") == DROPS
        ]
        return f"accuracy holds: **NO** (DROPS beyond the margin: {', '.join(dropped)})"
    if decision == NOT_DECIDED:
        return "accuracy holds: **not decided** (more questions are needed; see the NOT DECIDED rows)"
    unpaired = sum(r["verdict"] == NOT_COMPARABLE for c in candidates for r in c["rows"])
    return (
        f"accuracy holds: **not shown** ({unpaired} benchmark run(s) could not be paired with the reference)"
    )


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def verdict_table(report: dict[str, Any]) -> str:
    """One row per candidate x benchmark: headline, delta, agreement, drop bounds, verdict; then why."""
    head = "candidate | benchmark | reference | candidate | delta | agreement % | drop bounds (pt) | margin (pt) | verdict"
    lines = [f"reference: {report['reference']['label']}", *table_head(head)]
    reasons = []
    for cand in report["candidates"]:
        tl = cand.get("token_level")
        tl_text = ", ".join(f"{k}={v:.4g}" for k, v in tl.items()) if tl else "n/a"
        reasons.append(
            f"- **{cand['label']}** ({cand['class']}): {cand['decision']}; token level vs PyTorch: {tl_text}"
        )
        for row in cand["rows"]:
            conf = row.get("confidence")
            drop = f"[{conf['bounds']['drop_low']:.2f}, {conf['bounds']['drop_high']:.2f}]" if conf else "-"
            lines.append(
                f"| {cand['label']} | {row['benchmark']} | {_fmt(row['reference'])} | {_fmt(row['candidate'])} "
                f"| {_fmt(row['delta'])} | {_fmt(row['agreement'], 1)} | {drop} | {cand['margin']['max_drop']:g} "
                f"| {row['decision']} |"
            )
            if row["decision"] == NOT_COMPARABLE:
                reasons.append(f"  - {row['benchmark']} not comparable: {row['reason']}")
            else:
                reasons.append(
                    f"  - {row['benchmark']} {row['decision']}: {conf['reason'] if conf else 'no local score'}"
                )
        suite = cand.get("suite")
        if suite:
            lines.append(suite_table_row(cand["label"], suite))
            reasons.append(f"  - suite mean {suite['verdict']}: {suite['reason']}")
    lines += ["", *reasons, f"\n{holds_line(report)}"]
    return "\n".join(lines)


def suite_table_row(label: str, suite: dict[str, Any]) -> str:
    """The verdict table's row of a candidate's mean drop over its benchmarks (percentage points)."""
    e, b = suite["evidence"], suite["bounds"]
    return (
        f"| {label} | suite mean ({e['benchmarks']} benchmarks) | - | - | {_fmt(0.0 - e['drop'])} "
        f"| {_fmt(100 * e['agree'] / max(1, e['questions']), 1)} | [{b['drop_low']:.2f}, {b['drop_high']:.2f}] "
        f"| {suite['margin']['max_drop']:g} | {suite['verdict']} |"
    )


def method_note(report: dict[str, Any]) -> str:
    """How the verdicts were reached, with the figures of this report."""
    t = report["thresholds"]
    rows = sum(1 for c in report["candidates"] for r in c["rows"] if r.get("confidence"))
    suites = sum(1 for c in report["candidates"] if c.get("suite"))
    return (
        f"Margins: near-lossless drop <= {t['near_lossless_max_drop']} pt with agreement >= "
        f"{t['near_lossless_min_agreement']}%; quantized drop <= {t['quantized_max_drop']} pt (MME in points of "
        f"its 2000 maximum). {2 * (rows + suites)} claims (holds / drops of {rows} benchmark rows and of "
        f"{suites} suite means, one per candidate) at 5% family-wise error by Holm's step-down; the bounds shown are "
        "simultaneous one-sided bounds (Bonferroni). Pairing unit: question (MME: image, MMBench: circular "
        "group); drop bounds by Student's t on per-unit changes (POPE F1: paired bootstrap standard error), "
        "or the exact worst case when fewer than 10 units changed; agreement by Clopper-Pearson. The suite "
        "mean is a candidate's mean drop over its benchmarks: a normal bound from the benchmarks' standard "
        "errors, or with fewer than 10 changed units in all the exact worst case (the largest move of one "
        "changed unit times the Poisson upper bound of their count); agreement over all its questions. A "
        "candidate HOLDS when its suite mean holds (or each of its benchmarks does) and no benchmark DROPS."
    )


def write_report(report: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    from benchmarks.compare_charts import write_charts

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / "report.json", "md": out_dir / "report.md"}
    paths["json"].write_text(json.dumps(report, indent=2, default=str))
    charts = write_charts(report, out_dir)
    md = ["# Cross-runtime accuracy report", "", verdict_table(report), "", method_note(report)]
    for name, path in charts.items():
        md += ["", f"![{name}]({path.name})"]
    md += ["", "## Score flips", ""]
    for cand in report["candidates"]:
        for row in cand["rows"]:
            for flip in row["flips"][:20]:
                prompt = (flip["prompt"] or "").replace("\n", " ")[:100]
                md.append(
                    f"- {cand['label']} / {row['benchmark']} / {flip['qid']}: `{prompt}` reference "
                    f"`{flip['reference']}` ({flip['reference_score']}) vs `{flip['candidate']}` ({flip['candidate_score']})"
                )
            if len(row["flips"]) > 20:
                md.append(f"- ... {len(row['flips']) - 20} more in report.json")
    paths["md"].write_text("\n".join(md) + "\n")
    paths.update(charts)
    return paths
