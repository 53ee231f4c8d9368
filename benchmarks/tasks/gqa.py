"""GQA: compositional questions on scene images (testdev-balanced, 12,578 questions).

Layout under ``root`` (LLaVA's ``playground/data/eval``)::

    gqa/llava_gqa_testdev_balanced.jsonl     questions (question_id is a string)
    gqa/data/images/                         images (Question.image is relative to it)
    gqa/testdev_balanced_questions.json      GQA's question file with the answers; LLaVA's bundle
                                             keeps it as gqa/data/testdev_balanced_questions.json,
                                             which is used when the first is absent

Scoring (LLaVA ``convert_gqa_for_eval.py`` + GQA ``eval.py``): prediction = ``text.rstrip('.').lower()``;
a question is correct iff the prediction equals its ``answer`` exactly; accuracy over the balanced
questions, also split into "open" (structural type ``query``) and "binary" (the rest), and per
structural / semantic type. Every question must have a prediction. :meth:`GQA.write_submission`
writes ``testdev_balanced_predictions.json`` (``[{"questionId", "prediction"}]``) for GQA's own
``eval.py``.
"""

from __future__ import annotations

from pathlib import Path

from benchmarks.base import (
    SHORT_MAX_NEW_TOKENS,
    Benchmark,
    BenchmarkDataError,
    BenchmarkResult,
    Question,
    SampleScore,
    first_existing,
    llava_jsonl_questions,
    read_json,
    write_json,
)

FOLDER = "gqa"
QUESTION_FILE = "llava_gqa_testdev_balanced.jsonl"
IMAGE_DIR = "data/images"
ANNOTATION_FILE = "testdev_balanced_questions.json"
ANNOTATION_FALLBACK = "data/testdev_balanced_questions.json"
PREDICTIONS_FILE = "testdev_balanced_predictions.json"


def gqa_prediction(text: str) -> str:
    """What LLaVA submits to GQA's evaluator for an answer text."""
    return text.rstrip(".").lower()


def _missing(questions: list[Question], answers: dict[str, str]) -> list[str]:
    return [q.qid for q in questions if answers.get(q.qid) is None]


class GQA(Benchmark):
    name = "gqa"
    headline_name = "accuracy"

    def load(self, root: Path) -> list[Question]:
        return llava_jsonl_questions(Path(root) / FOLDER / QUESTION_FILE, max_new_tokens=SHORT_MAX_NEW_TOKENS)

    def image_dir(self, root: Path) -> Path:
        return Path(root) / FOLDER / IMAGE_DIR

    def annotation_path(self, root: Path) -> Path:
        base = Path(root) / FOLDER
        return first_existing([base / ANNOTATION_FILE, base / ANNOTATION_FALLBACK], "GQA annotation file")

    def _check_complete(self, questions: list[Question], answers: dict[str, str]) -> None:
        missing = _missing(questions, answers)
        if missing:
            raise BenchmarkDataError(f"GQA: no prediction for {len(missing)} question(s), first {missing[0]}")

    def score(self, root: Path, answers: dict[str, str], questions: list[Question]) -> BenchmarkResult:
        path = self.annotation_path(root)
        self._check_complete(questions, answers)
        annotations = read_json(path, "GQA annotation file")
        groups: dict[str, list[float]] = {}
        samples = []
        skipped = 0
        for q in questions:
            ann = annotations.get(q.qid)
            if ann is None:
                raise BenchmarkDataError(f"GQA question {q.qid} is not in {path}")
            pred = gqa_prediction(answers[q.qid])
            if not ann.get("isBalanced", True):
                skipped += 1
                samples.append(SampleScore(q.qid, pred, None))
                continue
            correct = float(pred == ann["answer"])
            samples.append(SampleScore(q.qid, pred, correct))
            types = ann.get("types") or {}
            structural = types.get("structural")
            keys = ["accuracy", "open" if structural == "query" else "binary"]
            if structural:
                keys.append(f"structural/{structural}")
            if types.get("semantic"):
                keys.append(f"semantic/{types['semantic']}")
            for key in keys:
                groups.setdefault(key, []).append(correct)
        metrics = {key: 100 * sum(v) / len(v) for key, v in sorted(groups.items())}
        metrics["n"] = float(len(groups.get("accuracy", [])))
        note = f"{skipped} unbalanced question(s) not scored" if skipped else ""
        headline = metrics.get("accuracy")
        return BenchmarkResult(self.name, self.headline_name, headline, metrics, samples, note=note)

    def write_submission(
        self, root: Path, answers: dict[str, str], questions: list[Question], out_dir: Path
    ) -> list[Path]:
        self._check_complete(questions, answers)
        rows = [{"questionId": q.qid, "prediction": gqa_prediction(answers[q.qid])} for q in questions]
        return [write_json(Path(out_dir) / PREDICTIONS_FILE, rows)]
