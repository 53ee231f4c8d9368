"""The model's facts, its files, and the two encoders' rows: vision encode and LM prefill / decode."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmarks.speed.config import SpeedConfig
from benchmarks.speed.machine import kv_bytes_per_token
from benchmarks.speed.measured import BundleFacts, Measured, RuntimeRun, VisionRun, med
from benchmarks.speed.rows import (
    Bandwidth,
    Cosine,
    DecodeBytes,
    ExportFacts,
    FileRow,
    LmRow,
    ModelFacts,
    VisionRow,
)
from benchmarks.speed.stats import pct_overhead, ratio


def model_facts(m: Measured, decode_bytes: dict[str, DecodeBytes]) -> ModelFacts:
    model = m.manifest.model
    any_lm = next(iter(decode_bytes.values()), None)
    return ModelFacts(
        preset=m.config["preset"],
        source=m.prepared["source"],
        id=model.id,
        image_tokens=model.image_tokens,
        image_size=model.image_size,
        embedding_width=model.embedding_width,
        vocab_size=model.vocab_size,
        context_length=model.context_length,
        lm_parameters=None if any_lm is None else any_lm.parameters,
        lm_layers=None if any_lm is None else any_lm.layers,
    )


def file_rows(manifest: BundleFacts) -> list[FileRow]:
    return [
        FileRow(kind, precision, a.file, a.bytes / 2**20, a.export_seconds)
        for kind, files in (("vision", manifest.vision), ("lm", manifest.lm))
        for precision, a in files.items()
    ]


def export_facts(m: Measured) -> ExportFacts:
    prepared = m.prepared
    return ExportFacts(
        built_now=prepared["built_now"],
        exported_now=prepared["exported_now"],
        exported_at=m.manifest.created,
        build=prepared.get("build", {}),
        bundle_timings=m.manifest.timings,
        cache_entry=prepared["cache_entry"],
    )


# ------------------------------------------------------------------------------------ vision
def cosines(a_path: str | None, b_path: str | None) -> Cosine | None:
    """Token cosines of two saved feature arrays (None when either is missing or shapes differ)."""
    from export.onnx_vision import token_cosines

    if not a_path or not b_path or not Path(a_path).is_file() or not Path(b_path).is_file():
        return None
    a, b = np.load(a_path), np.load(b_path)
    if a.shape != b.shape:
        return None
    cos = token_cosines(a, b)
    return Cosine(mean=float(cos.mean()), min=float(cos.min()))


def _vision_sources(m: Measured, config: SpeedConfig) -> list[tuple[str, str, VisionRun | None]]:
    """(key, label, vision measurement) of PyTorch and each ONNX precision."""
    sources = [("torch-fp32", "PyTorch fp32", m.torch.vision if m.torch else None)]
    for v in config.vision:
        deploy = v == config.deploy_vision
        run = m.exported.get(config.deploy_lm) if deploy else m.vision_variants.get(v)
        sources.append((f"onnx-{v}", f"ONNX {v}", run.vision if run else None))
    return sources


def vision_rows(m: Measured, config: SpeedConfig) -> list[VisionRow]:
    sources = _vision_sources(m, config)
    torch_vision = sources[0][2]
    ref_ms = None if torch_vision is None else torch_vision.ms_per_image.median
    ref_features = None if torch_vision is None else torch_vision.features
    fp32 = next((s[2] for s in sources if s[0] == "onnx-fp32"), None)
    fp32_features = None if fp32 is None else fp32.features
    rows = []
    for key, label, vis in sources:
        if not vis:
            continue
        ms = vis.ms_per_image.median
        rows.append(
            VisionRow(
                key=key,
                encoder=label,
                ms_per_image=ms,
                ms_min=vis.ms_per_image.min,
                ms_max=vis.ms_per_image.max,
                preprocess_ms=vis.preprocess_ms.median,
                speedup_vs_torch=ratio(ref_ms, ms),
                cosine_vs_torch=cosines(vis.features, ref_features),
                cosine_vs_onnx_fp32=cosines(vis.features, fp32_features),
            )
        )
    return rows


# ------------------------------------------------------------------------------------ LM
def lm_rows(
    m: Measured, config: SpeedConfig, decode_bytes: dict[str, DecodeBytes], bw: Bandwidth | None
) -> list[LmRow]:
    """PyTorch fp32 and each GGUF quant: rates, bare llama.cpp on the same file, the roofline."""
    gb_s = None if bw is None else bw.gb_per_s * 1e9
    any_lm = next(iter(decode_bytes.values()), None)
    rows = []
    if m.torch:
        per_token = None if any_lm is None else 4 * any_lm.elements_per_token  # fp32 weights
        rows.append(_lm_row("torch-fp32", "PyTorch fp32", m.torch, per_token, None, gb_s, any_lm))
    for q in config.all_quants:
        entry = m.exported.get(q)
        if not entry:
            continue
        facts = decode_bytes.get(q)
        per_token = None if facts is None else facts.bytes_per_token
        file_bytes = m.manifest.lm[q].bytes
        rows.append(_lm_row(f"gguf-{q}", f"GGUF {q}", entry, per_token, file_bytes, gb_s, any_lm))
    return rows


def _lm_row(
    key: str,
    label: str,
    entry: RuntimeRun,
    per_token: float | None,
    file_bytes: float | None,
    gb_s: float | None,
    any_lm: DecodeBytes | None,
) -> LmRow:
    first, bare = entry.first, entry.bare
    decode = med(first, "decode_forward_per_s")
    bare_decode, bare_prefill = med(bare, "decode_forward_per_s"), med(bare, "prefill_tokens_per_s")
    roofline = ratio(gb_s, per_token)
    kv = None
    if any_lm is not None and per_token is not None:
        positions = (med(first, "prefill_tokens") or 0) + (med(first, "decode_tokens") or 0) / 2
        kv = kv_bytes_per_token(any_lm.layers, any_lm.embedding_width, positions)
    roofline_kv = ratio(gb_s, None if per_token is None or kv is None else per_token + kv)
    return LmRow(
        key=key,
        runtime=label,
        file_mb=None if file_bytes is None else file_bytes / 2**20,
        mb_read_per_token=None if per_token is None else per_token / 2**20,
        prefill_tokens=med(first, "prefill_tokens"),
        prefill_tokens_per_s=med(first, "prefill_tokens_per_s"),
        decode_tokens_per_s=med(first, "decode_tokens_per_s"),
        decode_forward_per_s=decode,
        bare_prefill_tokens_per_s=bare_prefill,
        bare_decode_forward_per_s=bare_decode,
        overhead_prefill_pct=pct_overhead(bare_prefill, med(first, "prefill_tokens_per_s")),
        overhead_decode_pct=pct_overhead(bare_decode, decode),
        roofline_tokens_per_s=roofline,
        roofline_fraction=ratio(decode, roofline),
        bare_roofline_fraction=ratio(bare_decode, roofline),
        roofline_with_kv_tokens_per_s=roofline_kv,
        roofline_with_kv_fraction=ratio(decode, roofline_kv),
    )
