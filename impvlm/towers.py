"""The vision-tower families a model may use: one registry that config, checkpoints, model and export read.

- SigLIP (Imp): the tower holds only the layers it uses (Imp deletes the last of 27); the
  post-layernorm and the pooling head are not held, and all patch tokens are features.
- CLIP (LLaVA-Phi): the full tower; features are ``hidden_states[select_layer]`` with the class
  token dropped (``patch``) or kept (``cls_patch``).

Both map to llama.cpp's ``clip`` mmproj architecture with the ``mlp`` projector; the class token is
written only for a family that has one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from transformers import CLIPVisionConfig, PretrainedConfig, SiglipVisionConfig

from impvlm.errors import ConfigError

MeanStd = tuple[tuple[float, float, float], tuple[float, float, float]]


@dataclass(frozen=True)
class TowerFamily:
    """One vision-tower family.

    Attributes:
        name: short name (also the ``model_type`` upstream checkpoints use).
        model_type: the transformers ``model_type`` of the tower's config.
        config_class: its transformers config class.
        model_class_name: its transformers model class (resolved on use: importing it loads torch).
        mean_std: the published per-channel normalisation.
        has_cls: the tower prepends a class token to the patch tokens.
        truncated: Imp's treatment: the tower holds only the layers up to the feature layer, and no
            post-layernorm or pooling head (so the features are its last hidden state).
        config_overrides: config values the project always sets for the family.
    """

    name: str
    model_type: str
    config_class: type[PretrainedConfig]
    model_class_name: str
    mean_std: MeanStd
    has_cls: bool
    truncated: bool
    config_overrides: dict[str, Any] = field(default_factory=dict)

    def model_class(self) -> Any:
        import transformers

        return getattr(transformers, self.model_class_name)


SIGLIP = TowerFamily(
    name="siglip",
    model_type="siglip_vision_model",
    config_class=SiglipVisionConfig,
    model_class_name="SiglipVisionModel",
    mean_std=((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    has_cls=False,
    truncated=True,
    config_overrides={"vision_use_head": False},
)
CLIP = TowerFamily(
    name="clip",
    model_type="clip_vision_model",
    config_class=CLIPVisionConfig,
    model_class_name="CLIPVisionModel",
    mean_std=((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
    has_cls=True,
    truncated=False,
)
#: transformers ``model_type`` -> family. The first is the default of a config that names none.
TOWER_FAMILIES: dict[str, TowerFamily] = {f.model_type: f for f in (SIGLIP, CLIP)}
DEFAULT_TOWER = SIGLIP


def find_tower(model_type: str, upstream_names: bool = True) -> TowerFamily | None:
    """The family of a transformers ``model_type`` (or an upstream short name such as ``siglip``,
    with ``upstream_names``), or None."""
    if model_type in TOWER_FAMILIES:
        return TOWER_FAMILIES[model_type]
    if not upstream_names:
        return None
    return next((f for f in TOWER_FAMILIES.values() if f.name == model_type), None)


def tower_family(model_type: str, upstream_names: bool = True) -> TowerFamily:
    """Like :func:`find_tower`; :class:`ConfigError` lists the supported types."""
    family = find_tower(model_type, upstream_names)
    if family is None:
        raise ConfigError(f"unknown vision tower type {model_type!r}; supported: {', '.join(TOWER_FAMILIES)}")
    return family
