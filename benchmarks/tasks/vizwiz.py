"""VizWiz-VQA: questions by blind people (test: 8,000 questions, scored by the EvalAI server).

Layout under ``root`` (LLaVA's ``playground/data/eval``)::

    vizwiz/llava_test.jsonl          questions of the split "test" (the default)
    vizwiz/test/                     images (Question.image is relative to it)
    vizwiz/Annotations/test.json     optional: VizWiz-format annotations for a local score

A local replica on val is the split "val" (``VizWiz(split="val")``): ``vizwiz/llava_val.jsonl`` +
``vizwiz/val/`` + the official ``vizwiz/Annotations/val.json``. Annotation files use the official
format, a list of ``{"image", "question", "answers": [{"answer", "answer_confidence"}] * 10,
"answer_type", "answerable"}`` keyed by image file name; the public ``test.json`` has no answers and
so counts as absent.

Scoring: answers are EvalAI-processed (so "Unanswerable" becomes "unanswerable"), as uploaded, and
scored as the VizWiz evaluator does (:func:`benchmarks.normalize.vizwiz_accuracy`: the prediction
normalized, the ground truth compared as given, leave-one-out mean), ``round(100 * acc, 2)``. Without annotations the headline is ``None`` and
:meth:`VizWiz.write_submission` writes ``vizwiz_<split>_submission.json``
(``[{"image": "VizWiz_test_XXXXXXXX.jpg", "answer": processed}]``); every question needs an answer.
"""

from __future__ import annotations

from pathlib import Path

from benchmarks.base import (
    SHORT_MAX_NEW_TOKENS,
    Benchmark,
    BenchmarkDataError,
    BenchmarkResult,
    Question,
    llava_jsonl_questions,
    read_json,
    write_json,
)
from benchmarks.normalize import evalai_process, vizwiz_accuracy
from benchmarks.tasks.vqav2 import answer_strings, checked_split, evalai_result, score_vqa

FOLDER = "vizwiz"
SPLITS = ("test", "val")
QUESTION_FILE = "llava_{split}.jsonl"
IMAGE_DIR = "{split}"
ANNOTATION_FILE = "Annotations/{split}.json"
SUBMISSION_FILE = "vizwiz_{split}_submission.json"


class VizWiz(Benchmark):
    name = "vizwiz"
    headline_name = "accuracy"

    def __init__(self, split: str = "test"):
        self.split = checked_split("VizWiz", split, SPLITS)

    def __repr__(self) -> str:
        return f"VizWiz(split={self.split!r})"

    def load(self, root: Path) -> list[Question]:
        path = Path(root) / FOLDER / QUESTION_FILE.format(split=self.split)
        return llava_jsonl_questions(path, max_new_tokens=SHORT_MAX_NEW_TOKENS)

    def image_dir(self, root: Path) -> Path:
        return Path(root) / FOLDER / IMAGE_DIR.format(split=self.split)

    def annotation_path(self, root: Path) -> Path:
        return Path(root) / FOLDER / ANNOTATION_FILE.format(split=self.split)

    def score(self, root: Path, answers: dict[str, str], questions: list[Question]) -> BenchmarkResult:
        path = self.annotation_path(root)
        by_image: dict[str, tuple[list[str], str | None]] = {}
        if path.is_file():
            records = read_json(path, "VizWiz annotation file")
            if not isinstance(records, list):
                raise BenchmarkDataError(f"{path} is not a list of annotations")
            for record in records:
                if isinstance(record, dict) and record.get("answers"):
                    by_image[str(record.get("image"))] = (
                        answer_strings(record, path),
                        record.get("answer_type"),
                    )
        truth = {q.qid: by_image[q.image] for q in questions if q.image in by_image}
        scored = score_vqa(questions, answers, truth, vizwiz_accuracy)
        submission = SUBMISSION_FILE.format(split=self.split)
        return evalai_result(self, f"VizWiz {self.split}", submission, path, scored)

    def write_submission(
        self, root: Path, answers: dict[str, str], questions: list[Question], out_dir: Path
    ) -> list[Path]:
        missing = [q.qid for q in questions if answers.get(q.qid) is None]
        if missing:
            raise BenchmarkDataError(
                f"VizWiz submission needs an answer for every question: {len(missing)} missing, first {missing[0]}"
            )
        rows = [{"image": q.image, "answer": evalai_process(answers[q.qid])} for q in questions]
        return [write_json(Path(out_dir) / SUBMISSION_FILE.format(split=self.split), rows)]
