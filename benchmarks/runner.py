"""Run benchmarks on any runtime, resumably, and score the saved answers.

A run folder holds one runtime's answers::

    RUN_DIR/run.json                        runtime identity, data root, options
    RUN_DIR/<benchmark>/answers.jsonl       LLaVA answer records, appended and flushed one by one
    RUN_DIR/<benchmark>/answers.chunk<K>of<N>.jsonl   the same, for chunked (multi-process) runs
    RUN_DIR/<benchmark>/samples.jsonl       per-sample log after scoring: prompt, answer, parsed, score
    RUN_DIR/<benchmark>/submission/         server-scored benchmarks' upload files
    RUN_DIR/results.json                    headline + sub-metrics per benchmark, timings, identity

A killed run resumes where it stopped: answers already in the file are kept and not recomputed, a
half-written last line is cut off. Questions that share an image run back to back, so a runtime can
reuse the image features and the KV cache of the shared prefix.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.base import (
    Benchmark,
    BenchmarkDataError,
    BenchmarkResult,
    Question,
    get_benchmark,
    write_json,
)

RUN_FILE = "run.json"
RESULTS_FILE = "results.json"
ANSWERS = "answers.jsonl"
SAMPLES = "samples.jsonl"


def chunk_questions(questions: Sequence[Question], num_chunks: int, chunk_idx: int) -> list[Question]:
    """LLaVA's split: contiguous chunks of ``ceil(n / num_chunks)`` questions."""
    if num_chunks < 1 or not 0 <= chunk_idx < num_chunks:
        raise BenchmarkDataError(f"--chunk-idx {chunk_idx} is outside 0..{num_chunks - 1}")
    size = math.ceil(len(questions) / num_chunks) if questions else 0
    return list(questions[chunk_idx * size : (chunk_idx + 1) * size])


def group_by_image(questions: Sequence[Question]) -> list[Question]:
    """Stable reordering: questions on the same image become consecutive (first-appearance order)."""
    groups: dict[Any, list[Question]] = {}
    for q in questions:
        key = q.image if q.image is not None else (hash(q.image_bytes) if q.image_bytes else ("text", q.qid))
        groups.setdefault(key, []).append(q)
    return [q for group in groups.values() for q in group]


