"""The common interface of the nine benchmarks, their registry and small file helpers.

A benchmark turns LLaVA's ``playground/data/eval`` folder (``root``) into :class:`Question` objects,
and a dict of answers (``qid -> generated text``) back into a :class:`BenchmarkResult`. Scoring is
pure Python (plus numpy / openpyxl / httpx where a benchmark needs them) and never imports torch, so
saved answers can be re-scored anywhere.

Every benchmark module documents its data layout and keeps its file names as module constants.
A missing file raises :class:`BenchmarkDataError` with a one-line message naming the file.
"""

from __future__ import annotations

import importlib
import json
import math
import os
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from impdefs import SHORT_ANSWER_SUFFIX as SHORT_ANSWER_SUFFIX
from impdefs import ImpError

# Instruction suffixes found in LLaVA-1.5's question files (already part of ``text``). The short-answer
# line, which the training data shares, is defined in impdefs (the scorers import nothing of impvlm).
MULTIPLE_CHOICE_SUFFIX = "Answer with the option's letter from the given choices directly."
UNANSWERABLE_SUFFIX = "When the provided information is insufficient, respond with 'Unanswerable'."

SHORT_MAX_NEW_TOKENS = 128  # VQAv2, GQA, VizWiz, TextVQA, POPE, MME
LONG_MAX_NEW_TOKENS = 1024  # ScienceQA, MMBench, MM-Vet

# Result statuses.
STATUS_SCORED = "scored"  # headline computed locally
STATUS_SUBMISSION = "submission"  # scored by an evaluation server: upload write_submission's files
STATUS_UNGRADED = "ungraded"  # needs an LLM judge that was not configured; answers are kept
STATUS_NEEDS_ANNOTATIONS = "needs annotations"  # a ground-truth file is missing; answers are kept


class BenchmarkError(ImpError):
    """A user-facing benchmark error whose message is one line naming what is at fault."""


class UnknownBenchmarkError(BenchmarkError, ValueError):
    """A benchmark name that is not in :data:`REGISTRY`."""


class BenchmarkDataError(BenchmarkError, ValueError):
    """A missing or malformed benchmark file, or answers that do not fit the questions."""


class MissingFileError(BenchmarkDataError):
    """A benchmark file (question file, ground truth, annotations) that is not there."""


class BenchmarkOptionError(BenchmarkError, ValueError):
    """An option out of range (``--limit -1``) or an output folder that cannot be written."""


@dataclass(frozen=True)
class Question:
    """One prompt of a benchmark.

    ``text`` is the question with the benchmark's instruction suffix but without ``"<image>\\n"``;
    ``image`` is relative to :meth:`Benchmark.image_dir` (``None`` for text-only questions or when the
    image travels in ``image_bytes``, as in MMBench's TSV).
    """

    qid: str
    image: str | None
    text: str
    max_new_tokens: int
    category: str | None = None
    meta: dict = field(default_factory=dict)
    image_bytes: bytes | None = None


@dataclass
class SampleScore:
    """Per-question outcome: the parsed answer and its score (``None``: not scorable locally)."""

    qid: str
    parsed: str | None
    score: float | None

    def to_dict(self) -> dict:
        return {"qid": self.qid, "parsed": self.parsed, "score": self.score}


@dataclass
class BenchmarkResult:
    """The outcome of scoring one benchmark.

    ``headline`` is ``None`` when it cannot be computed locally; ``note`` then says why and ``status``
    is :data:`STATUS_SUBMISSION` or :data:`STATUS_UNGRADED`. ``info`` holds json-serialisable details
    that are not numbers (e.g. the MM-Vet judge identity).
    """

    benchmark: str
    headline_name: str
    headline: float | None
    metrics: dict[str, float]
    samples: list[SampleScore]
    note: str = ""
    status: str = STATUS_SCORED
    info: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "benchmark": self.benchmark,
            "headline_name": self.headline_name,
            "headline": self.headline,
            "status": self.status,
            "note": self.note,
            "metrics": dict(self.metrics),
            "info": self.info,
            "samples": [s.to_dict() for s in self.samples],
        }

    @classmethod
    def from_dict(cls, data: dict) -> BenchmarkResult:
        return cls(
            benchmark=data["benchmark"],
            headline_name=data["headline_name"],
            headline=data["headline"],
            metrics=dict(data.get("metrics", {})),
            samples=[SampleScore(s["qid"], s.get("parsed"), s.get("score")) for s in data.get("samples", [])],
            note=data.get("note", ""),
            status=data.get("status", STATUS_SCORED),
            info=dict(data.get("info", {})),
        )


