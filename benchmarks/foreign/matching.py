"""The answers an imported file gives to the questions of a data folder."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.base import BenchmarkDataError, Question
from benchmarks.foreign.keys import question_key, record_key


@dataclass
class Imported:
    """Answers of one imported file: ``qid -> text``, and the prompt the tool recorded, if any."""

    benchmark: str
    format: str
    source: Path
    answers: dict[str, str] = field(default_factory=dict)
    prompts: dict[str, str] = field(default_factory=dict)
    model_ids: set[str] = field(default_factory=set)
    unmatched: int = 0  # records that answer no question of the data folder
    fallback_model: str = ""  # the model's name when no record names it (told by the file's path)

    def add(self, qid: str, text: Any, where: str, prompt: Any = None) -> None:
        if qid in self.answers:
            raise BenchmarkDataError(f"{where} answers question {qid} of {self.benchmark} a second time")
        self.answers[qid] = "" if text is None else str(text)
        if prompt is not None:
            self.prompts[qid] = str(prompt)

    def note_model(self, model_id: Any) -> None:
        if model_id not in (None, ""):
            self.model_ids.add(str(model_id))


def key_index(name: str, questions: Iterable[Question]) -> dict[Any, str]:
    """``key -> qid`` of the questions (:func:`benchmarks.foreign.keys.question_key`)."""
    index: dict[Any, str] = {}
    for q in questions:
        index.setdefault(question_key(name, q), q.qid)
    return index


def match_records(
    imported: Imported,
    records: Iterable[tuple[str, Mapping[str, Any], Any, Any]],
    questions: list[Question],
    fields_hint: str,
) -> Imported:
    """Add ``(where, fields, text, prompt)`` records to ``imported`` by their question key."""
    index = key_index(imported.benchmark, questions)
    for where, fields, text, prompt in records:
        try:
            key = record_key(imported.benchmark, fields)
        except (KeyError, TypeError, ValueError) as exc:
            raise BenchmarkDataError(
                f"{where} has no usable {exc} field to tell its {imported.benchmark} question ({fields_hint})"
            ) from None
        qid = index.get(key)
        if qid is None:
            imported.unmatched += 1
            continue
        imported.add(qid, text, where, prompt)
    return imported
