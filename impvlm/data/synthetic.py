"""The offline synthetic "shapes" world.

Nothing pretrained is available offline, so the offline pipeline trains a tiny Imp on a world small
enough to learn on a laptop CPU in minutes. Every image is one of two kinds of scene on a plain dark
background:

* an **object scene**: 1-3 large flat shapes (about a third of the image each), one per slot among
  ``left / right / top / bottom`` (a diamond around the centre), with distinct (colour, shape) pairs;
* a **sign scene** (``ocr_fraction`` of images): one short word in capitals, in one of the colours.

Question kinds (all answers are one lower-case word; counts are digits):

========  ==============================================  ==============================
kind      example                                         answers
========  ==============================================  ==============================
colour    What colour is the shape on the left?           the colours
shape     What shape is at the top?                       the shapes
position  Where is the red circle?                        left / right / top / bottom
count     How many shapes are there?                      0 (sign scenes) .. max_objects
exists    Is there a blue square?                         yes / no (the caller picks)
ocr       What word is written in the image?              the words
========  ==============================================  ==============================

Every kind also has a yes/no *verification* form (``ask(..., polarity=True/False)``: "Is the shape on
the left red?"), which is what MME/POPE-style benchmarks ask. Answers are balanced by construction:
objects are sampled uniformly, so colour/shape/position answers are uniform, object counts are uniform
over ``min_objects..max_objects`` and yes/no is the caller's coin. None is guessable from the question.

Everything is deterministic: the same :class:`WorldConfig` (``seed`` included) gives byte-identical
files. :func:`generate_dataset` writes the training/eval files; benchmark generators reuse
:func:`sample_scene`, :class:`Renderer` and :func:`ask` to write other formats from the same world.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, NamedTuple

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from impdefs import IMAGE_TOKEN, SHORT_ANSWER_TAIL
from impvlm.errors import ConfigError
from impvlm.files import prepare_out_dir

log = logging.getLogger(__name__)

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


@dataclass(frozen=True)
class DatasetPaths:
    root: Path
    images: Path
    pretrain: Path
    instruct: Path
    eval: Path
    world: Path
    counts: dict[str, Any] = field(default_factory=dict, compare=False)


# --------------------------------------------------------------------------------------------- scenes


def sample_scene(rng: np.random.Generator, cfg: WorldConfig) -> Scene:
    """Draw one scene: a sign with probability ``cfg.ocr_fraction``, else 1..max_objects shapes."""
    if cfg.words and rng.random() < cfg.ocr_fraction:
        return Scene(word=_pick(rng, cfg.words), word_colour=_pick(rng, cfg.colours))
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
    parts = [f"{_a(o.colour)} {o.colour} {o.shape} {POSITION_PHRASES[o.position]}" for o in scene.objects]
    if len(parts) == 1:
        return parts[0] + "."
    return ", ".join(parts[:-1]) + " and " + parts[-1] + "."


# ------------------------------------------------------------------------------------------ rendering


class Renderer:
    """Draws scenes at ``size`` px (default ``cfg.image_size``); reuse one per size (it keeps the font)."""

    def __init__(self, cfg: WorldConfig, size: int | None = None) -> None:
        self.cfg = cfg
        self.size = int(size or cfg.image_size)
        self._font: ImageFont.FreeTypeFont | ImageFont.ImageFont | None = None

    def __call__(self, scene: Scene) -> Image.Image:
        img = Image.new("RGB", (self.size, self.size), self.cfg.background)
        draw = ImageDraw.Draw(img)
        for obj in scene.objects:
            self._draw_obj(draw, obj)
        if scene.is_sign:
            self._draw_word(img, scene.word or "", PALETTE[scene.word_colour or "white"])
        return img

    def _draw_obj(self, draw: ImageDraw.ImageDraw, obj: Obj) -> None:
        s = self.size
        fx, fy = SLOTS[obj.position]
        cx, cy = (fx + obj.dx) * s, (fy + obj.dy) * s
        r = self.cfg.object_scale * obj.scale * s / 2
        fill = PALETTE[obj.colour]
        if obj.shape == "circle":
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
        elif obj.shape == "square":
            h = r * 0.85  # a square of the same "size" looks bigger than a circle
            draw.rectangle((cx - h, cy - h, cx + h, cy + h), fill=fill)
        elif obj.shape == "triangle":
            draw.polygon([(cx, cy - r), (cx + r, cy + r * 0.8), (cx - r, cy + r * 0.8)], fill=fill)
        elif obj.shape == "cross":
            t = r / 3
            draw.rectangle((cx - r, cy - t, cx + r, cy + t), fill=fill)
            draw.rectangle((cx - t, cy - r, cx + t, cy + r), fill=fill)
        else:  # pragma: no cover - WorldConfig rejects unknown shapes
            raise ConfigError(f"unknown shape {obj.shape!r}")

    def _draw_word(self, img: Image.Image, word: str, fill: tuple[int, int, int]) -> None:
        text = word.upper()
        font = self._get_font()
        if isinstance(font, ImageFont.FreeTypeFont):
            ImageDraw.Draw(img).text((self.size / 2, self.size / 2), text, fill=fill, font=font, anchor="mm")
            return
        # Pillow built without FreeType: draw the bitmap font small and scale it up.
        left, top, right, bottom = font.getbbox(text)
        small = Image.new("L", (right - left, bottom - top), 0)
        ImageDraw.Draw(small).text((-left, -top), text, fill=255, font=font)
        factor = max(1, int(self.size * 0.85 / max(small.width, 1)))
        mask = small.resize((small.width * factor, small.height * factor), Image.Resampling.NEAREST)
        xy = ((self.size - mask.width) // 2, (self.size - mask.height) // 2)
        img.paste(Image.new("RGB", mask.size, fill), xy, mask)

    def _get_font(self) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
        if self._font is None:
            self._font = fit_font([w.upper() for w in self.cfg.words] or ["W"], self.size)
        return self._font


def fit_font(texts: Sequence[str], size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """PIL's default font at the largest pixel size (<= 0.4 * size) where every text fits 90% of the width."""
    px = max(6, int(size * 0.4))
    while px > 6:
        try:
            font = ImageFont.load_default(size=px)
        except (TypeError, ImportError, OSError):  # no FreeType: the bitmap font, scaled by the renderer
            return ImageFont.load_default()
        if max(font.getbbox(t)[2] for t in texts) <= 0.9 * size:
            return font
        px -= 1
    return ImageFont.load_default(size=px)


