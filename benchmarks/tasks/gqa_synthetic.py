"""GQA from the synthetic shapes world, in the files :mod:`benchmarks.tasks.gqa` reads.

``n`` shapes images x 3 questions with GQA structural types: query (open), verify, choose, logical
(and/or existence), compare (same colour / shape), so binary / open are reported.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np

from benchmarks.tasks import gqa
from benchmarks.tasks.synthetic_common import BenchmarkFiles, SuiteWriter, object_scene
from impdefs import SHORT_ANSWER_TAIL
from impvlm.data.synthetic import POSITION_PHRASES, Obj, Scene, WorldConfig, article, ask, pick

SEMANTIC = {"colour": "attr", "shape": "cat", "position": "rel", "exists": "obj"}

#: (question, answer, GQA types)
Made = tuple[str, str, dict[str, str]]


def write(suite: SuiteWriter, rng: np.random.Generator) -> BenchmarkFiles:
    """Write GQA's question, annotation and image files under ``suite.root``."""
    files = BenchmarkFiles()
    questions: list[dict] = []
    annotations: dict[str, dict] = {}
    structural: Counter[str] = Counter()
    for i in range(suite.n):
        scene = object_scene(rng, suite.cfg)
        image_id = f"n{i + 1:06d}"
        image = f"{image_id}.png"
        suite.save(scene, gqa.FOLDER, gqa.IMAGE_DIR, image)
        made = _unique_questions(lambda scene=scene: _question(scene, rng, suite.cfg), 3, key=lambda x: x[0])
        for question, answer, types in made:
            qid = str(201_000_000 + len(questions))
            questions.append(
                {
                    "question_id": qid,
                    "image": image,
                    "text": question + SHORT_ANSWER_TAIL,
                    "category": "default",
                }
            )
            structural[types["structural"]] += 1
            annotations[qid] = _annotation(qid, image_id, question, answer, types)
    suite.jsonl(files, questions, gqa.FOLDER, gqa.QUESTION_FILE)
    suite.json(files, annotations, gqa.FOLDER, gqa.ANNOTATION_FILE)
    files.questions, files.images = len(questions), suite.n
    files.details = {"structural": dict(sorted(structural.items()))}
    return files


def _annotation(qid: str, image_id: str, question: str, answer: str, types: dict[str, str]) -> dict[str, Any]:
    return {
        "semantic": [],
        "entailed": [],
        "equivalent": [qid],
        "question": question,
        "imageId": image_id,
        "isBalanced": True,
        "groups": {"global": None, "local": types["detailed"]},
        "answer": answer,
        "semanticStr": "",
        "annotations": {"answer": {}, "question": {}, "fullAnswer": {}},
        "types": types,
        "fullAnswer": f"{answer.capitalize()}.",
    }


def _unique_questions(
    make: Callable[[], Any], n: int, key: Callable[[Any], str], tries: int = 30
) -> list[Any]:
    """Up to ``n`` items from ``make()`` with distinct ``key`` (questions on one image must differ)."""
    out: list[Any] = []
    seen: set[str] = set()
    for _ in range(tries):
        item = make()
        if key(item) not in seen:
            seen.add(key(item))
            out.append(item)
            if len(out) == n:
                break
    return out


def _types(structural: str, semantic: str, detailed: str) -> dict[str, str]:
    return {"structural": structural, "semantic": semantic, "detailed": detailed}


def _yes(value: bool) -> str:
    return "yes" if value else "no"


def _question(scene: Scene, rng: np.random.Generator, cfg: WorldConfig) -> Made:
    """(question, answer, types) in one of GQA's structural types."""
    objs = scene.objects
    r = rng.random()
    if r < 0.45:
        kind = pick(rng, ("colour", "shape", "position"))
        qa = ask(scene, kind, rng, cfg)
        return qa.question, qa.answer, _types("query", SEMANTIC[kind], f"query{kind.title()}")
    if r < 0.75:
        kind = pick(rng, ("colour", "shape", "position", "exists"))
        qa = ask(scene, kind, rng, cfg, bool(rng.random() < 0.5))
        detailed = "exist" if kind == "exists" else f"verify{kind.title()}"
        return qa.question, qa.answer, _types("verify", SEMANTIC[kind], detailed)
    if r < 0.85:
        return _choose(scene, rng, cfg)
    if r < 0.95 or len(objs) < 2:
        return _logical(scene, rng, cfg)
    o1, o2 = (objs[i] for i in rng.choice(len(objs), size=2, replace=False))
    attr = pick(rng, ("colour", "shape"))
    noun = "shape" if attr == "colour" else "object"
    same = getattr(o1, attr) == getattr(o2, attr)
    question = (
        f"Are the {noun} {POSITION_PHRASES[o1.position]} and the {noun} "
        f"{POSITION_PHRASES[o2.position]} the same {attr}?"
    )
    return question, _yes(same), _types("compare", "attr", f"same{attr.title()}")


def _choose(scene: Scene, rng: np.random.Generator, cfg: WorldConfig) -> Made:
    obj: Obj = pick(rng, scene.objects)
    attr = pick(rng, ("colour", "shape", "position"))
    truth = getattr(obj, attr)
    other = pick(rng, [v for v in getattr(cfg, attr + "s") if v != truth])
    a, b = (truth, other) if rng.random() < 0.5 else (other, truth)
    where = POSITION_PHRASES[obj.position]
    if attr == "colour":
        question = f"Is the shape {where} {a} or {b}?"
        semantic = "attr"
    elif attr == "shape":
        question = f"Is the object {where} {article(a)} {a} or {article(b)} {b}?"
        semantic = "cat"
    else:
        question = f"Is the {obj.colour} {obj.shape} {POSITION_PHRASES[a]} or {POSITION_PHRASES[b]}?"
        semantic = "rel"
    return question, truth, _types("choose", semantic, f"choose{attr.title()}")


def _logical(scene: Scene, rng: np.random.Generator, cfg: WorldConfig) -> Made:
    present = [(o.colour, o.shape) for o in scene.objects]
    absent = [(c, s) for c in cfg.colours for s in cfg.shapes if (c, s) not in present]
    op = pick(rng, ("or", "and"))
    want = bool(rng.random() < 0.5)
    if op == "or":
        p1 = pick(rng, present) if want else pick(rng, absent)
        p2 = pick(rng, [p for p in present + absent if p != p1] if want else [p for p in absent if p != p1])
    elif want and len(present) >= 2:
        p1, p2 = (present[i] for i in rng.choice(len(present), size=2, replace=False))
    else:
        p1, p2 = pick(rng, present), pick(rng, absent)
    if rng.random() < 0.5:
        p1, p2 = p2, p1
    in1, in2 = p1 in present, p2 in present
    one = f"{article(p1[0])} {p1[0]} {p1[1]}"
    two = f"{article(p2[0])} {p2[0]} {p2[1]}"
    if op == "or":
        return f"Is there {one} or {two}?", _yes(in1 or in2), _types("logical", "obj", "existOr")
    return f"Are there both {one} and {two}?", _yes(in1 and in2), _types("logical", "obj", "existAnd")
