"""`imp check`: both runtimes answer the same seeded order of units, look by look, until decided."""

import json

import pytest

from benchmarks.base import get_benchmark
from benchmarks.runner import ANSWERS
from benchmarks.sequential import looks, unit_order
from benchmarks.synthetic import write_synthetic_suite
from impvlm.cli import main


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    return write_synthetic_suite(tmp_path_factory.mktemp("suite") / "eval", 12, seed=9, progress=False)


@pytest.fixture(scope="module")
def other_checkpoint(make_tiny_checkpoint):
    """Another tiny random model: a candidate that answers differently."""
    return make_tiny_checkpoint(1, "other")


def test_looks_double_up_to_the_cap():
    assert looks(1000, 50, None) == [50, 100, 200, 400, 800, 1000]
    assert looks(1000, 50, 300) == [50, 100, 200, 300]
    assert looks(30, 50, None) == [30]


def test_units_are_shuffled_whole_and_seeded(suite):
    mme = get_benchmark("mme")
    questions = mme.load(suite)
    order = unit_order("mme", questions, seed=0)
    assert all(len(unit) == 2 and len({q.meta["question_id"] for q in unit}) == 1 for unit in order)
    assert order == unit_order("mme", questions, seed=0) != unit_order("mme", questions, seed=1)
    perception = {q.qid for q in questions if mme.sampling_unit(q) is not None}
    assert {q.qid for unit in order for q in unit} == perception


def answered(folder, name):
    return [json.loads(line)["qid"] for line in (folder / name / ANSWERS).read_text().splitlines()]


def test_identical_runtimes_are_not_decided_at_a_small_cap_and_resume(
    tiny_checkpoint, suite, tmp_path, capsys
):
    out = tmp_path / "check"
    args = [str(tiny_checkpoint), str(tiny_checkpoint), "--data", str(suite), "--out", str(out)]
    args += ["--benchmarks", "gqa", "--first", "5", "--cap", "20", "--max-new-tokens", "2", "--threads", "1"]
    assert main(["check", *args]) == 3
    printed = capsys.readouterr().out
    assert (
        "| gqa | NOT DECIDED | 20 | 36 | 3 of 3 |" in printed and "more questions would decide it" in printed
    )
    report = json.loads((out / "check.json").read_text())
    assert [look["questions"] for look in report["rows"][0]["looks"]] == [5, 10, 20]
    order = [q.qid for unit in unit_order("gqa", get_benchmark("gqa").load(suite), 0) for q in unit]
    assert answered(out / "reference", "gqa") == answered(out / "candidate", "gqa") == order[:20]
    before = (out / "candidate" / "gqa" / ANSWERS).read_bytes()
    assert main(["check", *args, "--strict"]) == 1
    assert (out / "candidate" / "gqa" / ANSWERS).read_bytes() == before  # resumed: nothing re-asked
    assert (
        main(["compare", str(out / "reference"), str(out / "candidate"), "--out", str(tmp_path / "r")]) == 3
    )
    # another plan over the same folders: each look pairs only its own questions, not all answered
    assert main(["check", *args[:-8], "--first", "5", "--cap", "10", *args[-4:]]) == 3
    report = json.loads((out / "check.json").read_text())
    assert [look["questions"] for look in report["rows"][0]["looks"]] == [5, 10]


def test_another_model_drops_at_the_first_look(tiny_checkpoint, other_checkpoint, suite, tmp_path, capsys):
    out = tmp_path / "check"
    args = [str(tiny_checkpoint), str(other_checkpoint), "--data", str(suite), "--out", str(out)]
    args += ["--benchmarks", "gqa", "--first", "20", "--max-new-tokens", "2", "--threads", "1"]
    assert main(["check", *args]) == 1
    report = json.loads((out / "check.json").read_text())
    row = report["rows"][0]
    assert row["verdict"] == "DROPS" and len(row["looks"]) == 1 and report["questions_asked"] == 20
    assert row["bounds"]["agreement_high"] < 99
    assert "gqa DROPS: " in capsys.readouterr().out
