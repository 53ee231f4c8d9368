"""LLaVA's answer files: ``playground/data/eval/<benchmark>/answers/<model>.jsonl``.

One JSON record per line: ``{"question_id", "prompt", "text", "answer_id", "model_id", "metadata"}``
(MMBench's also ``round_id``, ``options``, ``option_char``). ``question_id`` is the question file's:
where it repeats (MME, TextVQA) the k-th record with an id answers the k-th question with it; an
MMBench record of round ``r > 0`` answers the rotated row ``index + r * 1e6``. ``prompt`` is the
question text LLaVA asked (MMBench's and ScienceQA's without the multiple-choice suffix); a prompt
that is not the question file's text means the file answers other questions and is refused.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from benchmarks.base import MULTIPLE_CHOICE_SUFFIX, BenchmarkDataError, Question
from benchmarks.foreign.matching import Imported
from benchmarks.tasks.mmbench import ROTATION
from impdefs import IMAGE_TOKEN

FORMAT = "llava"


def looks_like(first: dict[str, Any]) -> bool:
    return "question_id" in first and "text" in first and "doc_id" not in first


def read_records(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """``(line number, record)`` of every non-empty line; a bad line is an error naming it."""
    out = []
    with open(path, encoding="utf-8") as handle:
        for lineno, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                raise BenchmarkDataError(f"line {lineno} of {path} is not valid JSON") from None
            if not isinstance(record, dict) or "question_id" not in record or "text" not in record:
                raise BenchmarkDataError(
                    f"line {lineno} of {path} has no 'question_id' and 'text': not a LLaVA answer file"
                )
            out.append((lineno, record))
    return out


def _same_prompt(prompt: Any, question: Question) -> bool:
    said = " ".join(str(prompt).replace(IMAGE_TOKEN, "").split())
    asked = " ".join(question.text.split())
    return said in (asked, " ".join(question.text.removesuffix(MULTIPLE_CHOICE_SUFFIX).split()))


def _qid(name: str, record: dict[str, Any], seen: dict[str, int], qids: set[str]) -> str:
    key = str(record["question_id"])
    if name == "mmbench" and record.get("round_id"):
        return str(int(float(key)) + int(record["round_id"]) * ROTATION)
    k = seen.get(key, 0)
    seen[key] = k + 1
    return f"{key}#{k}" if f"{key}#{k}" in qids else key


def read(path: Path, name: str, questions: list[Question]) -> Imported:
    """The answers of a LLaVA answer file to ``questions`` of benchmark ``name``."""
    by_qid = {q.qid: q for q in questions}
    imported = Imported(name, FORMAT, path)
    seen: dict[str, int] = {}
    qids = set(by_qid)
    for lineno, record in read_records(path):
        qid = _qid(name, record, seen, qids)
        where = f"line {lineno} of {path}"
        if qid not in by_qid:
            imported.unmatched += 1
            continue
        if (
            "prompt" in record
            and not record.get("round_id")
            and not _same_prompt(record["prompt"], by_qid[qid])
        ):
            raise BenchmarkDataError(
                f"{where} answers question_id {record['question_id']} with another prompt than the "
                "question file holds: the answers are for other questions (or another --data)"
            )
        imported.add(qid, record["text"], where, record.get("prompt"))
        imported.note_model(record.get("model_id"))
    return imported
