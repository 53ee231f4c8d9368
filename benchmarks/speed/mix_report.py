"""The question-mix section of a speed report: throughput against both peers, memory, rates, targets.

Reads the runs :mod:`benchmarks.speed.mix` measured (``raw["mix"]``) and the float32 matmul peak
(``raw["matmul"]``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks.speed.mix import MODE_LABELS, MixRun

if TYPE_CHECKING:
    from benchmarks.speed.rows import PresetReport

MIX_HEADERS = (
    "runtime", "questions/min", "vs PyTorch", "vs libmtmd reuse", "first TTFT s",
    "later same-image TTFT s", "first / later", "peak RSS MB", "answered / questions",
)  # fmt: skip
MEMORY_HEADERS = (
    "runtime", "RSS before open (imports)", "open adds", "peak RSS", "n_ctx", "KV cache MiB",
    "compute buffers MiB", "repacked weights MiB",
)  # fmt: skip
RATE_HEADERS = (
    "runtime", "prompt tokens", "prefill tok/s", "prefill GFLOP/s", "matmul peak", "of peak",
    "decode forward/s", "decode roofline tok/s", "of roofline",
)  # fmt: skip


def mix_runs(raw: dict[str, Any]) -> dict[str, MixRun]:
    """The mix runs of one preset's ``raw`` measurements, by mode."""
    return {mode: MixRun.from_dict(run) for mode, run in (raw.get("mix") or {}).items()}


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def mix_markdown(report: PresetReport) -> list[str]:
    """The question-mix tables of one preset (nothing when the mix was not measured)."""
    from benchmarks.speed.text import fmt, table

    raw = report.raw
    runs = mix_runs(raw)
    if not runs:
        return []
    base = {m: r.questions_per_minute for m, r in runs.items()}
    rows = []
    for mode, r in runs.items():
        first, later = r.first_ttft_s.median, r.later_ttft_s.median
        rows.append([
            MODE_LABELS[mode], fmt(r.questions_per_minute, 2),
            fmt(_ratio(r.questions_per_minute, base.get("torch")), 2, "x"),
            fmt(_ratio(r.questions_per_minute, base.get("native-reuse")), 2, "x"),
            fmt(first, 2), fmt(later, 3), fmt(_ratio(first, later), 1, "x"),
            fmt(r.peak_rss_mb, 0), f"{r.answered} / {r.questions}",
        ])  # fmt: skip
    some = next(iter(runs.values()))
    mix = ", ".join(f"{name} {n}" for name, n, *_ in some.groups)
    return [
        "",
        "### Benchmark throughput on the real question mix",
        "",
        f"One photo per benchmark with its mean question count from the real question files ({mix}).",
        "",
        table(MIX_HEADERS, rows),
        "",
        "One-at-a-time runtimes answer a sample of each photo's questions; the rest of the group is "
        "extrapolated from them (first question, then the mean of the later ones).",
        "",
        table(MEMORY_HEADERS, [_memory_row(mode, r) for mode, r in runs.items()]),
        "",
        "RSS in MB (each way in its own process); llama.cpp buffers in MiB as its log reports them "
        "(weights read into memory, KV cache of n_ctx positions, compute buffers); what the runtime adds "
        "at open beyond llama.cpp's buffers is the vision side (ONNX Runtime session, mmproj or PyTorch).",
        *rates_markdown(report, runs),
    ]


def rates_markdown(report: PresetReport, runs: dict[str, MixRun]) -> list[str]:
    """Each way's first-answer prefill against the measured matmul peak, its decode against the
    bandwidth roofline (the LM's weights read once per decoded token)."""
    from benchmarks.speed.machine import gguf_decode_bytes
    from benchmarks.speed.text import fmt, table
    from export.quant_types import quant_type

    raw, params = report.raw, report.model.lm_parameters or 0
    deploy = raw["config"]["deploy_lm"]
    measured = raw.get("matmul") or {}
    q = quant_type(deploy)
    gguf_peak = (
        ("int8", measured.get("int8_gops")) if q and q.integer_dot else ("float32", measured.get("gflops"))
    )
    lm = raw["manifest"]["lm"].get(deploy)
    gguf_bytes = (
        gguf_decode_bytes(Path(raw["prepared"]["bundle"]) / lm["file"]).bytes_per_token if lm else None
    )
    bandwidth = report.bandwidth_gb_per_s
    rows = []
    for mode, r in runs.items():
        w = r.warm or {}
        prefill, decode = w.get("prefill_tokens_per_s"), w.get("decode_forward_per_s")
        gflops = 2 * params * prefill / 1e9 if prefill and params else None
        kind, peak = ("float32", measured.get("gflops")) if mode == "torch" else gguf_peak
        per_token = 4 * params if mode == "torch" else gguf_bytes
        roof = bandwidth * 1e9 / per_token if bandwidth and per_token else None
        rows.append([
            MODE_LABELS[mode], fmt(w.get("prefill_tokens"), 0), fmt(prefill, 1), fmt(gflops, 1),
            f"{kind} {fmt(peak, 0)}", fmt(100 * gflops / peak if gflops and peak else None, 0, "%"),
            fmt(decode, 2), fmt(roof, 2), fmt(100 * decode / roof if decode and roof else None, 0, "%"),
        ])  # fmt: skip
    return [
        "",
        table(RATE_HEADERS, rows),
        "",
        f"First answer of each way (its warm-up, nothing reused). Prefill GFLOP/s = 2 x {params:,} LM "
        f"parameters x tokens/s, against the machine's measured matmul peak for the arithmetic the way "
        f"runs ({raw['config']['threads']} threads, n = {measured.get('n', '-')}): float32 for PyTorch fp32 "
        f"and float GGUFs, int8 dot products with int32 sums for llama.cpp's quantized types ({deploy} "
        f"multiplies its blocks with 8-bit activations). Decode roofline = copy bandwidth "
        f"({fmt(bandwidth, 2)} GB/s) / bytes of weights read per token (GGUF {deploy}, PyTorch fp32).",
    ]


