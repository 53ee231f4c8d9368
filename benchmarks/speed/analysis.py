"""From raw worker measurements to the report's tables, the targets and what holds each one back.

Conventions: every figure is the median of the measured runs; speed-ups are ``reference time /
candidate time``; runtime overhead vs bare llama.cpp is ``bare rate / runtime rate - 1`` (positive:
the runtime is slower); decode rates compared with bare llama.cpp and with the roofline count
forward passes (n - 1 for n answer tokens). Targets are printed as target / measured / met? and
never asserted.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.speed.config import TARGETS, SpeedConfig
from benchmarks.speed.machine import gguf_decode_bytes, kv_bytes_per_token

log = logging.getLogger(__name__)

#: Above this many LM parameters the model is "3B-class" and the RSS target applies.
RSS_TARGET_MIN_PARAMS = 1_000_000_000
#: At or above this many image tokens the first-answer target is the 729-token one, else the 196 one.
MANY_IMAGE_TOKENS = 400


def med(entry: Any, key: str) -> float | None:
    """The median of ``entry[key]`` (a worker summary), or None when missing."""
    if not entry or key not in entry or entry[key] is None:
        return None
    value = entry[key].get("median") if isinstance(entry[key], dict) else entry[key]
    return None if value is None else float(value)


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b not in (None, 0) else None


def pct_overhead(bare_rate: float | None, runtime_rate: float | None) -> float | None:
    r = ratio(bare_rate, runtime_rate)
    return None if r is None else 100.0 * (r - 1.0)


def analyze(raw: dict[str, Any], limits: dict[str, Any], config: SpeedConfig) -> dict[str, Any]:
    """The report section of one preset."""
    manifest = raw["manifest"]
    bundle = Path(raw["prepared"]["bundle"])
    decode_bytes = {q: gguf_decode_bytes(bundle / e["file"]) for q, e in manifest["lm"].items()}
    bandwidth = {int(b["threads"]): b for b in limits.get("bandwidth", [])}
    bw = bandwidth.get(config.threads) or (
        max(bandwidth.values(), key=lambda b: b["threads"]) if bandwidth else None
    )
    out: dict[str, Any] = {
        "model": model_facts(raw, decode_bytes),
        "files": file_rows(manifest),
        "export": export_facts(raw),
        "vision": vision_rows(raw, config),
        "lm": lm_rows(raw, config, decode_bytes, bw),
        "latency": latency_rows(raw, config),
        "throughput": throughput_rows(raw, config),
        "memory": memory_rows(raw, config, manifest, decode_bytes),
        "sweep": sweep_rows(raw, config),
        "memory_probes": raw.get("memory_probes"),
        "bandwidth_gb_per_s": None if bw is None else bw["gb_per_s"],
        "errors": raw.get("errors", []),
        "seconds": raw.get("seconds"),
    }
    out["targets"] = targets(out, raw, config)
    out["notes"] = notes(out, config)
    out["raw"] = raw
    return out


def notes(report: dict[str, Any], config: SpeedConfig) -> list[str]:
    """Facts a reader needs to read the figures right."""
    from benchmarks.speed.config import usable_cores

    out = []
    cores = usable_cores()
    for row in report["latency"]:
        if row["key"].startswith("profile-") and (row["threads"] or 0) > cores:
            out.append(
                f"{row['runtime']} runs {row['threads']} threads on {cores} cores: oversubscribed threads "
                "spin-wait at every barrier, so its figures say more about the profile's thread count than "
                "about the device it targets."
            )
    if not config.measure_torch:
        out.append("PyTorch was not measured (--no-torch): ratios against it are missing.")
    if report["model"]["source"] == "random":
        out.append(
            "Random weights: the int8 feature cosine is that of N(0, 0.02) weights, not of a trained tower; "
            "measure a real checkpoint (--checkpoint) for the accuracy side."
        )
    return out


# ------------------------------------------------------------------------------------ sections
def model_facts(raw: dict[str, Any], decode_bytes: dict[str, dict[str, Any]]) -> dict[str, Any]:
    model = raw["manifest"]["model"]
    any_lm = next(iter(decode_bytes.values()), {})
    return {
        "preset": raw["config"]["preset"],
        "source": raw["prepared"]["source"],
        "id": model["id"],
        "image_tokens": model["image_tokens"],
        "image_size": model["image_size"],
        "embedding_width": model["embedding_width"],
        "vocab_size": model["vocab_size"],
        "context_length": model["context_length"],
        "lm_parameters": any_lm.get("parameters"),
        "lm_layers": any_lm.get("layers"),
    }


def file_rows(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for kind in ("vision", "lm"):
        for precision, a in manifest[kind].items():
            rows.append(
                {
                    "kind": kind,
                    "precision": precision,
                    "file": a["file"],
                    "mb": a["bytes"] / 2**20,
                    "export_seconds": a["export_seconds"],
                }
            )
    return rows


def export_facts(raw: dict[str, Any]) -> dict[str, Any]:
    prepared = raw["prepared"]
    return {
        "built_now": prepared["built_now"],
        "exported_now": prepared["exported_now"],
        "exported_at": raw["manifest"].get("created"),
        "build": prepared.get("build", {}),
        "bundle_timings": raw["manifest"].get("timings", {}),
        "cache_entry": prepared["cache_entry"],
    }


def _cosines(a_path: str | None, b_path: str | None) -> dict[str, float] | None:
    from export.onnx_vision import token_cosines

    if not a_path or not b_path or not Path(a_path).is_file() or not Path(b_path).is_file():
        return None
    a, b = np.load(a_path), np.load(b_path)
    if a.shape != b.shape:
        return None
    cos = token_cosines(a, b)
    return {"mean": float(cos.mean()), "min": float(cos.min())}


def vision_rows(raw: dict[str, Any], config: SpeedConfig) -> list[dict[str, Any]]:
    sources: list[tuple[str, str, dict[str, Any] | None]] = []
    torch_vision = (raw.get("torch") or {}).get("vision")
    sources.append(("torch-fp32", "PyTorch fp32", torch_vision))
    for v in config.vision:
        entry = (
            (raw["exported"].get(config.deploy_lm) or {})
            if v == config.deploy_vision
            else raw["vision_variants"].get(v)
        )
        sources.append((f"onnx-{v}", f"ONNX {v}", (entry or {}).get("vision")))
    ref_ms = med(torch_vision, "ms_per_image")
    ref_features = (torch_vision or {}).get("features")
    onnx_fp32 = next((s[2] for s in sources if s[0] == "onnx-fp32"), None)
    rows = []
    for key, label, vis in sources:
        if not vis:
            continue
        ms = med(vis, "ms_per_image")
        rows.append(
            {
                "key": key,
                "encoder": label,
                "ms_per_image": ms,
                "ms_min": vis["ms_per_image"]["min"],
                "ms_max": vis["ms_per_image"]["max"],
                "preprocess_ms": med(vis, "preprocess_ms"),
                "speedup_vs_torch": ratio(ref_ms, ms),
                "cosine_vs_torch": _cosines(vis.get("features"), ref_features),
                "cosine_vs_onnx_fp32": _cosines(vis.get("features"), (onnx_fp32 or {}).get("features")),
            }
        )
    return rows


def lm_rows(
    raw: dict[str, Any],
    config: SpeedConfig,
    decode_bytes: dict[str, dict[str, Any]],
    bw: dict[str, Any] | None,
) -> list[dict[str, Any]]:
    rows = []
    gb_s = None if bw is None else bw["gb_per_s"] * 1e9
    torch_entry = raw.get("torch")
    if torch_entry:
        first = torch_entry["first"]
        any_lm = next(iter(decode_bytes.values()), None)
        per_token = None if any_lm is None else 4 * any_lm["elements_per_token"]  # fp32 weights
        rows.append(
            _lm_row("torch-fp32", "PyTorch fp32", first, None, per_token, None, gb_s, decode_bytes, first)
        )
    for q in config.all_quants:
        entry = raw["exported"].get(q)
        if not entry:
            continue
        facts = decode_bytes.get(q)
        rows.append(
            _lm_row(
                f"gguf-{q}",
                f"GGUF {q}",
                entry["first"],
                entry.get("bare"),
                facts and facts["bytes_per_token"],
                raw["manifest"]["lm"][q]["bytes"],
                gb_s,
                decode_bytes,
                entry["first"],
            )
        )
    return rows


def _lm_row(
    key: str,
    label: str,
    first: dict[str, Any],
    bare: dict[str, Any] | None,
    per_token: float | None,
    file_bytes: float | None,
    gb_s: float | None,
    decode_bytes: dict[str, dict[str, Any]],
    timings: dict[str, Any],
) -> dict[str, Any]:
    decode = med(first, "decode_forward_per_s")
    roofline = ratio(gb_s, per_token)
    any_lm = next(iter(decode_bytes.values()), None)
    kv = None
    if any_lm is not None and per_token is not None:
        positions = (med(timings, "prefill_tokens") or 0) + (med(timings, "decode_tokens") or 0) / 2
        kv = kv_bytes_per_token(any_lm["layers"], any_lm["embedding_width"], positions)
    roofline_kv = ratio(gb_s, None if per_token is None or kv is None else per_token + kv)
    return {
        "key": key,
        "runtime": label,
        "file_mb": None if file_bytes is None else file_bytes / 2**20,
        "mb_read_per_token": None if per_token is None else per_token / 2**20,
        "prefill_tokens": med(first, "prefill_tokens"),
        "prefill_tokens_per_s": med(first, "prefill_tokens_per_s"),
        "decode_tokens_per_s": med(first, "decode_tokens_per_s"),
        "decode_forward_per_s": decode,
        "bare_prefill_tokens_per_s": med(bare, "prefill_tokens_per_s"),
        "bare_decode_forward_per_s": med(bare, "decode_forward_per_s"),
        "overhead_prefill_pct": pct_overhead(
            med(bare, "prefill_tokens_per_s"), med(first, "prefill_tokens_per_s")
        ),
        "overhead_decode_pct": pct_overhead(med(bare, "decode_forward_per_s"), decode),
        "roofline_tokens_per_s": roofline,
        "roofline_fraction": ratio(decode, roofline),
        "bare_roofline_fraction": ratio(med(bare, "decode_forward_per_s"), roofline),
        "roofline_with_kv_tokens_per_s": roofline_kv,
        "roofline_with_kv_fraction": ratio(decode, roofline_kv),
    }


def _ttft_stages(timings: dict[str, Any]) -> dict[str, float | None]:
    """What the time to first token is made of: vision, prefill, and the rest (template, tokenizer,
    first sampling)."""
    ttft, vision, prefill = med(timings, "ttft_s"), med(timings, "image_encode_s"), med(timings, "prefill_s")
    other = None if ttft is None else max(0.0, ttft - (vision or 0.0) - (prefill or 0.0))
    return {"image_encode_s": vision, "prefill_s": prefill, "other_s": other}


def _latency_row(key: str, label: str, entry: dict[str, Any]) -> dict[str, Any]:
    first, second = entry.get("first") or {}, entry.get("second") or {}
    ident = entry.get("runtime", {})
    total = med(first, "total_s")
    stages = {
        "image_encode_s": med(first, "image_encode_s"),
        "prefill_s": med(first, "prefill_s"),
        "decode_s": med(first, "decode_s"),
    }
    known = sum(v for v in stages.values() if v is not None)
    stages["other_s"] = None if total is None else max(0.0, total - known)
    return {
        "key": key,
        "runtime": label,
        "threads": ident.get("threads"),
        "context_length": ident.get("context_length"),
        "first_ttft_s": med(first, "ttft_s"),
        "first_total_s": total,
        "first_stages": stages,
        "second_ttft_s": med(second, "ttft_s"),
        "second_total_s": med(second, "total_s"),
        "second_ttft_stages": _ttft_stages(second),
        "second_prefill_tokens": med(second, "prefill_tokens"),
        "second_reused_tokens": med(second, "reused_tokens"),
        "reuse_ttft_speedup": ratio(med(first, "ttft_s"), med(second, "ttft_s")),
    }


def latency_rows(raw: dict[str, Any], config: SpeedConfig) -> list[dict[str, Any]]:
    rows = []
    if raw.get("torch"):
        rows.append(_latency_row("torch-fp32", "PyTorch fp32", raw["torch"]))
    for q in [config.deploy_lm, *(q for q in config.all_quants if q != config.deploy_lm)]:
        if raw["exported"].get(q):
            rows.append(
                _latency_row(
                    f"exported-{q}-{config.deploy_vision}",
                    f"exported {q} + {config.deploy_vision}",
                    raw["exported"][q],
                )
            )
    for name, entry in raw.get("profiles", {}).items():
        ident = entry.get("runtime", {})
        rows.append(
            _latency_row(
                f"profile-{name}", f"profile {name} ({ident.get('lm')} + {ident.get('vision')})", entry
            )
        )
    torch_total = rows[0]["first_total_s"] if rows and rows[0]["key"] == "torch-fp32" else None
    for row in rows:
        row["first_speedup_vs_torch"] = ratio(torch_total, row["first_total_s"])
    return rows


def throughput_rows(raw: dict[str, Any], config: SpeedConfig) -> list[dict[str, Any]]:
    rows = []
    entries = [("torch-fp32", "PyTorch fp32, one question at a time, nothing reused", raw.get("torch"))]
    deploy = raw["exported"].get(config.deploy_lm)
    entries.append(
        (
            f"exported-{config.deploy_lm}-{config.deploy_vision}",
            f"exported {config.deploy_lm} + {config.deploy_vision}, reuse",
            deploy,
        )
    )
    for key, label, entry in entries:
        t = (entry or {}).get("throughput")
        if t:
            rows.append(
                {
                    "key": key,
                    "runtime": label,
                    "questions": t["questions"],
                    "images": t["images"],
                    "seconds": t["seconds"],
                    "questions_per_minute": t["questions_per_minute"],
                    "median_question_s": med(t["per_question"], "total_s"),
                }
            )
    return rows


def memory_rows(
    raw: dict[str, Any],
    config: SpeedConfig,
    manifest: dict[str, Any],
    decode_bytes: dict[str, dict[str, Any]],
) -> list[dict[str, Any]]:
    """Peak RSS per runtime and what grew it: imports, loading, the vision run, the first answer."""
    sources: list[tuple[str, str, dict[str, Any] | None, str | None, str | None]] = [
        ("torch-fp32", "PyTorch fp32", raw.get("torch"), None, None)
    ]
    for q in config.all_quants:
        label = f"exported {q} + {config.deploy_vision}"
        sources.append(
            (f"exported-{q}-{config.deploy_vision}", label, raw["exported"].get(q), q, config.deploy_vision)
        )
    for v, entry in raw.get("vision_variants", {}).items():
        label = f"exported {config.deploy_lm} + {v}"
        sources.append((f"exported-{config.deploy_lm}-{v}", label, entry, config.deploy_lm, v))
    for name, entry in raw.get("profiles", {}).items():
        ident = (entry or {}).get("runtime", {})
        label = f"profile {name} ({ident.get('lm')} + {ident.get('vision')})"
        sources.append((f"profile-{name}", label, entry, ident.get("lm"), ident.get("vision")))
    rows = []
    for key, label, entry, lm, vision in sources:
        if not entry or "memory" not in entry:
            continue
        mem = entry["memory"]
        after = mem.get("rss_after_mb", {})
        base, peak = mem["baseline_rss_mb"], mem["peak_rss_mb"]
        steps, previous = {}, base
        for stage in ("load", "vision", "first_answer"):
            if stage in after:
                steps[stage] = after[stage] - previous
                previous = after[stage]
        context = entry.get("llama_context") or {}
        rows.append(
            {
                "key": key,
                "runtime": label,
                "lm": lm,
                "vision": vision,
                "context_length": entry.get("runtime", {}).get("context_length"),
                "peak_rss_mb": peak,
                "baseline_rss_mb": base,
                "growth_mb": steps,
                "transient_mb": max(0.0, peak - max([base, *after.values()])),
                "lm_file_mb": manifest["lm"][lm]["bytes"] / 2**20 if lm else None,
                "vision_file_mb": manifest["vision"][vision]["bytes"] / 2**20 if vision else None,
                "llama_kv_mib": context.get("kv_buffer_mib"),
                "llama_compute_mib": context.get("compute_buffer_mib"),
                "llama_repack_mib": context.get("repack_mib"),
            }
        )
    return rows


def sweep_rows(raw: dict[str, Any], config: SpeedConfig) -> list[dict[str, Any]]:
    deploy = raw["exported"].get(config.deploy_lm)
    if not deploy:
        return []
    points = [{"threads": config.threads, "vision": deploy.get("vision"), "first": deploy.get("first")}]
    points += deploy.get("sweep") or []
    rows = []
    for p in sorted(points, key=lambda p: p["threads"]):
        first = p.get("first") or {}
        rows.append(
            {
                "threads": p["threads"],
                "vision_ms": med(p.get("vision"), "ms_per_image"),
                "prefill_tokens_per_s": med(first, "prefill_tokens_per_s"),
                "decode_forward_per_s": med(first, "decode_forward_per_s"),
                "ttft_s": med(first, "ttft_s"),
                "total_s": med(first, "total_s"),
            }
        )
    return rows


# ------------------------------------------------------------------------------------ targets
def _row(rows: list[dict[str, Any]], key: str) -> dict[str, Any] | None:
    return next((r for r in rows if r["key"] == key), None)


def _largest_stage(stages: dict[str, float | None]) -> tuple[str, float]:
    names = {
        "image_encode_s": "vision encode",
        "prefill_s": "prefill",
        "decode_s": "decode",
        "other_s": "other",
    }
    known = {k: v for k, v in stages.items() if v is not None}
    if not known:
        return "unknown", 0.0
    key = max(known, key=lambda k: known[k])
    return names.get(key, key), known[key]


def _breakdown(stages: dict[str, float | None]) -> str:
    names = {"image_encode_s": "vision", "prefill_s": "prefill", "decode_s": "decode", "other_s": "other"}
    return ", ".join(f"{names.get(k, k)} {v:.2f}s" for k, v in stages.items() if v is not None)


def targets(report: dict[str, Any], raw: dict[str, Any], config: SpeedConfig) -> list[dict[str, Any]]:
    """The issue's targets: goal, measured, met?, and for a miss the stage that holds it back."""
    rows: list[dict[str, Any]] = []

    def add(key: str, measured: float | None, text: str, holds_back: str = "", applies: bool = True) -> None:
        t = TARGETS[key]
        met = t.met(measured) if applies else None
        rows.append(
            {
                "key": key,
                "description": t.description,
                "goal": t.describe_goal(),
                "measured": measured,
                "measured_text": text if measured is not None else "not measured",
                "met": met,
                "holds_back": "" if met else holds_back,
                "applies": applies,
            }
        )

    lm = [r for r in report["lm"] if r["key"].startswith("gguf-")]
    latency, vision = report["latency"], report["vision"]
    deploy_key = f"exported-{config.deploy_lm}-{config.deploy_vision}"

    # overhead vs bare llama.cpp
    for kind, field, bare_field, rate_field in (
        ("decode", "overhead_decode_pct", "bare_decode_forward_per_s", "decode_forward_per_s"),
        ("prefill", "overhead_prefill_pct", "bare_prefill_tokens_per_s", "prefill_tokens_per_s"),
    ):
        measured_rows = [r for r in lm if r[field] is not None]
        worst = max(measured_rows, key=lambda r: r[field], default=None)
        if worst is None:
            add(f"overhead_{kind}", None, "")
            continue
        each = ", ".join(f"{r['key'][5:]} {r[field]:+.1f}%" for r in measured_rows)
        rt_rate, bare_rate = worst[rate_field], worst[bare_field]
        if kind == "decode":
            per_token_ms = 1e3 * (1 / rt_rate - 1 / bare_rate) if rt_rate and bare_rate else 0.0
            why = (
                f"decode, {worst['key'][5:]}: {per_token_ms:.2f} ms per token spent outside llama_decode "
                "(Runtime.iter_generate copies the full logits row, converts it to float64 for the argmax "
                "and re-detokenizes the whole answer each step). To close: take the argmax in place "
                "(LlamaSession.argmax, no copy) and detokenize incrementally."
            )
        else:
            why = (
                f"prefill, {worst['key'][5:]}: the runtime feeds a prompt as several llama_decode calls "
                "(text before <image>, the image's embeddings, text after) because a llama.cpp batch holds "
                "tokens or embeddings, never both; the short text batches run at low matmul efficiency. "
                "To close: look the text tokens up in token_embd and feed the whole prompt as one embeddings "
                "batch, or keep the system-prompt prefix cached across questions (reuse)."
            )
        add(f"overhead_{kind}", worst[field], f"{worst[field]:+.1f}% ({each})", why)

    # second question on the same image
    deploy = _row(latency, deploy_key)
    if deploy and deploy["reuse_ttft_speedup"] is not None:
        stage, seconds = _largest_stage(deploy["second_ttft_stages"])
        add(
            "reuse_ttft",
            deploy["reuse_ttft_speedup"],
            f"{deploy['reuse_ttft_speedup']:.1f}x ({deploy['first_ttft_s']:.3f}s -> {deploy['second_ttft_s']:.3f}s, "
            f"{deploy['second_reused_tokens']:.0f} positions reused, {deploy['second_prefill_tokens']:.0f} prefilled)",
            f"second question: {stage} {seconds:.3f}s of {deploy['second_ttft_s']:.3f}s TTFT "
            f"({_breakdown(deploy['second_ttft_stages'])}). Only the new question is prefilled; the ratio "
            "shrinks when the first answer is cheap (small image / model) or the fixed per-call costs "
            "(template, tokenizer, llama_decode calls) dominate. To close: fewer llama_decode calls per "
            "question (one batch for question + ' ASSISTANT:').",
        )
    else:
        add("reuse_ttft", None, "")

    # throughput
    tp = {r["key"]: r for r in report["throughput"]}
    t_torch, t_exp = tp.get("torch-fp32"), tp.get(deploy_key)
    if t_torch and t_exp:
        value = t_exp["questions_per_minute"] / t_torch["questions_per_minute"]
        stages = deploy["first_stages"] if deploy else {}
        add(
            "throughput",
            value,
            f"{value:.1f}x ({t_exp['questions_per_minute']:.1f} vs {t_torch['questions_per_minute']:.1f} questions/min)",
            f"exported per question {t_exp['median_question_s']:.2f}s (first answer on an image: {_breakdown(stages)}). "
            f"With {config.answer_tokens} answer tokens decode is a fixed cost per question that reuse does not "
            "remove; real benchmark answers stop after 1-3 words. To close: faster decode (q4_0, more cores), "
            "stop at the stop token (real weights).",
        )
    else:
        add("throughput", None, "")

    # first answer
    image_tokens = report["model"]["image_tokens"]
    key = "first_answer_729" if image_tokens >= MANY_IMAGE_TOKENS else "first_answer_196"
    torch_row = _row(latency, "torch-fp32")
    if deploy and torch_row and deploy["first_total_s"]:
        value = torch_row["first_total_s"] / deploy["first_total_s"]
        stage, seconds = _largest_stage(deploy["first_stages"])
        add(
            key,
            value,
            f"{value:.2f}x ({torch_row['first_total_s']:.2f}s -> {deploy['first_total_s']:.2f}s, {image_tokens} image tokens)",
            f"exported first answer: {stage} {seconds:.2f}s of {deploy['first_total_s']:.2f}s "
            f"({_breakdown(deploy['first_stages'])}); PyTorch: {_breakdown(torch_row['first_stages'])}. "
            + _first_answer_advice(stage, report),
        )
    else:
        add(key, None, "")

    # vision
    vrows = {r["key"]: r for r in vision}
    for precision, tkey in (("fp32", "vision_fp32"), ("int8", "vision_int8")):
        row = vrows.get(f"onnx-{precision}")
        if row and row["speedup_vs_torch"] is not None:
            pre = row["preprocess_ms"] or 0.0
            add(
                tkey,
                row["speedup_vs_torch"],
                f"{row['speedup_vs_torch']:.2f}x ({vrows['torch-fp32']['ms_per_image']:.1f} -> {row['ms_per_image']:.1f} ms/image)",
                f"ONNX {precision}: {row['ms_per_image']:.1f} ms/image, of which preprocessing (decode, resize, "
                f"normalise; the same in both runtimes) {pre:.1f} ms. To close: export with optimize_onnx=True "
                "(attention / LayerNorm fusions), int8 only where VNNI exists, fp16 where the CPU has "
                "native fp16 arithmetic.",
            )
        else:
            add(tkey, None, "")
    int8 = vrows.get("onnx-int8")
    cos = (int8 or {}).get("cosine_vs_torch")
    add(
        "vision_int8_cosine",
        None if cos is None else cos["mean"],
        ""
        if cos is None
        else f"{cos['mean']:.5f} (min {cos['min']:.5f})"
        + (
            " (random weights: not representative of a trained tower)"
            if raw["prepared"]["source"] == "random"
            else ""
        ),
        "int8 dynamic quantization of every MatMul loses too much: keep the attention projections or the "
        "projector in fp32 (op_types / nodes_to_exclude), or use fp16 vision.",
    )

    # peak RSS
    mem = {r["key"]: r for r in report["memory"]}
    candidates = [
        mem.get(deploy_key),
        *(mem.get(f"exported-{config.deploy_lm}-{v}") for v in ("fp16", "int8") if v != config.deploy_vision),
    ]
    candidates = [c for c in candidates if c]
    params = report["model"]["lm_parameters"] or 0
    applies = params >= RSS_TARGET_MIN_PARAMS
    if candidates:
        # the target allows int8 or fp16 vision: the leaner pair is measured, both are shown
        best = min(candidates, key=lambda r: r["peak_rss_mb"])
        each = ", ".join(f"{c['vision']} {c['peak_rss_mb']:.0f} MB" for c in candidates)
        probes = raw.get("memory_probes")
        advice = _rss_advice(best, probes) + _fp16_vision_note(probes, report)
        add(
            "rss_3b",
            best["peak_rss_mb"],
            f"{best['peak_rss_mb']:.0f} MB ({config.deploy_lm} + {each}; n_ctx {best['context_length']})"
            + ("" if applies else "; target is for the 3B model"),
            advice,
            applies=applies,
        )
    else:
        add("rss_3b", None, "", applies=applies)

    # roofline: reported, no goal
    for r in report["lm"]:
        if r["roofline_fraction"] is None:
            continue
        rows.append(
            {
                "key": f"roofline_{r['key']}",
                "description": f"decode vs bandwidth roofline, {r['runtime']}",
                "goal": "reported",
                "measured": r["roofline_fraction"],
                "measured_text": (
                    f"{100 * r['roofline_fraction']:.0f}% of {r['roofline_tokens_per_s']:.1f} tok/s "
                    f"({r['mb_read_per_token']:.0f} MB/token; with the KV cache {100 * (r['roofline_with_kv_fraction'] or 0):.0f}%)"
                ),
                "met": None,
                "holds_back": "",
                "applies": True,
            }
        )
    return rows


