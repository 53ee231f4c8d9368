"""One reader per published layout, and their registry :data:`LAYOUTS` (tried in order).

Each reader says what its folders look like (:meth:`Layout.matches`), builds the
:class:`~impvlm.config.ImpConfig` from config.json the way upstream's code reads it
(:meth:`Layout.read`) and loads the weights (:meth:`Layout.load`). Nothing shipped in a folder runs:
``auto_map`` entries and ``*.py`` files are ignored, ``.bin`` files are read with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from impvlm.errors import CheckpointError, ImpError
from impvlm.towers import CLIP
from impvlm.upstream import Parts, Reading
from impvlm.upstream.fields import (
    aspect_ratio,
    imp_tower,
    language_model_fields,
    required,
    tower_folder_fields,
    uses_msft_names,
    vision_fields,
)
from impvlm.upstream.tokens import TokenPlan, has_tokenizer, plan_tokens

if TYPE_CHECKING:
    import torch

    from impvlm.config import ImpConfig
    from impvlm.modeling import ImpForCausalLM

CONFIG_FILE = "config.json"
ADAPTER_CONFIG = "adapter_config.json"
PROJECTOR_FILES = ("mm_projector.bin", "mm_projector.safetensors")
IMP_TEMPLATE = (
    "phi2",
    "Imp with a Phi-2 LM (model_type 'imp'): its 'phi2' conversation, answers end with </s>",
)
#: Imp's training code (``--version phi2``) adds ``</s>`` to the Phi-2 tokenizer as its eos token.
IMP_ADDED_TOKENS = ("</s>",)


class Layout:
    """A published checkpoint layout. Subclasses set the class attributes and ``matches``."""

    name = ""
    title = ""
    model_types: tuple[str, ...] = ("imp",)
    template: tuple[str, str] = IMP_TEMPLATE  # (name, why), unless config.json records one
    added_tokens: tuple[str, ...] = IMP_ADDED_TOKENS

    def matches(self, folder: Path, raw: dict[str, Any]) -> bool:
        raise NotImplementedError

    # ---------------------------------------------------------------- config
    def read(self, folder: Path, raw: dict[str, Any], parts: Parts) -> Reading:
        source = folder / CONFIG_FILE
        if raw.get("mm_use_im_start_end"):
            raise CheckpointError(
                f"{source}: mm_use_im_start_end true is not supported (<im_start>/<im_end> tags)"
            )
        tokens = plan_tokens(raw, self.tokenizer_dir(folder, parts), self.template, self.added_tokens)
        vision, select, feature, projector = self.vision(folder, raw, parts)
        config = build_config(
            raw, source, tokens, vision, select, feature, projector, self.image_stats(folder)
        )
        notes = list(tokens.notes)
        files = self.weight_files(folder, parts)
        return Reading(folder, self, config, tokens, files, parts, notes, f"config in {lm_names(raw)}")

    def tokenizer_dir(self, folder: Path, parts: Parts) -> Path | None:
        return next((f for f in (folder, parts.language_model) if has_tokenizer(f)), None)

    def vision(self, folder: Path, raw: dict[str, Any], parts: Parts) -> tuple[dict[str, Any], int, str, str]:
        """(vision config dict, select layer, select feature, projector type) as Imp's code reads them."""
        source = folder / CONFIG_FILE
        vision, select = imp_tower(
            self.tower(folder, raw, parts), required(raw, "mm_vision_select_layer", source), source
        )
        return (
            vision,
            select,
            raw.get("mm_vision_select_feature", "patch"),
            raw.get("mm_projector_type", "linear"),
        )

    def tower(self, folder: Path, raw: dict[str, Any], parts: Parts) -> dict[str, Any]:
        """The tower's config: the released ``vision_tower_config``, else a local folder of the tower
        (Imp's training code records only its hub id or path, in ``mm_vision_tower``)."""
        if "vision_tower_config" in raw:
            return vision_fields(raw["vision_tower_config"], folder / CONFIG_FILE, "vision_tower_config")
        if parts.vision_tower is None:
            raise CheckpointError(
                f"{folder / CONFIG_FILE}: the vision tower is only named ({raw.get('mm_vision_tower')!r}, "
                "no vision_tower_config): pass --vision-tower PATH to a local copy of that tower"
            )
        return tower_folder_fields(parts.vision_tower)

    def image_stats(self, folder: Path) -> tuple[list[float], list[float]] | None:
        return None  # the tower family's published mean / std

    # ---------------------------------------------------------------- weights
    def weight_files(self, folder: Path, parts: Parts) -> list[Path]:
        from impvlm.checkpoint import weight_files

        return weight_files(folder)

    def load(self, reading: Reading, dtype: torch.dtype | None = None) -> ImpForCausalLM:
        """The folder's tensors renamed (:mod:`impvlm.upstream.keys`) into a new model, all checked."""
        from impvlm.checkpoint import load_checked, read_state_dict
        from impvlm.modeling import ImpForCausalLM
        from impvlm.upstream.keys import convert_state_dict

        origins: dict[str, Path] = {}
        state, sources = convert_state_dict(read_state_dict(reading.folder, origins), reading.config)
        names = {k: f"{origins[v]} ({v})" if v != k else str(origins[v]) for k, v in sources.items()}
        state.update(self.extra_state(reading, state))
        model = ImpForCausalLM(reading.config)
        load_checked(model, state, reading.folder, names)
        return model

    def extra_state(self, reading: Reading, state: dict[str, Any]) -> dict[str, Any]:
        """Tensors from the parts, for what the folder does not hold (keyed by this project's names)."""
        return {}


