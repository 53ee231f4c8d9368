"""`TorchRuntime`: an impvlm (or upstream Imp) checkpoint on PyTorch, CPU or CUDA."""

from __future__ import annotations

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
