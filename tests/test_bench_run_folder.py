"""A run folder never loses answers and never mixes answers of different inputs.

Scoring only reads the answers file; a resume drops only the torn last line a kill left behind and
refuses any other bad line; run.json records what the answers depend on and a re-run with other
inputs is refused, naming what differs.
"""

import json
import shutil

import pytest

from benchmarks.base import BenchmarkDataError
from benchmarks.run_inputs import check_run_folder, run_fingerprint
from benchmarks.runner import AnswerLog, BenchmarkRunOptions, run_suite, score_run
from benchmarks.synthetic import write_synthetic_suite
from impvlm.cli import main
from runtimes.loader import load_runtime

QUICK = dict(limit=6, max_new_tokens=2, progress=False)


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    return write_synthetic_suite(tmp_path_factory.mktemp("suite") / "eval", 3, seed=5, progress=False)


@pytest.fixture(scope="module")
def runtime(tiny_checkpoint):
    return load_runtime(tiny_checkpoint)


@pytest.fixture(scope="module")
def done_run(runtime, suite, tmp_path_factory):
    """A finished pope run of 6 questions (copied per test before it is changed)."""
    run_dir = tmp_path_factory.mktemp("done") / "run"
    run_suite(runtime, ["pope"], suite, run_dir, BenchmarkRunOptions(**QUICK))
    return run_dir


