"""MM-Vet from the synthetic shapes world, in the files :mod:`benchmarks.tasks.mmvet` reads.

``n`` images x 2 open questions, no suffix; ground truth single words, some ``<OR>`` forms
("left<OR>on the left", "2<OR>two"), capabilities rec / ocr / spat. Graded offline with
``IMP_JUDGE=exact`` (:class:`benchmarks.mmvet_judge.ExactMatchJudge`).
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from benchmarks.tasks import mmvet
from benchmarks.tasks.synthetic_common import NUMBER_WORDS, BenchmarkFiles, SuiteWriter
from impvlm.data.synthetic import POSITION_PHRASES, QA, Scene, sample_scene


def write(suite: SuiteWriter, rng: np.random.Generator) -> BenchmarkFiles:
    """Write MM-Vet's question file, ground truth and images under ``suite.root``."""
    files = BenchmarkFiles()
    questions, truth = [], {}
    capabilities: Counter[str] = Counter()
    for _ in range(suite.n):
        scene = sample_scene(rng, suite.cfg)
        image = f"v1_{len(questions)}.png"
        suite.save(scene, mmvet.FOLDER, mmvet.IMAGE_DIR, image)
        for qa in suite.open_or_verify(scene, rng, 2, verify=0.0):
            qid = len(questions)
            questions.append({"image": image, "text": qa.question, "category": "conv", "question_id": qid})
            caps = _capabilities(qa, scene)
            capabilities.update(caps)
            truth[f"v1_{qid}"] = {
                "imagename": image,
                "capability": caps,
                "question": qa.question,
                "answer": _answer(qa),
            }
    suite.jsonl(files, questions, mmvet.FOLDER, mmvet.QUESTION_FILE)
    suite.json(files, truth, mmvet.FOLDER, mmvet.GROUND_TRUTH_FILE, indent=2)
    files.questions, files.images = len(questions), suite.n
    files.details = {"capabilities": dict(sorted(capabilities.items())), "judge": "IMP_JUDGE=exact"}
    return files


def _answer(qa: QA) -> str:
    """The ground truth, with ``<OR>`` alternatives for positions and small counts."""
    if qa.kind == "position" and qa.answer in POSITION_PHRASES:
        return f"{qa.answer}<OR>{POSITION_PHRASES[qa.answer]}"
    if qa.kind == "count" and qa.answer.isdigit() and int(qa.answer) < len(NUMBER_WORDS):
        return f"{qa.answer}<OR>{NUMBER_WORDS[int(qa.answer)]}"
    return qa.answer


def _capabilities(qa: QA, scene: Scene) -> list[str]:
    if qa.kind == "ocr":
        return ["ocr"]
    if scene.is_sign:  # the colour / count of a word
        return ["ocr", "rec"]
    if qa.kind == "position":
        return ["rec", "spat"]
    return ["rec"]
