"""What the nine synthetic benchmark writers share: scenes, image and file writing, annotator answers.

Each ``benchmarks/tasks/<task>_synthetic.py`` writes its benchmark through a :class:`SuiteWriter` (the
suite folder, the world, its renderer, ``n`` images per benchmark) and returns :class:`BenchmarkFiles`;
:mod:`benchmarks.synthetic` loops over the nine and writes the manifest. Scenes and question wordings
come from :mod:`impvlm.data.synthetic`, so this module (unlike the loaders and scorers beside it)
imports :mod:`impvlm`.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from impvlm.data.synthetic import (
    POSITION_PHRASES,
    QA,
    Renderer,
    Scene,
    WorldConfig,
    applicable_kinds,
    ask,
    pick,
    sample_scene,
)

NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
# Plausible answers of annotators who disagree (not normalized to the right answer).
SHAPE_ALTERNATES: dict[str, tuple[str, ...]] = {
    "circle": ("round", "oval", "ball"),
    "square": ("rectangle", "box"),
    "triangle": ("pyramid",),
    "cross": ("plus", "plus sign", "x"),
}
COLOUR_ALTERNATES: dict[str, tuple[str, ...]] = {
    "red": ("orange", "pink"),
    "green": ("lime",),
    "blue": ("purple", "navy"),
    "yellow": ("orange", "gold"),
    "purple": ("blue", "violet"),
    "orange": ("red", "yellow"),
    "white": ("gray", "silver"),
}


@dataclass
class BenchmarkFiles:
    """What was written for one benchmark (for the manifest and the log)."""

    questions: int = 0
    images: int = 0
    files: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)


class SuiteWriter:
    """The suite folder, the world and its renderer: where and how a benchmark writer puts its files."""

    def __init__(self, root: Path, cfg: WorldConfig, n: int) -> None:
        self.root = root
        self.cfg = cfg
        self.n = n  # images per benchmark
        self.render = Renderer(cfg)

    def path(self, *parts: str) -> Path:
        """``root / parts``, its folder created."""
        path = self.root.joinpath(*parts)
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def save(self, scene: Scene, *parts: str) -> None:
        """Render ``scene`` to a PNG at ``root / parts``."""
        self.path(*parts).write_bytes(png(self.render(scene)))

    def json(self, files: BenchmarkFiles, obj: Any, *parts: str, indent: int | None = None) -> None:
        self.path(*parts).write_text(_dump(obj, indent) + "\n", encoding="utf-8")
        files.files.append("/".join(parts))

    def jsonl(self, files: BenchmarkFiles, records: Sequence[dict], *parts: str) -> None:
        text = "".join(_dump(r) + "\n" for r in records)
        self.path(*parts).write_text(text, encoding="utf-8")
        files.files.append("/".join(parts))

    def open_or_verify(self, scene: Scene, rng: np.random.Generator, n: int, verify: float) -> list[QA]:
        """``n`` questions of distinct kinds; a share ``verify`` in yes/no form (exists: always)."""
        kinds = applicable_kinds(scene)
        chosen = [kinds[i] for i in rng.permutation(len(kinds))[:n]]
        out = []
        for kind in chosen:
            polarity = bool(rng.random() < 0.5) if kind != "exists" and rng.random() < verify else None
            out.append(ask(scene, kind, rng, self.cfg, polarity))
        return out


# ------------------------------------------------------------------------------------ scenes, images


def object_scene(rng: np.random.Generator, cfg: WorldConfig, n_objects: int | None = None) -> Scene:
    """A shapes scene (no sign); ``n_objects`` fixes the number of shapes."""
    objects_cfg = replace(cfg, ocr_fraction=0.0)
    if n_objects is not None:
        objects_cfg = replace(objects_cfg, min_objects=n_objects, max_objects=n_objects)
    return sample_scene(rng, objects_cfg)


def sign_scene(rng: np.random.Generator, cfg: WorldConfig) -> Scene:
    """A sign scene: one of the world's words in one of its colours."""
    return Scene(word=pick(rng, cfg.words), word_colour=pick(rng, cfg.colours))


def png(img: Any) -> bytes:
    """The PNG file of a PIL image."""
    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    return buffer.getvalue()


def _dump(obj: Any, indent: int | None = None) -> str:
    return json.dumps(obj, indent=indent, ensure_ascii=False)


# --------------------------------------------------------------------------------- words and answers


def answer_type(qa: QA) -> str:
    """VQA's answer type: ``yes/no``, ``number`` or ``other``."""
    if qa.answer in ("yes", "no"):
        return "yes/no"
    if qa.kind == "count":
        return "number"
    return "other"


def _surface_variants(answer: str, kind: str) -> list[str]:
    """Spellings that the VQA normalization maps back to ``answer``."""
    out = [answer.capitalize() + ".", answer.upper() if kind == "ocr" else answer.capitalize()]
    if answer.isdigit() and int(answer) < len(NUMBER_WORDS):
        out.append(NUMBER_WORDS[int(answer)])
    if kind in ("shape", "ocr"):
        out.append(f"the {answer}")
    return [v for v in out if v != answer]


def _alternates(qa: QA) -> list[str]:
    """Answers of annotators who read the question or the image differently (lower case)."""
    answer = qa.answer
    if answer in ("yes", "no"):
        return []
    if qa.kind == "position" and answer in POSITION_PHRASES:
        return [POSITION_PHRASES[answer]]
    if qa.kind == "shape":
        return list(SHAPE_ALTERNATES.get(answer, ()))
    if qa.kind == "colour":
        return list(COLOUR_ALTERNATES.get(answer, ()))
    if qa.kind == "count" and answer.isdigit():
        n = int(answer)
        return [str(n + 1)] + ([str(n - 1)] if n > 0 else [])
    if qa.kind == "ocr":
        return [f"{answer} sign"]
    return []


def ten_answers(rng: np.random.Generator, qa: QA, surface: bool) -> list[str]:
    """Ten annotator answers: 7-10 times the answer, the rest surface variants (when ``surface``: VQAv2 and
    TextVQA normalize the ground truth) or disagreements. The answer always scores 1.0, another one <= 0.9."""
    n_main = int(rng.integers(7, 11))
    variants = _surface_variants(qa.answer, qa.kind) if surface else []
    alternates = _alternates(qa)
    answers = [qa.answer] * n_main
    for _ in range(10 - n_main):
        pool = variants if (variants and (not alternates or rng.random() < 0.6)) else alternates
        answers.append(pick(rng, pool) if pool else qa.answer)
    return [answers[i] for i in rng.permutation(10)]


def mc_domain(qa: QA, cfg: WorldConfig) -> list[str]:
    """Every answer a multiple-choice question of ``qa``'s kind could offer."""
    if qa.answer in ("yes", "no"):
        return ["yes", "no"]
    return {
        "colour": list(cfg.colours),
        "shape": list(cfg.shapes),
        "position": list(cfg.positions),
        "count": [str(i) for i in range(cfg.max_objects + 1)],
        "ocr": list(cfg.words),
    }[qa.kind]


def choices(rng: np.random.Generator, answer: str, domain: Sequence[str], most: int = 4) -> list[str]:
    """2..``most`` distinct options including ``answer``, shuffled."""
    others = [d for d in domain if d != answer]
    k = int(rng.integers(2, min(most, len(others) + 1) + 1))
    picked = [others[i] for i in rng.choice(len(others), size=k - 1, replace=False)]
    options = [answer, *picked]
    return [options[i] for i in rng.permutation(len(options))]