class ImpRelease(Layout):
    name = "imp"
    title = "Imp as released (MILVLG/imp-v1-3b, Imp-v1.5-3B-Phi2 / -196)"

    def matches(self, folder: Path, raw: dict[str, Any]) -> bool:
        return raw.get("model_type") == "imp" and "vision_tower_config" in raw


class ImpTraining(Layout):
    name = "imp-train"
    title = "Imp full fine-tune as MILVLG/imp's training code writes it"

    def matches(self, folder: Path, raw: dict[str, Any]) -> bool:
        return raw.get("model_type") == "imp"

    def weight_files(self, folder: Path, parts: Parts) -> list[Path]:
        from impvlm.checkpoint import weight_files, weight_names

        own = weight_files(folder)
        saved_tower = any(".vision_tower." in name for name in weight_names(own))
        return own if saved_tower else [*own, *weight_files(parts.vision_tower)]

    def extra_state(self, reading: Reading, state: dict[str, Any]) -> dict[str, Any]:
        """The tower's weights from --vision-tower when the fine-tune did not save them."""
        if any(k.startswith("vision_tower.") for k in state) or reading.parts.vision_tower is None:
            return {}
        import torch

        from impvlm.modeling import ImpForCausalLM
        from impvlm.train.weights import vision_tower_state

        with torch.device("meta"):
            shapes = ImpForCausalLM(reading.config)  # names and shapes only
        return vision_tower_state(reading.parts.vision_tower, shapes)


class ImpStage1(Layout):
    name = "imp-stage1"
    title = "Imp stage-1 output (projector pretraining: mm_projector.bin)"
    template = ("plain", "an Imp stage-1 output: trained on the 'plain' template (<image>, then a caption)")
    added_tokens = ()  # --version plain leaves the tokenizer as it is

    def matches(self, folder: Path, raw: dict[str, Any]) -> bool:
        return raw.get("model_type") == "imp" and any((folder / f).is_file() for f in PROJECTOR_FILES)

    def read(self, folder: Path, raw: dict[str, Any], parts: Parts) -> Reading:
        _need_base(folder, parts, self.title)
        return super().read(folder, raw, parts)

    def weight_files(self, folder: Path, parts: Parts) -> list[Path]:
        from impvlm.checkpoint import weight_files

        own = [folder / f for f in PROJECTOR_FILES if (folder / f).is_file()]
        return [*own, *weight_files(parts.language_model), *weight_files(parts.vision_tower)]

    def load(self, reading: Reading, dtype: torch.dtype | None = None) -> ImpForCausalLM:
        from impvlm.train.weights import build_from_parts

        parts = reading.parts
        return build_from_parts(reading.config, parts.language_model, parts.vision_tower, reading.folder)


class ImpLora(ImpStage1):
    name = "imp-lora"
    title = "Imp stage-2 LoRA output (adapter_model + non_lora_trainables.bin)"
    template = IMP_TEMPLATE
    added_tokens = IMP_ADDED_TOKENS

    def matches(self, folder: Path, raw: dict[str, Any]) -> bool:
        return raw.get("model_type") == "imp" and (folder / ADAPTER_CONFIG).is_file()

    def weight_files(self, folder: Path, parts: Parts) -> list[Path]:
        from impvlm.checkpoint import weight_files

        own = sorted(
            p for p in folder.glob("*") if p.name.startswith(("adapter_model.", "non_lora_trainables."))
        )
        return [*own, *weight_files(parts.language_model), *weight_files(parts.vision_tower)]

    def load(self, reading: Reading, dtype: torch.dtype | None = None) -> ImpForCausalLM:
        from impvlm.train.weights import apply_lora_dir, build_from_parts

        parts = reading.parts
        model = build_from_parts(reading.config, parts.language_model, parts.vision_tower)
        if not any(k.startswith("mm_projector.") for k in apply_lora_dir(model, reading.folder)):
            raise CheckpointError(f"{reading.folder}: non_lora_trainables holds no mm_projector weights")
        return model


