"""The real LLaVA-1.5 question files (shared/data/llava-eval) load at full size and score end to end.

The folder holds question files and POPE labels but no images and no other ground truth; it is
resolved as ``<project>/../shared/data/llava-eval`` and the tests skip when it is absent.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from benchmarks import BenchmarkDataError, get_benchmark
from benchmarks.base import (
    MULTIPLE_CHOICE_SUFFIX,
    SHORT_ANSWER_SUFFIX,
    STATUS_SUBMISSION,
    STATUS_UNGRADED,
    UNANSWERABLE_SUFFIX,
)
from benchmarks.mmvet_judge import ENV_API_KEY, ENV_BASE_URL, ENV_MODEL
from benchmarks.tasks.mme import PERCEPTION

ROOT = (Path(__file__).parents[1] / "../shared/data/llava-eval").resolve()

pytestmark = pytest.mark.skipif(
    not ROOT.is_dir(), reason=f"real LLaVA question files not found at {ROOT} (shared/data/llava-eval)"
)

_CACHE: dict[str, list] = {}


def load(name: str) -> list:
    if name not in _CACHE:
        _CACHE[name] = get_benchmark(name).load(ROOT)
    return _CACHE[name]


@pytest.mark.parametrize(
    ("name", "count"),
    [
        ("gqa", 12578),
        ("pope", 8910),
        ("mme", 2374),
        ("textvqa", 5000),
        ("vizwiz", 8000),
        ("mmvet", 218),
        ("sqa", 4241),
    ],
)
def test_question_counts(name, count):
    questions = load(name)
    assert len(questions) == count
    assert len({q.qid for q in questions}) == count
    json.dumps([q.meta for q in questions])  # meta is json-serialisable
    expected_tokens = 1024 if name in ("mmvet", "sqa") else 128
    assert {q.max_new_tokens for q in questions} == {expected_tokens}
    assert not any(q.text.startswith("<image>") for q in questions)


def test_short_answer_suffixes():
    for name in ("gqa", "pope", "mme", "textvqa", "vizwiz"):
        assert all(q.text.endswith("\n" + SHORT_ANSWER_SUFFIX) for q in load(name)), name
    assert all(UNANSWERABLE_SUFFIX in q.text for q in load("vizwiz"))
    assert all("\nReference OCR token: " in q.text for q in load("textvqa"))
    assert all(q.text.endswith("\n" + MULTIPLE_CHOICE_SUFFIX) for q in load("sqa"))


def test_sqa_img_subset():
    questions = load("sqa")
    with_image = [q for q in questions if q.image is not None]
    assert len(with_image) == 2017
    assert all(q.meta["has_image"] == (q.image is not None) for q in questions)
    assert all(q.meta["n_choices"] >= 2 for q in questions)
    assert questions[1].image == "5/image.png"


def test_sqa_scores_with_the_question_file_as_ground_truth():
    questions = load("sqa")
    bench = get_benchmark("sqa")
    right = bench.score(ROOT, {q.qid: q.meta["answer"] for q in questions}, questions)
    assert right.headline == 100.0 and right.metrics["n_img"] == 2017
    wrong = bench.score(ROOT, {q.qid: "The answer is Z." for q in questions}, questions)
    assert wrong.headline == 0.0


def test_pope_splits_and_label_alignment():
    questions = load("pope")
    assert Counter(q.category for q in questions) == {"adversarial": 3000, "popular": 3000, "random": 2910}
    bench = get_benchmark("pope")
    for split in ("adversarial", "popular", "random"):
        labels_file = ROOT / "pope" / "coco" / f"coco_pope_{split}.json"
        records = [json.loads(line) for line in labels_file.read_text().splitlines() if line.strip()]
        for q in (q for q in questions if q.category == split):
            label = records[q.meta["label_index"]]
            assert label["text"] == q.text.split("\n")[0] and label["image"] == q.image
        assert len(bench.labels(ROOT, split)) == len(records)


def test_pope_scores_at_full_size():
    questions = load("pope")
    bench = get_benchmark("pope")
    all_yes = bench.score(ROOT, {q.qid: "Yes" for q in questions}, questions)
    assert all_yes.metrics["adversarial/recall"] == 100.0
    assert all_yes.metrics["random/precision"] == pytest.approx(100 * 1500 / 2910)
    assert all_yes.metrics["popular/yes_ratio"] == 100.0
    all_no = bench.score(ROOT, {q.qid: "No." for q in questions}, questions)
    assert all_no.headline == 0.0
    assert all_no.metrics["random/accuracy"] == pytest.approx(100 * 1410 / 2910)


def test_mme_structure():
    questions = load("mme")
    per_image = Counter(q.meta["question_id"] for q in questions)
    assert len(per_image) == 1187 and set(per_image.values()) == {2}
    counts = Counter(q.category for q in questions)
    assert len(counts) == 14
    assert sum(counts[t] for t in PERCEPTION) == 2114
    assert all(q.qid == f"{q.meta['question_id']}#{q.qid[-1]}" for q in questions)
    with pytest.raises(BenchmarkDataError, match="MME_Benchmark_release_version"):
        get_benchmark("mme").score(ROOT, {}, questions[:1])


def test_textvqa_questions_and_missing_annotations():
    questions = load("textvqa")
    assert len({q.meta["question_id"] for q in questions}) == 3166
    assert len({(q.meta["question_id"], q.meta["question"]) for q in questions}) == 5000
    with pytest.raises(BenchmarkDataError, match="TextVQA_0.5.1_val.json"):
        get_benchmark("textvqa").score(ROOT, {}, questions)


def test_gqa_submission_and_missing_annotations(tmp_path):
    questions = load("gqa")
    bench = get_benchmark("gqa")
    answers = {q.qid: "Yes." for q in questions}
    (path,) = bench.write_submission(ROOT, answers, questions, tmp_path)
    rows = json.loads(path.read_text())
    assert len(rows) == 12578 and rows[0] == {"questionId": "201307251", "prediction": "yes"}
    with pytest.raises(BenchmarkDataError, match="testdev_balanced_questions.json"):
        bench.score(ROOT, answers, questions)


def test_vizwiz_submission_at_full_size(tmp_path):
    questions = load("vizwiz")
    bench = get_benchmark("vizwiz")
    answers = {q.qid: "Unanswerable" for q in questions}
    result = bench.score(ROOT, answers, questions)
    assert result.headline is None and result.status == STATUS_SUBMISSION
    (path,) = bench.write_submission(ROOT, answers, questions, tmp_path)
    rows = json.loads(path.read_text())
    assert len(rows) == 8000
    assert rows[0] == {"image": "VizWiz_test_00000000.jpg", "answer": "unanswerable"}


def test_mmvet_ungraded_keeps_answers(monkeypatch):
    for var in (ENV_BASE_URL, ENV_MODEL, ENV_API_KEY):
        monkeypatch.delenv(var, raising=False)
    questions = load("mmvet")
    answers = {q.qid: f"answer {q.qid}" for q in questions}
    result = get_benchmark("mmvet").score(ROOT, answers, questions)
    assert result.status == STATUS_UNGRADED and result.headline is None
    assert len(result.samples) == 218 and result.samples[5].parsed == "answer 5"
