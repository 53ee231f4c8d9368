"""The benchmark runner: resumable after a real kill, prefix reuse equals fresh runs, chunks merge."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from benchmarks.runner import AnswerLog, BenchmarkRunOptions, merge_chunks, run_suite, score_run
from benchmarks.synthetic import write_synthetic_suite
from runtimes.loader import load_runtime


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    return write_synthetic_suite(tmp_path_factory.mktemp("suite") / "eval", 6, seed=5, progress=False)


@pytest.fixture(scope="module")
def runtime(tiny_checkpoint):
    return load_runtime(tiny_checkpoint)


def answers(run_dir, name):
    return {q: r["text"] for q, r in AnswerLog(run_dir / name / "answers.jsonl").records.items()}


def test_kill_resume_loses_nothing_and_duplicates_nothing(tiny_checkpoint, suite, tmp_path, runtime):
    run_dir = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "impvlm.cli",
        "bench",
        str(tiny_checkpoint),
        "--data",
        str(suite),
        "--out",
        str(run_dir),
        "--benchmarks",
        "pope",
        "--limit",
        "30",
        "--max-new-tokens",
        "4",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    log = run_dir / "pope" / "answers.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and (not log.exists() or len(log.read_text().splitlines()) < 5):
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = AnswerLog(log).records
    assert 5 <= len(before) < 30, "the kill should land mid-run"
    with open(log, "a") as handle:  # what a kill during a write leaves behind
        handle.write('{"qid": "half-writ')
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    qids = [r["qid"] for r in lines]
    assert len(qids) == len(set(qids)) == 30
    after = AnswerLog(log).records
    assert all(after[q] == before[q] for q in before)  # finished answers kept, not recomputed
    fresh_dir = tmp_path / "fresh"
    run_suite(
        runtime, ["pope"], suite, fresh_dir, BenchmarkRunOptions(limit=30, max_new_tokens=4, progress=False)
    )
    assert answers(run_dir, "pope") == answers(fresh_dir, "pope")
    assert (run_dir / "results.json").exists()


def test_grouped_reuse_equals_one_question_at_a_time(runtime, suite, tmp_path):
    opts = dict(limit=12, max_new_tokens=4, progress=False)
    run_suite(runtime, ["mme", "pope"], suite, tmp_path / "reuse", BenchmarkRunOptions(**opts))
    run_suite(runtime, ["mme", "pope"], suite, tmp_path / "fresh", BenchmarkRunOptions(reuse=False, **opts))
    for name in ("mme", "pope"):
        assert answers(tmp_path / "reuse", name) == answers(tmp_path / "fresh", name)
    reused = [
        r["metadata"]["reused_tokens"]
        for r in AnswerLog(tmp_path / "reuse" / "mme" / "answers.jsonl").records.values()
    ]
    assert max(reused) > runtime.num_image_tokens  # the second question on an image reused its prefix


def test_chunks_merge_to_the_unchunked_run(runtime, suite, tmp_path):
    for k in range(2):
        opts = BenchmarkRunOptions(limit=10, max_new_tokens=3, num_chunks=2, chunk_idx=k, progress=False)
        assert run_suite(runtime, ["gqa"], suite, tmp_path / "chunked", opts) is None
    merge_chunks(tmp_path / "chunked", "gqa")
    run_suite(
        runtime,
        ["gqa"],
        suite,
        tmp_path / "whole",
        BenchmarkRunOptions(limit=10, max_new_tokens=3, progress=False),
    )
    assert answers(tmp_path / "chunked", "gqa") == answers(tmp_path / "whole", "gqa")
    rescored = score_run(tmp_path / "chunked", suite)
    assert rescored["benchmarks"]["gqa"]["headline"] is not None


def test_score_cli_rescores_without_a_model(runtime, suite, tmp_path):
    run_suite(
        runtime,
        ["sqa"],
        suite,
        tmp_path / "r",
        BenchmarkRunOptions(limit=6, max_new_tokens=3, progress=False),
    )
    (tmp_path / "r" / "results.json").unlink()
    out = subprocess.run(
        [sys.executable, "-m", "impvlm.cli", "bench", "score", str(tmp_path / "r")],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert "sqa" in out.stdout and (tmp_path / "r" / "results.json").exists()
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "impvlm.cli",
            "bench",
            str(tmp_path),
            "--data",
            str(suite),
            "--out",
            str(tmp_path / "x"),
            "--benchmarks",
            "popee",
        ],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "unknown benchmark 'popee'" in bad.stderr
