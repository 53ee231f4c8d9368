"""Benchmark throughput on a real question mix: how many questions each benchmark asks per image.

The per-image question counts come from the real question files of the evaluation suite
(``../shared/data/llava-eval``: GQA testdev, POPE's three splits, MME, TextVQA), never from
constants. The throughput set has one photo per benchmark with that benchmark's mean count of
questions (rounded), so a runtime's questions/min is that of the mix.

Four ways to answer it, each measured in its own process:

- ``torch``: PyTorch fp32, one question at a time, nothing reused (as upstream's eval scripts run);
- ``native-one``: llama.cpp's own multimodal path (libmtmd, the bundle's GGUF + mmproj), one question
  at a time, nothing reused (stock ``llama-mtmd-cli`` use);
- ``native-reuse``: the same with the image's prefix kept between questions (what llama-server's
  prompt cache gives);
- ``engine``: the exported runtime's ``generate_many``: each image's questions decoded together.

The one-at-a-time ways answer ``sample`` questions per image and the group's time is extrapolated
from them (the first question of an image, then the mean of the later ones); ``engine`` answers
every question. First TTFT is that of an image's first question; later TTFT that of a question on
an image whose prefix is cached.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.speed.measured import Summary
from benchmarks.speed.protocol import WorkerSpec
from benchmarks.speed.record import Record
from impvlm.errors import ConfigError

#: the question file of each benchmark of the mix, under the llava-eval folder
MIX_FILES: dict[str, str] = {
    "gqa": "gqa/llava_gqa_testdev_balanced.jsonl",
    "pope": "pope/llava_pope_test.jsonl",
    "mme": "MME/llava_mme.jsonl",
    "textvqa": "textvqa/llava_textvqa_val_v051_ocr.jsonl",
}
MODES = ("torch", "native-one", "native-reuse", "engine")
MODE_LABELS = {
    "torch": "PyTorch fp32, one question at a time (upstream)",
    "native-one": "llama.cpp libmtmd, one question at a time",
    "native-reuse": "llama.cpp libmtmd, prefix reuse",
    "engine": "this engine (exported, questions of an image decoded together)",
}


def default_eval_root() -> Path:
    """``../shared/data/llava-eval`` next to the project checkout."""
    return Path(__file__).resolve().parents[2].parent / "shared" / "data" / "llava-eval"


def questions_per_image(root: Path) -> dict[str, float]:
    """Mean questions per distinct image of each benchmark's question file under ``root``."""
    out = {}
    for name, rel in MIX_FILES.items():
        path = Path(root) / rel
        if not path.is_file():
            raise ConfigError(f"{path} does not exist: the question mix needs the real question files")
        images: dict[str, int] = {}
        with path.open(encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    image = json.loads(line)["image"]
                except (json.JSONDecodeError, KeyError, TypeError) as exc:
                    raise ConfigError(
                        f"{path}, line {n}: not a question record with an image ({exc})"
                    ) from None
                images[image] = images.get(image, 0) + 1
        out[name] = sum(images.values()) / len(images)
    return out


def mix_groups(per_image: dict[str, float]) -> list[tuple[str, int]]:
    """One photo per benchmark, asked its benchmark's mean question count (rounded, at least 1)."""
    return [(name, max(1, round(mean))) for name, mean in per_image.items()]


@dataclass(frozen=True)
class MixRun(Record):
    """One way of answering the mix: questions/min, TTFTs and the process's peak RSS."""

    mode: str
    runtime: dict[str, Any]
    groups: list[list[Any]]  # [benchmark, questions, questions answered, seconds of the group]
    questions: int
    answered: int
    seconds: float
    questions_per_minute: float
    first_ttft_s: Summary
    later_ttft_s: Summary
    peak_rss_mb: float
    warm: dict[str, Any] | None = None  # the warm-up first answer's timings (prefill / decode rates)
    baseline_rss_mb: float | None = None  # the process before the runtime exists (imports)
    loaded_rss_mb: float | None = None  # right after the runtime is open
    llama_context: dict[str, Any] | None = None  # what llama.cpp's log says it allocated


def _one_at_a_time(rt: Any, image: str, questions: Sequence[str], n: int, tokens: int, reuse: bool) -> tuple:
    """Answer ``questions`` one by one; the group's seconds extrapolated to ``n`` questions."""
    times, ttfts = [], []
    for q in questions:
        started = time.perf_counter()
        g = rt.generate([image], q, max_new_tokens=tokens, reuse=reuse, ignore_stop=True)
        times.append(time.perf_counter() - started)
        ttfts.append(g.timings.ttft_s)
    later = times[1:] or times
    seconds = times[0] + (n - 1) * sum(later) / len(later)
    return seconds, ttfts[:1], ttfts[1:]


def _together(rt: Any, image: str, questions: Sequence[str], tokens: int) -> tuple:
    """All of ``questions`` through ``generate_many``, then one more on the cached image (later TTFT)."""
    started = time.perf_counter()
    gens = rt.generate_many([image], list(questions), max_new_tokens=tokens, ignore_stop=True)
    seconds = time.perf_counter() - started
    again = rt.generate_many([image], [questions[-1]], max_new_tokens=tokens, ignore_stop=True)
    return seconds, [gens[0].timings.ttft_s], [again[0].timings.ttft_s]


def run_mix(
    rt: Any,
    mode: str,
    images: Sequence[str],
    questions: Sequence[str],
    groups: Sequence[tuple[str, int]],
    tokens: int,
    sample: int,
) -> MixRun:
    """Answer the mix on the open runtime ``rt`` (``images[i]`` is the photo of ``groups[i]``)."""
    from runtimes.base import peak_rss_mb

    rows, firsts, laters = [], [], []
    for (name, n), image in zip(groups, images, strict=False):
        asked = [questions[i % len(questions)] for i in range(n)]
        if mode == "engine":
            seconds, first, later = _together(rt, image, asked, tokens)
            answered = n
        else:
            answered = min(n, max(1, sample))
            seconds, first, later = _one_at_a_time(
                rt, image, asked[:answered], n, tokens, reuse=mode != "native-one" and mode != "torch"
            )
        rows.append([name, n, answered, round(seconds, 3)])
        firsts += first
        laters += later
    total = sum(r[3] for r in rows)
    n_questions = sum(r[1] for r in rows)
    return MixRun(
        mode=mode,
        runtime=rt.identity(),
        groups=rows,
        questions=n_questions,
        answered=sum(r[2] for r in rows),
        seconds=round(total, 3),
        questions_per_minute=60.0 * n_questions / total if total > 0 else 0.0,
        first_ttft_s=Summary.of(firsts),
        later_ttft_s=Summary.of(laters),
        peak_rss_mb=peak_rss_mb(),
    )


def open_mode(spec: WorkerSpec, mode: str, lm: str, vision: str, mmproj: str) -> Any:
    """The runtime ``mode`` answers the mix with, opened as users open it (files not re-hashed)."""
    if mode == "torch":
        from runtimes.torch_runtime import TorchRuntime

        return TorchRuntime(spec.checkpoint, device="cpu", dtype="fp32", threads=spec.threads)
    if mode in ("native-one", "native-reuse"):
        from runtimes.native import LlamaCppNativeRuntime

        return LlamaCppNativeRuntime(spec.bundle, lm=lm, mmproj=mmproj, threads=spec.threads, verify=False)
    if mode == "engine":
        from runtimes.exported import ExportedRuntime

        return ExportedRuntime(spec.bundle, vision=vision, lm=lm, threads=spec.threads, verify=False)
    raise ConfigError(f"unknown mix mode {mode!r}; use one of {', '.join(MODES)}")


def measure_mix(
    spec: WorkerSpec,
    mode: str,
    groups: Sequence[tuple[str, int]],
    lm: str,
    vision: str,
    mmproj: str,
    sample: int,
) -> MixRun:
    """One way of answering the mix, in this (fresh) process: a warm-up answer on a photo of its own,
    then the mix on one new photo per group."""
    if len(spec.images) < len(groups) + 1:
        raise ConfigError(f"the mix needs {len(groups) + 1} photos, the workload has {len(spec.images)}")
    from dataclasses import replace

    from benchmarks.speed.bare import LlamaLogGrep
    from benchmarks.speed.protocol import current_rss_mb, generation_record

    baseline = current_rss_mb()
    with LlamaLogGrep() as grep:
        rt = open_mode(spec, mode, lm, vision, mmproj)
    loaded = current_rss_mb()
    try:
        warm = spec.images[len(groups)]
        first = rt.generate(
            [warm], spec.question(0), max_new_tokens=spec.answer_tokens, reuse=False, ignore_stop=True
        )
        images = spec.images[: len(groups)]
        run = run_mix(rt, mode, images, spec.questions, groups, spec.answer_tokens, sample)
    finally:
        rt.close()
    context = dict(grep.found) or None
    return replace(
        run,
        warm=generation_record(first),
        baseline_rss_mb=baseline,
        loaded_rss_mb=loaded,
        llama_context=context,
    )
