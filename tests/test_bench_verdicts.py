"""`imp compare` verdicts with stated confidence: HOLDS, DROPS, NOT DECIDED, over real answer files.

Answer files are written for the questions of a synthetic suite (GQA answered from its ground truth
where a test wants right answers, POPE and MME with seeded yes / no), scored by the real scorers,
then compared; a damaged candidate has many answers changed.
"""

import json

import numpy as np
import pytest
from scipy.stats import binom, chi2, norm, poisson

from benchmarks.base import get_benchmark
from benchmarks.compare import compare_runs
from benchmarks.run_inputs import write_run_info
from benchmarks.runner import ANSWERS, score_run
from benchmarks.synthetic import write_synthetic_suite
from benchmarks.tasks.pope import mean_f1
from benchmarks.verdict import DROPS, HOLDS, MIN_CHANGED, NOT_DECIDED, Evidence, decide
from benchmarks.verdict_suite import SuiteEvidence, decide_with_suites, suite_drop_bounds, suite_p_values
from export.quant_types import NEAR_LOSSLESS_MARGIN, QUANTIZED_MARGIN, AccuracyMargin
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


#: Images per benchmark for about 500 headline units each (POPE 900 questions: one answer moves its F1
#: up to about twice as much as an accuracy; MM-Vet has no local score and stays out of every verdict).
SUITE_IMAGES = {
    "vqav2": 170,
    "gqa": 170,
    "vizwiz": 500,
    "sqa": 500,
    "textvqa": 340,
    "pope": 50,
    "mme": 500,
    "mmbench": 500,
    "mmvet": 10,
}


@pytest.fixture(scope="module")
def nine(tmp_path_factory):
    return write_synthetic_suite(
        tmp_path_factory.mktemp("nine") / "eval", SUITE_IMAGES, seed=7, progress=False
    )


@pytest.fixture(scope="module")
def nine_answers(nine):
    return reference_answers(nine, list(SUITE_IMAGES))


def test_identical_answers_hold_as_a_suite_mean_where_no_benchmark_can(nine, nine_answers, tmp_path, capsys):
    """About 500 identical units per benchmark: too few for 0.2 pt on any one, enough for their mean."""
    ref = write_run(tmp_path / "ref", nine, TORCH, nine_answers)
    cand = write_run(tmp_path / "cand", nine, Q8, nine_answers)
    report = compare_runs(ref, [cand])
    by_name = rows(report)
    assert {n: r["decision"] for n, r in by_name.items()} == {
        **dict.fromkeys(SUITE_IMAGES, NOT_DECIDED),
        "mmvet": "n/a",
    }
    assert all(
        r["confidence"]["questions_needed"] > r["questions"] for n, r in by_name.items() if n != "mmvet"
    )
    suite = report["candidates"][0]["suite"]
    assert suite["verdict"] == HOLDS and suite["questions_needed"] is None
    assert suite["evidence"]["benchmarks"] == 8 and suite["evidence"]["changed"] == 0
    assert suite["evidence"]["n"] >= 8 * 450 and suite["bounds"]["agreement_low"] > 99.8
    assert 0 < suite["bounds"]["drop_high"] <= NEAR_LOSSLESS_MARGIN.max_drop
    assert report["candidates"][0]["decision"] == HOLDS and report["decision"] == HOLDS
    assert suite["reason"].startswith(f"0 of {suite['evidence']['n']} units changed over 8 benchmarks")
    assert main(["compare", str(ref), str(cand), "--out", str(tmp_path / "report")]) == 0
    out = capsys.readouterr().out
    assert "accuracy holds: **yes** (the suite mean of every candidate HOLDS" in out
    assert "| q8_0+fp32 | suite mean (8 benchmarks) |" in out and "- suite mean HOLDS: 0 of " in out
    saved = json.loads((tmp_path / "report" / "report.json").read_text())["candidates"][0]
    assert saved["suite"]["verdict"] == HOLDS and saved["decision"] == HOLDS
    assert "suite means" in (tmp_path / "report" / "report.md").read_text()


def test_a_candidate_damaged_on_one_benchmark_drops_with_its_suite_mean(nine, nine_answers, tmp_path, capsys):
    answers = {**nine_answers, "gqa": damaged({"gqa": nine_answers["gqa"]}, 0.3)["gqa"]}
    ref = write_run(tmp_path / "ref", nine, TORCH, nine_answers)
    cand = write_run(tmp_path / "cand", nine, Q8, answers)
    report = compare_runs(ref, [cand])
    suite = report["candidates"][0]["suite"]
    assert rows(report)["gqa"]["decision"] == DROPS and suite["verdict"] == DROPS
    assert suite["evidence"]["drop"] == pytest.approx(-rows(report)["gqa"]["delta"] / 8)
    assert suite["bounds"]["drop_low"] > NEAR_LOSSLESS_MARGIN.max_drop and suite["questions_needed"] is None
    assert report["candidates"][0]["decision"] == DROPS == report["decision"]
    assert main(["compare", str(ref), str(cand), "--out", str(tmp_path / "report")]) == 1
    assert "DROPS beyond the margin: q8_0+fp32 gqa, q8_0+fp32 suite mean" in capsys.readouterr().out


