"""VQAv2 from the synthetic shapes world, in the files :mod:`benchmarks.tasks.vqav2` reads.

``n`` images x 3 open / yes-no questions; 10 answers each (the answer, surface variants that normalize
to it, a few plausible disagreements), ``answer_type`` yes/no / number / other. The same questions as
split ``test-dev2015`` (the default, what ``imp bench`` asks) with local annotations, and as the
``val2014`` replica; plus the official-evaluator question files.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from benchmarks.tasks import vqav2
from benchmarks.tasks.synthetic_common import BenchmarkFiles, SuiteWriter, answer_type, ten_answers
from impdefs import SHORT_ANSWER_TAIL
from impvlm.data.synthetic import QA, Scene, sample_scene

SPLITS = ("test-dev2015", "val2014")
IMAGE_NAMES = {"test-dev2015": "COCO_test2015_{:012d}.png", "val2014": "COCO_val2014_{:012d}.png"}

#: One image: (image_id, scene, [(question_id, qa, ten answers)]).
Item = tuple[int, Scene, list[tuple[int, QA, list[str]]]]


def write(suite: SuiteWriter, rng: np.random.Generator) -> BenchmarkFiles:
    """Write VQAv2's question, annotation and image files under ``suite.root``."""
    files = BenchmarkFiles()
    items: list[Item] = []
    for i in range(suite.n):
        image_id = i + 1
        scene = sample_scene(rng, suite.cfg)
        qas = suite.open_or_verify(scene, rng, 3, verify=0.25)
        rows = [(image_id * 1000 + k, qa, ten_answers(rng, qa, surface=True)) for k, qa in enumerate(qas)]
        items.append((image_id, scene, rows))
    for split in SPLITS:
        _write_split(suite, files, items, split)
    types = Counter(answer_type(qa) for _, _, rows in items for _, qa, _ in rows)
    files.questions = sum(types.values())
    files.images = len(items)
    files.details = {"splits": list(SPLITS), "answer_types": dict(sorted(types.items()))}
    return files


def _write_split(suite: SuiteWriter, files: BenchmarkFiles, items: list[Item], split: str) -> None:
    questions, annotations, official = [], [], []
    for image_id, scene, rows in items:
        image = IMAGE_NAMES[split].format(image_id)
        suite.save(scene, vqav2.FOLDER, vqav2.IMAGE_DIRS[split], image)
        for question_id, qa, answers in rows:
            questions.append(
                {
                    "question_id": question_id,
                    "image": image,
                    "text": qa.question + SHORT_ANSWER_TAIL,
                    "category": "default",
                }
            )
            official.append({"image_id": image_id, "question": qa.question, "question_id": question_id})
            annotations.append(_annotation(image_id, question_id, qa, answers))
    suite.jsonl(files, questions, vqav2.FOLDER, vqav2.QUESTION_FILE.format(split=split))
    header = {"data_type": "mscoco", "data_subtype": split.replace("-dev", "")}
    suite.json(
        files, {**header, "annotations": annotations}, vqav2.FOLDER, vqav2.ANNOTATION_FILE.format(split=split)
    )
    suite.json(
        files,
        {**header, "task_type": "OpenEnded", "questions": official},
        vqav2.FOLDER,
        f"v2_OpenEnded_mscoco_{split}_questions.json",
    )
    if split == "test-dev2015":  # the "full" test2015 list: here the same questions
        suite.jsonl(files, questions, vqav2.FOLDER, vqav2.FULL_TEST_FILE)


def _annotation(image_id: int, question_id: int, qa: QA, answers: list[str]) -> dict[str, Any]:
    return {
        "question_type": _question_type(qa.question),
        "multiple_choice_answer": qa.answer,
        "answers": [
            {"answer": a, "answer_confidence": "yes" if a == qa.answer else "maybe", "answer_id": j + 1}
            for j, a in enumerate(answers)
        ],
        "image_id": image_id,
        "answer_type": answer_type(qa),
        "question_id": question_id,
    }


def _question_type(question: str) -> str:
    return " ".join(question.lower().rstrip("?").split()[:3])
