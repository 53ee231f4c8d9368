"""MMBench from the synthetic shapes world, in the TSV :mod:`benchmarks.tasks.mmbench` reads.

``n`` questions with 2-4 options and every circular rotation (``index + k * 1e6``, options and answer
rotated), base64 PNG images in the TSV, category / l2-category columns.
"""

from __future__ import annotations

import base64
import csv

import numpy as np

from benchmarks.tasks import mmbench
from benchmarks.tasks.synthetic_common import BenchmarkFiles, SuiteWriter, choices, mc_domain, png
from impvlm.data.synthetic import QA, applicable_kinds, ask, pick, sample_scene

HINTS = ("The image shows flat shapes or a word on a dark background.", "Look closely at the image.")
CATEGORIES: dict[str, tuple[str, str]] = {  # kind -> (category, l2-category)
    "colour": ("attribute_recognition", "finegrained_perception (instance-level)"),
    "shape": ("attribute_recognition", "finegrained_perception (instance-level)"),
    "position": ("object_localization", "finegrained_perception (instance-level)"),
    "ocr": ("ocr", "finegrained_perception (instance-level)"),
    "count": ("spatial_relationship", "finegrained_perception (cross-instance)"),
}
COLUMNS = (
    "index",
    "question",
    "hint",
    "A",
    "B",
    "C",
    "D",
    "answer",
    "category",
    "image",
    "source",
    "l2-category",
    "comment",
    "split",
)

#: One question before rotation: (index, qa, options, hint, base64 PNG).
Original = tuple[int, QA, list[str], str, str]


def write(suite: SuiteWriter, rng: np.random.Generator) -> BenchmarkFiles:
    """Write MMBench's TSV (images inline) under ``suite.root``."""
    files = BenchmarkFiles()
    originals: list[Original] = []
    for i in range(suite.n):
        scene = sample_scene(rng, suite.cfg)
        kind = pick(rng, [k for k in applicable_kinds(scene) if k != "exists"])
        qa = ask(scene, kind, rng, suite.cfg)
        options = choices(rng, qa.answer, mc_domain(qa, suite.cfg), most=len(mmbench.OPTION_LETTERS))
        hint = pick(rng, HINTS) if rng.random() < 0.25 else ""
        image = base64.b64encode(png(suite.render(scene))).decode("ascii")
        originals.append((i, qa, options, hint, image))
    rows = []
    for k in range(len(mmbench.OPTION_LETTERS)):  # originals first, then each rotation
        rows += [_row(original, k) for original in originals if k < len(original[2])]
    path = suite.path(mmbench.FOLDER, mmbench.QUESTION_FILE)
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, delimiter="\t", lineterminator="\n")
        writer.writerow(COLUMNS)
        writer.writerows(rows)
    files.files.append(f"{mmbench.FOLDER}/{mmbench.QUESTION_FILE}")
    files.questions, files.images = len(rows), len(originals)  # questions asked: every rotation
    files.details = {"circular_questions": len(originals)}
    return files


def _row(original: Original, k: int) -> list[str]:
    """The TSV row of ``original`` with its options rotated by ``k``."""
    i, qa, options, hint, image = original
    rotated = options[k:] + options[:k]
    letters = mmbench.OPTION_LETTERS
    category, l2 = CATEGORIES[qa.kind]
    row = {
        "index": str(i + k * mmbench.ROTATION),
        "question": qa.question,
        "hint": hint,
        **{letters[j]: (rotated[j] if j < len(rotated) else "") for j in range(len(letters))},
        "answer": letters[rotated.index(qa.answer)],
        "category": category,
        "image": image,
        "source": "synthetic-shapes",
        "l2-category": l2,
        "comment": "",
        "split": "dev",
    }
    return [row[c] for c in COLUMNS]
