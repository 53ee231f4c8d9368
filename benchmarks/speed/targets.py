"""The targets (:data:`benchmarks.speed.config.TARGETS`) judged on one preset's rows.

Each verdict gives goal / measured / met? and, for a miss, what held it back: the measured stage
that took the most, with the figures around it. Targets are reported, never asserted.
"""

from __future__ import annotations

from benchmarks.speed.config import TARGETS, SpeedConfig
from benchmarks.speed.memory import rss_breakdown, vision_growth
from benchmarks.speed.mix_report import mix_verdicts
from benchmarks.speed.rows import LatencyRow, LmRow, PresetReport, Verdict, VisionRow
from benchmarks.speed.stats import breakdown, largest_stage
from benchmarks.speed.timing import deploy_key

#: Above this many LM parameters the model is "3B-class" and the RSS target applies.
RSS_TARGET_MIN_PARAMS = 1_000_000_000
#: At or above this many image tokens the first-answer target is the 729-token one, else the 196 one.
MANY_IMAGE_TOKENS = 400


def verdict(
    key: str, measured: float | None, text: str = "", holds_back: str = "", applies: bool = True
) -> Verdict:
    t = TARGETS[key]
    met = t.met(measured) if applies else None
    return Verdict(
        key=key,
        description=t.description,
        goal=t.describe_goal(),
        measured=measured,
        measured_text=text if measured is not None else "not measured",
        met=met,
        holds_back="" if met else holds_back,
        applies=applies,
    )


def targets(report: PresetReport, config: SpeedConfig) -> list[Verdict]:
    """Every target, then each LM's share of its bandwidth roofline (reported, no goal)."""
    deploy = next((r for r in report.latency if r.key == deploy_key(config)), None)
    return [
        overhead_verdict(report.lm, "decode"),
        overhead_verdict(report.lm, "prefill"),
        reuse_verdict(deploy),
        throughput_verdict(report, deploy, config),
        first_answer_verdict(report, deploy),
        *vision_verdicts(report.vision),
        cosine_verdict(report),
        rss_verdict(report, config),
        *mix_verdicts(report.raw, report.model.lm_parameters),
        *[roofline_row(r) for r in report.lm if r.roofline_fraction is not None],
    ]


def overhead_verdict(lm: list[LmRow], kind: str) -> Verdict:
    """Worst runtime overhead vs bare llama.cpp over the GGUF quants, in decode or prefill."""

    def overhead(r: LmRow) -> float | None:
        return r.overhead_decode_pct if kind == "decode" else r.overhead_prefill_pct

    rows = [r for r in lm if r.key.startswith("gguf-") and overhead(r) is not None]
    worst = max(rows, key=lambda r: overhead(r) or 0.0, default=None)
    if worst is None:
        return verdict(f"overhead_{kind}", None)
    each = ", ".join(f"{r.quant} {overhead(r):+.1f}%" for r in rows)
    value = overhead(worst) or 0.0
    if kind == "decode":
        rt, bare, unit = worst.decode_forward_per_s, worst.bare_decode_forward_per_s, "forward passes/s"
        extra = 1e3 * (1 / rt - 1 / bare) if rt and bare else 0.0
        cost = f"{extra:.2f} ms more per token"
    else:
        rt, bare, unit = worst.prefill_tokens_per_s, worst.bare_prefill_tokens_per_s, "tokens/s"
        n = worst.prefill_tokens or 0.0
        extra = 1e3 * n * (1 / rt - 1 / bare) if rt and bare else 0.0
        cost = f"{extra:.1f} ms more for {n:.0f} prompt tokens"
    why = f"{kind}, {worst.quant}: runtime {rt or 0:.2f} vs bare llama.cpp {bare or 0:.2f} {unit}, {cost}"
    return verdict(f"overhead_{kind}", value, f"{value:+.1f}% ({each})", why)


def reuse_verdict(deploy: LatencyRow | None) -> Verdict:
    """Second question on the same image: TTFT speed-up, and the stage the second TTFT spent most on."""
    if deploy is None or deploy.reuse_ttft_speedup is None:
        return verdict("reuse_ttft", None)
    d = deploy
    stage, seconds = largest_stage(d.second_ttft_stages)
    text = (
        f"{d.reuse_ttft_speedup:.1f}x ({d.first_ttft_s or 0:.3f}s -> {d.second_ttft_s or 0:.3f}s, "
        f"{d.second_reused_tokens or 0:.0f} positions reused, {d.second_prefill_tokens or 0:.0f} prefilled)"
    )
    why = (
        f"second question: {stage} {seconds:.3f}s of {d.second_ttft_s or 0:.3f}s TTFT "
        f"({breakdown(d.second_ttft_stages, digits=3)})"
    )
    return verdict("reuse_ttft", d.reuse_ttft_speedup, text, why)


def throughput_verdict(report: PresetReport, deploy: LatencyRow | None, config: SpeedConfig) -> Verdict:
    """Questions per minute, exported with reuse vs PyTorch with nothing reused."""
    tp = {r.key: r for r in report.throughput}
    t_torch, t_exp = tp.get("torch-fp32"), tp.get(deploy_key(config))
    if not t_torch or not t_exp:
        return verdict("throughput", None)
    value = t_exp.questions_per_minute / t_torch.questions_per_minute
    text = (
        f"{value:.1f}x ({t_exp.questions_per_minute:.1f} vs {t_torch.questions_per_minute:.1f} questions/min)"
    )
    stages = deploy.first_stages if deploy else {}
    why = (
        f"exported {t_exp.median_question_s or 0:.2f}s per question, PyTorch {t_torch.median_question_s or 0:.2f}s; "
        f"exported first answer on an image: {breakdown(stages)} ({config.answer_tokens} answer tokens)"
    )
    return verdict("throughput", value, text, why)