def render(scene: Scene, cfg: WorldConfig, size: int | None = None) -> Image.Image:
    """Render one scene (``size`` px square, default ``cfg.image_size``); use :class:`Renderer` for many."""
    return Renderer(cfg, size)(scene)


# ------------------------------------------------------------------------------------------ questions


def applicable_kinds(scene: Scene) -> tuple[str, ...]:
    """The question kinds that make sense for ``scene`` (sign scenes: ocr, colour of the text, count 0)."""
    return SIGN_KINDS if scene.is_sign else OBJECT_KINDS


def ask(
    scene: Scene,
    kind: str,
    rng: np.random.Generator,
    cfg: WorldConfig,
    polarity: bool | None = None,
    obj: Obj | None = None,
) -> QA:
    """Ask a question of ``kind`` about ``scene``.

    ``polarity=None`` asks the open form (answer: a colour, shape, position, digit or word);
    ``True``/``False`` asks the yes/no verification form whose answer is "yes"/"no". ``exists`` is always
    yes/no: ``None`` tosses a fair coin. ``obj`` names the object a colour / shape / position question
    of an object scene is about (default: one drawn at random). Raises ConfigError when ``kind`` does not
    apply to the scene or ``obj`` is not one of its objects.
    """
    if kind not in applicable_kinds(scene):
        raise ConfigError(
            f"question kind {kind!r} does not apply to this scene (kinds: {applicable_kinds(scene)})"
        )
    if obj is not None and (kind not in REFERRING_KINDS or obj not in scene.objects):
        raise ConfigError(
            f"a {kind} question cannot be about {obj}: not a referring kind or not in the scene"
        )
    if kind == "exists":
        return _ask_exists(scene, rng, cfg, bool(rng.random() < 0.5) if polarity is None else polarity)
    if polarity is None:
        return _OPEN[kind](scene, rng, cfg, obj)
    return _VERIFY[kind](scene, rng, cfg, polarity, obj)


