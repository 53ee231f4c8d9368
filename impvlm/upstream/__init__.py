"""Published Imp and LLaVA-Phi checkpoint layouts, read from disk without running code shipped in them.

One reader per layout (:mod:`impvlm.upstream.layouts`), tried in the order of :data:`LAYOUTS`:

=============  ===========================================================================
imp-lora       an Imp stage-2 LoRA output: adapter_config.json, adapter_model.*, non_lora_trainables.bin
imp-stage1     an Imp stage-1 output: mm_projector.bin (+ config.json)
llava-phi      LLaVA-Phi as released (model_type ``llava_phi``, CLIP tower nested in vision_config)
imp            Imp as released on the Hub (imp-v1-3b in phi-msft names, Imp-v1.5 in Phi names)
imp-train      an Imp full fine-tune written by the GitHub training code (tower given as a hub id)
=============  ===========================================================================

A reader turns the folder into a :class:`Reading`: the :class:`~impvlm.config.ImpConfig`, why its
template was chosen, the tokenizer it runs with and the weight files, all without reading weights;
:meth:`Reading.load` then builds the model. Parts a layout does not hold (the base Phi-2 of a stage
output, a tower recorded only as a hub id) come from local folders in :class:`Parts`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from impvlm.errors import CheckpointError
from impvlm.upstream.tokens import TokenPlan

if TYPE_CHECKING:
    import torch

    from impvlm.config import ImpConfig
    from impvlm.modeling import ImpForCausalLM
    from impvlm.upstream.layouts import Layout


@dataclass(frozen=True)
class Parts:
    """Local folders for what a checkpoint only names: its base language model and vision tower."""

    language_model: Path | None = None
    vision_tower: Path | None = None

    @classmethod
    def of(cls, language_model: str | Path | None = None, vision_tower: str | Path | None = None) -> Parts:
        for what, value in (("--language-model", language_model), ("--vision-tower", vision_tower)):
            if value is not None and not Path(value).is_dir():
                raise CheckpointError(f"{what} folder not found: {value}")
        return cls(
            Path(language_model) if language_model else None, Path(vision_tower) if vision_tower else None
        )


@dataclass
class Reading:
    """What a layout reader made of a checkpoint folder (no weights read yet)."""

    folder: Path
    layout: Layout
    config: ImpConfig
    tokens: TokenPlan
    weight_files: list[Path]
    parts: Parts
    notes: list[str]
    variant: str = ""  # e.g. which Phi config names the folder uses

    def load(self, dtype: torch.dtype | None = None) -> ImpForCausalLM:
        """The model with the folder's (and the parts') weights, checked tensor by tensor; ``dtype``
        is a hint (the caller casts)."""
        return self.layout.load(self, dtype)

    def model(self, dtype: torch.dtype | None = None, device: str | torch.device = "cpu") -> ImpForCausalLM:
        """:meth:`load`, cast to ``dtype``, on ``device``, in eval mode."""
        model = self.load(dtype)
        if dtype is not None:
            model = model.to(dtype)
        return model.to(device).eval()

    def tokenizer(self) -> Any:
        """The tokenizer the model runs with (tokens the training code added, added again)."""
        from impvlm.upstream.tokens import load_upstream_tokenizer

        if self.tokens.tokenizer_dir is None:
            raise CheckpointError(
                f"{self.folder} has no tokenizer files (tokenizer.json or vocab.json + merges.txt)"
                + (
                    ""
                    if self.layout.name == "impvlm" or self.parts.language_model
                    else ": pass --language-model PATH to use its tokenizer"
                )
            )
        return load_upstream_tokenizer(self.tokens.tokenizer_dir, self.tokens.added_tokens)[0]


def read_upstream(folder: Path, raw: dict[str, Any], parts: Parts | None = None) -> Reading:
    """The :class:`Reading` of an upstream checkpoint folder whose config.json holds ``raw``."""
    from impvlm.upstream.layouts import LAYOUTS

    parts = parts or Parts()
    for layout in LAYOUTS:
        if layout.matches(folder, raw):
            return layout.read(folder, raw, parts)
    known = sorted({t for layout in LAYOUTS for t in layout.model_types})
    raise CheckpointError(
        f"{folder / 'config.json'}: model_type {raw.get('model_type')!r} is not a layout impvlm reads "
        f"(impvlm, {', '.join(known)})"
    )


__all__ = ["Parts", "Reading", "TokenPlan", "read_upstream"]