def _first_answer_advice(stage: str, report: dict[str, Any]) -> str:
    lm = {r["key"]: r for r in report["lm"]}
    fastest = max(
        (r for r in lm.values() if r["key"].startswith("gguf-") and r["prefill_tokens_per_s"]),
        key=lambda r: r["prefill_tokens_per_s"],
        default=None,
    )
    if stage == "prefill":
        hint = (
            f" ({fastest['key'][5:]} prefills fastest here: {fastest['prefill_tokens_per_s']:.0f} tok/s)"
            if fastest
            else ""
        )
        return (
            "Prefill of the image tokens is compute-bound: pick the quant with the fastest matmul kernels on "
            f"this CPU{hint}, more cores, or the 196-token variant (3.7x fewer image tokens)."
        )
    if stage == "vision encode":
        return "Vision dominates: int8 vision with VNNI, ONNX graph optimisation, or 196-px input."
    if stage == "decode":
        return "Decode dominates: a smaller quant (bandwidth-bound) or fewer answer tokens."
    return "Runtime overhead outside the stages: profile image loading and tokenization."


RSS_CONTEXT = 1024  # tokens: a 729-token image + question + answer fits


def _fp16_vision_note(probes: dict[str, Any] | None, report: dict[str, Any]) -> str:
    """fp16 ONNX on a CPU without fp16 arithmetic: ONNX Runtime computes in fp32 and keeps fp32 weights."""
    onnx = ((probes or {}).get("onnx") or {}).get("fp16")
    files = {r["precision"]: r["mb"] for r in report["files"] if r["kind"] == "vision"}
    if not onnx or "fp16" not in files:
        return ""
    grown = onnx["default"]["rss_growth_mb"]
    if grown < 2 * files["fp16"]:
        return ""
    return (
        f" fp16 vision: ONNX Runtime grows by {grown:.0f} MB for a {files['fp16']:.0f} MB file on this CPU "
        "(no fp16 kernels: weights are cast to fp32), so int8 is both leaner and faster here."
    )


