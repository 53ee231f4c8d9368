"""Paired statistics over per-question scores of two runs of the same benchmark."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


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
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, diff.size, size=(n_boot, diff.size))
    means = diff[idx].mean(axis=1)
    low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return float(diff.mean()), float(low), float(high)


def mcnemar_exact(reference: Sequence[float], candidate: Sequence[float]) -> dict[str, float]:
    """Exact (binomial) McNemar test for binary per-question scores.

    ``b`` = right in the reference only, ``c`` = right in the candidate only; the two-sided p-value
    is that of ``min(b, c)`` under Binomial(b + c, 1/2).
    """
    b = sum(1 for r, c in zip(reference, candidate) if r >= 0.5 > c)
    c = sum(1 for r, c_ in zip(reference, candidate) if c_ >= 0.5 > r)
    n = b + c
    if n == 0:
        return {"b": 0, "c": 0, "p_value": 1.0}
    k = min(b, c)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return {"b": b, "c": c, "p_value": min(1.0, 2 * tail)}


def is_binary(values: Sequence[float]) -> bool:
    return all(v in (0, 1, 0.0, 1.0) for v in values)
