"""Did accuracy hold? Three-way verdicts with stated confidence over paired answers.

For each benchmark x candidate the answers of the reference and the candidate are paired over the
unit the headline samples (a question for the accuracies, an image for MME's acc+ pairs, a circular
group for MMBench, a question for POPE's F1) and summarised as :class:`Evidence`. Against the margin
of the candidate's precision class (:mod:`export.quant_types`):

- **HOLDS**: the upper bound of the headline drop is within the margin and, for near-lossless
  candidates, the lower bound of per-question agreement is at least the agreement threshold;
- **DROPS**: the lower bound of the drop exceeds the margin (or, for near-lossless candidates, the
  upper bound of agreement is below the threshold);
- **NOT DECIDED**: the bounds straddle; :func:`questions_to_decide` says roughly how many questions
  would decide it if the observed rates held.

Bounds of the drop: with at least :data:`MIN_CHANGED` units whose share of the headline changed,
Student's t on the per-unit changes (the standard error of POPE's F1 from a seeded paired bootstrap);
with fewer, the exact worst case: the drop is at most the largest change one unit can make times
the Clopper-Pearson upper bound of the share of units that changed (so identical answers on a few
questions decide nothing). Agreement: Clopper-Pearson. Each claim is a one-sided test; the family of
all claims (two per benchmark x candidate, and two per candidate for its suite mean) is controlled at
:data:`ALPHA` by Holm's step-down (statsmodels), and the bounds shown are simultaneous (Bonferroni
over the family).

The suite claim (:mod:`benchmarks.verdict_suite`): a candidate's mean drop over its benchmarks
against the same margin, with agreement over all their questions. Near-lossless margins need
thousands of identical answers per benchmark; the benchmarks together reach them, so a candidate
HOLDS when its suite mean holds and no benchmark DROPS, while its benchmark rows may stay NOT DECIDED.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from benchmarks.base import get_benchmark
from benchmarks.stats import (
    mean_bounds,
    mean_p_above,
    paired_bootstrap_se,
    proportion_bounds,
    proportion_p_above,
    proportion_p_below,
)
from export.quant_types import AccuracyMargin

ALPHA = 0.05  # family-wise error rate of all claims of one report
MIN_CHANGED = 10  # fewer changed units: the exact worst-case bound instead of the t bound
MAX_DROP = 100.0  # no headline moves by more than 100 percentage points
HOLDS, DROPS, NOT_DECIDED = "HOLDS", "DROPS", "NOT DECIDED"
UNITS = {"mme": "image", "mmbench": "circular group"}
POINT_SCALE = {"mme": 100 / 2000}  # headlines in other units than percent -> percentage points
BOOTSTRAP_SEED = 0
FAR_OFF = 20  # a NOT DECIDED line needing this many times the questions asked says so


@dataclass(frozen=True)
class Evidence:
    """What one paired comparison observed, in percentage points of the headline.

    ``n`` units of which ``changed`` changed their share of the headline; ``drop`` = reference minus
    candidate headline; ``sd`` the standard deviation of the per-unit drop (the standard error is
    ``sd / sqrt(n)``); ``swing`` the largest drop one unit can cause, as a per-unit drop; ``questions``
    and ``agree``: questions, and those answered the same (same parsed answer).
    """

    unit: str
    n: int
    changed: int
    drop: float
    sd: float
    swing: float
    questions: int
    agree: int

    def scaled(self, factor: float) -> Evidence:
        """The same rates observed on ``factor`` times as many units."""
        return Evidence(
            self.unit,
            max(1, round(self.n * factor)),
            round(self.changed * factor),
            self.drop,
            self.sd,
            self.swing,
            max(1, round(self.questions * factor)),
            round(self.agree * factor),
        )


def paired_evidence(name: str, reference: list[dict], candidate: list[dict], agree: int) -> Evidence | None:
    """Pair two runs' scored samples (same questions, same order of ``qid``) of benchmark ``name``."""
    scale = POINT_SCALE.get(name, 1.0)
    bench = get_benchmark(name)
    r_shares, c_shares = bench.headline_shares(reference), bench.headline_shares(candidate)
    if r_shares is None:
        return _bootstrap_evidence(name, reference, candidate, agree)
    units = [u for u in r_shares if u in c_shares]
    if not units:
        return None
    n = len(units)
    per_unit = np.array([n * (r_shares[u][0] - c_shares[u][0]) * scale for u in units])
    swing = max(n * r_shares[u][1] * scale for u in units)
    sd = float(per_unit.std(ddof=1)) if n > 1 else 0.0
    changed = int(np.count_nonzero(np.abs(per_unit) > 1e-9))
    unit = UNITS.get(name, "question")
    return Evidence(unit, n, changed, float(per_unit.mean()), sd, swing, len(reference), agree)


