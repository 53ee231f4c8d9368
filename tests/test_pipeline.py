"""A reduced `imp pipeline` end to end: synthetic data, training, merge, export, nine benchmarks on
PyTorch and exported variants, the comparison report; then a re-run that skips every stage."""

import json
import subprocess
import sys

import pytest

ARGS = [
    "--train", "--train-images", "300", "--eval-images", "20", "--bench-images", "3", "--tower-steps", "5", "--limit", "6", "--max-new-tokens", "8",
    "--gguf", "f16,q4_k_m", "--onnx", "fp32", "--set", "train.max_steps=15", "--no-progress",
    "--threads", "1",
]  # fmt: skip


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("pipeline") / "work"
    cmd = [sys.executable, "-m", "impvlm.cli", "pipeline", "--work", str(work), *ARGS]
    first = subprocess.run(cmd, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr[-3000:]
    return work, cmd, first


def test_report_covers_all_nine_benchmarks_for_every_runtime(pipeline_run):
    work, _, first = pipeline_run
    report = json.loads((work / "report" / "report.json").read_text())
    assert report["reference"]["label"] == "torch-fp32"
    labels = {c["label"] for c in report["candidates"]}
    assert labels == {"f16+fp32", "q4_k_m+fp32", "native-f16+mmproj-f16"}
    for cand in report["candidates"]:
        assert len(cand["rows"]) == 9
        for row in cand["rows"]:
            assert row["agreement"] is not None and row["questions"] > 0
            assert row["delta"] is not None, row
        assert cand["token_level"]["lm_top1_agreement"] > 0.5
    # the trained tiny model answers identically through ONNX fp32 + GGUF f16
    f16 = next(c for c in report["candidates"] if c["label"] == "f16+fp32")
    assert all(row["agreement"] == 100.0 for row in f16["rows"]), [
        (r["benchmark"], r["agreement"]) for r in f16["rows"]
    ]
    assert (work / "report" / "report.md").read_text().count("|") > 50
    for chart in ("metric_per_runtime.png", "delta_ci.png", "latency_vs_accuracy.png"):
        assert (work / "report" / chart).stat().st_size > 1000
    assert "accuracy holds" in first.stdout and "wall time" in first.stdout
    accuracy = json.loads((work / "merge" / "held_out_accuracy.json").read_text())
    assert 0.0 <= accuracy["overall"] <= 1.0


def test_rerun_skips_every_stage(pipeline_run):
    _, cmd, _ = pipeline_run
    again = subprocess.run(cmd, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-3000:]
    log = again.stdout + again.stderr
    assert "running" not in log and log.count("up to date, skipped") >= 8
