"""What a speed run records and derives, as typed records (field names are the ``speed.json`` keys).

Figures are medians of the measured runs (see :mod:`benchmarks.speed.stats`); a figure that was not
measured is None. Stage breakdowns map a stage (``image_encode_s``, ``prefill_s``, ``decode_s``,
``other_s``; or ``load``, ``vision``, ``first_answer`` for memory) to its seconds or MB.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from benchmarks.speed.record import Record

#: seconds (or MB) per stage, in the order the stages run
Stages = dict[str, float | None]


# ------------------------------------------------------------------------------------ machine
@dataclass(frozen=True)
class Machine(Record):
    """The machine a run measured, recorded with every figure."""

    cpu: str
    cpu_flags: list[str]
    cores_usable: int
    cores_logical: int | None
    cores_physical: int | None
    memory_gb: float
    memory_available_gb: float
    load_average: list[float]
    platform: str
    python: str
    versions: dict[str, str | None]
    load_average_end: list[float] | None = None


@dataclass(frozen=True)
class Bandwidth(Record):
    """Memory bandwidth of a large-array copy at one thread count."""

    threads: int
    array_mb: int
    gb_per_s: float
    gb_per_s_best: float
    seconds: list[float]


@dataclass(frozen=True)
class Limits(Record):
    bandwidth: list[Bandwidth]

    def at(self, threads: int) -> Bandwidth | None:
        """The bandwidth at ``threads`` threads, else at the most threads measured."""
        exact = [b for b in self.bandwidth if b.threads == threads]
        return exact[0] if exact else max(self.bandwidth, key=lambda b: b.threads, default=None)


@dataclass(frozen=True)
class DecodeBytes(Record):
    """What llama.cpp reads per decoded token from one GGUF file, and the model facts behind it."""

    tensor_bytes: int
    bytes_per_token: int
    elements_per_token: int
    bytes_by_type: dict[str, int]
    parameters: int
    layers: int
    embedding_width: int


# ------------------------------------------------------------------------------------ model
@dataclass(frozen=True)
class ModelFacts(Record):
    preset: str
    source: str
    id: str
    image_tokens: int
    image_size: int
    embedding_width: int
    vocab_size: int
    context_length: int
    lm_parameters: int | None
    lm_layers: int | None


@dataclass(frozen=True)
class FileRow(Record):
    kind: str  # "vision" or "lm"
    precision: str
    file: str
    mb: float
    export_seconds: float | None


@dataclass(frozen=True)
class ExportFacts(Record):
    built_now: bool
    exported_now: bool
    exported_at: str | None
    build: dict[str, Any]
    bundle_timings: dict[str, float]
    cache_entry: str


# ------------------------------------------------------------------------------------ speed
@dataclass(frozen=True)
class Cosine(Record):
    """Token cosine of two encoders' features."""

    mean: float
    min: float


@dataclass(frozen=True)
class VisionRow(Record):
    """One vision encoder: ms per image (incl. preprocessing) and its features vs PyTorch."""

    key: str
    encoder: str
    ms_per_image: float | None
    ms_min: float | None
    ms_max: float | None
    preprocess_ms: float | None
    speedup_vs_torch: float | None
    cosine_vs_torch: Cosine | None
    cosine_vs_onnx_fp32: Cosine | None


@dataclass(frozen=True)
class LmRow(Record):
    """One LM runtime: prefill / decode rates, bare llama.cpp on the same file, the roofline."""

    key: str
    runtime: str
    file_mb: float | None
    mb_read_per_token: float | None
    prefill_tokens: float | None
    prefill_tokens_per_s: float | None
    decode_tokens_per_s: float | None
    decode_forward_per_s: float | None
    bare_prefill_tokens_per_s: float | None
    bare_decode_forward_per_s: float | None
    overhead_prefill_pct: float | None
    overhead_decode_pct: float | None
    roofline_tokens_per_s: float | None
    roofline_fraction: float | None
    bare_roofline_fraction: float | None
    roofline_with_kv_tokens_per_s: float | None
    roofline_with_kv_fraction: float | None

    @property
    def quant(self) -> str:
        return self.key.removeprefix("gguf-")


@dataclass(frozen=True)
class LatencyRow(Record):
    """First answer on an image (nothing reused), then a second question on it (reuse)."""

    key: str
    runtime: str
    threads: int | None
    context_length: int | None
    first_ttft_s: float | None
    first_total_s: float | None
    first_stages: Stages
    second_ttft_s: float | None
    second_total_s: float | None
    second_ttft_stages: Stages
    second_prefill_tokens: float | None
    second_reused_tokens: float | None
    reuse_ttft_speedup: float | None
    first_speedup_vs_torch: float | None = None


@dataclass(frozen=True)
class ThroughputRow(Record):
    key: str
    runtime: str
    questions: int
    images: int
    seconds: float
    questions_per_minute: float
    median_question_s: float | None


@dataclass(frozen=True)
class MemoryRow(Record):
    """Peak RSS of one runtime's process and the growth of each stage."""

    key: str
    runtime: str
    lm: str | None
    vision: str | None
    context_length: int | None
    peak_rss_mb: float
    baseline_rss_mb: float
    growth_mb: Stages
    transient_mb: float
    lm_file_mb: float | None
    vision_file_mb: float | None
    llama_kv_mib: float | None
    llama_compute_mib: float | None
    llama_repack_mib: float | None


@dataclass(frozen=True)
class SweepRow(Record):
    threads: int
    vision_ms: float | None
    prefill_tokens_per_s: float | None
    decode_forward_per_s: float | None
    ttft_s: float | None
    total_s: float | None


@dataclass(frozen=True)
class Verdict(Record):
    """One target: goal, measured, met? (reported, never asserted) and, for a miss, what held it back."""

    key: str
    description: str
    goal: str
    measured: float | None
    measured_text: str
    met: bool | None
    holds_back: str
    applies: bool


# ------------------------------------------------------------------------------------ report
@dataclass(frozen=True)
class PresetReport(Record):
    """Everything the report shows of one preset; ``raw`` keeps the worker measurements it came from."""

    model: ModelFacts
    files: list[FileRow]
    export: ExportFacts
    vision: list[VisionRow]
    lm: list[LmRow]
    latency: list[LatencyRow]
    throughput: list[ThroughputRow]
    memory: list[MemoryRow]
    sweep: list[SweepRow]
    memory_probes: dict[str, Any] | None
    bandwidth_gb_per_s: float | None
    errors: list[dict[str, str]]
    seconds: float | None
    targets: list[Verdict]
    notes: list[str]
    raw: dict[str, Any]
    chart: str | None = None


@dataclass(frozen=True)
class SpeedResults(Record):
    """A whole run: ``speed.json``."""

    format: str
    format_version: int
    created: str
    command: list[str]
    machine: Machine
    limits: Limits
    models: dict[str, PresetReport]
    seconds: float | None = None
    paths: dict[str, str] | None = None
