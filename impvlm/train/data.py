"""LLaVA-format conversation data: a lazy dataset, a padding collator and a modality-grouped sampler.

A dataset file is a JSON list of records (``blip_laion_cc_sbu_558k.json``,
``llava_v1_5_mix665k.json`` or a custom file in that format)::

    [{"id": "...", "image": "rel/path.jpg",
      "conversations": [{"from": "human", "value": "<image>\\n..."}, {"from": "gpt", "value": "..."}]}]

Records without ``image`` are text-only. The JSON is read once; tokenization and image decoding happen
per record when a sample is asked for (LLaVA's "lazy preprocessing"). The ``<image>`` tag is moved to
the front of the first human turn, the text and labels come from
:func:`impvlm.templates.encode_conversation` (the one copy of the masking rules), and sequences are
truncated so that the spliced sequence (text + image tokens) fits ``max_length``.

Bad records never crash a data-loader worker with a traceback from deep inside it:

- a malformed record (no conversation, roles that do not alternate, ``<image>`` outside the first
  human turn, ...) is found when the file is opened;
- a missing or corrupt image is found when the record is loaded.

With ``on_error="raise"`` (the default) both raise :class:`~impvlm.errors.DataError` naming the record;
with ``on_error="skip"`` the record is left out (malformed ones when the file is opened; image failures
by standing in the next good record) and counted. Records whose tokens do not line up with their text
(:attr:`Encoded.mismatch`) are masked entirely and reported with their ids, as are truncated ones.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from impvlm.errors import DataError, ImpError
from impvlm.image_processing import ImageProcessor
from impvlm.templates import (
    IGNORE_INDEX,
    IMAGE_TOKEN,
    Template,
    Turn,
    encode_conversation,
    move_image_to_front,
    turns_from_llava,
)

log = logging.getLogger(__name__)

OnError = Literal["raise", "skip"]


@dataclass
class Sample:
    """One encoded record. ``pixel_values`` is ``(3, H, W)`` or None for text-only records."""

    record_id: str
    input_ids: list[int]
    labels: list[int]
    pixel_values: np.ndarray | None
    mismatch: bool = False
    truncated: bool = False
    skipped: list[str] = field(default_factory=list)  # ids of bad records this sample stands in for


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """Read a LLaVA JSON list (or JSON lines) file; errors name the file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"dataset file not found: {path}") from None
    except OSError as exc:
        raise DataError(f"cannot read dataset file {path}: {exc}") from None
    try:
        if path.suffix == ".jsonl":
            records = [json.loads(line) for line in text.splitlines() if line.strip()]
        else:
            records = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(records, list):
        raise DataError(f"{path} must hold a JSON list of records, got {type(records).__name__}")
    return records


def record_name(record: Any, index: int) -> str:
    rid = record.get("id") if isinstance(record, dict) else None
    return f"record #{index} (id {rid!r})" if rid is not None else f"record #{index}"


def check_record(record: Any, template: Template) -> list[Turn]:
    """The record's turns with ``<image>`` at the front of the first human turn; DataError if malformed.

    An image record whose text has no ``<image>`` tag gets one (LLaVA data always has it; a custom file
    may not). ``<image>`` anywhere else, or in a text-only record, is an error: one image per record.
    The template renders the turns once, which checks that they alternate.
    """
    if not isinstance(record, dict):
        raise DataError(f"is a {type(record).__name__}, not an object")
    conversations = record.get("conversations")
    if not isinstance(conversations, list) or not conversations:
        raise DataError("has no 'conversations' list")
    turns = turns_from_llava(conversations)
    template.segments(turns)
    if not any(t.role == "assistant" for t in turns):
        raise DataError("has no answer (gpt turn) to learn from")
    image = record.get("image")
    if image is not None and not isinstance(image, str):
        raise DataError(f"'image' must be one relative path, got {type(image).__name__}")
    tags = [t.content.count(IMAGE_TOKEN) for t in turns]
    if image is None and sum(tags):
        raise DataError(f"has an {IMAGE_TOKEN} tag but no 'image'")
    if image is not None:
        if sum(tags) > 1 or sum(tags[1:]):
            raise DataError(f"must hold exactly one {IMAGE_TOKEN} tag, in the first human turn")
        if not tags[0]:
            turns[0] = Turn("user", f"{IMAGE_TOKEN}\n{turns[0].content}")
    return move_image_to_front(turns)


