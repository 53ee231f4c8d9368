"""Tokenizers: train a tiny GPT-2-style byte-level BPE for the synthetic world, or load a real one.

The trained tokenizer mirrors Phi-2's (byte-level BPE, no prefix space, byte-level decoder) so every
code path — chat templates, ``<image>`` splitting, GGUF export — is exercised exactly as with the real
model, only with a vocabulary of ~1k instead of 51k. Its special tokens come first, with fixed ids:

====  =================  =====================================================================
id    token              role
====  =================  =====================================================================
0     ``<|endoftext|>``  pad token (Phi-2's document separator; unused as bos)
1     ``</s>``           eos token: ends every assistant answer
2     ``<image>``        the image placeholder; a single id, replaced by image features
====  =================  =====================================================================

then the 256 byte symbols, then the merges. There is no bos and no unk token (byte-level BPE encodes
any text). The folder holds ``tokenizer.json``, ``tokenizer_config.json`` and
``special_tokens_map.json`` (transformers) plus ``vocab.json`` and ``merges.txt`` (for the ``gguf``
package's ``SpecialVocab`` and llama.cpp's converters).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from impvlm.errors import CheckpointError, ConfigError, DataError
from impvlm.templates import IMAGE_TOKEN

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

log = logging.getLogger(__name__)

PAD_TOKEN = "<|endoftext|>"
EOS_TOKEN = "</s>"
SPECIAL_TOKENS: tuple[str, ...] = (PAD_TOKEN, EOS_TOKEN, IMAGE_TOKEN)  # ids 0, 1, 2

#: The words of the LLaVA/Imp chat template, so the BPE learns them as the model will see them.
SYSTEM_PROMPT = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
USER_ROLE = "USER:"
ASSISTANT_ROLE = "ASSISTANT:"

_BYTE_ALPHABET_SIZE = 256


def train_tokenizer(texts: Iterable[str], vocab_size: int, out_dir: str | Path) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on ``texts`` and save it as an HF tokenizer folder in ``out_dir``.

    The total vocabulary (specials + 256 bytes + merges) is at most ``vocab_size``; it is smaller when
    the corpus runs out of pairs worth merging. The final size is logged and is ``len(tokenizer)``.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    minimum = len(SPECIAL_TOKENS) + _BYTE_ALPHABET_SIZE + 1
    if vocab_size < minimum:
        raise ConfigError(f"vocab_size {vocab_size} is too small: a byte-level BPE needs at least {minimum}")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_non_empty(texts), trainer=trainer)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        additional_special_tokens=[IMAGE_TOKEN],
        clean_up_tokenization_spaces=False,  # keep decode(encode(x)) == x
        model_max_length=2048,
    )
    _check_special_ids(fast)
    save_tokenizer(fast, out_dir)
    log.info(
        "trained a byte-level BPE tokenizer: %d tokens (asked for <= %d) -> %s",
        len(fast),
        vocab_size,
        out_dir,
    )
    return fast


def save_tokenizer(tokenizer: PreTrainedTokenizerFast, out_dir: str | Path) -> Path:
    """``save_pretrained`` plus the ``vocab.json``/``merges.txt`` pair the GGUF converters read."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(str(out))
    model = json.loads(tokenizer.backend_tokenizer.to_str())["model"]
    (out / "vocab.json").write_text(json.dumps(model["vocab"], ensure_ascii=False) + "\n", encoding="utf-8")
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    (out / "merges.txt").write_text("#version: 0.2\n" + "".join(m + "\n" for m in merges), encoding="utf-8")
    return out


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerFast:
    """Load a tokenizer folder: one written by :func:`train_tokenizer` or a real Phi-2 one.

    Raises CheckpointError (one line) when the folder is missing, has no tokenizer files or cannot be read.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise CheckpointError(f"tokenizer folder {folder} does not exist")
    has_json = (folder / "tokenizer.json").is_file()
    if not has_json and not ((folder / "vocab.json").is_file() and (folder / "merges.txt").is_file()):
        raise CheckpointError(
            f"tokenizer folder {folder} has neither tokenizer.json nor vocab.json + merges.txt"
        )
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    try:
        tok = AutoTokenizer.from_pretrained(
            str(folder), use_fast=True, local_files_only=True, trust_remote_code=False
        )
    except Exception as exc:
        if not has_json:
            raise CheckpointError(f"cannot read the tokenizer in {folder}: {_one_line(exc)}") from exc
        try:  # e.g. a tokenizer_class transformers does not know: tokenizer.json alone is enough
            tok = PreTrainedTokenizerFast.from_pretrained(str(folder), local_files_only=True)
        except Exception as exc2:
            raise CheckpointError(f"cannot read the tokenizer in {folder}: {_one_line(exc2)}") from exc2
    if not isinstance(tok, PreTrainedTokenizerFast):
        raise CheckpointError(
            f"tokenizer in {folder} has no fast (Rust) implementation: {type(tok).__name__}"
        )
    return tok


def build_corpus(dataset_dir: str | Path) -> Iterator[str]:
    """Texts to train the tokenizer on: the chat-template words, then every training conversation
    (pretrain.json + instruct.json; the held-out eval.json is not read) laid out as the ``phi2`` and
    ``plain`` templates show it to the model, cut at the special tokens (which are never merged)."""
    root = Path(dataset_dir)
    yield SYSTEM_PROMPT
    yield f"{USER_ROLE} {ASSISTANT_ROLE}"
    for record in _read_records(root / "pretrain.json"):
        turns = record.get("conversations", [])
        if len(turns) > 1:  # plain template: <image> + caption + "\n"
            yield str(turns[1].get("value", "")) + "\n"
    for record in _read_records(root / "instruct.json"):
        yield from _split_specials(_as_chat(record))


def _as_chat(record: dict[str, Any]) -> str:
    """``{system} USER: q ASSISTANT: a</s>USER: ...`` (the phi2 template, ``<image>\\n`` in front)."""
    parts = [SYSTEM_PROMPT, " "]
    for turn in record.get("conversations", []):
        text = str(turn.get("value", ""))
        if turn.get("from") == "human":
            parts.append(f"{USER_ROLE} {text} ")
        else:
            parts.append(f"{ASSISTANT_ROLE} {text}{EOS_TOKEN}")
    return "".join(parts)


def _split_specials(text: str) -> Iterator[str]:
    pattern = "(" + "|".join(re.escape(t) for t in SPECIAL_TOKENS) + ")"
    return (piece for piece in re.split(pattern, text) if piece and piece not in SPECIAL_TOKENS)


def _read_records(path: Path) -> list[dict[str, Any]]:
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise DataError(f"{path} does not exist (run `imp synth` first)") from exc
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"cannot read {path}: {_one_line(exc)}") from exc
    if not isinstance(records, list):
        raise DataError(f"{path} must hold a JSON list of records")
    return records


def _non_empty(texts: Iterable[str]) -> Iterator[str]:
    return (t for t in texts if t)


def _check_special_ids(tok: PreTrainedTokenizerFast) -> None:
    ids = tok.convert_tokens_to_ids(list(SPECIAL_TOKENS))
    if ids != list(range(len(SPECIAL_TOKENS))):  # pragma: no cover - guards a tokenizers behaviour change
        raise ConfigError(f"special tokens got ids {ids}, expected 0..{len(SPECIAL_TOKENS) - 1}")


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"