@pytest.fixture
def run_dir(done_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(done_run, copy)
    return copy


def corrupt_line(path, lineno):
    lines = path.read_bytes().split(b"\n")
    lines[lineno - 1] = b'{"qid": "1", "text": broken'
    path.write_bytes(b"\n".join(lines))


def test_score_refuses_a_corrupt_middle_line_and_leaves_the_file_alone(run_dir, suite, capsys):
    answers = run_dir / "pope" / "answers.jsonl"
    assert len(answers.read_text().splitlines()) == 6
    corrupt_line(answers, 3)
    before = answers.read_bytes()
    assert main(["bench", "score", str(run_dir), "--data", str(suite)]) == 2
    err = capsys.readouterr().err
    assert "line 3 of" in err and str(answers) in err and len(err.strip().splitlines()) == 1
    assert answers.read_bytes() == before  # not cut to the 2 lines before the bad one


def test_resume_refuses_a_corrupt_middle_line_and_keeps_every_answer(run_dir, suite, runtime):
    answers = run_dir / "pope" / "answers.jsonl"
    corrupt_line(answers, 2)
    before = answers.read_bytes()
    with pytest.raises(BenchmarkDataError, match="line 2 of"):
        run_suite(runtime, ["pope"], suite, run_dir, BenchmarkRunOptions(**QUICK))
    assert answers.read_bytes() == before


def test_scoring_a_torn_last_line_reads_only_and_a_resume_replaces_it(run_dir, suite, runtime):
    answers = run_dir / "pope" / "answers.jsonl"
    full = answers.read_bytes()
    lines = full.split(b"\n")[:-1]
    torn = b"\n".join(lines[:5]) + b"\n" + lines[5][:20]  # the kill landed inside the 6th record
    answers.write_bytes(torn)
    assert score_run(run_dir, suite)["benchmarks"]["pope"]["timing"]["questions"] == 5
    assert answers.read_bytes() == torn
    run_suite(runtime, ["pope"], suite, run_dir, BenchmarkRunOptions(**QUICK))
    assert answers.read_bytes().split(b"\n")[:5] == lines[:5]
    assert len(AnswerLog(answers).records) == 6 and answers.read_bytes().endswith(b"\n")


def test_a_foreign_answers_file_is_refused_and_never_rewritten(tmp_path, suite, runtime):
    run_dir = tmp_path / "run"
    foreign = run_dir / "pope" / "answers.jsonl"
    foreign.parent.mkdir(parents=True)
    content = b'{"question_id": 1, "text": "yes"}\n{"question_id": 2, "text": "no"}'
    foreign.write_bytes(content)
    for overwrite in (False, True):
        with pytest.raises(BenchmarkDataError, match="line 1 of .*no string 'qid'"):
            run_suite(runtime, ["pope"], suite, run_dir, BenchmarkRunOptions(**QUICK, overwrite=overwrite))
    with pytest.raises(BenchmarkDataError, match="line 1 of"):
        score_run(run_dir, suite)
    assert foreign.read_bytes() == content


def test_another_programs_run_json_is_never_replaced(tmp_path, suite, runtime):
    run_dir = tmp_path / "stage"
    run_dir.mkdir()
    content = '{"recipe": "tiny-lora", "stage": "finetune"}'  # what `imp train` writes there
    (run_dir / "run.json").write_text(content)
    for overwrite in (False, True):
        with pytest.raises(BenchmarkDataError, match="run.json has no 'runtime' entry: it was not written"):
            run_suite(runtime, ["pope"], suite, run_dir, BenchmarkRunOptions(**QUICK, overwrite=overwrite))
    assert (run_dir / "run.json").read_text() == content and sorted(run_dir.iterdir()) == [
        run_dir / "run.json"
    ]


def test_identical_inputs_resume_without_recomputing(run_dir, suite, runtime):
    answers = run_dir / "pope" / "answers.jsonl"
    before = answers.read_bytes()
    fingerprint = json.loads((run_dir / "run.json").read_text())["fingerprint"]
    run_suite(runtime, ["pope"], suite, run_dir, BenchmarkRunOptions(**QUICK))
    assert answers.read_bytes() == before
    assert json.loads((run_dir / "run.json").read_text())["fingerprint"] == fingerprint


@pytest.mark.parametrize(
    "change, expected",
    [
        ({"max_new_tokens": 3}, "option max_new_tokens 2 -> 3"),
        ({"limit": 5}, "option limit 6 -> 5"),
    ],
)
def test_other_options_into_the_same_folder_are_refused(run_dir, suite, runtime, change, expected):
    before = {p: p.read_bytes() for p in (run_dir / "run.json", run_dir / "pope" / "answers.jsonl")}
    with pytest.raises(BenchmarkDataError, match=expected):
        run_suite(runtime, ["pope"], suite, run_dir, BenchmarkRunOptions(**{**QUICK, **change}))
    assert {p: p.read_bytes() for p in before} == before


def test_other_data_or_images_are_refused_and_overwrite_starts_again(run_dir, suite, runtime, tmp_path):
    other = write_synthetic_suite(tmp_path / "other", 3, seed=6, progress=False)
    with pytest.raises(BenchmarkDataError, match=r"pope questions differ .*--data"):
        run_suite(runtime, ["pope"], other, run_dir, BenchmarkRunOptions(**QUICK))
    same_questions = tmp_path / "copy"
    shutil.copytree(suite, same_questions)
    run_suite(runtime, ["pope"], same_questions, run_dir, BenchmarkRunOptions(**QUICK))  # same content
    first = json.loads((same_questions / "pope" / "llava_pope_test.jsonl").read_text().splitlines()[0])
    image = same_questions / "pope" / "val2014" / first["image"]
    donor = next(p for p in sorted(image.parent.iterdir()) if p.read_bytes() != image.read_bytes())
    image.write_bytes(donor.read_bytes())  # same question files, another picture
    with pytest.raises(BenchmarkDataError, match="pope questions differ .*other prompts or images"):
        run_suite(runtime, ["pope"], same_questions, run_dir, BenchmarkRunOptions(**QUICK))
    run_suite(runtime, ["pope"], other, run_dir, BenchmarkRunOptions(**QUICK, overwrite=True))
    info = json.loads((run_dir / "run.json").read_text())
    assert info["data"] == str(other.resolve())
    results = json.loads((run_dir / "results.json").read_text())
    assert results["benchmarks"]["pope"]["timing"]["questions"] == 6


def test_another_runtime_is_refused_naming_the_field(tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / "pope").mkdir(parents=True)
    (run_dir / "pope" / "answers.jsonl").write_text('{"qid": "1", "text": "yes"}\n')
    digests = {"pope": {"questions": 1, "sha256": "0" * 64}}
    generation = {"max_new_tokens": 2, "limit": 1, "num_chunks": 1}
    old = run_fingerprint(
        {"runtime": "exported", "lm": "q8_0", "manifest_sha256": "a" * 64}, generation, digests
    )
    (run_dir / "run.json").write_text(json.dumps({"runtime": {}, "data": "d", "fingerprint": old}))
    moved = {"runtime": "exported", "lm": "q8_0", "manifest_sha256": "a" * 64, "bundle": "/new", "threads": 2}
    assert check_run_folder(run_dir, run_fingerprint(moved, generation, digests), "d") == old
    other = {"runtime": "exported", "lm": "q4_k_m", "manifest_sha256": "b" * 64}
    with pytest.raises(BenchmarkDataError, match=r"runtime lm 'q8_0' -> 'q4_k_m'; runtime manifest_sha256"):
        check_run_folder(run_dir, run_fingerprint(other, generation, digests), "d")
    (run_dir / "run.json").unlink()  # answers whose inputs nobody recorded
    with pytest.raises(BenchmarkDataError, match="no record of the inputs"):
        check_run_folder(run_dir, run_fingerprint(moved, generation, digests), "d")
