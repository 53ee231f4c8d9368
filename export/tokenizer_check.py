"""Is a tokenizer the checkpoint's own? Checked before anything is exported.

The parity checks of an export cannot see a wrong tokenizer: PyTorch and llama.cpp are then fed the
same wrong ids and agree perfectly, and the bundle answers nonsense. So the tokenizer is checked
against what the checkpoint itself says:

- its ids fit the embedding (a Phi-2 tokenizer has ~50.3k tokens for 51,200 rows: padding rows after
  the last token are normal, ids past the last row are not);
- the config's eos / pad / bos ids are special (or added) tokens of it, not ordinary words;
- with ``--tokenizer DIR`` and tokenizer files in the checkpoint too, both have the same vocabulary,
  merges and added tokens.

(The ``<image>`` id and the template's stop token are checked where the bundle's token ids are
made, :func:`export.bundle._token_ids`.) :func:`tokenizer_sha256` is the tokenizer's identity, recorded
in the manifest and recomputed from the bundle's ``tokenizer.json`` when the bundle is loaded.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from export.errors import ExportError
from impvlm.errors import CheckpointError

log = logging.getLogger(__name__)

#: Config fields naming special token ids (``image_token_index`` is checked by ``_token_ids``).
SPECIAL_ID_FIELDS = ("eos_token_id", "pad_token_id", "bos_token_id")
#: What :func:`check_tokenizer` compared the tokenizer with, as recorded in the manifest.
CHECK_EMBEDDING = "ids fit the embedding rows"
CHECK_SPECIAL_IDS = "the config's special token ids"
CHECK_CHECKPOINT = "the checkpoint's own tokenizer"


@dataclass(frozen=True)
class TokenizerInfo:
    """The manifest's ``tokenizer_info``: which tokenizer the bundle ships, checked against what."""

    source: str  # "checkpoint", or the folder given with --tokenizer
    tokens: int  # len(tokenizer); the embedding may have padding rows after the last id
    sha256: str  # tokenizer_sha256: vocabulary, merges and added tokens
    checked: list[str]  # what check_tokenizer compared it with


def tokenizer_sha256(backend: Any) -> str:
    """sha256 of what decides a tokenizer's ids: model type, vocabulary, merges and added tokens.

    ``backend`` is a ``tokenizers.Tokenizer`` (``tokenizer.backend_tokenizer`` of a fast HF
    tokenizer, or ``Tokenizer.from_file("tokenizer.json")``); the digest does not depend on how the
    file was formatted or which library version saved it.
    """
    data = json.loads(backend.to_str())
    model = data.get("model") or {}
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges") or []]
    added = sorted(
        [int(t["id"]), str(t["content"]), bool(t.get("special"))] for t in data.get("added_tokens") or []
    )
    payload = {"type": model.get("type"), "vocab": model.get("vocab"), "merges": merges, "added": added}
    text = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def check_tokenizer(
    model: Any, tokenizer: Any, checkpoint: str | Path, tokenizer_dir: str | Path | None
) -> TokenizerInfo:
    """Raise :class:`ExportError` (one line naming what differs) unless ``tokenizer`` is the model's.

    Args:
        model: the loaded checkpoint (its embedding rows and config are the reference).
        tokenizer: the fast HF tokenizer the bundle would ship.
        checkpoint: the checkpoint folder.
        tokenizer_dir: the ``--tokenizer`` folder, or None when the tokenizer is the checkpoint's.

    Returns:
        What the manifest records about the tokenizer.
    """
    checkpoint = Path(checkpoint)
    rows = int(model.get_input_embeddings().weight.shape[0])
    _check_fits(tokenizer, rows, int(model.config.vocab_size))
    _check_special_ids(model.config, tokenizer)
    checked = [CHECK_EMBEDDING, CHECK_SPECIAL_IDS]
    folder = Path(tokenizer_dir).resolve() if tokenizer_dir is not None else None
    if folder is not None and folder != checkpoint.resolve():
        own = _own_tokenizer(checkpoint)
        if own is not None:
            _check_same(tokenizer, folder, own, checkpoint)
            checked.append(CHECK_CHECKPOINT)
    source = str(folder) if folder is not None and folder != checkpoint.resolve() else "checkpoint"
    return TokenizerInfo(source, len(tokenizer), tokenizer_sha256(tokenizer.backend_tokenizer), checked)


def _check_fits(tokenizer: Any, rows: int, vocab_size: int) -> None:
    last = max(tokenizer.get_vocab().values())
    if last >= rows:
        raise ExportError(
            f"the tokenizer has {len(tokenizer)} tokens (ids up to {last}) but the model embeds only "
            f"{rows} (vocab_size {vocab_size}): another model's tokenizer"
        )


def _check_special_ids(config: Any, tokenizer: Any) -> None:
    special = set(tokenizer.added_tokens_decoder) | set(tokenizer.all_special_ids)
    for field in SPECIAL_ID_FIELDS:
        value = getattr(config, field, None)
        for token_id in value if isinstance(value, (list, tuple)) else [value]:
            if token_id is None or int(token_id) in special:
                continue
            token = tokenizer.convert_ids_to_tokens(int(token_id))
            what = "is not a token of" if token is None else f"is the ordinary token {token!r} in"
            raise ExportError(
                f"the model's {field} {token_id} {what} this tokenizer, not a special token: "
                "another model's tokenizer"
            )


def _own_tokenizer(checkpoint: Path) -> Any | None:
    """The checkpoint's own tokenizer, or None when it has none (or one that cannot be read)."""
    from impvlm.tokenizer import load_tokenizer

    if not any((checkpoint / name).is_file() for name in ("tokenizer.json", "vocab.json")):
        return None
    try:
        return load_tokenizer(checkpoint)
    except CheckpointError as exc:
        log.warning("cannot compare --tokenizer with the checkpoint's own tokenizer: %s", exc)
        return None


def _check_same(tokenizer: Any, folder: Path, own: Any, checkpoint: Path) -> None:
    given, theirs = tokenizer.get_vocab(), own.get_vocab()
    if given != theirs:
        by_id_given = {i: t for t, i in given.items()}
        by_id_theirs = {i: t for t, i in theirs.items()}
        ids = sorted(set(by_id_given) | set(by_id_theirs))
        first = next(i for i in ids if by_id_given.get(i) != by_id_theirs.get(i))
        raise ExportError(
            f"--tokenizer {folder} is not the checkpoint's tokenizer: {len(given)} vs {len(theirs)} tokens, "
            f"id {first} is {by_id_given.get(first)!r} there and {by_id_theirs.get(first)!r} in {checkpoint}"
        )
    if tokenizer_sha256(tokenizer.backend_tokenizer) != tokenizer_sha256(own.backend_tokenizer):
        raise ExportError(
            f"--tokenizer {folder} has the vocabulary of the checkpoint's tokenizer but other merges or "
            f"special tokens than the one in {checkpoint}"
        )
