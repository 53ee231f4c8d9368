"""How another tool's record of a question is matched to a question of LLaVA's question files.

lmms-eval's sample logs carry each question's dataset record (``doc``) and VLMEvalKit's prediction
files its TSV row; both name a question by the fields of the benchmark's own release, not by LLaVA's
``question_id``. :func:`question_key` and :func:`record_key` give the same key for the same question:

- MME: (subtask, image file stem, question without instruction suffixes): the two questions of an
  image share their id;
- TextVQA: (image id, lower-cased question): LLaVA's ``question_id`` is the image id;
- POPE: (split, image file stem, lower-cased question);
- MMBench: the row ``index`` (rotated copies have ``index + k * 1e6``);
- MM-Vet: the id without MM-Vet's ``v1_`` prefix;
- VizWiz: the image file stem;
- the others: the question id (``question_id``, ``id`` or ``index``).

The tables below also tell a file's benchmark from its folders (LLaVA), task (lmms-eval) or dataset
(VLMEvalKit) name.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import PurePath
from typing import Any

from benchmarks.base import Question
from benchmarks.tasks.mme import question_key as mme_question

# LLaVA's playground/data/eval/<folder>/answers/<model>.jsonl
LLAVA_FOLDERS = {
    "vqav2": "vqav2",
    "gqa": "gqa",
    "vizwiz": "vizwiz",
    "scienceqa": "sqa",
    "textvqa": "textvqa",
    "pope": "pope",
    "mme": "mme",
    "mmbench": "mmbench",
    "mm-vet": "mmvet",
}
# lmms-eval task names
LMMS_TASKS = {
    "vqav2_val": "vqav2",
    "vqav2_test": "vqav2",
    "gqa": "gqa",
    "vizwiz_vqa_val": "vizwiz",
    "vizwiz_vqa_test": "vizwiz",
    "scienceqa_img": "sqa",
    "textvqa_val": "textvqa",
    "pope": "pope",
    "mme": "mme",
    "mmbench_en_dev": "mmbench",
    "mmvet": "mmvet",
}
# VLMEvalKit dataset names
VLMEVAL_DATASETS = {
    "MME": "mme",
    "MMBench_DEV_EN": "mmbench",
    "MMBench": "mmbench",
    "MMVet": "mmvet",
    "POPE": "pope",
    "TextVQA_VAL": "textvqa",
    "GQA_TestDev_Balanced": "gqa",
    "ScienceQA_TEST": "sqa",
}


def _stem(value: Any) -> str:
    return PurePath(str(value)).stem


def _first_line(text: Any) -> str:
    return str(text).split("\n")[0].strip().lower()


def _index(value: Any) -> str:
    return str(int(float(value)))


def _first(record: Mapping[str, Any], *fields: str) -> Any:
    for field in fields:
        if record.get(field) not in (None, ""):
            return record[field]
    raise KeyError(" or ".join(fields))


QUESTION_KEYS: dict[str, Callable[[Question], Any]] = {
    "mme": lambda q: (str(q.category), _stem(q.meta["question_id"]), mme_question(q.text)),
    "textvqa": lambda q: (str(q.meta["question_id"]), q.meta["question"]),
    "pope": lambda q: (str(q.category), _stem(q.image), _first_line(q.text)),
    "vizwiz": lambda q: _stem(q.image),
}
RECORD_KEYS: dict[str, Callable[[Mapping[str, Any]], Any]] = {
    "mme": lambda r: (
        str(r["category"]),
        _stem(_first(r, "image_path", "question_id")),
        mme_question(str(r["question"])),
    ),
    "textvqa": lambda r: (str(r["image_id"]), str(r["question"]).lower()),
    "pope": lambda r: (
        str(r["category"]),
        _stem(_first(r, "image_source", "image_path")),
        _first_line(r["question"]),
    ),
    "mmbench": lambda r: _index(r["index"]),
    "mmvet": lambda r: str(_first(r, "question_id", "index")).removeprefix("v1_"),
    "vizwiz": lambda r: _stem(_first(r, "image", "image_path", "question_id")),
}


def question_key(name: str, question: Question) -> Any:
    """The key of one of our questions."""
    return QUESTION_KEYS.get(name, lambda q: q.qid)(question)


def record_key(name: str, record: Mapping[str, Any]) -> Any:
    """The key of another tool's record of a question; ``KeyError`` names a missing field."""
    default = lambda r: str(_first(r, "question_id", "id", "index"))  # noqa: E731
    return RECORD_KEYS.get(name, default)(record)


def benchmark_from_path(path: PurePath) -> str | None:
    """The benchmark a file belongs to, told by its name or folders; ``None`` when they do not say."""
    stem = path.stem
    for task, name in LMMS_TASKS.items():
        if stem == f"samples_{task}" or stem.endswith(f"_samples_{task}"):
            return name
    for dataset, name in sorted(VLMEVAL_DATASETS.items(), key=lambda item: -len(item[0])):
        if stem.endswith(f"_{dataset}"):
            return name
    for folder in reversed(path.parent.parts):
        if folder.lower() in LLAVA_FOLDERS:
            return LLAVA_FOLDERS[folder.lower()]
    return None
