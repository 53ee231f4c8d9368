"""Where a stage's starting weights come from, and LoRA stage outputs.

- :func:`load_start_model`: a checkpoint folder (impvlm or upstream Imp), or a LoRA stage output
  (this project's or upstream Imp's), merged in memory onto its base.
- :func:`build_from_parts`: a preset's architecture filled from a Phi language-model folder, a SigLIP /
  CLIP vision folder and a projector file (upstream stage 1 starts from ``microsoft/phi-2`` and
  ``google/siglip-so400m-patch14-384`` on disk); parts not given keep their random init.
- LoRA folders hold ``adapter_config.json``, ``adapter_model.safetensors`` (or ``.bin``) and
  ``non_lora_trainables.safetensors`` (or upstream's ``non_lora_trainables.bin``); :func:`apply_lora_dir`
  folds them into a model: ``W += (alpha / r) * B @ A`` per adapted Linear, and the non-LoRA tensors
  (the projector) replace the model's.

Every ``.bin`` is read with ``torch.load(weights_only=True)``; no code shipped in a folder runs.
"""

from __future__ import annotations

import json
import logging
import math
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from impvlm.checkpoint import load_model, read_checkpoint, read_state_dict
from impvlm.config import ImpConfig
from impvlm.errors import CheckpointError
from impvlm.modeling import ImpForCausalLM
from impvlm.upstream import Parts
from impvlm.upstream.keys import convert_state_dict

log = logging.getLogger(__name__)

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
NON_LORA_WEIGHTS = ("non_lora_trainables.safetensors", "non_lora_trainables.bin")
PROJECTOR_WEIGHTS = ("mm_projector.safetensors", "mm_projector.bin")
STAGE_FILE = "stage.json"
PEFT_PREFIX = "base_model.model."


def read_tensor_file(path: Path) -> dict[str, torch.Tensor]:
    """One ``.safetensors`` or ``.bin`` file (the latter with ``weights_only=True``)."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"weights file not found: {path}") from None
    except Exception as exc:
        raise CheckpointError(f"cannot read weights from {path}: {str(exc).splitlines()[0]}") from None


def first_existing(folder: Path, names: tuple[str, ...]) -> Path | None:
    return next((folder / n for n in names if (folder / n).is_file()), None)


def existing_folder(path: str | Path, what: str) -> Path:
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"{what} folder not found: {path}")
    return path


def is_lora_dir(path: str | Path) -> bool:
    return (Path(path) / ADAPTER_CONFIG).is_file()


def read_stage_info(path: str | Path) -> dict[str, Any]:
    """``stage.json`` of a finished stage output ({} for folders this project did not write)."""
    file = Path(path) / STAGE_FILE
    if not file.is_file():
        return {}
    try:
        return json.loads(file.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{file} is not valid JSON: {exc}") from None


def config_of(path: Path, parts: Parts | None = None) -> ImpConfig:
    """The :class:`ImpConfig` of a folder's ``config.json`` (impvlm or any upstream layout; ``parts``:
    the local base folders an upstream stage output only names)."""
    return read_checkpoint(path, parts).config


# ---------------------------------------------------------------------------- key translation


def to_model_keys(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Tensors keyed by this model's parameter names: impvlm names pass, upstream ones are converted
    (phi-msft names, fused ``Wqkv`` split, ``model.mm_projector`` ...); tensors of parts this model does
    not hold (tower layers Imp drops, pooling heads) are left out. A name that converts to nothing the
    model has is an error."""
    own = set(model.state_dict())
    known = {k: v for k, v in state.items() if k in own}
    other = {k: v for k, v in state.items() if k not in own}
    if other:
        converted, _ = convert_state_dict(other, model.config)
        unknown = sorted(set(converted) - own)
        if unknown:
            raise CheckpointError(f"tensors the model does not have: {unknown[:3]}")
        known.update(converted)
    return known


def _strip_peft(key: str) -> str:
    """peft names -> model names: drop the ``base_model.model.`` prefix and ``base_layer`` wrappers."""
    key = key[len(PEFT_PREFIX) :] if key.startswith(PEFT_PREFIX) else key
    return key.replace(".base_layer.", ".")


# ---------------------------------------------------------------------------- parts


