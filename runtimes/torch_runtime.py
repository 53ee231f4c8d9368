"""`TorchRuntime`: an impvlm (or upstream Imp) checkpoint on PyTorch, CPU or CUDA."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import DynamicCache

from impvlm.checkpoint import checkpoint_hash, read_checkpoint
from impvlm.image_processing import ImageProcessor
from impvlm.templates import get_template
from impvlm.tokenizer import single_token_id
from impvlm.upstream import Parts
from runtimes.base import Runtime

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


class TorchRuntime(Runtime):
    name = "torch"
    batched = True
    batch_memory_mb: float = 2048.0  # KV cache of the sequences decoded together

    def __init__(
        self,
        checkpoint: str | Path,
        device: str | None = None,
        dtype: str = "fp32",
        threads: int | None = None,
        context_length: int | None = None,
        language_model: str | Path | None = None,
        vision_tower: str | Path | None = None,
    ) -> None:
        super().__init__()
        if threads:
            torch.set_num_threads(threads)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.dtype_name = dtype
        self.checkpoint = Path(checkpoint)
        reading = read_checkpoint(self.checkpoint, Parts.of(language_model, vision_tower))
        self.model = reading.model(DTYPES[dtype], self.device)
        config = self.model.config
        hf_tokenizer = reading.tokenizer()
        self.tokenizer = hf_tokenizer.backend_tokenizer
        self.template = get_template(config.template)
        self.image_processor = ImageProcessor.from_config(config)
        self.num_image_tokens = config.num_image_tokens
        self.context_length = context_length or config.max_position_embeddings
        stop_id = single_token_id(hf_tokenizer, self.template.stop_str)
        self.stop_ids = frozenset(i for i in (stop_id, config.eos_token_id) if i is not None)
        self.special_ids = frozenset(hf_tokenizer.all_special_ids)
        self.threads = torch.get_num_threads()
        self._cache = DynamicCache()
        self._embed = self.model.get_input_embeddings()
        self._checkpoint_sha256 = checkpoint_hash(reading)

    def identity(self) -> dict[str, Any]:
        return {
            "runtime": self.name,
            "checkpoint": str(self.checkpoint),
            "checkpoint_sha256": self._checkpoint_sha256,
            "model_id": self.model.config.model_id,
            "dtype": self.dtype_name,
            "device": str(self.device),
            "threads": self.threads,
        }

    @torch.inference_mode()
    def _encode_pixels(self, pixels: np.ndarray) -> np.ndarray:
        feats = self.model.encode_images(torch.from_numpy(pixels).to(self.device))
        return feats.float().cpu().numpy()

    def _truncate(self, n: int) -> None:
        if n == 0:
            self._cache = DynamicCache()
        else:
            self._cache.crop(n)

    @torch.inference_mode()
    def _forward(self, embeds: torch.Tensor) -> np.ndarray:
        start = self._cache.get_seq_length()
        positions = torch.arange(start, start + embeds.shape[0], device=self.device)[None]
        out = self.model(
            inputs_embeds=embeds[None],
            position_ids=positions,
            past_key_values=self._cache,
            use_cache=True,
            logits_to_keep=1,
        )
        self._cache = out.past_key_values
        return out.logits[0, -1].float().cpu().numpy()

    @torch.inference_mode()
    def _eval_tokens(self, ids: list[int]) -> np.ndarray:
        return self._forward(self._embed(torch.tensor(ids, device=self.device)))

    @torch.inference_mode()
    def _eval_embeddings(self, embeddings: np.ndarray) -> np.ndarray:
        return self._forward(torch.from_numpy(embeddings).to(self.device, self._embed.weight.dtype))

    # ------------------------------------------------------------------ batch hooks
    def batch_capacity(self, prefix: int, per_sequence: int) -> int:
        """Each sequence holds its own copy of the prefix: as many as fit ``batch_memory_mb``."""
        config = self.model.config
        per_position = 2 * config.num_hidden_layers * config.hidden_size * self._embed.weight.element_size()
        fit = int(self.batch_memory_mb * 2**20 // (per_position * (prefix + per_sequence)))
        return max(1, min(self.max_batch, fit))

    def _fork(self, n: int) -> None:
        length = self._cache.get_seq_length()
        self._cache.batch_repeat_interleave(n)
        self._mask = torch.ones(n, length, dtype=torch.long, device=self.device)  # (n, T): 0 = padding
        self._next = torch.full((n,), length, device=self.device)  # each sequence's next position
        self._rows = list(range(n))  # the sequence of each cache row

    @torch.inference_mode()
    def _eval_many(self, rows: Sequence[list[int]]) -> np.ndarray:
        """Rows of unequal length are padded in the middle (after the shared prefix, before their
        tokens), masked out and skipped in the positions, so every row ends at the same slot."""
        keep = [i for i, seq in enumerate(self._rows) if rows[seq]]
        if len(keep) < len(self._rows):
            index = torch.tensor(keep, device=self.device)
            self._cache.batch_select_indices(index)
            self._mask, self._next = self._mask[index], self._next[index]
            self._rows = [self._rows[i] for i in keep]
        lengths = torch.tensor([len(rows[seq]) for seq in self._rows], device=self.device)
        width = int(lengths.max())
        ids = torch.zeros(len(self._rows), width, dtype=torch.long, device=self.device)
        for i, seq in enumerate(self._rows):
            ids[i, width - len(rows[seq]) :] = torch.tensor(rows[seq])
        slots = torch.arange(width, device=self.device)[None] - (width - lengths)[:, None]  # (B, W), < 0: pad
        self._mask = torch.cat([self._mask, (slots >= 0).long()], dim=1)
        out = self.model(
            inputs_embeds=self._embed(ids),
            attention_mask=self._mask,
            position_ids=self._next[:, None] + slots.clamp(min=0),
            past_key_values=self._cache,
            use_cache=True,
            logits_to_keep=1,
        )
        self._cache, self._next = out.past_key_values, self._next + lengths
        return out.logits[:, -1].float().cpu().numpy()

    def _join(self, n: int) -> None:
        self._cache.batch_select_indices(torch.tensor([0], device=self.device))
        self._cache.crop(n)