def rss_savings(row: dict[str, Any], probes: dict[str, Any] | None) -> list[tuple[str, float]]:
    """Measured savings (MB) of other settings for one exported runtime, from the memory probes."""
    out: list[tuple[str, float]] = []
    if probes:
        lean = probes.get("lean_imports_mb")
        if lean is not None and row["baseline_rss_mb"] > lean + 50:
            out.append(
                (
                    "no torch/transformers import in the runtime process",
                    row["baseline_rss_mb"] - lean,
                )
            )
        llama = probes.get("llama") or {}
        if "no_mmap" in llama and "no_repack" in llama:
            # the runtimes read GGUFs without mmap (LlamaSession's default); dropping the repacked
            # copies too saves little more and loses llama.cpp's faster kernels, so say it only when large
            saved = llama["no_mmap"]["rss_growth_mb"] - llama["no_repack"]["rss_growth_mb"]
            if saved > 100:
                out.append(("llama.cpp without weight repacking (slower kernels)", saved))
        onnx = (probes.get("onnx") or {}).get(row.get("vision") or "")
        if onnx:
            saved = onnx["default"]["rss_growth_mb"] - onnx["no_prepack"]["rss_growth_mb"]
            if saved > 0:
                out.append(("ONNX Runtime session.disable_prepacking=1 for the vision graph", saved))
    kv, ctx = row.get("llama_kv_mib"), row.get("context_length")
    if kv and ctx and ctx > RSS_CONTEXT:
        out.append((f"n_ctx {RSS_CONTEXT} instead of {ctx} (KV cache)", kv * (1 - RSS_CONTEXT / ctx)))
    return out