def language_model_state(path: str | Path, model: ImpForCausalLM) -> dict[str, torch.Tensor]:
    """The LM tensors of a Phi folder (``PhiForCausalLM`` layout, native or phi-msft names)."""
    state = to_model_keys(read_state_dict(existing_folder(path, "language model")), model)
    lm = {k: v for k, v in state.items() if k.startswith(("model.", "lm_head."))}
    if not lm:
        raise CheckpointError(f"{path} holds no Phi language-model weights")
    return lm


def vision_tower_state(path: str | Path, model: ImpForCausalLM) -> dict[str, torch.Tensor]:
    """The tower tensors of a SigLIP / CLIP folder (vision-only or full two-tower checkpoints).

    Layers the tower does not hold (Imp drops SigLIP's last one), SigLIP's pooling head and post-layernorm
    are left out.
    """
    own = model.state_dict()
    out = {}
    for key, tensor in read_state_dict(existing_folder(path, "vision tower")).items():
        name = "vision_tower.model." + key
        if key.startswith("vision_model.") and name in own:
            out[name] = tensor
    if not out:
        raise CheckpointError(f"{path} holds no vision_model.* weights (a SigLIP or CLIP checkpoint)")
    return out


def projector_state(path: str | Path, model: ImpForCausalLM) -> dict[str, torch.Tensor]:
    """The projector of an ``mm_projector.bin``, a folder holding one, or any checkpoint / stage output."""
    path = Path(path)
    if path.is_dir():
        file = first_existing(path, PROJECTOR_WEIGHTS)
        if file is None:
            state = to_model_keys(load_start_model(path)[0].state_dict(), model)
        else:
            state = to_model_keys(read_tensor_file(file), model)
    else:
        state = to_model_keys(read_tensor_file(path), model)
    proj = {k: v for k, v in state.items() if k.startswith("mm_projector.")}
    if not proj:
        raise CheckpointError(f"{path} holds no projector (mm_projector.*) weights")
    return proj


def load_part(
    model: ImpForCausalLM, state: dict[str, torch.Tensor], prefixes: tuple[str, ...], source: Path
) -> None:
    """Copy ``state`` into ``model``; every parameter under ``prefixes`` must be covered."""
    wanted = {k for k in model.state_dict() if k.startswith(prefixes)}
    missing = sorted(wanted - set(state))
    if missing:
        raise CheckpointError(f"{source} lacks {len(missing)} tensors the model needs, e.g. {missing[:3]}")
    copy_tensors(model, {k: state[k] for k in wanted}, source)


def copy_tensors(model: nn.Module, state: dict[str, torch.Tensor], source: Path) -> None:
    """Load ``state`` (keys the model has) into ``model``, checking every shape."""
    own = model.state_dict()
    for key, tensor in state.items():
        if own[key].shape != tensor.shape:
            raise CheckpointError(
                f"{source}: {key} has shape {tuple(tensor.shape)}, the model expects {tuple(own[key].shape)}"
            )
    model.load_state_dict(state, strict=False)


def build_from_parts(
    config: ImpConfig,
    language_model: str | Path | None = None,
    vision_tower: str | Path | None = None,
    projector: str | Path | None = None,
) -> ImpForCausalLM:
    """A model of ``config`` whose LM / tower / projector come from the given folders (random otherwise)."""
    model = ImpForCausalLM(config)
    if language_model:
        load_part(
            model, language_model_state(language_model, model), ("model.", "lm_head."), Path(language_model)
        )
    if vision_tower:
        load_part(model, vision_tower_state(vision_tower, model), ("vision_tower.",), Path(vision_tower))
    if projector:
        load_part(model, projector_state(projector, model), ("mm_projector.",), Path(projector))
    return model


# ---------------------------------------------------------------------------- LoRA folders


