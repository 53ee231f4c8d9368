"""What the workers measure, as typed records (field names are the keys of ``raw`` in ``speed.json``).

A worker returns a :class:`RuntimeRun`; :class:`Measured` is everything measured for one preset,
read back from its JSON form by the analysis (the same path for a fresh run and a re-render).
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from benchmarks.speed.record import OMIT_NONE, Record
from export.manifest import Artifact, Manifest, ModelInfo


@dataclass(frozen=True)
class Summary(Record):
    """Median (the reported figure), spread and the raw values of repeated measurements."""

    median: float | None
    min: float | None
    max: float | None
    n: int
    values: list[float]

    @classmethod
    def of(cls, values: Sequence[float]) -> Summary:
        vals = [float(v) for v in values]
        if not vals:
            return cls(None, None, None, 0, [])
        return cls(statistics.median(vals), min(vals), max(vals), len(vals), [round(v, 6) for v in vals])


#: one summary per figure of a request (``ttft_s``, ``prefill_tokens_per_s``, ...)
Timed = dict[str, Summary]


def med(timed: Timed | None, key: str) -> float | None:
    """The median of one figure, or None when it was not measured."""
    summary = (timed or {}).get(key)
    return None if summary is None else summary.median


@dataclass(frozen=True)
class VisionRun(Record):
    """``encode_images`` of one new photo per call, and its preprocessing alone (ms)."""

    ms_per_image: Summary
    preprocess_ms: Summary
    feature_shape: list[int]
    features: str | None = field(
        default=None, metadata=OMIT_NONE
    )  # saved features of the first photos (.npy)


@dataclass(frozen=True)
class ThroughputRun(Record):
    """Questions per minute over a set of photos x questions, in order."""

    reuse: bool
    questions: int
    images: int
    seconds: float
    questions_per_minute: float
    per_question: Timed


@dataclass(frozen=True)
class MemoryRun(Record):
    """RSS before the runtime exists, after each stage, and the process's peak (MB)."""

    baseline_rss_mb: float
    rss_after_mb: dict[str, float]
    peak_rss_mb: float


@dataclass(frozen=True)
class SweepPoint(Record):
    threads: int
    vision: VisionRun | None
    first: Timed | None


@dataclass(frozen=True)
class RuntimeRun(Record):
    """One runtime measured in its own process; the keys a worker did not measure are left out."""

    runtime: dict[str, Any]  # the runtime's identity (name, precisions, threads, context)
    load_s: float
    # what llama.cpp's log says it made
    llama_context: dict[str, Any] | None = field(default=None, metadata=OMIT_NONE)
    vision: VisionRun | None = None
    memory: MemoryRun | None = field(default=None, metadata=OMIT_NONE)
    bare_settings: dict[str, Any] | None = field(default=None, metadata=OMIT_NONE)
    first: Timed | None = field(default=None, metadata=OMIT_NONE)
    second: Timed | None = field(default=None, metadata=OMIT_NONE)
    # bare llama.cpp on the same GGUF, interleaved with the runtime
    bare: Timed | None = field(default=None, metadata=OMIT_NONE)
    throughput: ThroughputRun | None = field(default=None, metadata=OMIT_NONE)
    sweep: list[SweepPoint] | None = field(default=None, metadata=OMIT_NONE)


@dataclass(frozen=True)
class BundleFile(Record):
    """One runnable file of the bundle: its name, its bytes with its companion files, its export time."""

    file: str
    bytes: int
    export_seconds: float
    details: dict[str, Any]


@dataclass(frozen=True)
class BundleFacts(Record):
    """What the report needs from the bundle manifest (``manifest`` in ``speed.json``)."""

    model: ModelInfo
    created: str | None
    timings: dict[str, float]
    vision: dict[str, BundleFile]
    lm: dict[str, BundleFile]
    tools: dict[str, Any]

    @classmethod
    def of(cls, manifest: Manifest) -> BundleFacts:
        def artifact(entry: Artifact) -> BundleFile:
            size = sum(manifest.files[n].bytes for n in [entry.file, *entry.extra_files])
            return BundleFile(entry.file, size, entry.export_seconds, entry.details)

        return cls(
            model=manifest.model,
            created=manifest.created,
            timings=manifest.timings,
            vision={k: artifact(v) for k, v in manifest.vision.items()},
            lm={k: artifact(v) for k, v in manifest.lm.items()},
            tools=manifest.tools,
        )


@dataclass(frozen=True)
class Measured(Record):
    """Everything measured for one preset (``raw`` in ``speed.json``)."""

    config: dict[str, Any]
    prepared: dict[str, Any]
    manifest: BundleFacts
    workload: dict[str, Any]
    torch: RuntimeRun | None
    exported: dict[str, RuntimeRun]
    vision_variants: dict[str, RuntimeRun]
    profiles: dict[str, RuntimeRun]
    memory_probes: dict[str, Any] | None
    errors: list[dict[str, str]]
    seconds: float | None = None
    mix: dict[str, Any] = field(default_factory=dict)  # question-mix runs by mode (benchmarks.speed.mix)
    matmul: dict[str, Any] | None = None  # float32 and int8 matmul peaks at the run's threads