class ConversationDataset(Dataset):
    """Lazy LLaVA-format dataset: records are encoded and their images decoded on access.

    Args:
        records: the records (see :func:`read_records`); kept as read.
        image_root: folder the records' ``image`` paths are relative to.
        tokenizer / template: text and labels come from :func:`encode_conversation`.
        image_processor: turns an image file into ``(3, H, W)`` float32.
        num_image_tokens: how many embeddings one ``<image>`` token becomes (for lengths and truncation).
        max_length: the model's maximum sequence length, image tokens included.
        on_error: ``raise`` (DataError naming the record) or ``skip`` (leave it out and count it).
    """

    def __init__(
        self,
        records: Sequence[dict[str, Any]],
        image_root: str | Path,
        tokenizer: Any,
        template: Template,
        image_processor: ImageProcessor,
        num_image_tokens: int,
        max_length: int,
        on_error: OnError = "raise",
        source: str = "dataset",
    ) -> None:
        if on_error not in ("raise", "skip"):
            raise DataError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        self.image_root = Path(image_root)
        self.tokenizer = tokenizer
        self.template = template
        self.image_processor = image_processor
        self.num_image_tokens = int(num_image_tokens)
        self.max_length = int(max_length)
        self.on_error = on_error
        self.source = source
        self.image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
        if self.max_length <= self.num_image_tokens:
            raise DataError(
                f"max_length {self.max_length} leaves no room for text next to {self.num_image_tokens} image tokens"
            )
        self.records: list[dict[str, Any]] = []
        self.turns: list[list[Turn]] = []
        self.malformed: list[str] = []
        for index, record in enumerate(records):
            try:
                turns = check_record(record, template)
            except DataError as exc:
                if on_error == "raise":
                    raise DataError(f"{source}: {record_name(record, index)} {exc}") from None
                self.malformed.append(record_name(record, index))
                continue
            self.records.append(record)
            self.turns.append(turns)
        if self.malformed:
            log.warning(
                "%s: skipped %d malformed records, e.g. %s",
                source,
                len(self.malformed),
                "; ".join(self.malformed[:5]),
            )
        if not self.records:
            raise DataError(f"{source}: no usable records")

    def __len__(self) -> int:
        return len(self.records)

    def has_image(self, index: int) -> bool:
        return "image" in self.records[index]

    @property
    def modality_lengths(self) -> list[int]:
        """Cheap length estimates (words, no tokenization): positive for image records (+ the image
        tokens), negative for text-only ones, as LLaVA's ``group_by_modality_length`` expects."""
        out = []
        for i, turns in enumerate(self.turns):
            words = sum(len(t.content.split()) for t in turns)
            out.append(words + self.num_image_tokens if self.has_image(i) else -words)
        return out

    def __getitem__(self, index: int) -> Sample:
        if self.on_error == "raise":
            return self._load(index)
        skipped: list[str] = []
        for offset in range(len(self)):
            i = (index + offset) % len(self)
            try:
                sample = self._load(i)
            except ImpError as exc:
                log.debug("%s", exc)
                skipped.append(record_name(self.records[i], i))
                continue
            sample.skipped = skipped
            return sample
        raise DataError(f"{self.source}: every record failed to load")

    def _load(self, index: int) -> Sample:
        record, turns = self.records[index], self.turns[index]
        name = record_name(record, index)
        pixel_values = None
        budget = self.max_length
        if "image" in record:
            path = self.image_root / record["image"]
            try:
                pixel_values = self.image_processor(path)
            except ImpError as exc:
                raise DataError(f"{self.source}: {name}: {exc}") from None
            budget -= self.num_image_tokens - 1  # the <image> token becomes num_image_tokens embeddings
        try:
            enc = encode_conversation(self.tokenizer, self.template, turns, max_length=budget)
        except ImpError as exc:
            raise DataError(f"{self.source}: {name}: {exc}") from None
        if pixel_values is not None and self.image_token_id not in enc.input_ids:
            raise DataError(
                f"{self.source}: {name}: truncation to {budget} text tokens cut off {IMAGE_TOKEN}"
            )
        return Sample(
            record_id=str(record.get("id", index)),
            input_ids=enc.input_ids,
            labels=enc.labels,
            pixel_values=pixel_values,
            mismatch=enc.mismatch,
            truncated=enc.truncated,
        )


