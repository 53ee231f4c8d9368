"""The tokenizer, conversation template and special ids an upstream checkpoint runs with.

The template comes from what the checkpoint is (its layout: Imp, LLaVA-Phi, a stage-1 output) or
from a template name recorded in its config.json, never from the eos id alone: a config derived from
microsoft/phi-2 says ``eos_token_id`` 50256 although Imp ends every answer with ``</s>``. The ids then
come from the tokenizer: eos is the template's stop token, and ``<image>`` is its token when the
tokenizer has one, else :data:`~impvlm.templates.IMAGE_SENTINEL` (upstream's training code splits the
prompt text at ``<image>``; so does every runtime here). Without a tokenizer the config's ids stand.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from impvlm.errors import CheckpointError
from impvlm.templates import IMAGE_SENTINEL, IMAGE_TOKEN, TEMPLATES, get_template

#: config.json fields that may record the conversation template a model was trained with.
TEMPLATE_FIELDS = ("conversation", "conv_mode", "version")
TOKENIZER_FILES = ("tokenizer.json", "vocab.json")


@dataclass(frozen=True)
class TokenPlan:
    """What :func:`plan_tokens` decided, and why (``imp info`` prints it)."""

    template: str
    template_reason: str
    image_token_index: int
    eos_token_id: int | None
    pad_token_id: int | None
    tokenizer_dir: Path | None
    added_tokens: tuple[str, ...] = ()  # tokens added the way upstream's training code adds them
    notes: tuple[str, ...] = field(default_factory=tuple)
    stop_token_id: int | None = None  # the template's stop string as a token (None: no tokenizer)

    @property
    def image_note(self) -> str:
        if self.image_token_index == IMAGE_SENTINEL:
            return f"no {IMAGE_TOKEN} token: the image goes where the prompt says {IMAGE_TOKEN} (as upstream)"
        return f"{IMAGE_TOKEN} is token {self.image_token_index}"


def has_tokenizer(folder: Path | None) -> bool:
    return folder is not None and any((Path(folder) / f).is_file() for f in TOKENIZER_FILES)


def recorded_template(raw: dict[str, Any]) -> tuple[str, str] | None:
    """A template name recorded in config.json, with the field that recorded it."""
    for key in TEMPLATE_FIELDS:
        value = raw.get(key)
        if isinstance(value, str) and value in TEMPLATES:
            return value, f"config.json records {key} {value!r}"
    return None


def load_upstream_tokenizer(folder: Path, adds: tuple[str, ...] = ()) -> tuple[Any, tuple[str, ...]]:
    """The tokenizer in ``folder``, with the special tokens ``adds`` appended when it lacks them (as the
    training code that wrote the checkpoint appended them). Returns it and the tokens it added."""
    from impvlm.tokenizer import load_tokenizer, single_token_id

    tok = load_tokenizer(folder)
    added = tuple(t for t in adds if single_token_id(tok, t) is None)
    for token in added:
        tok.add_special_tokens({"eos_token": token})
    return tok, added


def plan_tokens(
    raw: dict[str, Any],
    tokenizer_dir: Path | None,
    default: tuple[str, str],
    adds: tuple[str, ...] = (),
) -> TokenPlan:
    """Template (recorded, else the layout's ``default``: (name, reason)) and the ids to run it with."""
    from impvlm.tokenizer import image_token_id, single_token_id

    template, reason = recorded_template(raw) or default
    stop = get_template(template).stop_str
    config_eos = _first(raw.get("eos_token_id"))
    if tokenizer_dir is None:
        image = raw.get("image_token_index", IMAGE_SENTINEL)
        return TokenPlan(template, reason, int(image), config_eos, _first(raw.get("pad_token_id")), None)
    tok, added = load_upstream_tokenizer(tokenizer_dir, adds)
    stop_id = single_token_id(tok, stop)
    if stop_id is None:
        raise CheckpointError(
            f"the tokenizer in {tokenizer_dir} has no token for {stop!r}, where the {template!r} template "
            "ends an answer"
        )
    notes = []
    if added:
        notes.append(f"added {', '.join(added)} to the tokenizer as the training code does")
    # eos is the stop token when that is a special one (</s>, <|endoftext|>); a plain word such as the
    # plain template's "\n" stays a stop string beside the model's own eos
    special = stop_id in set(tok.added_tokens_decoder) | set(tok.all_special_ids)
    eos = stop_id if special or config_eos is None else config_eos
    if config_eos is not None and eos != config_eos:
        notes.append(
            f"config.json eos_token_id {config_eos} is not where the {template!r} template stops "
            f"({stop!r} = {stop_id}): stopping at {stop_id}"
        )
    pad = _first(raw.get("pad_token_id"))
    if pad is None:
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.unk_token_id
    image = image_token_id(tok)
    return TokenPlan(template, reason, image, eos, pad, tokenizer_dir, added, tuple(notes), stop_id)


def _first(value: Any) -> int | None:
    if isinstance(value, list):
        value = value[0] if value else None
    return None if value is None else int(value)