def test_a_small_suite_is_not_decided_and_says_how_many_questions_would_decide_it(nine, tmp_path):
    answers = reference_answers(nine, list(SUITE_IMAGES), limit=40)
    ref = write_run(tmp_path / "ref", nine, TORCH, answers)
    cand = write_run(tmp_path / "cand", nine, Q8, answers)
    report = compare_runs(ref, [cand])
    suite = report["candidates"][0]["suite"]
    asked = suite["evidence"]["questions"]
    assert suite["verdict"] == NOT_DECIDED == report["decision"] and suite["evidence"]["changed"] == 0
    assert suite["questions_needed"] > asked and suite["bounds"]["drop_high"] > NEAR_LOSSLESS_MARGIN.max_drop
    assert f"about {suite['questions_needed'] - asked:,} more questions would decide it" in suite["reason"]
    assert main(["compare", str(ref), str(cand), "--out", str(tmp_path / "report")]) == 3


def test_the_worst_case_suite_bound_keeps_its_level():
    """Changes at rates where the mean drop is exactly the margin, each a full drop: the exact chance
    that "holds" is claimed is at most the level, however the changes spread over the benchmarks."""
    level, margin = 0.05, AccuracyMargin(NEAR_LOSSLESS_MARGIN.max_drop)
    n, swing = np.array([6000, 2000, 5000]), np.array([100.0, 100.0, 150.0])
    chances = []
    for weights in ([0.0, 1.0, 0.0], [0.2, 0.6, 0.2], [1.0, 1.0, 1.0]):
        # rates p_b with mean drop (1/B) sum_b swing_b p_b equal to the margin
        p = np.array(weights) / sum(weights) * 3 * margin.max_drop / swing
        pmf = np.array([1.0])
        for n_b, p_b in zip(n, p):
            pmf = np.convolve(pmf, binom.pmf(np.arange(n_b + 1), n_b, p_b))
        claimed = []
        for k in range(MIN_CHANGED):
            parts = [
                Evidence("question", int(n_b), 0, 0.0, 0.0, float(s), int(n_b), int(n_b))
                for n_b, s in zip(n, swing)
            ]
            parts[0] = Evidence("question", int(n[0]), k, 0.0, 0.0, float(swing[0]), int(n[0]), int(n[0]))
            claimed.append(suite_p_values(SuiteEvidence(tuple(parts)), margin)[0] <= level)
        chances.append(float(pmf[:MIN_CHANGED][claimed].sum()))
    assert 0.03 < chances[0] <= level and max(chances) == chances[0]


def test_the_suite_bounds_follow_their_formulas():
    e = Evidence("question", 500, 0, 0.0, 0.0, 100.0, 500, 500)
    ((row,), (suite,)) = decide_with_suites(
        [(e, NEAR_LOSSLESS_MARGIN)], [(SuiteEvidence((e,) * 9), NEAR_LOSSLESS_MARGIN)]
    )
    level = 0.05 / 4
    assert suite["bounds"]["drop_high"] == pytest.approx(100 / (9 * 500) * chi2.ppf(1 - level, 2) / 2)
    assert suite["p_holds"] == pytest.approx(max(poisson.cdf(0, 0.2 / (100 / 4500)), 0.99**4500))
    changed = Evidence("question", 400, 40, 1.0, 10.0, 100.0, 400, 380)
    s = SuiteEvidence((changed, e))
    se = np.sqrt(10.0**2 / 400) / 2
    assert suite_drop_bounds(s, 0.01) == pytest.approx((0.5 - norm.isf(0.01) * se, 0.5 + norm.isf(0.01) * se))
    assert row["verdict"] == NOT_DECIDED and suite["verdict"] == HOLDS


def test_a_verdict_far_from_decided_says_how_far():
    """Agreement observed a hair above the 99% needed: the line gives the count and its multiple of
    the questions asked; a row a few hundred questions short gives the count alone."""
    at_margin = Evidence("question", 2000, 19, 0.0, 1.0, 100.0, 2000, 1981)
    near = Evidence("question", 300, 0, 0.0, 0.0, 100.0, 300, 300)
    far, close = decide([(at_margin, NEAR_LOSSLESS_MARGIN), (near, QUANTIZED_MARGIN)])
    assert far["verdict"] == NOT_DECIDED and far["questions_needed"] > 20 * 2000
    assert f"({far['questions_needed'] / 2000:,.0f}x those asked)" in far["reason"]
    assert close["verdict"] == NOT_DECIDED and close["questions_needed"] < 2 * 300
    assert close["reason"].endswith(
        f"about {close['questions_needed'] - 300:,} more questions would decide it"
    )
