"""Checkpoints: this project's format, and the upstream Imp layouts users already have.

The impvlm format is what ``save_pretrained`` writes: ``config.json`` (``model_type "impvlm"``),
sharded ``model.safetensors`` and the tokenizer files. Upstream Imp folders are read from disk
without running any code shipped inside them, in both key layouts:

- transformers-native Phi names (``model.layers.N.self_attn.q_proj`` ...), projector at
  ``model.mm_projector.{0,2}``, tower under ``model.vision_tower.vision_tower.vision_model``;
- the older phi-msft names (``transformer.h.N.mixer.Wqkv``, ``lm_head.linear`` ...), projector at
  ``transformer.mm_projector.{0,2}``, tower under ``transformer.vision_tower.vision_tower``.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from impvlm.config import ImpConfig
from impvlm.errors import CheckpointError
from impvlm.modeling import ImpForCausalLM
from impvlm.towers import DEFAULT_TOWER, find_tower

CONFIG_FILE = "config.json"
WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin", "model*.bin")


def read_config_dict(path: Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"checkpoint folder not found: {path}")
    config_file = path / CONFIG_FILE
    if not config_file.is_file():
        raise CheckpointError(f"{config_file} is missing: not a checkpoint folder")
    try:
        return json.loads(config_file.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{config_file} is not valid JSON: {exc}") from None


def is_upstream(config: dict[str, Any]) -> bool:
    return config.get("model_type") != ImpConfig.model_type


@contextmanager
def committed_folder(out_dir: str | Path) -> Iterator[Path]:
    """A fresh temporary folder beside ``out_dir`` that replaces ``out_dir`` whole when the block ends
    without an error (a leftover from a killed run is cleared first); readers never see a half-written one.
    """
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    yield tmp
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)


def save_checkpoint(
    model: ImpForCausalLM, tokenizer: Any, out_dir: Path, max_shard_size: str = "2GB"
) -> Path:
    """Write config, sharded safetensors and tokenizer atomically (a temp folder, then a rename)."""
    with committed_folder(out_dir) as tmp:
        model.save_pretrained(tmp, safe_serialization=True, max_shard_size=max_shard_size)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
    return Path(out_dir)


def load_model(
    path: str | Path, dtype: torch.dtype | None = None, device: str | torch.device = "cpu"
) -> ImpForCausalLM:
    """Load an impvlm or upstream Imp checkpoint folder into :class:`ImpForCausalLM` (eval mode)."""
    path = Path(path)
    raw = read_config_dict(path)
    check_weight_files(path)
    if is_upstream(raw):
        config = config_from_upstream(raw)
        state = convert_upstream_state_dict(read_state_dict(path), config)
        model = ImpForCausalLM(config)
        _load_strict(model, state, path)
    else:
        try:
            model, info = ImpForCausalLM.from_pretrained(path, output_loading_info=True, dtype=dtype)
        except (RuntimeError, ValueError, OSError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise CheckpointError(f"{path}: weights do not match config.json: {first}") from None
        missing = info.get("missing_keys") or []
        mismatched = info.get("mismatched_keys") or []
        if missing or mismatched:
            what = missing[:3] or [m[0] if isinstance(m, tuple) else m for m in mismatched[:3]]
            raise CheckpointError(
                f"{path}: weights do not match config.json ({len(missing)} missing, "
                f"{len(mismatched)} mismatched tensors, e.g. {', '.join(map(str, what))})"
            )
    if dtype is not None:
        model = model.to(dtype)
    return model.to(device).eval()


def check_weight_files(path: Path) -> None:
    """Every shard named by an index file must exist; a folder must hold some weights."""
    for index in list(path.glob("*.index.json")):
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError) as exc:
            raise CheckpointError(f"{index} is not a valid shard index: {exc}") from None
        for shard in sorted(set(weight_map.values())):
            if not (path / shard).is_file():
                raise CheckpointError(f"missing shard {path / shard} (listed in {index.name})")
    if not any(any(path.glob(p)) for p in WEIGHT_PATTERNS):
        raise CheckpointError(f"{path} holds no weight files (*.safetensors or *.bin)")


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """All tensors of a folder's safetensors / .bin files (``.bin`` with ``weights_only=True``)."""
    from safetensors.torch import load_file

    state: dict[str, torch.Tensor] = {}
    files = sorted(path.glob("*.safetensors")) or sorted(f for p in WEIGHT_PATTERNS[1:] for f in path.glob(p))
    for file in files:
        try:
            if file.suffix == ".safetensors":
                state.update(load_file(str(file)))
            else:
                state.update(torch.load(file, map_location="cpu", weights_only=True))
        except Exception as exc:  # corrupt or truncated file: name it
            raise CheckpointError(f"cannot read weights from {file}: {exc}") from None
    return state


