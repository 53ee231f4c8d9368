"""`imp bench import`: answer files of LLaVA, lmms-eval and VLMEvalKit into a run folder, then scored.

The fixtures under tests/assets/foreign are written by hand in each tool's format: LLaVA's
playground/data/eval layout with its answers/<model>.jsonl files and an MM-Vet grader's grade file,
lmms-eval's samples_<task>.jsonl and VLMEvalKit's <model>_<dataset>.tsv. Their known scores, worked
out by hand from the ground truth:

- MME: existence 2/2 and both of its image (200), artwork 1/2 and 0/1 images (50), code_reasoning
  200 -> perception 250, cognition 200;
- TextVQA: "Dakota" vs 10 x dakota = 1.0, "White" vs 3 x white + 7 x black = 0.9, "No" vs 10 x yes
  = 0 -> 63.33;
- MMBench: question 0 right in both rows, question 1 wrong in its rotation -> circular 50.0 over
  2 questions (vanilla 75.0 over 4 rows);
- MM-Vet: grades 1.0, 0.5, 0.0 -> 50.0; ocr (1.0 + 0.5) / 2 = 75.0, rec 0.0, math 100.0.
"""

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from benchmarks.base import BenchmarkDataError
from benchmarks.foreign import import_answers
from impvlm.cli import main

ASSETS = Path(__file__).parent / "assets" / "foreign"
EVAL = ASSETS / "eval"
LLAVA = {
    "mme": EVAL / "MME" / "answers" / "llava-v1.5-13b.jsonl",
    "textvqa": EVAL / "textvqa" / "answers" / "llava-v1.5-13b.jsonl",
    "mmbench": EVAL / "mmbench" / "answers" / "mmbench_dev_20230712" / "llava-v1.5-13b.jsonl",
    "mmvet": EVAL / "mm-vet" / "answers" / "llava-v1.5-13b.jsonl",
}
GRADES = EVAL / "mm-vet" / "results" / "llava-v1.5-13b_gpt-4-0613-grade-1runs.json"
KNOWN = {"mme": 250.0, "textvqa": 63.333, "mmbench": 50.0, "mmvet": 50.0}


def tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in root.rglob("*")
        if p.is_file()
    }


@pytest.fixture
def data(tmp_path):
    """A copy of the fixture's data folder (scoring writes nothing there, but a test must not rely on it)."""
    return Path(shutil.copytree(EVAL, tmp_path / "eval"))


def results(run_dir: Path) -> dict:
    return json.loads((run_dir / "results.json").read_text())["benchmarks"]


def test_llava_answer_files_round_trip_to_the_known_scores(tmp_path, capsys):
    before = tree_digest(ASSETS)
    run = tmp_path / "llava"
    assert main(["bench", "import", *map(str, LLAVA.values()), "--data", str(EVAL), "--out", str(run)]) == 0
    assert main(["bench", "score", str(run), "--mmvet-grades", str(GRADES)]) == 0
    out = results(run)
    for name, value in KNOWN.items():
        assert out[name]["headline"] == pytest.approx(value, abs=1e-3), name
    assert out["mme"]["metrics"]["cognition"] == pytest.approx(200.0)
    assert out["mme"]["metrics"]["artwork/acc_plus"] == 0.0
    assert out["mmbench"]["questions"] == 2 and out["mmbench"]["metrics"]["rows"] == 4
    assert out["mmbench"]["metrics"]["vanilla_accuracy"] == pytest.approx(75.0)
    assert out["mmvet"]["metrics"]["ocr"] == pytest.approx(75.0) and out["mmvet"]["metrics"]["math"] == 100.0
    assert out["mmvet"]["info"]["judge"]["models"] == ["gpt-4-0613"]
    info = json.loads((run / "run.json").read_text())
    assert info["runtime"] == {"runtime": "imported", "model_id": "llava-v1.5-13b"}
    assert info["imported"]["mme"]["format"] == "llava" and info["imported"]["mme"]["unmatched"] == 0
    # MME's and TextVQA's repeated question ids went to their questions in order
    records = [json.loads(line) for line in (run / "textvqa" / "answers.jsonl").read_text().splitlines()]
    assert [(r["qid"], r["text"]) for r in records][:2] == [
        ("003a8ae2ef43b901#0", "Dakota"),
        ("003a8ae2ef43b901#1", "White"),
    ]
    assert tree_digest(ASSETS) == before  # the imported files and the data were only read


