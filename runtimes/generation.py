"""What a generation gives: the answer (from chosen tokens, by the stop rules) and its timings.

One :class:`Answer` follows one sequence being decoded, the same whether it is decoded alone
(``Runtime.generate``) or together with others about the same image (``Runtime.generate_many``).
"""

from __future__ import annotations

import resource
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

UNFINISHED_CHARACTER = "\ufffd"  # what a multi-byte character cut between tokens decodes to


@dataclass
class Timings:
    """Per-call timings; tokens/s are derived."""

    image_encode_s: float = 0.0
    images_encoded: int = 0
    prefill_tokens: int = 0
    prefill_s: float = 0.0
    reused_tokens: int = 0
    decode_tokens: int = 0
    decode_s: float = 0.0
    ttft_s: float = 0.0
    total_s: float = 0.0
    peak_rss_mb: float = 0.0
    batch_size: int = 1  # sequences decoded together with this one's (times are then its share)

    @property
    def prefill_tokens_per_s(self) -> float:
        return self.prefill_tokens / self.prefill_s if self.prefill_s > 0 else 0.0

    @property
    def decode_tokens_per_s(self) -> float:
        return self.decode_tokens / self.decode_s if self.decode_s > 0 else 0.0

    def to_dict(self) -> dict[str, float]:
        out = asdict(self)
        out["prefill_tokens_per_s"] = self.prefill_tokens_per_s
        out["decode_tokens_per_s"] = self.decode_tokens_per_s
        return out


@dataclass
class Generation:
    text: str
    token_ids: list[int]
    finish_reason: str  # "stop" or "length"
    timings: Timings = field(default_factory=Timings)


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (MB)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


class Answer:
    """The tokens of one answer so far, and whether (and why) it has ended.

    Args:
        detokenize: token ids -> text (special tokens dropped).
        stop_ids: tokens that end the answer (not part of it) unless ``ignore_stop``.
        stop: strings that end the answer; the token completing one is not part of it.
        max_new_tokens: the most tokens the answer may have (it ends with ``"length"`` there).
        ignore_stop: keep going past stop tokens, to exactly ``max_new_tokens`` (speed benchmarks).
    """

    def __init__(
        self,
        detokenize: Callable[[list[int]], str],
        stop_ids: frozenset[int],
        stop: Sequence[str] = (),
        max_new_tokens: int = 128,
        ignore_stop: bool = False,
    ) -> None:
        self._detokenize = detokenize
        self._stop_ids = frozenset() if ignore_stop else stop_ids
        self.stop = list(stop)
        self.max_new_tokens = max_new_tokens
        self.token_ids: list[int] = []
        self.decoded = ""
        self.finish_reason = "length"
        self.done = max_new_tokens <= 0
        self._emitted = ""

    def push(self, token: int) -> None:
        """Take the next chosen token; afterwards ``done`` says whether the answer has ended."""
        if token in self._stop_ids:
            self.finish_reason, self.done = "stop", True
            return
        self.token_ids.append(token)
        self.decoded = self._detokenize(self.token_ids)
        if self.stop and any(s in self.decoded for s in self.stop):
            self.finish_reason, self.done = "stop", True
            self.token_ids.pop()  # the stop string's token is not part of the answer's tokens
            return
        self.done = len(self.token_ids) >= self.max_new_tokens

    @property
    def text(self) -> str:
        return answer_text(self.decoded, self.stop)

    def new_text(self) -> str:
        """The text settled since the last call (streaming); once ``done``, the rest of :attr:`text`."""
        shown = self.text if self.done else settled_text(self.decoded, self.stop)
        if len(shown) > len(self._emitted) and shown.startswith(self._emitted):
            chunk, self._emitted = shown[len(self._emitted) :], shown
            return chunk
        return ""


def answer_text(decoded: str, stop: Sequence[str] = ()) -> str:
    """The one rule from decoded tokens to the answer, the same whether it is streamed or returned.

    The text is cut at the first stop string, a multi-byte character left unfinished at the end
    (generation stopped between its bytes, decoded as U+FFFD) is dropped, and surrounding
    whitespace is stripped.
    """
    for s in stop:
        decoded = decoded.split(s, 1)[0]
    return decoded.rstrip(UNFINISHED_CHARACTER).strip()


def settled_text(decoded: str, stop: Sequence[str] = ()) -> str:
    """The part of :func:`answer_text` no later token can change: without an unfinished character,
    without a tail that may still grow into a stop string, and without trailing whitespace (the
    answer may end there). Streaming emits this; its end is always a prefix of the final answer."""
    decoded = decoded.rstrip(UNFINISHED_CHARACTER)
    hold = max((_stop_prefix_at_end(decoded, s) for s in stop), default=0)
    return decoded[: len(decoded) - hold].strip()


def _stop_prefix_at_end(text: str, stop: str) -> int:
    """Length of the longest proper prefix of ``stop`` that ``text`` ends with."""
    for n in range(min(len(stop) - 1, len(text)), 0, -1):
        if text.endswith(stop[:n]):
            return n
    return 0


def common_prefix(*sequences: Sequence[Any]) -> int:
    """Length of the longest prefix all ``sequences`` share."""
    n = min(map(len, sequences))
    for i in range(n):
        if any(seq[i] != sequences[0][i] for seq in sequences[1:]):
            return i
    return n
