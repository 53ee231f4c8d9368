"""`ImpForCausalLM`: transformers' `PhiForCausalLM` with a vision tower and a projector.

Every ``<image>`` token of the prompt is replaced by the projected features of one image (N
embeddings); labels there are ``IGNORE_INDEX``. Padding may be on either side (it is read off the
attention mask), batches may mix samples with and without images, and a sample may hold several
images (they are consumed in order of appearance).

Example::

    model = ImpForCausalLM(build_config("imp-tiny"))
    ids = tokenizer(template.question_prompt("What colour?"), return_tensors="pt").input_ids
    out = model.generate(input_ids=ids, pixel_values=pixels, max_new_tokens=8)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForCausalLM, PhiForCausalLM

from impvlm.config import ImpConfig
from impvlm.errors import DataError
from impvlm.projector import build_projector
from impvlm.templates import IGNORE_INDEX
from impvlm.vision import VisionTower


@dataclass
class MultimodalInputs:
    inputs_embeds: torch.Tensor  # (B, T, D)
    attention_mask: torch.Tensor  # (B, T)
    position_ids: torch.Tensor  # (B, T)
    labels: torch.Tensor | None  # (B, T)


class ImpForCausalLM(PhiForCausalLM):
    config_class = ImpConfig

    def __init__(self, config: ImpConfig) -> None:
        super().__init__(config)
        self.vision_tower = VisionTower(config)
        self.mm_projector = build_projector(
            config.mm_projector_type, config.vision_hidden_size, config.hidden_size
        )
        self.post_init()

    # ------------------------------------------------------------------ images
    def encode_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """``(B_img, 3, H, W) -> (B_img, N, D_lm)``: tower, then projector."""
        features = self.vision_tower(pixel_values)
        projector_dtype = next(self.mm_projector.parameters(), features).dtype
        return self.mm_projector(features.to(projector_dtype))

    def prepare_multimodal(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        image_features: torch.Tensor | None = None,
    ) -> MultimodalInputs:
        """Splice image features in at the ``<image>`` tokens and re-pad the batch."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        attention_mask = attention_mask.bool()
        if image_features is None and pixel_values is not None and pixel_values.shape[0] > 0:
            image_features = self.encode_images(pixel_values)
        image_token = self.config.image_token_index
        n_tags = int((input_ids[attention_mask] == image_token).sum())
        n_images = 0 if image_features is None else int(image_features.shape[0])
        if n_tags != n_images:
            raise DataError(f"the batch has {n_tags} <image> tokens but {n_images} images")
        embed = self.get_input_embeddings()
        left_padded = bool((~attention_mask[:, 0]).any()) and bool(attention_mask[:, -1].all())
        seqs, seq_labels = [], []
        next_image = 0
        for b in range(input_ids.shape[0]):
            ids = input_ids[b][attention_mask[b]]
            lab = labels[b][attention_mask[b]] if labels is not None else None
            text_embeds = embed(ids.clamp(min=0))  # (T_b, D); the image sentinel is negative
            parts, part_labels = [], []
            start = 0
            for pos in (ids == image_token).nonzero().flatten().tolist():
                parts.append(text_embeds[start:pos])
                feats = image_features[next_image].to(text_embeds.dtype)  # (N, D)
                next_image += 1
                parts.append(feats)
                if lab is not None:
                    part_labels += [lab[start:pos], lab.new_full((feats.shape[0],), IGNORE_INDEX)]
                start = pos + 1
            parts.append(text_embeds[start:])
            seqs.append(torch.cat(parts))
            if lab is not None:
                part_labels.append(lab[start:])
                seq_labels.append(torch.cat(part_labels))
        return _pad_batch(seqs, seq_labels if labels is not None else None, left_padded)

    # ------------------------------------------------------------------ forward / generate
    def forward(  # type: ignore[override]
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: Any = None,
        inputs_embeds: torch.FloatTensor | None = None,
        labels: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        image_features: torch.FloatTensor | None = None,
        **kwargs: Any,
    ):
        has_images = pixel_values is not None or image_features is not None
        if input_ids is not None and inputs_embeds is None and has_images:
            mm = self.prepare_multimodal(input_ids, attention_mask, labels, pixel_values, image_features)
            input_ids, inputs_embeds, attention_mask = None, mm.inputs_embeds, mm.attention_mask
            position_ids, labels = mm.position_ids, mm.labels
        elif (
            input_ids is not None
            and (past_key_values is None or past_key_values.get_seq_length() == 0)
            and bool((input_ids == self.config.image_token_index).any())
        ):
            raise DataError("the prompt has <image> tokens but no images were given")
        return super().forward(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            inputs_embeds=inputs_embeds,
            labels=labels,
            **kwargs,
        )

    @torch.no_grad()
    def generate(  # type: ignore[override]
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        image_features: torch.Tensor | None = None,
        **kwargs: Any,
    ):
        """Like ``PhiForCausalLM.generate``; with images, returns only the new tokens."""
        if input_ids is not None and (pixel_values is not None or image_features is not None):
            mm = self.prepare_multimodal(input_ids, attention_mask, None, pixel_values, image_features)
            return super().generate(
                inputs_embeds=mm.inputs_embeds, attention_mask=mm.attention_mask.long(), **kwargs
            )
        return super().generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)


def _pad_batch(seqs: list[torch.Tensor], labels: list[torch.Tensor] | None, left: bool) -> MultimodalInputs:
    longest = max(s.shape[0] for s in seqs)
    batch, dim = len(seqs), seqs[0].shape[-1]
    embeds = seqs[0].new_zeros((batch, longest, dim))
    mask = torch.zeros((batch, longest), dtype=torch.long, device=seqs[0].device)
    out_labels = None
    if labels is not None:
        out_labels = torch.full((batch, longest), IGNORE_INDEX, dtype=torch.long, device=seqs[0].device)
    for b, seq in enumerate(seqs):
        n = seq.shape[0]
        span = slice(longest - n, longest) if left else slice(0, n)
        embeds[b, span] = seq
        mask[b, span] = 1
        if out_labels is not None and labels is not None:
            out_labels[b, span] = labels[b]
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    return MultimodalInputs(embeds, mask, position_ids, out_labels)


AutoConfig.register(ImpConfig.model_type, ImpConfig, exist_ok=True)
AutoModelForCausalLM.register(ImpConfig, ImpForCausalLM, exist_ok=True)