def read_lora_dir(
    path: str | Path, model: nn.Module
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """``(deltas, replacements)`` of a LoRA folder, keyed by the model's parameter names.

    ``deltas``: ``(alpha / r) * B @ A`` per adapted weight. ``replacements``: whole tensors trained next
    to the LoRA (the projector): peft's ``modules_to_save`` inside the adapter file and upstream Imp's
    ``non_lora_trainables`` file.
    """
    path = Path(path)
    try:
        cfg = json.loads((path / ADAPTER_CONFIG).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"cannot read {path / ADAPTER_CONFIG}: {exc}") from None
    if cfg.get("peft_type", "LORA") != "LORA":
        raise CheckpointError(f"{path}: only LoRA adapters can be merged, this is {cfg.get('peft_type')}")
    if (
        cfg.get("use_dora")
        or cfg.get("fan_in_fan_out")
        or cfg.get("rank_pattern")
        or cfg.get("alpha_pattern")
    ):
        raise CheckpointError(f"{path}: DoRA, fan_in_fan_out and per-module ranks are not supported")
    r, alpha = int(cfg["r"]), float(cfg["lora_alpha"])
    scale = alpha / math.sqrt(r) if cfg.get("use_rslora") else alpha / r
    weights = first_existing(path, ADAPTER_WEIGHTS)
    if weights is None:
        raise CheckpointError(f"{path} has {ADAPTER_CONFIG} but no adapter_model.safetensors / .bin")
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    whole: dict[str, torch.Tensor] = {}
    for key, tensor in read_tensor_file(weights).items():
        m = re.fullmatch(r"(.+)\.lora_([AB])(?:\.[^.]+)?\.weight", _strip_peft(key))
        if m is None:
            whole[_strip_peft(key)] = tensor
        else:
            pairs.setdefault(m.group(1), {})[m.group(2)] = tensor
    if not pairs:
        raise CheckpointError(f"{weights} holds no LoRA matrices")
    deltas = {}
    for module, ab in pairs.items():
        if set(ab) != {"A", "B"}:
            raise CheckpointError(f"{weights}: {module} lacks its lora_A or lora_B matrix")
        deltas[f"{module}.weight"] = scale * (ab["B"].float() @ ab["A"].float())  # (out, r) @ (r, in)
    out = to_model_keys(deltas, model)
    if len(out) < len(deltas):
        raise CheckpointError(
            f"{weights}: adapted modules the model does not have, e.g. {sorted(deltas)[:3]}"
        )
    extra = first_existing(path, NON_LORA_WEIGHTS)
    if extra is not None:
        whole.update({_strip_peft(k): v for k, v in read_tensor_file(extra).items()})
    replacements = to_model_keys(whole, model)
    if whole and not replacements:
        raise CheckpointError(
            f"{path}: none of its non-LoRA tensors belong to the model, e.g. {sorted(whole)[:3]}"
        )
    return out, replacements


@torch.no_grad()
def apply_lora_dir(model: ImpForCausalLM, path: str | Path) -> list[str]:
    """Fold a LoRA folder into ``model`` in place (see the module docstring); returns the names of the
    whole tensors it replaced (the projector)."""
    path = Path(path)
    deltas, replacements = read_lora_dir(path, model)
    params = dict(model.named_parameters())
    for name, delta in deltas.items():
        target = params[name]
        if target.shape != delta.shape:
            raise CheckpointError(
                f"{path}: LoRA for {name} has shape {tuple(delta.shape)}, the model {tuple(target.shape)}"
            )
        target.copy_((target.float() + delta).to(target.dtype))
    copy_tensors(model, replacements, path)
    return sorted(replacements)


# ---------------------------------------------------------------------------- entry point


def load_start_model(
    path: str | Path, dtype: torch.dtype | None = None, parts: Parts | None = None
) -> tuple[ImpForCausalLM, Path]:
    """A model from a checkpoint folder or a stage output; returns it and the folder with its tokenizer.

    A LoRA stage output is merged in memory onto the base recorded in its ``stage.json``. ``parts``:
    local folders for what an upstream checkpoint only names (a full fine-tune's tower).
    """
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"checkpoint folder not found: {path}")
    if not is_lora_dir(path):
        return load_model(path, dtype=dtype, parts=parts).train(), path
    info = read_stage_info(path)
    base = resolve_base(path, info)
    if base is None:
        raise CheckpointError(
            f"{path} is a LoRA folder without a recorded base: merge it with `imp merge` and the base folders first"
        )
    model, _ = load_start_model(base, dtype)
    apply_lora_dir(model, path)
    return model, path


def resolve_base(path: Path, info: dict[str, Any]) -> Path | None:
    """The base checkpoint a stage output started from (``stage.json``: relative path first)."""
    for key in ("base_relative", "base"):
        value = info.get(key)
        if value:
            candidate = (path / value).resolve() if key == "base_relative" else Path(value)
            if candidate.is_dir():
                return candidate
    if info.get("base"):
        raise CheckpointError(f"{path}: its base {info['base']} no longer exists")
    return None
