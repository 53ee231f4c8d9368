"""`imp check`: decide whether accuracy held on as few questions as the verdict needs.

The reference and the candidate answer the same questions, benchmark by benchmark, in a seeded
random order of the headline's sampling units (questions; MME images; MMBench circular groups), so
that any prefix is a random sample of the benchmark. After each planned look (the first ``first``
units, then twice as many, ... up to the cap) both runs' answers are scored and the verdict
(:mod:`benchmarks.verdict`) is taken; a benchmark stops at its first decided look.

Validity under repeated looks: alpha spending by a Bonferroni split. The looks are planned in
advance (a doubling schedule, ``L`` looks per benchmark), and each bound at each look is taken at
``alpha / (2 B L)`` for ``B`` benchmarks (two claims per look: holds, drops), so the chance that
any verdict of the whole check is wrong is at most ``alpha`` however the looks stop it.

Both run folders are ordinary `imp bench` run folders (resumable answers files, ``run.json``,
``results.json``): a killed check resumes where it stopped, and `imp compare` reads them.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.base import Question, get_benchmark, write_json
from benchmarks.report import table_head
from benchmarks.runner import (
    SAMPLES,
    AnswerLog,
    BenchmarkRunOptions,
    answer_record,
    answers_path,
    run_selection,
    score_benchmark,
    score_run,
    start_run,
)
from benchmarks.verdict import (
    ALPHA,
    NOT_DECIDED,
    decided_by_bounds,
    overall,
    paired_evidence,
    verdict_row,
)
from export.quant_types import accuracy_margin
from runtimes.loader import held_near_lossless, run_label

REFERENCE, CANDIDATE = "reference", "candidate"


@dataclass(frozen=True)
class CheckOptions:
    """``first``: units at the first look; ``cap``: most units per benchmark (None: all)."""

    seed: int = 0
    first: int = 50
    cap: int | None = None
    alpha: float = ALPHA
    max_new_tokens: int | None = None
    progress: bool = False


def looks(total: int, first: int, cap: int | None) -> list[int]:
    """The planned looks: unit counts ``first, 2 first, 4 first, ...`` up to the cap."""
    last = min(total, cap) if cap else total
    out = [min(first, last)]
    while out[-1] < last:
        out.append(min(2 * out[-1], last))
    return out


def unit_order(name: str, questions: list[Question], seed: int) -> list[list[Question]]:
    """The headline's sampling units of a benchmark, each with its questions, in a seeded order."""
    bench = get_benchmark(name)
    units: dict[str, list[Question]] = {}
    for q in questions:
        unit = bench.sampling_unit(q)
        if unit is not None:
            units.setdefault(unit, []).append(q)
    groups = list(units.values())
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    return [groups[i] for i in rng.permutation(len(groups))]


def _samples(run_dir: Path, name: str) -> dict[str, dict[str, Any]]:
    with open(Path(run_dir) / name / SAMPLES, encoding="utf-8") as handle:
        return {r["qid"]: r for r in map(json.loads, handle) if r}


def paired_look(name: str, data: Path, runs: dict[str, Path], qids: set[str]) -> Any:
    """Score both runs' answers and pair those to ``qids`` (:class:`benchmarks.verdict.Evidence`);
    answers beyond the look (a resumed check with another plan) are left out."""
    from benchmarks.compare import answer_key

    for run_dir in runs.values():
        score_benchmark(name, data, run_dir)
    ref, cand = _samples(runs[REFERENCE], name), _samples(runs[CANDIDATE], name)
    scored = [q for q in ref if q in qids and q in cand and ref[q].get("score") is not None]
    agree = sum(answer_key(ref[q]) == answer_key(cand[q]) for q in scored)
    return paired_evidence(name, [ref[q] for q in scored], [cand[q] for q in scored], agree)


