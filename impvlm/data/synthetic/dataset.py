"""The training and eval files: caption, instruct and eval records, written with the world's config."""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from impdefs import IMAGE_TOKEN, SHORT_ANSWER_TAIL
from impvlm.data.synthetic.questions import applicable_kinds, ask
from impvlm.data.synthetic.render import Renderer
from impvlm.data.synthetic.world import (
    CAPTION_INSTRUCTIONS,
    KINDS,
    QA,
    REFERRING_KINDS,
    Scene,
    WorldConfig,
    caption,
    pick,
    sample_scene,
)
from impvlm.errors import ConfigError
from impvlm.files import prepare_out_dir

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DatasetPaths:
    root: Path
    images: Path
    pretrain: Path
    instruct: Path
    eval: Path
    world: Path
    counts: dict[str, Any] = field(default_factory=dict, compare=False)


# ------------------------------------------------------------------------------------------- records


def with_suffix(question: str) -> str:
    return question + SHORT_ANSWER_TAIL


def pretrain_record(rid: str, image: str, scene: Scene, rng: np.random.Generator) -> dict[str, Any]:
    instruction = pick(rng, CAPTION_INSTRUCTIONS)
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
    colour, shape = pick(rng, cfg.colours), pick(rng, cfg.shapes)
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
        word = pick(rng, cfg.words)
        options.append(QA(f"Spell the word {word} in lower case.", word, "text"))
    return pick(rng, options)


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
    pretrain, instruct = _train_records(n_images_train, renderer, images, train_rng, progress)
    n_text = round(n_images_train * cfg.text_only_fraction)
    instruct.extend(text_only_record(f"text-{i:06d}", text_rng, cfg) for i in range(n_text))
    evals = _eval_records(n_images_eval, renderer, images, eval_rng, progress)

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


def _train_records(
    n: int, renderer: Renderer, images: Path, rng: np.random.Generator, progress: bool
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``n`` training images saved under ``images``; their caption and instruct records."""
    from tqdm import tqdm

    cfg = renderer.cfg
    pretrain: list[dict[str, Any]] = []
    instruct: list[dict[str, Any]] = []
    for i in tqdm(range(n), desc="train images", unit="img", disable=not progress or None):
        scene = sample_scene(rng, cfg)
        image = _save(renderer(scene), images, f"train_{i:06d}.png")
        pretrain.append(pretrain_record(f"train-{i:06d}", image, scene, rng))
        instruct.append(instruct_record(f"train-{i:06d}", image, instruct_turns(scene, rng, cfg)))
    return pretrain, instruct


def _eval_records(
    n: int, renderer: Renderer, images: Path, rng: np.random.Generator, progress: bool
) -> list[dict[str, Any]]:
    """``n`` held-out images saved under ``images``; one eval record per applicable question kind."""
    from tqdm import tqdm

    evals: list[dict[str, Any]] = []
    for i in tqdm(range(n), desc="eval images", unit="img", disable=not progress or None):
        scene = sample_scene(rng, renderer.cfg)
        image = _save(renderer(scene), images, f"eval_{i:06d}.png")
        evals.extend(eval_records(f"eval-{i:06d}", image, scene, rng, renderer.cfg))
    return evals


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
