"""VLMEvalKit prediction files: ``<model>_<dataset>.xlsx`` (or ``.tsv``), one row per question.

Columns: the dataset's TSV columns (``index``, ``question``, ``answer``, ``category``, options
``A``..``D`` for multiple choice, ``image_path`` where the dataset has one) plus ``prediction``, the
model's answer. The row tells the question (:mod:`benchmarks.foreign.keys`). The xlsx is read with
openpyxl (``pip install 'impvlm[bench]'``), only here; a ``.tsv`` needs nothing.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from benchmarks.base import BenchmarkDataError, Question
from benchmarks.foreign.keys import VLMEVAL_DATASETS
from benchmarks.foreign.matching import Imported, match_records

FORMAT = "vlmevalkit"
SUFFIXES = (".xlsx", ".tsv")


def _xlsx_rows(path: Path) -> list[dict[str, Any]]:
    try:
        from openpyxl import load_workbook
    except ImportError:
        raise BenchmarkDataError(f"reading {path} needs openpyxl: pip install 'impvlm[bench]'") from None
    try:
        book = load_workbook(path, read_only=True, data_only=True)
    except Exception as exc:  # openpyxl raises several types for a file that is no workbook
        raise BenchmarkDataError(f"{path} is not a readable xlsx workbook ({type(exc).__name__})") from None
    try:
        rows = book.worksheets[0].iter_rows(values_only=True)
        header = [str(c) if c is not None else "" for c in next(rows, ())]
        return [dict(zip(header, row, strict=False)) for row in rows if any(c is not None for c in row)]
    finally:
        book.close()


def _tsv_rows(path: Path) -> list[dict[str, Any]]:
    old_limit = csv.field_size_limit()
    csv.field_size_limit(2**31 - 1)
    try:
        with open(path, encoding="utf-8", newline="") as handle:
            return list(csv.DictReader(handle, delimiter="\t"))
    finally:
        csv.field_size_limit(old_limit)


def read_rows(path: Path) -> list[dict[str, Any]]:
    rows = _xlsx_rows(path) if path.suffix.lower() == ".xlsx" else _tsv_rows(path)
    if rows and "prediction" not in rows[0]:
        raise BenchmarkDataError(f"{path} has no 'prediction' column: not a VLMEvalKit prediction file")
    return rows


def read(path: Path, name: str, questions: list[Question]) -> Imported:
    """The answers of a VLMEvalKit prediction file to ``questions`` of benchmark ``name``."""
    model = next(
        (path.stem.removesuffix(f"_{d}") for d in VLMEVAL_DATASETS if path.stem.endswith(f"_{d}")), ""
    )
    imported = Imported(name, FORMAT, path, fallback_model=model)
    records = [
        (f"row {n} of {path}", row, row.get("prediction"), None) for n, row in enumerate(read_rows(path), 2)
    ]
    return match_records(imported, records, questions, "the row's columns")