class AnswerLog:
    """An append-only JSONL of answer records keyed by ``qid``, safe against kills."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.records: dict[str, dict[str, Any]] = {}
        self._load()

    def _load(self) -> None:
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        good = 0
        for line in data.splitlines(keepends=True):
            if not line.endswith(b"\n"):
                break  # a half-written last line from a killed run
            try:
                record = json.loads(line)
                self.records[str(record["qid"])] = record
            except (json.JSONDecodeError, KeyError, TypeError):
                break
            good += len(line)
        if good != len(data):
            with open(self.path, "r+b") as handle:
                handle.truncate(good)

    def __contains__(self, qid: str) -> bool:
        return qid in self.records

    def append(self, record: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        self.records[str(record["qid"])] = record


@dataclass
class BenchmarkRunOptions:
    limit: int | None = None
    num_chunks: int = 1
    chunk_idx: int = 0
    max_new_tokens: int | None = None  # cap on the benchmark's own limit (quick runs)
    reuse: bool = True
    progress: bool = True


def answers_path(run_dir: Path, name: str, options: BenchmarkRunOptions) -> Path:
    if options.num_chunks > 1:
        return Path(run_dir) / name / f"answers.chunk{options.chunk_idx}of{options.num_chunks}.jsonl"
    return Path(run_dir) / name / ANSWERS


def selected_questions(bench: Benchmark, data: Path, options: BenchmarkRunOptions) -> list[Question]:
    questions = bench.load(Path(data))
    if options.limit is not None:
        questions = questions[: options.limit]
    return chunk_questions(questions, options.num_chunks, options.chunk_idx)


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
    for q in todo:
        images = [q.image_bytes] if q.image_bytes is not None else ([image_dir / q.image] if q.image else [])
        limit = (
            q.max_new_tokens
            if options.max_new_tokens is None
            else min(q.max_new_tokens, options.max_new_tokens)
        )
        out = runtime.generate(images, q.text, max_new_tokens=limit, reuse=options.reuse)
        t = out.timings
        log.append(
            {
                "qid": q.qid,
                "question_id": q.meta.get("question_id", q.qid),
                "prompt": q.text,
                "text": out.text,
                "answer_id": f"{runtime.name}-{q.qid}",
                "model_id": model_id,
                "metadata": {
                    "finish_reason": out.finish_reason,
                    "new_tokens": t.decode_tokens,
                    "ttft_s": round(t.ttft_s, 5),
                    "total_s": round(t.total_s, 5),
                    "reused_tokens": t.reused_tokens,
                    "prefill_tokens": t.prefill_tokens,
                    "decode_s": round(t.decode_s, 5),
                    "image_encode_s": round(t.image_encode_s, 5),
                },
            }
        )
        bar.update(1)
    bar.close()
    return log.path


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


def score_benchmark(name: str, data: Path, run_dir: Path) -> BenchmarkResult:
    """Re-score saved answers (no model needed); writes samples.jsonl and any submission files."""
    bench = get_benchmark(name)
    folder = Path(run_dir) / name
    log = AnswerLog(folder / ANSWERS)
    if not log.records:
        raise BenchmarkDataError(f"no answers in {folder / ANSWERS}")
    questions = [q for q in bench.load(Path(data)) if q.qid in log]
    answers = {qid: r["text"] for qid, r in log.records.items()}
    result = bench.score(Path(data), answers, questions)
    bench.write_submission(Path(data), answers, questions, folder / "submission")
    by_qid = {s.qid: s for s in result.samples}
    with open(folder / SAMPLES, "w", encoding="utf-8") as handle:
        for q in questions:
            s = by_qid.get(q.qid)
            record = log.records[q.qid]
            handle.write(
                json.dumps(
                    {
                        "qid": q.qid,
                        "image": q.image,
                        "prompt": q.text,
                        "answer": record["text"],
                        "parsed": s.parsed if s else None,
                        "score": s.score if s else None,
                    },
                    ensure_ascii=False,
                )
                + "\n"
            )
    return result


def timing_summary(run_dir: Path, name: str) -> dict[str, float]:
    records = list(AnswerLog(Path(run_dir) / name / ANSWERS).records.values())
    if not records:
        return {}
    meta = [r.get("metadata", {}) for r in records]
    total = sum(m.get("total_s", 0.0) for m in meta)
    decode_tokens = sum(m.get("new_tokens", 0) for m in meta)
    decode_s = sum(m.get("decode_s", 0.0) for m in meta)
    return {
        "questions": len(records),
        "seconds": round(total, 3),
        "questions_per_minute": round(60 * len(records) / total, 2) if total else 0.0,
        "mean_ttft_s": round(sum(m.get("ttft_s", 0.0) for m in meta) / len(meta), 4),
        "decode_tokens_per_s": round(decode_tokens / decode_s, 2) if decode_s else 0.0,
    }


def score_run(run_dir: Path, data: Path | None = None, names: Sequence[str] | None = None) -> dict[str, Any]:
    """Score every benchmark of a run folder and write ``results.json``."""
    run_dir = Path(run_dir)
    run_info = json.loads((run_dir / RUN_FILE).read_text()) if (run_dir / RUN_FILE).exists() else {}
    data = Path(data or run_info.get("data") or "")
    if not data.is_dir():
        raise BenchmarkDataError(f"benchmark data folder not found: {data} (pass --data)")
    names = list(names or sorted(p.name for p in run_dir.iterdir() if (p / ANSWERS).exists()))
    results: dict[str, Any] = {}
    for name in names:
        result = score_benchmark(name, data, run_dir).to_dict()
        result.pop("samples")
        result["timing"] = timing_summary(run_dir, name)
        results[name] = result
    out = {
        "runtime": run_info.get("runtime", {}),
        "data": str(data),
        "benchmarks": results,
        "scored_at": time.time(),
    }
    write_json(run_dir / RESULTS_FILE, out, indent=2)
    return out


def same_runtime(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two identities name the same model and precisions (threads may differ)."""
    ignore = {"threads", "device"}
    return {k: v for k, v in a.items() if k not in ignore} == {k: v for k, v in b.items() if k not in ignore}


def run_suite(
    runtime: Any,
    names: Sequence[str],
    data: Path,
    run_dir: Path,
    options: BenchmarkRunOptions | None = None,
) -> dict[str, Any] | None:
    """Run several benchmarks; score them when the run is not chunked (else merge first)."""
    options = options or BenchmarkRunOptions()
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    info = {
        "runtime": runtime.identity(),
        "data": str(Path(data).resolve()),
        "benchmarks": list(names),
        "limit": options.limit,
        "max_new_tokens": options.max_new_tokens,
    }
    previous = run_dir / RUN_FILE
    if previous.exists():
        old = json.loads(previous.read_text())
        if old.get("runtime") and not same_runtime(old["runtime"], info["runtime"]):
            raise BenchmarkDataError(
                f"{run_dir} holds answers of another runtime ({old['runtime'].get('runtime')}); use a new --out"
            )
    write_json(previous, info, indent=2)
    for name in names:
        run_benchmark(runtime, name, data, run_dir, options)
    if options.num_chunks > 1:
        return None
    return score_run(run_dir, data, names)