def checkpoint_hash(path: Path) -> str:
    """sha256 over config.json and the weight files (names and bytes), for bundle manifests."""
    digest = hashlib.sha256()
    path = Path(path)
    files = [path / CONFIG_FILE, *sorted(f for p in WEIGHT_PATTERNS for f in path.glob(p))]
    for file in files:
        digest.update(file.name.encode())
        with file.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def _load_strict(model: ImpForCausalLM, state: dict[str, torch.Tensor], path: Path) -> None:
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        raise CheckpointError(
            f"{path}: weights do not match config.json: {str(exc).splitlines()[0]}"
        ) from None
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(
            f"{path}: weights do not match config.json (missing {result.missing_keys[:3]}, "
            f"unexpected {result.unexpected_keys[:3]})"
        )


# ---------------------------------------------------------------------- upstream Imp checkpoints
_MSFT_CONFIG_NAMES = {
    "n_embd": "hidden_size",
    "n_layer": "num_hidden_layers",
    "n_head": "num_attention_heads",
    "n_inner": "intermediate_size",
    "n_positions": "max_position_embeddings",
    "layer_norm_epsilon": "layer_norm_eps",
}
_PHI_FIELDS = (
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "vocab_size",
    "max_position_embeddings",
    "layer_norm_eps",
    "partial_rotary_factor",
    "rope_theta",
    "hidden_act",
)


def upstream_used_vision_layers(raw: dict[str, Any]) -> tuple[int, int]:
    """(layers the features need, select layer relative to them) for an upstream config."""
    vision = raw.get("vision_tower_config") or raw.get("vision_config") or {}
    total = int(vision.get("num_hidden_layers", 27))
    select = int(raw.get("mm_vision_select_layer", -2))
    return total, select


def config_from_upstream(raw: dict[str, Any]) -> ImpConfig:
    """An :class:`ImpConfig` equivalent to an upstream Imp / LLaVA-Phi ``config.json``."""
    lm: dict[str, Any] = {}
    for key, value in raw.items():
        name = _MSFT_CONFIG_NAMES.get(key, key)
        if name in _PHI_FIELDS:
            lm[name] = value
    if "rotary_dim" in raw and "partial_rotary_factor" not in raw:
        lm["partial_rotary_factor"] = raw["rotary_dim"] / (lm["hidden_size"] / lm["num_attention_heads"])
    if lm.get("hidden_act") == "gelu_new" or "hidden_act" not in lm:
        lm["hidden_act"] = "gelu_new"
    if "intermediate_size" not in lm and "hidden_size" in lm:
        lm["intermediate_size"] = 4 * lm["hidden_size"]
    missing = [
        f for f in ("hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size") if f not in lm
    ]
    if missing:
        raise CheckpointError(f"upstream config.json lacks {', '.join(missing)}: cannot rebuild the model")
    vision = dict(raw.get("vision_tower_config") or raw.get("vision_config") or {})
    if not vision:
        raise CheckpointError("upstream config.json has no vision_tower_config: not an Imp checkpoint")
    family = find_tower(vision.setdefault("model_type", DEFAULT_TOWER.model_type))
    vision["model_type"] = family.model_type if family else vision["model_type"]
    total, select = upstream_used_vision_layers(raw)
    if family and family.truncated:
        # Imp's treatment: keep the layers up to the selected one, take the last of them.
        vision["num_hidden_layers"] = total + select + 1
        vision.update(family.config_overrides)
        select = -1
    keep = {k: v for k, v in vision.items() if not k.startswith("_") and k not in ("architectures",)}
    return ImpConfig(
        **lm,
        vision_config=keep,
        mm_projector_type=raw.get("mm_projector_type", "mlp2x_gelu"),
        mm_vision_select_layer=select,
        mm_vision_select_feature=raw.get("mm_vision_select_feature", "patch"),
        image_aspect_ratio="pad" if raw.get("image_aspect_ratio") == "pad" else "squash",
        image_token_index=raw.get("image_token_index", 50296),
        eos_token_id=raw.get("eos_token_id", 50295),
        pad_token_id=raw.get("pad_token_id", 50256),
        bos_token_id=None,
        tie_word_embeddings=False,
        template="phi-2_v0" if raw.get("eos_token_id") == 50256 else "phi2",
        model_id=str(raw.get("_name_or_path") or "imp-upstream"),
    )


