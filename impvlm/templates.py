"""Conversation templates as data, and the one code path from a conversation to text and labels.

A template renders a conversation into *segments*: pieces of text that are either context (masked
out of the loss) or targets (the assistant's answers and their closing separator). The inference
prompt is the concatenation of the segments with a generation prompt at the end; the training labels
come from the same segments through the tokenizer's offset mapping, so there is no second copy of
the masking rules.

Example (``phi2``, one image and one question, ready for generation)::

    A chat between ... questions. USER: <image>\\nWhat colour? ASSISTANT:
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

# The image token and the short-answer instruction are defined in impdefs, below every package.
from impdefs import IMAGE_TOKEN
from impdefs import SHORT_ANSWER_SUFFIX as SHORT_ANSWER_SUFFIX
from impvlm.errors import ConfigError, DataError

#: The id an image position gets when the tokenizer has no ``<image>`` token: upstream's
#: ``IMAGE_TOKEN_INDEX`` (LLaVA, Imp and LLaVA-Phi training code split the prompt text at ``<image>``
#: and insert it). Never an embedding row: the image's features replace it.
IMAGE_SENTINEL = -200
IGNORE_INDEX = -100
Role = Literal["user", "assistant"]
Style = Literal["two", "plain"]
#: How a template lays a conversation out (see :class:`Template`).
TEMPLATE_STYLES: tuple[Style, ...] = ("two", "plain")

PHI2_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)


@dataclass(frozen=True)
class Turn:
    role: Role
    content: str


@dataclass(frozen=True)
class Segment:
    text: str
    target: bool


@dataclass(frozen=True)
class Template:
    """A LLaVA-style conversation template.

    ``two`` style: ``{system}{sep}USER: q{sep}ASSISTANT: a{sep2}USER: ...``.
    ``plain`` style (stage-1 pretraining): ``<image>`` + answer + ``sep2``; the question is dropped.
    """

    name: str
    style: Style
    system: str
    roles: tuple[str, str]
    sep: str
    sep2: str

    @property
    def stop_str(self) -> str:
        """The string that ends an assistant turn; generation stops on its token."""
        return self.sep2

    def segments(self, turns: Sequence[Turn], add_generation_prompt: bool = False) -> list[Segment]:
        _check_turns(turns, add_generation_prompt)
        if self.style == "plain":
            return self._plain_segments(turns, add_generation_prompt)
        user, assistant = self.roles
        segs = [Segment(self.system + self.sep, False)]
        for turn in turns:
            if turn.role == "user":
                segs.append(Segment(f"{user}: {turn.content}{self.sep}", False))
            else:
                segs.append(Segment(f"{assistant}:", False))
                segs.append(Segment(f" {turn.content}{self.sep2}", True))
        if add_generation_prompt:
            segs.append(Segment(f"{assistant}:", False))
        return _merge(segs)

    def _plain_segments(self, turns: Sequence[Turn], add_generation_prompt: bool) -> list[Segment]:
        segs = [Segment(IMAGE_TOKEN if IMAGE_TOKEN in turns[0].content else "", False)]
        if len(turns) > 1:
            segs.append(Segment(turns[1].content + self.sep2, True))
        return _merge(segs)

    def prompt(self, turns: Sequence[Turn], add_generation_prompt: bool = True) -> str:
        """The text a model sees, ending with the generation prompt when asked for."""
        return "".join(s.text for s in self.segments(turns, add_generation_prompt))

    def question_prompt(self, question: str, with_image: bool = True) -> str:
        """The single-turn prompt the benchmarks use: ``<image>\\n`` + question, ready to answer."""
        content = f"{IMAGE_TOKEN}\n{question}" if with_image else question
        return self.prompt([Turn("user", content)], add_generation_prompt=True)


def _check_turns(turns: Sequence[Turn], add_generation_prompt: bool) -> None:
    if not turns:
        raise DataError("a conversation needs at least one turn")
    for i, turn in enumerate(turns):
        expected = "user" if i % 2 == 0 else "assistant"
        if turn.role != expected:
            raise DataError(f"turn {i} is from {turn.role!r}, expected {expected!r} (turns must alternate)")
    if add_generation_prompt and turns[-1].role != "user":
        raise DataError("a generation prompt needs the conversation to end with a user turn")


def _merge(segs: list[Segment]) -> list[Segment]:
    out: list[Segment] = []
    for seg in segs:
        if not seg.text:
            continue
        if out and out[-1].target == seg.target:
            out[-1] = Segment(out[-1].text + seg.text, seg.target)
        else:
            out.append(seg)
    return out


TEMPLATES: dict[str, Template] = {
    # Imp (MILVLG/imp): conv_phi2
    "phi2": Template("phi2", "two", PHI2_SYSTEM, ("USER", "ASSISTANT"), " ", "</s>"),
    # LLaVA-Phi: conv_phi_v0, eos = pad = <|endoftext|>
    "phi-2_v0": Template("phi-2_v0", "two", PHI2_SYSTEM, ("USER", "ASSISTANT"), " ", "<|endoftext|>"),
    # stage-1 projector pretraining
    "plain": Template("plain", "plain", "", ("", ""), "", "\n"),
}


def get_template(name: str) -> Template:
    try:
        return TEMPLATES[name]
    except KeyError:
        raise ConfigError(f"unknown template {name!r}; known: {', '.join(TEMPLATES)}") from None


def move_image_to_front(turns: Sequence[Turn]) -> list[Turn]:
    """LLaVA's rule: the ``<image>`` tag goes to the front of the first user turn as ``<image>\\n``."""
    out = list(turns)
    if out and IMAGE_TOKEN in out[0].content:
        text = out[0].content.replace(IMAGE_TOKEN, "").strip()
        out[0] = Turn("user", f"{IMAGE_TOKEN}\n{text}")
    return out


