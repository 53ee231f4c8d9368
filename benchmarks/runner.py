"""Run benchmarks on any runtime, resumably; scoring is :mod:`benchmarks.scoring`.

A run folder holds one runtime's answers::

    RUN_DIR/run.json                        runtime identity, data root, options
    RUN_DIR/<benchmark>/answers.jsonl       answer records (:mod:`benchmarks.answer_log`)
    RUN_DIR/<benchmark>/answers.chunk<K>of<N>.jsonl   the same, for chunked (multi-process) runs
    RUN_DIR/<benchmark>/samples.jsonl, submission/, RUN_DIR/results.json   written by scoring

A killed run resumes where it stopped: answers already in the file are kept and not recomputed, and
the record the kill cut short (a torn last line) is dropped before the next answer is appended. Any
other line that is not an answer record stops the run with an error naming it; reading and scoring
never write an answers file. ``run.json`` records the fingerprint of everything the answers depend
on (:mod:`benchmarks.run_inputs`); a re-run with other inputs is refused. Questions that share an
image run together (:mod:`benchmarks.answer_groups`): the image is encoded and its prefix prefilled
once, and the questions are decoded in one batch (``--max-batch`` caps it; ``--no-reuse`` answers
one question at a time, recomputing everything).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.answer_groups import record_of, same_image_groups
from benchmarks.answer_log import ANSWERS, AnswerLog
from benchmarks.base import (
    Benchmark,
    BenchmarkDataError,
    BenchmarkOptionError,
    Question,
    get_benchmark,
    prepare_out_dir,
)
from benchmarks.run_inputs import (
    ANSWER_FILES,
    RESULTS_FILE,
    check_run_folder,
    questions_digest,
    run_fingerprint,
    write_run_info,
)
from benchmarks.scoring import SAMPLES, score_benchmark, score_run

# names other modules and tests import from here
__all__ = [
    "ANSWERS",
    "RESULTS_FILE",
    "SAMPLES",
    "AnswerLog",
    "BenchmarkRunOptions",
    "merge_chunks",
    "run_benchmark",
    "run_suite",
    "score_benchmark",
    "score_run",
]


def chunk_questions(questions: Sequence[Question], num_chunks: int, chunk_idx: int) -> list[Question]:
    """LLaVA's split: contiguous chunks of ``ceil(n / num_chunks)`` questions."""
    if num_chunks < 1:
        raise BenchmarkOptionError(f"--num-chunks must be at least 1, got {num_chunks}")
    if not 0 <= chunk_idx < num_chunks:
        raise BenchmarkOptionError(f"--chunk-idx {chunk_idx} is outside 0..{num_chunks - 1}")
    size = math.ceil(len(questions) / num_chunks) if questions else 0
    return list(questions[chunk_idx * size : (chunk_idx + 1) * size])


def group_by_image(questions: Sequence[Question]) -> list[Question]:
    """Stable reordering: questions on the same image become consecutive (first-appearance order)."""
    groups: dict[Any, list[Question]] = {}
    for q in questions:
        key = q.image if q.image is not None else (hash(q.image_bytes) if q.image_bytes else ("text", q.qid))
        groups.setdefault(key, []).append(q)
    return [q for group in groups.values() for q in group]


@dataclass
class BenchmarkRunOptions:
    """How ``run_suite`` answers; ``overwrite`` discards a run folder's answers of other inputs."""

    limit: int | None = None
    num_chunks: int = 1
    chunk_idx: int = 0
    max_new_tokens: int | None = None  # cap on the benchmark's own limit (quick runs)
    reuse: bool = True
    progress: bool = True
    overwrite: bool = False
    max_batch: int | None = None  # most questions decoded together (None: what the runtime's context allows)

    def __post_init__(self) -> None:
        if self.limit is not None and self.limit < 1:
            raise BenchmarkOptionError(
                f"--limit {self.limit} selects no questions: give a positive number, or leave it out for all"
            )
        if self.max_batch is not None and self.max_batch < 1:
            raise BenchmarkOptionError(f"--max-batch must be at least 1, got {self.max_batch}")
        if self.max_new_tokens is not None and self.max_new_tokens < 1:
            raise BenchmarkOptionError(f"--max-new-tokens must be at least 1, got {self.max_new_tokens}")
        if self.num_chunks < 1:
            raise BenchmarkOptionError(f"--num-chunks must be at least 1, got {self.num_chunks}")
        if not 0 <= self.chunk_idx < self.num_chunks:
            raise BenchmarkOptionError(
                f"--chunk-idx {self.chunk_idx} is outside 0..{self.num_chunks - 1} (--num-chunks {self.num_chunks})"
            )

    def generation(self) -> dict[str, Any]:
        """The options the answers depend on (recorded in the run's fingerprint)."""
        return {"max_new_tokens": self.max_new_tokens, "limit": self.limit, "num_chunks": self.num_chunks}


def answers_path(run_dir: Path, name: str, options: BenchmarkRunOptions) -> Path:
    if options.num_chunks > 1:
        return Path(run_dir) / name / f"answers.chunk{options.chunk_idx}of{options.num_chunks}.jsonl"
    return Path(run_dir) / name / ANSWERS


