"""ScienceQA from the synthetic shapes world, in the files :mod:`benchmarks.tasks.scienceqa` reads.

``n`` problems with an image and ``n`` text-only ones (2-4 lettered choices, some with a
``Context:``), ``problems.json`` and ``pid_splits.json``; the IMG subset is the image half.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from benchmarks.tasks import scienceqa
from benchmarks.tasks.synthetic_common import BenchmarkFiles, SuiteWriter, choices, mc_domain
from impvlm.data.synthetic import WorldConfig, applicable_kinds, ask, pick, sample_scene
from impvlm.templates import IMAGE_TOKEN

HINTS = (
    "Select the best answer.",
    "Look at the picture.",
    "The picture shows flat shapes or a word.",
)
SPLITS = ("train", "val", "test", "trainval", "minitrain", "minival", "minitest")  # every pid is in test

#: (question, choices, answer, skill)
Problem = tuple[str, list[str], str, str]


def write(suite: SuiteWriter, rng: np.random.Generator) -> BenchmarkFiles:
    """Write ScienceQA's LLaVA question file, problems, splits and images under ``suite.root``."""
    files = BenchmarkFiles()
    problems: dict[str, dict] = {}
    llava: list[dict] = []
    has_image = [True] * suite.n + [False] * suite.n
    has_image = [has_image[i] for i in rng.permutation(len(has_image))]
    for i, with_image in enumerate(has_image):
        pid = str(i + 1)
        if with_image:
            question, options, answer, skill = _image_problem(suite, rng, pid)
        else:
            question, options, answer, skill = _text_problem(rng, suite.cfg)
        hint = pick(rng, HINTS if with_image else HINTS[:1]) if rng.random() < 0.3 else ""
        llava.append(_llava_record(pid, question, options, answer, hint, with_image))
        problems[pid] = _problem(question, options, answer, hint, skill, with_image)
    splits = {name: [r["id"] for r in llava] if name == "test" else [] for name in SPLITS}
    suite.json(files, llava, scienceqa.FOLDER, scienceqa.QUESTION_FILE, indent=2)
    suite.json(files, problems, scienceqa.FOLDER, scienceqa.PROBLEMS_FILE)
    suite.json(files, splits, scienceqa.FOLDER, scienceqa.SPLITS_FILE, indent=2)
    n_img = sum(has_image)
    files.questions, files.images = len(llava), n_img
    files.details = {"img_problems": n_img, "text_only_problems": len(llava) - n_img}
    return files


def _image_problem(suite: SuiteWriter, rng: np.random.Generator, pid: str) -> Problem:
    """A question about a new scene, its image saved as ``<pid>/image.png``."""
    scene = sample_scene(rng, suite.cfg)
    kind = pick(rng, [k for k in applicable_kinds(scene) if k != "exists"])
    qa = ask(scene, kind, rng, suite.cfg)
    options = choices(rng, qa.answer, mc_domain(qa, suite.cfg))
    suite.save(scene, scienceqa.FOLDER, scienceqa.IMAGE_DIR, pid, "image.png")
    return qa.question, options, qa.answer, kind


def _text_problem(rng: np.random.Generator, cfg: WorldConfig) -> Problem:
    """A text-only problem about the world's vocabulary."""
    colour, shape = pick(rng, cfg.colours), pick(rng, cfg.shapes)
    makers: list[Callable[[], Problem]] = [
        lambda: ("Which word is a colour?", [colour, *_sample(rng, cfg.shapes, 3)], colour, "vocabulary"),
        lambda: ("Which word is a shape?", [shape, *_sample(rng, cfg.colours, 3)], shape, "vocabulary"),
        lambda: (f"Is {colour} a colour?", ["no", "yes"], "yes", "vocabulary"),
        lambda: (f"Is {shape} a colour?", ["no", "yes"], "no", "vocabulary"),
    ]
    sides = {"triangle": "3", "square": "4"}
    geometric = [s for s in cfg.shapes if s in sides]
    if geometric:
        s = pick(rng, geometric)
        makers.append(
            lambda: (
                f"How many sides does a {s} have?",
                [sides[s], *_sample(rng, ["3", "4", "5", "6"], 3, sides[s])],
                sides[s],
                "geometry",
            )
        )
    if "circle" in cfg.shapes:
        makers.append(
            lambda: (
                "Which shape has no corners?",
                ["circle", *_sample(rng, cfg.shapes, 3, "circle")],
                "circle",
                "geometry",
            )
        )
    question, options, answer, skill = pick(rng, makers)()
    options = list(dict.fromkeys(options))
    return question, [options[i] for i in rng.permutation(len(options))], answer, skill


def _sample(rng: np.random.Generator, seq: Sequence[str], k: int, exclude: str | None = None) -> list[str]:
    """Up to ``k`` distinct items of ``seq`` (without ``exclude``), at random (1 at least)."""
    pool = [s for s in seq if s != exclude]
    k = int(rng.integers(1, min(k, len(pool)) + 1))
    return [pool[i] for i in rng.choice(len(pool), size=k, replace=False)]


def _llava_record(
    pid: str, question: str, options: list[str], answer: str, hint: str, with_image: bool
) -> dict[str, Any]:
    """The problem as LLaVA's ``llava_test_CQM-A.json`` holds it (lettered choices, image tag first)."""
    letters = scienceqa.OPTIONS
    prompt = (f"Context: {hint}\n" if hint else "") + question + "\n"
    prompt += "\n".join(f"{letters[j]}. {c}" for j, c in enumerate(options))
    record: dict[str, Any] = {"id": pid}
    if with_image:
        record["image"] = f"{pid}/image.png"
        prompt = f"{IMAGE_TOKEN}\n" + prompt
    record["conversations"] = [
        {"from": "human", "value": prompt},
        {"from": "gpt", "value": letters[options.index(answer)]},
    ]
    return record


def _problem(
    question: str, options: list[str], answer: str, hint: str, skill: str, with_image: bool
) -> dict[str, Any]:
    """The problem as ScienceQA's ``problems.json`` holds it."""
    return {
        "question": question,
        "choices": options,
        "answer": options.index(answer),
        "hint": hint,
        "image": "image.png" if with_image else None,
        "task": "closed choice",
        "grade": "grade1",
        "subject": "natural science",
        "topic": "shapes",
        "category": skill,
        "skill": skill,
        "lecture": "",
        "solution": "",
        "split": "test",
    }
