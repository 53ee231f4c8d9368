"""The nine-benchmark suite written from the synthetic shapes world, in the benchmarks' real file formats.

:func:`write_synthetic_suite` fills a folder with LLaVA's ``playground/data/eval`` layout — question
files, images and ground truth exactly where and how the loaders in :mod:`benchmarks.tasks` read them
— so ``imp bench RUNTIME --data DIR`` runs all nine benchmarks offline and scores every one locally.
Scenes, renderer and question wordings come from :mod:`impvlm.data.synthetic` (the world the tiny model
is trained on; by default the same :class:`WorldConfig`), drawn with a seed of their own so images are
held out from training. Prompts carry each benchmark's official instruction suffix.

===========  =================================================================================================
benchmark    what is written (``n`` = ``n_images_per_benchmark``)
===========  =================================================================================================
vqav2        ``n`` images x 3 open / yes-no questions; 10 answers each (the answer, surface variants that
             normalize to it, a few plausible disagreements), ``answer_type`` yes/no / number / other. The
             same questions as split ``test-dev2015`` (the default, what ``imp bench`` asks) with local
             annotations, and as the ``val2014`` replica; plus the official-evaluator question files.
vizwiz       ``n`` images, one question each (VizWiz has one per image), with the VizWiz "Unanswerable" line;
             about a fifth ask about something the image lacks (a shape in an empty slot, text on a
             shapes image) and are answered "unanswerable". Split ``test`` (default) and ``val``, both with
             answers in ``Annotations/<split>.json``.
gqa          ``n`` shapes images x 3 questions with GQA structural types: query (open), verify, choose,
             logical (and/or existence), compare (same colour / shape), so binary / open are reported.
textvqa      ``n`` sign images x 1-2 questions (the word; the text's colour), "Reference OCR token:" line
             with the rendered word (sometimes plus a misread), 10 answers, keyed by (image id, question).
pope         ``n`` images with 3 shapes; per split one yes and one no question per shape, "Is there a red
             circle in the image?". Negatives: random (any absent object), popular (absent objects most
             frequent in the set), adversarial (absent objects sharing a colour or shape with a present one).
mme          existence, count, position, color, OCR (``n / 5`` images each), one yes and one no question per
             image; flat ``<category>/<stem>.png`` + ``<stem>.txt`` ground truth. Headline max: 5 x 200.
sqa          ``n`` problems with an image and ``n`` text-only ones (2-4 lettered choices, some with a
             ``Context:``), ``problems.json`` and ``pid_splits.json``; the IMG subset is the image half.
mmbench      ``n`` questions with 2-4 options and every circular rotation (``index + k * 1e6``, options and
             answer rotated), base64 PNG images in the TSV, category / l2-category columns.
mmvet        ``n`` images x 2 open questions, no suffix; ground truth single words, some ``<OR>`` forms
             ("left<OR>on the left", "2<OR>two"), capabilities rec / ocr / spat. Graded offline with
             ``IMP_JUDGE=exact`` (:class:`benchmarks.mmvet_judge.ExactMatchJudge`).
===========  =================================================================================================

``synthetic_suite.json`` at the top records the world, the seed and the counts. The same arguments give
byte-identical files. The folder must be empty or a previous synthetic suite (whose benchmark folders are
then replaced).
"""

from __future__ import annotations

import base64
import csv
import io
import json
import logging
import shutil
import time
import zlib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.base import SHORT_ANSWER_SUFFIX, UNANSWERABLE_SUFFIX
from benchmarks.tasks import gqa, mmbench, mme, mmvet, pope, scienceqa, textvqa, vizwiz, vqav2
from impvlm.data.synthetic import (
    POSITION_PHRASES,
    QA,
    Obj,
    Renderer,
    Scene,
    WorldConfig,
    applicable_kinds,
    ask,
    sample_scene,
)
from impvlm.errors import ConfigError
from impvlm.templates import IMAGE_TOKEN

log = logging.getLogger(__name__)

MANIFEST = "synthetic_suite.json"
DEFAULT_SEED = 1234
SEED_SALT = 0x5B3C_2024  # mixed into every stream, so no benchmark image repeats a training draw
SHORT = "\n" + SHORT_ANSWER_SUFFIX
VIZWIZ_SUFFIX = "\n" + UNANSWERABLE_SUFFIX + SHORT
UNANSWERABLE = "unanswerable"