def test_lmms_eval_sample_logs_give_the_same_scores(tmp_path):
    run = tmp_path / "lmms"
    logs = [
        ASSETS / "lmms-eval" / f"samples_{task}.jsonl" for task in ("mme", "mmbench_en_dev", "textvqa_val")
    ]
    summary = import_answers([str(p) for p in logs], EVAL, run)
    assert [(s["benchmark"], s["answers"], s["format"]) for s in summary] == [
        ("mme", 6, "lmms-eval"),
        ("mmbench", 4, "lmms-eval"),
        ("textvqa", 3, "lmms-eval"),
    ]
    assert main(["bench", "score", str(run)]) == 0
    out = results(run)
    assert out["mme"]["headline"] == pytest.approx(250.0)
    assert out["mmbench"]["headline"] == pytest.approx(50.0)
    assert out["textvqa"]["headline"] == pytest.approx(63.333, abs=1e-3)
    assert (
        json.loads((run / "run.json").read_text())["runtime"]["model_id"] == "lmms-eval"
    )  # the logs' folder


@pytest.mark.parametrize("suffix", [".tsv", ".xlsx"])
def test_vlmevalkit_prediction_files_give_the_same_scores(tmp_path, suffix):
    files = [
        ASSETS / "vlmevalkit" / "llava_v1.5_13b_MME.tsv",
        ASSETS / "vlmevalkit" / "llava_v1.5_13b_MMBench_DEV_EN.tsv",
    ]
    if suffix == ".xlsx":  # VLMEvalKit writes its predictions with pandas + openpyxl
        openpyxl = pytest.importorskip("openpyxl")
        converted = []
        for tsv in files:
            book = openpyxl.Workbook()
            for line in tsv.read_text().splitlines():
                book.active.append([int(c) if c.isdigit() else (c or None) for c in line.split("\t")])
            book.save(tmp_path / f"{tsv.stem}.xlsx")
            converted.append(tmp_path / f"{tsv.stem}.xlsx")
        files = converted
    run = tmp_path / "vlm"
    assert main(["bench", "import", *map(str, files), "--data", str(EVAL), "--out", str(run)]) == 0
    assert main(["bench", "score", str(run)]) == 0
    out = results(run)
    assert out["mme"]["headline"] == pytest.approx(250.0) and out["mmbench"]["headline"] == pytest.approx(
        50.0
    )
    assert json.loads((run / "run.json").read_text())["runtime"]["model_id"] == "llava_v1.5_13b"


def test_mmbench_rounds_of_llava_all_rounds_go_to_the_rotated_rows(tmp_path):
    answers = tmp_path / "mmbench" / "answers" / "all-rounds.jsonl"
    answers.parent.mkdir(parents=True)
    lines = [
        {"question_id": 0, "round_id": 0, "prompt": "What animal is shown?\nA. cat\nB. dog", "text": "A"},
        {"question_id": 0, "round_id": 1, "prompt": "What animal is shown?\nA. dog\nB. cat", "text": "B"},
    ]
    answers.write_text("".join(json.dumps(r) + "\n" for r in lines))
    run = tmp_path / "run"
    import_answers([str(answers)], EVAL, run)
    records = [json.loads(line) for line in (run / "mmbench" / "answers.jsonl").read_text().splitlines()]
    assert [(r["qid"], r["text"]) for r in records] == [("0", "A"), ("1000000", "B")]


def test_answers_to_other_prompts_are_refused(tmp_path):
    wrong = tmp_path / "MME" / "answers" / "m.jsonl"
    wrong.parent.mkdir(parents=True)
    record = json.loads(LLAVA["mme"].read_text().splitlines()[0])
    wrong.write_text(json.dumps({**record, "prompt": "Is there a cat?"}) + "\n")
    with pytest.raises(BenchmarkDataError, match="line 1 of .* another prompt"):
        import_answers([str(wrong)], EVAL, tmp_path / "run")
    assert not (tmp_path / "run" / "mme").exists()


