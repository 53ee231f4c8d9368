"""The requests timed: photo-sized images and typical benchmark questions.

Images are synthetic scenes (``impvlm.data.synthetic``) rendered at 640x480 and saved as JPEG, so
every runtime pays what it pays on a COCO photo: decoding, resizing to the model's size and
normalising. Questions are VQAv2-style, with LLaVA-1.5's short-answer instruction, asked through the
runtime's own template. Every image is distinct: a runtime caches features by content, and a
"first answer" must encode its image.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from impdefs import SHORT_ANSWER_TAIL

QUESTIONS: tuple[str, ...] = tuple(
    q + SHORT_ANSWER_TAIL
    for q in (
        "What color is the shape on the left side of the picture?",
        "How many shapes are there in the image?",
        "Is there a red circle at the top of the image?",
        "What is written on the sign in this photo?",
        "Which shape is closest to the bottom edge?",
        "Are all of the shapes the same color?",
    )
)
PHOTO_SIZE = (640, 480)


@dataclass(frozen=True)
class Workload:
    """``images[i]`` are distinct photos; ``questions`` cycle; ``probe`` images are compared across runtimes."""

    images: tuple[Path, ...]
    questions: tuple[str, ...]

    def image(self, i: int) -> Path:
        return self.images[i % len(self.images)]

    def question(self, i: int) -> str:
        return self.questions[i % len(self.questions)]

    @property
    def probe(self) -> tuple[Path, ...]:
        return self.images[:2]


def make_workload(folder: Path, n_images: int, seed: int = 0) -> Workload:
    """Write ``n_images`` distinct JPEG photos to ``folder`` (reused when already there)."""
    import numpy as np

    from impvlm.data.synthetic import Renderer, WorldConfig, sample_scene

    folder.mkdir(parents=True, exist_ok=True)
    world = WorldConfig(seed=seed, ocr_fraction=0.2)
    rng = np.random.default_rng(seed)
    renderer = Renderer(world, size=PHOTO_SIZE[0])
    top = (PHOTO_SIZE[0] - PHOTO_SIZE[1]) // 2
    paths = []
    for i in range(n_images):
        scene = sample_scene(rng, world)
        path = folder / f"photo-{seed}-{i:03d}.jpg"
        if not path.is_file():
            image = renderer(scene).crop((0, top, PHOTO_SIZE[0], top + PHOTO_SIZE[1]))
            image.save(path, quality=90)
        paths.append(path)
    return Workload(tuple(paths), QUESTIONS)


def tokenizer_corpus() -> list[str]:
    """Texts a random model's BPE is trained on: the template and the questions, so their token
    counts are close to what Phi-2's tokenizer gives (whole words for common words)."""
    from impvlm.tokenizer import ASSISTANT_ROLE, SYSTEM_PROMPT, USER_ROLE

    english = (
        "the a of and to in is it that on for with as was at by be this are from or have an they "
        "which one you were all we when there can their what how many color shape image picture "
        "photo sign written left right top bottom side edge same closest red green blue yellow "
        "circle square triangle cross answer question using single word phrase describe briefly"
    )
    texts = [SYSTEM_PROMPT, f"{USER_ROLE} {ASSISTANT_ROLE}", english, *QUESTIONS]
    return texts * 20
