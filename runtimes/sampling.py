"""Next-token selection shared by every runtime: greedy argmax, or seeded temperature / top-p."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from impvlm.errors import ConfigError

MAX_TEMPERATURE = 2.0  # temperature: 0 (greedy) to this, OpenAI's range; top_p: in (0, 1]


def check_sampling(temperature: float, top_p: float) -> None:
    """The one rule for sampling settings (``imp chat`` and the server's requests apply it)."""
    if not 0 <= temperature <= MAX_TEMPERATURE:
        raise ConfigError(f"temperature {temperature} is out of range: use 0 (greedy) to {MAX_TEMPERATURE:g}")
    if not 0 < top_p <= 1:
        raise ConfigError(f"top_p {top_p} is out of range: use a value above 0 and at most 1")


@dataclass(frozen=True)
class SamplingConfig:
    """``greedy=True`` (the benchmarks' protocol) ignores the other fields."""

    greedy: bool = True
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        check_sampling(self.temperature, self.top_p)


def sample_next(logits: np.ndarray, config: SamplingConfig, rng: np.random.Generator) -> int:
    logits = np.asarray(logits, dtype=np.float64)
    if config.greedy or config.temperature <= 0:
        return int(np.argmax(logits))
    scaled = logits / config.temperature
    probs = np.exp(scaled - scaled.max())
    probs /= probs.sum()
    if config.top_p < 1.0:
        order = np.argsort(-probs)
        cumulative = np.cumsum(probs[order])
        cut = int(np.searchsorted(cumulative, config.top_p)) + 1
        mask = np.zeros_like(probs)
        mask[order[:cut]] = probs[order[:cut]]
        probs = mask / mask.sum()
    return int(rng.choice(len(probs), p=probs))
