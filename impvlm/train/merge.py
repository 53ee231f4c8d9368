"""``imp merge``: fold stage outputs into one checkpoint in the foundation format (the input of export).

``merge_checkpoint(stages, out_dir)`` takes one stage output or a chain of them, applied in order:

- a full checkpoint (impvlm or upstream Imp / a non-LoRA stage output): the weights are replaced by it;
- a LoRA folder (``adapter_config.json`` + adapter weights + ``non_lora_trainables``; this project's
  stage-2 output or upstream Imp's): LoRA is folded into the LM (``W += alpha / r * B @ A``) and the
  projector replaced;
- a projector (upstream stage 1's ``mm_projector.bin``, or a folder holding it): the projector replaced.

When the chain does not start with a full checkpoint the starting model comes from ``base`` (a
checkpoint folder), or from the base recorded in this project's ``stage.json``, or, for upstream stage
folders, from their ``config.json`` filled from ``language_model`` (a Phi-2 folder) and ``vision_tower``
(a SigLIP / CLIP folder). Example (upstream Imp v1)::

    merge_checkpoint(["imp-v1-3b-pretrain", "imp-v1-3b-lora"], "imp-v1-3b-merged",
                     language_model="phi-2", vision_tower="siglip-so400m-patch14-384")
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from impvlm.checkpoint import save_checkpoint
from impvlm.errors import CheckpointError
from impvlm.modeling import ImpForCausalLM
from impvlm.train.atomic import write_json_atomic
from impvlm.train.weights import (
    PROJECTOR_WEIGHTS,
    apply_lora_dir,
    build_from_parts,
    config_of,
    copy_tensors,
    first_existing,
    is_lora_dir,
    load_start_model,
    projector_state,
    read_stage_info,
    resolve_base,
)
from impvlm.upstream import Parts

log = logging.getLogger(__name__)

MERGE_FILE = "merge.json"


def merge_checkpoint(
    stages: str | Path | list[str | Path],
    out_dir: str | Path,
    *,
    base: str | Path | None = None,
    language_model: str | Path | None = None,
    vision_tower: str | Path | None = None,
    tokenizer: str | Path | None = None,
) -> Path:
    """Merge stage outputs into ``out_dir`` (config.json + safetensors + tokenizer); returns ``out_dir``."""
    from impvlm.train.tokens import load_training_tokenizer

    items = [Path(s) for s in (stages if isinstance(stages, list | tuple) else [stages])]
    if not items:
        raise CheckpointError("nothing to merge: give at least one stage output")
    started = time.perf_counter()
    model: ImpForCausalLM | None = None
    has_projector = False  # a model built from LM + tower folders needs a trained projector from the chain
    tokenizer_dir: Path | None = Path(tokenizer) if tokenizer else None
    for item in items:
        kind = _kind(item)
        log.info("merge: %s (%s)", item, kind)
        if kind == "checkpoint":
            model, found = load_start_model(item, parts=Parts.of(language_model, vision_tower))
            tokenizer_dir, has_projector = tokenizer_dir or found, True
            continue
        if model is None:
            model, found = _starting_model(item, base, language_model, vision_tower, items[-1])
            tokenizer_dir, has_projector = tokenizer_dir or found, found is not None
        if kind == "lora":
            replaced = apply_lora_dir(model, item)
            has_projector = has_projector or any(k.startswith("mm_projector.") for k in replaced)
        else:
            copy_tensors(model, projector_state(item, model), item)
            has_projector = True
    assert model is not None
    if not has_projector:
        raise CheckpointError(
            "no stage in the chain holds a trained projector: add the stage-1 output (mm_projector.bin)"
        )
    if tokenizer_dir is None or not _has_tokenizer(tokenizer_dir):
        tokenizer_dir = next(
            (p for p in [*items[::-1], language_model] if p and _has_tokenizer(Path(p))), None
        )
    if tokenizer_dir is None:
        raise CheckpointError("no tokenizer found in the stage folders: pass tokenizer=FOLDER (--tokenizer)")
    tok = load_training_tokenizer(tokenizer_dir, model.config)
    out = save_checkpoint(model.eval(), tok, Path(out_dir))
    info = {
        "sources": [str(p.resolve()) for p in items],
        "base": str(Path(base).resolve()) if base else None,
        "language_model": str(language_model) if language_model else None,
        "vision_tower": str(vision_tower) if vision_tower else None,
        "tokenizer": str(Path(tokenizer_dir).resolve()),
        "seconds": round(time.perf_counter() - started, 2),
    }
    write_json_atomic(out / MERGE_FILE, info)
    log.info("merged %d stage output(s) into %s", len(items), out)
    return out


def _kind(path: Path) -> str:
    if path.is_file() and path.name in PROJECTOR_WEIGHTS:
        return "projector"
    if not path.is_dir():
        raise CheckpointError(f"stage output not found: {path}")
    if is_lora_dir(path):
        return "lora"
    if first_existing(path, PROJECTOR_WEIGHTS) is not None:
        return "projector"
    return "checkpoint"


def _starting_model(
    item: Path,
    base: str | Path | None,
    language_model: str | Path | None,
    vision_tower: str | Path | None,
    last: Path,
) -> tuple[ImpForCausalLM, Path | None]:
    """The model a LoRA / projector stage applies to; for upstream folders, of the config of the chain's
    last stage (the template and ids the merged model answers with: stage 1 trained another one)."""
    if base is not None:
        return load_start_model(base)
    folder = item if item.is_dir() else item.parent
    recorded = resolve_base(folder, read_stage_info(folder))
    if recorded is not None:
        return load_start_model(recorded)
    if not (folder / "config.json").is_file():
        raise CheckpointError(f"{item}: no base to apply it to: pass base=FOLDER (--base)")
    if not (language_model and vision_tower):
        raise CheckpointError(
            f"{item} is an upstream stage output: pass the base language model and vision tower folders "
            "(--language-model, --vision-tower) or a full base checkpoint (--base)"
        )
    last = last if last.is_dir() and (last / "config.json").is_file() else folder
    config = config_of(last, Parts.of(language_model, vision_tower))
    return build_from_parts(config, language_model, vision_tower), None


def _has_tokenizer(folder: Path) -> bool:
    return folder.is_dir() and ((folder / "tokenizer.json").is_file() or (folder / "vocab.json").is_file())
