"""The few definitions all four packages share: the image token, the short-answer instruction and the
root of the user-error hierarchy.

Why a package of its own: ``impvlm``, ``export``, ``runtimes`` and ``benchmarks`` all need these, but
the benchmark scorers must import without torch, transformers or any of ``impvlm`` (saved answers are
re-scored anywhere), and importing anything under ``impvlm`` runs ``impvlm/__init__.py``. So the
definitions live here, in a dependency-free package that imports nothing, below all four packages:
``impdefs <- impvlm <- export <- runtimes <- benchmarks``. :mod:`impvlm.errors` and
:mod:`impvlm.templates` re-export them, so ``from impvlm.errors import ImpError`` keeps working.

Example (a short-answer question as the training data and the benchmark files spell it)::

    f"{IMAGE_TOKEN}\\nHow many shapes are there?{SHORT_ANSWER_TAIL}"
    # '<image>\\nHow many shapes are there?\\nAnswer the question using a single word or phrase.'
"""

from __future__ import annotations

__all__ = ["IMAGE_TOKEN", "SHORT_ANSWER_SUFFIX", "SHORT_ANSWER_TAIL", "ImpError"]

#: Where an image goes in a prompt; the tokenizer holds it as one special token.
IMAGE_TOKEN = "<image>"
#: LLaVA-1.5's short-answer instruction, the last line of a short-answer question (the question files
#: of VQAv2, GQA, VizWiz, TextVQA, POPE, MME and the synthetic training set carry it in their text).
SHORT_ANSWER_SUFFIX = "Answer the question using a single word or phrase."
#: What a short-answer question's text ends with: a line break, then :data:`SHORT_ANSWER_SUFFIX`.
SHORT_ANSWER_TAIL = "\n" + SHORT_ANSWER_SUFFIX


class ImpError(Exception):
    """A user-facing error with a one-line message naming what is at fault.

    Every mistake a user can make (a bad option, a missing file, a broken record, a benchmark file
    that does not parse) raises a subclass; the ``imp`` command prints the line and exits with
    status 2 instead of a traceback.
    """
