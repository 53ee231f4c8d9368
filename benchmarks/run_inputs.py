"""What a run folder's answers depend on, recorded in ``run.json`` and checked before every resume.

``imp bench`` appends answers to a run folder and resumes from them, so one folder must only ever
hold answers of one set of inputs. :func:`run_fingerprint` describes them:

- ``runtime``: the runtime's identity without threads and device, and without the checkpoint /
  bundle path when its content hash (``checkpoint_sha256`` / ``manifest_sha256``) is there;
- ``generation``: the ``max_new_tokens`` cap, ``limit`` and ``num_chunks``;
- ``benchmarks``: per benchmark, the number of selected questions and one sha256 over their ids,
  prompts, categories, answer lengths and the bytes of their images.

The chunk index is not part of it, so the processes of a chunked run record the same fingerprint.
:func:`check_run_folder` refuses a folder whose answers came from other inputs, naming what
differs; with ``overwrite`` it discards those answers instead.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.base import BenchmarkDataError, Question

RUN_FILE = "run.json"
RESULTS_FILE = "results.json"
ANSWER_FILES = "answers*.jsonl"  # answers.jsonl and answers.chunk<K>of<N>.jsonl
SCORED_FILES = ("samples.jsonl", "submission")
SAMPLE_KEYS = ("qid", "prompt", "answer", "parsed", "score")  # a record of samples.jsonl
RESULT_KEYS = ("benchmarks", "scored_at")  # results.json
VOLATILE_KEYS = ("threads", "device")
CONTENT_HASH_KEYS = {"checkpoint": "checkpoint_sha256", "bundle": "manifest_sha256"}
REMEDY = "use a new --out, or pass --overwrite to discard them"


def runtime_key(identity: dict[str, Any]) -> dict[str, Any]:
    """The part of a runtime identity that decides its answers."""
    key = {k: v for k, v in identity.items() if k not in VOLATILE_KEYS}
    for path_key, hash_key in CONTENT_HASH_KEYS.items():
        if key.get(hash_key):
            key.pop(path_key, None)
    return key


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def questions_digest(questions: Sequence[Question], image_dir: Path) -> dict[str, Any]:
    """Count and sha256 of the questions a run answers: ids, prompts, lengths and image bytes.

    A missing image is an error here, before the run starts, rather than hours into it.
    """
    digest = hashlib.sha256()
    images: dict[str, str] = {}
    for q in questions:
        fields = [q.qid, q.text, q.image, q.category, q.max_new_tokens]
        digest.update(json.dumps(fields, ensure_ascii=False).encode() + b"\n")
        if q.image_bytes is not None:
            digest.update(hashlib.sha256(q.image_bytes).hexdigest().encode())
        elif q.image:
            if q.image not in images:
                path = Path(image_dir) / q.image
                if not path.is_file():
                    raise BenchmarkDataError(f"missing image of question {q.qid!r}: {path}")
                images[q.image] = _file_sha256(path)
            digest.update(images[q.image].encode())
    return {"questions": len(questions), "sha256": digest.hexdigest()}


def run_fingerprint(
    identity: dict[str, Any], generation: dict[str, Any], benchmarks: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    return {"runtime": runtime_key(identity), "generation": dict(generation), "benchmarks": dict(benchmarks)}


def read_run_info(run_dir: Path) -> dict[str, Any]:
    """``run.json`` of a run folder (``{}`` when there is none); another program's is an error."""
    path = Path(run_dir) / RUN_FILE
    if not path.exists():
        return {}
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BenchmarkDataError(
            f"{path} is not valid JSON ({exc}); it was not written by imp bench"
        ) from None
    if not isinstance(info, dict) or "runtime" not in info:
        raise BenchmarkDataError(f"{path} has no 'runtime' entry: it was not written by imp bench")
    return info


