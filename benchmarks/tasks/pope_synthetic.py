"""POPE from the synthetic shapes world, in the files :mod:`benchmarks.tasks.pope` reads.

``n`` images with 3 shapes; per split one yes and one no question per shape, "Is there a red circle in
the image?". Negatives: random (any absent object), popular (absent objects most frequent in the set),
adversarial (absent objects sharing a colour or shape with a present one).
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from benchmarks.tasks import pope
from benchmarks.tasks.synthetic_common import BenchmarkFiles, SuiteWriter, object_scene
from impdefs import SHORT_ANSWER_TAIL
from impvlm.data.synthetic import Scene, article

ORDER = ("adversarial", "random", "popular")  # the order of the question file
OFFSETS = {"adversarial": 0, "random": 10_000_000, "popular": 20_000_000}  # question-id offsets

Pair = tuple[str, str]  # (colour, shape)
Record = tuple[str, str, str]  # (image, question, label)


def write(suite: SuiteWriter, rng: np.random.Generator) -> BenchmarkFiles:
    """Write POPE's question, label and image files under ``suite.root``."""
    files = BenchmarkFiles()
    cfg = suite.cfg
    n_objects = min(3, cfg.max_objects)
    scenes = [object_scene(rng, cfg, n_objects) for _ in range(suite.n)]
    every = [(c, s) for c in cfg.colours for s in cfg.shapes]
    frequency = Counter((o.colour, o.shape) for scene in scenes for o in scene.objects)
    records: dict[str, list[Record]] = {split: [] for split in pope.SPLITS}
    for i, scene in enumerate(scenes):
        image = f"COCO_val2014_{i + 1:012d}.png"
        suite.save(scene, pope.FOLDER, pope.IMAGE_DIR, image)
        positives, negatives = _pairs(rng, scene, every, frequency)
        for split in pope.SPLITS:
            for yes, no in zip(positives, negatives[split]):
                for (colour, shape), label in ((yes, "yes"), (no, "no")):
                    records[split].append(
                        (image, f"Is there {article(colour)} {colour} {shape} in the image?", label)
                    )
    questions = []
    for split in ORDER:
        labels = []
        for j, (image, text, label) in enumerate(records[split], 1):
            labels.append({"question_id": j, "image": image, "text": text, "label": label})
            questions.append(
                {
                    "question_id": OFFSETS[split] + j,
                    "image": image,
                    "text": text + SHORT_ANSWER_TAIL,
                    "category": split,
                }
            )
        suite.jsonl(files, labels, pope.FOLDER, pope.LABEL_DIR, pope.LABEL_FILE.format(split=split))
    suite.jsonl(files, questions, pope.FOLDER, pope.QUESTION_FILE)
    files.questions, files.images = len(questions), suite.n
    files.details = {"per_split": {s: len(records[s]) for s in ORDER}}
    return files


def _pairs(
    rng: np.random.Generator, scene: Scene, every: list[Pair], frequency: Counter[Pair]
) -> tuple[list[Pair], dict[str, list[Pair]]]:
    """The present objects asked about and, per split, as many absent ones."""
    present = [(o.colour, o.shape) for o in scene.objects]
    absent = [p for p in every if p not in present]
    k = min(len(present), len(absent))
    order = {p: j for j, p in enumerate(every)}
    negatives = {
        "random": [absent[j] for j in rng.choice(len(absent), size=k, replace=False)],
        "popular": sorted(absent, key=lambda p: (-frequency[p], order[p]))[:k],
        "adversarial": sorted(
            absent,
            key=lambda p: (
                -sum((p[0] == q[0]) + (p[1] == q[1]) for q in present),
                -frequency[p],
                rng.random(),
            ),
        )[:k],
    }
    positives = [present[j] for j in rng.permutation(len(present))][:k]
    return positives, negatives
