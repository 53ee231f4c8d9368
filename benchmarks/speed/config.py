"""What one ``imp bench-speed`` run measures, and its targets as data.

:class:`SpeedConfig` holds every knob (model, precisions, repetitions, workload size); the two
constructors :meth:`SpeedConfig.real` and :meth:`SpeedConfig.tiny` give the documented defaults.
A config is never mutated: :meth:`SpeedConfig.with_` returns a copy.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from impvlm.errors import ConfigError

#: LM precisions compared (the GGUF base and three llama.cpp quantizations).
DEFAULT_QUANTS: tuple[str, ...] = ("f16", "q8_0", "q4_k_m", "q4_0")
#: Vision encoder precisions compared (ONNX).
DEFAULT_VISION: tuple[str, ...] = ("fp32", "fp16", "int8")
DEFAULT_CACHE = Path("work/bench-speed-cache")
DEFAULT_OUT = Path("work/bench-speed")
#: Bump when the way random checkpoints are built changes, so old caches are not reused.
BUILD_VERSION = 1


def usable_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - macOS / Windows
        return max(1, os.cpu_count() or 1)


def default_sweep(cores: int) -> tuple[int, ...]:
    """1, 2, 4, ... up to ``cores``, and ``cores`` itself."""
    points, t = [], 1
    while t < cores:
        points.append(t)
        t *= 2
    return (*points, cores)


@dataclass(frozen=True)
class SpeedConfig:
    """One preset's speed benchmark.

    Args:
        preset: the model shape (``impvlm.presets``); with ``checkpoint`` it only names the run.
        checkpoint: a real checkpoint folder (impvlm or upstream Imp layout); None builds a random
            model of the preset's shape.
        cache: where random checkpoints and exported bundles are kept between runs.
        quants / vision: GGUF and ONNX precisions exported and compared.
        deploy_lm / deploy_vision: the deployment pair (throughput, thread sweep, reuse target).
        threads: CPU threads every runtime uses (default: all usable cores).
        runs / warmup: measured repetitions (medians are reported) and discarded ones.
        answer_tokens: tokens decoded per answer; the stop token is ignored (random weights).
        images / questions_per_image: the throughput set.
        sweep_threads: thread counts of the sweep (empty: no sweep).
        profiles: device profiles (``runtimes.profiles``) measured as users would load them.
        bandwidth_mb: size of each array of the memory-bandwidth copy.
        tokenizer_vocab: BPE size trained for a random model (the LM keeps the preset's rows).
        validate_export: run the bundle's parity checks when exporting (slow at real size).
        fresh_processes: measure each runtime in a newly spawned interpreter (exact peak RSS, pays
            the imports per runtime); False forks from a preloaded server (``--tiny``).
        mmproj: mmproj precisions exported for llama.cpp's own multimodal path (the mix's peer).
        mix_sample: questions per photo a one-at-a-time runtime answers in the question mix.
        mix_only: measure only the question mix (:mod:`benchmarks.speed.mix`).
    """

    preset: str = "imp-v1-3b"
    checkpoint: Path | None = None
    cache: Path = DEFAULT_CACHE
    quants: tuple[str, ...] = DEFAULT_QUANTS
    vision: tuple[str, ...] = DEFAULT_VISION
    deploy_lm: str = "q4_k_m"
    deploy_vision: str = "int8"
    threads: int = field(default_factory=usable_cores)
    runs: int = 3
    warmup: int = 1
    answer_tokens: int = 16
    images: int = 2
    questions_per_image: int = 3
    sweep_threads: tuple[int, ...] = field(default_factory=lambda: default_sweep(usable_cores()))
    profiles: tuple[str, ...] = ("mobile",)
    bandwidth_mb: int = 1024
    tokenizer_vocab: int = 4096
    seed: int = 0
    validate_export: bool = False
    rebuild: bool = False
    measure_torch: bool = True
    fresh_processes: bool = True
    mmproj: tuple[str, ...] = ("f16",)
    mix_sample: int = 2
    mix_only: bool = False

    def __post_init__(self) -> None:
        from runtimes.profiles import PROFILES

        if self.runs < 1 or self.warmup < 0:
            raise ConfigError("--runs must be >= 1 and --warmup >= 0")
        if self.answer_tokens < 2:
            raise ConfigError("--answer-tokens must be >= 2 (the first token comes from the prefill)")
        if self.images < 1 or self.questions_per_image < 2:
            raise ConfigError("the throughput set needs >= 1 image and >= 2 questions per image")
        if self.threads < 1 or any(t < 1 for t in self.sweep_threads):
            raise ConfigError("thread counts must be >= 1")
        if self.deploy_lm not in self.quants:
            raise ConfigError(f"the deployment LM {self.deploy_lm!r} is not among --quants {self.quants}")
        if self.deploy_vision not in self.vision:
            raise ConfigError(
                f"the deployment vision {self.deploy_vision!r} is not among --vision {self.vision}"
            )
        if unknown := [p for p in self.profiles if p not in PROFILES]:
            raise ConfigError(f"unknown profile {unknown[0]!r}; known: {', '.join(PROFILES)}")
        if self.mix_sample < 1:
            raise ConfigError("--mix-sample must be >= 1")
        if self.bandwidth_mb < 16:
            raise ConfigError("--bandwidth-mb must be >= 16 (the copy must not fit in cache)")

    # ------------------------------------------------------------------ constructors
    @classmethod
    def real(cls, **overrides: Any) -> SpeedConfig:
        """The documented real-size run (defaults of the class)."""
        return cls(**overrides)

    @classmethod
    def tiny(cls, **overrides: Any) -> SpeedConfig:
        """imp-tiny in seconds: keeps every code path alive for the test suite."""
        values: dict[str, Any] = dict(
            preset="imp-tiny",
            runs=2,
            warmup=1,
            answer_tokens=8,
            images=2,
            questions_per_image=2,
            bandwidth_mb=256,
            tokenizer_vocab=1024,
            fresh_processes=False,
        )
        values.update(overrides)
        return cls(**values)

    def with_(self, **changes: Any) -> SpeedConfig:
        return replace(self, **changes)

    # ------------------------------------------------------------------ derived
    @property
    def all_quants(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(self.quants))

    def export_key(self) -> dict[str, Any]:
        """What decides whether a cached bundle can be reused (the checkpoint's identity is added)."""
        return {
            "build_version": BUILD_VERSION,
            "preset": self.preset,
            "seed": self.seed,
            "tokenizer_vocab": self.tokenizer_vocab,
            "gguf": sorted(self.all_quants),
            "onnx": sorted(self.vision),
            "validate": self.validate_export,
            "mmproj": sorted(self.mmproj),
        }

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("checkpoint", "cache"):
            out[key] = None if out[key] is None else str(out[key])
        return out


def key_hash(data: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:12]


# ---------------------------------------------------------------------------------------- targets
@dataclass(frozen=True)
class Target:
    """One target: ``measured (op) goal`` decides ``met``; reported, never asserted."""

    key: str
    description: str
    goal: float
    unit: str
    higher_is_better: bool = True

    def met(self, measured: float | None) -> bool | None:
        if measured is None:
            return None
        return measured >= self.goal if self.higher_is_better else measured <= self.goal

    def describe_goal(self) -> str:
        return f"{'>=' if self.higher_is_better else '<='} {self.goal:g}{self.unit}"


TARGETS: dict[str, Target] = {
    t.key: t
    for t in [
        Target(
            "overhead_decode", "runtime overhead vs bare llama.cpp, decode (worst quant)", 3.0, "%", False
        ),
        Target(
            "overhead_prefill", "runtime overhead vs bare llama.cpp, prefill (worst quant)", 3.0, "%", False
        ),
        Target("reuse_ttft", "second question TTFT speed-up over the first (same image, reuse)", 10.0, "x"),
        Target(
            "throughput", "benchmark throughput, exported (reuse) vs PyTorch fp32 (nothing reused)", 5.0, "x"
        ),
        Target("first_answer_729", "first answer, exported vs PyTorch fp32 (729 image tokens)", 1.5, "x"),
        Target("first_answer_196", "first answer, exported vs PyTorch fp32 (196 image tokens)", 4.0, "x"),
        Target("vision_fp32", "vision encode, ONNX fp32 vs PyTorch fp32", 1.3, "x"),
        Target("vision_int8", "vision encode, ONNX int8 vs PyTorch fp32", 2.0, "x"),
        Target("vision_int8_cosine", "int8 vision features, mean token cosine vs PyTorch fp32", 0.995, ""),
        Target("rss_3b", "peak RSS, exported runtime (3B model)", 2500.0, " MB", False),
        Target(
            "mix_vs_torch", "question-mix throughput, this engine vs PyTorch fp32 one at a time", 10.0, "x"
        ),
        Target(
            "mix_vs_llamacpp", "question-mix throughput, this engine vs libmtmd with prefix reuse", 3.0, "x"
        ),
        Target("mix_ttft", "question mix: first TTFT over later same-image TTFT, this engine", 20.0, "x"),
        Target("mix_rss", "peak RSS of this engine answering the mix (3B model)", 2500.0, " MB", False),
    ]
}
