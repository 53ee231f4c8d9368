"""Answer files of other tools (LLaVA, lmms-eval, VLMEvalKit) brought into a run folder.

:func:`import_answers` reads each file with its format's module (:mod:`~benchmarks.foreign.llava`,
:mod:`~benchmarks.foreign.lmms_eval`, :mod:`~benchmarks.foreign.vlmevalkit`), matches its answers to
the questions of a data folder (:mod:`~benchmarks.foreign.keys`) and writes them as the run folder's
``<benchmark>/answers.jsonl`` (:mod:`~benchmarks.foreign.run_folder`), which ``imp bench score`` and
``imp compare`` use like the answers of a run. The imported files are only read.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.base import (
    REGISTRY,
    BenchmarkDataError,
    BenchmarkOptionError,
    benchmark_class,
    get_benchmark,
)
from benchmarks.foreign import llava, lmms_eval, vlmevalkit
from benchmarks.foreign.keys import benchmark_from_path
from benchmarks.foreign.matching import Imported
from benchmarks.foreign.run_folder import write_imported

READERS = {llava.FORMAT: llava.read, lmms_eval.FORMAT: lmms_eval.read, vlmevalkit.FORMAT: vlmevalkit.read}


def detect_format(path: Path) -> str:
    """The format of an answer file, told by its suffix and its first record."""
    if path.suffix.lower() in vlmevalkit.SUFFIXES:
        return vlmevalkit.FORMAT
    with open(path, encoding="utf-8", errors="replace") as handle:
        first_line = next((line for line in handle if line.strip()), "")
    try:
        first = json.loads(first_line)
    except json.JSONDecodeError:
        first = None
    if isinstance(first, dict) and lmms_eval.looks_like(first):
        return lmms_eval.FORMAT
    if isinstance(first, dict) and llava.looks_like(first):
        return llava.FORMAT
    raise BenchmarkDataError(
        f"{path} is no answer file of LLaVA (question_id, text), lmms-eval (doc_id, doc, resps) "
        "or VLMEvalKit (.xlsx / .tsv with a prediction column)"
    )


def parse_source(source: str, benchmark: str | None) -> tuple[str, Path]:
    """``NAME=FILE`` or ``FILE`` -> (benchmark, file); the benchmark told by the path if not named."""
    name, sep, rest = source.partition("=")
    if sep and name in REGISTRY:
        return name, Path(rest)
    path = Path(source)
    name = benchmark or benchmark_from_path(path)
    if name is None:
        raise BenchmarkOptionError(
            f"cannot tell the benchmark of {path} from its name or folders: write NAME={path} or --benchmarks NAME"
        )
    benchmark_class(name)
    return name, path


def import_answers(
    sources: Sequence[str],
    data: Path,
    out: Path,
    *,
    benchmark: str | None = None,
    fmt: str | None = None,
    model_id: str | None = None,
    overwrite: bool = False,
) -> list[dict[str, Any]]:
    """Import answer files into the run folder ``out``; returns one summary entry per file."""
    if not Path(data).is_dir():
        raise BenchmarkDataError(f"--data {data} is not a folder")
    imports: list[tuple[Imported, list]] = []
    for source in sources:
        name, path = parse_source(source, benchmark)
        if not path.is_file():
            raise BenchmarkDataError(f"answer file not found: {path}")
        questions = get_benchmark(name).load(Path(data))
        fmt_of_file = fmt or detect_format(path)
        try:
            imported = READERS[fmt_of_file](path, name, questions)
        except UnicodeDecodeError:
            raise BenchmarkDataError(f"{path} is not a text file: no {fmt_of_file} answer file") from None
        if not imported.answers:
            raise BenchmarkDataError(
                f"none of the {imported.unmatched} answers in {path} is for a {name} question of {data}"
            )
        imports.append((imported, questions))
    if len({i.benchmark for i, _ in imports}) != len(imports):
        raise BenchmarkOptionError("two answer files for one benchmark: import one file per benchmark")
    write_imported(Path(out), Path(data), imports, model_id, overwrite)
    return [
        {
            "benchmark": i.benchmark,
            "format": i.format,
            "source": str(i.source),
            "answers": len(i.answers),
            "questions": len(questions),
            "unmatched": i.unmatched,
        }
        for i, questions in imports
    ]
