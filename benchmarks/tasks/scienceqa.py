"""ScienceQA-IMG: multiple-choice science questions (test CQM-A, 4,241 problems; 2,017 with an image).

Layout under ``root`` (LLaVA's ``playground/data/eval``)::

    scienceqa/llava_test_CQM-A.json    the test problems in LLaVA's conversation format (JSON list);
                                       "image" only on problems that have one
    scienceqa/images/test/             images (Question.image is relative to it, e.g. "5/image.png")
    scienceqa/problems.json            ScienceQA's problems: choices, answer index, image
    scienceqa/pid_splits.json          problem ids per split (read by the official script only)

All 4,241 problems are asked (text-only ones without an image); the headline is the accuracy on the
IMG subset, decided by the problem's ``image`` field. Question text: the human turn without
``<image>``, stripped, plus the multiple-choice suffix. When ``problems.json`` is absent, the answer
letter of the conversation's gpt turn, the option lines of the prompt and the record's ``image`` field
stand in for it (noted in the result).

Parsing (LLaVA ``eval_science_qa.py``): the whole text is one of A-E -> it; else the text has at least
3 characters, starts with one of A-E followed by ``". "`` -> that letter; else exactly one match of
``The answer is ([A-Z]).`` -> it; else ``FAILED``. A letter beyond the number of choices is wrong.
"""

from __future__ import annotations

import re
from pathlib import Path

from benchmarks.base import (
    LONG_MAX_NEW_TOKENS,
    MULTIPLE_CHOICE_SUFFIX,
    Benchmark,
    BenchmarkDataError,
    BenchmarkResult,
    Question,
    SampleScore,
    read_json,
)
from impdefs import IMAGE_TOKEN

FOLDER = "scienceqa"
QUESTION_FILE = "llava_test_CQM-A.json"
IMAGE_DIR = "images/test"
PROBLEMS_FILE = "problems.json"
SPLITS_FILE = "pid_splits.json"

OPTIONS = ("A", "B", "C", "D", "E")
FAILED = "FAILED"
_ANSWER_IS = re.compile(r"The answer is ([A-Z]).")


def parse_sqa(text: str) -> str:
    """The chosen letter (any of A-Z) or ``"FAILED"``, as LLaVA's ScienceQA evaluation reads it."""
    if text in OPTIONS:
        return text
    if len(text) >= 3 and text[0] in OPTIONS and text[1:3] == ". ":
        return text[0]
    found = _ANSWER_IS.findall(text)
    return found[0] if len(found) == 1 else FAILED


def choice_index(letter: str, n_choices: int) -> int:
    """Index of ``letter`` among the first ``n_choices`` options, -1 when it is not one of them."""
    valid = OPTIONS[:n_choices]
    return valid.index(letter) if letter in valid else -1


def count_option_lines(prompt: str) -> int:
    """Number of options A., B., ... listed after the last line starting with ``"A. "``."""
    lines = prompt.split("\n")
    starts = [i for i, line in enumerate(lines) if line.startswith("A. ")]
    if not starts:
        return 0
    count = 0
    for line in lines[starts[-1] :]:
        if count < len(OPTIONS) and line.startswith(OPTIONS[count] + ". "):
            count += 1
    return count


class ScienceQA(Benchmark):
    name = "sqa"
    headline_name = "img_accuracy"

    def load(self, root: Path) -> list[Question]:
        path = Path(root) / FOLDER / QUESTION_FILE
        records = read_json(path, "question file")
        if not isinstance(records, list):
            raise BenchmarkDataError(f"{path} is not a JSON list of problems")
        questions = []
        for i, record in enumerate(records):
            try:
                pid = str(record["id"])
                human = record["conversations"][0]["value"]
            except (KeyError, IndexError, TypeError):
                raise BenchmarkDataError(f"record {i} of {path} lacks id / conversations") from None
            prompt = human.replace(IMAGE_TOKEN, "").strip()
            meta = {"has_image": "image" in record, "n_choices": count_option_lines(prompt)}
            convs = record["conversations"]
            if len(convs) > 1 and convs[1].get("value") in OPTIONS:
                meta["answer"] = convs[1]["value"]
            questions.append(
                Question(
                    qid=pid,
                    image=record.get("image"),
                    text=prompt + "\n" + MULTIPLE_CHOICE_SUFFIX,
                    max_new_tokens=LONG_MAX_NEW_TOKENS,
                    category="IMG" if "image" in record else "TXT",
                    meta=meta,
                )
            )
        return questions

    def image_dir(self, root: Path) -> Path:
        return Path(root) / FOLDER / IMAGE_DIR

    def _truth(self, root: Path, questions: list[Question]) -> tuple[dict[str, tuple[int, int, bool]], str]:
        """``qid -> (answer index, number of choices, has image)`` and a note on the source."""
        problems_path = Path(root) / FOLDER / PROBLEMS_FILE
        truth: dict[str, tuple[int, int, bool]] = {}
        if problems_path.is_file():
            problems = read_json(problems_path, "ScienceQA problems file")
            for q in questions:
                prob = problems.get(q.qid)
                if prob is None:
                    raise BenchmarkDataError(f"problem {q.qid} is not in {problems_path}")
                truth[q.qid] = (int(prob["answer"]), len(prob["choices"]), bool(prob.get("image")))
            return truth, ""
        for q in questions:
            if "answer" not in q.meta:
                raise BenchmarkDataError(f"missing file: {problems_path} (and problem {q.qid} has no answer)")
            truth[q.qid] = (
                OPTIONS.index(q.meta["answer"]),
                int(q.meta["n_choices"]),
                bool(q.meta["has_image"]),
            )
        return truth, f"ground truth from {QUESTION_FILE} ({PROBLEMS_FILE} absent)"

    def sampling_unit(self, question: Question) -> str | None:
        """A problem with an image (the headline); text-only problems are no part of it."""
        return question.qid if question.meta.get("has_image") else None

    def score(self, root: Path, answers: dict[str, str], questions: list[Question]) -> BenchmarkResult:
        truth, note = self._truth(root, questions)
        samples = []
        img_scores, all_scores = [], []
        failed = 0
        for q in questions:
            answer_idx, n_choices, has_image = truth[q.qid]
            text = answers.get(q.qid)
            parsed = parse_sqa(FAILED if text is None else text)
            failed += parsed == FAILED
            correct = float(choice_index(parsed, n_choices) == answer_idx)
            samples.append(SampleScore(q.qid, parsed, correct))
            all_scores.append(correct)
            if has_image:
                img_scores.append(correct)
        metrics = {
            "accuracy": 100 * sum(all_scores) / len(all_scores) if all_scores else 0.0,
            "n": float(len(all_scores)),
            "n_img": float(len(img_scores)),
            "failed": float(failed),
        }
        headline = None
        if img_scores:
            headline = 100 * sum(img_scores) / len(img_scores)
            metrics["img_accuracy"] = headline
        else:
            note = "; ".join(x for x in (note, "no problem with an image among the questions") if x)
        return BenchmarkResult(self.name, self.headline_name, headline, metrics, samples, note=note)
