"""Recipes as data: every packaged recipe loads through `imp train`, overrides, batch arithmetic, and the
configuration GPU-only options produce (precision, attention, DeepSpeed) on a described device."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import pytest

from impvlm.cli import main
from impvlm.errors import ConfigError
from impvlm.train.recipes import load_recipe, recipe_names, split_overrides
from impvlm.train.trainer import (
    Device,
    deepspeed_config,
    resolve_attention,
    resolve_precision,
    training_arguments,
)

A100 = Device(cuda=True, bf16=True, flash_attn=True, world_size=8)
V100 = Device(cuda=True, bf16=False, flash_attn=False, world_size=2)
CPU = Device(cuda=False, bf16=False, flash_attn=False, world_size=1)


def test_packaged_recipes_include_upstream_and_tiny_chains():
    names = set(recipe_names())
    assert {"imp-v1-3b-pretrain", "imp-v1-3b-lora", "imp-v1-3b-full", "imp-v1-3b-custom"} <= names
    assert {"llava-phi-3b-pretrain", "llava-phi-3b-full"} <= names
    assert {"tiny-warmup", "tiny-pretrain", "tiny-lora"} <= names


@pytest.mark.parametrize("name", recipe_names())
def test_every_recipe_loads_through_the_cli(name, capsys):
    assert main(["train", "--recipe", name, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"# {name}:" in out
    body = json.loads(out.split("\n", 2)[2])
    assert body["name"] == name
    recipe = load_recipe(name)
    # the global batch is kept on 1, 2 and 8 devices; accumulation is derived
    for world in (1, 2, 8):
        t = recipe.train
        if t.global_batch_size % (t.per_device_batch_size * world) == 0:
            assert t.accumulation(world) * t.per_device_batch_size * world == t.global_batch_size


def test_upstream_recipe_numbers():
    s1, s2 = load_recipe("imp-v1-3b-pretrain"), load_recipe("imp-v1-3b-lora")
    assert (s1.stage, s1.train.global_batch_size, s1.train.lr, s1.train.deepspeed) == (
        "pretrain",
        256,
        1e-3,
        "zero2",
    )
    assert (s2.stage, s2.train.global_batch_size, s2.train.lr, s2.train.projector_lr) == (
        "lora",
        128,
        2e-4,
        2e-5,
    )
    assert (s2.lora.r, s2.lora.alpha, s2.lora.dropout) == (128, 256, 0.05)
    assert s2.data.group_by_modality_length and s2.train.deepspeed == "zero3" and s2.model.after == s1.name
    assert s2.train.accumulation(8) == 4 and s2.train.accumulation(1) == 32  # 4 x 4 x 8 on 8 GPUs
    phi = load_recipe("llava-phi-3b-full")
    assert phi.model.train_vision and phi.train.precision == "bf16" and phi.data.max_length == 2048


def test_overrides_are_typed_and_checked():
    r = load_recipe("tiny-lora", ["train.lr=3e-4", "data.limit=10", "train.deepspeed=null", "lora.r=8"])
    assert r.train.lr == 3e-4 and r.data.limit == 10 and r.lora.r == 8
    r = load_recipe("tiny-lora", {"data.path": ["a.json", "b.json"]})
    assert r.data.paths == ["a.json", "b.json"]
    with pytest.raises(ConfigError, match="data.path must be"):
        load_recipe("tiny-lora", {"data.path": ["a.json", 3]})
    r = load_recipe("tiny-warmup", {"data.root": "/x/world"})
    assert r.model.tokenizer == "/x/world/tokenizer"  # ${data.root} interpolation
    with pytest.raises(ConfigError, match="unknown recipe key 'train.lrr'"):
        load_recipe("tiny-lora", ["train.lrr=1"])
    with pytest.raises(ConfigError, match="not key=value"):
        load_recipe("tiny-lora", ["train.lr"])
    with pytest.raises(ConfigError, match="unknown recipe 'nope'"):
        load_recipe("nope")
    with pytest.raises(ConfigError, match="not a multiple"):
        load_recipe("tiny-lora", ["train.global_batch_size=20", "train.per_device_batch_size=8"])
    with pytest.raises(ConfigError, match="deepspeed must be"):
        load_recipe("tiny-lora", ["train.deepspeed=zero4"])
    with pytest.raises(ConfigError, match="starts from a merged checkpoint"):
        load_recipe("imp-v1-3b-custom", ["model.base=null"])
    assert load_recipe("tiny-warmup", ["model.init_std=0.05"]).model.init_std == 0.05
    with pytest.raises(ConfigError, match="init_std must be in"):
        load_recipe("tiny-lora", ["model.init_std=0.05"])  # continues from a stage: nothing starts random
    with pytest.raises(ConfigError, match="init_std must be in"):
        load_recipe("tiny-warmup", ["model.init_std=0"])
    split = split_overrides(["tiny-warmup", "tiny-lora"], ["train.seed=1", "tiny-lora:train.lr=1e-4"])
    assert split == {"tiny-warmup": ["train.seed=1"], "tiny-lora": ["train.seed=1", "train.lr=1e-4"]}


def test_recipe_file_outside_the_package(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("stage: lora\nmodel: {base: ckpt}\ndata: {path: d.json}\ntrain: {lr: 1e-4}\n")
    r = load_recipe(path)
    assert r.name == "mine" and r.train.lr == 1e-4 and r.stage == "lora"
    path.write_text("stage: lora\nmodel: {base: ckpt}\ndata: {path: d.json}\nbogus: 1\n")
    with pytest.raises(ConfigError, match="unknown keys"):
        load_recipe(path)


def test_precision_and_attention_by_device():
    assert resolve_precision("auto", A100) == "bf16"
    assert resolve_precision("auto", V100) == "fp16"
    assert resolve_precision("auto", CPU) == "fp32"
    assert resolve_precision("bf16", CPU) == "bf16"
    with pytest.raises(ConfigError, match="fp16 training needs a CUDA GPU"):
        resolve_precision("fp16", CPU)
    with pytest.raises(ConfigError, match="no bf16"):
        resolve_precision("bf16", V100)
    assert resolve_attention("auto", A100, "bf16") == "flash_attention_2"
    assert resolve_attention("auto", A100, "fp32") == "sdpa"
    assert resolve_attention("auto", V100, "fp16") == "sdpa"
    assert resolve_attention("auto", CPU, "fp32") == "sdpa"
    with pytest.raises(ConfigError, match="flash-attn"):
        resolve_attention("flash_attention_2", CPU, "fp32")


def test_gpu_training_arguments_for_the_upstream_recipes(tmp_path):
    args = training_arguments(load_recipe("imp-v1-3b-lora"), tmp_path, A100)
    assert args["bf16"] and not args["fp16"]
    assert args["per_device_train_batch_size"] == 4 and args["gradient_accumulation_steps"] == 4
    assert args["gradient_checkpointing"] and args["gradient_checkpointing_kwargs"] == {
        "use_reentrant": False
    }
    assert args["lr_scheduler_type"] == "cosine" and args["warmup_ratio"] == 0.03
    assert Path(args["deepspeed"]).name == "zero3.json"
    args = training_arguments(load_recipe("imp-v1-3b-pretrain"), tmp_path, V100)
    assert args["fp16"] and args["gradient_accumulation_steps"] == 4  # 256 = 32 x 4 x 2
    assert Path(args["deepspeed"]).name == "zero2.json"
    args = training_arguments(load_recipe("tiny-lora"), tmp_path, CPU)
    assert args["use_cpu"] and not args["bf16"] and not args["fp16"] and args["deepspeed"] is None


@pytest.mark.parametrize(
    ("name", "stage", "offload"), [("zero2", 2, False), ("zero3", 3, False), ("zero3_offload", 3, True)]
)
def test_shipped_deepspeed_configs(name, stage, offload):
    path = Path(deepspeed_config(name))
    assert path == Path(str(resources.files("impvlm") / "deepspeed" / f"{name}.json"))
    cfg = json.loads(path.read_text())
    zero = cfg["zero_optimization"]
    assert zero["stage"] == stage and ("offload_optimizer" in zero) == offload
    assert cfg["bf16"]["enabled"] == cfg["fp16"]["enabled"] == "auto"
    assert cfg["gradient_accumulation_steps"] == cfg["train_micro_batch_size_per_gpu"] == "auto"
    if stage == 3:
        assert zero["stage3_gather_16bit_weights_on_model_save"] is True
    with pytest.raises(ConfigError, match="not found"):
        deepspeed_config("missing.json")


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.max_steps=0", "max_steps must be at least 1"),  # trained one step and said finished
        ("train.max_steps=-5", "max_steps must be at least 1"),  # trained a whole epoch
        ("train.num_threads=-2", "num_threads must be a positive number"),  # a torch traceback
        ("train.num_threads=0", "num_threads must be a positive number"),
        ("data.max_image_pixels=0", "max_image_pixels must be a positive number"),
    ],
)
def test_out_of_range_values_are_refused_up_front(override, message, capsys):
    with pytest.raises(ConfigError, match=message):
        load_recipe("tiny-lora", [override])
    assert main(["train", "--recipe", "tiny-lora", override, "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_max_image_pixels_is_a_recipe_key_and_a_train_option(capsys):
    assert load_recipe("tiny-lora").data.max_image_pixels == 64_000_000
    argv = [
        "train",
        "--recipe",
        "tiny-warmup",
        "--recipe",
        "tiny-lora",
        "--max-image-pixels",
        "1000",
        "--dry-run",
    ]
    assert main(argv) == 0
    assert capsys.readouterr().out.count('"max_image_pixels": 1000') == 2
    assert main(["train", "--recipe", "tiny-lora", "--resume", "--overwrite"]) == 2
    assert "give one" in capsys.readouterr().err