def run_selection(bench: Benchmark, data: Path, options: BenchmarkRunOptions) -> list[Question]:
    """The questions of the whole run (``--limit`` applied, before chunking); never empty."""
    questions = bench.load(Path(data))
    if not questions:
        raise BenchmarkDataError(f"{bench.name}: the question file(s) under {data} hold no questions")
    return questions[: options.limit] if options.limit is not None else questions


def selected_questions(bench: Benchmark, data: Path, options: BenchmarkRunOptions) -> list[Question]:
    """The questions this process answers (its chunk of the run's selection)."""
    return chunk_questions(run_selection(bench, data, options), options.num_chunks, options.chunk_idx)


def run_benchmark(
    runtime: Any, name: str, data: Path, run_dir: Path, options: BenchmarkRunOptions | None = None
) -> Path:
    """Answer every (remaining) question of one benchmark; returns the answers file."""
    from tqdm import tqdm

    options = options or BenchmarkRunOptions()
    bench = get_benchmark(name)
    questions = group_by_image(selected_questions(bench, data, options))
    log = AnswerLog(answers_path(run_dir, name, options))
    todo = [q for q in questions if q.qid not in log]
    image_dir = bench.image_dir(Path(data))
    model_id = runtime.identity().get("model_id", runtime.name)
    bar = tqdm(
        total=len(questions),
        initial=len(questions) - len(todo),
        desc=f"{name} [{runtime.name}]",
        unit="q",
        disable=not options.progress,
        dynamic_ncols=True,
    )
    for group, images, limit in same_image_groups(todo, image_dir, options.reuse, options.max_new_tokens):
        if len(group) > 1:
            outs = runtime.generate_many(images, [q.text for q in group], limit, max_batch=options.max_batch)
        else:
            outs = [runtime.generate(images, group[0].text, max_new_tokens=limit, reuse=options.reuse)]
        for q, out in zip(group, outs, strict=True):
            log.append(record_of(q, out, runtime.name, model_id))
        bar.update(len(group))
    bar.close()
    return log.path


def answer_record(
    runtime: Any, q: Question, image_dir: Path, options: BenchmarkRunOptions, model_id: str
) -> dict[str, Any]:
    """Answer one question alone: the LLaVA answer record that goes into the answers file."""
    [(_, images, limit)] = same_image_groups([q], image_dir, True, options.max_new_tokens)
    out = runtime.generate(images, q.text, max_new_tokens=limit, reuse=options.reuse)
    return record_of(q, out, runtime.name, model_id)


def merge_chunks(run_dir: Path, name: str) -> Path:
    """Concatenate ``answers.chunk*of<N>.jsonl`` in chunk order into ``answers.jsonl``."""
    folder = Path(run_dir) / name
    chunks = sorted(
        folder.glob("answers.chunk*of*.jsonl"), key=lambda p: int(p.name.split("chunk")[1].split("of")[0])
    )
    if not chunks:
        raise BenchmarkDataError(f"no chunk answer files in {folder}")
    total = int(chunks[0].name.split("of")[1].split(".")[0])
    if len(chunks) != total:
        raise BenchmarkDataError(
            f"{folder} has {len(chunks)} of {total} chunk files; run the missing chunks first"
        )
    merged = AnswerLog(folder / ANSWERS)
    for chunk in chunks:
        for qid, record in AnswerLog(chunk).records.items():
            if qid not in merged:
                merged.append(record)
    return merged.path


def run_suite(
    runtime: Any,
    names: Sequence[str],
    data: Path,
    run_dir: Path,
    options: BenchmarkRunOptions | None = None,
) -> dict[str, Any] | None:
    """Run several benchmarks; score them when the run is not chunked (else merge first).

    Before any answer is written, every answers file already in ``run_dir`` must read as one, and
    the run's fingerprint is checked against the one ``run_dir`` records
    (:func:`benchmarks.run_inputs.check_run_folder`).
    """
    options = options or BenchmarkRunOptions()
    run_dir = start_run(runtime, names, data, run_dir, options)
    for name in names:
        run_benchmark(runtime, name, data, run_dir, options)
    if options.num_chunks > 1:
        return None
    return score_run(run_dir, data, names)


def start_run(
    runtime: Any, names: Sequence[str], data: Path, run_dir: Path, options: BenchmarkRunOptions
) -> Path:
    """Check ``run_dir``'s answers files and fingerprint against this run's, then record the run."""
    run_dir = prepare_out_dir(Path(run_dir))
    digests = {}
    for name in names:
        bench = get_benchmark(name)
        digests[name] = questions_digest(run_selection(bench, data, options), bench.image_dir(Path(data)))
    for path in sorted(run_dir.glob(f"*/{ANSWER_FILES}")):
        AnswerLog(path)  # a damaged or foreign answers file stops the run, even with --overwrite
    identity = runtime.identity()
    data_path = str(Path(data).resolve())
    new = run_fingerprint(identity, options.generation(), digests)
    fingerprint = check_run_folder(run_dir, new, data_path, options.overwrite)
    info = {
        "runtime": identity,
        "data": data_path,
        "benchmarks": list(fingerprint["benchmarks"]),
        "limit": options.limit,
        "max_new_tokens": options.max_new_tokens,
        "decoding": "batched per image" if options.reuse else "one question at a time",
        "max_batch": options.max_batch,
        "fingerprint": fingerprint,
    }
    write_run_info(run_dir, info)
    return run_dir
