"""The multimodal projector: vision features (B, N, C_vision) -> LM embeddings (B, N, D_lm)."""

from __future__ import annotations

import re

from torch import nn

from impvlm.errors import ConfigError


def build_projector(kind: str, vision_hidden: int, lm_hidden: int) -> nn.Module:
    """``linear``, ``identity`` or ``mlp{N}x_gelu`` (Linear, then N-1 x (GELU, Linear)).

    The Sequential indices match upstream checkpoints: ``mlp2x_gelu`` has weights at ``0`` and ``2``.
    """
    if kind == "linear":
        return nn.Linear(vision_hidden, lm_hidden)
    if kind == "identity":
        if vision_hidden != lm_hidden:
            raise ConfigError(f"identity projector needs equal widths, got {vision_hidden} -> {lm_hidden}")
        return nn.Identity()
    match = re.fullmatch(r"mlp(\d+)x_gelu", kind)
    if not match or int(match.group(1)) < 1:
        raise ConfigError(f"unknown projector type {kind!r}; use linear, identity or mlp<N>x_gelu")
    layers: list[nn.Module] = [nn.Linear(vision_hidden, lm_hidden)]
    for _ in range(int(match.group(1)) - 1):
        layers += [nn.GELU(), nn.Linear(lm_hidden, lm_hidden)]
    return nn.Sequential(*layers)