def first_answer_verdict(report: PresetReport, deploy: LatencyRow | None) -> Verdict:
    """First answer on an image, exported vs PyTorch, and the stage the exported answer spent most on."""
    image_tokens = report.model.image_tokens
    key = "first_answer_729" if image_tokens >= MANY_IMAGE_TOKENS else "first_answer_196"
    torch_row = next((r for r in report.latency if r.key == "torch-fp32"), None)
    if not deploy or not torch_row or not deploy.first_total_s or torch_row.first_total_s is None:
        return verdict(key, None)
    value = torch_row.first_total_s / deploy.first_total_s
    stage, seconds = largest_stage(deploy.first_stages)
    text = f"{value:.2f}x ({torch_row.first_total_s:.2f}s -> {deploy.first_total_s:.2f}s, {image_tokens} image tokens)"
    why = (
        f"exported first answer: {stage} {seconds:.2f}s of {deploy.first_total_s:.2f}s "
        f"({breakdown(deploy.first_stages)}); PyTorch: {breakdown(torch_row.first_stages)}"
    )
    return verdict(key, value, text, why)


def vision_verdicts(vision: list[VisionRow]) -> list[Verdict]:
    """ONNX fp32 and int8 vision encode vs PyTorch fp32, with the preprocessing share of each."""
    rows = {r.key: r for r in vision}
    torch_row = rows.get("torch-fp32")
    out = []
    for precision in ("fp32", "int8"):
        row = rows.get(f"onnx-{precision}")
        if torch_row is None or row is None or row.speedup_vs_torch is None:
            out.append(verdict(f"vision_{precision}", None))
            continue
        text = f"{row.speedup_vs_torch:.2f}x ({torch_row.ms_per_image or 0:.1f} -> {row.ms_per_image or 0:.1f} ms/image)"
        why = (
            f"ONNX {precision} {row.ms_per_image or 0:.1f} ms/image, of which preprocessing "
            f"{row.preprocess_ms or 0:.1f} ms; PyTorch {torch_row.ms_per_image or 0:.1f} ms/image, of which "
            f"preprocessing {torch_row.preprocess_ms or 0:.1f} ms"
        )
        out.append(verdict(f"vision_{precision}", row.speedup_vs_torch, text, why))
    return out


def cosine_verdict(report: PresetReport) -> Verdict:
    """Mean token cosine of the int8 vision features vs PyTorch fp32."""
    rows = {r.key: r for r in report.vision}
    int8 = rows.get("onnx-int8")
    cos = None if int8 is None else int8.cosine_vs_torch
    if cos is None:
        return verdict("vision_int8_cosine", None)
    random = " (random weights)" if report.model.source == "random" else ""
    why = f"ONNX int8 vs PyTorch fp32: mean {cos.mean:.5f}, min {cos.min:.5f}"
    fp32 = rows.get("onnx-fp32")
    if fp32 is not None and fp32.cosine_vs_torch is not None:
        why += f"; ONNX fp32 vs PyTorch fp32: mean {fp32.cosine_vs_torch.mean:.5f}"
    if int8 is not None and int8.cosine_vs_onnx_fp32 is not None:
        why += f"; ONNX int8 vs ONNX fp32: mean {int8.cosine_vs_onnx_fp32.mean:.5f}"
    return verdict("vision_int8_cosine", cos.mean, f"{cos.mean:.5f} (min {cos.min:.5f}){random}", why)


def rss_verdict(report: PresetReport, config: SpeedConfig) -> Verdict:
    """Peak RSS of the leaner exported pair (int8 or fp16 vision), with its breakdown by stage."""
    mem = {r.key: r for r in report.memory}
    keys = [deploy_key(config), *(f"exported-{config.deploy_lm}-{v}" for v in ("fp16", "int8"))]
    candidates = [mem[k] for k in dict.fromkeys(keys) if k in mem]
    applies = (report.model.lm_parameters or 0) >= RSS_TARGET_MIN_PARAMS
    if not candidates:
        return verdict("rss_3b", None, applies=applies)
    best = min(candidates, key=lambda r: r.peak_rss_mb)
    each = ", ".join(f"{c.vision} {c.peak_rss_mb:.0f} MB" for c in candidates)
    text = f"{best.peak_rss_mb:.0f} MB ({config.deploy_lm} + {each}; n_ctx {best.context_length})"
    text += "" if applies else "; target is for the 3B model"
    why = rss_breakdown(best, report.memory_probes)
    why += vision_growth(report.memory_probes, report.files, "fp16")
    return verdict("rss_3b", best.peak_rss_mb, text, why, applies=applies)


def roofline_row(r: LmRow) -> Verdict:
    """Decode rate as a share of the bandwidth roofline (reported, no goal)."""
    return Verdict(
        key=f"roofline_{r.key}",
        description=f"decode vs bandwidth roofline, {r.runtime}",
        goal="reported",
        measured=r.roofline_fraction,
        measured_text=(
            f"{100 * (r.roofline_fraction or 0):.0f}% of {r.roofline_tokens_per_s or 0:.1f} tok/s "
            f"({r.mb_read_per_token or 0:.0f} MB/token; with the KV cache {100 * (r.roofline_with_kv_fraction or 0):.0f}%)"
        ),
        met=None,
        holds_back="",
        applies=True,
    )
