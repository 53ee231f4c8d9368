"""The top-2 logit gap of every token a runtime chooses, to tell a near-tie from a real difference.

Two runtimes that round differently (llama.cpp against PyTorch, a many-row matrix product against a
one-row one) can only pick different greedy tokens where the two best logits are closer than their
rounding. These runtimes record that gap at each step (``gaps``), so a test can allow exactly those
partings and no others.
"""

from __future__ import annotations

import numpy as np

from runtimes.exported import ExportedRuntime
from runtimes.native import LlamaCppNativeRuntime
from runtimes.torch_runtime import TorchRuntime


def top2_gap(logits: np.ndarray) -> float:
    second, first = np.sort(np.asarray(logits).reshape(-1))[-2:]
    return float(first - second)


class RecordsGaps:
    """Records the top-2 logit gap of each token ``generate`` chooses (``gaps``, one per step)."""

    gaps: list[float]

    def _prefill(self, *args):
        logits = super()._prefill(*args)
        if logits is not None:  # None: generate_many's prefix, which chooses no token
            self.gaps = [top2_gap(logits)]
        return logits

    def _eval_tokens(self, ids):
        logits = super()._eval_tokens(ids)
        self.gaps = [*getattr(self, "gaps", []), top2_gap(logits)]
        return logits


class GapTorch(RecordsGaps, TorchRuntime):
    pass


class GapExported(RecordsGaps, ExportedRuntime):
    pass


class GapNative(RecordsGaps, LlamaCppNativeRuntime):
    pass


def divergence(want: list[int], got: list[int]) -> int | None:
    """The first step where two greedy answers differ (a stop counts as a token), or None."""
    if want == got:
        return None
    return next((i for i, (a, b) in enumerate(zip(want, got)) if a != b), min(len(want), len(got)))


def partings(answers: list[tuple[list[int], list[float]]], others: list[list[int]]) -> list[float]:
    """The reference's top-2 gap at each answer of ``others`` that parts from the reference's
    ``(token ids, gaps)``: empty when every answer is the same."""
    out = []
    for (want, gaps), got in zip(answers, others, strict=True):
        k = divergence(want, got)
        if k is not None:
            out.append(gaps[k])
    return out
