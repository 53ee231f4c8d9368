"""Training end to end on the synthetic world with the tiny preset: the chain, resume, merge equality,
upstream stage outputs, the custom stage and the CLI (real Trainer, real files, few steps)."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import pytest
import torch
from transformers import TrainerCallback

from impvlm.checkpoint import load_model
from impvlm.cli import main
from impvlm.data.synthetic import WorldConfig, generate_dataset
from impvlm.errors import CheckpointError, ConfigError, DataError
from impvlm.tokenizer import build_corpus, train_tokenizer
from impvlm.train import exact_accuracy, merge_checkpoint, run_training
from impvlm.train.loss_log import read_loss_log
from impvlm.train.recipes import load_recipe
from impvlm.train.tower import TowerTraining, pretrain_tower
from impvlm.train.trainer import COMMIT_MARKER
from impvlm.train.weights import load_start_model

FAST = {
    "train.num_threads": 1,
    "train.logging_steps": 1,
    "train.progress": False,
    "train.warmup_ratio": 0.0,
}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("world")
    generate_dataset(root, 48, 6, WorldConfig(seed=5), progress=False)
    train_tokenizer(build_corpus(root), 1024, root / "tokenizer")
    pretrain_tower(root, root / "tower", TowerTraining(steps=2, batch_size=4, eval_scenes=4), progress=False)
    return root


@pytest.fixture(scope="module")
def chain(world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tiny-warmup -> tiny-pretrain -> tiny-lora, a few steps each, in one run folder."""
    out = tmp_path_factory.mktemp("run")
    common = {**FAST, "data.root": str(world), "train.max_steps": 3}
    run_training("tiny-warmup", out, common)
    run_training("tiny-pretrain", out, common)
    run_training("tiny-lora", out, {**common, "train.lr": 2e-2, "train.projector_lr": 1e-2})
    return out


def ids_and_pixels(model) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    vocab = model.config.vocab_size
    ids = torch.randint(3, vocab, (2, 12), generator=g)
    ids[:, 3] = model.config.image_token_index
    px = torch.randn(2, 3, model.config.image_size, model.config.image_size, generator=g)
    return {"input_ids": ids, "pixel_values": px}


def logits(model, inputs) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(**inputs).logits


def test_chain_outputs_and_metadata(chain: Path):
    warmup, pretrain, lora = (chain / n for n in ("tiny-warmup", "tiny-pretrain", "tiny-lora"))
    for stage_dir in (warmup, pretrain, lora):
        info = json.loads((stage_dir / "stage.json").read_text())
        assert (
            info["steps"] == 3
            and (stage_dir / "recipe.yaml").is_file()
            and (stage_dir / "run.json").is_file()
        )
        assert [r["step"] for r in read_loss_log(stage_dir / "loss.jsonl")] == [1, 2, 3]
        assert not (chain / f"{stage_dir.name}.work").exists()
    assert load_model(warmup).config.vocab_size == len(
        json.loads((warmup / "tokenizer.json").read_text())["model"]["vocab"]
    )
    # the random LM started at the recipe's init_std (3 small steps later it is still there)
    fc1 = load_model(warmup).model.layers[0].mlp.fc1.weight
    assert abs(fc1.std().item() - load_recipe("tiny-warmup").model.init_std) < 0.005
    pre = json.loads((pretrain / "stage.json").read_text())
    assert pre["template"] == "plain" and pre["base_relative"] == "../tiny-warmup"
    assert (
        pre["trainable"]["language_model"]["trainable"] == pre["trainable"]["vision_tower"]["trainable"] == 0
    )
    lo = json.loads((lora / "stage.json").read_text())
    assert lo["format"] == "lora" and lo["trainable"]["language_model"]["mode"] == "lora r=64"
    assert lo["data"]["mismatch"]["count"] == 0
    assert (lora / "adapter_config.json").is_file() and (lora / "adapter_model.safetensors").is_file()
    # stage 1 moved only the projector
    a, b = load_model(warmup).state_dict(), load_model(pretrain).state_dict()
    changed = {k.split(".")[0] for k in a if not torch.equal(a[k], b[k])}
    assert changed == {"mm_projector"}


