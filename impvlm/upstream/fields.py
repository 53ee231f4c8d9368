"""Config fields of upstream checkpoints, read as upstream's configuration code reads them.

- The Phi LM in phi-msft names (``configuration_phi.py`` of microsoft/phi-2 before 2024, and
  imp-v1-3b's ``configuration_imp.py`` built on it): ``n_embd``, ``n_layer``, ``n_head``,
  ``n_head_kv`` (null: ``n_head``), ``n_inner`` (null: 4 x ``n_embd``, as its MLP reads it),
  ``rotary_dim`` (capped at the head size), ``n_positions``, ``layer_norm_epsilon``,
  ``activation_function``, ``vocab_size`` (padded up to ``pad_vocab_size_multiple``), with that
  class's defaults for absent fields; RoPE base 10000 (its attention's default).
- The Phi LM in transformers names (``PhiConfig``): passed through, with ``PhiConfig``'s defaults.
- Vision towers: a nested transformers vision config (Imp's ``vision_tower_config``, LLaVA-Phi's
  ``vision_config.vision_tower``) or a local tower folder read by transformers' own config class.

Every refusal is a :class:`CheckpointError` naming the file and the field.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from impvlm.errors import CheckpointError
from impvlm.towers import tower_family

#: phi-msft ``PhiConfig.__init__`` defaults.
PHI_MSFT_DEFAULTS: dict[str, Any] = {
    "vocab_size": 50304,
    "n_positions": 2048,
    "n_embd": 1024,
    "n_layer": 20,
    "n_inner": None,
    "n_head": 16,
    "n_head_kv": None,
    "rotary_dim": 32,
    "activation_function": "gelu_new",
    "layer_norm_epsilon": 1e-5,
    "tie_word_embeddings": False,
    "pad_vocab_size_multiple": 64,
}
PHI_MSFT_ROPE_BASE = 10000.0
#: transformers ``PhiConfig`` fields that shape the model (the rest: dropout, init, cache flags).
PHI_FIELDS = (
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "hidden_act",
    "max_position_embeddings",
    "layer_norm_eps",
    "rope_theta",
    "rope_scaling",
    "partial_rotary_factor",
    "qk_layernorm",
    "tie_word_embeddings",
)
#: Fields ``PhiConfig`` cannot take as null (it has no rule for them).
PHI_NOT_NULL = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")
#: LLaVA ``image_aspect_ratio`` values -> this project's; anything else (anyres ...) is refused.
ASPECT_RATIOS = {None: "squash", "square": "squash", "pad": "pad"}


def uses_msft_names(raw: dict[str, Any]) -> bool:
    """phi-msft field names, unless transformers' are there too (then those are what the code reads)."""
    return "hidden_size" not in raw and "n_embd" in raw


def language_model_fields(raw: dict[str, Any], source: Path) -> dict[str, Any]:
    """``ImpConfig`` keyword arguments of the Phi LM described by ``raw`` (a config.json)."""
    return _msft_fields(raw, source) if uses_msft_names(raw) else _phi_fields(raw, source)