class Benchmark(ABC):
    """One benchmark of the suite: how its questions are read and its answers scored."""

    name: str = ""
    headline_name: str = ""

    @abstractmethod
    def load(self, root: Path) -> list[Question]:
        """Read the question file(s) under ``root`` (LLaVA's ``playground/data/eval``)."""

    @abstractmethod
    def image_dir(self, root: Path) -> Path:
        """The folder that :attr:`Question.image` is relative to."""

    @abstractmethod
    def score(self, root: Path, answers: dict[str, str], questions: list[Question]) -> BenchmarkResult:
        """Score ``answers`` (``qid -> generated text``) over ``questions``."""

    def write_submission(
        self, root: Path, answers: dict[str, str], questions: list[Question], out_dir: Path
    ) -> list[Path]:
        """Write the files an evaluation server (or an official offline script) expects."""
        return []

    def sampling_unit(self, question: Question) -> str | None:
        """What the headline samples: the question itself here; ``None``: not part of the headline."""
        return question.qid

    def headline_shares(self, samples: list[dict[str, Any]]) -> dict[str, tuple[float, float]] | None:
        """Each sampling unit's share of the headline, with the share it has when all is right.

        ``samples`` are records of ``samples.jsonl`` (``qid``, ``unit``, ``category``, ``score``).
        The headline is the sum of the shares; here the mean score of the units (a unit is right
        only if each of its questions is). ``None`` when the headline is no such sum.
        """
        units: dict[str, list[float]] = {}
        for s in samples:
            unit = s.get("unit", s["qid"])
            if s.get("score") is not None and unit is not None:
                units.setdefault(unit, []).append(float(s["score"]))
        n = len(units)
        return {unit: (100 * min(scores) / n, 100 / n) for unit, scores in units.items()}

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


# name -> "module:Class"; resolved lazily so that importing the registry stays cheap.
REGISTRY: dict[str, str] = {
    "vqav2": "benchmarks.tasks.vqav2:VQAv2",
    "gqa": "benchmarks.tasks.gqa:GQA",
    "vizwiz": "benchmarks.tasks.vizwiz:VizWiz",
    "sqa": "benchmarks.tasks.scienceqa:ScienceQA",
    "textvqa": "benchmarks.tasks.textvqa:TextVQA",
    "pope": "benchmarks.tasks.pope:POPE",
    "mme": "benchmarks.tasks.mme:MME",
    "mmbench": "benchmarks.tasks.mmbench:MMBench",
    "mmvet": "benchmarks.tasks.mmvet:MMVet",
}
BENCHMARK_NAMES: tuple[str, ...] = tuple(REGISTRY)


def benchmark_class(name: str) -> type[Benchmark]:
    """The class registered under ``name``."""
    if name not in REGISTRY:
        raise UnknownBenchmarkError(f"unknown benchmark {name!r}; valid names: {', '.join(BENCHMARK_NAMES)}")
    module_name, class_name = REGISTRY[name].split(":")
    return getattr(importlib.import_module(module_name), class_name)


def get_benchmark(name: str, **options: Any) -> Benchmark:
    """A new instance of the benchmark registered under ``name`` (``options`` go to its constructor)."""
    return benchmark_class(name)(**options)


# ----------------------------------------------------------------------------------------------
# File helpers shared by the benchmark modules.
# ----------------------------------------------------------------------------------------------


