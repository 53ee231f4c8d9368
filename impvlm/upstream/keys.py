"""Upstream weight names -> this project's (``ImpForCausalLM.state_dict()``), one table per source.

- transformers-native Phi names (Imp v1.5, LLaVA-Phi, microsoft/phi-2 today) are this project's own;
- phi-msft names (imp-v1-3b, microsoft/phi-2 before 2024): ``transformer.embd.wte``,
  ``transformer.h.N.{ln,mixer.Wqkv,mixer.out_proj,mlp.fc1,mlp.fc2}``, ``lm_head.{ln,linear}``; the
  fused ``Wqkv`` rows are ``[Q; K; V]``;
- the tower: ``{model,transformer}.vision_tower.vision_tower.vision_model.*`` (Imp: a wrapper module
  around the transformers model) or ``model.vision_tower.vision_model.*`` (LLaVA-Phi's
  ``CLIPVisionTower`` holds the transformer directly); the projector ``{model,transformer}.mm_projector.*``.

Tower tensors of parts the model does not hold are dropped: the layers Imp deletes after the selected
one, SigLIP's pooling head and post-layernorm (Imp replaces them by identities).
"""

from __future__ import annotations

import re

import torch

from impvlm.config import ImpConfig

_TOWER = re.compile(r"(?:model|transformer)\.vision_tower\.(?:vision_tower\.)?(vision_model\..+)")
_PROJECTOR = re.compile(r"(?:model|transformer)\.mm_projector\.(.+)")
_MSFT_BLOCK = re.compile(r"transformer\.h\.(\d+)\.(.+)")
#: phi-msft block module -> transformers Phi module (the fused ``mixer.Wqkv`` is split separately).
_MSFT_BLOCK_NAMES = {
    "ln": "input_layernorm",
    "mixer.out_proj": "self_attn.dense",
    "mlp.fc1": "mlp.fc1",
    "mlp.fc2": "mlp.fc2",
}
_MSFT_TOP_NAMES = {
    "transformer.embd.wte.weight": "model.embed_tokens.weight",
    "lm_head.ln.weight": "model.final_layernorm.weight",
    "lm_head.ln.bias": "model.final_layernorm.bias",
    "lm_head.linear.weight": "lm_head.weight",
    "lm_head.linear.bias": "lm_head.bias",
}


def convert_key(key: str) -> str | None:
    """This project's name for an upstream tensor name; None for a tensor it never holds."""
    if m := _TOWER.fullmatch(key):
        return "vision_tower.model." + m.group(1)
    if m := _PROJECTOR.fullmatch(key):
        return "mm_projector." + m.group(1)
    if key in _MSFT_TOP_NAMES:
        return _MSFT_TOP_NAMES[key]
    if m := _MSFT_BLOCK.fullmatch(key):
        layer, rest = m.groups()
        module, _, kind = rest.rpartition(".")
        if module == "mixer.Wqkv":
            return f"model.layers.{layer}.mixer.Wqkv.{kind}"
        if module in _MSFT_BLOCK_NAMES:
            return f"model.layers.{layer}.{_MSFT_BLOCK_NAMES[module]}.{kind}"
        return None
    if key.startswith(("model.", "lm_head.", "vision_tower.", "mm_projector.")):
        return key
    return None


def convert_state_dict(
    state: dict[str, torch.Tensor], config: ImpConfig
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """``(tensors under this project's names, {new name: upstream name})``: renamed, ``Wqkv`` split,
    unused tower parts dropped."""
    out: dict[str, torch.Tensor] = {}
    sources: dict[str, str] = {}
    for key, tensor in state.items():
        new = convert_key(key)
        if new is None or _unused_tower_part(new, config):
            continue
        m = re.fullmatch(r"model\.layers\.(\d+)\.mixer\.Wqkv\.(weight|bias)", new)
        if m:
            base = f"model.layers.{m.group(1)}.self_attn"
            for name, part in zip(("q", "k", "v"), _split_qkv(tensor, config)):
                out[f"{base}.{name}_proj.{m.group(2)}"] = part
                sources[f"{base}.{name}_proj.{m.group(2)}"] = key
            continue
        out[new] = tensor
        sources[new] = key
    return out, sources


def _split_qkv(tensor: torch.Tensor, config: ImpConfig) -> list[torch.Tensor]:
    """phi-msft's fused rows: ``n_head`` query heads, then ``n_head_kv`` key and value heads."""
    head_dim = config.hidden_size // config.num_attention_heads
    q_rows = config.num_attention_heads * head_dim
    kv_rows = int(config.num_key_value_heads or config.num_attention_heads) * head_dim
    if tensor.shape[0] != q_rows + 2 * kv_rows:  # left whole: the shape check names it
        return [tensor, tensor[:0], tensor[:0]]
    q, k, v = tensor.split([q_rows, kv_rows, kv_rows], dim=0)
    return [q.clone(), k.clone(), v.clone()]


def _unused_tower_part(key: str, config: ImpConfig) -> bool:
    if not key.startswith("vision_tower."):
        return False
    m = re.search(r"encoder\.layers\.(\d+)\.", key)
    if m and int(m.group(1)) >= config.vision_config.num_hidden_layers:
        return True
    if ".head." in key:
        return True
    return ".post_layernorm." in key and config.tower.truncated  # the family holds no post-layernorm
