"""The tokenizer a stage trains with, checked against the model's special-token ids."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from impvlm.config import ImpConfig
from impvlm.errors import ConfigError
from impvlm.templates import IMAGE_TOKEN, get_template
from impvlm.tokenizer import load_tokenizer

log = logging.getLogger(__name__)


def load_training_tokenizer(folder: str | Path, config: ImpConfig) -> Any:
    """Load a tokenizer and make sure ``<image>`` and the template's stop string are single tokens with
    the ids the model uses.

    A Phi-2 tokenizer as Imp ships it has no ``<image>`` token; when the next free id is the model's
    ``image_token_index`` (50296 for Imp), ``<image>`` is added there. Any other disagreement is an error.
    """
    tok = load_tokenizer(folder)
    image_id = tok.convert_tokens_to_ids(IMAGE_TOKEN)
    if image_id is None or image_id == tok.unk_token_id:
        if len(tok) != config.image_token_index:
            raise ConfigError(
                f"tokenizer {folder} has no {IMAGE_TOKEN} token and its next id {len(tok)} is not the "
                f"model's image_token_index {config.image_token_index}"
            )
        tok.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
        image_id = tok.convert_tokens_to_ids(IMAGE_TOKEN)
        log.info("added %s to the tokenizer as id %d", IMAGE_TOKEN, image_id)
    if image_id != config.image_token_index:
        raise ConfigError(
            f"tokenizer {folder} maps {IMAGE_TOKEN} to {image_id}, the model expects {config.image_token_index}"
        )
    if len(tok) > config.vocab_size:
        raise ConfigError(
            f"tokenizer {folder} has {len(tok)} tokens, more than the model's {config.vocab_size}"
        )
    stop = get_template(config.template).stop_str
    stop_ids = tok(stop, add_special_tokens=False).input_ids
    if len(stop_ids) != 1:
        raise ConfigError(f"tokenizer {folder} splits the stop string {stop!r} into {len(stop_ids)} tokens")
    if tok.pad_token is None:
        tok.pad_token = tok.convert_ids_to_tokens(
            config.pad_token_id if config.pad_token_id is not None else stop_ids[0]
        )
    return tok
