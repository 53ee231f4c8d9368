"""Bad options and unusable output folders of `imp bench`, `imp bench-data` and `imp compare`:
one line naming the option or file, exit status 2, no traceback, nothing written."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from benchmarks.synthetic import write_synthetic_suite
from impvlm.cli import main


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    return write_synthetic_suite(tmp_path_factory.mktemp("suite") / "eval", 3, seed=5, progress=False)


def one_line_error(capsys, argv, expected):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and expected in err, err
    return err


@pytest.mark.parametrize(
    "extra, expected",
    [
        (["--limit", "-1"], "--limit -1 selects no questions"),
        (["--limit", "0"], "--limit 0 selects no questions"),
        (["--max-new-tokens", "0"], "--max-new-tokens must be at least 1, got 0"),
        (["--max-new-tokens", "-4"], "--max-new-tokens must be at least 1, got -4"),
        (["--num-chunks", "0"], "--num-chunks must be at least 1, got 0"),
        (["--num-chunks", "2", "--chunk-idx", "2"], "--chunk-idx 2 is outside 0..1"),
        (["--threads", "0"], "--threads must be at least 1, got 0"),
        (["--threads", "-1"], "--threads must be at least 1, got -1"),
    ],
)
def test_bench_options_out_of_range(capsys, tiny_checkpoint, suite, tmp_path, extra, expected):
    argv = ["bench", str(tiny_checkpoint), "--data", str(suite), "--out", str(tmp_path / "run"), *extra]
    one_line_error(capsys, argv, expected)
    assert not (tmp_path / "run" / "run.json").exists()


@pytest.mark.parametrize("query", ["threads=abc", "threads=0", "context_length=-5"])
def test_runtime_spec_with_a_bad_number(capsys, tiny_checkpoint, suite, tmp_path, query):
    key = query.split("=")[0]
    argv = ["bench", f"torch:{tiny_checkpoint}?{query}", "--data", str(suite), "--out", str(tmp_path / "r")]
    one_line_error(capsys, argv, f"runtime option {key}=")


def test_empty_question_file_says_so(capsys, tiny_checkpoint, suite, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(suite / "gqa", data / "gqa")
    (data / "gqa" / "llava_gqa_testdev_balanced.jsonl").write_text("")
    argv = [
        "bench",
        str(tiny_checkpoint),
        "--data",
        str(data),
        "--out",
        str(tmp_path / "r"),
        "--benchmarks",
        "gqa",
    ]
    one_line_error(capsys, argv, f"gqa: the question file(s) under {data} hold no questions")


def test_a_missing_image_stops_the_run_before_it_starts(capsys, tiny_checkpoint, suite, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(suite / "gqa", data / "gqa")
    first = json.loads((data / "gqa" / "llava_gqa_testdev_balanced.jsonl").read_text().splitlines()[0])
    image = data / "gqa" / "data" / "images" / first["image"]
    image.unlink()
    argv = [
        "bench",
        str(tiny_checkpoint),
        "--data",
        str(data),
        "--out",
        str(tmp_path / "r"),
        "--benchmarks",
        "gqa",
    ]
    one_line_error(capsys, argv, f"missing image of question {str(first['question_id'])!r}: {image}")
    assert not (tmp_path / "r" / "gqa").exists()


def test_score_of_a_missing_folder(capsys, tmp_path):
    one_line_error(capsys, ["bench", "score", str(tmp_path / "nowhere")], "run folder not found")
    one_line_error(capsys, ["bench", "merge", str(tmp_path / "nowhere")], "run folder not found")


def out_commands(checkpoint, suite, out):
    return {
        "bench": ["bench", str(checkpoint), "--data", str(suite), "--out", str(out), "--limit", "1"],
        "bench-data": ["bench-data", "--out", str(out), "--images", "1", "--no-progress"],
        "compare": ["compare", str(checkpoint), str(checkpoint), "--data", str(suite), "--out", str(out)],
    }


@pytest.mark.parametrize("command", ["bench", "bench-data", "compare"])
def test_out_under_a_regular_file(capsys, tiny_checkpoint, suite, tmp_path, command):
    blocker = tmp_path / "a-file"
    blocker.write_text("keep me")
    argv = out_commands(tiny_checkpoint, suite, blocker / "sub")[command]
    one_line_error(capsys, argv, f"is under {blocker}, which is a file")
    assert blocker.read_text() == "keep me"


def readonly_mount_works(folder):
    probe = f"mount --bind {folder} {folder} && mount -o remount,bind,ro {folder} && ! touch {folder}/x"
    if shutil.which("unshare") is None:
        return False
    return subprocess.run(["unshare", "-rm", "sh", "-c", probe], capture_output=True).returncode == 0


@pytest.mark.parametrize(
    "command, sub, expected",
    [
        ("bench", "", "is not writable (read-only file system or permissions)"),
        ("bench-data", "out", "cannot be created: Read-only file system"),
        ("compare", "", "is not writable (read-only file system or permissions)"),
    ],
)
def test_out_on_a_read_only_file_system(tiny_checkpoint, suite, tmp_path, command, sub, expected):
    folder = tmp_path / "ro"
    folder.mkdir()
    if not readonly_mount_works(folder):
        pytest.skip("no user namespaces to mount a read-only folder")
    out = folder / sub if sub else folder
    argv = out_commands(tiny_checkpoint, suite, out)[command]
    script = (
        f'mount --bind {folder} {folder} && mount -o remount,bind,ro {folder} && exec "$0" -m impvlm.cli "$@"'
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(
        ["unshare", "-rm", "sh", "-c", script, sys.executable, *argv], capture_output=True, text=True, env=env
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert f"--out {out} {expected}" in done.stderr
