"""POPE: object-hallucination yes/no questions on COCO val2014 (8,910 = 3000 + 3000 + 2910).

Layout under ``root`` (LLaVA's ``playground/data/eval``)::

    pope/llava_pope_test.jsonl                questions; category = adversarial / popular / random
    pope/val2014/                             COCO val2014 images (Question.image is relative to it)
    pope/coco/coco_pope_adversarial.json      labels, JSONL: {"question_id", "image", "text", "label"}
    pope/coco/coco_pope_popular.json
    pope/coco/coco_pope_random.json

Scoring (LLaVA ``eval_pope.py``): an answer is matched to the label at the same position among the
questions of its split (file order). Parsing keeps the text before the first ``.``, drops commas and
splits on spaces; the answer is "no" iff ``No``, ``not`` or ``no`` is one of the words, otherwise
"yes" (empty text too). Positive = "yes". Per split: accuracy, precision, recall, F1, yes-ratio (in
percent) and the confusion counts; the headline is the mean F1 of the splits present. Where nothing is
predicted "yes" the precision is 0 (the official script divides by zero there).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.base import (
    SHORT_MAX_NEW_TOKENS,
    Benchmark,
    BenchmarkDataError,
    BenchmarkResult,
    Question,
    SampleScore,
    llava_jsonl_questions,
    read_jsonl,
)

FOLDER = "pope"
QUESTION_FILE = "llava_pope_test.jsonl"
IMAGE_DIR = "val2014"
LABEL_DIR = "coco"
LABEL_FILE = "coco_pope_{split}.json"
SPLITS = ("adversarial", "popular", "random")


def parse_pope(text: str) -> str:
    """``"yes"`` or ``"no"``, exactly as LLaVA's POPE evaluation reads an answer."""
    if "." in text:
        text = text.split(".")[0]
    words = text.replace(",", "").split(" ")
    return "no" if ("No" in words or "not" in words or "no" in words) else "yes"


def binary_metrics(predictions: list[str], labels: list[str]) -> dict[str, float]:
    """Confusion counts and percentages of yes/no predictions against labels (positive = yes)."""
    tp = sum(p == "yes" and g == "yes" for p, g in zip(predictions, labels))
    fp = sum(p == "yes" and g != "yes" for p, g in zip(predictions, labels))
    tn = sum(p != "yes" and g != "yes" for p, g in zip(predictions, labels))
    fn = sum(p != "yes" and g == "yes" for p, g in zip(predictions, labels))
    n = len(predictions)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "accuracy": 100 * (tp + tn) / n if n else 0.0,
        "precision": 100 * precision,
        "recall": 100 * recall,
        "f1": 100 * f1,
        "yes_ratio": 100 * (tp + fp) / n if n else 0.0,
        "tp": float(tp),
        "fp": float(fp),
        "tn": float(tn),
        "fn": float(fn),
    }


def mean_f1(predicted_yes: np.ndarray, gold_yes: np.ndarray, split: np.ndarray) -> np.ndarray:
    """The headline from 0/1 arrays over questions (last axis; leading axes are resamples): the
    mean F1 (percent) of the splits present, ``split`` holding each question's split number."""
    f1s, present = [], []
    for s in np.unique(split):
        mask = split == s
        tp = np.sum(predicted_yes * gold_yes * mask, axis=-1)
        wrong = np.sum((predicted_yes != gold_yes) * mask, axis=-1)
        f1s.append(np.where(2 * tp + wrong > 0, 200 * tp / np.maximum(2 * tp + wrong, 1), 0.0))
        present.append(np.any(mask, axis=-1))
    return np.sum(np.stack(f1s) * np.stack(present), axis=0) / np.maximum(np.sum(present, axis=0), 1)


class POPE(Benchmark):
    name = "pope"
    headline_name = "f1"

    def load(self, root: Path) -> list[Question]:
        path = Path(root) / FOLDER / QUESTION_FILE
        questions = llava_jsonl_questions(path, max_new_tokens=SHORT_MAX_NEW_TOKENS)
        position: dict[str, int] = {}
        out = []
        for q in questions:
            if q.category not in SPLITS:
                raise BenchmarkDataError(f"question {q.qid} in {path} has unknown category {q.category!r}")
            index = position.get(q.category, 0)
            position[q.category] = index + 1
            out.append(replace(q, meta={**q.meta, "label_index": index}))
        return out

    def image_dir(self, root: Path) -> Path:
        return Path(root) / FOLDER / IMAGE_DIR

    def labels(self, root: Path, split: str) -> list[str]:
        path = Path(root) / FOLDER / LABEL_DIR / LABEL_FILE.format(split=split)
        records = read_jsonl(path, "POPE label file")
        labels = []
        for i, record in enumerate(records):
            label = record.get("label")
            if label not in ("yes", "no"):
                raise BenchmarkDataError(f"record {i} of {path} has label {label!r}, expected yes/no")
            labels.append(label)
        return labels

    def headline_shares(self, samples: list[dict[str, Any]]) -> dict[str, tuple[float, float]] | None:
        """None: F1 is no sum of per-question shares (see :func:`mean_f1`)."""
        return None

    def score(self, root: Path, answers: dict[str, str], questions: list[Question]) -> BenchmarkResult:
        by_split: dict[str, list[Question]] = {}
        for q in questions:
            by_split.setdefault(q.category or "", []).append(q)
        metrics: dict[str, float] = {}
        samples: list[SampleScore] = []
        f1s = []
        for split in SPLITS:
            if split not in by_split:
                continue
            labels = self.labels(root, split)
            preds, golds = [], []
            for position, q in enumerate(by_split[split]):
                index = q.meta.get("label_index", position)
                if index >= len(labels):
                    raise BenchmarkDataError(
                        f"POPE {split} has {len(labels)} labels, question {q.qid} needs #{index}"
                    )
                pred = parse_pope(answers.get(q.qid) or "")
                preds.append(pred)
                golds.append(labels[index])
                samples.append(SampleScore(q.qid, pred, float(pred == labels[index])))
            split_metrics = binary_metrics(preds, golds)
            metrics.update({f"{split}/{k}": v for k, v in split_metrics.items()})
            f1s.append(split_metrics["f1"])
        unknown = sorted(set(by_split) - set(SPLITS))
        if unknown:
            raise BenchmarkDataError(f"POPE questions with unknown categories: {', '.join(unknown)}")
        if not f1s:
            return BenchmarkResult(self.name, self.headline_name, None, {}, [], note="no questions")
        for key in ("accuracy", "precision", "recall", "yes_ratio"):
            metrics[f"mean/{key}"] = sum(metrics[f"{s}/{key}"] for s in SPLITS if s in by_split) / len(f1s)
        headline = sum(f1s) / len(f1s)
        metrics["mean/f1"] = headline
        missing = [s for s in SPLITS if s not in by_split]
        note = f"mean F1 over {len(f1s)} of 3 splits (missing: {', '.join(missing)})" if missing else ""
        return BenchmarkResult(self.name, self.headline_name, headline, metrics, samples, note=note)