@dataclass
class DataCollator:
    """Pads a list of samples into a batch (right padding; the model reads the side off the mask).

    Output: ``input_ids``/``labels``/``attention_mask`` ``(B, T)``, ``pixel_values`` ``(N_img, 3, H, W)``
    (``N_img`` may be 0) and ``report``: the ids of mismatched, truncated and skipped records.
    """

    pad_token_id: int
    image_size: int

    def __call__(self, samples: Sequence[Sample]) -> dict[str, Any]:
        longest = max(len(s.input_ids) for s in samples)
        input_ids = torch.full((len(samples), longest), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(samples), longest), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((len(samples), longest), dtype=torch.long)
        for b, s in enumerate(samples):
            n = len(s.input_ids)
            input_ids[b, :n] = torch.tensor(s.input_ids)
            labels[b, :n] = torch.tensor(s.labels)
            mask[b, :n] = 1
        images = [torch.from_numpy(s.pixel_values) for s in samples if s.pixel_values is not None]
        pixel_values = (
            torch.stack(images) if images else torch.zeros((0, 3, self.image_size, self.image_size))
        )
        report = BatchReport(
            mismatch=[s.record_id for s in samples if s.mismatch],
            truncated=[s.record_id for s in samples if s.truncated],
            skipped=[r for s in samples for r in s.skipped],
        )
        return {
            "input_ids": input_ids,
            "labels": labels,
            "attention_mask": mask,
            "pixel_values": pixel_values,
            "report": report,
        }


@dataclass
class BatchReport:
    """Record ids worth telling the user about, carried with a batch out of the data-loader workers."""

    mismatch: list[str] = field(default_factory=list)
    truncated: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


class ModalityLengthGroupedSampler(Sampler[int]):
    """LLaVA's ``group_by_modality_length``: image and text-only samples never share a batch, and each
    batch holds samples of similar length (fewer pad tokens).

    Indices are shuffled, cut into mega-batches of ``batch_size * world_size * 50`` per modality, sorted
    by length inside a mega-batch and cut into batches; the batches are then shuffled. The order depends
    only on ``seed`` and the epoch (:meth:`set_epoch`), so a resumed run sees the same batches.

    Args:
        lengths: per sample, positive for image samples and negative for text-only ones.
        batch_size: per-device batch size; ``world_size``: number of processes.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, world_size: int = 1, seed: int = 0) -> None:
        self.lengths = list(lengths)
        self.batch_size = int(batch_size)
        self.world_size = int(world_size)
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices())

    def indices(self) -> list[int]:
        rng = torch.Generator().manual_seed(self.seed + self.epoch)
        step = self.batch_size * self.world_size  # one optimizer micro-step on every device
        image = [i for i, n in enumerate(self.lengths) if n > 0]
        text = [i for i, n in enumerate(self.lengths) if n <= 0]
        batches: list[list[int]] = []
        leftovers: list[int] = []
        for group in (image, text):
            if not group:
                continue
            order = [group[i] for i in torch.randperm(len(group), generator=rng).tolist()]
            mega = step * 50
            for start in range(0, len(order), mega):
                chunk = sorted(order[start : start + mega], key=lambda i: -abs(self.lengths[i]))
                full = len(chunk) // step * step
                batches += [chunk[j : j + step] for j in range(0, full, step)]
                leftovers += chunk[full:]
        batch_order = torch.randperm(len(batches), generator=rng).tolist()
        out = [i for b in batch_order for i in batches[b]]
        return out + leftovers  # the mixed remainder comes last, as in LLaVA