def test_merged_model_equals_base_plus_lora(chain: Path, tmp_path: Path):
    from peft import PeftModel

    merged_dir = merge_checkpoint(chain / "tiny-lora", tmp_path / "merged")
    merged = load_model(merged_dir)
    base = load_model(chain / "tiny-pretrain")
    inputs = ids_and_pixels(base)
    base_logits = logits(base, inputs)
    unmerged = PeftModel.from_pretrained(load_model(chain / "tiny-pretrain"), chain / "tiny-lora")
    torch.testing.assert_close(logits(merged, inputs), logits(unmerged, inputs), atol=2e-4, rtol=1e-4)
    assert (logits(merged, inputs) - base_logits).abs().max() > 1e-2  # the LoRA really changed the model
    assert (merged_dir / "tokenizer.json").is_file() and json.loads((merged_dir / "merge.json").read_text())[
        "sources"
    ]
    result = exact_accuracy(merged_dir, _eval_json(chain), limit=5)
    assert result["n"] == 5 and 0.0 <= result["overall"] <= 1.0 and set(result["per_kind"]) <= {
        "colour", "shape", "position", "count", "exists", "ocr",
    }  # fmt: skip


def _eval_json(chain: Path) -> Path:
    recipe = (chain / "tiny-lora" / "recipe.yaml").read_text()
    root = next(
        line.split(":", 1)[1].strip() for line in recipe.splitlines() if line.strip().startswith("root:")
    )
    return Path(root) / "eval.json"


class CrashAt(TrainerCallback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise KeyboardInterrupt("simulated kill")


def test_resume_after_a_crash_repeats_the_uninterrupted_losses(chain: Path, tmp_path: Path):
    overrides = {
        **FAST,
        "data.root": str(_eval_json(chain).parent),
        "model.after": None,
        "model.base": str(chain / "tiny-pretrain"),
        "lora.dropout": 0.1,  # the RNG state must be restored too
        "train.max_steps": 6,
        "train.save_steps": 2,
        "train.per_device_batch_size": 4,
        "train.global_batch_size": 8,  # 2 accumulation steps
    }
    straight = run_training("tiny-lora", tmp_path / "a", overrides)
    expected = [r["loss"] for r in read_loss_log(straight / "loss.jsonl")]
    assert len(expected) == 6
    with pytest.raises(KeyboardInterrupt):
        run_training("tiny-lora", tmp_path / "b", overrides, callbacks=[CrashAt(5)])
    work = tmp_path / "b" / "tiny-lora.work" / "checkpoints"
    assert (work / "checkpoint-4" / COMMIT_MARKER).is_file()
    half_written = work / "checkpoint-6"
    half_written.mkdir()  # a kill during a save leaves a folder without the commit marker
    with (work.parent / "loss.jsonl").open("a") as log:
        log.write('{"step": 5, "loss": 1.2')  # and a kill while logging, a torn last line
    resumed = run_training("tiny-lora", tmp_path / "b", overrides, resume=True)
    assert not half_written.exists()
    got = [r["loss"] for r in read_loss_log(resumed / "loss.jsonl")]
    assert [r["step"] for r in read_loss_log(resumed / "loss.jsonl")] == [1, 2, 3, 4, 5, 6]
    assert got == pytest.approx(expected, rel=1e-6, abs=1e-7)
    assert json.loads((resumed / "stage.json").read_text())["resumed_from"].endswith("checkpoint-4")
    # the whole run's mean loss, as the uninterrupted run reports it (not the resumed part's)
    train_loss = [json.loads((d / "stage.json").read_text())["train_loss"] for d in (straight, resumed)]
    assert train_loss[1] == pytest.approx(train_loss[0], rel=1e-6) == sum(expected) / len(expected)
    a, b = load_start_model(straight)[0].state_dict(), load_start_model(resumed)[0].state_dict()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-6, rtol=1e-5)
    # a finished stage is not trained again
    assert run_training("tiny-lora", tmp_path / "b", overrides, resume=True) == resumed


