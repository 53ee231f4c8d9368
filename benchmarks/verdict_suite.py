"""The suite claim: did a candidate's mean headline drop over its benchmarks stay within the margin?

One benchmark's verdict needs thousands of identical answers before a near-lossless margin (0.2 pt)
holds; the candidate's benchmarks together have them. The suite drop of a candidate is the mean of
its ``B`` benchmarks' drops, ``theta = (1/B) sum_b drop_b`` (percentage points, as :class:`Evidence`
gives them). Its two claims (holds / drops) join the per-benchmark claims in the same Holm family
(:func:`benchmarks.verdict.family_verdicts`), so the report's family-wise error stays at ``ALPHA``.

Bounds of ``theta``: with at least :data:`MIN_CHANGED` changed units over all benchmarks, a normal
bound with ``SE^2 = sum_b sd_b^2 / (B^2 n_b)``; with fewer, the exact worst case: one changed unit
of benchmark ``b`` moves ``theta`` by at most ``c_b = swing_b / (B n_b)``, and the number of changed
units (a sum of independent binomials) is at most the Poisson upper bound of its count, so
``theta <= max_b c_b * lambda_up``. Agreement: Clopper-Pearson over all questions of the benchmarks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from benchmarks.stats import normal_bounds, normal_p_above, poisson_p_below, poisson_upper
from benchmarks.verdict import (
    ALPHA,
    MAX_DROP,
    MIN_CHANGED,
    NOT_DECIDED,
    Evidence,
    bounds_dict,
    claim_p_values,
    family_verdicts,
    questions_to_decide,
    reason_line,
    row_of,
    verdict_row,
    with_agreement,
)
from export.quant_types import AccuracyMargin


@dataclass(frozen=True)
class SuiteEvidence:
    """The paired evidence of a candidate's benchmarks (one :class:`Evidence` each), as one mean."""

    parts: tuple[Evidence, ...]

    @property
    def benchmarks(self) -> int:
        return len(self.parts)

    @property
    def n(self) -> int:
        return sum(e.n for e in self.parts)

    @property
    def changed(self) -> int:
        return sum(e.changed for e in self.parts)

    @property
    def questions(self) -> int:
        return sum(e.questions for e in self.parts)

    @property
    def agree(self) -> int:
        return sum(e.agree for e in self.parts)

    @property
    def drop(self) -> float:
        """The observed mean drop (percentage points)."""
        return sum(e.drop for e in self.parts) / self.benchmarks

    @property
    def se(self) -> float:
        """Standard error of the mean drop (benchmarks independent)."""
        return math.sqrt(sum(e.sd**2 / e.n for e in self.parts)) / self.benchmarks

    @property
    def step(self) -> float:
        """The most one changed unit of any benchmark moves the mean drop: ``max_b swing_b / (B n_b)``."""
        return max(e.swing / (self.benchmarks * e.n) for e in self.parts)

    def scaled(self, factor: float) -> SuiteEvidence:
        """The same rates observed on ``factor`` times as many units of every benchmark."""
        return SuiteEvidence(tuple(e.scaled(factor) for e in self.parts))

    def summary(self) -> dict[str, Any]:
        """What the report keeps of it (the keys :func:`benchmarks.verdict.reason_line` reads)."""
        keys = ("benchmarks", "n", "changed", "drop", "se", "step", "questions", "agree")
        return {key: getattr(self, key) for key in keys}


def suite_drop_bounds(s: SuiteEvidence, level: float) -> tuple[float, float]:
    """Lower and upper bounds of the mean drop, each one-sided at ``level``."""
    if s.changed < MIN_CHANGED:
        cap = min(MAX_DROP, s.step * poisson_upper(s.changed, level))
        return -cap, cap
    low, high = normal_bounds(s.drop, s.se, level)
    return max(low, -MAX_DROP), min(high, MAX_DROP)


def suite_bounds(s: SuiteEvidence, level: float) -> dict[str, float]:
    """Mean drop and pooled agreement bounds (percent), each one-sided at ``level``."""
    return bounds_dict(suite_drop_bounds(s, level), s.agree, s.questions, level)


def suite_p_values(s: SuiteEvidence, margin: AccuracyMargin) -> tuple[float, float]:
    """p-values of the claims "the mean drop holds" and "it drops" (small: the claim is safe)."""
    if s.changed < MIN_CHANGED:
        # H0 theta >= margin needs at least margin / step changed units on average
        p_within = poisson_p_below(s.changed, margin.max_drop / s.step) if s.step > 0 else 0.0
        p_beyond = 1.0
    else:
        p_beyond = normal_p_above(s.drop, s.se, margin.max_drop)
        p_within = 1.0 - p_beyond
    return with_agreement(p_within, p_beyond, s.agree, s.questions, margin)


def suite_row(
    s: SuiteEvidence, margin: AccuracyMargin, level: float, verdict: str, p_values: tuple[float, float]
) -> dict[str, Any]:
    """The suite verdict with its evidence, bounds at ``level``, p-values and its one-line reason."""
    row = row_of(verdict, s.summary(), margin, suite_bounds(s, level), level, p_values)
    needed = questions_to_decide(s, margin, level, suite_bounds) if verdict == NOT_DECIDED else None
    row["questions_needed"] = needed
    plural = "s" if s.benchmarks != 1 else ""
    seen = (
        f"{s.changed} of {s.n} units changed over {s.benchmarks} benchmark{plural}, "
        f"observed mean drop {s.drop:+.2f} pt"
    )
    row["reason"] = reason_line(row, seen, "mean drop")
    return row


def decide_with_suites(
    items: list[tuple[Evidence, AccuracyMargin]],
    suites: list[tuple[SuiteEvidence, AccuracyMargin]],
    alpha: float = ALPHA,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Verdicts of the per-benchmark comparisons and of the suite means, all claims one Holm family."""
    p_values = [claim_p_values(e, m) for e, m in items] + [suite_p_values(s, m) for s, m in suites]
    verdicts, level = family_verdicts(p_values, alpha)
    rows = [verdict_row(e, m, level, v, p) for (e, m), v, p in zip(items, verdicts, p_values)]
    rest = zip(suites, verdicts[len(items) :], p_values[len(items) :])
    return rows, [suite_row(s, m, level, v, p) for (s, m), v, p in rest]
