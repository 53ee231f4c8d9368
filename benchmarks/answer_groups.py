"""How ``imp bench`` asks a benchmark's questions: each run of questions on one image in one call.

Questions on one image are consecutive in a run (``runner.group_by_image``); each such run with one
answer-token limit goes to ``Runtime.generate_many`` (the image encoded and its prefix prefilled
once, the questions decoded together), and every answer record says how many questions were decoded
together with it (``metadata.batch_size``, 1 = alone).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from benchmarks.base import Question


def same_image_groups(
    questions: Sequence[Question], image_dir: Path, reuse: bool = True, max_new_tokens: int | None = None
) -> Iterator[tuple[list[Question], list[Any], int]]:
    """Runs of consecutive questions on one image with one answer-token limit (the question's, capped
    at ``max_new_tokens``), with the image and the limit. Without ``reuse`` each question is a run."""
    for (_, limit), run in itertools.groupby(questions, key=lambda q: group_key(q, max_new_tokens)):
        for group in [list(run)] if reuse else [[q] for q in run]:
            q = group[0]
            image = q.image_bytes if q.image_bytes is not None else (image_dir / q.image if q.image else None)
            yield group, [] if image is None else [image], limit


def group_key(q: Question, max_new_tokens: int | None) -> tuple[Any, int]:
    limit = q.max_new_tokens if max_new_tokens is None else min(q.max_new_tokens, max_new_tokens)
    return (q.image_bytes if q.image_bytes is not None else q.image or ("text", q.qid)), limit


def record_of(q: Question, out: Any, runtime_name: str, model_id: str) -> dict[str, Any]:
    """An answers-file record; ``batch_size`` says how many questions were decoded together (1: alone)."""
    t = out.timings
    return {
        "qid": q.qid,
        "question_id": q.meta.get("question_id", q.qid),
        "prompt": q.text,
        "text": out.text,
        "answer_id": f"{runtime_name}-{q.qid}",
        "model_id": model_id,
        "metadata": {
            "finish_reason": out.finish_reason,
            "new_tokens": t.decode_tokens,
            "ttft_s": round(t.ttft_s, 5),
            "total_s": round(t.total_s, 5),
            "reused_tokens": t.reused_tokens,
            "prefill_tokens": t.prefill_tokens,
            "decode_s": round(t.decode_s, 5),
            "image_encode_s": round(t.image_encode_s, 5),
            "batch_size": t.batch_size,
        },
    }