#: The folders a suite owns (replaced when a suite is written again into the same place).
FOLDERS: dict[str, str] = {
    "vqav2": vqav2.FOLDER,
    "gqa": gqa.FOLDER,
    "vizwiz": vizwiz.FOLDER,
    "sqa": scienceqa.FOLDER,
    "textvqa": textvqa.FOLDER,
    "pope": pope.FOLDER,
    "mme": mme.FOLDER,
    "mmbench": mmbench.FOLDER,
    "mmvet": mmvet.FOLDER,
}
MME_SUBTASKS: dict[str, str] = {  # MME subtask -> world question kind (yes/no form)
    "existence": "exists",
    "count": "count",
    "position": "position",
    "color": "colour",
    "OCR": "ocr",
}
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
SQA_HINTS = (
    "Select the best answer.",
    "Look at the picture.",
    "The picture shows flat shapes or a word.",
)
MMBENCH_HINTS = ("The image shows flat shapes or a word on a dark background.", "Look closely at the image.")
MMBENCH_CATEGORIES: dict[str, tuple[str, str]] = {  # kind -> (category, l2-category)
    "colour": ("attribute_recognition", "finegrained_perception (instance-level)"),
    "shape": ("attribute_recognition", "finegrained_perception (instance-level)"),
    "position": ("object_localization", "finegrained_perception (instance-level)"),
    "ocr": ("ocr", "finegrained_perception (instance-level)"),
    "count": ("spatial_relationship", "finegrained_perception (cross-instance)"),
}
MMBENCH_COLUMNS = (
    "index",
    "question",
    "hint",
    "A",
    "B",
    "C",
    "D",
    "answer",
    "category",
    "image",
    "source",
    "l2-category",
    "comment",
    "split",
)
GQA_SEMANTIC = {"colour": "attr", "shape": "cat", "position": "rel", "exists": "obj"}


@dataclass
class BenchmarkFiles:
    """What was written for one benchmark (for the manifest and the log)."""

    questions: int = 0
    images: int = 0
    files: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------------ API


def write_synthetic_suite(
    out_dir: Path,
    n_images_per_benchmark: int = 20,
    seed: int = DEFAULT_SEED,
    world: WorldConfig | None = None,
    progress: bool = True,
) -> Path:
    """Write all nine benchmarks of the shapes world under ``out_dir``; returns ``out_dir``.

    ``out_dir`` is then the ``--data`` folder of ``imp bench`` (LLaVA's ``playground/data/eval``
    layout). ``world`` defaults to ``WorldConfig()``, the training world's vocabulary; ``seed`` draws the
    scenes and questions (each benchmark from its own stream). Same arguments -> identical files.
    """
    from tqdm import tqdm

    cfg = world or WorldConfig()
    if n_images_per_benchmark < 1:
        raise ConfigError(f"n_images_per_benchmark must be >= 1, got {n_images_per_benchmark}")
    if seed < 0:
        raise ConfigError(f"seed must be >= 0, got {seed}")
    if not cfg.words:
        raise ConfigError("the synthetic suite needs a world with words (TextVQA, MME OCR, signs)")
    if len(cfg.colours) < 2 or len(cfg.shapes) < 2 or len(cfg.positions) < 2:
        raise ConfigError("the synthetic suite needs at least 2 colours, 2 shapes and 2 positions")
    root = Path(out_dir)
    _prepare(root)
    started = time.perf_counter()
    suite = _Suite(root, cfg, seed, n_images_per_benchmark)
    writers: list[tuple[str, Callable[[np.random.Generator], BenchmarkFiles]]] = [
        ("vqav2", suite.vqav2),
        ("gqa", suite.gqa),
        ("vizwiz", suite.vizwiz),
        ("sqa", suite.scienceqa),
        ("textvqa", suite.textvqa),
        ("pope", suite.pope),
        ("mme", suite.mme),
        ("mmbench", suite.mmbench),
        ("mmvet", suite.mmvet),
    ]
    written: dict[str, BenchmarkFiles] = {}
    bar = tqdm(writers, desc="synthetic benchmarks", unit="bench", disable=not progress or None)
    for name, writer in bar:
        bar.set_postfix_str(name)
        written[name] = writer(_stream(seed, name))
    _write_manifest(root, cfg, seed, n_images_per_benchmark, written, complete=True)
    log.info(
        "synthetic suite: %d questions on %d images in %.1fs -> %s",
        sum(w.questions for w in written.values()),
        sum(w.images for w in written.values()),
        time.perf_counter() - started,
        root,
    )
    return root


def suite_summary(root: Path) -> dict[str, Any]:
    """The manifest of a written suite."""
    return json.loads((Path(root) / MANIFEST).read_text(encoding="utf-8"))


# ---------------------------------------------------------------------------------------- internals


def _stream(seed: int, name: str) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, SEED_SALT, zlib.crc32(name.encode())]))


def _prepare(root: Path) -> None:
    """Refuse a non-empty folder that is not a synthetic suite; clear a previous suite's folders."""
    if root.exists() and not root.is_dir():
        raise ConfigError(f"{root} exists and is not a folder")
    if root.is_dir() and any(root.iterdir()):
        if not (root / MANIFEST).is_file():
            raise ConfigError(
                f"{root} is not empty and holds no {MANIFEST}: write the synthetic suite to a new folder"
            )
        for folder in FOLDERS.values():
            if (root / folder).is_dir():
                shutil.rmtree(root / folder)
    root.mkdir(parents=True, exist_ok=True)
    (root / MANIFEST).write_text(json.dumps({"generator": __name__, "complete": False}) + "\n")