def turns_from_llava(conversations: Sequence[dict[str, Any]]) -> list[Turn]:
    """Convert LLaVA JSON ``[{"from": "human"|"gpt", "value": ...}]`` into turns."""
    roles = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant"}
    turns = []
    for i, message in enumerate(conversations):
        who = message.get("from") if isinstance(message, dict) else None
        if who not in roles or not isinstance(message.get("value"), str):
            raise DataError(f"message {i} needs 'from' (human/gpt) and a string 'value'")
        turns.append(Turn(roles[who], message["value"]))  # type: ignore[arg-type]
    return turns


@dataclass
class Encoded:
    """Token ids and labels of one conversation. ``mismatch`` marks a sample whose token
    boundaries do not line up with its segments: its labels are all masked (report it)."""

    input_ids: list[int]
    labels: list[int]
    mismatch: bool = False
    truncated: bool = False


def encode_conversation(
    tokenizer: Any,
    template: Template,
    turns: Sequence[Turn],
    max_length: int | None = None,
    add_generation_prompt: bool = False,
) -> Encoded:
    """Tokenize a conversation and build its labels (context masked with ``IGNORE_INDEX``)."""
    segs = template.segments(turns, add_generation_prompt)
    text = "".join(s.text for s in segs)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids: list[int] = list(enc["input_ids"])
    target_spans = []
    pos = 0
    for seg in segs:
        if seg.target:
            target_spans.append((pos, pos + len(seg.text)))
        pos += len(seg.text)
    labels = []
    mismatch = False
    for tok, (start, end) in zip(ids, enc["offset_mapping"]):
        inside = [s <= start and end <= e for s, e in target_spans]
        overlaps = [start < e and s < end for s, e in target_spans]
        if any(inside):
            labels.append(tok)
        else:
            if any(overlaps):
                mismatch = True
            labels.append(IGNORE_INDEX)
    if mismatch:
        labels = [IGNORE_INDEX] * len(ids)
    truncated = max_length is not None and len(ids) > max_length
    if truncated:
        ids, labels = ids[:max_length], labels[:max_length]
    return Encoded(ids, labels, mismatch, truncated)
