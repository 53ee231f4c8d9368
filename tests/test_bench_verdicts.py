"""`imp compare` verdicts with stated confidence: HOLDS, DROPS, NOT DECIDED, over real answer files.

Answer files are written for the questions of a synthetic suite (GQA answered from its ground truth
where a test wants right answers, POPE and MME with seeded yes / no), scored by the real scorers,
then compared; a damaged candidate has many answers changed.
"""

import json

import numpy as np
import pytest

from benchmarks.base import get_benchmark
from benchmarks.compare import compare_runs
from benchmarks.run_inputs import write_run_info
from benchmarks.runner import ANSWERS, score_run
from benchmarks.synthetic import write_synthetic_suite
from benchmarks.tasks.pope import mean_f1
from benchmarks.verdict import DROPS, HOLDS, NOT_DECIDED, Evidence, decide
from export.quant_types import QUANTIZED_MARGIN
from impvlm.cli import main

Q4 = {"runtime": "exported", "lm": "q4_k_m", "vision": "fp32"}
Q8 = {"runtime": "exported", "lm": "q8_0", "vision": "fp32"}
TORCH = {"runtime": "torch", "dtype": "fp32"}


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    return write_synthetic_suite(tmp_path_factory.mktemp("suite") / "eval", 200, seed=7, progress=False)


def reference_answers(suite, names, limit=None):
    """GQA right (its ground truth), POPE and MME seeded yes / no: qid -> text per benchmark."""
    rng = np.random.default_rng(0)
    truth = json.loads((suite / "gqa" / "testdev_balanced_questions.json").read_text())
    out = {}
    for name in names:
        questions = get_benchmark(name).load(suite)[:limit]
        if name == "gqa":
            out[name] = {q.qid: truth[q.qid]["answer"] for q in questions}
        else:
            out[name] = {q.qid: str(rng.choice(["Yes", "No"])) for q in questions}
    return out


