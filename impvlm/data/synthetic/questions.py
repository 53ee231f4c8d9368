"""Asking about a scene: open questions and their yes/no verification forms, one function per kind."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from types import MappingProxyType
from typing import Any

import numpy as np

from impvlm.data.synthetic.world import (
    OBJECT_KINDS,
    POSITION_PHRASES,
    QA,
    REFERRING_KINDS,
    SIGN_KINDS,
    Obj,
    Scene,
    WorldConfig,
    article,
    pick,
)
from impvlm.errors import ConfigError


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
        q = pick(rng, ("What colour is the text?", "What colour is the word?"))
        return QA(q, scene.word_colour or "", "colour")
    obj = obj or pick(rng, scene.objects)
    return QA(f"What colour is {_refer(scene, obj, rng, by=('position', 'shape'))}?", obj.colour, "colour")


def _ask_shape(scene: Scene, rng: np.random.Generator, cfg: WorldConfig, obj: Obj | None = None) -> QA:
    obj = obj or pick(rng, scene.objects)
    if rng.random() < 0.5 and _unique(scene, "colour", obj.colour):
        return QA(f"What shape is the {obj.colour} object?", obj.shape, "shape")
    return QA(f"What shape is {POSITION_PHRASES[obj.position]}?", obj.shape, "shape")


def _ask_position(scene: Scene, rng: np.random.Generator, cfg: WorldConfig, obj: Obj | None = None) -> QA:
    obj = obj or pick(rng, scene.objects)
    return QA(
        f"Where is {_refer(scene, obj, rng, by=('both', 'shape', 'colour'))}?", obj.position, "position"
    )


def _ask_count(scene: Scene, rng: np.random.Generator, cfg: WorldConfig, obj: None = None) -> QA:
    q = pick(
        rng,
        (
            "How many shapes are there?",
            "How many shapes are in the image?",
            "How many objects are in the picture?",
        ),
    )
    return QA(q, str(len(scene.objects)), "count")


def _ask_ocr(scene: Scene, rng: np.random.Generator, cfg: WorldConfig, obj: None = None) -> QA:
    q = pick(
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
            f"Is there {article(c)} {c} {s}?"
            for c in cfg.colours
            for s in cfg.shapes
            if ((c, s) in pairs) == polarity
        ],
        "shape": [
            f"Is there {article(s)} {s} in the image?" for s in cfg.shapes if (s in shapes) == polarity
        ],
        "colour": [f"Is there {article(c)} {c} shape?" for c in cfg.colours if (c in colours) == polarity],
    }
    options = [v for v in subtypes.values() if v]
    if not options:  # pragma: no cover - only for degenerate configs (e.g. one colour and one shape)
        raise ConfigError("this world is too small to ask an existence question of that polarity")
    return QA(pick(rng, pick(rng, options)), _yes(polarity), "exists")


def _verify_colour(
    scene: Scene, rng: np.random.Generator, cfg: WorldConfig, polarity: bool, obj: Obj | None = None
) -> QA:
    if scene.is_sign:
        c = _same_or_other(rng, scene.word_colour or "", cfg.colours, polarity)
        return QA(f"Is the text {c}?", _yes(polarity), "colour")
    obj = obj or pick(rng, scene.objects)
    c = _same_or_other(rng, obj.colour, cfg.colours, polarity)
    return QA(f"Is the shape {POSITION_PHRASES[obj.position]} {c}?", _yes(polarity), "colour")


def _verify_shape(
    scene: Scene, rng: np.random.Generator, cfg: WorldConfig, polarity: bool, obj: Obj | None = None
) -> QA:
    obj = obj or pick(rng, scene.objects)
    s = _same_or_other(rng, obj.shape, cfg.shapes, polarity)
    return QA(f"Is the object {POSITION_PHRASES[obj.position]} {article(s)} {s}?", _yes(polarity), "shape")


def _verify_position(
    scene: Scene, rng: np.random.Generator, cfg: WorldConfig, polarity: bool, obj: Obj | None = None
) -> QA:
    obj = obj or pick(rng, scene.objects)
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
    return pick(rng, ways)


def _unique(scene: Scene, attr: str, value: str) -> bool:
    return sum(getattr(o, attr) == value for o in scene.objects) == 1


def _same_or_other(rng: np.random.Generator, truth: Any, choices: Sequence[Any], same: bool) -> Any:
    if same:
        return truth
    others = [c for c in choices if c != truth]
    if not others:
        raise ConfigError(f"cannot pick a wrong answer: {truth!r} is the only choice")
    return pick(rng, others)


def _yes(polarity: bool) -> str:
    return "yes" if polarity else "no"
