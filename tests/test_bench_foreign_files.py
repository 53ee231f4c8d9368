"""No command truncates or rewrites a file it did not write.

LLaVA's published answer file put where `imp bench` keeps its answers (RUN_DIR/<benchmark>/
answers.jsonl) is refused with one line by `imp bench score`, `imp bench merge` and
`imp bench import`, and stays byte for byte as it was; so do another program's samples.jsonl and
results.json.
"""

import json
import shutil
from pathlib import Path

import pytest

from impvlm.cli import main

EVAL = Path(__file__).parent / "assets" / "foreign" / "eval"
LLAVA_MME = EVAL / "MME" / "answers" / "llava-v1.5-13b.jsonl"


@pytest.fixture
def run_with_llava_file(tmp_path):
    run = tmp_path / "run"
    (run / "mme").mkdir(parents=True)
    shutil.copy(LLAVA_MME, run / "mme" / "answers.jsonl")
    return run


def one_line_error(capsys, argv):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err, err
    return err


@pytest.mark.parametrize("command", ["score", "merge"])
def test_score_and_merge_refuse_llavas_file_and_leave_it_byte_identical(run_with_llava_file, capsys, command):
    target = run_with_llava_file / "mme" / "answers.jsonl"
    before = target.read_bytes()
    err = one_line_error(capsys, ["bench", command, str(run_with_llava_file), "--data", str(EVAL)])
    if command == "score":
        assert "line 1 of" in err and "imp bench import" in err
    assert target.read_bytes() == before == LLAVA_MME.read_bytes()
    assert sorted(p.name for p in run_with_llava_file.rglob("*")) == ["answers.jsonl", "mme"]


def test_import_into_a_folder_with_llavas_file_is_refused(run_with_llava_file, capsys):
    target = run_with_llava_file / "mme" / "answers.jsonl"
    before = target.read_bytes()
    for extra in ([], ["--overwrite"]):
        argv = [
            "bench",
            "import",
            str(LLAVA_MME),
            "--data",
            str(EVAL),
            "--out",
            str(run_with_llava_file),
            *extra,
        ]
        assert "line 1 of" in one_line_error(capsys, argv)
    assert target.read_bytes() == before


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("mme/samples.jsonl", '{"doc_id": 0, "doc": {}, "resps": [["Yes"]]}\n'),  # another tool's log
        ("results.json", '{"results": {"mme": {"score": 1}}}'),
    ],
)
def test_score_never_replaces_another_programs_samples_or_results(tmp_path, capsys, name, content):
    run = tmp_path / "run"
    assert main(["bench", "import", str(LLAVA_MME), "--data", str(EVAL), "--out", str(run)]) == 0
    capsys.readouterr()
    (run / name).write_text(content)
    err = one_line_error(capsys, ["bench", "score", str(run)])
    assert "was not written by imp bench" in err
    assert (run / name).read_text() == content
    if name == "results.json":
        assert json.loads((run / name).read_text()) == {"results": {"mme": {"score": 1}}}


def test_overwrite_never_deletes_another_programs_samples(tmp_path, capsys):
    run = tmp_path / "run"
    argv = ["bench", "import", str(LLAVA_MME), "--data", str(EVAL), "--out", str(run)]
    assert main(argv) == 0
    capsys.readouterr()
    foreign = run / "mme" / "samples.jsonl"
    foreign.write_text('{"doc_id": 0, "doc": {}, "resps": [["Yes"]]}\n')
    before = (run / "mme" / "answers.jsonl").read_bytes()
    assert "was not written by imp bench" in one_line_error(capsys, [*argv, "--overwrite"])
    assert foreign.read_text() == '{"doc_id": 0, "doc": {}, "resps": [["Yes"]]}\n'
    assert (run / "mme" / "answers.jsonl").read_bytes() == before


def test_importing_the_importers_loads_no_torch_nor_openpyxl():
    import subprocess
    import sys

    code = (
        "import sys, benchmarks.foreign, benchmarks.commands.bench\n"
        "bad = [m for m in ('torch', 'transformers', 'openpyxl', 'httpx') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])
