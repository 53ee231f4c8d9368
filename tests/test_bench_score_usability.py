"""`imp bench score` as a user with answer files of another tool meets it.

--data never defaults to the working folder; a missing ground-truth file marks only its benchmark
"needs annotations"; --benchmarks is honoured; MM-Vet scores from a grade file; MMBench counts
questions, not circular rows; answers without timings print no speed; the MMBench extraction rule is
an option and recorded.
"""

import json
import shutil
from pathlib import Path

import pytest

from benchmarks.foreign import import_answers
from benchmarks.tasks.mmbench_rules import extract_choice, extract_choice_2025
from impvlm.cli import main

EVAL = Path(__file__).parent / "assets" / "foreign" / "eval"
LLAVA_MME = EVAL / "MME" / "answers" / "llava-v1.5-13b.jsonl"
LLAVA_TEXTVQA = EVAL / "textvqa" / "answers" / "llava-v1.5-13b.jsonl"
LLAVA_MMBENCH = EVAL / "mmbench" / "answers" / "mmbench_dev_20230712" / "llava-v1.5-13b.jsonl"
LLAVA_MMVET = EVAL / "mm-vet" / "answers" / "llava-v1.5-13b.jsonl"
GRADES = EVAL / "mm-vet" / "results" / "llava-v1.5-13b_gpt-4-0613-grade-1runs.json"


@pytest.fixture
def data(tmp_path):
    return Path(shutil.copytree(EVAL, tmp_path / "eval"))


def imported(data, run, *files):
    import_answers([str(f) for f in files], data, run)
    return run


def results(run):
    return json.loads((run / "results.json").read_text())["benchmarks"]


def one_line_error(capsys, argv):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err, err
    return err


def test_data_never_defaults_to_the_working_folder(data, tmp_path, capsys, monkeypatch):
    run = imported(data, tmp_path / "run", LLAVA_MME)
    shutil.move(data, tmp_path / "moved")
    monkeypatch.chdir(tmp_path / "moved")  # a valid data folder, but not the one the run names
    err = one_line_error(capsys, ["bench", "score", str(run)])
    assert f"{data} that {run} records is not there: pass --data" in err
    (run / "run.json").unlink()
    err = one_line_error(capsys, ["bench", "score", str(run)])
    assert "records no benchmark data folder: pass --data DIR" in err
    assert main(["bench", "score", str(run), "--data", str(tmp_path / "moved")]) == 0


def test_a_missing_annotation_file_marks_only_its_benchmark(data, tmp_path, capsys):
    run = imported(data, tmp_path / "run", LLAVA_MME, LLAVA_TEXTVQA)
    (data / "textvqa" / "TextVQA_0.5.1_val.json").unlink()
    assert main(["bench", "score", str(run)]) == 0
    out = results(run)
    assert out["mme"]["headline"] == pytest.approx(250.0)
    assert out["textvqa"]["status"] == "needs annotations" and out["textvqa"]["headline"] is None
    assert "TextVQA_0.5.1_val.json" in out["textvqa"]["note"]
    assert "needs annotations" in capsys.readouterr().out
    assert len((run / "textvqa" / "samples.jsonl").read_text().splitlines()) == 3  # answers kept


def test_score_honours_benchmarks_and_keeps_the_others(data, tmp_path, capsys):
    run = imported(data, tmp_path / "run", LLAVA_MME, LLAVA_TEXTVQA)
    assert main(["bench", "score", str(run), "--benchmarks", "mme"]) == 0
    assert list(results(run)) == ["mme"] and not (run / "textvqa" / "samples.jsonl").exists()
    assert main(["bench", "score", str(run), "--benchmarks", "textvqa"]) == 0
    assert sorted(results(run)) == ["mme", "textvqa"]
    err = one_line_error(capsys, ["bench", "score", str(run), "--benchmarks", "pope"])
    assert "holds no answers for pope (answered: mme, textvqa)" in err
    assert "unknown benchmark 'mm-vet'" in one_line_error(
        capsys, ["bench", "score", str(run), "--benchmarks", "mm-vet"]
    )


