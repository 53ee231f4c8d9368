"""Stages own what is frozen, what is LoRA-adapted, and the optimizer groups (tiny random models)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from impvlm import ImpForCausalLM, build_config
from impvlm.errors import ConfigError
from impvlm.train.stages import STAGE_KINDS, LoraSpec, Stage, get_stage_kind, lora_target_pattern, unwrap


def tiny(preset: str = "imp-tiny") -> ImpForCausalLM:
    torch.manual_seed(0)
    return ImpForCausalLM(build_config(preset))


def stage(kind: str, vision: str | None = None, lr: float = 1e-3, projector_lr: float = 1e-4) -> Stage:
    k = get_stage_kind(kind)
    return Stage(
        kind=k,
        vision=vision or k.vision,  # type: ignore[arg-type]
        projector=k.projector,
        language_model=k.language_model,
        template=k.template or "phi2",
        lr=lr,
        projector_lr=projector_lr,
        weight_decay=0.1,
        lora=LoraSpec(r=4, alpha=8, dropout=0.0) if k.language_model == "lora" else None,
        data_paths=("x.json",),
        image_root=".",
    )


def trainable(model: nn.Module) -> dict[str, int]:
    return {name: row["trainable"] for name, row in stage("warmup").report(model).items()}


def lm_linear_names(model: nn.Module) -> list[str]:
    core = unwrap(model)
    names = [f"model.{n}" for n, m in core.model.named_modules() if isinstance(m, nn.Linear)]
    return [*names, "lm_head"]


def test_pretrain_trains_the_projector_only():
    model = stage("pretrain").prepare(tiny())
    counts = trainable(model)
    n_projector = sum(p.numel() for p in model.mm_projector.parameters())
    assert counts == {"vision_tower": 0, "mm_projector": n_projector, "language_model": 0}
    assert stage("pretrain").template == "plain"


def test_warmup_trains_everything():
    model = stage("warmup").prepare(tiny())
    assert all(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("kind", ["lora", "custom"])
def test_lora_adapts_every_lm_linear_incl_lm_head_and_trains_projector(kind):
    base = tiny()
    expected = lm_linear_names(base)
    model = stage(kind).prepare(base)
    from peft.tuners.lora import LoraLayer

    adapted = sorted(
        n.removeprefix("base_model.model.") for n, m in model.named_modules() if isinstance(m, LoraLayer)
    )
    assert adapted == sorted(expected) and "lm_head" in adapted
    assert len(adapted) == 6 * base.config.num_hidden_layers + 1  # q k v dense fc1 fc2 per layer + lm_head
    counts = stage(kind).report(model)
    assert counts["vision_tower"]["trainable"] == 0
    assert (
        counts["mm_projector"]["trainable"]
        == sum(p.numel() for p in unwrap(model).mm_projector.parameters()) // 2
    )
    lora_params = sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)
    assert counts["language_model"]["trainable"] == lora_params > 0
    assert counts["language_model"]["mode"] == "lora r=4"


def test_lora_pattern_names_no_tower_or_projector_linear():
    pattern = lora_target_pattern(tiny())
    import re

    model = tiny()
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            assert bool(re.fullmatch(pattern, name)) == (name.startswith("model.") or name == "lm_head"), name


def test_full_stage_and_llava_phi_vision_option():
    counts = trainable(stage("full").prepare(tiny()))
    assert counts["vision_tower"] == 0 and counts["mm_projector"] > 0 and counts["language_model"] > 0
    counts = trainable(stage("full", vision="full").prepare(tiny("llava-phi-tiny")))
    assert all(v > 0 for v in counts.values())


def test_four_optimizer_groups_with_projector_lr():
    st = stage("warmup", lr=1e-3, projector_lr=2e-5)
    model = st.prepare(tiny())
    groups = {g["name"]: g for g in st.param_groups(model)}
    assert set(groups) == {"projector/decay", "projector/no_decay", "rest/decay", "rest/no_decay"}
    assert groups["projector/decay"]["lr"] == groups["projector/no_decay"]["lr"] == 2e-5
    assert groups["rest/decay"]["lr"] == 1e-3
    assert groups["rest/decay"]["weight_decay"] == 0.1 and groups["rest/no_decay"]["weight_decay"] == 0.0
    ids = {id(p) for g in groups.values() for p in g["params"]}
    assert ids == {id(p) for p in model.parameters()}  # every parameter exactly once
    norm = model.model.final_layernorm.weight
    assert any(p is norm for p in groups["rest/no_decay"]["params"])
    assert any(p is model.mm_projector[0].weight for p in groups["projector/decay"]["params"])


def test_vision_lr_gives_the_tower_its_own_groups():
    st = dataclasses.replace(stage("warmup", lr=1e-3, projector_lr=2e-5), vision_lr=3e-4)
    model = st.prepare(tiny())
    groups = {g["name"]: g for g in st.param_groups(model)}
    assert groups["vision/decay"]["lr"] == groups["vision/no_decay"]["lr"] == 3e-4
    assert {id(p) for p in groups["vision/decay"]["params"] + groups["vision/no_decay"]["params"]} == {
        id(p) for p in model.vision_tower.parameters()
    }
    assert len(groups) == 6


def test_lora_groups_hold_only_trainable_params():
    st = stage("lora")
    model = st.prepare(tiny())
    groups = st.param_groups(model)
    assert {g["name"] for g in groups} == {"projector/decay", "projector/no_decay", "rest/decay"}
    assert all(p.requires_grad for g in groups for p in g["params"])


def test_invalid_stages_are_config_errors():
    k = get_stage_kind("pretrain")
    with pytest.raises(ConfigError, match="trains nothing"):
        Stage(k, "frozen", "frozen", "frozen", "plain", 1e-3, 1e-3, 0.0, None, ("x",), ".")
    with pytest.raises(ConfigError, match="no LoRA settings"):
        Stage(get_stage_kind("lora"), "frozen", "full", "lora", "phi2", 1e-3, 1e-3, 0.0, None, ("x",), ".")
    with pytest.raises(ConfigError, match="unknown stage"):
        get_stage_kind("stage3")
    with pytest.raises(ConfigError, match="LoRA settings"):
        LoraSpec(r=0)
    assert set(STAGE_KINDS) == {"warmup", "pretrain", "lora", "full", "custom"}
