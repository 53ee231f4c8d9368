"""The offline goal: the packaged tiny chain (warmup, stage 1, stage 2 LoRA) on the synthetic world,
merged, answers held-out questions exactly. About half an hour on 2 CPU cores: marked slow."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from impvlm.data.defaults import EVAL_IMAGES, TRAIN_IMAGES
from impvlm.data.synthetic import WorldConfig, generate_dataset
from impvlm.tokenizer import build_corpus, train_tokenizer
from impvlm.train import exact_accuracy, merge_checkpoint, run_training
from impvlm.train.evaluate import format_accuracy
from impvlm.train.tower import pretrain_tower


@pytest.mark.slow
def test_tiny_chain_answers_held_out_questions(tmp_path: Path):
    world = tmp_path / "world"
    generate_dataset(world, TRAIN_IMAGES, EVAL_IMAGES, WorldConfig(), progress=False)
    train_tokenizer(build_corpus(world), 1024, world / "tokenizer")
    started = time.perf_counter()
    pretrain_tower(world, world / "tower", progress=False)
    overrides = {"data.root": str(world), "train.progress": False}
    for name in ("tiny-warmup", "tiny-pretrain", "tiny-lora"):
        stage_dir = run_training(name, tmp_path / "run", overrides)
    seconds = time.perf_counter() - started
    merged = merge_checkpoint(stage_dir, tmp_path / "run" / "merged")
    result = exact_accuracy(merged, world / "eval.json")
    print(f"\ntiny chain trained in {seconds:.0f}s; {format_accuracy(result)}")
    (tmp_path / "result.json").write_text(json.dumps({**result, "train_seconds": seconds}))
    # The aim is 90%. Measured with batch 32, lr 1e-3, 1000 warm-up steps on 30,000 images (600
    # held-out answers): 84.3% when the yes/no questions are learned (exists 87%), 79.2% and 81.5% in runs
    # where they stay at chance (another tower, 1500 steps); this test: 82.8% of 2290 (exists 84%) in 35 min.
    # Before (batch 8, 3000 images): 75.5% of 2290.
    # Chance is about 27%: this guards the measured level with a margin.
    assert result["overall"] >= 0.75, format_accuracy(result)