def check_benchmark(
    name: str, runtimes: dict[str, Any], data: Path, runs: dict[str, Path], opts: CheckOptions, level_of: Any
) -> dict[str, Any]:
    """Answer one benchmark look by look until its verdict is decided or the cap is reached."""
    bench = get_benchmark(name)
    run_options = BenchmarkRunOptions(max_new_tokens=opts.max_new_tokens, progress=False)
    order = unit_order(name, run_selection(bench, data, run_options), opts.seed)
    plan = looks(len(order), opts.first, opts.cap)
    level = level_of(len(plan))
    margin = accuracy_margin(held_near_lossless(runtimes[CANDIDATE].identity()))
    logs = {k: AnswerLog(answers_path(runs[k], name, run_options)) for k in runs}
    image_dir = bench.image_dir(data)
    model_ids = {k: rt.identity().get("model_id", rt.name) for k, rt in runtimes.items()}
    history, row = [], None
    for n_units in plan:
        asked = [q for unit in order[:n_units] for q in unit]
        for q in asked:
            for key, runtime in runtimes.items():
                if q.qid not in logs[key]:
                    logs[key].append(answer_record(runtime, q, image_dir, run_options, model_ids[key]))
        evidence = paired_look(name, data, runs, {q.qid for q in asked})
        if evidence is None:
            return {"benchmark": name, "verdict": "n/a", "reason": "no local score", "looks": history}
        verdict = decided_by_bounds(evidence, margin, level)
        row = verdict_row(evidence, margin, level, verdict)
        history.append({"units": evidence.n, "questions": evidence.questions, "verdict": verdict})
        if verdict != NOT_DECIDED:
            break
    assert row is not None
    return {
        "benchmark": name,
        "units_total": len(order),
        "questions_total": sum(len(u) for u in order),
        "looks_planned": len(plan),
        "looks": history,
        **row,
    }


def run_check(
    reference: Any, candidate: Any, names: list[str], data: Path, out: Path, opts: CheckOptions
) -> dict[str, Any]:
    """Check ``candidate`` against ``reference`` on ``names``; writes both run folders under ``out``."""
    data, out = Path(data), Path(out)
    runtimes = {REFERENCE: reference, CANDIDATE: candidate}
    run_options = BenchmarkRunOptions(max_new_tokens=opts.max_new_tokens, progress=False)
    runs = {k: start_run(rt, names, data, out / k, run_options) for k, rt in runtimes.items()}

    def level_of(n_looks: int) -> float:
        return opts.alpha / (2 * len(names) * n_looks)

    rows = [check_benchmark(n, runtimes, data, runs, opts, level_of) for n in names]
    for run_dir in runs.values():
        score_run(run_dir, data, names)
    report = {
        "reference": run_label(reference.identity()) or reference.name,
        "candidate": run_label(candidate.identity()) or candidate.name,
        "seed": opts.seed,
        "alpha": opts.alpha,
        "rows": rows,
        "decision": overall([r["verdict"] for r in rows if r["verdict"] != "n/a"]),
        "questions_asked": sum(r["looks"][-1]["questions"] for r in rows if r["looks"]),
        "questions_total": sum(r.get("questions_total", 0) for r in rows),
    }
    write_json(out / "check.json", report, indent=2)
    (out / "check.md").write_text(check_markdown(report) + "\n", encoding="utf-8")
    return report


def check_markdown(report: dict[str, Any]) -> str:
    """The verdict table: how many questions each verdict needed, and why."""
    lines = [
        f"reference: {report['reference']}; candidate: {report['candidate']}",
        *table_head("benchmark | verdict | questions asked | of | looks | drop bounds (pt) | margin (pt)"),
    ]
    reasons = []
    for r in report["rows"]:
        if "bounds" not in r:
            lines.append(f"| {r['benchmark']} | {r['verdict']} | - | - | - | - | - |")
            continue
        b, last = r["bounds"], r["looks"][-1]
        lines.append(
            f"| {r['benchmark']} | {r['verdict']} | {last['questions']:,} | {r['questions_total']:,} "
            f"| {len(r['looks'])} of {r['looks_planned']} | [{b['drop_low']:.2f}, {b['drop_high']:.2f}] "
            f"| {r['margin']['max_drop']:g} |"
        )
        reasons.append(f"- {r['benchmark']} {r['verdict']}: {r['reason']}")
    lines += [
        "",
        *reasons,
        "",
        f"overall: **{report['decision']}** on {report['questions_asked']:,} of "
        f"{report['questions_total']:,} questions. Looks planned in advance (doubling); each bound at "
        f"alpha / (2 x benchmarks x looks) of {report['alpha']:g} family-wise (Bonferroni alpha spending).",
    ]
    return "\n".join(lines)
