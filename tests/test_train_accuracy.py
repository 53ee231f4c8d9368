"""The offline goal: the packaged tiny chain (warmup, stage 1, stage 2 LoRA) on the synthetic world,
merged, answers held-out questions exactly. About an hour on 2 CPU cores: marked slow."""

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
    # The aim is 90%. Measured in `imp pipeline` (600 held-out answers): 84.3% with the tower's
    # linear read-out and 1000 warm-up steps, 86.5% with the tower's code objective, 97.5% with
    # 1500 warm-up steps and instruct turns about distinct objects; this test with the read-out and 1000
    # steps: 82.8% of 2290 in 35 min. Chance is about 27%; this holds the chain to the aim.
    assert result["overall"] >= 0.9, format_accuracy(result)
