"""The tokenizer a stage trains with, checked against the model's special-token ids."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from impvlm.config import ImpConfig
from impvlm.errors import ConfigError
from impvlm.templates import IMAGE_SENTINEL, IMAGE_TOKEN, get_template
from impvlm.tokenizer import image_token_id, load_tokenizer, single_token_id

log = logging.getLogger(__name__)


def load_training_tokenizer(folder: str | Path, config: ImpConfig) -> Any:
    """Load a tokenizer and make sure the template's stop string and ``<image>`` are single tokens with
    the ids the model uses.

    A Phi-2 tokenizer as upstream training starts from has neither ``</s>`` nor ``<image>``. A missing
    stop token is added as the eos token when the next free id is the model's ``eos_token_id`` (50295:
    Imp's training code adds ``</s>`` so), then a missing ``<image>`` when the next free id is the
    model's ``image_token_index`` (50296 for Imp). A model whose ``image_token_index`` is the sentinel
    (-200: upstream's training code splices the image where the text says ``<image>``) needs no
    ``<image>`` token. Any other disagreement is an error.
    """
    tok = load_tokenizer(folder)
    stop = get_template(config.template).stop_str
    if single_token_id(tok, stop) is None and len(tok) == config.eos_token_id:
        tok.add_special_tokens({"eos_token": stop})
        log.info("added %s to the tokenizer as id %d (eos)", stop, config.eos_token_id)
    image_id = image_token_id(tok)
    if image_id == IMAGE_SENTINEL and config.image_token_index != IMAGE_SENTINEL:
        if len(tok) != config.image_token_index:
            raise ConfigError(
                f"tokenizer {folder} has no {IMAGE_TOKEN} token and its next id {len(tok)} is not the "
                f"model's image_token_index {config.image_token_index}"
            )
        tok.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
        image_id = image_token_id(tok)
        log.info("added %s to the tokenizer as id %d", IMAGE_TOKEN, image_id)
    if image_id != config.image_token_index:
        raise ConfigError(
            f"tokenizer {folder} maps {IMAGE_TOKEN} to {image_id}, the model expects {config.image_token_index}"
        )
    if len(tok) > config.vocab_size:
        raise ConfigError(
            f"tokenizer {folder} has {len(tok)} tokens, more than the model's {config.vocab_size}"
        )
    stop_ids = tok(stop, add_special_tokens=False).input_ids
    if len(stop_ids) != 1:
        raise ConfigError(f"tokenizer {folder} splits the stop string {stop!r} into {len(stop_ids)} tokens")
    if tok.pad_token is None:
        tok.pad_token = tok.convert_ids_to_tokens(
            config.pad_token_id if config.pad_token_id is not None else stop_ids[0]
        )
    return tok