def _ask_colour(scene: Scene, rng: np.random.Generator, cfg: WorldConfig, obj: Obj | None = None) -> QA:
    if scene.is_sign:
        q = _pick(rng, ("What colour is the text?", "What colour is the word?"))
        return QA(q, scene.word_colour or "", "colour")
    obj = obj or _pick(rng, scene.objects)
    return QA(f"What colour is {_refer(scene, obj, rng, by=('position', 'shape'))}?", obj.colour, "colour")


def _ask_shape(scene: Scene, rng: np.random.Generator, cfg: WorldConfig, obj: Obj | None = None) -> QA:
    obj = obj or _pick(rng, scene.objects)
    if rng.random() < 0.5 and _unique(scene, "colour", obj.colour):
        return QA(f"What shape is the {obj.colour} object?", obj.shape, "shape")
    return QA(f"What shape is {POSITION_PHRASES[obj.position]}?", obj.shape, "shape")


def _ask_position(scene: Scene, rng: np.random.Generator, cfg: WorldConfig, obj: Obj | None = None) -> QA:
    obj = obj or _pick(rng, scene.objects)
    return QA(
        f"Where is {_refer(scene, obj, rng, by=('both', 'shape', 'colour'))}?", obj.position, "position"
    )


def _ask_count(scene: Scene, rng: np.random.Generator, cfg: WorldConfig, obj: None = None) -> QA:
    q = _pick(
        rng,
        (
            "How many shapes are there?",
            "How many shapes are in the image?",
            "How many objects are in the picture?",
        ),
    )
    return QA(q, str(len(scene.objects)), "count")


def _ask_ocr(scene: Scene, rng: np.random.Generator, cfg: WorldConfig, obj: None = None) -> QA:
    q = _pick(
        rng,
        ("What word is written in the image?", "What does the text say?", "What is the word in the image?"),
    )
    return QA(q, scene.word or "", "ocr")


def _ask_exists(scene: Scene, rng: np.random.Generator, cfg: WorldConfig, polarity: bool) -> QA:
    """'Is there a ...?' about a (colour, shape) pair, a shape or a colour; subtypes with no candidate of
    the wanted polarity are skipped (with >= 4 colours and shapes and <= 3 objects that never happens)."""
    pairs = {(o.colour, o.shape) for o in scene.objects}
    shapes = {o.shape for o in scene.objects}
    colours = {o.colour for o in scene.objects}
    subtypes: dict[str, list[str]] = {
        "pair": [
            f"Is there {_a(c)} {c} {s}?"
            for c in cfg.colours
            for s in cfg.shapes
            if ((c, s) in pairs) == polarity
        ],
        "shape": [f"Is there {_a(s)} {s} in the image?" for s in cfg.shapes if (s in shapes) == polarity],
        "colour": [f"Is there {_a(c)} {c} shape?" for c in cfg.colours if (c in colours) == polarity],
    }
    options = [v for v in subtypes.values() if v]
    if not options:  # pragma: no cover - only for degenerate configs (e.g. one colour and one shape)
        raise ConfigError("this world is too small to ask an existence question of that polarity")
    return QA(_pick(rng, _pick(rng, options)), _yes(polarity), "exists")


def _verify_colour(
    scene: Scene, rng: np.random.Generator, cfg: WorldConfig, polarity: bool, obj: Obj | None = None
) -> QA:
    if scene.is_sign:
        c = _same_or_other(rng, scene.word_colour or "", cfg.colours, polarity)
        return QA(f"Is the text {c}?", _yes(polarity), "colour")
    obj = obj or _pick(rng, scene.objects)
    c = _same_or_other(rng, obj.colour, cfg.colours, polarity)
    return QA(f"Is the shape {POSITION_PHRASES[obj.position]} {c}?", _yes(polarity), "colour")


def _verify_shape(
    scene: Scene, rng: np.random.Generator, cfg: WorldConfig, polarity: bool, obj: Obj | None = None
) -> QA:
    obj = obj or _pick(rng, scene.objects)
    s = _same_or_other(rng, obj.shape, cfg.shapes, polarity)
    return QA(f"Is the object {POSITION_PHRASES[obj.position]} {_a(s)} {s}?", _yes(polarity), "shape")