def test_the_benchmark_is_named_when_the_path_does_not_say(tmp_path, capsys):
    loose = tmp_path / "answers.jsonl"
    shutil.copy(LLAVA["mme"], loose)
    argv = ["bench", "import", str(loose), "--data", str(EVAL), "--out", str(tmp_path / "run")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "cannot tell the benchmark of" in err and "\n" not in err
    assert main(["bench", "import", f"mme={loose}", "--data", str(EVAL), "--out", str(tmp_path / "run")]) == 0


def test_a_malformed_answer_file_is_one_line_naming_the_line(tmp_path, capsys):
    bad = tmp_path / "MME" / "answers" / "m.jsonl"
    bad.parent.mkdir(parents=True)
    bad.write_text(LLAVA["mme"].read_text().splitlines()[0] + "\n{broken\n")
    assert main(["bench", "import", str(bad), "--data", str(EVAL), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("imp bench: error: line 2 of") and "\n" not in err


def test_importing_twice_needs_overwrite(tmp_path):
    run = tmp_path / "run"
    import_answers([str(LLAVA["mme"])], EVAL, run)
    with pytest.raises(BenchmarkDataError, match="already holds imported answers of mme: pass --overwrite"):
        import_answers([str(LLAVA["mme"])], EVAL, run)
    import_answers([str(LLAVA["mme"])], EVAL, run, overwrite=True)
    import_answers([str(LLAVA["textvqa"])], EVAL, run)  # another benchmark of the same model joins
    assert json.loads((run / "run.json").read_text())["benchmarks"] == ["mme", "textvqa"]


REAL = (Path(__file__).parents[1] / "../shared/data/llava-eval").resolve()


@pytest.mark.skipif(not REAL.is_dir(), reason=f"real LLaVA question files not found at {REAL}")
def test_answer_files_for_the_real_question_files_import_in_full(tmp_path, capsys):
    """LLaVA answer files for the real MME (repeated ids) and POPE question files: every answer finds
    its question; POPE scores with its labels, MME (no ground truth here) needs annotations."""
    files = []
    for folder, question_file in (("MME", "llava_mme.jsonl"), ("pope", "llava_pope_test.jsonl")):
        answers = tmp_path / folder / "answers" / "llava-v1.5-13b.jsonl"
        answers.parent.mkdir(parents=True)
        lines = (REAL / folder / question_file).read_text().splitlines()
        records = [
            {"question_id": q["question_id"], "prompt": q["text"], "text": "Yes" if i % 3 else "No"}
            for i, q in enumerate(map(json.loads, lines))
        ]
        answers.write_text(
            "".join(json.dumps({**r, "model_id": "m", "metadata": {}}) + "\n" for r in records)
        )
        files.append(answers)
    run = tmp_path / "run"
    summary = import_answers([str(f) for f in files], REAL, run)
    assert [(s["answers"], s["questions"], s["unmatched"]) for s in summary] == [
        (2374, 2374, 0),
        (8910, 8910, 0),
    ]
    assert main(["bench", "score", str(run)]) == 0
    out = results(run)
    assert out["mme"]["status"] == "needs annotations" and out["pope"]["status"] == "scored"
    records = [json.loads(line) for line in (run / "mme" / "answers.jsonl").read_text().splitlines()]
    assert records[0]["qid"].endswith("#0") and records[1]["qid"] == records[0]["qid"][:-1] + "1"
    assert [r["text"] for r in records[:3]] == ["No", "Yes", "Yes"]


@pytest.mark.parametrize("fmt", [[], ["--format", "llava"], ["--format", "vlmevalkit"]])
def test_a_file_of_no_known_format_is_one_line_and_writes_nothing(tmp_path, capsys, fmt):
    binary = tmp_path / "answers.jsonl"
    binary.write_bytes(b"\xff\xfe\x00 not text")
    argv = ["bench", "import", f"mme={binary}", "--data", str(EVAL), "--out", str(tmp_path / "run"), *fmt]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert str(binary) in err and "\n" not in err
    assert not (tmp_path / "run").exists()