class LlavaPhi(Layout):
    name = "llava-phi"
    title = "LLaVA-Phi as released (zhuyiche/llava-phi)"
    model_types = ("llava_phi",)
    template = (
        "phi-2_v0",
        "LLaVA-Phi (model_type 'llava_phi'): its 'phi-2_v0' conversation, answers end with <|endoftext|>",
    )
    added_tokens = ()
    PREPROCESSOR = "preprocessor_config.json"

    def matches(self, folder: Path, raw: dict[str, Any]) -> bool:
        return raw.get("model_type") == "llava_phi"

    def vision(self, folder: Path, raw: dict[str, Any], parts: Parts) -> tuple[dict[str, Any], int, str, str]:
        """``vision_config: {"vision_tower": {CLIP fields, mm_vision_select_*}, "mm_projector": {...}}``
        with the defaults of LLaVA-Phi's ``LlavaPhiVisionConfig`` / ``ProjectorConfig``."""
        source = folder / CONFIG_FILE
        nested = required(raw, "vision_config", source)
        if not isinstance(nested, dict) or not isinstance(nested.get("vision_tower"), dict):
            raise CheckpointError(f"{source}: vision_config.vision_tower is missing")
        tower = nested["vision_tower"]
        projector = nested.get("mm_projector") or {}
        # LLaVA-Phi's own type name for it: its CLIPVisionTower is always CLIP
        vision = vision_fields({**tower, "model_type": CLIP.model_type}, source, "vision_config.vision_tower")
        select = int(tower.get("mm_vision_select_layer", -2))
        return (
            vision,
            select,
            tower.get("mm_vision_select_feature", "patch"),
            projector.get("mm_projector_type", "linear"),
        )

    def image_stats(self, folder: Path) -> tuple[list[float], list[float]] | None:
        """Mean / std of the CLIP preprocessor_config.json; a crop that cuts a square image is refused."""
        file = folder / self.PREPROCESSOR
        if not file.is_file():
            return None
        try:
            pre = json.loads(file.read_text())
        except json.JSONDecodeError as exc:
            raise CheckpointError(f"{file} is not valid JSON: {exc}") from None
        size, crop = pre.get("size"), pre.get("crop_size")
        edge = size.get("shortest_edge") if isinstance(size, dict) else size
        crop = crop.get("height") if isinstance(crop, dict) else crop
        if pre.get("do_center_crop", True) and edge is not None and crop is not None and edge != crop:
            raise CheckpointError(
                f"{file}: crop_size {crop} differs from size {edge} (a crop that cuts square images "
                "is not supported)"
            )
        return list(pre.get("image_mean", [])) or None, list(pre.get("image_std", [])) or None  # type: ignore[return-value]


LAYOUTS: tuple[Layout, ...] = (ImpLora(), ImpStage1(), LlavaPhi(), ImpRelease(), ImpTraining())


# ---------------------------------------------------------------------------------------- helpers
def build_config(
    raw: dict[str, Any],
    source: Path,
    tokens: TokenPlan,
    vision: dict[str, Any],
    select: int,
    feature: str,
    projector: str,
    stats: tuple[list[float] | None, list[float] | None] | None,
) -> ImpConfig:
    """The :class:`ImpConfig` of an upstream config.json; a bad value names the file."""
    from impvlm.config import ImpConfig

    mean, std = stats or (None, None)
    try:
        return ImpConfig(
            **language_model_fields(raw, source),
            vision_config=vision,
            mm_projector_type=projector,
            mm_vision_select_layer=select,
            mm_vision_select_feature=feature,
            image_aspect_ratio=aspect_ratio(raw, source),
            image_mean=mean,
            image_std=std,
            image_token_index=tokens.image_token_index,
            eos_token_id=tokens.eos_token_id,
            pad_token_id=tokens.pad_token_id,
            bos_token_id=None,
            template=tokens.template,
            model_id=str(raw.get("_name_or_path") or source.parent.name),
        )
    except CheckpointError:
        raise
    except (ImpError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{source}: {str(exc).splitlines()[0]}") from None


def lm_names(raw: dict[str, Any]) -> str:
    return "phi-msft names" if uses_msft_names(raw) else "transformers Phi names"


def _need_base(folder: Path, parts: Parts, title: str) -> None:
    missing = [flag for flag, value in (("--language-model", parts.language_model),
                                        ("--vision-tower", parts.vision_tower)) if value is None]  # fmt: skip
    if missing:
        raise CheckpointError(
            f"{folder} is an {title}: pass {' and '.join(f'{m} PATH' for m in missing)} "
            "(the Phi-2 and the vision tower it was trained on)"
        )
