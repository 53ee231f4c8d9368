"""One preset's section of ``speed.md``: its facts, targets and tables, rendered from its rows."""

from __future__ import annotations

from typing import Any

from benchmarks.speed.mix_report import mix_markdown
from benchmarks.speed.rows import LatencyRow, MemoryRow, PresetReport, VisionRow
from benchmarks.speed.text import Column, fmt, met_text, params, render, table


def _cosine(r: VisionRow) -> str:
    c = r.cosine_vs_torch
    return "-" if not c else f"{c.mean:.5f} / {c.min:.5f}"


def _first_stages(r: LatencyRow) -> str:
    return " / ".join(fmt(r.first_stages.get(k), 2) for k in ("image_encode_s", "prefill_s", "decode_s"))


def _growth(stage: str) -> Any:
    return lambda r: fmt(r.growth_mb.get(stage), 0)


def _llama_buffers(r: MemoryRow) -> str:
    return f"{fmt(r.llama_kv_mib, 0)} / {fmt(r.llama_compute_mib, 0)} / {fmt(r.llama_repack_mib, 0)}"


def _pct(value: float | None) -> str:
    return fmt(None if value is None else 100 * value, 0, "%")


TARGET_COLUMNS: list[Column] = [
    ("target", lambda t: t.description),
    ("goal", lambda t: t.goal),
    ("measured", lambda t: t.measured_text),
    ("met?", met_text),
]
VISION_COLUMNS: list[Column] = [
    ("encoder", lambda r: r.encoder),
    ("ms/image", lambda r: fmt(r.ms_per_image)),
    ("min-max", lambda r: f"{fmt(r.ms_min)}-{fmt(r.ms_max)}"),
    ("preprocess ms", lambda r: fmt(r.preprocess_ms)),
    ("speed-up vs PyTorch", lambda r: fmt(r.speedup_vs_torch, 2, "x")),
    ("cosine vs PyTorch (mean / min)", _cosine),
]
LM_COLUMNS: list[Column] = [
    ("runtime", lambda r: r.runtime),
    ("file MB", lambda r: fmt(r.file_mb, 0)),
    ("MB read/token", lambda r: fmt(r.mb_read_per_token, 0)),
    ("prefill tok/s", lambda r: fmt(r.prefill_tokens_per_s)),
    ("bare prefill", lambda r: fmt(r.bare_prefill_tokens_per_s)),
    ("overhead", lambda r: fmt(r.overhead_prefill_pct, 1, "%")),
    ("decode tok/s (Timings)", lambda r: fmt(r.decode_tokens_per_s, 2)),
    ("decode fwd/s", lambda r: fmt(r.decode_forward_per_s, 2)),
    ("bare decode fwd/s", lambda r: fmt(r.bare_decode_forward_per_s, 2)),
    ("overhead", lambda r: fmt(r.overhead_decode_pct, 1, "%")),
    ("roofline tok/s", lambda r: fmt(r.roofline_tokens_per_s, 2)),
    ("of roofline", lambda r: _pct(r.roofline_fraction)),
]
LATENCY_COLUMNS: list[Column] = [
    ("runtime", lambda r: r.runtime),
    ("threads", lambda r: r.threads),
    ("first TTFT s", lambda r: fmt(r.first_ttft_s, 3)),
    ("first total s", lambda r: fmt(r.first_total_s, 3)),
    ("first: vision / prefill / decode s", _first_stages),
    ("vs PyTorch", lambda r: fmt(r.first_speedup_vs_torch, 2, "x")),
    ("second TTFT s", lambda r: fmt(r.second_ttft_s, 3)),
    ("second total s", lambda r: fmt(r.second_total_s, 3)),
    ("TTFT speed-up (reuse)", lambda r: fmt(r.reuse_ttft_speedup, 1, "x")),
]
THROUGHPUT_COLUMNS: list[Column] = [
    ("runtime", lambda r: r.runtime),
    ("questions", lambda r: r.questions),
    ("images", lambda r: r.images),
    ("seconds", lambda r: fmt(r.seconds)),
    ("questions/min", lambda r: fmt(r.questions_per_minute, 2)),
    ("median s/question", lambda r: fmt(r.median_question_s, 2)),
]
MEMORY_COLUMNS: list[Column] = [
    ("runtime", lambda r: r.runtime),
    ("peak RSS MB", lambda r: fmt(r.peak_rss_mb, 0)),
    ("imports MB", lambda r: fmt(r.baseline_rss_mb, 0)),
    ("+ load", _growth("load")),
    ("+ vision run", _growth("vision")),
    ("+ first answer", _growth("first_answer")),
    ("transient", lambda r: fmt(r.transient_mb, 0)),
    ("GGUF / ONNX file MB", lambda r: f"{fmt(r.lm_file_mb, 0)} / {fmt(r.vision_file_mb, 0)}"),
    ("llama.cpp KV / compute / repack MiB", _llama_buffers),
]
SWEEP_COLUMNS: list[Column] = [
    ("threads", lambda r: r.threads),
    ("vision ms", lambda r: fmt(r.vision_ms)),
    ("prefill tok/s", lambda r: fmt(r.prefill_tokens_per_s)),
    ("decode fwd/s", lambda r: fmt(r.decode_forward_per_s, 2)),
    ("first TTFT s", lambda r: fmt(r.ttft_s, 3)),
    ("first total s", lambda r: fmt(r.total_s, 3)),
]
FILE_COLUMNS: list[Column] = [
    ("kind", lambda r: r.kind),
    ("precision", lambda r: r.precision),
    ("file", lambda r: r.file),
    ("MB", lambda r: fmt(r.mb, 1)),
    ("export / quantize s", lambda r: fmt(r.export_seconds, 1)),
]