def _memory_row(mode: str, r: MixRun) -> list[str]:
    from benchmarks.speed.text import fmt

    c = r.llama_context or {}
    opened = (
        None if r.loaded_rss_mb is None or r.baseline_rss_mb is None else r.loaded_rss_mb - r.baseline_rss_mb
    )
    return [
        MODE_LABELS[mode], fmt(r.baseline_rss_mb, 0), fmt(opened, 0), fmt(r.peak_rss_mb, 0),
        fmt(c.get("n_ctx"), 0), fmt(c.get("kv_buffer_mib"), 0), fmt(c.get("compute_buffer_mib"), 0),
        fmt(c.get("repack_mib"), 0),
    ]  # fmt: skip


def mix_verdicts(raw: dict[str, Any], lm_parameters: int | None) -> list[Any]:
    """The engine against both peers, its TTFT ratio and its peak RSS (3B only)."""
    from benchmarks.speed.targets import RSS_TARGET_MIN_PARAMS, verdict

    runs = mix_runs(raw)
    engine = runs.get("engine")
    if engine is None:
        return []
    out = []
    for key, peer in (("mix_vs_torch", "torch"), ("mix_vs_llamacpp", "native-reuse")):
        other = runs.get(peer)
        value = _ratio(engine.questions_per_minute, other.questions_per_minute if other else None)
        text = f"{value or 0:.2f}x ({engine.questions_per_minute:.2f} vs {other.questions_per_minute if other else 0:.2f} q/min)"
        out.append(verdict(key, value, text, photo_bound(engine, other, peer) if other else ""))
    first, later = engine.first_ttft_s.median, engine.later_ttft_s.median
    ratio = _ratio(first, later)
    why = (
        f"a first question's TTFT ({first or 0:.2f}s) encodes its image and prefills its prefix; a later "
        f"one's ({later or 0:.3f}s) prefills its own tokens on the cached prefix and decodes its first"
    )
    out.append(verdict("mix_ttft", ratio, f"{ratio or 0:.1f}x ({first or 0:.2f}s -> {later or 0:.3f}s)", why))
    applies = (lm_parameters or 0) >= RSS_TARGET_MIN_PARAMS
    n_ctx = engine.runtime.get("context_length")
    rss_text = f"{engine.peak_rss_mb:.0f} MB (n_ctx {n_ctx})"
    vision = raw["manifest"]["vision"].get(raw["config"]["deploy_vision"]) or {}
    parts = rss_parts(engine, vision.get("bytes", 0) / 1e6)
    out.append(verdict("mix_rss", engine.peak_rss_mb, rss_text, parts, applies=applies))
    return out


def photo_bound(engine: MixRun, other: MixRun, peer: str) -> str:
    """The most the engine could gain on ``other`` if its questions cost nothing: each photo's own work
    (image encode and the first prompt's prefill, as the engine's first answer measured) stays."""
    w = engine.warm or {}
    encode, prefill = w.get("image_encode_s") or 0.0, w.get("prefill_s") or 0.0
    photos = len(engine.groups)
    fixed = photos * (encode + prefill)
    if not fixed:
        return f"{MODE_LABELS[peer]}: {other.seconds:.0f} s for the mix, the engine {engine.seconds:.0f} s"
    return (
        f"each photo's own work (image encode {encode:.1f} s + {int(w.get('prefill_tokens') or 0):,}-token "
        f"prompt prefill {prefill:.1f} s) is {fixed:.0f} s of the engine's {engine.seconds:.0f} s for "
        f"{photos} photos; {MODE_LABELS[peer]} takes {other.seconds:.0f} s, so with every question free "
        f"the engine would reach {other.seconds / fixed:.2f}x; its {engine.questions} questions take "
        f"{engine.seconds - fixed:.0f} s"
    )


def rss_parts(run: MixRun, vision_mb: float) -> str:
    """What a run's peak RSS is made of: llama.cpp's buffers as its log gives them, the rest (vision
    session and its working memory, interpreter) as the remainder, and the floor no context size
    can go under: both weight files and the KV cache of the image prompt."""
    c = run.llama_context or {}
    weights = (c.get("model_mib") or 0) + (c.get("repack_mib") or 0)
    kv, compute, n_ctx = c.get("kv_buffer_mib"), c.get("compute_buffer_mib") or 0, c.get("n_ctx")
    if not (weights and kv and n_ctx):
        return "weights, the KV cache and compute buffers: see the peak memory table"
    mb = 2**20 / 1e6
    prefix = int((run.warm or {}).get("prefill_tokens") or 0)
    prefix_kv = kv * min(prefix, n_ctx) / n_ctx
    rest = run.peak_rss_mb - (weights + kv + compute) * mb
    return (
        f"LM weights {weights * mb:,.0f} MB, KV cache {kv * mb:,.0f} MB for {n_ctx:,} positions, compute "
        f"buffers {compute * mb:,.0f} MB; the vision session ({vision_mb:,.0f} MB file) with its working "
        f"memory and the interpreter {rest:,.0f} MB. Both weight files and the KV cache of the "
        f"{prefix:,}-token image prompt alone take {(weights + prefix_kv) * mb + vision_mb:,.0f} MB"
    )
