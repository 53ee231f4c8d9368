"""`ImpConfig`: one transformers config for an Imp / LLaVA-Phi model.

The language-model fields are Phi's own (``ImpConfig`` extends :class:`PhiConfig`, as the released
checkpoint does), the vision tower keeps its own nested transformers config, and the multimodal
fields say how the two meet: projector type, which vision layer / tokens are used, image size and
aspect-ratio mode, the ``<image>`` token and the conversation template.
"""

from __future__ import annotations

import re
from typing import Any

from transformers import PhiConfig, PretrainedConfig

from impvlm.errors import ConfigError
from impvlm.templates import IMAGE_SENTINEL
from impvlm.towers import DEFAULT_TOWER, TowerFamily, tower_family

PROJECTOR_PATTERN = re.compile(r"^(linear|identity|mlp(\d+)x_gelu)$")
ASPECT_RATIO_MODES = ("squash", "pad")
FEATURE_MODES = ("patch", "cls_patch")


def build_vision_config(value: PretrainedConfig | dict[str, Any] | None) -> PretrainedConfig:
    """Turn a nested vision config (object or dict with ``model_type``) into a transformers config."""
    if value is None:
        return DEFAULT_TOWER.config_class()
    if isinstance(value, PretrainedConfig):
        return value
    data = dict(value)
    model_type = data.pop("model_type", DEFAULT_TOWER.model_type)
    return tower_family(model_type, upstream_names=False).config_class(**data)


class ImpConfig(PhiConfig):
    """Configuration of an Imp-style VLM: a Phi LM, a SigLIP or CLIP tower and a projector.

    Args:
        vision_config: the tower's transformers config (``SiglipVisionConfig`` or
            ``CLIPVisionConfig``) or its dict form. ``num_hidden_layers`` is the number of layers
            the tower really holds (Imp's SigLIP keeps 26 of 27).
        mm_projector_type: ``linear``, ``identity`` or ``mlp{N}x_gelu``.
        mm_vision_select_layer: which hidden state feeds the projector; ``-1`` is the output of the
            last layer held (Imp: the truncated tower's last layer, without post-layernorm),
            ``-2`` the one before (LLaVA-Phi's CLIP).
        mm_vision_select_feature: ``patch`` (drop CLS when the tower has one) or ``cls_patch``.
        image_aspect_ratio: ``squash`` (Imp v1: resize to a square) or ``pad`` (pad to a square
            with the mean colour first).
        image_mean / image_std: per-channel normalisation.
        image_token_index: id of the ``<image>`` token in the vocabulary, or
            :data:`~impvlm.templates.IMAGE_SENTINEL` when the tokenizer has no such token (the image
            goes where the prompt text says ``<image>``, as upstream's training code splices it).
        template: name of the conversation template (see :mod:`impvlm.templates`).
        model_id: a human-readable name carried into exported bundles.
    """

    model_type = "impvlm"
    sub_configs = {"vision_config": PretrainedConfig}

    def __init__(
        self,
        vision_config: PretrainedConfig | dict[str, Any] | None = None,
        mm_projector_type: str = "mlp2x_gelu",
        mm_vision_select_layer: int = -1,
        mm_vision_select_feature: str = "patch",
        image_aspect_ratio: str = "squash",
        image_mean: tuple[float, float, float] | list[float] | None = None,
        image_std: tuple[float, float, float] | list[float] | None = None,
        image_token_index: int = 50296,
        template: str = "phi2",
        model_id: str = "impvlm",
        **kwargs: Any,
    ) -> None:
        self.vision_config = build_vision_config(vision_config)
        self.mm_projector_type = mm_projector_type
        self.mm_vision_select_layer = int(mm_vision_select_layer)
        self.mm_vision_select_feature = mm_vision_select_feature
        self.image_aspect_ratio = image_aspect_ratio
        default_mean, default_std = self.tower.mean_std
        self.image_mean = list(image_mean if image_mean is not None else default_mean)
        self.image_std = list(image_std if image_std is not None else default_std)
        self.image_token_index = int(image_token_index)
        self.template = template
        self.model_id = model_id
        super().__init__(**kwargs)
        self.validate()

    # ------------------------------------------------------------------ derived facts
    @property
    def image_size(self) -> int:
        return int(self.vision_config.image_size)

    @property
    def vision_hidden_size(self) -> int:
        return int(self.vision_config.hidden_size)

    @property
    def tower(self) -> TowerFamily:
        """The vision tower's family (see :mod:`impvlm.towers`)."""
        return tower_family(self.vision_config.model_type)

    @property
    def has_cls_token(self) -> bool:
        return self.tower.has_cls

    @property
    def num_image_tokens(self) -> int:
        """How many embeddings one ``<image>`` token turns into."""
        patches = (self.vision_config.image_size // self.vision_config.patch_size) ** 2
        if self.has_cls_token and self.mm_vision_select_feature == "cls_patch":
            patches += 1
        return patches

    def validate(self) -> None:
        if not PROJECTOR_PATTERN.match(self.mm_projector_type):
            raise ConfigError(
                f"unknown projector type {self.mm_projector_type!r}; use linear, identity or mlp<N>x_gelu"
            )
        if self.image_aspect_ratio not in ASPECT_RATIO_MODES:
            raise ConfigError(
                f"unknown image_aspect_ratio {self.image_aspect_ratio!r}; use one of {ASPECT_RATIO_MODES}"
            )
        if self.mm_vision_select_feature not in FEATURE_MODES:
            raise ConfigError(
                f"unknown mm_vision_select_feature {self.mm_vision_select_feature!r}; use {FEATURE_MODES}"
            )
        layers = int(self.vision_config.num_hidden_layers)
        if not -layers <= self.mm_vision_select_layer <= -1:
            raise ConfigError(
                f"mm_vision_select_layer {self.mm_vision_select_layer} is outside the tower's {layers} layers"
            )
        if self.image_token_index != IMAGE_SENTINEL and not 0 <= self.image_token_index < self.vocab_size:
            raise ConfigError(
                f"image_token_index {self.image_token_index} is outside the vocabulary (size {self.vocab_size})"
            )
        if len(self.image_mean) != 3 or len(self.image_std) != 3:
            raise ConfigError("image_mean and image_std need three values (RGB)")
        from impvlm.templates import get_template

        get_template(self.template)

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out["vision_config"] = self.vision_config.to_dict()
        return out
