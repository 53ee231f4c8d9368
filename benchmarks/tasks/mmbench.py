"""MMBench: multiple-choice perception / reasoning questions (dev 2023-07-12: 4,377 rows).

Layout under ``root`` (LLaVA's ``playground/data/eval``)::

    mmbench/mmbench_dev_20230712.tsv   one row per question: index, question, hint, A, B, C, D,
                                       answer, category, image (base64), source, l2-category,
                                       comment, split; images travel in the TSV
                                       (Question.image_bytes), so image_dir is mmbench/ itself

Prompt (LLaVA ``model_vqa_mmbench.py``): ``[hint\\n]question\\nA. ..\\nB. ..`` + the multiple-choice
suffix, options stopping at the first empty one (empty, pandas' NA spellings such as ``nan`` /
``None`` / ``NA``, as ``pandas.read_table`` + LLaVA's ``is_none`` treat them).

Scoring: rows whose ``index`` differ by multiples of 1e6 are rotated copies of one question
(group by ``index % 1e6``); circular accuracy (the headline) counts a question correct only if every
copy is; ``questions`` counts those, ``rows`` the rows. The choice is extracted from the answer with one
of VLMEvalKit's exact-matching rules (:mod:`benchmarks.tasks.mmbench_rules`; ``rule``, by default the
one that reproduces LLaVA's published numbers); an answer without an extractable choice is wrong here
(the official pipeline asks an LLM to extract the choice, so this is a lower bound — see ``unparsed``).
Without an ``answer`` column (test TSVs) the headline is ``None``; :meth:`MMBench.write_submission`
writes the upload xlsx (``index, question, A, B, C, D, prediction, answer, split`` with the raw
prediction text) with openpyxl.
"""

from __future__ import annotations

import base64
import binascii
import csv
from pathlib import Path

from benchmarks.base import (
    LONG_MAX_NEW_TOKENS,
    MULTIPLE_CHOICE_SUFFIX,
    STATUS_SUBMISSION,
    Benchmark,
    BenchmarkDataError,
    BenchmarkResult,
    Question,
    SampleScore,
    require_file,
)
from benchmarks.tasks.mmbench_rules import EXTRACTORS, MMBENCH_RULES, extract_choice

__all__ = ["MMBench", "build_prompt", "extract_choice", "is_missing", "read_tsv"]

FOLDER = "mmbench"
QUESTION_FILE = "mmbench_dev_20230712.tsv"
OPTION_LETTERS = ("A", "B", "C", "D")
ROTATION = 1_000_000
UPLOAD_COLUMNS = ("index", "question", "A", "B", "C", "D", "prediction", "answer", "split")
REQUIRED_COLUMNS = ("index", "question", "A", "B")

# Strings pandas.read_table reads as NaN by default, plus LLaVA's is_none ("nan" / "none", any case).
PANDAS_NA = frozenset(
    {
        "",
        "#N/A",
        "#N/A N/A",
        "#NA",
        "-1.#IND",
        "-1.#QNAN",
        "-NaN",
        "-nan",
        "1.#IND",
        "1.#QNAN",
        "<NA>",
        "N/A",
        "NA",
        "NULL",
        "NaN",
        "None",
        "n/a",
        "nan",
        "null",
    }
)


def is_missing(value: str | None) -> bool:
    """Whether LLaVA (reading the TSV with pandas) sees ``value`` as missing."""
    return value is None or value in PANDAS_NA or value.lower() in ("nan", "none")


def build_prompt(question: str, hint: str | None, options: dict[str, str]) -> str:
    text = question if is_missing(hint) else f"{hint}\n{question}"
    for letter, option in options.items():
        text += f"\n{letter}. {option}"
    return text


def read_tsv(path: Path) -> list[dict[str, str]]:
    """Rows of the TSV as dicts (csv quoting as pandas' default)."""
    path = require_file(path, "MMBench TSV")
    old_limit = csv.field_size_limit()
    csv.field_size_limit(2**31 - 1)
    try:
        with open(path, encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f, delimiter="\t")
            missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise BenchmarkDataError(f"{path} lacks column(s) {', '.join(missing)}")
            return list(reader)
    finally:
        csv.field_size_limit(old_limit)


def _decode_image(value: str | None, by_index: dict[str, str], path: Path, index: str) -> bytes | None:
    if is_missing(value):
        return None
    assert value is not None
    if len(value) <= 64 and value.strip().isdigit():  # VLMEvalKit TSVs point duplicates at another row
        value = by_index.get(value.strip(), "")
    try:
        return base64.b64decode(value, validate=False)
    except (binascii.Error, ValueError):
        raise BenchmarkDataError(f"row {index} of {path} has an image that is not base64") from None


