"""Score the saved answers of a run folder (no model): ``results.json``, ``samples.jsonl``, submissions.

:func:`score_run` scores every answered benchmark of a run folder (or the ones named), writing::

    RUN_DIR/<benchmark>/samples.jsonl       per-sample log: prompt, answer, parsed answer, score
    RUN_DIR/<benchmark>/submission/         server-scored benchmarks' upload files
    RUN_DIR/results.json                    headline + sub-metrics per benchmark, timings, identity

Answers files are only read. A benchmark whose ground truth (or question file) is missing is marked
"needs annotations", naming the file, and the others are still scored. The data folder is the
``--data`` given, else the one ``run.json`` records; never the working folder by default. A
``samples.jsonl`` or ``results.json`` that another program wrote is refused, never replaced.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.answer_log import ANSWERS, AnswerLog
from benchmarks.base import (
    STATUS_NEEDS_ANNOTATIONS,
    BenchmarkDataError,
    BenchmarkResult,
    MissingFileError,
    Question,
    SampleScore,
    benchmark_class,
    get_benchmark,
    write_json,
)
from benchmarks.run_inputs import (
    RESULT_KEYS,
    RESULTS_FILE,
    SAMPLE_KEYS,
    check_ours,
    read_json_quietly,
    read_run_info,
)

SAMPLES = "samples.jsonl"


def check_answers_fit(log: AnswerLog, questions: Sequence[Question], data: Path) -> None:
    """Refuse to score answers that were given to other questions than ``data`` holds."""
    by_qid = {q.qid: q for q in questions}
    unknown = [qid for qid in log.records if qid not in by_qid]
    if unknown:
        raise BenchmarkDataError(
            f"{len(unknown)} answer(s) in {log.path} are for questions {data} does not hold "
            f"(first: qid {unknown[0]!r}); score with the --data the run used"
        )
    changed = [qid for qid, r in log.records.items() if "prompt" in r and r["prompt"] != by_qid[qid].text]
    if changed:
        raise BenchmarkDataError(
            f"{len(changed)} answer(s) in {log.path} were given to other prompts than {data} holds "
            f"(first: qid {changed[0]!r}); score with the --data the run used"
        )


def score_benchmark(
    name: str, data: Path, run_dir: Path, options: dict[str, Any] | None = None
) -> BenchmarkResult:
    """Re-score saved answers (no model needed); writes samples.jsonl and any submission files.

    The answers file is only read: a torn last line is left out, any other bad line is an error.
    A missing ground-truth file gives a "needs annotations" result that names it.
    """
    bench = get_benchmark(name, **(options or {}))
    folder = Path(run_dir) / name
    log = AnswerLog(folder / ANSWERS)
    if not log.records:
        raise BenchmarkDataError(f"no answers in {folder / ANSWERS}")
    check_ours(folder / SAMPLES, SAMPLE_KEYS)
    try:
        loaded = bench.load(Path(data))
    except MissingFileError as exc:
        return needs_annotations(name, bench.headline_name, exc, [])
    check_answers_fit(log, loaded, Path(data))
    questions = [q for q in loaded if q.qid in log]
    answers = {qid: r["text"] for qid, r in log.records.items()}
    try:
        result = bench.score(Path(data), answers, questions)
    except MissingFileError as exc:
        result = needs_annotations(name, bench.headline_name, exc, questions)
    bench.write_submission(Path(data), answers, questions, folder / "submission")
    write_samples(folder / SAMPLES, questions, log, result)
    return result


def needs_annotations(
    name: str, headline_name: str, exc: MissingFileError, questions: Sequence[Question]
) -> BenchmarkResult:
    samples = [SampleScore(q.qid, None, None) for q in questions]
    note = f"{exc}; the answers are kept, score again once it is there"
    return BenchmarkResult(name, headline_name, None, {}, samples, note, STATUS_NEEDS_ANNOTATIONS)


def write_samples(path: Path, questions: Sequence[Question], log: AnswerLog, result: BenchmarkResult) -> None:
    """The per-sample log: prompt, answer, parsed answer and score of every answered question."""
    by_qid = {s.qid: s for s in result.samples}
    bench = get_benchmark(result.benchmark)
    with open(path, "w", encoding="utf-8") as handle:
        for q in questions:
            s = by_qid.get(q.qid)
            record = {
                "qid": q.qid,
                "unit": bench.sampling_unit(q),
                "category": q.category,
                "image": q.image,
                "prompt": q.text,
                "answer": log.records[q.qid]["text"],
                "parsed": s.parsed if s else None,
                "score": s.score if s else None,
            }
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")


def timing_summary(run_dir: Path, name: str) -> dict[str, float]:
    """Speed of a run from its answers' metadata; ``{}`` when the answers carry no timings."""
    records = list(AnswerLog(Path(run_dir) / name / ANSWERS).records.values())
    meta = [r.get("metadata") or {} for r in records]
    total = sum(m.get("total_s", 0.0) for m in meta if isinstance(m.get("total_s"), int | float))
    if not records or total <= 0:
        return {}
    decode_tokens = sum(m.get("new_tokens", 0) for m in meta)
    decode_s = sum(m.get("decode_s", 0.0) for m in meta)
    timing = {
        "questions": len(records),
        "seconds": round(total, 3),
        "questions_per_minute": round(60 * len(records) / total, 2),
        "mean_ttft_s": round(sum(m.get("ttft_s", 0.0) for m in meta) / len(meta), 4),
    }
    if decode_s:
        timing["decode_tokens_per_s"] = round(decode_tokens / decode_s, 2)
    return timing


