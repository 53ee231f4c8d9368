"""TextVQA: questions about text in images (val v0.5.1, 5,000 questions on 3,166 images).

Layout under ``root`` (LLaVA's ``playground/data/eval``)::

    textvqa/llava_textvqa_val_v051_ocr.jsonl   questions; question_id holds the image id, the prompt
                                               carries a "Reference OCR token: ..." line
    textvqa/train_images/                      images (Question.image is relative to it)
    textvqa/TextVQA_0.5.1_val.json             annotations: {"data": [{"image_id", "question",
                                               "answers" (10), ...}]}

Image ids repeat, so ``qid`` is ``"<image_id>#<k>"``. Scoring (LLaVA ``eval_textvqa.py`` + the m4c
evaluator): annotations are keyed by (image id, lower-cased question), the question being the first
line of the prompt (the OCR line and the suffix removed); accuracy is the m4c leave-one-out VQA
accuracy with every answer EvalAI-processed, in percent.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

from benchmarks.base import (
    SHORT_MAX_NEW_TOKENS,
    Benchmark,
    BenchmarkDataError,
    BenchmarkResult,
    Question,
    SampleScore,
    llava_jsonl_questions,
    read_json,
)
from benchmarks.normalize import evalai_process, m4c_accuracy

FOLDER = "textvqa"
QUESTION_FILE = "llava_textvqa_val_v051_ocr.jsonl"
IMAGE_DIR = "train_images"
ANNOTATION_FILE = "TextVQA_0.5.1_val.json"
OCR_PREFIX = "Reference OCR token: "

_PLAIN_OCR_QUESTION = re.compile(r"Question: (.*?) Short answer:", re.DOTALL)


def question_from_prompt(prompt: str) -> str | None:
    """The lower-cased question of a TextVQA prompt, as LLaVA's ``prompt_processor`` finds it."""
    lines = prompt.split("\n")
    if prompt.startswith("OCR tokens: "):
        match = _PLAIN_OCR_QUESTION.search(prompt)
        question = match.group(1) if match else None
    elif OCR_PREFIX in prompt and len(lines) == 3:
        question = lines[1] if prompt.startswith(OCR_PREFIX.rstrip()) else lines[0]
    elif len(lines) == 2:
        question = lines[0]
    else:
        question = None
    return None if question is None else question.lower()


class TextVQA(Benchmark):
    name = "textvqa"
    headline_name = "accuracy"

    def load(self, root: Path) -> list[Question]:
        path = Path(root) / FOLDER / QUESTION_FILE
        out = []
        for q in llava_jsonl_questions(path, max_new_tokens=SHORT_MAX_NEW_TOKENS, numbered=True):
            question = question_from_prompt(q.text)
            if question is None:
                raise BenchmarkDataError(f"cannot find the question in the prompt of {q.qid} in {path}")
            out.append(replace(q, meta={**q.meta, "question": question}))
        return out

    def image_dir(self, root: Path) -> Path:
        return Path(root) / FOLDER / IMAGE_DIR

    def score(self, root: Path, answers: dict[str, str], questions: list[Question]) -> BenchmarkResult:
        path = Path(root) / FOLDER / ANNOTATION_FILE
        data = read_json(path, "TextVQA annotation file")
        records = data.get("data") if isinstance(data, dict) else None
        if not isinstance(records, list):
            raise BenchmarkDataError(f"{path} has no 'data' list")
        annotations = {(str(a["image_id"]), str(a["question"]).lower()): a["answers"] for a in records}
        samples, scores = [], []
        for q in questions:
            image_id = q.meta.get("question_id", q.qid.rsplit("#", 1)[0])
            key = (str(image_id), q.meta.get("question") or question_from_prompt(q.text) or "")
            gts = annotations.get(key)
            if gts is None:
                raise BenchmarkDataError(f"TextVQA question {q.qid} ({key[1]!r}) is not in {path}")
            text = answers.get(q.qid) or ""
            try:
                acc = m4c_accuracy(text, gts)
            except ValueError as exc:
                raise BenchmarkDataError(f"TextVQA question {q.qid}: {exc}") from None
            scores.append(acc)
            samples.append(SampleScore(q.qid, evalai_process(text), acc))
        headline = 100 * sum(scores) / len(scores) if scores else None
        metrics = {"accuracy": headline, "n": float(len(scores))} if scores else {}
        return BenchmarkResult(self.name, self.headline_name, headline, metrics, samples)
