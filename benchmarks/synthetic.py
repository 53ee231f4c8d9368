"""The nine-benchmark suite written from the synthetic shapes world, in the benchmarks' real file formats.

:func:`write_synthetic_suite` fills a folder with LLaVA's ``playground/data/eval`` layout — question
files, images and ground truth exactly where and how the loaders in :mod:`benchmarks.tasks` read them
— so ``imp bench RUNTIME --data DIR`` runs all nine benchmarks offline and scores every one locally.
Scenes, renderer and question wordings come from :mod:`impvlm.data.synthetic` (the world the tiny model
is trained on; by default the same :class:`WorldConfig`), drawn with a seed of their own so images are
held out from training. Prompts carry each benchmark's official instruction suffix.

Each benchmark's writer sits beside its loader and scorer, ``benchmarks/tasks/<task>_synthetic.py``,
whose docstring says what it writes; what they share is :mod:`benchmarks.tasks.synthetic_common`.
This module loops over the nine, each drawing from a random stream of its own.

``synthetic_suite.json`` at the top records the world, the seed and the counts. The same arguments give
byte-identical files. The folder must be empty or a previous synthetic suite (whose benchmark folders are
then replaced).
"""

from __future__ import annotations

import json
import logging
import shutil
import time
import zlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.tasks import (
    gqa,
    gqa_synthetic,
    mmbench,
    mmbench_synthetic,
    mme,
    mme_synthetic,
    mmvet,
    mmvet_synthetic,
    pope,
    pope_synthetic,
    scienceqa,
    scienceqa_synthetic,
    textvqa,
    textvqa_synthetic,
    vizwiz,
    vizwiz_synthetic,
    vqav2,
    vqav2_synthetic,
)
from benchmarks.tasks.synthetic_common import BenchmarkFiles, SuiteWriter
from impvlm.data.synthetic import WorldConfig
from impvlm.errors import ConfigError

log = logging.getLogger(__name__)

MANIFEST = "synthetic_suite.json"
DEFAULT_SEED = 1234
SEED_SALT = 0x5B3C_2024  # mixed into every stream, so no benchmark image repeats a training draw

Writer = Callable[[SuiteWriter, np.random.Generator], BenchmarkFiles]

#: benchmark -> (the folder it owns, replaced when a suite is written again there; its writer), in order.
BENCHMARKS: dict[str, tuple[str, Writer]] = {
    "vqav2": (vqav2.FOLDER, vqav2_synthetic.write),
    "gqa": (gqa.FOLDER, gqa_synthetic.write),
    "vizwiz": (vizwiz.FOLDER, vizwiz_synthetic.write),
    "sqa": (scienceqa.FOLDER, scienceqa_synthetic.write),
    "textvqa": (textvqa.FOLDER, textvqa_synthetic.write),
    "pope": (pope.FOLDER, pope_synthetic.write),
    "mme": (mme.FOLDER, mme_synthetic.write),
    "mmbench": (mmbench.FOLDER, mmbench_synthetic.write),
    "mmvet": (mmvet.FOLDER, mmvet_synthetic.write),
}
NOTES = [
    "synthetic shapes-world replica of the nine benchmarks in their real file formats; scores are "
    "for comparing runtimes of one model, not comparable with published numbers",
    "vqav2 and vizwiz hold the same questions under their default test split (with local "
    "annotations) and under the val replica",
    "mmvet is graded offline with IMP_JUDGE=exact (exact match, not the official GPT-4 judge)",
]


def write_synthetic_suite(
    out_dir: Path,
    n_images_per_benchmark: int | Mapping[str, int] = 20,
    seed: int = DEFAULT_SEED,
    world: WorldConfig | None = None,
    progress: bool = True,
) -> Path:
    """Write all nine benchmarks of the shapes world under ``out_dir``; returns ``out_dir``.

    ``out_dir`` is then the ``--data`` folder of ``imp bench`` (LLaVA's ``playground/data/eval``
    layout). ``n_images_per_benchmark`` is one count for all nine or a count per benchmark name (all
    nine named). ``world`` defaults to ``WorldConfig()``, the training world's vocabulary; ``seed`` draws
    the scenes and questions (each benchmark from its own stream). Same arguments -> identical files.
    """
    from tqdm import tqdm

    cfg = world or WorldConfig()
    counts = _counts(n_images_per_benchmark)
    _check(cfg, counts, seed)
    root = Path(out_dir)
    _prepare(root)
    started = time.perf_counter()
    written: dict[str, BenchmarkFiles] = {}
    bar = tqdm(BENCHMARKS.items(), desc="synthetic benchmarks", unit="bench", disable=not progress or None)
    for name, (_, writer) in bar:
        bar.set_postfix_str(name)
        written[name] = writer(SuiteWriter(root, cfg, counts[name]), _stream(seed, name))
    _write_manifest(root, cfg, seed, n_images_per_benchmark, written)
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


def _counts(n: int | Mapping[str, int]) -> dict[str, int]:
    """Images per benchmark, from one count for all or a count per benchmark name."""
    if not isinstance(n, Mapping):
        return dict.fromkeys(BENCHMARKS, n)
    unknown = sorted(set(n) - set(BENCHMARKS))
    missing = [name for name in BENCHMARKS if name not in n]
    if unknown or missing:
        problem = f"unknown {unknown}" if unknown else f"missing {missing}"
        raise ConfigError(f"images per benchmark must name the nine benchmarks: {problem}")
    return {name: n[name] for name in BENCHMARKS}


def _check(cfg: WorldConfig, counts: dict[str, int], seed: int) -> None:
    for name, n in counts.items():
        if n < 1:
            raise ConfigError(f"n_images_per_benchmark must be >= 1, got {n} for {name}")
    if seed < 0:
        raise ConfigError(f"seed must be >= 0, got {seed}")
    if not cfg.words:
        raise ConfigError("the synthetic suite needs a world with words (TextVQA, MME OCR, signs)")
    if len(cfg.colours) < 2 or len(cfg.shapes) < 2 or len(cfg.positions) < 2:
        raise ConfigError("the synthetic suite needs at least 2 colours, 2 shapes and 2 positions")


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
        for folder, _ in BENCHMARKS.values():
            if (root / folder).is_dir():
                shutil.rmtree(root / folder)
    root.mkdir(parents=True, exist_ok=True)
    (root / MANIFEST).write_text(json.dumps({"generator": __name__, "complete": False}) + "\n")


def _write_manifest(
    root: Path,
    cfg: WorldConfig,
    seed: int,
    n: int | Mapping[str, int],
    written: dict[str, BenchmarkFiles],
) -> None:
    manifest = {
        "generator": __name__,
        "complete": True,
        "seed": seed,
        "n_images_per_benchmark": n if isinstance(n, int) else dict(n),
        "world": cfg.to_dict(),
        "benchmarks": {
            name: {"questions": w.questions, "images": w.images, "files": w.files, **w.details}
            for name, w in written.items()
        },
        "notes": NOTES,
    }
    (root / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