def write_run_info(run_dir: Path, info: dict[str, Any]) -> Path:
    """Write ``run.json`` atomically (the processes of a chunked run may read it meanwhile)."""
    path = Path(run_dir) / RUN_FILE
    tmp = path.with_name(f".{RUN_FILE}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(info, indent=2), encoding="utf-8")
    os.replace(tmp, path)
    return path


def answered_benchmarks(run_dir: Path) -> list[str]:
    """Names of the benchmark folders of ``run_dir`` that hold answer files."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    return sorted(p.name for p in run_dir.iterdir() if p.is_dir() and any(p.glob(ANSWER_FILES)))


def _short(value: Any) -> str:
    text = str(value)
    return text[:12] if len(text) == 64 and all(c in "0123456789abcdef" for c in text) else repr(value)


def _changed(section: str, old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    return [
        f"{section} {key} {_short(old.get(key))} -> {_short(new.get(key))}"
        for key in sorted(set(old) | set(new))
        if old.get(key) != new.get(key)
    ]


def differences(
    old: dict[str, Any], new: dict[str, Any], names: Sequence[str], data: tuple[str, str] | None = None
) -> list[str]:
    """What differs between two fingerprints, as short phrases (benchmarks limited to ``names``)."""
    diffs = _changed("runtime", old.get("runtime", {}), new["runtime"])
    diffs += _changed("option", old.get("generation", {}), new["generation"])
    data_hint = f", --data {data[0]} -> {data[1]}" if data and data[0] != data[1] else ""
    for name in names:
        before, after = old.get("benchmarks", {}).get(name), new["benchmarks"][name]
        if before is None:
            diffs.append(f"{name} answers are not described by {RUN_FILE}")
        elif before != after:
            diffs.append(
                f"{name} questions differ ({before.get('questions')} -> {after['questions']} questions, "
                f"other prompts or images{data_hint})"
            )
    return diffs


def _first_record(path: Path) -> Any:
    with open(path, encoding="utf-8", errors="replace") as handle:
        line = handle.readline()
    try:
        return json.loads(line)
    except json.JSONDecodeError:
        return None


def check_ours(path: Path, keys: Sequence[str]) -> None:
    """Refuse to replace ``path`` when it exists and is not a file this module writes."""
    if not path.exists() or path.stat().st_size == 0:
        return
    record = _first_record(path) if path.suffix == ".jsonl" else read_json_quietly(path)
    if not isinstance(record, dict) or not all(k in record for k in keys):
        raise BenchmarkDataError(f"{path} was not written by imp bench; it was left as it is: move it")


def read_json_quietly(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None


def discard_answers(run_dir: Path, names: Sequence[str]) -> None:
    """Delete the answers, samples and submissions of ``names`` and the run's results (``--overwrite``).

    A samples.jsonl or results.json that another program wrote stops it before anything is deleted.
    """
    run_dir = Path(run_dir)
    check_ours(run_dir / RESULTS_FILE, RESULT_KEYS)
    for name in names:
        check_ours(run_dir / name / SCORED_FILES[0], SAMPLE_KEYS)
    for name in names:
        folder = run_dir / name
        for path in folder.glob(ANSWER_FILES):
            path.unlink()
        for scored in SCORED_FILES:
            target = folder / scored
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    (run_dir / RESULTS_FILE).unlink(missing_ok=True)


def check_run_folder(
    run_dir: Path, new: dict[str, Any], data: str, overwrite: bool = False
) -> dict[str, Any]:
    """The fingerprint to record for a run of ``new`` into ``run_dir``; refuses other inputs' answers.

    Benchmarks answered before but not part of this run keep their entries (their answers stay
    valid when the runtime and options match).
    """
    run_dir = Path(run_dir)
    info = read_run_info(run_dir)  # another program's run.json is never replaced
    answered = answered_benchmarks(run_dir)
    if overwrite:
        discard_answers(run_dir, answered)
        return new
    if not answered:
        return new
    old = info.get("fingerprint")
    if not isinstance(old, dict):
        raise BenchmarkDataError(
            f"{run_dir} holds answers ({', '.join(answered)}) but no record of the inputs they came from "
            f"(no fingerprint in {RUN_FILE}); {REMEDY}"
        )
    names = [n for n in new["benchmarks"] if n in answered]
    diffs = differences(old, new, names, (str(info.get("data")), data))
    if diffs:
        raise BenchmarkDataError(
            f"{run_dir} holds answers made with other inputs: {'; '.join(diffs)}; {REMEDY}"
        )
    kept = {n: v for n, v in old.get("benchmarks", {}).items() if n in answered}
    return {**new, "benchmarks": {**kept, **new["benchmarks"]}}
