"""The offline goal: the packaged tiny chain (warmup, stage 1, stage 2 LoRA) on the synthetic world,
merged, answers held-out questions exactly. About half an hour on 2 CPU cores: marked slow."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from impvlm.data.defaults import TRAIN_IMAGES
from impvlm.data.synthetic import WorldConfig, generate_dataset
from impvlm.tokenizer import build_corpus, train_tokenizer
from impvlm.train import exact_accuracy, merge_checkpoint, run_training
from impvlm.train.evaluate import format_accuracy
from impvlm.train.tower import pretrain_tower

EVAL_IMAGES = 500  # `imp synth` default


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
    # The aim is 90%. Measured with the per-token tower read-out and the LM's init std 0.06: 75.5%
    # of 2290 in about 260 s on 2 cores (count 99%, OCR 100%, colour 81%, shape 70%, position 63%, exists
    # 50%; 72.4% with the flattened tower read-out, 49% without the tower pretraining). Chance is about
    # 27%: this guards the measured level with a margin.
    assert result["overall"] >= 0.65, format_accuracy(result)
