"""VQAv2: open-ended questions on COCO (test-dev 2015: 107,394 questions, scored by the EvalAI server).

Layout under ``root`` (LLaVA's ``playground/data/eval``)::

    vqav2/llava_vqav2_mscoco_test-dev2015.jsonl   questions asked (split "test-dev2015", the default)
    vqav2/test2015/                               images (Question.image is relative to it)
    vqav2/llava_vqav2_mscoco_test2015.jsonl       optional: the full test2015 question list; when
                                                  present the submission covers it ("" where unanswered),
                                                  as the EvalAI server expects
    vqav2/v2_mscoco_test-dev2015_annotations.json optional: VQA-format annotations for a local score

A local replica on val is the split "val2014" (``VQAv2(split="val2014")``), read from
``vqav2/llava_vqav2_mscoco_val2014.jsonl`` + ``vqav2/val2014/`` + the official
``vqav2/v2_mscoco_val2014_annotations.json``. Annotation files use the official format:
``{"annotations": [{"question_id", "answers": [{"answer": ...}] * 10, "answer_type", ...}]}`` (a bare
list is accepted).

Scoring: every answer is EvalAI-processed (what LLaVA uploads) and scored with the official VQA
evaluator (:func:`benchmarks.normalize.vqa_accuracy`); accuracies are ``round(100 * acc, 2)``. Without
annotations the headline is ``None`` and :meth:`VQAv2.write_submission` writes the upload file
``vqav2_<split>_submission.json`` (``[{"question_id": int, "answer": processed}]``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from benchmarks.base import (
    SHORT_MAX_NEW_TOKENS,
    STATUS_SUBMISSION,
    Benchmark,
    BenchmarkDataError,
    BenchmarkResult,
    Question,
    SampleScore,
    llava_jsonl_questions,
    read_json,
    read_jsonl,
    write_json,
)
from benchmarks.normalize import accuracy_percent, evalai_process, vqa_accuracy

log = logging.getLogger(__name__)

FOLDER = "vqav2"
SPLITS = ("test-dev2015", "val2014")
QUESTION_FILE = "llava_vqav2_mscoco_{split}.jsonl"
IMAGE_DIRS = {"test-dev2015": "test2015", "val2014": "val2014"}
FULL_TEST_FILE = "llava_vqav2_mscoco_test2015.jsonl"
ANNOTATION_FILE = "v2_mscoco_{split}_annotations.json"
SUBMISSION_FILE = "vqav2_{split}_submission.json"


def annotation_records(data: object, path: Path) -> list[dict]:
    records = data.get("annotations") if isinstance(data, dict) else data
    if not isinstance(records, list):
        raise BenchmarkDataError(f"{path} has no 'annotations' list")
    return records


def answer_strings(record: dict, path: Path) -> list[str]:
    try:
        return [a["answer"] if isinstance(a, dict) else str(a) for a in record["answers"]]
    except (KeyError, TypeError):
        raise BenchmarkDataError(f"an annotation in {path} has no answers list") from None


def score_vqa(
    questions: list[Question],
    answers: dict[str, str],
    truth: dict[str, tuple[list[str], str | None]],
    accuracy: Callable[[str, list[str]], float] = vqa_accuracy,
) -> tuple[float | None, dict[str, float], list[SampleScore]]:
    """``accuracy`` of EvalAI-processed answers (what is uploaded) over the questions in ``truth``."""
    samples, scores = [], []
    by_type: dict[str, list[float]] = {}
    for q in questions:
        processed = evalai_process(answers.get(q.qid) or "")
        entry = truth.get(q.qid)
        if entry is None:
            samples.append(SampleScore(q.qid, processed, None))
            continue
        gts, answer_type = entry
        acc = accuracy(processed, gts)
        scores.append(acc)
        samples.append(SampleScore(q.qid, processed, acc))
        if answer_type:
            by_type.setdefault(answer_type, []).append(acc)
    if not scores:
        return None, {}, samples
    headline = accuracy_percent(sum(scores) / len(scores))
    metrics = {"accuracy": headline, "n": float(len(scores))}
    metrics.update({f"type/{t}": accuracy_percent(sum(v) / len(v)) for t, v in sorted(by_type.items())})
    return headline, metrics, samples


def checked_split(title: str, split: str, splits: tuple[str, ...]) -> str:
    if split not in splits:
        raise BenchmarkDataError(f"unknown {title} split {split!r}; valid splits: {', '.join(splits)}")
    return split


def evalai_result(
    benchmark: Benchmark,
    title: str,
    submission: str,
    annotations: Path,
    scored: tuple[float | None, dict[str, float], list[SampleScore]],
) -> BenchmarkResult:
    """The result of a benchmark whose test split the EvalAI server scores: a local replica's score when
    ``annotations`` gave answers, else no headline and a note naming the file to upload."""
    headline, metrics, samples = scored
    name, headline_name = benchmark.name, benchmark.headline_name
    if headline is None:
        note = (
            f"{title} is scored by the EvalAI server: upload {submission} from write_submission "
            f"(no local annotations with answers at {annotations})"
        )
        return BenchmarkResult(name, headline_name, None, {}, samples, note, STATUS_SUBMISSION)
    n_unscored = sum(s.score is None for s in samples)
    note = f"local replica on {int(metrics['n'])} annotated questions"
    if n_unscored:
        note += f"; {n_unscored} question(s) without annotation not scored"
    return BenchmarkResult(name, headline_name, headline, metrics, samples, note=note)


class VQAv2(Benchmark):
    name = "vqav2"
    headline_name = "accuracy"

    def __init__(self, split: str = "test-dev2015"):
        self.split = checked_split("VQAv2", split, SPLITS)

    def __repr__(self) -> str:
        return f"VQAv2(split={self.split!r})"

    def load(self, root: Path) -> list[Question]:
        path = Path(root) / FOLDER / QUESTION_FILE.format(split=self.split)
        return llava_jsonl_questions(path, max_new_tokens=SHORT_MAX_NEW_TOKENS)

    def image_dir(self, root: Path) -> Path:
        return Path(root) / FOLDER / IMAGE_DIRS[self.split]

    def annotation_path(self, root: Path) -> Path:
        return Path(root) / FOLDER / ANNOTATION_FILE.format(split=self.split)

    def score(self, root: Path, answers: dict[str, str], questions: list[Question]) -> BenchmarkResult:
        path = self.annotation_path(root)
        truth: dict[str, tuple[list[str], str | None]] = {}
        if path.is_file():
            for record in annotation_records(read_json(path, "VQAv2 annotation file"), path):
                truth[str(record.get("question_id"))] = (
                    answer_strings(record, path),
                    record.get("answer_type"),
                )
        submission = SUBMISSION_FILE.format(split=self.split)
        return evalai_result(
            self, f"VQAv2 {self.split}", submission, path, score_vqa(questions, answers, truth)
        )

    def write_submission(
        self, root: Path, answers: dict[str, str], questions: list[Question], out_dir: Path
    ) -> list[Path]:
        full = Path(root) / FOLDER / FULL_TEST_FILE
        if self.split == "test-dev2015" and full.is_file():
            ids = [r["question_id"] for r in read_jsonl(full, "VQAv2 test2015 question file")]
        else:
            if self.split == "test-dev2015":
                log.warning(
                    "%s not found: the submission covers only the %d questions asked", full, len(questions)
                )
            ids = [q.meta.get("question_id", q.qid) for q in questions]
        rows = []
        for question_id in ids:
            text = answers.get(str(question_id))
            rows.append(
                {"question_id": _as_int(question_id), "answer": "" if text is None else evalai_process(text)}
            )
        return [write_json(Path(out_dir) / SUBMISSION_FILE.format(split=self.split), rows)]


def _as_int(value: object) -> object:
    try:
        return int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return value