#: what a table's figures mean, under the table
LEGENDS = {
    "Language model (one image + question, prompt incl. image embeddings)": (
        "`decode tok/s (Timings)` is n answer tokens / decode time; `fwd/s` counts forward passes "
        "(n - 1: the first answer token comes from the prefill) and is what bare llama.cpp and the "
        "roofline are compared with."
    ),
    "Peak memory (each runtime in its own process)": (
        "RSS counts the mmapped GGUF pages once they are read. `+ stage` is the growth of the process's "
        "RSS over that stage."
    ),
}


def preset_markdown(preset: str, s: PresetReport) -> list[str]:
    """The section of one preset: facts, targets, then one table per measurement."""
    cfg = s.raw["config"]
    lines = [f"## {preset}", "", model_line(s), ""]
    lines += [f"- {n}" for n in s.notes]
    lines += [
        "",
        f"![speed chart]({s.chart or ''})",
        "",
        "### Targets",
        "",
        render(TARGET_COLUMNS, s.targets),
    ]
    misses = [t for t in s.targets if t.met is False]
    if misses:
        lines += ["", "What held the missed targets back:", ""]
        lines += [f"- **{t.description}**: {t.holds_back}" for t in misses]
    sections = [
        ("Vision encoder (ms per image, incl. preprocessing)", VISION_COLUMNS, s.vision),
        ("Language model (one image + question, prompt incl. image embeddings)", LM_COLUMNS, s.lm),
        ("Latency: one image + a benchmark question + answer", LATENCY_COLUMNS, s.latency),
        ("Benchmark throughput", THROUGHPUT_COLUMNS, s.throughput),
        ("Peak memory (each runtime in its own process)", MEMORY_COLUMNS, s.memory),
    ]
    for title, columns, rows in sections:
        lines += ["", f"### {title}", "", render(columns, rows)]
        lines += ["", LEGENDS[title]] if title in LEGENDS else []
    lines += mix_markdown(s)
    lines += probes_markdown(s.memory_probes)
    if s.sweep:
        title = f"Thread sweep (exported {cfg['deploy_lm']} + {cfg['deploy_vision']})"
        lines += ["", f"### {title}", "", render(SWEEP_COLUMNS, s.sweep)]
    lines += [
        "",
        "### Files, export and quantize times",
        "",
        render(FILE_COLUMNS, s.files),
        "",
        timings_line(s),
    ]
    if s.errors:
        lines += ["", "### Errors", ""] + [f"- {e['task']}: {e['error']}" for e in s.errors]
    return lines


def model_line(s: PresetReport) -> str:
    model, cfg, exp = s.model, s.raw["config"], s.export
    bundle = "exported in this run" if exp.exported_now else f"from the cache (exported {exp.exported_at})"
    return (
        f"Model: {model.source} weights, {model.image_tokens} image tokens ({model.image_size} px), "
        f"LM {params(model.lm_parameters)} parameters, {model.lm_layers} layers, "
        f"width {model.embedding_width}, vocab {model.vocab_size}. Threads {cfg['threads']}, "
        f"{cfg['runs']} runs after {cfg['warmup']} warm-up, {cfg['answer_tokens']} answer tokens. "
        f"Bundle {bundle}: `{exp.cache_entry}`."
    )


def timings_line(s: PresetReport) -> str:
    build, bt = s.export.build or {}, s.export.bundle_timings or {}
    text = "Bundle timings: " + (", ".join(f"{k} {v:.1f}s" for k, v in bt.items()) or "-")
    if build:
        text += "; random model build: " + ", ".join(
            f"{k} {v}" for k, v in build.items() if k.endswith("seconds")
        )
    return text + ". Quantize times are llama.cpp's quantizer from the f16 base."


def probes_markdown(probes: dict[str, Any] | None) -> list[str]:
    """The memory probes: each component alone, with the default and the leaner setting."""
    if not probes:
        return []
    rows = [
        ["imports of the exported runtime without torch/transformers", fmt(probes["lean_imports_mb"], 0), ""]
    ]
    for mode, r in (probes.get("llama") or {}).items():
        note = f"CPU_REPACK {fmt(r.get('repack_mib'), 0)} MiB" if r.get("repack_mib") else ""
        rows.append([f"llama.cpp model load, {mode.replace('_', ' ')}", fmt(r["rss_growth_mb"], 0), note])
    for precision, modes in (probes.get("onnx") or {}).items():
        for mode, r in modes.items():
            setting = "prepacked weights" if mode == "default" else "no prepacking"
            run = f"batch-1 run {fmt(r['run_s'], 2)} s"
            rows.append([f"ONNX Runtime vision {precision}, {setting}", fmt(r["rss_growth_mb"], 0), run])
    return [
        "",
        "Memory probes (each component alone, in its own process):",
        "",
        table(["component", "MB", "note"], rows),
    ]
