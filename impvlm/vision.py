"""Vision towers: SigLIP with Imp's treatment and CLIP as LLaVA-Phi uses it.

- SigLIP (Imp): the tower holds only the layers it uses (Imp deletes the last of 27), the
  post-layernorm and the pooling head are not used, and all patch tokens are features.
- CLIP (LLaVA-Phi): the full tower; features are ``hidden_states[select_layer]`` with the CLS token
  dropped.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from transformers import CLIPVisionModel, SiglipVisionModel

from impvlm.config import ImpConfig


class VisionTower(nn.Module):
    """``pixel_values (B, 3, H, W) -> features (B, N, C_vision)``."""

    def __init__(self, config: ImpConfig) -> None:
        super().__init__()
        vision_config = copy.deepcopy(config.vision_config)
        self.select_layer = config.mm_vision_select_layer
        self.drop_cls = config.has_cls_token and config.mm_vision_select_feature == "patch"
        if vision_config.model_type == "siglip_vision_model":
            vision_config.vision_use_head = False
            self.model = SiglipVisionModel(vision_config)
            # Imp's features are taken before the post-layernorm: hold no weights for it.
            self.model.vision_model.post_layernorm = nn.Identity()
        else:
            self.model = CLIPVisionModel(vision_config)

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
