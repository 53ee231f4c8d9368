"""The vision tower module: SigLIP with Imp's treatment, CLIP as LLaVA-Phi uses it.

What each family means (class, truncation, class token) is in :mod:`impvlm.towers`.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from impvlm.config import ImpConfig


class VisionTower(nn.Module):
    """``pixel_values (B, 3, H, W) -> features (B, N, C_vision)``."""

    def __init__(self, config: ImpConfig) -> None:
        super().__init__()
        vision_config = copy.deepcopy(config.vision_config)
        self.select_layer = config.mm_vision_select_layer
        self.drop_cls = config.has_cls_token and config.mm_vision_select_feature == "patch"
        family = config.tower
        for key, value in family.config_overrides.items():
            setattr(vision_config, key, value)
        self.model = family.model_class()(vision_config)
        if family.truncated:
            # Imp's features are taken before the post-layernorm: hold no weights for it.
            self.model.vision_model.post_layernorm = nn.Identity()

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        pixel_values = pixel_values.to(self.dtype)
        if self.select_layer == -1 and not self.drop_cls:
            features = self.model(pixel_values=pixel_values).last_hidden_state
        else:
            out = self.model(pixel_values=pixel_values, output_hidden_states=True)
            features = out.hidden_states[self.select_layer]
        if self.drop_cls:
            features = features[:, 1:]
        return features  # (B, N, C_vision)
