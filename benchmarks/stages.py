"""Cached stages of a job (``imp pipeline``): each writes its outputs under the work folder and a
``.stage.json`` with the fingerprint of its inputs. A stage whose fingerprint is unchanged is skipped; a
changed one is redone from scratch; a crashed one is rebuilt in its folder (its builder resumes what it
can). Stages that read nothing of each other can run at once, each in its own process.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import shutil
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

STAGE_FILE = ".stage.json"

#: a stage's builder for a worker process: a picklable function and its arguments after the folder
StageJob = tuple[Callable[..., dict[str, str]], tuple[Any, ...]]


@dataclass
class StageResult:
    name: str
    fingerprint: str
    outputs: dict[str, str]
    seconds: float
    skipped: bool


def fingerprint(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


class Stages:
    """The stage machinery: a work folder, the results so far and a clock for the log."""

    def __init__(self, work: Path, log: Callable[[str], None] = print) -> None:
        self.work = work
        self.log = log
        self.results: dict[str, StageResult] = {}
        self.started = time.perf_counter()

    def stage(
        self, name: str, inputs: dict[str, Any], build: Callable[[Path], dict[str, str]]
    ) -> StageResult:
        begun = self._begin(name, inputs)
        if isinstance(begun, StageResult):
            return begun
        folder, fp = begun
        start = time.perf_counter()
        outputs = build(folder)
        return self._finish(name, fp, outputs, time.perf_counter() - start)

    def stages_at_once(
        self, jobs: list[tuple[str, dict[str, Any], StageJob]], workers: int
    ) -> list[StageResult]:
        """Stages that read each other's nothing, ``workers`` at a time in their own processes (each
        job is a picklable ``(function, args)`` called with the stage folder first); in ``jobs`` order."""
        results: dict[str, StageResult] = {}
        todo: list[tuple[str, Path, str, StageJob]] = []
        for name, inputs, job in jobs:
            begun = self._begin(name, inputs, f"queued ({workers} at a time)")
            if isinstance(begun, StageResult):
                results[name] = begun
            else:
                todo.append((name, *begun, job))
        if todo:
            context = multiprocessing.get_context("spawn")  # no fork of a process that holds thread pools
            with ProcessPoolExecutor(max(1, min(workers, len(todo))), mp_context=context) as pool:
                started = {
                    pool.submit(_timed, fn, folder, *args): (name, fp)
                    for name, folder, fp, (fn, args) in todo
                }
                for future in as_completed(started):
                    name, fp = started[future]
                    outputs, seconds = future.result()
                    results[name] = self._finish(name, fp, outputs, seconds)
        return [results[name] for name, _, _ in jobs]

    def _begin(
        self, name: str, inputs: dict[str, Any], starting: str = "running"
    ) -> StageResult | tuple[Path, str]:
        """The stage's cached result when its inputs did not change; else its prepared folder and fingerprint."""
        folder = self.work / name
        fp = fingerprint(inputs)
        marker = folder / STAGE_FILE
        if marker.exists():
            done = json.loads(marker.read_text())
            if done.get("fingerprint") == fp:
                result = StageResult(name, fp, done["outputs"], done["seconds"], True)
                self.log(f"[{self._clock()}] {name}: up to date, skipped")
                self.results[name] = result
                return result
            self.log(f"[{self._clock()}] {name}: inputs changed, redoing")
            shutil.rmtree(folder)
        folder.mkdir(parents=True, exist_ok=True)
        pending = folder / ".inputs.json"
        if pending.exists() and json.loads(pending.read_text()).get("fingerprint") != fp:
            shutil.rmtree(folder)  # a crashed run with other inputs: its partial work is not ours
            folder.mkdir(parents=True)
        pending.write_text(json.dumps({"fingerprint": fp, "inputs": inputs}, default=str, indent=2))
        self.log(f"[{self._clock()}] {name}: {starting}")
        return folder, fp

    def _finish(self, name: str, fp: str, outputs: dict[str, str], seconds: float) -> StageResult:
        marker = self.work / name / STAGE_FILE
        marker.write_text(json.dumps({"fingerprint": fp, "outputs": outputs, "seconds": seconds}, indent=2))
        self.log(f"[{self._clock()}] {name}: done in {seconds:.1f} s")
        result = StageResult(name, fp, outputs, seconds, False)
        self.results[name] = result
        return result

    def _clock(self) -> str:
        elapsed = int(time.perf_counter() - self.started)
        return f"{elapsed // 60:02d}:{elapsed % 60:02d}"


def _timed(fn: Callable[..., dict[str, str]], folder: Path, *args: Any) -> tuple[dict[str, str], float]:
    start = time.perf_counter()
    return fn(folder, *args), time.perf_counter() - start