def _rss_advice(row: dict[str, Any], probes: dict[str, Any] | None = None) -> str:
    names = {"load": "loading", "vision": "the first vision encode", "first_answer": "the first answer"}
    growth = row.get("growth_mb") or {}
    parts = [f"imports {row['baseline_rss_mb']:.0f} MB"]
    parts += [f"{names.get(k, k)} +{v:.0f} MB" for k, v in growth.items()]
    if row.get("transient_mb"):
        parts.append(f"transient +{row['transient_mb']:.0f} MB")
    facts = []
    if row.get("lm_file_mb") is not None:
        facts.append(f"GGUF {row['lm_file_mb']:.0f} MB")
    if row.get("llama_repack_mib"):
        facts.append(f"llama.cpp CPU_REPACK copies {row['llama_repack_mib']:.0f} MiB")
    if row.get("llama_kv_mib") is not None:
        facts.append(f"KV cache {row['llama_kv_mib']:.0f} MiB at n_ctx {row['context_length']}")
    if row.get("llama_compute_mib") is not None:
        facts.append(f"compute buffer {row['llama_compute_mib']:.0f} MiB")
    if row.get("vision_file_mb") is not None:
        facts.append(f"ONNX file {row['vision_file_mb']:.0f} MB")
    biggest = max(growth, key=lambda k: growth[k], default=None)
    text = f"{row['runtime']}: peak {row['peak_rss_mb']:.0f} MB = " + ", ".join(parts)
    if biggest:
        text += f"; {names.get(biggest, biggest)} is the largest stage"
    text += " (" + "; ".join(facts) + ")."
    savings = rss_savings(row, probes)
    if savings:
        projected = row["peak_rss_mb"] - sum(v for _, v in savings)
        text += " Measured savings: " + "; ".join(f"{what} -{mb:.0f} MB" for what, mb in savings)
        text += f"; together about {projected:.0f} MB."
    else:
        text += (
            " To close: lazy torch/transformers imports in impvlm/__init__, llama.cpp without mmap, a "
            "1024-token context, ONNX Runtime without weight prepacking."
        )
    return text
