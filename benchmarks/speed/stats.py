"""The arithmetic of the report: medians of worker summaries, ratios and overheads.

Conventions: every figure is the median of the measured runs; speed-ups are ``reference time /
candidate time``; runtime overhead vs bare llama.cpp is ``bare rate / runtime rate - 1`` (positive:
the runtime is slower); decode rates compared with bare llama.cpp and with the roofline count
forward passes (n - 1 for n answer tokens).
"""

from __future__ import annotations

#: stage keys of a time breakdown, and how the report names them
STAGE_NAMES = {
    "image_encode_s": "vision encode",
    "prefill_s": "prefill",
    "decode_s": "decode",
    "other_s": "other",
}


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b not in (None, 0) else None


def pct_overhead(bare_rate: float | None, runtime_rate: float | None) -> float | None:
    r = ratio(bare_rate, runtime_rate)
    return None if r is None else 100.0 * (r - 1.0)


def largest_stage(stages: dict[str, float | None]) -> tuple[str, float]:
    """The stage that took longest (its report name) and its seconds."""
    known = {k: v for k, v in stages.items() if v is not None}
    if not known:
        return "unknown", 0.0
    key = max(known, key=lambda k: known[k])
    return STAGE_NAMES.get(key, key), known[key]


def breakdown(stages: dict[str, float | None], unit: str = "s", digits: int = 2) -> str:
    """``vision encode 0.12s, prefill 0.50s, ...`` of the measured stages."""
    return ", ".join(
        f"{STAGE_NAMES.get(k, k)} {v:.{digits}f}{unit}" for k, v in stages.items() if v is not None
    )
