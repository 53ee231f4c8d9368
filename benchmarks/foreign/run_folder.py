"""Write imported answers as a run folder: ``<benchmark>/answers.jsonl`` and ``run.json``.

The answers are written in the question file's order, each with the question's own prompt (the
tool's prompt, when it recorded another, is kept in ``metadata["source_prompt"]``). ``run.json``
names the runtime ``imported`` with the model's id and, per benchmark, the file, its format and how
many of its records matched no question. A run folder of ``imp bench`` runs, a foreign file, or
answers imported before (without ``overwrite``) are refused; nothing but the run folder is written.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.answer_log import ANSWERS, AnswerLog
from benchmarks.base import BenchmarkDataError, BenchmarkOptionError, Question, get_benchmark, prepare_out_dir
from benchmarks.foreign.matching import Imported
from benchmarks.run_inputs import (
    ANSWER_FILES,
    answered_benchmarks,
    discard_answers,
    questions_digest,
    read_run_info,
    run_fingerprint,
    write_run_info,
)

IMPORTED = "imported"  # the runtime name of imported answers


def check_target(out: Path, names: Sequence[str], overwrite: bool) -> dict[str, Any]:
    """``run.json`` of ``out``, after refusing what may not be replaced (nothing is changed here)."""
    info = read_run_info(out)  # another program's run.json is refused
    for path in sorted(out.glob(f"*/{ANSWER_FILES}")):
        AnswerLog(path)  # a foreign or damaged answers file is refused, never replaced
    answered = answered_benchmarks(out)
    if answered and info.get("runtime", {}).get("runtime") != IMPORTED:
        raise BenchmarkDataError(
            f"{out} holds answers of a model run ({', '.join(answered)}): import into another --out"
        )
    again = [n for n in names if n in answered]
    if again and not overwrite:
        raise BenchmarkDataError(
            f"{out} already holds imported answers of {', '.join(again)}: pass --overwrite to replace them"
        )
    return info


def resolve_model_id(imports: Sequence[Imported], given: str | None, info: dict[str, Any]) -> str:
    """The model's id: ``given``, else the one the files name, else the first file's name."""
    named = set().union(*(i.model_ids for i in imports))
    if given is None and len(named) > 1:
        raise BenchmarkOptionError(
            f"the files name several models ({', '.join(sorted(named))}): import each into its own --out, "
            "or name the model with --model-id"
        )
    model_id = given or (named.pop() if named else imports[0].fallback_model or imports[0].source.stem)
    before = info.get("runtime", {}).get("model_id")
    if before and before != model_id:
        raise BenchmarkDataError(
            f"{info.get('path', 'the run folder')} holds answers of {before}, not {model_id}"
        )
    return model_id


def answer_record(q: Question, imported: Imported, model_id: str) -> dict[str, Any]:
    metadata: dict[str, Any] = {"imported_from": str(imported.source), "format": imported.format}
    said = imported.prompts.get(q.qid)
    if said is not None and said != q.text:
        metadata["source_prompt"] = said
    return {
        "qid": q.qid,
        "question_id": q.meta.get("question_id", q.qid),
        "prompt": q.text,
        "text": imported.answers[q.qid],
        "answer_id": f"{imported.format}-{q.qid}",
        "model_id": model_id,
        "metadata": metadata,
    }


def write_answers(path: Path, records: list[dict[str, Any]]) -> None:
    """Write an answers file whole (a temporary file renamed into place)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def inputs_digest(name: str, questions: list[Question], data: Path) -> dict[str, Any] | None:
    """The questions digest of a run (as ``imp bench`` records it); ``None`` without the images."""
    try:
        return questions_digest(questions, get_benchmark(name).image_dir(data))
    except BenchmarkDataError:
        return None


def write_imported(
    out: Path,
    data: Path,
    imports: Sequence[tuple[Imported, list[Question]]],
    model_id: str | None,
    overwrite: bool,
) -> Path:
    """Write the imported answers into the run folder ``out`` and record them in ``run.json``."""
    out = prepare_out_dir(out)
    info = check_target(out, [i.benchmark for i, _ in imports], overwrite)
    data_path = str(Path(data).resolve())
    kept = set(answered_benchmarks(out)) - {i.benchmark for i, _ in imports}
    if kept and info.get("data") != data_path:
        raise BenchmarkDataError(
            f"{out} holds answers imported for the questions of {info.get('data')}, not {data_path}: "
            "import into another --out"
        )
    if not kept:
        info = {}  # every answer of the folder is replaced: nothing of it is kept
    model_id = resolve_model_id([i for i, _ in imports], model_id, {**info, "path": str(out)})
    discard_answers(out, [i.benchmark for i, _ in imports if (out / i.benchmark / ANSWERS).exists()])
    fingerprint = info.get("fingerprint") or {"benchmarks": {}}
    details = dict(info.get("imported") or {})
    for imported, questions in imports:
        answered = [q for q in questions if q.qid in imported.answers]
        write_answers(
            out / imported.benchmark / ANSWERS, [answer_record(q, imported, model_id) for q in answered]
        )
        fingerprint["benchmarks"][imported.benchmark] = inputs_digest(imported.benchmark, answered, data)
        details[imported.benchmark] = {
            "format": imported.format,
            "source": str(imported.source.resolve()),
            "answers": len(answered),
            "unmatched": imported.unmatched,
        }
    identity = {"runtime": IMPORTED, "model_id": model_id}
    write_run_info(
        out,
        {
            "runtime": identity,
            "data": data_path,
            "benchmarks": sorted(details),
            "fingerprint": run_fingerprint(identity, {}, fingerprint["benchmarks"]),
            "imported": details,
        },
    )
    return out