class MMBench(Benchmark):
    name = "mmbench"
    headline_name = "circular_accuracy"

    def __init__(self, question_file: str = QUESTION_FILE, rule: str = MMBENCH_RULES[0]):
        if rule not in EXTRACTORS:
            raise BenchmarkDataError(
                f"unknown MMBench extraction rule {rule!r}; valid: {', '.join(MMBENCH_RULES)}"
            )
        self.question_file = question_file
        self.rule = rule

    def __repr__(self) -> str:
        return f"MMBench(question_file={self.question_file!r}, rule={self.rule!r})"

    def tsv_path(self, root: Path) -> Path:
        return Path(root) / FOLDER / self.question_file

    def load(self, root: Path) -> list[Question]:
        path = self.tsv_path(root)
        rows = read_tsv(path)
        images = {(row.get("index") or "").strip(): row.get("image") or "" for row in rows}
        questions = []
        seen = set()
        for n, row in enumerate(rows):
            index = (row.get("index") or "").strip()
            try:
                index_int = int(float(index))
            except ValueError:
                raise BenchmarkDataError(f"row {n} of {path} has index {index!r}, not a number") from None
            qid = str(index_int)
            if qid in seen:
                raise BenchmarkDataError(f"index {qid} repeats in {path}")
            seen.add(qid)
            options: dict[str, str] = {}
            for letter in OPTION_LETTERS:
                value = row.get(letter)
                if is_missing(value):
                    break
                options[letter] = str(value)
            answer = row.get("answer")
            meta = {
                "index": index_int,
                "options": options,
                "answer": None if is_missing(answer) else str(answer).strip(),
                "l2_category": row.get("l2-category"),
                "split": row.get("split"),
                "source": row.get("source"),
            }
            text = build_prompt(row.get("question") or "", row.get("hint"), options)
            questions.append(
                Question(
                    qid=qid,
                    image=None,
                    text=text + "\n" + MULTIPLE_CHOICE_SUFFIX,
                    max_new_tokens=LONG_MAX_NEW_TOKENS,
                    category=row.get("category"),
                    meta=meta,
                    image_bytes=_decode_image(row.get("image"), images, path, qid),
                )
            )
        return questions

    def sampling_unit(self, question: Question) -> str | None:
        """The circular group: the question and its rotated copies."""
        return str(int(question.meta["index"]) % ROTATION)

    def image_dir(self, root: Path) -> Path:
        return Path(root) / FOLDER

    def score(self, root: Path, answers: dict[str, str], questions: list[Question]) -> BenchmarkResult:
        samples = []
        groups: dict[int, list[bool]] = {}
        group_category: dict[int, tuple[str | None, str | None]] = {}
        unparsed = 0
        rows_scored = []
        extract = EXTRACTORS[self.rule]
        for q in questions:
            gold = q.meta.get("answer")
            parsed = extract(answers.get(q.qid) or "", q.meta.get("options") or {})
            if gold is None:
                samples.append(SampleScore(q.qid, parsed, None))
                continue
            unparsed += parsed is None
            correct = parsed == gold
            rows_scored.append(correct)
            samples.append(SampleScore(q.qid, parsed, float(correct)))
            key = int(q.meta["index"]) % ROTATION
            groups.setdefault(key, []).append(correct)
            if key not in group_category or int(q.meta["index"]) < ROTATION:
                group_category[key] = (q.category, q.meta.get("l2_category"))
        if not groups:
            note = f"no answers in {self.question_file}: upload the xlsx from write_submission to the MMBench server"
            return BenchmarkResult(
                self.name, self.headline_name, None, {}, samples, note, STATUS_SUBMISSION, self.info()
            )
        circular = {key: all(v) for key, v in groups.items()}
        headline = 100 * sum(circular.values()) / len(circular)
        metrics = {
            "circular_accuracy": headline,
            "vanilla_accuracy": 100 * sum(rows_scored) / len(rows_scored),
            "questions": float(len(circular)),
            "rows": float(len(rows_scored)),
            "unparsed": float(unparsed),
        }
        for level, prefix in ((0, "category"), (1, "l2_category")):
            per: dict[str, list[bool]] = {}
            for key, ok in circular.items():
                name = group_category[key][level]
                if name:
                    per.setdefault(name, []).append(ok)
            metrics.update({f"{prefix}/{k}": 100 * sum(v) / len(v) for k, v in sorted(per.items())})
        note = f"{unparsed} answer(s) with no extractable choice counted wrong" if unparsed else ""
        return BenchmarkResult(
            self.name, self.headline_name, headline, metrics, samples, note=note, info=self.info()
        )

    def info(self) -> dict:
        return {"extraction_rule": self.rule}

    def write_submission(
        self, root: Path, answers: dict[str, str], questions: list[Question], out_dir: Path
    ) -> list[Path]:
        try:
            from openpyxl import Workbook
            from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE
        except ImportError:
            raise BenchmarkDataError(
                "writing the MMBench xlsx needs openpyxl: pip install 'impvlm[bench]'"
            ) from None
        rows = read_tsv(self.tsv_path(root))
        asked = {q.qid for q in questions}
        columns = (
            [c for c in UPLOAD_COLUMNS if c == "prediction" or c in rows[0]] if rows else list(UPLOAD_COLUMNS)
        )

        def cell(value: str | None, from_tsv: bool = True) -> object:
            if value is None or (from_tsv and is_missing(value)):
                return None
            return ILLEGAL_CHARACTERS_RE.sub("", value)

        book = Workbook()
        sheet = book.active
        sheet.append(columns)
        for row in rows:
            qid = str(int(float(row["index"])))
            if asked and qid not in asked:
                continue
            values: list[object] = []
            for column in columns:
                if column == "index":
                    values.append(int(qid))
                elif column == "prediction":
                    values.append(cell(answers.get(qid), from_tsv=False))
                else:
                    values.append(cell(row.get(column)))
            sheet.append(values)
        out = Path(out_dir) / f"{Path(self.question_file).stem}.xlsx"
        out.parent.mkdir(parents=True, exist_ok=True)
        book.save(out)
        return [out]