_MSFT_LAYER_RULES = [
    (r"ln\.(weight|bias)$", r"input_layernorm.\1"),
    (r"mixer\.out_proj\.(weight|bias)$", r"self_attn.dense.\1"),
    (r"mlp\.fc1\.(weight|bias)$", r"mlp.fc1.\1"),
    (r"mlp\.fc2\.(weight|bias)$", r"mlp.fc2.\1"),
]


def convert_upstream_state_dict(state: dict[str, torch.Tensor], config: ImpConfig) -> dict[str, torch.Tensor]:
    """Rename upstream keys to impvlm's, split fused Wqkv, drop tower layers and heads not used."""
    out: dict[str, torch.Tensor] = {}
    kept_layers = config.vision_config.num_hidden_layers
    for key, tensor in state.items():
        new = _convert_key(key)
        if new is None:
            continue
        if new.startswith("vision_tower."):
            m = re.search(r"encoder\.layers\.(\d+)\.", new)
            if m and int(m.group(1)) >= kept_layers:
                continue
            if ".post_layernorm." in new and config.tower.truncated:
                continue
            if ".head." in new:
                continue
        m = re.fullmatch(r"model\.layers\.(\d+)\.mixer\.Wqkv\.(weight|bias)", new)
        if m:
            q, k, v = tensor.chunk(3, dim=0)
            base = f"model.layers.{m.group(1)}.self_attn"
            out[f"{base}.q_proj.{m.group(2)}"] = q.clone()
            out[f"{base}.k_proj.{m.group(2)}"] = k.clone()
            out[f"{base}.v_proj.{m.group(2)}"] = v.clone()
            continue
        out[new] = tensor
    return out


def _convert_key(key: str) -> str | None:
    for prefix in ("model.vision_tower.vision_tower.", "transformer.vision_tower.vision_tower."):
        if key.startswith(prefix):
            return "vision_tower.model." + key[len(prefix) :]
    for prefix in ("model.mm_projector.", "transformer.mm_projector."):
        if key.startswith(prefix):
            return "mm_projector." + key[len(prefix) :]
    if key == "transformer.embd.wte.weight":
        return "model.embed_tokens.weight"
    m = re.fullmatch(r"lm_head\.ln\.(weight|bias)", key)
    if m:
        return f"model.final_layernorm.{m.group(1)}"
    m = re.fullmatch(r"lm_head\.linear\.(weight|bias)", key)
    if m:
        return f"lm_head.{m.group(1)}"
    m = re.fullmatch(r"transformer\.h\.(\d+)\.(.+)", key)
    if m:
        layer, rest = m.groups()
        if rest.startswith("mixer.Wqkv."):
            return f"model.layers.{layer}.{rest}"
        for pattern, repl in _MSFT_LAYER_RULES:
            if re.fullmatch(pattern, rest):
                return f"model.layers.{layer}." + re.sub(pattern, repl, rest)
        return None
    if key.startswith(("model.", "lm_head.")):
        return key
    return None
