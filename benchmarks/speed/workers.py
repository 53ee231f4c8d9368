"""The measurements, each run in its own process (:func:`benchmarks.speed.isolate.run_isolated`).

Every figure comes from the runtimes users run: ``TorchRuntime`` / ``ExportedRuntime`` built as
``imp chat`` builds them and asked through ``Runtime.generate`` with the requests of
:class:`~benchmarks.speed.protocol.Protocol`; bare llama.cpp (:mod:`benchmarks.speed.bare`) runs on
the same GGUF file, interleaved with the runtime so both see the same machine load.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.speed.bare import BareLlama, LlamaLogGrep
from benchmarks.speed.measured import RuntimeRun, SweepPoint, Timed
from benchmarks.speed.protocol import FIRST_KEYS, MemoryStages, Protocol, WorkerSpec, collect
from benchmarks.speed.rows import Limits


def measure_limits(bandwidth_mb: int, thread_counts: Sequence[int]) -> Limits:
    """Memory bandwidth (array copy) at each thread count."""
    from benchmarks.speed.machine import memory_bandwidth

    return Limits(bandwidth=[memory_bandwidth(bandwidth_mb, t) for t in thread_counts])


def answers(
    p: Protocol, spec: WorkerSpec, bare: BareLlama | None = None, n_prompt: int = 0
) -> dict[str, Timed]:
    """``runs`` first answers, each followed by a second question on its image (and, with ``bare``, a
    bare llama.cpp run of as long a prompt and as many decoded tokens, interleaved)."""
    firsts, seconds, bares = [], [], []
    for r in range(spec.runs):
        firsts.append(p.first(spec.warmup + r))
        seconds.append(p.second(spec.warmup + r))
        if bare is not None:
            bares.append(bare.run(n_prompt, spec.answer_tokens - 1))
    out = {"first": collect(firsts, FIRST_KEYS), "second": collect(seconds, FIRST_KEYS)}
    if bare is not None:
        out["bare"] = collect(
            bares, ("prefill_tokens_per_s", "decode_forward_per_s", "prefill_s", "decode_s")
        )
    return out


def measure_torch(spec: WorkerSpec) -> RuntimeRun:
    """PyTorch fp32 (``TorchRuntime``): vision, first / second answers, throughput nothing reused."""
    from runtimes.torch_runtime import TorchRuntime

    stages = MemoryStages()
    started = time.perf_counter()
    rt = TorchRuntime(spec.checkpoint, device="cpu", dtype="fp32", threads=spec.threads)
    load_s = time.perf_counter() - started
    stages.mark("load")
    try:
        p = Protocol(rt, spec)
        vision = p.vision("torch-fp32")
        stages.mark("vision")
        p.warm()
        stages.mark("first_answer")
        timed = answers(p, spec)
        memory = stages.record()
        throughput = p.throughput(reuse=False)
        return RuntimeRun(rt.identity(), load_s, vision=vision, throughput=throughput, memory=memory, **timed)
    finally:
        rt.close()


def open_exported(spec: WorkerSpec, threads: int | None, **options: Any) -> tuple[Any, dict[str, Any], float]:
    """An ``ExportedRuntime`` as ``imp chat`` opens it (files not re-hashed), what llama.cpp made, load time."""
    from runtimes.exported import ExportedRuntime

    started = time.perf_counter()
    with LlamaLogGrep() as grep:
        rt = ExportedRuntime(spec.bundle, threads=threads, verify=False, **options)
    return rt, dict(grep.found), time.perf_counter() - started


def bare_beside(rt: Any, spec: WorkerSpec, lm: str, context: dict[str, Any]) -> BareLlama:
    """The runtime's GGUF in a bare llama.cpp context with the settings llama.cpp made for the runtime."""
    return BareLlama(
        Path(spec.bundle) / rt.manifest.lm[lm].file,
        threads=spec.threads,
        n_ctx=int(context.get("n_ctx", rt.context_length)),
        n_batch=int(context.get("n_batch", max(512, rt.num_image_tokens))),
        n_ubatch=int(context.get("n_ubatch", 512)),
        flash_attn=bool(context.get("flash_attn", True)),
    )


