"""TextVQA from the synthetic shapes world, in the files :mod:`benchmarks.tasks.textvqa` reads.

``n`` sign images x 1-2 questions (the word; the text's colour), "Reference OCR token:" line with the
rendered word (sometimes plus a misread), 10 answers, keyed by (image id, question).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from benchmarks.tasks import textvqa
from benchmarks.tasks.synthetic_common import BenchmarkFiles, SuiteWriter, sign_scene, ten_answers
from impdefs import SHORT_ANSWER_TAIL
from impvlm.data.synthetic import QA, ask

#: Look-alike letters an OCR system confuses.
LOOKALIKE = {"O": "0", "I": "1", "S": "5", "B": "8", "A": "4", "E": "F", "C": "G", "U": "V", "M": "N"}


def write(suite: SuiteWriter, rng: np.random.Generator) -> BenchmarkFiles:
    """Write TextVQA's question, annotation and image files under ``suite.root``."""
    files = BenchmarkFiles()
    questions, data = [], []
    used: set[str] = set()
    for _ in range(suite.n):
        scene = sign_scene(rng, suite.cfg)
        image_id = f"{int(rng.integers(0, 2**63)):016x}"
        while image_id in used:  # pragma: no cover - 64-bit ids do not collide in practice
            image_id = f"{int(rng.integers(0, 2**63)):016x}"
        used.add(image_id)
        image = f"{image_id}.png"
        suite.save(scene, textvqa.FOLDER, textvqa.IMAGE_DIR, image)
        tokens = [(scene.word or "").upper()]
        if rng.random() < 0.3:
            tokens.append(_misread(rng, tokens[0]))
        tokens = [tokens[i] for i in rng.permutation(len(tokens))]
        qas = [ask(scene, "ocr", rng, suite.cfg)]
        if rng.random() < 0.5:
            qas.append(ask(scene, "colour", rng, suite.cfg))
        for qa in qas:
            text = f"{qa.question}\n{textvqa.OCR_PREFIX}{', '.join(tokens)}{SHORT_ANSWER_TAIL}"
            questions.append({"question_id": image_id, "image": image, "text": text, "category": "default"})
            data.append(_record(suite, rng, qa, image_id, 50_000 + len(data)))
    annotations = {"dataset_type": "val", "dataset_name": "textvqa", "dataset_version": "0.5.1", "data": data}
    suite.jsonl(files, questions, textvqa.FOLDER, textvqa.QUESTION_FILE)
    suite.json(files, annotations, textvqa.FOLDER, textvqa.ANNOTATION_FILE)
    files.questions, files.images = len(questions), suite.n
    return files


def _record(
    suite: SuiteWriter, rng: np.random.Generator, qa: QA, image_id: str, question_id: int
) -> dict[str, Any]:
    return {
        "question": qa.question,
        "image_id": image_id,
        "image_classes": ["Sign"],
        "image_width": suite.cfg.image_size,
        "image_height": suite.cfg.image_size,
        "answers": ten_answers(rng, qa, surface=True),
        "question_tokens": qa.question.lower().rstrip("?").split(),
        "question_id": question_id,
        "set_name": "val",
    }


def _misread(rng: np.random.Generator, token: str) -> str:
    """An OCR misreading: one letter swapped for a look-alike or a random capital."""
    j = int(rng.integers(len(token)))
    letter = LOOKALIKE.get(token[j]) or chr(ord("A") + int(rng.integers(26)))
    return token[:j] + letter + token[j + 1 :]