def damaged(answers, share, seed=1):
    """``share`` of the answers replaced: GQA by a wrong word, yes / no flipped."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, by_qid in answers.items():
        out[name] = dict(by_qid)
        for qid in by_qid:
            if rng.random() < share:
                flip = {"Yes": "No", "No": "Yes"}
                out[name][qid] = flip.get(by_qid[qid], "zebra")
    return out


def write_run(folder, suite, identity, answers):
    folder.mkdir(parents=True)
    write_run_info(folder, {"runtime": identity, "data": str(suite)})
    for name, by_qid in answers.items():
        (folder / name).mkdir()
        with open(folder / name / ANSWERS, "w", encoding="utf-8") as handle:
            for qid, text in by_qid.items():
                handle.write(json.dumps({"qid": qid, "text": text}) + "\n")
    score_run(folder, suite, list(answers))
    return folder


def rows(report, index=0):
    return {r["benchmark"]: r for r in report["candidates"][index]["rows"]}


def test_identical_answers_on_enough_questions_hold(suite, tmp_path, capsys):
    answers = reference_answers(suite, ["gqa", "pope"])
    ref = write_run(tmp_path / "ref", suite, TORCH, answers)
    cand = write_run(tmp_path / "cand", suite, Q4, answers)
    report = compare_runs(ref, [cand])
    assert {r["decision"] for r in rows(report).values()} == {HOLDS}
    assert report["decision"] == HOLDS and report["candidates"][0]["decision"] == HOLDS
    assert rows(report)["gqa"]["confidence"]["bounds"]["drop_high"] <= QUANTIZED_MARGIN.max_drop
    assert main(["compare", str(ref), str(cand), "--out", str(tmp_path / "report")]) == 0
    out = capsys.readouterr().out
    assert "accuracy holds: **yes**" in out and "gqa HOLDS: 0 of 600 questions changed" in out


def test_a_damaged_candidate_drops(suite, tmp_path, capsys):
    answers = reference_answers(suite, ["gqa", "pope", "mme"])
    ref = write_run(tmp_path / "ref", suite, TORCH, answers)
    cand = write_run(tmp_path / "cand", suite, Q4, damaged(answers, 0.3))
    report = compare_runs(ref, [cand])
    assert rows(report)["gqa"]["decision"] == DROPS and rows(report)["gqa"]["delta"] < -20
    # yes / no flipped at random on random answers: POPE's F1 and MME move little either way
    assert report["decision"] == DROPS
    mme = rows(report)["mme"]["confidence"]["evidence"]
    assert mme["unit"] == "image" and mme["n"] == 200 and mme["questions"] == 400
    assert main(["compare", str(ref), str(cand), "--out", str(tmp_path / "report")]) == 1
    assert "accuracy holds: **NO**" in capsys.readouterr().out
    md = (tmp_path / "report" / "report.md").read_text()
    assert "| q4_k_m+fp32 | gqa |" in md and "gqa DROPS: " in md and "Holm" in md


def test_few_questions_are_not_decided_and_say_how_many_would_decide(suite, tmp_path, capsys):
    answers = reference_answers(suite, ["gqa"], limit=20)
    ref = write_run(tmp_path / "ref", suite, TORCH, answers)
    cand = write_run(tmp_path / "cand", suite, Q4, damaged(answers, 0.1))
    report = compare_runs(ref, [cand])
    row = rows(report)["gqa"]
    assert row["decision"] == NOT_DECIDED and report["decision"] == NOT_DECIDED
    assert row["confidence"]["questions_needed"] > 20
    assert "more questions would decide it" in row["confidence"]["reason"]
    args = ["compare", str(ref), str(cand), "--out", str(tmp_path / "report")]
    assert main(args) == 3
    assert "accuracy holds: **not decided**" in capsys.readouterr().out
    assert main([*args, "--strict"]) == 1


def test_near_lossless_needs_agreement_and_a_tight_bound(suite, tmp_path):
    """600 identical answers: enough for a 1 pt margin, not for 0.2 pt with 99% agreement."""
    answers = reference_answers(suite, ["gqa"])
    ref = write_run(tmp_path / "ref", suite, TORCH, answers)
    q4 = write_run(tmp_path / "q4", suite, Q4, answers)
    q8 = write_run(tmp_path / "q8", suite, Q8, answers)
    report = compare_runs(ref, [q4, q8])
    assert rows(report, 0)["gqa"]["decision"] == HOLDS
    q8_row = rows(report, 1)["gqa"]["confidence"]
    assert rows(report, 1)["gqa"]["decision"] == NOT_DECIDED and q8_row["bounds"]["agreement_low"] > 99
    assert q8_row["bounds"]["drop_high"] > 0.2 and q8_row["questions_needed"] > 600


def test_holm_controls_the_family_of_claims():
    """A claim safe on its own (one-sided p ~ 0.02) is not made in a family of five such rows."""
    e = Evidence("question", 400, 40, drop=0.0, sd=10.0, swing=100, questions=400, agree=360)
    (alone,) = decide([(e, QUANTIZED_MARGIN)])
    assert 0.01 < alone["p_holds"] < 0.025 and alone["verdict"] == HOLDS
    family = decide([(e, QUANTIZED_MARGIN)] * 5)
    assert all(r["verdict"] == NOT_DECIDED for r in family)
    assert family[0]["level"] == pytest.approx(0.05 / 10)


def test_mean_f1_is_the_pope_headline(suite):
    pope = get_benchmark("pope")
    questions = pope.load(suite)
    rng = np.random.default_rng(3)
    answers = {q.qid: str(rng.choice(["yes", "no"])) for q in questions}
    result = pope.score(suite, answers, questions)
    predicted = np.array([s.parsed == "yes" for s in result.samples], dtype=float)
    gold = np.where([s.score == 1.0 for s in result.samples], predicted, 1 - predicted)
    category = {q.qid: q.category for q in questions}
    split = np.array([category[s.qid] for s in result.samples])
    split_ids = np.unique(split, return_inverse=True)[1].astype(float)
    assert float(mean_f1(predicted, gold, split_ids)) == pytest.approx(result.headline)