def _bootstrap_evidence(
    name: str, reference: list[dict], candidate: list[dict], agree: int
) -> Evidence | None:
    """POPE: F1 of yes/no predictions; the standard error by a seeded paired bootstrap over questions."""
    from benchmarks.tasks.pope import mean_f1

    by_qid = {s["qid"]: s for s in candidate}
    pairs = [(r, by_qid[r["qid"]]) for r in reference if r.get("score") is not None and r["qid"] in by_qid]
    if not pairs:
        return None
    ref_yes = np.array([r["parsed"] == "yes" for r, _ in pairs], dtype=np.float64)
    cand_yes = np.array([c["parsed"] == "yes" for _, c in pairs], dtype=np.float64)
    gold = np.where(np.array([r["score"] for r, _ in pairs]) >= 0.5, ref_yes, 1 - ref_yes)
    splits = {s: i for i, s in enumerate(sorted({str(r.get("category")) for r, _ in pairs}))}
    split = np.array([splits[str(r.get("category"))] for r, _ in pairs], dtype=np.float64)

    def drop(
        ref: np.ndarray, cand: np.ndarray, gold: np.ndarray, split: np.ndarray, axis: int = -1
    ) -> np.ndarray:
        return mean_f1(ref, gold, split) - mean_f1(cand, gold, split)

    n, changed = len(pairs), int(np.count_nonzero(ref_yes != cand_yes))
    observed = float(drop(ref_yes, cand_yes, gold, split))
    se = paired_bootstrap_se(drop, (ref_yes, cand_yes, gold, split), seed=BOOTSTRAP_SEED) if changed else 0.0
    # one answer moves its split's F1 by at most about 200 / (2 TP + FP + FN) points
    counts = [
        2 * np.sum(ref_yes * gold * (split == s)) + np.sum((ref_yes != gold) * (split == s))
        for s in splits.values()
    ]
    swing = n * 200 / (len(splits) * max(1.0, min(counts)))
    return Evidence("question", n, changed, observed, se * math.sqrt(n), swing, len(reference), agree)


def drop_bounds(e: Evidence, level: float) -> tuple[float, float]:
    """Lower and upper bounds of the drop, each one-sided at ``level``."""
    if e.changed < MIN_CHANGED:
        cap = min(MAX_DROP, e.swing * proportion_bounds(e.changed, e.n, level)[1])
        return -cap, cap
    low, high = mean_bounds(e.drop, e.sd, e.n, level)
    return max(low, -MAX_DROP), min(high, MAX_DROP)


def claim_p_values(e: Evidence, margin: AccuracyMargin) -> tuple[float, float]:
    """p-values of the claims "holds" and "drops" (small: the claim is safe)."""
    if e.changed < MIN_CHANGED:
        p_within = proportion_p_below(e.changed, e.n, margin.max_drop / e.swing) if e.swing > 0 else 0.0
        p_beyond = 1.0
    else:
        p_within = 1.0 - mean_p_above(e.drop, e.sd, e.n, margin.max_drop)
        p_beyond = mean_p_above(e.drop, e.sd, e.n, margin.max_drop)
    return with_agreement(p_within, p_beyond, e.agree, e.questions, margin)


def with_agreement(
    p_within: float, p_beyond: float, agree: int, questions: int, margin: AccuracyMargin
) -> tuple[float, float]:
    """p-values of "holds" and "drops" from those of the drop and, for a margin with an agreement
    threshold, the agreement of ``agree`` of ``questions`` answers."""
    if margin.min_agreement is None:
        return p_within, p_beyond
    threshold = margin.min_agreement / 100
    p_agree = proportion_p_above(agree, questions, threshold)
    p_disagree = proportion_p_below(agree, questions, threshold)
    # holds: both (intersection-union); drops: either (Bonferroni over the two)
    return max(p_within, p_agree), min(1.0, 2 * min(p_beyond, p_disagree))


def bounds(e: Evidence, level: float) -> dict[str, float]:
    """Drop and agreement bounds (percent), each one-sided at ``level``."""
    return bounds_dict(drop_bounds(e, level), e.agree, e.questions, level)


def bounds_dict(drop: tuple[float, float], agree: int, questions: int, level: float) -> dict[str, float]:
    """The bounds of a verdict: of the drop (given), and of the agreement of ``agree`` of ``questions``."""
    a_low, a_high = proportion_bounds(agree, questions, level)
    return {
        "drop_low": drop[0],
        "drop_high": drop[1],
        "agreement_low": 100 * a_low,
        "agreement_high": 100 * a_high,
    }


def decided_by_bounds(e: Evidence, margin: AccuracyMargin, level: float) -> str:
    """The verdict the bounds at ``level`` give on their own (used to project question counts)."""
    return verdict_of_bounds(bounds(e, level), margin)


def verdict_of_bounds(b: dict[str, float], margin: AccuracyMargin) -> str:
    """The verdict of drop and agreement bounds (as :func:`bounds` gives them) against ``margin``."""
    agreement = margin.min_agreement
    if b["drop_low"] > margin.max_drop or (agreement is not None and b["agreement_high"] < agreement):
        return DROPS
    if b["drop_high"] <= margin.max_drop and (agreement is None or b["agreement_low"] >= agreement):
        return HOLDS
    return NOT_DECIDED


