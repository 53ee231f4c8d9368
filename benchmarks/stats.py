"""Paired statistics over per-question scores of two runs of the same benchmark (scipy.stats).

One-sided bounds at ``level`` (the probability that the true value lies beyond the bound):
Clopper-Pearson for proportions, Student's t for means of per-unit differences, and scipy's paired
bootstrap for the standard error of a statistic that is no mean (POPE's F1).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from scipy import stats


def bootstrap_delta_ci(
    reference: Sequence[float],
    candidate: Sequence[float],
    n_boot: int = 2000,
    alpha: float = 0.05,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Mean paired delta (candidate - reference) and its percentile bootstrap CI."""
    ref = np.asarray(reference, dtype=np.float64)
    cand = np.asarray(candidate, dtype=np.float64)
    if ref.shape != cand.shape or ref.size == 0:
        return 0.0, 0.0, 0.0
    diff = cand - ref
    if np.all(diff == diff[0]):
        return float(diff[0]), float(diff[0]), float(diff[0])
    result = stats.bootstrap(
        (diff,), np.mean, n_resamples=n_boot, confidence_level=1 - alpha, method="percentile", rng=seed
    )
    return float(diff.mean()), float(result.confidence_interval.low), float(result.confidence_interval.high)


def mcnemar_exact(reference: Sequence[float], candidate: Sequence[float]) -> dict[str, float]:
    """Exact (binomial) McNemar test for binary per-question scores.

    ``b`` = right in the reference only, ``c`` = right in the candidate only; the two-sided p-value
    is that of ``b`` under Binomial(b + c, 1/2).
    """
    b = sum(1 for r, c in zip(reference, candidate) if r >= 0.5 > c)
    c = sum(1 for r, c_ in zip(reference, candidate) if c_ >= 0.5 > r)
    if b + c == 0:
        return {"b": 0, "c": 0, "p_value": 1.0}
    return {"b": b, "c": c, "p_value": float(stats.binomtest(b, b + c, 0.5).pvalue)}


def is_binary(values: Sequence[float]) -> bool:
    return all(v in (0, 1, 0.0, 1.0) for v in values)


def proportion_bounds(successes: int, trials: int, level: float) -> tuple[float, float]:
    """Clopper-Pearson (exact) lower and upper bounds of a proportion, each one-sided at ``level``."""
    if trials == 0:
        return 0.0, 1.0
    ci = stats.binomtest(successes, trials).proportion_ci(confidence_level=1 - 2 * level, method="exact")
    return float(ci.low), float(ci.high)


def proportion_p_below(successes: int, trials: int, p: float) -> float:
    """p-value of "the proportion is below ``p``" (exact binomial; small: it surely is)."""
    if p >= 1.0:
        return 0.0 if successes < trials else 1.0
    return float(stats.binomtest(successes, trials, max(p, 0.0), alternative="less").pvalue)


def proportion_p_above(successes: int, trials: int, p: float) -> float:
    """p-value of "the proportion is above ``p``" (exact binomial; small: it surely is)."""
    if p <= 0.0:
        return 0.0 if successes > 0 else 1.0
    return float(stats.binomtest(successes, trials, min(p, 1.0), alternative="greater").pvalue)


def mean_bounds(mean: float, sd: float, n: int, level: float) -> tuple[float, float]:
    """Student's t lower and upper bounds of a mean from ``n`` units, each one-sided at ``level``."""
    half = stats.t.isf(level, max(n - 1, 1)) * sd / np.sqrt(max(n, 1))
    return float(mean - half), float(mean + half)


def mean_p_above(mean: float, sd: float, n: int, value: float) -> float:
    """p-value of "the true mean is above ``value``" (one-sided t test on ``n`` units)."""
    se = max(sd / np.sqrt(max(n, 1)), 1e-12)
    return float(stats.t.sf((mean - value) / se, max(n - 1, 1)))


def paired_bootstrap_se(
    statistic: Callable[..., np.ndarray], arrays: Sequence[np.ndarray], n_resamples: int = 2000, seed: int = 0
) -> float:
    """Standard error of ``statistic(*arrays)`` by resampling the units (rows) of all arrays together.

    ``statistic`` takes the arrays with the resamples along the last axis (``vectorized``).
    """
    result = stats.bootstrap(
        tuple(arrays),
        statistic,
        paired=True,
        vectorized=True,
        n_resamples=n_resamples,
        batch=250,
        method="percentile",
        rng=seed,
    )
    return float(result.standard_error)
