"""The timed requests every worker makes on one open runtime, and the RSS of its stages.

The protocol on one runtime (:class:`Protocol`):

- *vision*: ``encode_images`` of one distinct photo per call (decode + resize + normalise + encoder;
  the preprocessing share is timed apart);
- *first answer*: one photo + a question + ``answer_tokens`` tokens, nothing reused
  (``reuse=False``: features and KV cache recomputed);
- *second answer*: another question on the same photo right after, with reuse (image features and
  the KV cache of the shared prefix kept);
- *throughput*: a set of photos x questions, in order, with or without reuse.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.speed.measured import MemoryRun, Summary, ThroughputRun, Timed, VisionRun


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a worker needs (picklable)."""

    checkpoint: str
    bundle: str
    images: tuple[str, ...]
    questions: tuple[str, ...]
    threads: int
    runs: int
    warmup: int
    answer_tokens: int
    throughput_images: int
    questions_per_image: int
    features_dir: str

    def image(self, i: int) -> str:
        return self.images[i % len(self.images)]

    def question(self, i: int) -> str:
        return self.questions[i % len(self.questions)]


def current_rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def generation_record(generation: Any) -> dict[str, Any]:
    """A Generation's Timings, plus decode forward passes per second.

    ``Timings.decode_tokens_per_s`` divides n answer tokens by the decode time, but the first answer
    token comes from the prefill's logits: the decode phase runs n - 1 forward passes. Comparisons
    with bare llama.cpp and with the roofline use the forward-pass rate.
    """
    t = generation.timings
    record = t.to_dict()
    record["decode_forward_per_s"] = (t.decode_tokens - 1) / t.decode_s if t.decode_s > 0 else 0.0
    record["finish_reason"] = generation.finish_reason
    return record


def collect(records: Sequence[dict[str, Any]], keys: Sequence[str]) -> Timed:
    """One summary per figure of repeated requests."""
    return {k: Summary.of([r[k] for r in records]) for k in keys}


FIRST_KEYS = (
    "ttft_s",
    "total_s",
    "image_encode_s",
    "prefill_s",
    "prefill_tokens_per_s",
    "decode_s",
    "decode_tokens_per_s",
    "decode_forward_per_s",
    "prefill_tokens",
    "reused_tokens",
    "decode_tokens",
)


class Protocol:
    """The timed requests on one open runtime."""

    def __init__(self, runtime: Any, spec: WorkerSpec) -> None:
        self.runtime = runtime
        self.spec = spec

    def vision(self, label: str | None = None) -> VisionRun:
        """ms per image of ``encode_images`` (one new photo per call), and of its preprocessing alone."""
        rt, spec = self.runtime, self.spec
        n = spec.warmup + spec.runs
        encode_ms, preprocess_ms, probe = [], [], []
        for i in range(n):
            image = spec.image(i)
            started = time.perf_counter()
            features = rt.encode_images([image])
            elapsed = time.perf_counter() - started
            started = time.perf_counter()
            rt.image_processor.batch([image])
            pre = time.perf_counter() - started
            if i < 2:
                probe.append(np.asarray(features[0], dtype=np.float32))
            if i >= spec.warmup:
                encode_ms.append(elapsed * 1e3)
                preprocess_ms.append(pre * 1e3)
        path = None
        if label is not None:
            path = Path(spec.features_dir) / f"{label}.npy"
            path.parent.mkdir(parents=True, exist_ok=True)
            np.save(path, np.stack(probe))
        return VisionRun(
            ms_per_image=Summary.of(encode_ms),
            preprocess_ms=Summary.of(preprocess_ms),
            feature_shape=list(probe[0].shape),
            features=None if path is None else str(path),
        )

    def first(self, i: int) -> dict[str, Any]:
        g = self.runtime.generate(
            [self.spec.image(i)],
            self.spec.question(0),
            max_new_tokens=self.spec.answer_tokens,
            reuse=False,
            ignore_stop=True,
        )
        return generation_record(g)

    def second(self, i: int) -> dict[str, Any]:
        """Call right after :meth:`first` on the same image."""
        g = self.runtime.generate(
            [self.spec.image(i)],
            self.spec.question(1),
            max_new_tokens=self.spec.answer_tokens,
            reuse=True,
            ignore_stop=True,
        )
        return generation_record(g)

    def throughput(self, reuse: bool) -> ThroughputRun:
        """Questions per minute over ``throughput_images`` photos x ``questions_per_image`` questions."""
        spec = self.spec
        records = []
        started = time.perf_counter()
        for i in range(spec.throughput_images):
            for q in range(spec.questions_per_image):
                g = self.runtime.generate(
                    [spec.image(i)],
                    spec.question(q),
                    max_new_tokens=spec.answer_tokens,
                    reuse=reuse,
                    ignore_stop=True,
                )
                records.append(generation_record(g))
        seconds = time.perf_counter() - started
        return ThroughputRun(
            reuse=reuse,
            questions=len(records),
            images=spec.throughput_images,
            seconds=seconds,
            questions_per_minute=60.0 * len(records) / seconds,
            per_question=collect(records, ("total_s", "ttft_s", "reused_tokens", "prefill_tokens")),
        )

    def warm(self) -> dict[str, Any]:
        """``warmup`` first answers (at least one); returns the last one's record."""
        record: dict[str, Any] = {}
        for w in range(max(1, self.spec.warmup)):
            record = self.first(w)
        return record


class MemoryStages:
    """RSS of this process before the runtime exists, then after each stage, and the peak so far.

    The worker is a fresh process, so ``ru_maxrss`` (:func:`runtimes.base.peak_rss_mb`) is this
    runtime's own peak; the stage figures say which stage grew it.
    """

    def __init__(self) -> None:
        self.baseline = current_rss_mb()
        self.after: dict[str, float] = {}

    def mark(self, stage: str) -> None:
        self.after[stage] = current_rss_mb()

    def record(self) -> MemoryRun:
        from runtimes.base import peak_rss_mb

        return MemoryRun(
            baseline_rss_mb=self.baseline, rss_after_mb=dict(self.after), peak_rss_mb=peak_rss_mb()
        )
