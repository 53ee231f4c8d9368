"""MME from the synthetic shapes world, in the files :mod:`benchmarks.tasks.mme` reads.

existence, count, position, color, OCR (``n / 5`` images each), one yes and one no question per image;
flat ``<category>/<stem>.png`` + ``<stem>.txt`` ground truth. Headline max: 5 x 200.
"""

from __future__ import annotations

import numpy as np

from benchmarks.tasks import mme
from benchmarks.tasks.synthetic_common import BenchmarkFiles, SuiteWriter, object_scene, sign_scene
from impdefs import SHORT_ANSWER_TAIL
from impvlm.data.synthetic import ask

SUBTASKS: dict[str, str] = {  # MME subtask -> world question kind (yes/no form)
    "existence": "exists",
    "count": "count",
    "position": "position",
    "color": "colour",
    "OCR": "ocr",
}


def write(suite: SuiteWriter, rng: np.random.Generator) -> BenchmarkFiles:
    """Write MME's question file and its per-subtask images and ground truth under ``suite.root``."""
    files = BenchmarkFiles()
    base = (mme.FOLDER, mme.BENCHMARK_DIR)
    questions = []
    per_task: dict[str, int] = {}
    for t, (task, kind) in enumerate(SUBTASKS.items()):
        n_images = max(1, suite.n // len(SUBTASKS) + (t < suite.n % len(SUBTASKS)))
        per_task[task] = n_images
        for i in range(n_images):
            scene = sign_scene(rng, suite.cfg) if kind == "ocr" else object_scene(rng, suite.cfg)
            stem = f"{i + 1:04d}" if kind == "ocr" else f"{i + 1:012d}"
            image = f"{task}/{stem}.png"
            suite.save(scene, *base, task, f"{stem}.png")
            lines = []
            for polarity in (True, False):  # MME: the "yes" question first, then the "no" one
                qa = ask(scene, kind, rng, suite.cfg, polarity)
                lines.append(f"{qa.question} {mme.GT_SUFFIX}\t{qa.answer.capitalize()}\n")
                questions.append(
                    {
                        "question_id": image,
                        "image": image,
                        "text": qa.question + SHORT_ANSWER_TAIL,
                        "category": task,
                    }
                )
            suite.path(*base, task, f"{stem}.txt").write_text("".join(lines), encoding="utf-8")
        files.files.append("/".join([*base, task, "*.txt"]))
    suite.jsonl(files, questions, mme.FOLDER, mme.QUESTION_FILE)
    files.questions, files.images = len(questions), sum(per_task.values())
    files.details = {"images_per_subtask": per_task, "perception_max": 200.0 * len(per_task)}
    return files