def _verify_position(
    scene: Scene, rng: np.random.Generator, cfg: WorldConfig, polarity: bool, obj: Obj | None = None
) -> QA:
    obj = obj or _pick(rng, scene.objects)
    p = _same_or_other(rng, obj.position, cfg.positions, polarity)
    return QA(f"Is the {obj.colour} {obj.shape} {POSITION_PHRASES[p]}?", _yes(polarity), "position")


def _verify_count(
    scene: Scene, rng: np.random.Generator, cfg: WorldConfig, polarity: bool, obj: None = None
) -> QA:
    n = _same_or_other(rng, len(scene.objects), range(cfg.max_objects + 1), polarity)
    q = "Is there exactly 1 shape in the image?" if n == 1 else f"Are there exactly {n} shapes in the image?"
    return QA(q, _yes(polarity), "count")


def _verify_ocr(
    scene: Scene, rng: np.random.Generator, cfg: WorldConfig, polarity: bool, obj: None = None
) -> QA:
    w = _same_or_other(rng, scene.word or "", cfg.words, polarity)
    return QA(f"Is the word {w} written in the image?", _yes(polarity), "ocr")


_OPEN: MappingProxyType[str, Callable[..., QA]] = MappingProxyType(
    {
        "colour": _ask_colour,
        "shape": _ask_shape,
        "position": _ask_position,
        "count": _ask_count,
        "ocr": _ask_ocr,
    }
)
_VERIFY: MappingProxyType[str, Callable[..., QA]] = MappingProxyType(
    {
        "colour": _verify_colour,
        "shape": _verify_shape,
        "position": _verify_position,
        "count": _verify_count,
        "ocr": _verify_ocr,
    }
)


def _refer(scene: Scene, obj: Obj, rng: np.random.Generator, by: Sequence[str]) -> str:
    """A noun phrase naming ``obj`` unambiguously, picked at random among the ways in ``by`` that work."""
    ways = []
    for way in by:
        if way == "position":
            ways.append(f"the shape {POSITION_PHRASES[obj.position]}")
        elif way == "both":  # (colour, shape) pairs are unique within a scene
            ways.append(f"the {obj.colour} {obj.shape}")
        elif way == "shape" and _unique(scene, "shape", obj.shape):
            ways.append(f"the {obj.shape}")
        elif way == "colour" and _unique(scene, "colour", obj.colour):
            ways.append(f"the {obj.colour} shape")
    return _pick(rng, ways)


def _unique(scene: Scene, attr: str, value: str) -> bool:
    return sum(getattr(o, attr) == value for o in scene.objects) == 1


def _same_or_other(rng: np.random.Generator, truth: Any, choices: Sequence[Any], same: bool) -> Any:
    if same:
        return truth
    others = [c for c in choices if c != truth]
    if not others:
        raise ConfigError(f"cannot pick a wrong answer: {truth!r} is the only choice")
    return _pick(rng, others)


def _pick(rng: np.random.Generator, seq: Sequence[Any]) -> Any:
    return seq[int(rng.integers(len(seq)))]