def questions_to_decide(
    e: Any, margin: AccuracyMargin, level: float, bounds_of: Callable[[Any, float], dict[str, float]] = bounds
) -> int | None:
    """Roughly how many questions in all would decide, if the observed rates held (None: none would).

    ``e`` has ``questions`` and ``scaled`` (an :class:`Evidence`, or a suite's evidence with its
    ``bounds_of``)."""
    factor = 1.0
    while factor < 1e5:
        factor *= 1.25
        if verdict_of_bounds(bounds_of(e.scaled(factor), level), margin) != NOT_DECIDED:
            return round(e.questions * factor)
    return None


def holm(p_values: list[float], alpha: float = ALPHA) -> list[bool]:
    """Which claims Holm's step-down accepts at family-wise error ``alpha``."""
    if not p_values:
        return []
    from statsmodels.stats.multitest import multipletests

    return [bool(r) for r in multipletests(p_values, alpha=alpha, method="holm")[0]]


def family_verdicts(p_values: list[tuple[float, float]], alpha: float = ALPHA) -> tuple[list[str], float]:
    """Verdicts of comparisons with p-values (holds, drops), all claims one Holm family at ``alpha``;
    and the level of the simultaneous (Bonferroni) bounds of that family."""
    accepted = holm([p for pair in p_values for p in pair], alpha)
    verdicts = [
        HOLDS if accepted[2 * i] else DROPS if accepted[2 * i + 1] else NOT_DECIDED
        for i in range(len(p_values))
    ]
    return verdicts, alpha / max(1, len(accepted))


def decide(items: list[tuple[Evidence, AccuracyMargin]], alpha: float = ALPHA) -> list[dict[str, Any]]:
    """Verdicts of a family of comparisons, with their bounds, p-values and one-line reasons."""
    p_values = [claim_p_values(e, m) for e, m in items]
    verdicts, level = family_verdicts(p_values, alpha)
    return [verdict_row(e, m, level, v, p) for (e, m), v, p in zip(items, verdicts, p_values)]


def verdict_row(
    e: Evidence,
    margin: AccuracyMargin,
    level: float,
    verdict: str,
    p_values: tuple[float, float] | None = None,
) -> dict[str, Any]:
    """A verdict with its evidence, bounds at ``level``, p-values and its one-line reason."""
    p_values = p_values or claim_p_values(e, margin)
    row = row_of(verdict, asdict(e), margin, bounds(e, level), level, p_values)
    row["questions_needed"] = questions_to_decide(e, margin, level) if verdict == NOT_DECIDED else None
    row["reason"] = explain(row)
    return row


def row_of(
    verdict: str,
    evidence: dict[str, Any],
    margin: AccuracyMargin,
    bounds_at_level: dict[str, float],
    level: float,
    p_values: tuple[float, float],
) -> dict[str, Any]:
    """A verdict row's common part (a benchmark's or a suite mean's): evidence, margin, bounds, p-values."""
    return {
        "verdict": verdict,
        "evidence": evidence,
        "margin": asdict(margin),
        "bounds": bounds_at_level,
        "p_holds": p_values[0],
        "p_drops": p_values[1],
        "level": level,
    }


def explain(row: dict[str, Any]) -> str:
    """One line: what the data show against the margin."""
    e = row["evidence"]
    units = f"{e['unit']}s" if e["n"] != 1 else e["unit"]
    return reason_line(row, f"{e['changed']} of {e['n']} {units} changed, observed drop {e['drop']:+.2f} pt")


def reason_line(row: dict[str, Any], seen: str, drop_name: str = "drop") -> str:
    """``seen``, then the bounds of the drop and agreement against the margin, then (NOT DECIDED) how
    many more questions would decide it; ``row["evidence"]`` has ``agree`` and ``questions``."""
    e, m, b = row["evidence"], row["margin"], row["bounds"]
    agreement = ""
    if m["min_agreement"] is not None:
        agreement = f", agreement {100 * e['agree'] / max(1, e['questions']):.1f}% (bounds {b['agreement_low']:.1f}-{b['agreement_high']:.1f}%, needs {m['min_agreement']:g}%)"
    drop = (
        f"{drop_name} between {b['drop_low']:+.2f} and {b['drop_high']:+.2f} pt (margin {m['max_drop']:g} pt)"
    )
    line = f"{seen}; {drop}{agreement}"
    if row["verdict"] == NOT_DECIDED:
        line += f"; {more_questions(row['questions_needed'], e['questions'])}"
    return line


def more_questions(needed: int | None, asked: int) -> str:
    """How many more questions would decide a NOT DECIDED verdict (``needed``: in all)."""
    if needed is None:
        return "more questions at these rates would not decide it"
    more = f"about {max(0, needed - asked):,} more questions would decide it"
    if needed > FAR_OFF * max(1, asked):
        return f"{more} ({needed / max(1, asked):,.0f}x those asked)"
    return more


def overall(verdicts: list[str]) -> str:
    """A candidate's (or a report's) verdict over its benchmarks: DROPS if any drops, HOLDS if all hold."""
    if DROPS in verdicts:
        return DROPS
    if verdicts and all(v == HOLDS for v in verdicts):
        return HOLDS
    return NOT_DECIDED


EXIT_CODES = {HOLDS: 0, DROPS: 1, NOT_DECIDED: 3}
