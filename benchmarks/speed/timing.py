"""End-to-end rows: first / second answer latency by stage, benchmark throughput, the thread sweep."""

from __future__ import annotations

from dataclasses import replace

from benchmarks.speed.config import SpeedConfig
from benchmarks.speed.measured import Measured, RuntimeRun, SweepPoint, Timed, med
from benchmarks.speed.rows import LatencyRow, Stages, SweepRow, ThroughputRow
from benchmarks.speed.stats import ratio


def deploy_key(config: SpeedConfig) -> str:
    """Row key of the deployment pair (exported LM + vision)."""
    return f"exported-{config.deploy_lm}-{config.deploy_vision}"


def first_stages(first: Timed | None) -> Stages:
    """What a first answer is made of: vision, prefill, decode, and the rest of its total."""
    total = med(first, "total_s")
    stages: Stages = {k: med(first, k) for k in ("image_encode_s", "prefill_s", "decode_s")}
    known = sum(v for v in stages.values() if v is not None)
    stages["other_s"] = None if total is None else max(0.0, total - known)
    return stages


def ttft_stages(timings: Timed | None) -> Stages:
    """What the time to first token is made of: vision, prefill, and the rest (template, tokenizer,
    first sampling)."""
    ttft, vision, prefill = med(timings, "ttft_s"), med(timings, "image_encode_s"), med(timings, "prefill_s")
    other = None if ttft is None else max(0.0, ttft - (vision or 0.0) - (prefill or 0.0))
    return {"image_encode_s": vision, "prefill_s": prefill, "other_s": other}


def latency_row(key: str, label: str, entry: RuntimeRun) -> LatencyRow:
    first, second, ident = entry.first, entry.second, entry.runtime
    return LatencyRow(
        key=key,
        runtime=label,
        threads=ident.get("threads"),
        context_length=ident.get("context_length"),
        first_ttft_s=med(first, "ttft_s"),
        first_total_s=med(first, "total_s"),
        first_stages=first_stages(first),
        second_ttft_s=med(second, "ttft_s"),
        second_total_s=med(second, "total_s"),
        second_ttft_stages=ttft_stages(second),
        second_prefill_tokens=med(second, "prefill_tokens"),
        second_reused_tokens=med(second, "reused_tokens"),
        reuse_ttft_speedup=ratio(med(first, "ttft_s"), med(second, "ttft_s")),
    )


def latency_rows(m: Measured, config: SpeedConfig) -> list[LatencyRow]:
    rows = []
    if m.torch:
        rows.append(latency_row("torch-fp32", "PyTorch fp32", m.torch))
    for q in [config.deploy_lm, *(q for q in config.all_quants if q != config.deploy_lm)]:
        if m.exported.get(q):
            key, label = f"exported-{q}-{config.deploy_vision}", f"exported {q} + {config.deploy_vision}"
            rows.append(latency_row(key, label, m.exported[q]))
    for name, entry in m.profiles.items():
        ident = entry.runtime
        label = f"profile {name} ({ident.get('lm')} + {ident.get('vision')})"
        rows.append(latency_row(f"profile-{name}", label, entry))
    torch_total = rows[0].first_total_s if rows and rows[0].key == "torch-fp32" else None
    return [replace(r, first_speedup_vs_torch=ratio(torch_total, r.first_total_s)) for r in rows]


def throughput_rows(m: Measured, config: SpeedConfig) -> list[ThroughputRow]:
    entries = [
        ("torch-fp32", "PyTorch fp32, one question at a time, nothing reused", m.torch),
        (
            deploy_key(config),
            f"exported {config.deploy_lm} + {config.deploy_vision}, reuse",
            m.exported.get(config.deploy_lm),
        ),
    ]
    rows = []
    for key, label, entry in entries:
        t = None if entry is None else entry.throughput
        if t:
            rows.append(
                ThroughputRow(
                    key=key,
                    runtime=label,
                    questions=t.questions,
                    images=t.images,
                    seconds=t.seconds,
                    questions_per_minute=t.questions_per_minute,
                    median_question_s=med(t.per_question, "total_s"),
                )
            )
    return rows


def sweep_rows(m: Measured, config: SpeedConfig) -> list[SweepRow]:
    deploy = m.exported.get(config.deploy_lm)
    if not deploy:
        return []
    points = [SweepPoint(config.threads, deploy.vision, deploy.first), *(deploy.sweep or [])]
    return [
        SweepRow(
            threads=p.threads,
            vision_ms=None if p.vision is None else p.vision.ms_per_image.median,
            prefill_tokens_per_s=med(p.first, "prefill_tokens_per_s"),
            decode_forward_per_s=med(p.first, "decode_forward_per_s"),
            ttft_s=med(p.first, "ttft_s"),
            total_s=med(p.first, "total_s"),
        )
        for p in sorted(points, key=lambda p: p.threads)
    ]