def _a(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _yes(polarity: bool) -> str:
    return "yes" if polarity else "no"


# ------------------------------------------------------------------------------------------- records


def with_suffix(question: str) -> str:
    return question + SHORT_ANSWER_TAIL


def pretrain_record(rid: str, image: str, scene: Scene, rng: np.random.Generator) -> dict[str, Any]:
    instruction = _pick(rng, CAPTION_INSTRUCTIONS)
    return {
        "id": rid,
        "image": image,
        "conversations": [
            {"from": "human", "value": f"{IMAGE_TOKEN}\n{instruction}"},
            {"from": "gpt", "value": caption(scene)},
        ],
    }


def instruct_turns(scene: Scene, rng: np.random.Generator, cfg: WorldConfig) -> list[QA]:
    """2-4 questions of distinct kinds (fewer when the scene has fewer kinds), some in yes/no form.

    Questions that name an object (colour / shape / position) are each about another object, so no
    answer can be read off an earlier turn's text ("Where is the red circle? left", then "What colour is
    the shape on the left?"): a kind with no object left is passed over.
    """
    kinds = applicable_kinds(scene)
    n = int(rng.integers(2, 5))
    unasked = [scene.objects[i] for i in rng.permutation(len(scene.objects))]
    turns = []
    for kind in (kinds[i] for i in rng.permutation(len(kinds))):
        if len(turns) == n:
            break
        obj = None
        if kind in REFERRING_KINDS and not scene.is_sign:
            if not unasked:
                continue
            obj = unasked.pop()
        polarity = bool(rng.random() < 0.5) if rng.random() < cfg.verify_fraction else None
        turns.append(ask(scene, kind, rng, cfg, polarity, obj))
    return turns


def instruct_record(rid: str, image: str, turns: Sequence[QA]) -> dict[str, Any]:
    conversations = []
    for i, qa in enumerate(turns):
        prefix = f"{IMAGE_TOKEN}\n" if i == 0 else ""
        conversations.append({"from": "human", "value": prefix + with_suffix(qa.question)})
        conversations.append({"from": "gpt", "value": qa.answer})
    return {"id": rid, "image": image, "conversations": conversations}


def text_only_qa(rng: np.random.Generator, cfg: WorldConfig) -> QA:
    """A question about the world's vocabulary that needs no image (LLaVA mixes in text-only chat)."""
    colour, shape = _pick(rng, cfg.colours), _pick(rng, cfg.shapes)
    options = [
        QA("How many sides does a triangle have?", "3", "text"),
        QA("How many sides does a square have?", "4", "text"),
        QA("Which shape has no corners?", "circle", "text"),
        QA(f"Is {colour} a colour?", "yes", "text"),
        QA(f"Is {shape} a colour?", "no", "text"),
        QA(f"Is {shape} a shape?", "yes", "text"),
        QA(f"Is {colour} a shape?", "no", "text"),
        QA(f"Which word is a colour, {shape} or {colour}?", colour, "text"),
        QA(f"Which word is a shape, {colour} or {shape}?", shape, "text"),
    ]
    if cfg.words:
        word = _pick(rng, cfg.words)
        options.append(QA(f"Spell the word {word} in lower case.", word, "text"))
    return _pick(rng, options)


def text_only_record(rid: str, rng: np.random.Generator, cfg: WorldConfig) -> dict[str, Any]:
    turns = [text_only_qa(rng, cfg) for _ in range(int(rng.integers(1, 3)))]
    conversations = []
    for qa in turns:
        conversations.append({"from": "human", "value": with_suffix(qa.question)})
        conversations.append({"from": "gpt", "value": qa.answer})
    return {"id": rid, "conversations": conversations}


def eval_records(
    rid: str, image: str, scene: Scene, rng: np.random.Generator, cfg: WorldConfig
) -> list[dict[str, Any]]:
    """One open question per applicable kind (exists: a fair coin); ``prompt`` is the question + suffix."""
    records = []
    for kind in applicable_kinds(scene):
        qa = ask(scene, kind, rng, cfg)
        records.append(
            {
                "id": f"{rid}-{kind}",
                "image": image,
                "question": qa.question,
                "prompt": with_suffix(qa.question),
                "answer": qa.answer,
                "kind": kind,
            }
        )
    return records


# -------------------------------------------------------------------------------------------- writing


def generate_dataset(
    out_dir: str | Path,
    n_images_train: int,
    n_images_eval: int,
    cfg: WorldConfig | None = None,
    progress: bool = True,
) -> DatasetPaths:
    """Write the synthetic dataset under ``out_dir`` (see the module docstring for the world).

    Layout (image paths in records are relative to ``out_dir``)::

        images/train_000000.png ...  images/eval_000000.png ...
        pretrain.json   stage 1: one caption record per training image
        instruct.json   stage 2: 2-4 QA turns per training image + a few text-only records
        eval.json       held-out images, one question per record: id, image, question, prompt, answer, kind
        world.json      the resolved WorldConfig and the counts / answer distributions

    Same ``cfg`` (seed included) -> byte-identical files.
    """
    from tqdm import tqdm

    cfg = cfg or WorldConfig()
    if n_images_train < 1 or n_images_eval < 0:
        raise ConfigError(
            f"need at least 1 training image and >= 0 eval images, got {n_images_train}/{n_images_eval}"
        )
    root = prepare_out_dir(out_dir)
    images = root / "images"
    images.mkdir(exist_ok=True)
    train_rng, eval_rng, text_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(cfg.seed).spawn(3)
    )
    renderer = Renderer(cfg)
    started = time.perf_counter()

    pretrain: list[dict[str, Any]] = []
    instruct: list[dict[str, Any]] = []
    for i in tqdm(range(n_images_train), desc="train images", unit="img", disable=not progress or None):
        scene = sample_scene(train_rng, cfg)
        image = _save(renderer(scene), images, f"train_{i:06d}.png")
        pretrain.append(pretrain_record(f"train-{i:06d}", image, scene, train_rng))
        instruct.append(instruct_record(f"train-{i:06d}", image, instruct_turns(scene, train_rng, cfg)))
    n_text = round(n_images_train * cfg.text_only_fraction)
    instruct.extend(text_only_record(f"text-{i:06d}", text_rng, cfg) for i in range(n_text))

    evals: list[dict[str, Any]] = []
    for i in tqdm(range(n_images_eval), desc="eval images", unit="img", disable=not progress or None):
        scene = sample_scene(eval_rng, cfg)
        image = _save(renderer(scene), images, f"eval_{i:06d}.png")
        evals.extend(eval_records(f"eval-{i:06d}", image, scene, eval_rng, cfg))

    counts = _counts(n_images_train, n_images_eval, pretrain, instruct, evals, n_text)
    paths = DatasetPaths(
        root=root,
        images=images,
        pretrain=_write_json(root / "pretrain.json", pretrain),
        instruct=_write_json(root / "instruct.json", instruct),
        eval=_write_json(root / "eval.json", evals),
        world=_write_json(root / "world.json", _world_info(cfg, counts)),
        counts=counts,
    )
    log.info(
        "synthetic world: %d train + %d eval images, %d instruct / %d eval records in %.1fs -> %s",
        n_images_train, n_images_eval, len(instruct), len(evals), time.perf_counter() - started, root,
    )  # fmt: skip
    return paths