def _write_manifest(
    root: Path, cfg: WorldConfig, seed: int, n: int, written: dict[str, BenchmarkFiles], complete: bool
) -> None:
    manifest = {
        "generator": __name__,
        "complete": complete,
        "seed": seed,
        "n_images_per_benchmark": n,
        "world": cfg.to_dict(),
        "benchmarks": {
            name: {
                "questions": w.questions,
                "images": w.images,
                "files": w.files,
                **w.details,
            }
            for name, w in written.items()
        },
        "notes": [
            "synthetic shapes-world replica of the nine benchmarks in their real file formats; scores are "
            "for comparing runtimes of one model, not comparable with published numbers",
            "vqav2 and vizwiz hold the same questions under their default test split (with local "
            "annotations) and under the val replica",
            "mmvet is graded offline with IMP_JUDGE=exact (exact match, not the official GPT-4 judge)",
        ],
    }
    (root / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")


def _pick(rng: np.random.Generator, seq: Sequence[Any]) -> Any:
    return seq[int(rng.integers(len(seq)))]


def _a(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _yes(value: bool) -> str:
    return "yes" if value else "no"


def _object_scene(rng: np.random.Generator, cfg: WorldConfig, n_objects: int | None = None) -> Scene:
    """A shapes scene (no sign); ``n_objects`` fixes the number of shapes."""
    objects_cfg = replace(cfg, ocr_fraction=0.0)
    if n_objects is not None:
        objects_cfg = replace(objects_cfg, min_objects=n_objects, max_objects=n_objects)
    return sample_scene(rng, objects_cfg)


def _sign_scene(rng: np.random.Generator, cfg: WorldConfig) -> Scene:
    return Scene(word=_pick(rng, cfg.words), word_colour=_pick(rng, cfg.colours))


def _png(img: Any) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    return buffer.getvalue()


def _dump(obj: Any, indent: int | None = None) -> str:
    return json.dumps(obj, indent=indent, ensure_ascii=False)


def _answer_type(qa: QA) -> str:
    if qa.answer in ("yes", "no"):
        return "yes/no"
    if qa.kind == "count":
        return "number"
    return "other"


def _question_type(question: str) -> str:
    return " ".join(question.lower().rstrip("?").split()[:3])


def _surface_variants(answer: str, kind: str) -> list[str]:
    """Spellings that the VQA normalization maps back to ``answer``."""
    out = [answer.capitalize() + ".", answer.upper() if kind == "ocr" else answer.capitalize()]
    if answer.isdigit() and int(answer) < len(NUMBER_WORDS):
        out.append(NUMBER_WORDS[int(answer)])
    if kind in ("shape", "ocr"):
        out.append(f"the {answer}")
    return [v for v in out if v != answer]


def _alternates(qa: QA, cfg: WorldConfig) -> list[str]:
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


def _ten_answers(rng: np.random.Generator, qa: QA, cfg: WorldConfig, surface: bool) -> list[str]:
    """Ten annotator answers: 7-10 times the answer, the rest surface variants (when ``surface``: VQAv2 and
    TextVQA normalize the ground truth) or disagreements. The answer always scores 1.0, another one <= 0.9."""
    n_main = int(rng.integers(7, 11))
    variants = _surface_variants(qa.answer, qa.kind) if surface else []
    alternates = _alternates(qa, cfg)
    answers = [qa.answer] * n_main
    for _ in range(10 - n_main):
        pool = variants if (variants and (not alternates or rng.random() < 0.6)) else alternates
        answers.append(_pick(rng, pool) if pool else qa.answer)
    return [answers[i] for i in rng.permutation(10)]


def _mc_domain(qa: QA, cfg: WorldConfig) -> list[str]:
    if qa.answer in ("yes", "no"):
        return ["yes", "no"]
    return {
        "colour": list(cfg.colours),
        "shape": list(cfg.shapes),
        "position": list(cfg.positions),
        "count": [str(i) for i in range(cfg.max_objects + 1)],
        "ocr": list(cfg.words),
    }[qa.kind]


def _choices(rng: np.random.Generator, answer: str, domain: Sequence[str], most: int = 4) -> list[str]:
    """2..``most`` distinct options including ``answer``, shuffled."""
    others = [d for d in domain if d != answer]
    k = int(rng.integers(2, min(most, len(others) + 1) + 1))
    picked = [others[i] for i in rng.choice(len(others), size=k - 1, replace=False)]
    options = [answer, *picked]
    return [options[i] for i in rng.permutation(len(options))]


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


# -------------------------------------------------------------------------------------- the writers


class _Suite:
    def __init__(self, root: Path, cfg: WorldConfig, seed: int, n: int) -> None:
        self.root = root
        self.cfg = cfg
        self.seed = seed
        self.n = n
        self.render = Renderer(cfg)

    # ---------------------------------------------------------------- helpers
    def _path(self, *parts: str) -> Path:
        path = self.root.joinpath(*parts)
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def _save(self, scene: Scene, *parts: str) -> None:
        self._path(*parts).write_bytes(_png(self.render(scene)))

    def _json(self, files: BenchmarkFiles, obj: Any, *parts: str, indent: int | None = None) -> None:
        self._path(*parts).write_text(_dump(obj, indent) + "\n", encoding="utf-8")
        files.files.append("/".join(parts))

    def _jsonl(self, files: BenchmarkFiles, records: Sequence[dict], *parts: str) -> None:
        text = "".join(_dump(r) + "\n" for r in records)
        self._path(*parts).write_text(text, encoding="utf-8")
        files.files.append("/".join(parts))

    # ---------------------------------------------------------------- VQAv2
    def _open_or_verify(self, scene: Scene, rng: np.random.Generator, n: int, verify: float) -> list[QA]:
        """``n`` questions of distinct kinds; a share ``verify`` in yes/no form (exists: always)."""
        kinds = applicable_kinds(scene)
        chosen = [kinds[i] for i in rng.permutation(len(kinds))[:n]]
        out = []
        for kind in chosen:
            polarity = bool(rng.random() < 0.5) if kind != "exists" and rng.random() < verify else None
            out.append(ask(scene, kind, rng, self.cfg, polarity))
        return out

    def vqav2(self, rng: np.random.Generator) -> BenchmarkFiles:
        files = BenchmarkFiles()
        items = []  # (image_id, scene, [(question_id, qa, answers)])
        for i in range(self.n):
            image_id = i + 1
            scene = sample_scene(rng, self.cfg)
            qas = self._open_or_verify(scene, rng, 3, verify=0.25)
            rows = [
                (image_id * 1000 + k, qa, _ten_answers(rng, qa, self.cfg, surface=True))
                for k, qa in enumerate(qas)
            ]
            items.append((image_id, scene, rows))
        image_names = {"test-dev2015": "COCO_test2015_{:012d}.png", "val2014": "COCO_val2014_{:012d}.png"}
        for split in ("test-dev2015", "val2014"):
            image_dir = vqav2.IMAGE_DIRS[split]
            questions, annotations, official = [], [], []
            for image_id, scene, rows in items:
                image = image_names[split].format(image_id)
                self._save(scene, vqav2.FOLDER, image_dir, image)
                for question_id, qa, answers in rows:
                    questions.append(
                        {
                            "question_id": question_id,
                            "image": image,
                            "text": qa.question + SHORT,
                            "category": "default",
                        }
                    )
                    official.append(
                        {"image_id": image_id, "question": qa.question, "question_id": question_id}
                    )
                    annotations.append(
                        {
                            "question_type": _question_type(qa.question),
                            "multiple_choice_answer": qa.answer,
                            "answers": [
                                {
                                    "answer": a,
                                    "answer_confidence": "yes" if a == qa.answer else "maybe",
                                    "answer_id": j + 1,
                                }
                                for j, a in enumerate(answers)
                            ],
                            "image_id": image_id,
                            "answer_type": _answer_type(qa),
                            "question_id": question_id,
                        }
                    )
            self._jsonl(files, questions, vqav2.FOLDER, vqav2.QUESTION_FILE.format(split=split))
            header = {"data_type": "mscoco", "data_subtype": split.replace("-dev", "")}
            self._json(
                files,
                {**header, "annotations": annotations},
                vqav2.FOLDER,
                vqav2.ANNOTATION_FILE.format(split=split),
            )
            self._json(
                files,
                {**header, "task_type": "OpenEnded", "questions": official},
                vqav2.FOLDER,
                f"v2_OpenEnded_mscoco_{split}_questions.json",
            )
            if split == "test-dev2015":  # the "full" test2015 list: here the same questions
                self._jsonl(files, questions, vqav2.FOLDER, vqav2.FULL_TEST_FILE)
        types = Counter(_answer_type(qa) for _, _, rows in items for _, qa, _ in rows)
        files.questions = sum(types.values())
        files.images = len(items)
        files.details = {"splits": ["test-dev2015", "val2014"], "answer_types": dict(sorted(types.items()))}
        return files

    # ---------------------------------------------------------------- VizWiz
    def _unanswerable(self, scene: Scene, rng: np.random.Generator) -> QA:
        """A question about something the image does not show."""
        if scene.is_sign:
            where = POSITION_PHRASES[_pick(rng, self.cfg.positions)]
            return QA(
                _pick(rng, (f"What shape is {where}?", f"What colour is the shape {where}?")),
                UNANSWERABLE,
                "none",
            )
        empty = [p for p in self.cfg.positions if scene.at(p) is None]
        options = [_pick(rng, ("What word is written in the image?", "What does the text say?"))]
        if empty:
            where = POSITION_PHRASES[_pick(rng, empty)]
            options += [f"What colour is the shape {where}?", f"What shape is {where}?"]
        return QA(_pick(rng, options), UNANSWERABLE, "none")

    def vizwiz(self, rng: np.random.Generator) -> BenchmarkFiles:
        files = BenchmarkFiles()
        items = []
        for _ in range(self.n):
            scene = sample_scene(rng, self.cfg)
            if rng.random() < 0.2:
                qa = self._unanswerable(scene, rng)
                answers = [UNANSWERABLE] * int(rng.integers(7, 11))
                answers += [
                    _pick(rng, ("unsuitable", "nothing", "no text")) for _ in range(10 - len(answers))
                ]
                answers = [answers[i] for i in rng.permutation(10)]
                answer_type = UNANSWERABLE
            else:
                (qa,) = self._open_or_verify(scene, rng, 1, verify=0.15)
                answers = _ten_answers(rng, qa, self.cfg, surface=False)
                if rng.random() < 0.15:  # someone found the photo unusable
                    answers[int(rng.integers(10))] = UNANSWERABLE
                answer_type = _answer_type(qa)
            items.append((scene, qa, answers, answer_type))
        for split in ("test", "val"):
            questions, annotations = [], []
            for i, (scene, qa, answers, answer_type) in enumerate(items):
                image = f"VizWiz_{split}_{i:08d}.png"
                self._save(scene, vizwiz.FOLDER, vizwiz.IMAGE_DIR.format(split=split), image)
                questions.append(
                    {
                        "question_id": i,
                        "image": image,
                        "text": qa.question + VIZWIZ_SUFFIX,
                        "category": "default",
                    }
                )
                annotations.append(
                    {
                        "image": image,
                        "question": qa.question,
                        "answers": [
                            {"answer": a, "answer_confidence": "yes" if a == qa.answer else "maybe"}
                            for a in answers
                        ],
                        "answer_type": answer_type,
                        "answerable": int(answer_type != UNANSWERABLE),
                    }
                )
            self._jsonl(files, questions, vizwiz.FOLDER, vizwiz.QUESTION_FILE.format(split=split))
            self._json(files, annotations, vizwiz.FOLDER, vizwiz.ANNOTATION_FILE.format(split=split))
        files.questions = files.images = len(items)
        files.details = {
            "splits": ["test", "val"],
            "unanswerable": sum(t == UNANSWERABLE for *_, t in items),
        }
        return files

    # ---------------------------------------------------------------- GQA
    def _gqa_question(self, scene: Scene, rng: np.random.Generator) -> tuple[str, str, dict[str, str]]:
        """(question, answer, types) in one of GQA's structural types."""
        cfg = self.cfg
        objs = scene.objects
        r = rng.random()
        if r < 0.45:
            kind = _pick(rng, ("colour", "shape", "position"))
            qa = ask(scene, kind, rng, cfg)
            return qa.question, qa.answer, _types("query", GQA_SEMANTIC[kind], f"query{kind.title()}")
        if r < 0.75:
            kind = _pick(rng, ("colour", "shape", "position", "exists"))
            qa = ask(scene, kind, rng, cfg, bool(rng.random() < 0.5))
            detailed = "exist" if kind == "exists" else f"verify{kind.title()}"
            return qa.question, qa.answer, _types("verify", GQA_SEMANTIC[kind], detailed)
        if r < 0.85:
            return self._gqa_choose(scene, rng)
        if r < 0.95 or len(objs) < 2:
            return self._gqa_logical(scene, rng)
        o1, o2 = (objs[i] for i in rng.choice(len(objs), size=2, replace=False))
        attr = _pick(rng, ("colour", "shape"))
        noun = "shape" if attr == "colour" else "object"
        same = getattr(o1, attr) == getattr(o2, attr)
        question = (
            f"Are the {noun} {POSITION_PHRASES[o1.position]} and the {noun} "
            f"{POSITION_PHRASES[o2.position]} the same {attr}?"
        )
        return question, _yes(same), _types("compare", "attr", f"same{attr.title()}")

    def _gqa_choose(self, scene: Scene, rng: np.random.Generator) -> tuple[str, str, dict[str, str]]:
        cfg = self.cfg
        obj: Obj = _pick(rng, scene.objects)
        attr = _pick(rng, ("colour", "shape", "position"))
        truth = getattr(obj, attr)
        other = _pick(rng, [v for v in getattr(cfg, attr + "s") if v != truth])
        a, b = (truth, other) if rng.random() < 0.5 else (other, truth)
        where = POSITION_PHRASES[obj.position]
        if attr == "colour":
            question = f"Is the shape {where} {a} or {b}?"
            semantic = "attr"
        elif attr == "shape":
            question = f"Is the object {where} {_a(a)} {a} or {_a(b)} {b}?"
            semantic = "cat"
        else:
            question = f"Is the {obj.colour} {obj.shape} {POSITION_PHRASES[a]} or {POSITION_PHRASES[b]}?"
            semantic = "rel"
        return question, truth, _types("choose", semantic, f"choose{attr.title()}")

    def _gqa_logical(self, scene: Scene, rng: np.random.Generator) -> tuple[str, str, dict[str, str]]:
        cfg = self.cfg
        present = [(o.colour, o.shape) for o in scene.objects]
        absent = [(c, s) for c in cfg.colours for s in cfg.shapes if (c, s) not in present]
        op = _pick(rng, ("or", "and"))
        want = bool(rng.random() < 0.5)
        if op == "or":
            p1 = _pick(rng, present) if want else _pick(rng, absent)
            p2 = _pick(
                rng, [p for p in present + absent if p != p1] if want else [p for p in absent if p != p1]
            )
        elif want and len(present) >= 2:
            p1, p2 = (present[i] for i in rng.choice(len(present), size=2, replace=False))
        else:
            p1, p2 = _pick(rng, present), _pick(rng, absent)
        if rng.random() < 0.5:
            p1, p2 = p2, p1
        in1, in2 = p1 in present, p2 in present
        one = f"{_a(p1[0])} {p1[0]} {p1[1]}"
        two = f"{_a(p2[0])} {p2[0]} {p2[1]}"
        if op == "or":
            return f"Is there {one} or {two}?", _yes(in1 or in2), _types("logical", "obj", "existOr")
        return f"Are there both {one} and {two}?", _yes(in1 and in2), _types("logical", "obj", "existAnd")

    def gqa(self, rng: np.random.Generator) -> BenchmarkFiles:
        files = BenchmarkFiles()
        questions: list[dict] = []
        annotations: dict[str, dict] = {}
        structural: Counter[str] = Counter()
        for i in range(self.n):
            scene = _object_scene(rng, self.cfg)
            image_id = f"n{i + 1:06d}"
            image = f"{image_id}.png"
            self._save(scene, gqa.FOLDER, gqa.IMAGE_DIR, image)
            made = _unique_questions(
                lambda scene=scene: self._gqa_question(scene, rng), 3, key=lambda x: x[0]
            )
            for question, answer, types in made:
                qid = str(201_000_000 + len(questions))
                questions.append(
                    {"question_id": qid, "image": image, "text": question + SHORT, "category": "default"}
                )
                structural[types["structural"]] += 1
                annotations[qid] = {
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
        self._jsonl(files, questions, gqa.FOLDER, gqa.QUESTION_FILE)
        self._json(files, annotations, gqa.FOLDER, gqa.ANNOTATION_FILE)
        files.questions, files.images = len(questions), self.n
        files.details = {"structural": dict(sorted(structural.items()))}
        return files

    # ---------------------------------------------------------------- TextVQA
    def textvqa(self, rng: np.random.Generator) -> BenchmarkFiles:
        files = BenchmarkFiles()
        questions, data = [], []
        used: set[str] = set()
        for _ in range(self.n):
            scene = _sign_scene(rng, self.cfg)
            image_id = f"{int(rng.integers(0, 2**63)):016x}"
            while image_id in used:  # pragma: no cover - 64-bit ids do not collide in practice
                image_id = f"{int(rng.integers(0, 2**63)):016x}"
            used.add(image_id)
            image = f"{image_id}.png"
            self._save(scene, textvqa.FOLDER, textvqa.IMAGE_DIR, image)
            tokens = [(scene.word or "").upper()]
            if rng.random() < 0.3:
                tokens.append(_misread(rng, tokens[0]))
            tokens = [tokens[i] for i in rng.permutation(len(tokens))]
            qas = [ask(scene, "ocr", rng, self.cfg)]
            if rng.random() < 0.5:
                qas.append(ask(scene, "colour", rng, self.cfg))
            for qa in qas:
                questions.append(
                    {
                        "question_id": image_id,
                        "image": image,
                        "text": f"{qa.question}\n{textvqa.OCR_PREFIX}{', '.join(tokens)}{SHORT}",
                        "category": "default",
                    }
                )
                data.append(
                    {
                        "question": qa.question,
                        "image_id": image_id,
                        "image_classes": ["Sign"],
                        "image_width": self.cfg.image_size,
                        "image_height": self.cfg.image_size,
                        "answers": _ten_answers(rng, qa, self.cfg, surface=True),
                        "question_tokens": qa.question.lower().rstrip("?").split(),
                        "question_id": 50_000 + len(data),
                        "set_name": "val",
                    }
                )
        annotations = {
            "dataset_type": "val",
            "dataset_name": "textvqa",
            "dataset_version": "0.5.1",
            "data": data,
        }
        self._jsonl(files, questions, textvqa.FOLDER, textvqa.QUESTION_FILE)
        self._json(files, annotations, textvqa.FOLDER, textvqa.ANNOTATION_FILE)
        files.questions, files.images = len(questions), self.n
        return files

    # ---------------------------------------------------------------- POPE
    def pope(self, rng: np.random.Generator) -> BenchmarkFiles:
        files = BenchmarkFiles()
        cfg = self.cfg
        n_objects = min(3, cfg.max_objects)
        scenes = [_object_scene(rng, cfg, n_objects) for _ in range(self.n)]
        every = [(c, s) for c in cfg.colours for s in cfg.shapes]
        frequency = Counter((o.colour, o.shape) for scene in scenes for o in scene.objects)
        records: dict[str, list[tuple[str, str, str]]] = {split: [] for split in pope.SPLITS}
        for i, scene in enumerate(scenes):
            image = f"COCO_val2014_{i + 1:012d}.png"
            self._save(scene, pope.FOLDER, pope.IMAGE_DIR, image)
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
            for split in pope.SPLITS:
                for yes, no in zip(positives, negatives[split]):
                    for (colour, shape), label in ((yes, "yes"), (no, "no")):
                        records[split].append(
                            (image, f"Is there {_a(colour)} {colour} {shape} in the image?", label)
                        )
        questions = []
        offsets = {"adversarial": 0, "random": 10_000_000, "popular": 20_000_000}
        for split in ("adversarial", "random", "popular"):
            labels = []
            for j, (image, text, label) in enumerate(records[split], 1):
                labels.append({"question_id": j, "image": image, "text": text, "label": label})
                questions.append(
                    {
                        "question_id": offsets[split] + j,
                        "image": image,
                        "text": text + SHORT,
                        "category": split,
                    }
                )
            self._jsonl(files, labels, pope.FOLDER, pope.LABEL_DIR, pope.LABEL_FILE.format(split=split))
        self._jsonl(files, questions, pope.FOLDER, pope.QUESTION_FILE)
        files.questions, files.images = len(questions), self.n
        files.details = {"per_split": {s: len(records[s]) for s in ("adversarial", "random", "popular")}}
        return files

    # ---------------------------------------------------------------- MME
    def mme(self, rng: np.random.Generator) -> BenchmarkFiles:
        files = BenchmarkFiles()
        base = (mme.FOLDER, mme.BENCHMARK_DIR)
        questions = []
        per_task: dict[str, int] = {}
        subtasks = list(MME_SUBTASKS.items())
        for t, (task, kind) in enumerate(subtasks):
            n_images = max(1, self.n // len(subtasks) + (t < self.n % len(subtasks)))
            per_task[task] = n_images
            for i in range(n_images):
                scene = _sign_scene(rng, self.cfg) if kind == "ocr" else _object_scene(rng, self.cfg)
                stem = f"{i + 1:04d}" if kind == "ocr" else f"{i + 1:012d}"
                image = f"{task}/{stem}.png"
                self._save(scene, *base, task, f"{stem}.png")
                lines = []
                for polarity in (True, False):  # MME: the "yes" question first, then the "no" one
                    qa = ask(scene, kind, rng, self.cfg, polarity)
                    lines.append(f"{qa.question} {mme.GT_SUFFIX}\t{qa.answer.capitalize()}\n")
                    questions.append(
                        {"question_id": image, "image": image, "text": qa.question + SHORT, "category": task}
                    )
                self._path(*base, task, f"{stem}.txt").write_text("".join(lines), encoding="utf-8")
            files.files.append("/".join([*base, task, "*.txt"]))
        self._jsonl(files, questions, mme.FOLDER, mme.QUESTION_FILE)
        files.questions, files.images = len(questions), sum(per_task.values())
        files.details = {"images_per_subtask": per_task, "perception_max": 200.0 * len(per_task)}
        return files

    # ---------------------------------------------------------------- ScienceQA
    def _sqa_text_problem(self, rng: np.random.Generator) -> tuple[str, list[str], str, str]:
        """(question, choices, answer, skill) of a text-only problem about the world's vocabulary."""
        cfg = self.cfg
        colour, shape = _pick(rng, cfg.colours), _pick(rng, cfg.shapes)
        makers: list[Callable[[], tuple[str, list[str], str, str]]] = [
            lambda: ("Which word is a colour?", [colour, *_sample(rng, cfg.shapes, 3)], colour, "vocabulary"),
            lambda: ("Which word is a shape?", [shape, *_sample(rng, cfg.colours, 3)], shape, "vocabulary"),
            lambda: (f"Is {colour} a colour?", ["no", "yes"], "yes", "vocabulary"),
            lambda: (f"Is {shape} a colour?", ["no", "yes"], "no", "vocabulary"),
        ]
        sides = {"triangle": "3", "square": "4"}
        geometric = [s for s in cfg.shapes if s in sides]
        if geometric:
            s = _pick(rng, geometric)
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
        question, choices, answer, skill = _pick(rng, makers)()
        choices = list(dict.fromkeys(choices))
        return question, [choices[i] for i in rng.permutation(len(choices))], answer, skill

    def scienceqa(self, rng: np.random.Generator) -> BenchmarkFiles:
        files = BenchmarkFiles()
        n_img = 0
        problems: dict[str, dict] = {}
        llava: list[dict] = []
        has_image = [True] * self.n + [False] * self.n
        has_image = [has_image[i] for i in rng.permutation(len(has_image))]
        for i, with_image in enumerate(has_image):
            pid = str(i + 1)
            if with_image:
                scene = sample_scene(rng, self.cfg)
                kind = _pick(rng, [k for k in applicable_kinds(scene) if k != "exists"])
                qa = ask(scene, kind, rng, self.cfg)
                question, answer, skill = qa.question, qa.answer, kind
                choices = _choices(rng, answer, _mc_domain(qa, self.cfg))
                self._save(scene, scienceqa.FOLDER, scienceqa.IMAGE_DIR, pid, "image.png")
                n_img += 1
            else:
                question, choices, answer, skill = self._sqa_text_problem(rng)
            hint = _pick(rng, SQA_HINTS if with_image else SQA_HINTS[:1]) if rng.random() < 0.3 else ""
            letters = scienceqa.OPTIONS
            prompt = (f"Context: {hint}\n" if hint else "") + question + "\n"
            prompt += "\n".join(f"{letters[j]}. {c}" for j, c in enumerate(choices))
            record: dict[str, Any] = {"id": pid}
            if with_image:
                record["image"] = f"{pid}/image.png"
                prompt = IMAGE_TOKEN + "\n" + prompt
            record["conversations"] = [
                {"from": "human", "value": prompt},
                {"from": "gpt", "value": letters[choices.index(answer)]},
            ]
            llava.append(record)
            problems[pid] = {
                "question": question,
                "choices": choices,
                "answer": choices.index(answer),
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
        pids = [r["id"] for r in llava]
        splits = {
            "train": [],
            "val": [],
            "test": pids,
            "trainval": [],
            "minitrain": [],
            "minival": [],
            "minitest": [],
        }
        self._json(files, llava, scienceqa.FOLDER, scienceqa.QUESTION_FILE, indent=2)
        self._json(files, problems, scienceqa.FOLDER, scienceqa.PROBLEMS_FILE)
        self._json(files, splits, scienceqa.FOLDER, scienceqa.SPLITS_FILE, indent=2)
        files.questions, files.images = len(llava), n_img
        files.details = {
            "img_problems": n_img,
            "text_only_problems": len(llava) - n_img,
        }
        return files

    # ---------------------------------------------------------------- MMBench
    def mmbench(self, rng: np.random.Generator) -> BenchmarkFiles:
        files = BenchmarkFiles()
        originals = []
        for i in range(self.n):
            scene = sample_scene(rng, self.cfg)
            kind = _pick(rng, [k for k in applicable_kinds(scene) if k != "exists"])
            qa = ask(scene, kind, rng, self.cfg)
            options = _choices(rng, qa.answer, _mc_domain(qa, self.cfg), most=len(mmbench.OPTION_LETTERS))
            hint = _pick(rng, MMBENCH_HINTS) if rng.random() < 0.25 else ""
            image = base64.b64encode(_png(self.render(scene))).decode("ascii")
            originals.append((i, qa, options, hint, image))
        rows = []
        for k in range(len(mmbench.OPTION_LETTERS)):  # originals first, then each rotation
            for i, qa, options, hint, image in originals:
                if k >= len(options):
                    continue
                rotated = options[k:] + options[:k]
                letters = mmbench.OPTION_LETTERS
                category, l2 = MMBENCH_CATEGORIES[qa.kind]
                row = {
                    "index": str(i + k * mmbench.ROTATION),
                    "question": qa.question,
                    "hint": hint,
                    **{letters[j]: (rotated[j] if j < len(rotated) else "") for j in range(len(letters))},
                    "answer": letters[rotated.index(qa.answer)],
                    "category": category,
                    "image": image,
                    "source": "synthetic-shapes",
                    "l2-category": l2,
                    "comment": "",
                    "split": "dev",
                }
                rows.append([row[c] for c in MMBENCH_COLUMNS])
        path = self._path(mmbench.FOLDER, mmbench.QUESTION_FILE)
        with open(path, "w", encoding="utf-8", newline="") as f:
            writer = csv.writer(f, delimiter="\t", lineterminator="\n")
            writer.writerow(MMBENCH_COLUMNS)
            writer.writerows(rows)
        files.files.append(f"{mmbench.FOLDER}/{mmbench.QUESTION_FILE}")
        files.questions, files.images = len(rows), len(originals)  # questions asked: every rotation
        files.details = {"circular_questions": len(originals)}
        return files

    # ---------------------------------------------------------------- MM-Vet
    def mmvet(self, rng: np.random.Generator) -> BenchmarkFiles:
        files = BenchmarkFiles()
        questions, truth = [], {}
        capabilities: Counter[str] = Counter()
        for _ in range(self.n):
            scene = sample_scene(rng, self.cfg)
            image = f"v1_{len(questions)}.png"
            self._save(scene, mmvet.FOLDER, mmvet.IMAGE_DIR, image)
            for qa in self._open_or_verify(scene, rng, 2, verify=0.0):
                qid = len(questions)
                questions.append(
                    {"image": image, "text": qa.question, "category": "conv", "question_id": qid}
                )
                caps = _mmvet_capabilities(qa, scene)
                capabilities.update(caps)
                truth[f"v1_{qid}"] = {
                    "imagename": image,
                    "capability": caps,
                    "question": qa.question,
                    "answer": _mmvet_answer(qa),
                }
        self._jsonl(files, questions, mmvet.FOLDER, mmvet.QUESTION_FILE)
        self._json(files, truth, mmvet.FOLDER, mmvet.GROUND_TRUTH_FILE, indent=2)
        files.questions, files.images = len(questions), self.n
        files.details = {"capabilities": dict(sorted(capabilities.items())), "judge": "IMP_JUDGE=exact"}
        return files


def _types(structural: str, semantic: str, detailed: str) -> dict[str, str]:
    return {"structural": structural, "semantic": semantic, "detailed": detailed}


def _sample(rng: np.random.Generator, seq: Sequence[str], k: int, exclude: str | None = None) -> list[str]:
    """Up to ``k`` distinct items of ``seq`` (without ``exclude``), at random (1 at least)."""
    pool = [s for s in seq if s != exclude]
    k = int(rng.integers(1, min(k, len(pool)) + 1))
    return [pool[i] for i in rng.choice(len(pool), size=k, replace=False)]


def _misread(rng: np.random.Generator, token: str) -> str:
    """An OCR misreading: one letter swapped for a look-alike or a random capital."""
    lookalike = {"O": "0", "I": "1", "S": "5", "B": "8", "A": "4", "E": "F", "C": "G", "U": "V", "M": "N"}
    j = int(rng.integers(len(token)))
    letter = lookalike.get(token[j]) or chr(ord("A") + int(rng.integers(26)))
    return token[:j] + letter + token[j + 1 :]


def _mmvet_answer(qa: QA) -> str:
    if qa.kind == "position" and qa.answer in POSITION_PHRASES:
        return f"{qa.answer}<OR>{POSITION_PHRASES[qa.answer]}"
    if qa.kind == "count" and qa.answer.isdigit() and int(qa.answer) < len(NUMBER_WORDS):
        return f"{qa.answer}<OR>{NUMBER_WORDS[int(qa.answer)]}"
    return qa.answer


def _mmvet_capabilities(qa: QA, scene: Scene) -> list[str]:
    if qa.kind == "ocr":
        return ["ocr"]
    if scene.is_sign:  # the colour / count of a word
        return ["ocr", "rec"]
    if qa.kind == "position":
        return ["rec", "spat"]
    return ["rec"]
