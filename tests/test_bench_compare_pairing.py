"""`imp compare` only gives verdicts on answers it can pair: same questions of the same data."""

import json
import shutil

import pytest

from benchmarks.compare import NOT_COMPARABLE, compare_runs
from benchmarks.runner import BenchmarkRunOptions, run_suite
from benchmarks.synthetic import write_synthetic_suite
from impvlm.cli import main
from runtimes.loader import load_runtime


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    return write_synthetic_suite(tmp_path_factory.mktemp("suite") / "eval", 3, seed=5, progress=False)


@pytest.fixture(scope="module")
def runs(tiny_checkpoint, suite, tmp_path_factory):
    """Runs of one runtime: a reference on pope + gqa and candidates that cannot all be paired."""
    root = tmp_path_factory.mktemp("runs")
    other = write_synthetic_suite(root / "other-data", 3, seed=6, progress=False)
    plans = {
        "ref": (["pope", "gqa"], suite, dict(limit=6)),
        "same": (["pope", "gqa"], suite, dict(limit=6)),
        "pope_only": (["pope"], suite, dict(limit=6)),
        "fewer": (["pope", "gqa"], suite, dict(limit=4)),
        "other_data": (["pope", "gqa"], other, dict(limit=6)),
        "longer": (["pope", "gqa"], suite, dict(limit=6, max_new_tokens=3)),
    }
    runtime = load_runtime(tiny_checkpoint)
    for name, (names, data, opts) in plans.items():
        options = BenchmarkRunOptions(**{"max_new_tokens": 2, "progress": False, **opts})
        run_suite(runtime, names, data, root / name, options)
    return root


def rows(report):
    return {r["benchmark"]: r for r in report["candidates"][0]["rows"]}


def test_identical_runs_pair_and_hold(runs):
    report = compare_runs(runs / "ref", [runs / "same"])
    assert report["holds"] and all(r["verdict"] == "PASS" for r in rows(report).values())
    assert all(r["questions"] == 6 for r in rows(report).values())


def test_a_missing_benchmark_is_not_comparable_and_never_holds(runs, tmp_path, capsys):
    report = compare_runs(runs / "ref", [runs / "pope_only"])
    assert (
        rows(report)["gqa"]["verdict"] == NOT_COMPARABLE
        and "no results for gqa" in rows(report)["gqa"]["reason"]
    )
    assert rows(report)["pope"]["verdict"] == "PASS"
    assert not report["holds"] and report["candidates"][0]["verdict"] == NOT_COMPARABLE
    assert main(["compare", str(runs / "ref"), str(runs / "pope_only"), "--out", str(tmp_path / "r")]) == 1
    out = capsys.readouterr().out
    assert (
        "accuracy holds: **not shown**" in out and "gqa not comparable" in out and "holds: **yes" not in out
    )


@pytest.mark.parametrize(
    "candidate, reason",
    [
        ("fewer", "other questions (6 vs 4 selected"),
        ("other_data", "other ids, prompts or images"),
        ("longer", "answer length caps differ (--max-new-tokens 2 vs 3)"),
    ],
)
def test_runs_on_other_questions_are_not_paired(runs, candidate, reason):
    report = compare_runs(runs / "ref", [runs / candidate])
    for row in rows(report).values():
        assert row["verdict"] == NOT_COMPARABLE and reason in row["reason"], row
    assert not report["holds"]


def test_runs_without_recorded_inputs_are_paired_by_their_samples(runs, tmp_path):
    """Results written before runs recorded their inputs: the per-question samples decide."""
    for name in ("ref", "fewer"):
        shutil.copytree(runs / name, tmp_path / name)
        results = json.loads((tmp_path / name / "results.json").read_text())
        results.pop("generation")
        for entry in results["benchmarks"].values():
            entry.pop("inputs")
        (tmp_path / name / "results.json").write_text(json.dumps(results))
    report = compare_runs(tmp_path / "ref", [tmp_path / "fewer"])
    assert all("answered other questions (6 vs 4, 4 in common)" in r["reason"] for r in rows(report).values())