def test_mmvet_from_a_grade_file_and_ungraded_without_one(data, tmp_path, capsys, monkeypatch):
    for name in ("IMP_JUDGE", "IMP_JUDGE_BASE_URL", "IMP_JUDGE_MODEL"):
        monkeypatch.delenv(name, raising=False)
    run = imported(data, tmp_path / "run", LLAVA_MMVET)
    assert main(["bench", "score", str(run)]) == 0
    assert results(run)["mmvet"]["status"] == "ungraded"
    assert main(["bench", "score", str(run), "--mmvet-grades", str(GRADES)]) == 0
    entry = results(run)["mmvet"]
    assert entry["headline"] == pytest.approx(50.0) and entry["info"]["judge"]["is_official_model"]
    partial = tmp_path / "partial-grade-1runs.json"
    partial.write_text(json.dumps({k: v for k, v in json.loads(GRADES.read_text()).items() if k != "v1_2"}))
    err = one_line_error(capsys, ["bench", "score", str(run), "--mmvet-grades", str(partial)])
    assert "v1_2 has no grade in" in err
    partial.write_text(json.dumps({"v1_0": {"score": "high"}}))
    assert "not an MM-Vet grade file" in one_line_error(
        capsys, ["bench", "score", str(run), "--mmvet-grades", str(partial)]
    )


def test_mmbench_counts_questions_and_answers_without_timings_print_no_speed(data, tmp_path, capsys):
    run = imported(data, tmp_path / "run", LLAVA_MMBENCH)
    assert main(["bench", "score", str(run)]) == 0
    printed = capsys.readouterr().out
    row = next(line for line in printed.splitlines() if line.startswith("| mmbench"))
    assert row.split("|")[4].strip() == "2"  # questions, not the 4 circular rows
    assert row.split("|")[5].strip() == ""  # no q/min without timings
    assert results(run)["mmbench"]["timing"] == {}


OPTIONS = {"A": "cat", "B": "dog"}


@pytest.mark.parametrize(
    ("text", "rule_2024", "rule_2025"),
    [
        ("B", "B", "B"),
        ("B. dog", "B", "B"),
        ("The answer is b", None, "B"),  # case-insensitive "answer is X" only in 2025
        ("The Answer is (A).", "A", "A"),
        ("A is not it: the animal in the picture is clearly a dog sitting on a sofa", "A", None),
        ("It is a dog", "B", "B"),  # short: option text matching in both
        ("It is a dog, " + "a friendly animal with brown fur lying on the grass " * 2, "B", None),
        ("A or B", None, None),
    ],
)
def test_mmbench_extraction_rules(text, rule_2024, rule_2025):
    assert extract_choice(text, OPTIONS) == rule_2024
    assert extract_choice_2025(text, OPTIONS) == rule_2025


def test_the_mmbench_rule_is_an_option_and_recorded(data, tmp_path):
    run = imported(data, tmp_path / "run", LLAVA_MMBENCH)
    assert main(["bench", "score", str(run)]) == 0
    assert results(run)["mmbench"]["info"]["extraction_rule"] == "vlmevalkit-2024"
    assert main(["bench", "score", str(run), "--mmbench-rule", "vlmevalkit-2025"]) == 0
    assert results(run)["mmbench"]["info"]["extraction_rule"] == "vlmevalkit-2025"


def test_a_model_run_scores_with_the_rule_asked_for(tiny_checkpoint, tmp_path, capsys):
    from benchmarks.synthetic import write_synthetic_suite

    suite = write_synthetic_suite(tmp_path / "eval", 2, seed=7, progress=False)
    run = tmp_path / "run"
    argv = ["bench", str(tiny_checkpoint), "--data", str(suite), "--out", str(run), "--benchmarks", "mmbench"]
    quick = ["--limit", "2", "--max-new-tokens", "2", "--threads", "1"]
    assert main([*argv, *quick, "--mmbench-rule", "vlmevalkit-2025"]) == 0
    assert results(run)["mmbench"]["info"]["extraction_rule"] == "vlmevalkit-2025"
    capsys.readouterr()
    assert "options of `imp bench import`" in one_line_error(capsys, [*argv, *quick, "--format", "llava"])
