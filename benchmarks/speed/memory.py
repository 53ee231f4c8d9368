"""Peak RSS per runtime, what each stage added, and what the memory probes measured other settings save."""

from __future__ import annotations

from typing import Any

from benchmarks.speed.config import SpeedConfig
from benchmarks.speed.measured import BundleFacts, Measured, MemoryRun, RuntimeRun
from benchmarks.speed.rows import FileRow, MemoryRow

#: tokens: a 729-token image + question + answer fits
RSS_CONTEXT = 1024
#: memory stages in the order they run, and how the report names them
MEMORY_STAGES = {"load": "loading", "vision": "the first vision encode", "first_answer": "the first answer"}

Source = tuple[str, str, RuntimeRun | None, str | None, str | None]


def _memory_sources(m: Measured, config: SpeedConfig) -> list[Source]:
    """(key, label, worker record, LM precision, vision precision) of every measured runtime."""
    dv, dl = config.deploy_vision, config.deploy_lm
    sources: list[Source] = [("torch-fp32", "PyTorch fp32", m.torch, None, None)]
    for q in config.all_quants:
        sources.append((f"exported-{q}-{dv}", f"exported {q} + {dv}", m.exported.get(q), q, dv))
    for v, entry in m.vision_variants.items():
        sources.append((f"exported-{dl}-{v}", f"exported {dl} + {v}", entry, dl, v))
    for name, entry in m.profiles.items():
        ident = entry.runtime
        label = f"profile {name} ({ident.get('lm')} + {ident.get('vision')})"
        sources.append((f"profile-{name}", label, entry, ident.get("lm"), ident.get("vision")))
    return sources


def memory_rows(m: Measured, config: SpeedConfig) -> list[MemoryRow]:
    """Peak RSS per runtime and what grew it: imports, loading, the vision run, the first answer."""
    return [
        memory_row(key, label, entry, entry.memory, lm, vision, m.manifest)
        for key, label, entry, lm, vision in _memory_sources(m, config)
        if entry and entry.memory
    ]


def memory_row(
    key: str,
    label: str,
    entry: RuntimeRun,
    memory: MemoryRun,
    lm: str | None,
    vision: str | None,
    manifest: BundleFacts,
) -> MemoryRow:
    after = memory.rss_after_mb
    base, peak = memory.baseline_rss_mb, memory.peak_rss_mb
    steps, previous = {}, base
    for stage in MEMORY_STAGES:
        if stage in after:
            steps[stage] = after[stage] - previous
            previous = after[stage]
    context = entry.llama_context or {}
    return MemoryRow(
        key=key,
        runtime=label,
        lm=lm,
        vision=vision,
        context_length=entry.runtime.get("context_length"),
        peak_rss_mb=peak,
        baseline_rss_mb=base,
        growth_mb=steps,
        transient_mb=max(0.0, peak - max([base, *after.values()])),
        lm_file_mb=manifest.lm[lm].bytes / 2**20 if lm else None,
        vision_file_mb=manifest.vision[vision].bytes / 2**20 if vision else None,
        llama_kv_mib=context.get("kv_buffer_mib"),
        llama_compute_mib=context.get("compute_buffer_mib"),
        llama_repack_mib=context.get("repack_mib"),
    )


def rss_savings(row: MemoryRow, probes: dict[str, Any] | None) -> list[tuple[str, float]]:
    """Measured savings (MB) of other settings for one exported runtime, from the memory probes."""
    out: list[tuple[str, float]] = []
    probes = probes or {}
    lean = probes.get("lean_imports_mb")
    if lean is not None and row.baseline_rss_mb > lean + 50:
        out.append(("imports without torch/transformers", row.baseline_rss_mb - lean))
    llama = probes.get("llama") or {}
    if "no_mmap" in llama and "no_repack" in llama:
        saved = llama["no_mmap"]["rss_growth_mb"] - llama["no_repack"]["rss_growth_mb"]
        if saved > 100:
            out.append(("llama.cpp load without weight repacking", saved))
    onnx = (probes.get("onnx") or {}).get(row.vision or "")
    if onnx:
        saved = onnx["default"]["rss_growth_mb"] - onnx["no_prepack"]["rss_growth_mb"]
        if saved > 0:
            out.append(("ONNX Runtime vision session without weight prepacking", saved))
    kv, ctx = row.llama_kv_mib, row.context_length
    if kv and ctx and ctx > RSS_CONTEXT:
        out.append((f"n_ctx {RSS_CONTEXT} instead of {ctx} (KV cache)", kv * (1 - RSS_CONTEXT / ctx)))
    return out


def _rss_facts(row: MemoryRow) -> list[str]:
    facts = []
    if row.lm_file_mb is not None:
        facts.append(f"GGUF {row.lm_file_mb:.0f} MB")
    if row.llama_repack_mib:
        facts.append(f"llama.cpp CPU_REPACK copies {row.llama_repack_mib:.0f} MiB")
    if row.llama_kv_mib is not None:
        facts.append(f"KV cache {row.llama_kv_mib:.0f} MiB at n_ctx {row.context_length}")
    if row.llama_compute_mib is not None:
        facts.append(f"compute buffer {row.llama_compute_mib:.0f} MiB")
    if row.vision_file_mb is not None:
        facts.append(f"ONNX file {row.vision_file_mb:.0f} MB")
    return facts


def rss_breakdown(row: MemoryRow, probes: dict[str, Any] | None = None) -> str:
    """The peak of one runtime by stage, its largest stage, its buffers and the measured savings."""
    growth = {k: v for k, v in row.growth_mb.items() if v is not None}
    parts = [f"imports {row.baseline_rss_mb:.0f} MB"]
    parts += [f"{MEMORY_STAGES.get(k, k)} +{v:.0f} MB" for k, v in growth.items()]
    if row.transient_mb:
        parts.append(f"transient +{row.transient_mb:.0f} MB")
    text = f"{row.runtime}: peak {row.peak_rss_mb:.0f} MB = " + ", ".join(parts)
    biggest = max(growth, key=lambda k: growth[k], default=None)
    if biggest:
        text += f"; {MEMORY_STAGES.get(biggest, biggest)} is the largest stage"
    text += " (" + "; ".join(_rss_facts(row)) + ")."
    savings = rss_savings(row, probes)
    if savings:
        projected = row.peak_rss_mb - sum(v for _, v in savings)
        text += " Measured savings: " + "; ".join(f"{what} -{mb:.0f} MB" for what, mb in savings)
        text += f"; together about {projected:.0f} MB."
    return text


def vision_growth(probes: dict[str, Any] | None, files: list[FileRow], precision: str) -> str:
    """How much ONNX Runtime grew loading one vision precision, next to its file size, when the growth
    is at least twice the file."""
    onnx = ((probes or {}).get("onnx") or {}).get(precision)
    size = next((f.mb for f in files if f.kind == "vision" and f.precision == precision), None)
    if not onnx or size is None:
        return ""
    grown = onnx["default"]["rss_growth_mb"]
    if grown < 2 * size:
        return ""
    return f" ONNX Runtime vision {precision}: +{grown:.0f} MB for a {size:.0f} MB file."
