"""Paired statistics over per-question scores of two runs of the same benchmark (scipy.stats).

One-sided bounds at ``level`` (the probability that the true value lies beyond the bound):
Clopper-Pearson for proportions, Student's t for means of per-unit differences, and scipy's paired
bootstrap for the standard error of a statistic that is no mean (POPE's F1); for a mean over
benchmarks, normal bounds and the exact Poisson bound of a count of rare events.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from scipy import stats


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


def normal_bounds(mean: float, se: float, level: float) -> tuple[float, float]:
    """Normal lower and upper bounds of an estimate with standard error ``se``, each one-sided at ``level``."""
    half = float(stats.norm.isf(level)) * se
    return mean - half, mean + half


def normal_p_above(mean: float, se: float, value: float) -> float:
    """p-value of "the true value is above ``value``" (one-sided z test)."""
    return float(stats.norm.sf((mean - value) / max(se, 1e-12)))


def poisson_upper(count: int, level: float) -> float:
    """Upper bound of a Poisson mean after ``count`` events, one-sided at ``level`` (exact, Garwood);
    conservative for a sum of independent binomial counts."""
    return float(stats.chi2.ppf(1 - level, 2 * count + 2) / 2)


def poisson_p_below(count: int, mean: float) -> float:
    """p-value of "the Poisson mean is below ``mean``" after ``count`` events (small: it surely is)."""
    return float(stats.poisson.cdf(count, mean))
