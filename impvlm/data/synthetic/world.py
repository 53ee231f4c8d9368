"""The world's vocabulary, its configuration and its scenes: what an image shows, and its caption."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from types import MappingProxyType
from typing import Any, NamedTuple

import numpy as np

from impvlm.errors import ConfigError

KINDS: tuple[str, ...] = ("colour", "shape", "position", "count", "exists", "ocr")
OBJECT_KINDS: tuple[str, ...] = ("colour", "shape", "position", "count", "exists")
#: Kinds whose question names one object of an object scene (``ask(..., obj=...)`` picks which).
REFERRING_KINDS: tuple[str, ...] = ("colour", "shape", "position")
SIGN_KINDS: tuple[str, ...] = ("ocr", "colour", "count")

#: Colours the renderer knows (bright, far apart in RGB, all readable on the dark background).
PALETTE: MappingProxyType[str, tuple[int, int, int]] = MappingProxyType(
    {
        "red": (230, 40, 40),
        "green": (40, 190, 60),
        "blue": (50, 100, 240),
        "yellow": (245, 215, 30),
        "purple": (160, 70, 210),
        "orange": (250, 140, 20),
        "white": (240, 240, 240),
    }
)
SUPPORTED_SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross")
#: Slot centres as fractions of the image side (x, y).
SLOTS: MappingProxyType[str, tuple[float, float]] = MappingProxyType(
    {"left": (0.21, 0.5), "right": (0.79, 0.5), "top": (0.5, 0.21), "bottom": (0.5, 0.79)}
)
POSITION_PHRASES: MappingProxyType[str, str] = MappingProxyType(
    {"left": "on the left", "right": "on the right", "top": "at the top", "bottom": "at the bottom"}
)
CAPTION_INSTRUCTIONS: tuple[str, ...] = (
    "Describe the image concisely.",
    "Provide a brief description of the given image.",
    "Give a short and clear explanation of the image.",
    "Summarize the visual content of the image.",
    "Write a terse but informative summary of the picture.",
)


@dataclass(frozen=True)
class WorldConfig:
    """Everything that defines the world; ``seed`` fixes every random draw."""

    image_size: int = 64
    colours: tuple[str, ...] = ("red", "green", "blue", "yellow")
    shapes: tuple[str, ...] = ("circle", "square", "triangle", "cross")
    positions: tuple[str, ...] = ("left", "right", "top", "bottom")
    min_objects: int = 1
    max_objects: int = 3
    words: tuple[str, ...] = ("cat", "dog", "sun", "box", "cup", "hat", "map", "bus")
    ocr_fraction: float = 0.2  # share of images that are sign scenes (a word, no shapes)
    object_scale: float = 0.34  # shape size as a fraction of the image side
    jitter: float = 0.03  # max slot-centre offset, fraction of the image side
    background: tuple[int, int, int] = (36, 36, 36)
    verify_fraction: float = 0.2  # share of training questions asked in yes/no form
    text_only_fraction: float = 0.02  # text-only instruct records per training image
    seed: int = 0

    def __post_init__(self) -> None:
        _check_config(self)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _check_config(cfg: WorldConfig) -> None:
    def fail(msg: str) -> None:
        raise ConfigError(f"WorldConfig: {msg}")

    if cfg.image_size < 16:
        fail(f"image_size {cfg.image_size} is too small (min 16)")
    if not cfg.colours or len(set(cfg.colours)) != len(cfg.colours):
        fail("colours must be a non-empty list without repeats")
    if unknown := [c for c in cfg.colours if c not in PALETTE]:
        fail(f"unknown colours {unknown}; choose from {sorted(PALETTE)}")
    if not cfg.shapes or len(set(cfg.shapes)) != len(cfg.shapes):
        fail("shapes must be a non-empty list without repeats")
    if unknown := [s for s in cfg.shapes if s not in SUPPORTED_SHAPES]:
        fail(f"unknown shapes {unknown}; choose from {list(SUPPORTED_SHAPES)}")
    if not cfg.positions or len(set(cfg.positions)) != len(cfg.positions):
        fail("positions must be a non-empty list without repeats")
    if unknown := [p for p in cfg.positions if p not in SLOTS]:
        fail(f"unknown positions {unknown}; choose from {list(SLOTS)}")
    if not 1 <= cfg.min_objects <= cfg.max_objects <= len(cfg.positions):
        fail(f"need 1 <= min_objects <= max_objects <= {len(cfg.positions)} (one object per position)")
    if cfg.max_objects > len(cfg.colours) * len(cfg.shapes):
        fail("max_objects exceeds the number of distinct (colour, shape) pairs")
    if any(not w.isalpha() or not w.islower() for w in cfg.words):
        fail("words must be lower-case letters only")
    if not 0.0 <= cfg.ocr_fraction < 1.0 or (cfg.ocr_fraction > 0 and not cfg.words):
        fail("ocr_fraction must be in [0, 1) and needs words when > 0")
    if not 0.1 <= cfg.object_scale <= 0.4:
        fail("object_scale must be in [0.1, 0.4] so shapes in neighbouring slots do not overlap")
    for name in ("jitter", "verify_fraction", "text_only_fraction"):
        if not 0.0 <= getattr(cfg, name) <= 1.0:
            fail(f"{name} must be in [0, 1]")


@dataclass(frozen=True)
class Obj:
    """One shape. ``dx``/``dy`` offset the slot centre and ``scale`` its size (rendering only)."""

    colour: str
    shape: str
    position: str
    dx: float = 0.0
    dy: float = 0.0
    scale: float = 1.0


@dataclass(frozen=True)
class Scene:
    """An object scene (``objects``) or a sign scene (``word`` in ``word_colour``, no objects)."""

    objects: tuple[Obj, ...] = ()
    word: str | None = None
    word_colour: str | None = None

    @property
    def is_sign(self) -> bool:
        return self.word is not None

    def at(self, position: str) -> Obj | None:
        return next((o for o in self.objects if o.position == position), None)


class QA(NamedTuple):
    question: str
    answer: str
    kind: str


# --------------------------------------------------------------------------------------------- scenes


def sample_scene(rng: np.random.Generator, cfg: WorldConfig) -> Scene:
    """Draw one scene: a sign with probability ``cfg.ocr_fraction``, else 1..max_objects shapes."""
    if cfg.words and rng.random() < cfg.ocr_fraction:
        return Scene(word=pick(rng, cfg.words), word_colour=pick(rng, cfg.colours))
    n = int(rng.integers(cfg.min_objects, cfg.max_objects + 1))
    slots = sorted(rng.choice(len(cfg.positions), size=n, replace=False).tolist())
    pairs = rng.choice(len(cfg.colours) * len(cfg.shapes), size=n, replace=False).tolist()
    offsets = rng.uniform(-cfg.jitter, cfg.jitter, size=(n, 2))
    scales = rng.uniform(0.9, 1.1, size=n)
    objects = tuple(
        Obj(
            colour=cfg.colours[pair // len(cfg.shapes)],
            shape=cfg.shapes[pair % len(cfg.shapes)],
            position=cfg.positions[slot],
            dx=round(float(offsets[i, 0]), 4),
            dy=round(float(offsets[i, 1]), 4),
            scale=round(float(scales[i]), 4),
        )
        for i, (slot, pair) in enumerate(zip(slots, pairs))
    )
    return Scene(objects=objects)


def caption(scene: Scene) -> str:
    """One canonical sentence, e.g. ``"a red circle on the left and a blue cross at the top."``."""
    if scene.is_sign:
        return f'the word "{scene.word}" written in {scene.word_colour}.'
    parts = [
        f"{article(o.colour)} {o.colour} {o.shape} {POSITION_PHRASES[o.position]}" for o in scene.objects
    ]
    if len(parts) == 1:
        return parts[0] + "."
    return ", ".join(parts[:-1]) + " and " + parts[-1] + "."


def pick(rng: np.random.Generator, seq: Sequence[Any]) -> Any:
    """One item of ``seq`` at random."""
    return seq[int(rng.integers(len(seq)))]


def article(word: str) -> str:
    """``"an"`` before a vowel, else ``"a"``."""
    return "an" if word[0] in "aeiou" else "a"
