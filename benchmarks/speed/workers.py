"""The measurements, each run in its own process (:func:`benchmarks.speed.isolate.run_isolated`).

Every figure comes from the runtimes users run: ``TorchRuntime`` / ``ExportedRuntime`` built as
``imp chat`` builds them and asked through ``Runtime.generate`` (greedy, a fixed number of answer
tokens: ``ignore_stop=True``), with the runtime's own :class:`~runtimes.base.Timings`. The one
reference that is not a runtime of this project is *bare llama.cpp*: the same GGUF file in a
bare llama.cpp context (llama-cpp-python's low-level API: ``llama_decode`` only) with the runtime's context
settings, run interleaved with the runtime so both see the same machine load.

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

import logging
import re
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.speed.rows import Limits

log = logging.getLogger(__name__)


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


def summary(values: Sequence[float]) -> dict[str, Any]:
    """Median (the reported figure), spread and the raw values."""
    vals = [float(v) for v in values]
    if not vals:
        return {"median": None, "min": None, "max": None, "n": 0, "values": []}
    return {
        "median": statistics.median(vals),
        "min": min(vals),
        "max": max(vals),
        "n": len(vals),
        "values": [round(v, 6) for v in vals],
    }


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


def collect(records: Sequence[dict[str, Any]], keys: Sequence[str]) -> dict[str, Any]:
    return {k: summary([r[k] for r in records]) for k in keys}


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

    def vision(self, label: str | None = None) -> dict[str, Any]:
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
        out: dict[str, Any] = {
            "ms_per_image": summary(encode_ms),
            "preprocess_ms": summary(preprocess_ms),
            "feature_shape": list(probe[0].shape),
        }
        if label is not None:
            path = Path(spec.features_dir) / f"{label}.npy"
            path.parent.mkdir(parents=True, exist_ok=True)
            np.save(path, np.stack(probe))
            out["features"] = str(path)
        return out

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

    def throughput(self, reuse: bool) -> dict[str, Any]:
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
        return {
            "reuse": reuse,
            "questions": len(records),
            "images": spec.throughput_images,
            "seconds": seconds,
            "questions_per_minute": 60.0 * len(records) / seconds,
            "per_question": collect(records, ("total_s", "ttft_s", "reused_tokens", "prefill_tokens")),
        }

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

    def to_dict(self) -> dict[str, Any]:
        from runtimes.base import peak_rss_mb

        return {
            "baseline_rss_mb": self.baseline,
            "rss_after_mb": dict(self.after),
            "peak_rss_mb": peak_rss_mb(),
        }


# ------------------------------------------------------------------------------------ llama.cpp
class LlamaLogGrep(logging.Handler):
    """Reads what llama.cpp says about the context it made (through ``export.llama_cpp``'s log)."""

    PATTERNS = {
        "n_ctx": re.compile(r"llama_context: n_ctx\s+=\s+(\d+)"),
        "n_batch": re.compile(r"llama_context: n_batch\s+=\s+(\d+)"),
        "n_ubatch": re.compile(r"llama_context: n_ubatch\s+=\s+(\d+)"),
        "flash_attn": re.compile(r"Flash Attention (enabled|disabled)"),
        "kv_buffer_mib": re.compile(r"KV buffer size\s+=\s+([\d.]+) MiB"),
        "compute_buffer_mib": re.compile(r"compute buffer size\s+=\s+([\d.]+) MiB"),
        "output_buffer_mib": re.compile(r"output buffer size\s+=\s+([\d.]+) MiB"),
        "repack_mib": re.compile(r"CPU_REPACK model buffer size\s+=\s+([\d.]+) MiB"),
    }

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.found: dict[str, Any] = {}

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        for key, pattern in self.PATTERNS.items():
            m = pattern.search(text)
            if m and key not in self.found:
                value = m.group(1)
                if key == "flash_attn":
                    self.found[key] = value == "enabled"
                else:
                    self.found[key] = float(value) if key.endswith("_mib") else int(value)

    def __enter__(self) -> LlamaLogGrep:
        self._logger = logging.getLogger("export.llama_cpp")
        self._saved = (self._logger.level, self._logger.propagate)
        self._logger.setLevel(logging.DEBUG)
        self._logger.propagate = False  # read it, do not print it
        self._logger.addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        self._logger.removeHandler(self)
        self._logger.setLevel(self._saved[0])
        self._logger.propagate = self._saved[1]


class BareLlama:
    """The same GGUF in a bare llama.cpp context (:class:`~export.llama_session.LlamaSession`, the
    low-level API): ``llama_decode`` of a prompt, then one token at a time; no prompt building, no vision.
    """

    def __init__(self, path: Path, threads: int, n_ctx: int, n_batch: int, n_ubatch: int, flash_attn: bool):
        from export.llama_session import LlamaSession

        self.settings = {
            "n_ctx": n_ctx,
            "n_batch": n_batch,
            "n_ubatch": n_ubatch,
            "threads": threads,
            "flash_attn": flash_attn,
        }
        self.llm = LlamaSession(
            path, n_ctx=n_ctx, n_threads=threads, n_batch=n_batch, n_ubatch=n_ubatch, flash_attn=flash_attn,
            use_mmap=True,
        )  # fmt: skip
        self.n_vocab = self.llm.n_vocab

    def run(self, n_prompt: int, n_decode: int) -> dict[str, Any]:
        llm = self.llm
        prompt = [(17 + 31 * i) % min(self.n_vocab, 50000) for i in range(n_prompt)]
        llm.reset()
        started = time.perf_counter()
        llm.eval_tokens(prompt)
        prefill_s = time.perf_counter() - started
        started = time.perf_counter()
        for _ in range(n_decode):
            llm.eval_tokens([prompt[-1]])
        decode_s = time.perf_counter() - started
        return {
            "prefill_tokens": n_prompt,
            "prefill_s": prefill_s,
            "prefill_tokens_per_s": n_prompt / prefill_s,
            "decode_forward": n_decode,
            "decode_s": decode_s,
            "decode_forward_per_s": n_decode / decode_s,
        }

    def close(self) -> None:
        self.llm.close()


# ------------------------------------------------------------------------------------ workers
def measure_limits(bandwidth_mb: int, thread_counts: Sequence[int]) -> Limits:
    """Memory bandwidth (array copy) at each thread count."""
    from benchmarks.speed.machine import memory_bandwidth

    return Limits(bandwidth=[memory_bandwidth(bandwidth_mb, t) for t in thread_counts])


def measure_torch(spec: WorkerSpec) -> dict[str, Any]:
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
        firsts, seconds = [], []
        for r in range(spec.runs):
            firsts.append(p.first(spec.warmup + r))
            seconds.append(p.second(spec.warmup + r))
        memory = stages.to_dict()
        throughput = p.throughput(reuse=False)
        return {
            "runtime": rt.identity(),
            "load_s": load_s,
            "vision": vision,
            "first": collect(firsts, FIRST_KEYS),
            "second": collect(seconds, FIRST_KEYS),
            "throughput": throughput,
            "memory": memory,
        }
    finally:
        rt.close()


def open_exported(spec: WorkerSpec, threads: int | None, **options: Any) -> tuple[Any, dict[str, Any], float]:
    """An ``ExportedRuntime`` as ``imp chat`` opens it (files not re-hashed), what llama.cpp made, load time."""
    from runtimes.exported import ExportedRuntime

    started = time.perf_counter()
    with LlamaLogGrep() as grep:
        rt = ExportedRuntime(spec.bundle, threads=threads, verify=False, **options)
    return rt, dict(grep.found), time.perf_counter() - started


def measure_exported(
    spec: WorkerSpec, lm: str, vision: str, deploy: bool, sweep: Sequence[int]
) -> dict[str, Any]:
    """One LM precision with the deployment vision encoder, against bare llama.cpp on the same file.

    Peak RSS is read before bare llama.cpp is loaded; then runtime and bare runs alternate. The
    deployment pair also runs the throughput set (with reuse) and the thread sweep.
    """

    stages = MemoryStages()
    rt, context, load_s = open_exported(spec, spec.threads, lm=lm, vision=vision)
    stages.mark("load")
    out: dict[str, Any] = {"runtime": rt.identity(), "load_s": load_s, "llama_context": context}
    bare = None
    try:
        p = Protocol(rt, spec)
        out["vision"] = p.vision(f"onnx-{vision}") if deploy else None
        stages.mark("vision")
        warm = p.warm()
        stages.mark("first_answer")
        out["memory"] = stages.to_dict()
        bare = BareLlama(
            Path(spec.bundle) / rt.manifest["lm"][lm]["file"],
            threads=spec.threads,
            n_ctx=int(context.get("n_ctx", rt.context_length)),
            n_batch=int(context.get("n_batch", max(512, rt.num_image_tokens))),
            n_ubatch=int(context.get("n_ubatch", 512)),
            flash_attn=bool(context.get("flash_attn", True)),
        )
        out["bare_settings"] = bare.settings
        firsts, seconds, bares = [], [], []
        # bare llama.cpp evaluates a prompt as long as the runtime's and decodes as many tokens
        n_prompt, n_decode = int(warm["prefill_tokens"]), spec.answer_tokens - 1
        for _ in range(spec.warmup):
            bare.run(n_prompt, n_decode)
        for r in range(spec.runs):
            firsts.append(p.first(spec.warmup + r))
            seconds.append(p.second(spec.warmup + r))
            bares.append(bare.run(n_prompt, n_decode))
        out["first"] = collect(firsts, FIRST_KEYS)
        out["second"] = collect(seconds, FIRST_KEYS)
        out["bare"] = collect(
            bares, ("prefill_tokens_per_s", "decode_forward_per_s", "prefill_s", "decode_s")
        )
        bare.close()
        bare = None
        if deploy:
            out["throughput"] = p.throughput(reuse=True)
    finally:
        if bare is not None:
            bare.close()
        rt.close()
    if deploy:
        out["sweep"] = [sweep_point(spec, t, lm, vision) for t in sweep if t != spec.threads]
    return out


def sweep_point(spec: WorkerSpec, threads: int, lm: str, vision: str) -> dict[str, Any]:
    """Vision ms and first-answer figures at ``threads`` threads (a fresh runtime)."""
    rt, _, _ = open_exported(spec, threads, lm=lm, vision=vision)
    try:
        p = Protocol(rt, spec)
        vis = p.vision()
        p.warm()
        firsts = [p.first(spec.warmup + r) for r in range(spec.runs)]
        return {"threads": threads, "vision": vis, "first": collect(firsts, FIRST_KEYS)}
    finally:
        rt.close()


def measure_vision_variant(spec: WorkerSpec, lm: str, vision: str) -> dict[str, Any]:
    """An ONNX vision precision (with the deployment LM): encode ms, features, and the pair's peak RSS."""
    stages = MemoryStages()
    rt, context, load_s = open_exported(spec, spec.threads, lm=lm, vision=vision)
    stages.mark("load")
    try:
        p = Protocol(rt, spec)
        out = {"runtime": rt.identity(), "load_s": load_s, "llama_context": context}
        out["vision"] = p.vision(f"onnx-{vision}")
        stages.mark("vision")
        out["first"] = collect([p.warm()], FIRST_KEYS)
        stages.mark("first_answer")
        out["memory"] = stages.to_dict()
        return out
    finally:
        rt.close()


def measure_profile(spec: WorkerSpec, profile: str) -> dict[str, Any]:
    """A device profile exactly as ``imp chat --profile`` loads it (its threads, precisions, context)."""
    stages = MemoryStages()
    rt, context, load_s = open_exported(spec, None, profile=profile)
    stages.mark("load")
    try:
        p = Protocol(rt, spec)
        out: dict[str, Any] = {"runtime": rt.identity(), "load_s": load_s, "llama_context": context}
        out["vision"] = p.vision()
        stages.mark("vision")
        p.warm()
        stages.mark("first_answer")
        firsts, seconds = [], []
        for r in range(spec.runs):
            firsts.append(p.first(spec.warmup + r))
            seconds.append(p.second(spec.warmup + r))
        out["first"] = collect(firsts, FIRST_KEYS)
        out["second"] = collect(seconds, FIRST_KEYS)
        out["memory"] = stages.to_dict()
        return out
    finally:
        rt.close()


# ------------------------------------------------------------------------------------ memory probes
#: What a process that runs only the exported runtime has to import (no torch, no transformers).
LEAN_IMPORTS = "import numpy, PIL.Image, tokenizers, onnxruntime, llama_cpp"


def probe_lean_imports_mb() -> float:
    """RSS of a fresh interpreter that imports only what the exported runtime uses (subprocess)."""
    import subprocess
    import sys

    code = f"{LEAN_IMPORTS}; import psutil; print(psutil.Process().memory_info().rss / 2**20)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(done.stdout.strip().splitlines()[-1])


def probe_llama_model_mb(path: str, mode: str) -> dict[str, Any]:
    """RSS growth while llama.cpp loads a GGUF: ``default`` (mmap + weight repacking), ``no_mmap``
    (read into memory) or ``no_repack`` (mmap, no CPU_REPACK copies)."""
    from export.llama_session import llama_cpp_module
    from runtimes.base import peak_rss_mb

    lib = llama_cpp_module()
    before = current_rss_mb()
    params = lib.llama_model_default_params()
    if mode == "no_mmap":
        params.load_mode = lib.LLAMA_LOAD_MODE_NONE
    elif mode == "no_repack":
        params.use_extra_bufts = False
    with LlamaLogGrep() as grep:
        model = lib.llama_model_load_from_file(path.encode(), params)
    try:
        return {
            "mode": mode,
            "rss_growth_mb": peak_rss_mb() - before,
            "repack_mib": grep.found.get("repack_mib"),
        }
    finally:
        lib.llama_model_free(model)


def probe_onnx_session_mb(path: str, threads: int, prepack: bool) -> dict[str, Any]:
    """RSS growth of an ONNX Runtime session of the vision graph and one batch-1 run."""
    import onnxruntime as ort

    from runtimes.base import peak_rss_mb

    before = current_rss_mb()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    if not prepack:
        options.add_session_config_entry("session.disable_prepacking", "1")
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    loaded = current_rss_mb() - before
    inp = session.get_inputs()[0]
    size = int(inp.shape[-1])
    started = time.perf_counter()
    session.run(None, {inp.name: np.zeros((1, 3, size, size), np.float32)})
    return {
        "prepack": prepack,
        "session_mb": loaded,
        "rss_growth_mb": peak_rss_mb() - before,
        "run_s": time.perf_counter() - started,
    }