def require_file(path: Path, what: str = "file") -> Path:
    """``path`` if it is an existing file, else a one-line :class:`BenchmarkDataError` naming it."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"missing {what}: {path}")
    return path


def first_existing(candidates: list[Path], what: str = "file") -> Path:
    """The first existing file of ``candidates``; the error names the first (canonical) one."""
    for path in candidates:
        if Path(path).is_file():
            return Path(path)
    others = f" (also looked for {', '.join(str(p) for p in candidates[1:])})" if len(candidates) > 1 else ""
    raise MissingFileError(f"missing {what}: {candidates[0]}{others}")


def read_json(path: Path, what: str = "file") -> Any:
    path = require_file(path, what)
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BenchmarkDataError(f"malformed JSON in {path}: {exc}") from None


def read_jsonl(path: Path, what: str = "file") -> list[dict]:
    """Records of a JSONL file; a malformed line is an error naming the file and line."""
    path = require_file(path, what)
    records = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise BenchmarkDataError(f"malformed JSON on line {lineno} of {path}: {exc.msg}") from None
            if not isinstance(record, dict):
                raise BenchmarkDataError(f"line {lineno} of {path} is not a JSON object")
            records.append(record)
    return records


def prepare_out_dir(path: Path, option: str = "--out") -> Path:
    """Create the output folder ``path`` (and its parents) and check that it can be written.

    Fails up front, before any model is loaded, with one line naming ``option`` and the cause:
    a parent that is a file, a read-only file system, a folder without write permission.
    """
    path = Path(path)
    for parent in [path, *path.parents]:
        if parent.exists() and not parent.is_dir():
            where = "is a file" if parent == path else f"is under {parent}, which is a file"
            raise BenchmarkOptionError(f"{option} {path} {where}, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BenchmarkOptionError(f"{option} {path} cannot be created: {exc.strerror}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise BenchmarkOptionError(f"{option} {path} is not writable (read-only file system or permissions)")
    return path


def write_json(path: Path, obj: Any, indent: int | None = None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=indent)
    return path


def _answer_lines(path: Path) -> Iterator[tuple[str, str] | None]:
    """``(question id as a string, answer text)`` per non-blank line of a LLaVA-style answer JSONL,
    ``None`` for a line that is not a JSON record with a question id and a text."""
    path = require_file(path, "answer file")
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                key, text = str(record["question_id"]), record["text"]
            except (json.JSONDecodeError, KeyError, TypeError):
                yield None
                continue
            yield key, "" if text is None else str(text)


def load_answer_file(path: Path) -> tuple[dict[str, str], int]:
    """Read a LLaVA-style answer JSONL (``{"question_id", "text", ...}`` per line).

    Returns ``(answers, n_unparsable)``: lines that are not valid JSON records with a question id are
    counted and skipped, as LLaVA's submission converters do. Question ids are stringified; a later
    line overrides an earlier one with the same id.
    """
    answers: dict[str, str] = {}
    bad = 0
    for parsed in _answer_lines(path):
        if parsed is None:
            bad += 1
        else:
            answers[parsed[0]] = parsed[1]
    return answers, bad


def map_llava_answers(path: Path, questions: list[Question]) -> tuple[dict[str, str], int]:
    """Answers of a LLaVA answer file keyed by :attr:`Question.qid`.

    LLaVA's answer files repeat ``question_id`` where the question file does (MME, TextVQA); the
    k-th answer with an id goes to ``"<id>#<k>"`` when that qid exists, else to ``"<id>"``. Returns
    ``(answers, n_skipped)``, counting unparsable lines and ids matching no question.
    """
    qids = {q.qid for q in questions}
    answers: dict[str, str] = {}
    seen: dict[str, int] = {}
    skipped = 0
    for parsed in _answer_lines(path):
        if parsed is None:
            skipped += 1
            continue
        key, text = parsed
        k = seen.get(key, 0)
        seen[key] = k + 1
        qid = f"{key}#{k}" if f"{key}#{k}" in qids else key
        if qid not in qids:
            skipped += 1
            continue
        answers[qid] = text
    return answers, skipped


def record_field(record: dict, key: str, path: Path, index: int) -> Any:
    """``record[key]`` or an error naming the file and record."""
    try:
        return record[key]
    except KeyError:
        raise BenchmarkDataError(f"record {index} of {path} has no {key!r} field") from None


def mean(values: list[float]) -> float:
    return math.fsum(values) / len(values) if values else 0.0


def llava_jsonl_questions(
    path: Path, *, max_new_tokens: int, what: str = "question file", numbered: bool = False
) -> list[Question]:
    """Questions of a LLaVA question file (``{"question_id", "image", "text", "category"}`` per line).

    ``qid`` is the stringified ``question_id``; with ``numbered`` it becomes ``"<question_id>#<k>"``
    (``k`` counting earlier lines with the same id), for files whose ids repeat (MME, TextVQA). The
    original id is kept in ``meta["question_id"]``. Repeated ids without ``numbered`` are an error.
    """
    records = read_jsonl(path, what)
    questions = []
    seen: dict[str, int] = {}
    for i, record in enumerate(records):
        original = record_field(record, "question_id", path, i)
        text = record_field(record, "text", path, i)
        key = str(original)
        k = seen.get(key, 0)
        seen[key] = k + 1
        if numbered:
            qid = f"{key}#{k}"
        elif k:
            raise BenchmarkDataError(f"question_id {key!r} repeats in {path}")
        else:
            qid = key
        questions.append(
            Question(
                qid=qid,
                image=record.get("image"),
                text=str(text),
                max_new_tokens=max_new_tokens,
                category=record.get("category"),
                meta={"question_id": original},
            )
        )
    return questions
