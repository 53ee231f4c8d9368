"""MME: 14 yes/no subtasks, two questions per image (2,374 questions, 1,187 images).

Layout under ``root`` (LLaVA's ``playground/data/eval``)::

    MME/llava_mme.jsonl                          questions; question_id = image = "<category>/.../<file>"
    MME/MME_Benchmark_release_version/           the official benchmark folder (Question.image is
                                                 relative to it), holding the ground truth:
        <category>/questions_answers_YN/<stem>.txt   for subtasks with an images/ folder
        <category>/<stem>.txt                        for the others
                                                     (lines "question<TAB>Yes|No")

The two questions of an image share their ``question_id``, so ``qid`` is ``"<question_id>#0"`` /
``"<question_id>#1"``. A question is matched to its ground-truth line by its text without the
instruction suffix and without the ground truth's " Please answer yes or no.".

Scoring (MME ``eval_tool/calculation.py``): the answer is lower-cased; exactly "yes"/"no" is taken,
else the first 4 characters decide ("yes" in them -> yes, else "no" in them -> no, else "other",
which is wrong). Per subtask: acc = correct / questions, acc+ = images with both questions correct /
images, score = 100 acc + 100 acc+. Perception (headline, max 2000) and cognition (max 800) are sums
of subtask scores.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.base import (
    SHORT_ANSWER_SUFFIX,
    SHORT_MAX_NEW_TOKENS,
    Benchmark,
    BenchmarkDataError,
    BenchmarkResult,
    Question,
    SampleScore,
    first_existing,
    llava_jsonl_questions,
)

FOLDER = "MME"
QUESTION_FILE = "llava_mme.jsonl"
BENCHMARK_DIR = "MME_Benchmark_release_version"
QA_DIR = "questions_answers_YN"
GT_SUFFIX = "Please answer yes or no."

PERCEPTION = (
    "existence",
    "count",
    "position",
    "color",
    "posters",
    "celebrity",
    "scene",
    "landmark",
    "artwork",
    "OCR",
)
COGNITION = ("commonsense_reasoning", "numerical_calculation", "text_translation", "code_reasoning")
SUBTASKS = PERCEPTION + COGNITION


def parse_mme(text: str) -> str:
    """``"yes"``, ``"no"`` or ``"other"``, as MME's calculation script reads an answer."""
    text = text.lower()
    if text in ("yes", "no"):
        return text
    prefix = text[:4]
    if "yes" in prefix:
        return "yes"
    if "no" in prefix:
        return "no"
    return "other"


def question_key(text: str) -> str:
    """A question without instruction suffixes, whitespace-normalized (to match ground-truth lines)."""
    text = text.replace(SHORT_ANSWER_SUFFIX, "").replace(GT_SUFFIX, "")
    return " ".join(text.split())


def read_ground_truth(path: Path) -> dict[str, str]:
    """``question_key -> "yes"/"no"`` of one ground-truth file."""
    truth: dict[str, str] = {}
    with open(path, encoding="utf-8-sig") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            question, sep, answer = line.strip().rpartition("\t")
            answer = answer.strip().lower()
            if not sep or answer not in ("yes", "no"):
                raise BenchmarkDataError(f"line {lineno} of {path} is not 'question<TAB>Yes|No'")
            truth[question_key(question)] = answer
    return truth


def subtask_scores(records: list[tuple[str, str, bool]]) -> dict[str, float]:
    """acc, acc+ and score of one subtask from ``(image, parsed, correct)`` records."""
    images: dict[str, bool] = {}
    for image, _, correct in records:
        images[image] = images.get(image, True) and correct
    acc = sum(c for _, _, c in records) / len(records)
    acc_plus = sum(images.values()) / len(images)
    return {
        "acc": 100 * acc,
        "acc_plus": 100 * acc_plus,
        "score": 100 * acc + 100 * acc_plus,
        "other": float(sum(p == "other" for _, p, _ in records)),
    }


