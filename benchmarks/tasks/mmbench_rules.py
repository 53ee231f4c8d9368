"""How a choice letter is read from an MMBench answer: VLMEvalKit's exact-matching rules, by name.

- ``vlmevalkit-2024`` (the default): replace each of ``.()[],:;!*#{}`` with a space and split;
  exactly one option letter among the words -> it; else exactly one option text contained in the
  lower-cased answer -> it; else unanswered. This is the rule that reproduces LLaVA-1.5's
  published MMBench-dev 67.7.
- ``vlmevalkit-2025``: VLMEvalKit's rule since 2025-08. A case-insensitive "answer is X" naming an
  option -> X; else exactly one option letter among the words and it is among the last four words
  -> it; else, for answers at most twice as long as all option texts together, exactly one option
  text contained in the answer -> it; else unanswered.

Unanswered answers count as wrong here (the official pipeline then asks an LLM to pick the choice).
Results record the rule that scored them (``info["extraction_rule"]``).
"""

from __future__ import annotations

import re
from collections.abc import Callable

_STRIP_CHARS = ".()[],:;!*#{}"
_ANSWER_IS = re.compile(r"answer is\s*[(\[]?\s*([A-Za-z])\b", re.IGNORECASE)
NEAR_END_WORDS = 4  # the 2025 rule takes a letter only among the last four words


def _words(text: str) -> list[str]:
    for ch in _STRIP_CHARS:
        text = text.replace(ch, " ")
    return text.split()


def _unique_text_match(text: str, options: dict[str, str]) -> str | None:
    lowered = text.lower()
    matches = [letter for letter, option in options.items() if str(option).lower() in lowered]
    return matches[0] if len(matches) == 1 else None


def extract_choice(text: str, options: dict[str, str]) -> str | None:
    """The option letter an answer names (``vlmevalkit-2024``), ``None`` when ambiguous."""
    words = _words(text)
    letters = [letter for letter in options if letter in words]
    if len(letters) == 1:
        return letters[0]
    return _unique_text_match(text, options)


def extract_choice_2025(text: str, options: dict[str, str]) -> str | None:
    """The option letter an answer names (``vlmevalkit-2025``), ``None`` when ambiguous."""
    stated = [m.upper() for m in _ANSWER_IS.findall(text) if m.upper() in options]
    if stated:
        return stated[-1]
    words = _words(text)
    letters = [letter for letter in options if letter in words]
    if len(letters) == 1 and words.index(letters[0]) >= len(words) - NEAR_END_WORDS:
        return letters[0]
    if len(text) > 2 * sum(len(str(option)) for option in options.values()):
        return None
    return _unique_text_match(text, options)


MMBENCH_RULES: tuple[str, ...] = ("vlmevalkit-2024", "vlmevalkit-2025")
EXTRACTORS: dict[str, Callable[[str, dict[str, str]], str | None]] = {
    "vlmevalkit-2024": extract_choice,
    "vlmevalkit-2025": extract_choice_2025,
}