def test_saved_work_is_continued_discarded_or_refused_never_deleted(chain: Path, tmp_path: Path, capsys):
    overrides = {
        **FAST,
        "data.root": str(_eval_json(chain).parent),
        "model.after": None,
        "model.base": str(chain / "tiny-pretrain"),
        "train.max_steps": 3,
        "train.save_steps": 2,
    }
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        run_training("tiny-lora", out, overrides, callbacks=[CrashAt(3)])
    checkpoint = out / "tiny-lora.work" / "checkpoints" / "checkpoint-2"
    assert (checkpoint / COMMIT_MARKER).is_file()
    # without --resume the committed checkpoint was deleted silently: now refused, naming both options
    argv = [
        "train",
        "--recipe",
        "tiny-lora",
        "--out",
        str(out),
        *(f"{k}={json.dumps(v)}" for k, v in overrides.items()),
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "checkpoint-2" in err and "--resume" in err and "--overwrite" in err and "Traceback" not in err
    assert (checkpoint / COMMIT_MARKER).is_file()
    # a damaged line in the middle of loss.jsonl is refused by name, and the file is left as it was
    log = out / "tiny-lora.work" / "loss.jsonl"
    good = log.read_text()
    log.write_text("not json\n" + good)
    with pytest.raises(DataError, match=r"loss.jsonl: line 1 is not a valid record"):
        run_training("tiny-lora", out, overrides, resume=True)
    assert log.read_text() == "not json\n" + good
    log.write_text(good)
    # a random-state file that is not a plain tensor file: one line naming it, not an unpickling traceback
    rng = checkpoint / "rng_state.pth"
    saved = rng.read_bytes()
    rng.write_bytes(pickle.dumps(Path("not/a/tensor")))
    with pytest.raises(CheckpointError, match=r"checkpoint-2: its random-state file \(rng_state\*.pth\)"):
        run_training("tiny-lora", out, overrides, resume=True)
    rng.write_bytes(saved)
    finished = run_training("tiny-lora", out, overrides, resume=True)
    assert json.loads((finished / "stage.json").read_text())["steps"] == 3
    # a finished stage is kept by --resume, refused without it, trained again with --overwrite
    with pytest.raises(ConfigError, match="already finished.*--resume keeps it, --overwrite trains it again"):
        run_training("tiny-lora", out, overrides)
    again = run_training("tiny-lora", out, overrides, overwrite=True)
    assert json.loads((again / "stage.json").read_text())["resumed_from"] is None


def test_out_under_a_regular_file_is_one_line(world: Path, tmp_path: Path, capsys):
    (tmp_path / "file").write_text("not a folder")
    for out in (tmp_path / "file", tmp_path / "file" / "run"):
        assert main(["train", "--recipe", "tiny-warmup", "--out", str(out), f"data.root={world}"]) == 2
        err = capsys.readouterr().err
        assert f"--out {out}:" in err and len(err.strip().splitlines()) == 1
    assert (tmp_path / "file").read_text() == "not a folder"


def test_custom_stage_from_merged_or_unmerged_checkpoint(chain: Path, tmp_path: Path):
    merged = merge_checkpoint(chain / "tiny-lora", tmp_path / "merged")
    common = {**FAST, "data.root": str(_eval_json(chain).parent), "model.after": None, "train.max_steps": 2}
    for base in (merged, chain / "tiny-lora"):  # an unmerged LoRA output is merged in memory first
        out = run_training(
            "tiny-lora", tmp_path / base.name, {**common, "stage": "custom", "model.base": str(base)}
        )
        info = json.loads((out / "stage.json").read_text())
        assert info["stage"] == "custom" and info["base"] == str(base.resolve())
    with pytest.raises(ConfigError, match="starts from a merged checkpoint"):
        run_training("tiny-lora", tmp_path / "x", {**common, "stage": "custom"})


def test_bad_image_is_named_or_skipped_and_counted(chain: Path, tmp_path: Path):
    root = _eval_json(chain).parent
    records = json.loads((root / "instruct.json").read_text())[:7]
    records.insert(2, {**records[0], "id": "broken-one", "image": "images/nope.png"})
    data = tmp_path / "instruct.json"
    data.write_text(json.dumps(records))
    overrides = {
        **FAST,
        "data.root": None,
        "data.path": str(data),
        "data.image_root": str(root),
        "model.after": None,
        "model.base": str(chain / "tiny-pretrain"),
        "train.max_steps": 2,
        "train.per_device_batch_size": 4,
        "train.global_batch_size": 4,
        "data.group_by_modality_length": False,
    }
    with pytest.raises(DataError, match=r"id 'broken-one'.*nope.png"):
        run_training("tiny-lora", tmp_path / "raise", overrides)
    out = run_training("tiny-lora", tmp_path / "skip", {**overrides, "data.on_error": "skip"})
    skipped = json.loads((out / "stage.json").read_text())["data"]["image_errors_skipped"]
    assert skipped["count"] == 1 and "broken-one" in skipped["ids"][0]


def test_stage_after_an_unfinished_one_is_refused(world: Path, tmp_path: Path):
    with pytest.raises(ConfigError, match="tiny-pretrain, which has not finished"):
        run_training("tiny-lora", tmp_path, {**FAST, "data.root": str(world)})


def test_cli_merge_and_errors(chain: Path, tmp_path: Path, capsys):
    assert main(["merge", str(chain / "tiny-lora"), "--out", str(tmp_path / "m")]) == 0
    assert "merged checkpoint" in capsys.readouterr().out and (tmp_path / "m" / "config.json").is_file()
    assert main(["merge", str(tmp_path / "missing"), "--out", str(tmp_path / "n")]) == 2
    assert main(["train", "--recipe", "tiny-lora", "train.nope=1"]) == 2
    err = capsys.readouterr().err
    assert "unknown recipe key 'train.nope'" in err and "Traceback" not in err


# ---------------------------------------------------------------------------- upstream stage outputs


def test_upstream_stage_outputs_merge(chain: Path, tmp_path: Path):
    """Upstream Imp layouts written from a tiny model: Phi-2 and SigLIP folders, a stage-1 folder with
    mm_projector.bin and a stage-2 LoRA folder with adapter_model.bin + non_lora_trainables.bin."""
    from peft import LoraConfig, get_peft_model
    from transformers import PhiConfig, PhiForCausalLM, SiglipVisionConfig, SiglipVisionModel

    from impvlm.train.stages import lora_target_pattern

    source = load_model(chain / "tiny-warmup")
    cfg = source.config
    # base folders as users download them
    phi = PhiForCausalLM(PhiConfig(**{k: getattr(cfg, k) for k in (
        "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
        "partial_rotary_factor", "max_position_embeddings", "layer_norm_eps", "hidden_act", "rope_theta",
    )}))  # fmt: skip
    phi.load_state_dict(
        {k: v for k, v in source.state_dict().items() if k.startswith(("model.", "lm_head."))}
    )
    phi.save_pretrained(tmp_path / "phi-2")
    vcfg = SiglipVisionConfig(**{**cfg.vision_config.to_dict(), "num_hidden_layers": 4})
    siglip = SiglipVisionModel(vcfg)  # one layer more than Imp keeps, plus the pooling head
    siglip.save_pretrained(tmp_path / "siglip")
    upstream_config = {
        "model_type": "imp",
        **{k: getattr(cfg, k) for k in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                                        "num_attention_heads", "partial_rotary_factor", "max_position_embeddings",
                                        "layer_norm_eps", "rope_theta")},
        "hidden_act": "gelu_new",
        "mm_projector_type": "mlp2x_gelu",
        "mm_hidden_size": cfg.vision_hidden_size,
        "mm_vision_select_layer": -2,
        "vision_tower_config": {**vcfg.to_dict(), "model_type": "siglip_vision_model"},
        "image_token_index": cfg.image_token_index,
        "eos_token_id": cfg.eos_token_id,
        "pad_token_id": cfg.pad_token_id,
    }  # fmt: skip
    # stage 1: mm_projector.bin with upstream names
    stage1 = tmp_path / "imp-stage1"
    stage1.mkdir()
    (stage1 / "config.json").write_text(json.dumps(upstream_config))
    torch.manual_seed(1)
    projector = {
        f"model.mm_projector.{k}": torch.randn_like(v) * 0.05
        for k, v in source.mm_projector.state_dict().items()
    }
    torch.save(projector, stage1 / "mm_projector.bin")
    # stage 2: a peft LoRA with non-zero B, saved the upstream way
    expected_model = load_model(chain / "tiny-warmup")
    expected_model.load_state_dict({k.removeprefix("model."): v for k, v in projector.items()}, strict=False)
    siglip_state = {f"vision_tower.model.{k}": v for k, v in siglip.state_dict().items()}
    expected_model.load_state_dict(
        {k: v for k, v in siglip_state.items() if k in expected_model.state_dict()}, strict=False
    )
    peft_model = get_peft_model(
        expected_model,
        LoraConfig(
            r=4,
            lora_alpha=8,
            target_modules=lora_target_pattern(expected_model),
            modules_to_save=["mm_projector"],
        ),
    )
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name or "modules_to_save" in name:
                p.add_(torch.randn_like(p) * 0.05)
    stage2 = tmp_path / "imp-stage2"
    stage2.mkdir()
    (stage2 / "config.json").write_text(json.dumps(upstream_config))
    lora = {}
    non_lora = {}
    for name, p in peft_model.named_parameters():
        if "lora_" in name:
            lora[name.replace(".default", "")] = p.detach().clone()
        elif "modules_to_save" in name:
            key = name.replace("mm_projector.modules_to_save.default.", "model.mm_projector.")
            non_lora[key] = p.detach().clone()
    torch.save(lora, stage2 / "adapter_model.bin")
    torch.save(non_lora, stage2 / "non_lora_trainables.bin")
    (stage2 / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 4, "lora_alpha": 8}))

    with pytest.raises(CheckpointError, match="pass the base language model and vision tower"):
        merge_checkpoint([stage1, stage2], tmp_path / "nope")
    merged_dir = merge_checkpoint(
        [stage1, stage2],
        tmp_path / "merged",
        language_model=tmp_path / "phi-2",
        vision_tower=tmp_path / "siglip",
        tokenizer=chain / "tiny-warmup",
    )
    merged = load_model(merged_dir)
    assert len(merged.vision_tower.model.vision_model.encoder.layers) == 3
    inputs = ids_and_pixels(merged)
    torch.testing.assert_close(logits(merged, inputs), logits(peft_model, inputs), atol=2e-4, rtol=1e-4)
    # without the LoRA stage the projector comes from stage 1
    only1 = load_model(merge_checkpoint(stage1, tmp_path / "s1", language_model=tmp_path / "phi-2",
                                        vision_tower=tmp_path / "siglip", tokenizer=chain / "tiny-warmup"))  # fmt: skip
    torch.testing.assert_close(only1.mm_projector[0].weight, projector["model.mm_projector.0.weight"])
    shutil.rmtree(tmp_path / "siglip")
    with pytest.raises(CheckpointError, match="not found"):
        merge_checkpoint(
            [stage1], tmp_path / "s2", language_model=tmp_path / "phi-2", vision_tower=tmp_path / "siglip"
        )


def test_losses_are_reported_as_lines_or_bar_postfix_not_dicts(
    world: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
):
    """Without a bar every logged step is one log line; with a bar the loss rides in its postfix."""
    caplog.set_level("INFO", logger="impvlm.train.trainer")
    run_training("tiny-warmup", tmp_path / "quiet", {**FAST, "data.root": str(world), "train.max_steps": 2})
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("step ")]
    assert [line.split(":")[0] for line in lines] == ["step 1/2", "step 2/2"]
    assert all(" loss " in line and " lr " in line for line in lines)
    shown = {**FAST, "data.root": str(world), "train.max_steps": 2, "train.progress": True}
    run_training("tiny-warmup", tmp_path / "bar", shown)
    out = capsys.readouterr()
    assert "{'loss'" not in out.out + out.err and "'train_runtime'" not in out.out + out.err
    assert "loss=" in out.err  # tqdm writes the bar, postfix included, to stderr
