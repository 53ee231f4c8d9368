"""Checkpoints shipped inside the package, trained by the project's own chain and stored in fp16.

``imp-tiny-synthetic`` is the tiny Imp (preset ``imp-tiny``) trained on the offline synthetic shapes
world by the stages of ``imp pipeline --train`` (synthetic world and tower, the tiny recipes, merge).
``imp pipeline`` starts from it. Each shipped folder is an ordinary impvlm checkpoint (``config.json``,
``model.safetensors``, tokenizer files) plus ``card.json``: how it was made (recipes, overrides, data
sizes, seed, source checkpoint hash) and its held-out exact-answer accuracy, measured on the stored
fp16 weights as :func:`impvlm.checkpoint.load_model` loads them.

:func:`ship_checkpoint` writes such a folder from a merged checkpoint; the card of ``imp-tiny-synthetic``
holds the command that made it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from impvlm.errors import CheckpointError

SHIPPED_ROOT = Path(__file__).parent
TINY_SYNTHETIC = "imp-tiny-synthetic"
CARD_FILE = "card.json"


def shipped_names() -> list[str]:
    return sorted(p.name for p in SHIPPED_ROOT.iterdir() if (p / CARD_FILE).is_file())


def shipped_checkpoint(name: str = TINY_SYNTHETIC) -> Path:
    """The folder of a shipped checkpoint (for :func:`impvlm.checkpoint.load_model` or ``torch:PATH``)."""
    folder = SHIPPED_ROOT / name
    if not (folder / CARD_FILE).is_file() or not (folder / "config.json").is_file():
        raise CheckpointError(
            f"no shipped checkpoint {name!r} in {SHIPPED_ROOT} (shipped: {', '.join(shipped_names()) or 'none'})"
        )
    return folder


def read_card(name: str = TINY_SYNTHETIC) -> dict[str, Any]:
    """The card of a shipped checkpoint: its recipe and its recorded held-out accuracy."""
    return json.loads((shipped_checkpoint(name) / CARD_FILE).read_text(encoding="utf-8"))


def ship_checkpoint(
    source: str | Path,
    out_dir: str | Path,
    card: dict[str, Any],
    eval_json: str | Path,
    eval_limit: int | None = None,
) -> dict[str, Any]:
    """Store the merged checkpoint ``source`` in fp16 under ``out_dir`` with its card; returns the card.

    ``card`` says how ``source`` was made; the held-out accuracy on ``eval_json`` (first ``eval_limit``
    records) is measured on the written fp16 folder and added to it, with the source's hash.
    """
    from impvlm.checkpoint import checkpoint_hash, load_model, save_checkpoint
    from impvlm.tokenizer import load_tokenizer
    from impvlm.train.evaluate import exact_accuracy

    source = Path(source)
    model = load_model(source).half()
    out = save_checkpoint(model, load_tokenizer(source), Path(out_dir))
    held_out = exact_accuracy(out, eval_json, limit=eval_limit)
    full = {
        **card,
        "weights": "float16 (loaded as float32 by impvlm.checkpoint.load_model)",
        "source_sha256": checkpoint_hash(source),
        "held_out": {k: held_out[k] for k in ("overall", "per_kind", "count", "n")},
    }
    (out / CARD_FILE).write_text(json.dumps(full, indent=2) + "\n", encoding="utf-8")
    return full
