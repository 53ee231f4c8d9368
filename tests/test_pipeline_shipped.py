"""`imp pipeline` without --train: it starts from the shipped tiny Imp (no synthetic world, no training),
its default benchmark sets are large enough to decide, and training-only options need --train."""

import json
import subprocess
import sys

import pytest

from benchmarks.pipeline import BENCH_IMAGES, PipelineConfig
from impvlm.errors import ConfigError
from impvlm.pretrained import shipped_checkpoint

ARGS = [
    "--bench-images", "2", "--limit", "4", "--max-new-tokens", "8", "--gguf", "f16", "--onnx", "fp32",
    "--mmproj", "", "--no-progress", "--threads", "1",
]  # fmt: skip


def imp(*args):
    return subprocess.run([sys.executable, "-m", "impvlm.cli", *args], capture_output=True, text=True)


def test_default_run_starts_from_the_shipped_checkpoint(tmp_path):
    work = tmp_path / "work"
    first = imp("pipeline", "--work", str(work), *ARGS)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "starting from the shipped imp-tiny-synthetic" in first.stdout
    assert not (work / "synthetic").exists() and not (work / "train").exists()
    marker = json.loads((work / "checkpoint" / ".stage.json").read_text())
    assert marker["outputs"]["checkpoint"] == str(shipped_checkpoint())
    report = json.loads((work / "report" / "report.json").read_text())
    (candidate,) = report["candidates"]
    assert candidate["label"] == "f16+fp32" and len(candidate["rows"]) == 9
    manifest = json.loads((work / "export" / "bundle" / "manifest.json").read_text())
    assert "imp-tiny" in json.dumps(manifest)
    again = imp("pipeline", "--work", str(work), *ARGS)
    assert again.returncode == 0 and "running" not in again.stdout + again.stderr
    # --strict exits with the report's verdict: 4 questions a benchmark decide nothing, so 1
    strict = imp("pipeline", "--work", str(work), *ARGS, "--strict")
    assert report["decision"] == "NOT DECIDED"
    assert strict.returncode == 1, strict.stderr[-3000:]


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--train-images", "300"], "--train-images"),
        (["--set", "train.max_steps=5", "--tower-steps", "5"], "--tower-steps, --set"),
        (["--train", "--checkpoint", "somewhere"], "--checkpoint"),
    ],
)
def test_training_options_need_train(tmp_path, args, named):
    out = imp("pipeline", "--work", str(tmp_path / "work"), *args)
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and named in out.stderr, out.stderr
    assert not (tmp_path / "work").exists()


def test_config_refuses_data_without_train(tmp_path):
    with pytest.raises(ConfigError, match="--train"):
        PipelineConfig(data=tmp_path)


def test_default_benchmark_sets_hold_hundreds_of_questions(tmp_path):
    """The default per-benchmark image counts give every benchmark at least 450 questions (MMBench at
    least 200 circular questions of 3 rows each): the counts the README states."""
    from benchmarks.synthetic import suite_summary, write_synthetic_suite

    assert PipelineConfig().bench_images == BENCH_IMAGES
    root = write_synthetic_suite(tmp_path / "eval", BENCH_IMAGES, seed=1234, progress=False)
    summary = suite_summary(root)
    assert summary["n_images_per_benchmark"] == BENCH_IMAGES
    counts = {name: b["questions"] for name, b in summary["benchmarks"].items()}
    assert set(counts) == set(BENCH_IMAGES)
    assert all(n >= 450 for n in counts.values()), counts
    assert summary["benchmarks"]["mmbench"]["circular_questions"] >= 200
    assert summary["benchmarks"]["vizwiz"]["images"] == BENCH_IMAGES["vizwiz"]


def test_images_per_benchmark_must_name_the_nine(tmp_path):
    from benchmarks.synthetic import write_synthetic_suite

    with pytest.raises(ConfigError, match="missing"):
        write_synthetic_suite(tmp_path / "a", {"vqav2": 2}, progress=False)
    with pytest.raises(ConfigError, match="unknown"):
        write_synthetic_suite(tmp_path / "b", {**BENCH_IMAGES, "chartqa": 2}, progress=False)