def _save(img: Image.Image, folder: Path, name: str) -> str:
    img.save(folder / name, format="PNG")  # PIL writes no timestamp: same pixels -> same bytes
    return f"{folder.name}/{name}"


def _write_json(path: Path, obj: Any) -> Path:
    path.write_text(json.dumps(obj, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def answer_distribution(records: Sequence[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """``{kind: {answer: count}}`` over eval-style records (with ``kind`` and ``answer``)."""
    by_kind: dict[str, Counter[str]] = {}
    for r in records:
        by_kind.setdefault(r["kind"], Counter())[r["answer"]] += 1
    return {k: dict(sorted(c.items())) for k, c in sorted(by_kind.items())}


def _instruct_distribution(instruct: Sequence[dict[str, Any]]) -> dict[str, int]:
    answers: Counter[str] = Counter()
    for rec in instruct:
        if "image" in rec:
            answers.update(turn["value"] for turn in rec["conversations"] if turn["from"] == "gpt")
    return dict(sorted(answers.items()))


def _counts(
    n_train: int,
    n_eval: int,
    pretrain: list[dict[str, Any]],
    instruct: list[dict[str, Any]],
    evals: list[dict[str, Any]],
    n_text: int,
) -> dict[str, Any]:
    return {
        "train_images": n_train,
        "eval_images": n_eval,
        "pretrain_records": len(pretrain),
        "instruct_records": len(instruct),
        "instruct_text_only_records": n_text,
        "instruct_turns": sum(len(r["conversations"]) // 2 for r in instruct),
        "eval_records": len(evals),
        "eval_answers": answer_distribution(evals),
        "instruct_answers": _instruct_distribution(instruct),
    }


def read_world(path: str | Path) -> WorldConfig:
    """The :class:`WorldConfig` of a ``world.json`` written by ``imp synth`` (or of a suite manifest)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        config = data.get("config") or data.get("world")
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in config.items()}
        return WorldConfig(**values)
    except (OSError, ValueError, TypeError, AttributeError) as exc:
        raise ConfigError(f"cannot read a world config from {path}: {exc}") from None


def _world_info(cfg: WorldConfig, counts: dict[str, Any]) -> dict[str, Any]:
    return {
        "config": cfg.to_dict(),
        "kinds": list(KINDS),
        "image_folder": ".",
        "question_suffix": SHORT_ANSWER_TAIL,
        "counts": counts,
    }
