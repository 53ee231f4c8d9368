"""lmms-eval sample logs: ``samples_<task>.jsonl`` (written with ``--log_samples``).

One JSON record per line: ``{"doc_id", "doc", "target", "arguments", "resps", "filtered_resps",
..., <metric>: ...}``. ``doc`` is the question's record in the task's dataset (without its image),
which tells the question (:mod:`benchmarks.foreign.keys`); the logs' folder is named after the model. The answer taken is the model's raw
generation, ``resps[0][0]`` (``filtered_resps[0]`` when ``resps`` is absent), so that this project's
scorers see what the model said, not what a task's filter kept of it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from benchmarks.base import BenchmarkDataError, Question
from benchmarks.foreign.matching import Imported, match_records

FORMAT = "lmms-eval"


def looks_like(first: dict[str, Any]) -> bool:
    return "doc_id" in first and "doc" in first


def _text(record: dict[str, Any], where: str) -> Any:
    for field in ("resps", "filtered_resps"):
        value = record.get(field)
        while isinstance(value, list) and value:
            value = value[0]
        if isinstance(value, str):
            return value
    raise BenchmarkDataError(
        f"{where} has no text in 'resps' or 'filtered_resps': not an lmms-eval sample log"
    )


def _records(path: Path) -> list[tuple[str, dict[str, Any], Any, Any]]:
    out = []
    with open(path, encoding="utf-8") as handle:
        for lineno, line in enumerate(handle, 1):
            if not line.strip():
                continue
            where = f"line {lineno} of {path}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                raise BenchmarkDataError(f"{where} is not valid JSON") from None
            if not isinstance(record, dict) or not isinstance(record.get("doc"), dict):
                raise BenchmarkDataError(f"{where} has no 'doc' record: not an lmms-eval sample log")
            out.append((where, record["doc"], _text(record, where), None))
    return out


def read(path: Path, name: str, questions: list[Question]) -> Imported:
    """The answers of an lmms-eval sample log to ``questions`` of benchmark ``name``."""
    imported = Imported(name, FORMAT, path, fallback_model=path.resolve().parent.name)
    return match_records(imported, _records(path), questions, "the sample's doc")