def _msft_fields(raw: dict[str, Any], source: Path) -> dict[str, Any]:
    c = {k: raw.get(k, default) for k, default in PHI_MSFT_DEFAULTS.items()}
    for field in ("n_embd", "n_layer", "n_head", "n_positions", "vocab_size", "rotary_dim"):
        if not isinstance(c[field], int) or isinstance(c[field], bool) or c[field] <= 0:
            raise CheckpointError(f"{source}: {field} is {c[field]!r}, expected a positive integer")
    embd, heads = c["n_embd"], c["n_head"]
    if embd % heads:
        raise CheckpointError(f"{source}: n_embd {embd} is not a multiple of n_head {heads}")
    multiple = c["pad_vocab_size_multiple"] or 1
    rotary_dim = min(c["rotary_dim"], embd // heads)
    return {
        "vocab_size": int(math.ceil(c["vocab_size"] / multiple) * multiple),
        "hidden_size": embd,
        "intermediate_size": c["n_inner"] if c["n_inner"] is not None else 4 * embd,
        "num_hidden_layers": c["n_layer"],
        "num_attention_heads": heads,
        "num_key_value_heads": c["n_head_kv"] if c["n_head_kv"] is not None else heads,
        "hidden_act": c["activation_function"],
        "max_position_embeddings": c["n_positions"],
        "layer_norm_eps": float(c["layer_norm_epsilon"]),
        "partial_rotary_factor": rotary_dim / (embd // heads),
        "rope_theta": PHI_MSFT_ROPE_BASE,
        "tie_word_embeddings": bool(c["tie_word_embeddings"]),
    }


def _phi_fields(raw: dict[str, Any], source: Path) -> dict[str, Any]:
    for field in PHI_NOT_NULL:
        if field in raw and raw[field] is None:
            raise CheckpointError(
                f"{source}: {field} is null (transformers' PhiConfig has no default rule for it)"
            )
    return {k: raw[k] for k in PHI_FIELDS if k in raw}


def aspect_ratio(raw: dict[str, Any], source: Path) -> str:
    value = raw.get("image_aspect_ratio")
    if value not in ASPECT_RATIOS:
        raise CheckpointError(f"{source}: image_aspect_ratio {value!r} is not supported (square and pad are)")
    return ASPECT_RATIOS[value]


def required(raw: dict[str, Any], field: str, source: Path) -> Any:
    """A field upstream's code reads without a default (it would fail without it)."""
    if raw.get(field) is None:
        raise CheckpointError(f"{source}: {field} is missing (upstream's code needs it)")
    return raw[field]


def vision_fields(vision: Any, source: Path, field: str) -> dict[str, Any]:
    """A nested vision config (dict) as a dict for :func:`impvlm.config.build_vision_config`:
    bookkeeping keys dropped, the family's upstream spelling of ``model_type`` normalised."""
    if not isinstance(vision, dict):
        raise CheckpointError(f"{source}: {field} is not a JSON object")
    try:
        family = tower_family(vision.get("model_type", "siglip_vision_model"))
    except Exception as exc:
        raise CheckpointError(f"{source}: {field}.model_type: {exc}") from None
    keep = {k: v for k, v in vision.items() if not k.startswith("_") and k not in _BOOKKEEPING}
    return {**keep, "model_type": family.model_type, **family.config_overrides}


#: Keys of a serialised transformers config that say nothing about the architecture.
_BOOKKEEPING = frozenset(
    ("architectures", "transformers_version", "mm_vision_select_layer", "mm_vision_select_feature")
)


def tower_folder_fields(folder: Path) -> dict[str, Any]:
    """The vision config of a local tower folder (vision-only or two-tower SigLIP / CLIP checkpoint),
    read with transformers' own config class of its family (which takes ``vision_config`` out of a
    two-tower config.json)."""
    import json

    file = folder / "config.json"
    if not file.is_file():
        raise CheckpointError(f"vision tower folder {folder} has no config.json")
    try:
        model_type = json.loads(file.read_text()).get("model_type")
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{file} is not valid JSON: {exc}") from None
    try:
        family = tower_family(model_type)
    except Exception as exc:
        raise CheckpointError(f"{file}: model_type: {exc}") from None
    config = family.config_class.from_pretrained(str(folder), local_files_only=True)
    return vision_fields({**config.to_dict(), "model_type": family.model_type}, file, "config")


def imp_tower(vision: dict[str, Any], select_layer: int, source: Path) -> tuple[dict[str, Any], int]:
    """Imp's treatment of a tower (both families): the layers after the selected one are deleted and
    the features are the last kept layer's output. Returns the vision dict and the select layer (-1)."""
    total = int(vision.get("num_hidden_layers", 0) or 0)
    kept = len(range(total)[: int(select_layer) + 1])  # upstream: del layers[select_layer + 1:]
    if kept < 1:
        raise CheckpointError(
            f"{source}: mm_vision_select_layer {select_layer} leaves none of the tower's {total} layers "
            "(Imp deletes the layers after the selected one)"
        )
    return {**vision, "num_hidden_layers": kept}, -1