class MME(Benchmark):
    name = "mme"
    headline_name = "perception"

    def load(self, root: Path) -> list[Question]:
        path = Path(root) / FOLDER / QUESTION_FILE
        questions = llava_jsonl_questions(path, max_new_tokens=SHORT_MAX_NEW_TOKENS, numbered=True)
        for q in questions:
            if q.category not in SUBTASKS:
                raise BenchmarkDataError(f"question {q.qid} in {path} has unknown category {q.category!r}")
        return questions

    def image_dir(self, root: Path) -> Path:
        return Path(root) / FOLDER / BENCHMARK_DIR

    def sampling_unit(self, question: Question) -> str | None:
        """The image (acc+ pairs its two questions); cognition images are no part of the headline."""
        question_id = str(question.meta.get("question_id", question.qid.rsplit("#", 1)[0]))
        return question_id if (question.category or question_id.split("/")[0]) in PERCEPTION else None

    def headline_shares(self, samples: list[dict[str, Any]]) -> dict[str, tuple[float, float]] | None:
        """An image's share of perception: 100 / questions of its subtask per right answer, plus
        100 / images of its subtask if both are right."""
        per_task: dict[str, dict[str, list[float]]] = {}
        for s in samples:
            unit = s.get("unit", s["qid"].rsplit("#", 1)[0])
            task = s.get("category") or s["qid"].split("/")[0]
            if s.get("score") is not None and unit is not None and task in PERCEPTION:
                per_task.setdefault(task, {}).setdefault(unit, []).append(float(s["score"]))
        shares: dict[str, tuple[float, float]] = {}
        for units in per_task.values():
            questions, images = sum(len(v) for v in units.values()), len(units)
            for unit, scores in units.items():
                share = 100 * sum(scores) / questions + 100 * min(scores) / images
                shares[unit] = (share, 100 * len(scores) / questions + 100 / images)
        return shares

    def truth_file(self, root: Path, question_id: str) -> Path:
        category = question_id.split("/")[0]
        stem = question_id.split("/")[-1].split(".")[0]
        base = self.image_dir(root) / category
        return first_existing([base / QA_DIR / f"{stem}.txt", base / f"{stem}.txt"], "MME ground-truth file")

    def score(self, root: Path, answers: dict[str, str], questions: list[Question]) -> BenchmarkResult:
        cache: dict[Path, dict[str, str]] = {}
        per_task: dict[str, list[tuple[str, str, bool]]] = {}
        samples = []
        for q in questions:
            question_id = str(q.meta.get("question_id", q.qid.rsplit("#", 1)[0]))
            path = self.truth_file(root, question_id)
            if path not in cache:
                cache[path] = read_ground_truth(path)
            gold = cache[path].get(question_key(q.text))
            if gold is None:
                raise BenchmarkDataError(
                    f"no ground truth for question {q.qid} ({q.text.splitlines()[0]!r}) in {path}"
                )
            parsed = parse_mme(answers.get(q.qid) or "")
            correct = parsed == gold
            per_task.setdefault(q.category or question_id.split("/")[0], []).append(
                (question_id, parsed, correct)
            )
            samples.append(SampleScore(q.qid, parsed, float(correct)))
        metrics: dict[str, float] = {}
        for task, records in per_task.items():
            metrics.update({f"{task}/{k}": v for k, v in subtask_scores(records).items()})
        perception = [t for t in PERCEPTION if t in per_task]
        cognition = [t for t in COGNITION if t in per_task]
        if cognition:
            metrics["cognition"] = sum(metrics[f"{t}/score"] for t in cognition)
        headline = None
        note = ""
        if perception:
            headline = sum(metrics[f"{t}/score"] for t in perception)
            metrics["perception"] = headline
            if len(perception) < len(PERCEPTION):
                note = f"perception over {len(perception)} of {len(PERCEPTION)} subtasks"
        else:
            note = "no perception subtask among the questions"
        return BenchmarkResult(self.name, self.headline_name, headline, metrics, samples, note=note)
