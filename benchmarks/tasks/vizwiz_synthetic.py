"""VizWiz from the synthetic shapes world, in the files :mod:`benchmarks.tasks.vizwiz` reads.

``n`` images, one question each (VizWiz has one per image), with the VizWiz "Unanswerable" line; about
a fifth ask about something the image lacks (a shape in an empty slot, text on a shapes image) and are
answered "unanswerable". Split ``test`` (default) and ``val``, both with answers in
``Annotations/<split>.json``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from benchmarks.base import UNANSWERABLE_SUFFIX
from benchmarks.tasks import vizwiz
from benchmarks.tasks.synthetic_common import BenchmarkFiles, SuiteWriter, answer_type, ten_answers
from impdefs import SHORT_ANSWER_TAIL
from impvlm.data.synthetic import POSITION_PHRASES, QA, Scene, pick, sample_scene

SUFFIX = "\n" + UNANSWERABLE_SUFFIX + SHORT_ANSWER_TAIL
UNANSWERABLE = "unanswerable"
SPLITS = ("test", "val")

#: One image: (scene, qa, ten answers, answer type).
Item = tuple[Scene, QA, list[str], str]


def write(suite: SuiteWriter, rng: np.random.Generator) -> BenchmarkFiles:
    """Write VizWiz's question, annotation and image files under ``suite.root``."""
    files = BenchmarkFiles()
    items = [_item(suite, rng) for _ in range(suite.n)]
    for split in SPLITS:
        questions, annotations = [], []
        for i, (scene, qa, answers, kind) in enumerate(items):
            image = f"VizWiz_{split}_{i:08d}.png"
            suite.save(scene, vizwiz.FOLDER, vizwiz.IMAGE_DIR.format(split=split), image)
            questions.append(
                {"question_id": i, "image": image, "text": qa.question + SUFFIX, "category": "default"}
            )
            annotations.append(_annotation(image, qa, answers, kind))
        suite.jsonl(files, questions, vizwiz.FOLDER, vizwiz.QUESTION_FILE.format(split=split))
        suite.json(files, annotations, vizwiz.FOLDER, vizwiz.ANNOTATION_FILE.format(split=split))
    files.questions = files.images = len(items)
    files.details = {"splits": list(SPLITS), "unanswerable": sum(t == UNANSWERABLE for *_, t in items)}
    return files


def _item(suite: SuiteWriter, rng: np.random.Generator) -> Item:
    scene = sample_scene(rng, suite.cfg)
    if rng.random() < 0.2:
        qa = _unanswerable(suite, scene, rng)
        answers = [UNANSWERABLE] * int(rng.integers(7, 11))
        answers += [pick(rng, ("unsuitable", "nothing", "no text")) for _ in range(10 - len(answers))]
        return scene, qa, [answers[i] for i in rng.permutation(10)], UNANSWERABLE
    (qa,) = suite.open_or_verify(scene, rng, 1, verify=0.15)
    answers = ten_answers(rng, qa, surface=False)
    if rng.random() < 0.15:  # someone found the photo unusable
        answers[int(rng.integers(10))] = UNANSWERABLE
    return scene, qa, answers, answer_type(qa)


def _unanswerable(suite: SuiteWriter, scene: Scene, rng: np.random.Generator) -> QA:
    """A question about something the image does not show."""
    if scene.is_sign:
        where = POSITION_PHRASES[pick(rng, suite.cfg.positions)]
        return QA(
            pick(rng, (f"What shape is {where}?", f"What colour is the shape {where}?")),
            UNANSWERABLE,
            "none",
        )
    empty = [p for p in suite.cfg.positions if scene.at(p) is None]
    options = [pick(rng, ("What word is written in the image?", "What does the text say?"))]
    if empty:
        where = POSITION_PHRASES[pick(rng, empty)]
        options += [f"What colour is the shape {where}?", f"What shape is {where}?"]
    return QA(pick(rng, options), UNANSWERABLE, "none")


def _annotation(image: str, qa: QA, answers: list[str], kind: str) -> dict[str, Any]:
    return {
        "image": image,
        "question": qa.question,
        "answers": [
            {"answer": a, "answer_confidence": "yes" if a == qa.answer else "maybe"} for a in answers
        ],
        "answer_type": kind,
        "answerable": int(kind != UNANSWERABLE),
    }
