"""The tiny tower's pretraining on the synthetic world: it learns to see, writes a SigLIP folder a
recipe loads, skips when done, and fails clearly on bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from impvlm.cli import main
from impvlm.data.synthetic import WorldConfig, generate_dataset
from impvlm.errors import ConfigError
from impvlm.presets import build_config
from impvlm.tokenizer import build_corpus, train_tokenizer
from impvlm.train import run_training
from impvlm.train.tower import TOWER_INFO, TowerTraining, pretrain_tower
from impvlm.train.weights import build_from_parts


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("world")
    generate_dataset(root, 24, 4, WorldConfig(seed=2), progress=False)
    train_tokenizer(build_corpus(root), 1024, root / "tokenizer")
    return root


@pytest.fixture(scope="module")
def tower(world: Path) -> tuple[Path, dict]:
    out = world / "tower"
    info = pretrain_tower(world, out, TowerTraining(steps=150, batch_size=32), progress=False)
    return out, info


def test_tower_learns_every_attribute_of_the_world(tower):
    _, info = tower
    acc = info["held_out_accuracy"]
    assert set(acc) == {"slot", "colour", "shape", "word"}
    # scored on the tokens that show an object or a sign; chance is 1/6 for the slot and 1/5 for a
    # colour (4 colours or none); measured after 150 steps of 32 scenes: slot 0.83, colour 0.93
    assert acc["slot"] >= 0.65 and acc["colour"] >= 0.85, acc
    assert info["mean_accuracy"] >= 0.7, acc
    # every token's features are pulled onto its own object's code and nothing else (1.0: no closer
    # than all-zero features); measured after 150 steps: 0.43
    assert 0 <= info["code_error"] < 0.6, info


def test_every_token_is_labelled_with_the_object_covering_it(world: Path):
    from impvlm.data.synthetic import Obj, Renderer, Scene, read_world
    from impvlm.train.tower import TokenLabels

    w = read_world(world / "world.json")
    labels = TokenLabels(w, Renderer(w), grid=4)
    scene = Scene(objects=(Obj(w.colours[1], w.shapes[0], "left"), Obj(w.colours[2], w.shapes[1], "top")))
    got = labels(scene).reshape(4, 4, 4)  # rows, columns, heads
    left, top = w.positions.index("left") + 1, w.positions.index("top") + 1
    # the left object fills the middle rows of the first column, the top one the middle of the first row
    assert got[1, 0, 0] == got[2, 0, 0] == left and tuple(got[1, 0, 1:3]) == (2, 1)
    assert got[0, 1, 0] == got[0, 2, 0] == top and tuple(got[0, 1, 1:3]) == (3, 2)
    assert got[3, 3, 0] == 0 and got[3, 3, 1:].sum() == 0  # an empty corner is background
    sign = labels(Scene(word=w.words[0], word_colour=w.colours[0]))
    assert (sign[:, 0] == len(w.positions) + 1).all() and (sign[:, 3] == 1).all()


def test_tower_folder_loads_as_the_models_tower(tower, world: Path):
    out, _ = tower
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "siglip_vision_model"
    saved = load_file(out / "model.safetensors")
    model = build_from_parts(build_config("imp-tiny"), vision_tower=out)
    own = model.state_dict()
    tower_keys = [k for k in own if k.startswith("vision_tower.")]
    assert tower_keys and all(own[k].equal(saved[k.removeprefix("vision_tower.model.")]) for k in tower_keys)


def test_finished_tower_is_not_retrained(tower, world: Path):
    out, info = tower
    before = (out / "model.safetensors").stat().st_mtime_ns
    again = pretrain_tower(world, out, TowerTraining(steps=1), progress=False)
    assert again == info and (out / "model.safetensors").stat().st_mtime_ns == before


def test_warmup_freezes_the_pretrained_tower(tower, world: Path, tmp_path: Path):
    out, _ = tower
    fast = {"data.root": str(world), "train.max_steps": 2, "train.num_threads": 1, "train.progress": False}
    stage = run_training("tiny-warmup", tmp_path, fast)
    trained = load_file(stage / "model.safetensors")
    saved = load_file(out / "model.safetensors")
    assert all(trained["vision_tower.model." + k].equal(v) for k, v in saved.items())
    meta = json.loads((stage / "stage.json").read_text())
    assert meta["trainable"]["vision_tower"]["trainable"] == 0


def test_missing_tower_and_bad_world_are_clear_errors(world: Path, tmp_path: Path):
    root = tmp_path / "no-tower"
    root.mkdir()
    for name in ("instruct.json", "pretrain.json", "world.json"):
        (root / name).write_bytes((world / name).read_bytes())
    (root / "tokenizer").symlink_to(world / "tokenizer")
    with pytest.raises(ConfigError, match="model.vision_tower .*no-tower/tower not found.*imp train-tower"):
        run_training("tiny-warmup", tmp_path / "run", {"data.root": str(root), "train.max_steps": 1})
    with pytest.raises(ConfigError, match="cannot read a world config from .*world.json"):
        pretrain_tower(tmp_path, tmp_path / "t", progress=False)
    with pytest.raises(ConfigError, match="steps"):
        TowerTraining(steps=0)
    (tmp_path / "half").mkdir()
    with pytest.raises(ConfigError, match="holds no finished tower"):
        pretrain_tower(world, tmp_path / "half", progress=False)


def test_cli_train_tower(world: Path, tmp_path: Path, capsys):
    out = tmp_path / "cli-tower"
    code = main(["train-tower", "--data", str(world), "--out", str(out), "--steps", "2", "--batch-size", "4"])
    assert code == 0 and (out / TOWER_INFO).is_file()
    assert "held-out mean" in capsys.readouterr().out
    assert main(["train-tower", "--data", str(tmp_path / "nowhere")]) != 0
    assert "cannot read a world config" in capsys.readouterr().err


def test_building_the_cli_parser_does_not_import_torch():
    """`imp --help` and every command's options stay fast: no command imports torch to build its parser."""
    code = "import sys; from impvlm.cli import build_parser; build_parser(); print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False", done.stderr
