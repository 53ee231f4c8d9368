"""The answers file of a run folder: LLaVA answer records keyed by ``qid``, appended one by one.

Each line of ``RUN_DIR/<benchmark>/answers.jsonl`` is one JSON record ``{"qid", "question_id",
"prompt", "text", "answer_id", "model_id", "metadata"}``: LLaVA's answer-file fields plus ``qid``,
the benchmark's own question id (:attr:`benchmarks.base.Question.qid`). Only ``imp bench`` and
``imp bench import`` write such files; any other file under that name is refused, never rewritten.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from benchmarks.base import BenchmarkDataError

ANSWERS = "answers.jsonl"
# json.dumps of an answer record starts so; a torn last line is a prefix of one, or starts with it
RECORD_START = b'{"qid": "'


class AnswerLog:
    """An append-only JSONL of answer records keyed by ``qid``, safe against kills.

    Reading never writes. A last line without its newline that starts like a record of this class
    is the one a kill cut short: it is left out, and the first :meth:`append` cuts it off. Any other
    line that is not an answer record (``{"qid": str, "text": str, ...}``) raises an error naming
    the file and line, so a damaged or foreign file is neither used nor changed.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.records: dict[str, dict[str, Any]] = {}
        self._torn_at: int | None = None
        self._load()

    def _load(self) -> None:
        if not self.path.exists():
            return
        lines = self.path.read_bytes().split(b"\n")
        offset = 0
        for lineno, line in enumerate(lines[:-1], 1):
            if line.strip():
                record = self._parse(line, lineno)
                self.records[record["qid"]] = record
            offset += len(line) + 1
        tail = lines[-1]
        if tail:
            if not (tail.startswith(RECORD_START) or RECORD_START.startswith(tail)):
                raise self._error(len(lines), "it does not end with a newline and is no answer record")
            self._torn_at = offset

    def _parse(self, line: bytes, lineno: int) -> dict[str, Any]:
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise self._error(lineno, "it is not valid JSON") from None
        if not isinstance(record, dict) or not isinstance(record.get("qid"), str):
            foreign = isinstance(record, dict) and "question_id" in record
            hint = ": an answer file of another tool, `imp bench import` reads it" if foreign else ""
            raise self._error(lineno, f"it has no string 'qid'{hint}")
        if not isinstance(record.get("text"), str):
            raise self._error(lineno, "it has no string 'text'")
        return record

    def _error(self, lineno: int, why: str) -> BenchmarkDataError:
        return BenchmarkDataError(
            f"line {lineno} of {self.path} is not an answer record of imp bench ({why}); "
            "the file was left as it is: repair or move it"
        )

    def __contains__(self, qid: str) -> bool:
        return qid in self.records

    def append(self, record: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self._torn_at is not None:
            with open(self.path, "r+b") as handle:
                handle.truncate(self._torn_at)
            self._torn_at = None
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        self.records[str(record["qid"])] = record
