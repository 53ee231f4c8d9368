"""Checkpoint round trips and the upstream Imp layouts (written here from a tiny model)."""

import json
import re

import pytest
import torch
from safetensors.torch import save_file
from transformers import AutoConfig, AutoModelForCausalLM

from impvlm import ImpForCausalLM, build_config
from impvlm.checkpoint import load_model, save_checkpoint
from impvlm.errors import CheckpointError

IMG = 2


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return ImpForCausalLM(build_config("imp-tiny")).eval()


def logits(model):
    ids = torch.tensor([[5, 6, IMG, 7]])
    px = torch.linspace(-1, 1, 3 * 64 * 64).reshape(1, 3, 64, 64)
    with torch.no_grad():
        return model(input_ids=ids, pixel_values=px).logits


def test_round_trip_is_bit_identical_and_sharded(tiny, tmp_path):
    out = save_checkpoint(tiny, None, tmp_path / "ckpt", max_shard_size="2MB")
    assert (out / "config.json").is_file()
    assert len(list(out.glob("model-*.safetensors"))) > 1 and (out / "model.safetensors.index.json").is_file()
    loaded = load_model(out)
    for (k1, v1), (k2, v2) in zip(tiny.state_dict().items(), loaded.state_dict().items()):
        assert k1 == k2 and torch.equal(v1, v2)
    assert torch.equal(logits(tiny), logits(loaded))


def test_auto_classes_load_without_remote_code(tiny, tmp_path):
    save_checkpoint(tiny, None, tmp_path / "ckpt")
    assert AutoConfig.from_pretrained(tmp_path / "ckpt").model_type == "impvlm"
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "ckpt").eval()
    assert isinstance(model, ImpForCausalLM)
    assert torch.equal(logits(model), logits(tiny))


def test_missing_shard_is_named(tiny, tmp_path):
    out = save_checkpoint(tiny, None, tmp_path / "ckpt", max_shard_size="2MB")
    victim = sorted(out.glob("model-*.safetensors"))[0]
    victim.unlink()
    with pytest.raises(CheckpointError, match=f"missing shard .*{victim.name}"):
        load_model(out)


def test_config_that_does_not_match_weights(tiny, tmp_path):
    out = save_checkpoint(tiny, None, tmp_path / "ckpt")
    cfg = json.loads((out / "config.json").read_text())
    cfg["intermediate_size"] = 512
    (out / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="do not match config.json"):
        load_model(out)


def test_not_a_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_model(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="config.json is missing"):
        load_model(tmp_path / "empty")


def upstream_config(model, layout):
    c = model.config
    vision = c.vision_config.to_dict()
    vision["num_hidden_layers"] = c.vision_config.num_hidden_layers + 1  # the released tower has one more
    raw = {
        "model_type": "imp",
        "architectures": ["ImpForCausalLM"],
        "mm_projector_type": "mlp2x_gelu",
        "mm_hidden_size": c.vision_config.hidden_size,
        "mm_vision_select_layer": -2,
        "mm_vision_tower": "google/siglip-so400m-patch14-384",
        "vision_tower_config": vision,
        "image_token_index": IMG,
        "eos_token_id": c.eos_token_id,
        "pad_token_id": c.pad_token_id,
        "vocab_size": c.vocab_size,
    }
    if layout == "native":
        raw.update(
            hidden_size=c.hidden_size,
            intermediate_size=c.intermediate_size,
            num_hidden_layers=c.num_hidden_layers,
            num_attention_heads=c.num_attention_heads,
            partial_rotary_factor=c.partial_rotary_factor,
            max_position_embeddings=c.max_position_embeddings,
            layer_norm_eps=c.layer_norm_eps,
        )
    else:
        raw.update(
            n_embd=c.hidden_size,
            n_inner=c.intermediate_size,
            n_layer=c.num_hidden_layers,
            n_head=c.num_attention_heads,
            rotary_dim=int(c.partial_rotary_factor * c.hidden_size // c.num_attention_heads),
            n_positions=c.max_position_embeddings,
            layer_norm_epsilon=c.layer_norm_eps,
        )
    return raw


def upstream_state(model, layout):
    """Rename impvlm keys into an upstream layout, adding the extra tower layer and post-LN."""
    state = {}
    vs = model.config.vision_config
    extra_layer = vs.num_hidden_layers
    for key, t in model.state_dict().items():
        if key.startswith("vision_tower.model."):
            rest = key[len("vision_tower.model.") :]
            prefix = "model." if layout == "native" else "transformer."
            state[prefix + "vision_tower.vision_tower." + rest] = t
            m = re.match(r"vision_model\.encoder\.layers\.0\.(.+)", rest)
            if m:  # a deleted-by-Imp last layer that the loader must drop
                state[
                    f"{prefix}vision_tower.vision_tower.vision_model.encoder.layers.{extra_layer}.{m.group(1)}"
                ] = torch.randn_like(t)
            continue
        if key.startswith("mm_projector."):
            prefix = "model." if layout == "native" else "transformer."
            state[prefix + key] = t
            continue
        if layout == "native":
            state[key] = t
            continue
        m = re.match(r"model\.layers\.(\d+)\.(.+)", key)
        if m:
            i, rest = m.groups()
            if rest.startswith("self_attn.q_proj"):
                kind = rest.rsplit(".", 1)[1]
                qkv = torch.cat(
                    [model.state_dict()[f"model.layers.{i}.self_attn.{p}_proj.{kind}"] for p in "qkv"]
                )
                state[f"transformer.h.{i}.mixer.Wqkv.{kind}"] = qkv
            elif rest.startswith(("self_attn.k_proj", "self_attn.v_proj")):
                pass
            else:
                rest = rest.replace("input_layernorm", "ln").replace("self_attn.dense", "mixer.out_proj")
                state[f"transformer.h.{i}.{rest}"] = t
        elif key.startswith("model.final_layernorm"):
            state["lm_head.ln." + key.rsplit(".", 1)[1]] = t
        elif key.startswith("lm_head"):
            state["lm_head.linear." + key.rsplit(".", 1)[1]] = t
        elif key == "model.embed_tokens.weight":
            state["transformer.embd.wte.weight"] = t
    post = "model." if layout == "native" else "transformer."
    state[f"{post}vision_tower.vision_tower.vision_model.post_layernorm.weight"] = torch.ones(vs.hidden_size)
    state[f"{post}vision_tower.vision_tower.vision_model.post_layernorm.bias"] = torch.zeros(vs.hidden_size)
    return state


@pytest.mark.parametrize("layout", ["native", "msft"])
@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
def test_upstream_layouts_load_without_running_their_code(tiny, tmp_path, layout, fmt):
    folder = tmp_path / f"imp-{layout}"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(upstream_config(tiny, layout)))
    # a modeling file that must never run
    (folder / "modeling_imp.py").write_text("raise SystemExit('upstream code was executed')\n")
    state = {k: v.contiguous() for k, v in upstream_state(tiny, layout).items()}
    if fmt == "safetensors":
        save_file(state, str(folder / "model.safetensors"))
    else:
        torch.save(state, folder / "pytorch_model.bin")
    loaded = load_model(folder)
    assert loaded.config.vision_config.num_hidden_layers == tiny.config.vision_config.num_hidden_layers
    torch.testing.assert_close(logits(loaded), logits(tiny))
