"""Model presets: typed descriptions of the published models and of the tiny offline ones.

``build_config(name)`` turns a preset into an :class:`ImpConfig`; it never mutates the preset.
With a tokenizer, the special-token ids (``<image>``, eos, pad) and the vocabulary come from it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

from impvlm.config import ImpConfig
from impvlm.errors import ConfigError
from impvlm.towers import CLIP, SIGLIP, tower_family


@dataclass(frozen=True)
class LMSpec:
    """Phi LM dimensions (transformers ``PhiConfig`` names)."""

    hidden_size: int = 2560
    intermediate_size: int = 10240
    num_hidden_layers: int = 32
    num_attention_heads: int = 32
    partial_rotary_factor: float = 0.4
    vocab_size: int = 51200
    max_position_embeddings: int = 2048
    layer_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    hidden_act: str = "gelu_new"


@dataclass(frozen=True)
class VisionSpec:
    """Vision tower dimensions; ``num_hidden_layers`` is how many layers the tower holds."""

    model_type: str = SIGLIP.model_type
    hidden_size: int = 1152
    intermediate_size: int = 4304
    num_hidden_layers: int = 26
    num_attention_heads: int = 16
    image_size: int = 384
    patch_size: int = 14
    hidden_act: str = "gelu_pytorch_tanh"
    layer_norm_eps: float = 1e-6


@dataclass(frozen=True)
class ModelPreset:
    name: str
    description: str
    lm: LMSpec = field(default_factory=LMSpec)
    vision: VisionSpec = field(default_factory=VisionSpec)
    projector: str = "mlp2x_gelu"
    select_layer: int = -1
    select_feature: str = "patch"
    aspect_ratio: str = "squash"
    template: str = "phi2"
    image_token_index: int = 50296
    eos_token_id: int = 50295
    pad_token_id: int = 50256
    model_max_length: int = 3072

    def config(self, **overrides: Any) -> ImpConfig:
        lm = asdict(self.lm)
        vision = asdict(self.vision)
        vision.update(tower_family(vision["model_type"]).config_overrides)
        values: dict[str, Any] = dict(
            **lm,
            vision_config=vision,
            mm_projector_type=self.projector,
            mm_vision_select_layer=self.select_layer,
            mm_vision_select_feature=self.select_feature,
            image_aspect_ratio=self.aspect_ratio,
            template=self.template,
            image_token_index=self.image_token_index,
            eos_token_id=self.eos_token_id,
            pad_token_id=self.pad_token_id,
            bos_token_id=None,
            tie_word_embeddings=False,
            model_id=self.name,
            tokenizer_model_max_length=self.model_max_length,
        )
        values.update(overrides)
        return ImpConfig(**values)


_SO400M = VisionSpec()
_TINY_LM = LMSpec(
    hidden_size=256,
    intermediate_size=1024,
    num_hidden_layers=4,
    num_attention_heads=4,
    partial_rotary_factor=0.5,
    vocab_size=1024,
    max_position_embeddings=512,
)
_TINY_SIGLIP = VisionSpec(
    hidden_size=128,
    intermediate_size=512,
    num_hidden_layers=3,
    num_attention_heads=4,
    image_size=64,
    patch_size=16,
)

PRESETS: dict[str, ModelPreset] = {
    p.name: p
    for p in [
        ModelPreset("imp-v1-3b", "Imp v1 3B: Phi-2 + SigLIP-so400m (26 of 27 layers), 729 image tokens"),
        ModelPreset(
            "imp-v1.5-3b-196",
            "Imp v1.5 3B, 196 image tokens (the phone variant): SigLIP-so400m at 196 px",
            vision=replace(_SO400M, image_size=196),
            aspect_ratio="pad",
        ),
        ModelPreset(
            "llava-phi-3b",
            "LLaVA-Phi 3B: Phi-2 + CLIP ViT-L/14-336 (hidden_states[-2], CLS dropped), 576 image tokens",
            vision=VisionSpec(
                model_type=CLIP.model_type,
                hidden_size=1024,
                intermediate_size=4096,
                num_hidden_layers=24,
                num_attention_heads=16,
                image_size=336,
                patch_size=14,
                hidden_act="quick_gelu",
                layer_norm_eps=1e-5,
            ),
            select_layer=-2,
            aspect_ratio="pad",
            template="phi-2_v0",
            eos_token_id=50256,
        ),
        ModelPreset(
            "imp-tiny",
            "tiny Imp for tests and the offline pipeline: Phi hidden 256 x 4 layers, SigLIP 64 px, 16 tokens",
            lm=_TINY_LM,
            vision=_TINY_SIGLIP,
            image_token_index=2,
            eos_token_id=1,
            pad_token_id=0,
            model_max_length=512,
        ),
        ModelPreset(
            "llava-phi-tiny",
            "tiny LLaVA-Phi for tests: Phi hidden 256 x 4 layers, CLIP 64 px (hidden_states[-2], CLS dropped)",
            lm=_TINY_LM,
            vision=VisionSpec(
                model_type=CLIP.model_type,
                hidden_size=128,
                intermediate_size=512,
                num_hidden_layers=3,
                num_attention_heads=4,
                image_size=64,
                patch_size=16,
                hidden_act="quick_gelu",
                layer_norm_eps=1e-5,
            ),
            select_layer=-2,
            aspect_ratio="pad",
            template="phi-2_v0",
            image_token_index=2,
            eos_token_id=0,
            pad_token_id=0,
            model_max_length=512,
        ),
    ]
}


def get_preset(name: str) -> ModelPreset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}") from None


def build_config(name: str, tokenizer: Any = None, **overrides: Any) -> ImpConfig:
    """The preset's config; with a tokenizer, token ids come from it (``<image>``, eos, pad)."""
    preset = get_preset(name)
    if tokenizer is not None:
        overrides = {**special_token_overrides(tokenizer, preset), **overrides}
    return preset.config(**overrides)


def special_token_overrides(tokenizer: Any, preset: ModelPreset) -> dict[str, Any]:
    from impvlm.templates import IMAGE_TOKEN, get_template

    image_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    stop_id = tokenizer.convert_tokens_to_ids(get_template(preset.template).stop_str)
    if image_id is None or image_id == tokenizer.unk_token_id:
        raise ConfigError(f"the tokenizer has no {IMAGE_TOKEN} token")
    vocab = max(preset.lm.vocab_size, len(tokenizer))
    return {
        "image_token_index": image_id,
        "eos_token_id": stop_id,
        "pad_token_id": tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stop_id,
        "vocab_size": vocab,
    }