def measure_exported(
    spec: WorkerSpec, lm: str, vision: str, deploy: bool, sweep: Sequence[int]
) -> RuntimeRun:
    """One LM precision with the deployment vision encoder, against bare llama.cpp on the same file.

    Peak RSS is read before bare llama.cpp is loaded; then runtime and bare runs alternate. The
    deployment pair also runs the throughput set (with reuse) and the thread sweep.
    """
    stages = MemoryStages()
    rt, context, load_s = open_exported(spec, spec.threads, lm=lm, vision=vision)
    stages.mark("load")
    bare = None
    try:
        p = Protocol(rt, spec)
        vision_run = p.vision(f"onnx-{vision}") if deploy else None
        stages.mark("vision")
        warm = p.warm()
        stages.mark("first_answer")
        memory = stages.record()
        bare = bare_beside(rt, spec, lm, context)
        # bare llama.cpp evaluates a prompt as long as the runtime's and decodes as many tokens
        n_prompt = int(warm["prefill_tokens"])
        for _ in range(spec.warmup):
            bare.run(n_prompt, spec.answer_tokens - 1)
        timed = answers(p, spec, bare, n_prompt)
        settings = bare.settings
        bare.close()
        bare = None
        throughput = p.throughput(reuse=True) if deploy else None
    finally:
        if bare is not None:
            bare.close()
        rt.close()
    points = [sweep_point(spec, t, lm, vision) for t in sweep if t != spec.threads] if deploy else None
    return RuntimeRun(
        rt.identity(), load_s, llama_context=context, vision=vision_run, memory=memory,
        bare_settings=settings, throughput=throughput, sweep=points, **timed,
    )  # fmt: skip


def sweep_point(spec: WorkerSpec, threads: int, lm: str, vision: str) -> SweepPoint:
    """Vision ms and first-answer figures at ``threads`` threads (a fresh runtime)."""
    rt, _, _ = open_exported(spec, threads, lm=lm, vision=vision)
    try:
        p = Protocol(rt, spec)
        vis = p.vision()
        p.warm()
        firsts = [p.first(spec.warmup + r) for r in range(spec.runs)]
        return SweepPoint(threads=threads, vision=vis, first=collect(firsts, FIRST_KEYS))
    finally:
        rt.close()


def measure_vision_variant(spec: WorkerSpec, lm: str, vision: str) -> RuntimeRun:
    """An ONNX vision precision (with the deployment LM): encode ms, features, and the pair's peak RSS."""
    stages = MemoryStages()
    rt, context, load_s = open_exported(spec, spec.threads, lm=lm, vision=vision)
    stages.mark("load")
    try:
        p = Protocol(rt, spec)
        vision_run = p.vision(f"onnx-{vision}")
        stages.mark("vision")
        first = collect([p.warm()], FIRST_KEYS)
        stages.mark("first_answer")
        return RuntimeRun(
            rt.identity(),
            load_s,
            llama_context=context,
            vision=vision_run,
            first=first,
            memory=stages.record(),
        )
    finally:
        rt.close()


def measure_profile(spec: WorkerSpec, profile: str) -> RuntimeRun:
    """A device profile exactly as ``imp chat --profile`` loads it (its threads, precisions, context)."""
    stages = MemoryStages()
    rt, context, load_s = open_exported(spec, None, profile=profile)
    stages.mark("load")
    try:
        p = Protocol(rt, spec)
        vision_run = p.vision()
        stages.mark("vision")
        p.warm()
        stages.mark("first_answer")
        timed = answers(p, spec)
        return RuntimeRun(
            rt.identity(), load_s, llama_context=context, vision=vision_run, memory=stages.record(), **timed
        )
    finally:
        rt.close()