def resolve_data(run_dir: Path, data: Path | None, run_info: dict[str, Any]) -> Path:
    """The benchmark data folder: ``data`` if given, else the one ``run.json`` records."""
    if data is not None:
        if not Path(data).is_dir():
            raise BenchmarkDataError(f"--data {data} is not a folder")
        return Path(data)
    recorded = run_info.get("data")
    if not recorded:
        raise BenchmarkDataError(f"{run_dir} records no benchmark data folder: pass --data DIR")
    if not Path(recorded).is_dir():
        raise BenchmarkDataError(
            f"the benchmark data folder {recorded} that {run_dir} records is not there: pass --data DIR"
        )
    return Path(recorded)


def scored_names(run_dir: Path, names: Sequence[str] | None) -> list[str]:
    answered = sorted(p.name for p in run_dir.iterdir() if (p / ANSWERS).exists())
    if not names:
        if not answered:
            raise BenchmarkDataError(
                f"{run_dir} holds no {ANSWERS} (a chunked run: `imp bench merge` it first)"
            )
        return answered
    for name in names:
        benchmark_class(name)
        if name not in answered:
            raise BenchmarkDataError(
                f"{run_dir} holds no answers for {name} (answered: {', '.join(answered) or 'none'})"
            )
    return list(names)


def benchmark_entry(result: BenchmarkResult, run_dir: Path, inputs: dict[str, Any] | None) -> dict[str, Any]:
    """A benchmark's entry of results.json: the result without samples, question count, timing."""
    entry = result.to_dict()
    samples = entry.pop("samples")
    entry["questions"] = int(result.metrics.get("questions", len(samples)))
    entry["timing"] = timing_summary(run_dir, result.benchmark)
    entry["inputs"] = inputs
    return entry


def score_run(
    run_dir: Path,
    data: Path | None = None,
    names: Sequence[str] | None = None,
    *,
    options: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Score the benchmarks of a run folder (all answered ones, or ``names``); write ``results.json``.

    ``options`` maps a benchmark name to its constructor options (``{"mmvet": {"grades": path}}``).
    Each benchmark's entry carries ``inputs``, the questions digest of the run's fingerprint, and
    the results carry its ``generation`` options, so that ``imp compare`` can check the pairing.
    Entries of benchmarks scored before and not named now are kept.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise BenchmarkDataError(f"run folder not found: {run_dir}")
    run_info = read_run_info(run_dir)
    data = resolve_data(run_dir, data, run_info)
    names = scored_names(run_dir, names)
    results_path = run_dir / RESULTS_FILE
    check_ours(results_path, RESULT_KEYS)
    previous = (read_json_quietly(results_path) or {}).get("benchmarks", {}) if results_path.exists() else {}
    fingerprint = run_info.get("fingerprint") or {}
    results = {n: e for n, e in previous.items() if n not in names and (run_dir / n / ANSWERS).exists()}
    for name in names:
        result = score_benchmark(name, data, run_dir, (options or {}).get(name))
        results[name] = benchmark_entry(result, run_dir, fingerprint.get("benchmarks", {}).get(name))
    out = {
        "runtime": run_info.get("runtime", {}),
        "data": str(data),
        "generation": fingerprint.get("generation"),
        "benchmarks": results,
        "scored_at": time.time(),
    }
    write_json(results_path, out, indent=2)
    return out
