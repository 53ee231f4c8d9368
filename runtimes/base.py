"""The runtime protocol: one ``generate()`` for every backend, with prefix reuse and timings.

A runtime turns ``(images, prompt or conversation)`` into an answer. Everything that must be the
same on every backend lives here: rendering the template, splitting the prompt at ``<image>`` tags,
tokenizing with the model's own ``tokenizer.json``, greedy / seeded sampling, stop handling,
detokenizing without special tokens, streaming, timings, and reuse of work between calls (image
features by content hash, and the KV cache of the longest shared prefix). Backends only implement
how to encode pixels and how to evaluate tokens / embeddings into their KV cache.

Example::

    rt = load_runtime("work/bundle")            # or a checkpoint folder
    out = rt.generate(["cat.png"], "What colour is the circle?")
    print(out.text, out.timings.decode_tokens_per_s)
"""

from __future__ import annotations

import hashlib
import resource
import sys
import time
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from impvlm.errors import DataError, ImpError
from impvlm.image_processing import DEFAULT_MAX_IMAGE_PIXELS, ImageInput, ImageProcessor, load_image
from impvlm.templates import IMAGE_TOKEN, Template, Turn
from runtimes.sampling import SamplingConfig, sample_next


class PromptTooLongError(ImpError):
    """The prompt (with image tokens) does not fit the context window."""


@dataclass
class Timings:
    """Per-call timings; tokens/s are derived."""

    image_encode_s: float = 0.0
    images_encoded: int = 0
    prefill_tokens: int = 0
    prefill_s: float = 0.0
    reused_tokens: int = 0
    decode_tokens: int = 0
    decode_s: float = 0.0
    ttft_s: float = 0.0
    total_s: float = 0.0
    peak_rss_mb: float = 0.0

    @property
    def prefill_tokens_per_s(self) -> float:
        return self.prefill_tokens / self.prefill_s if self.prefill_s > 0 else 0.0

    @property
    def decode_tokens_per_s(self) -> float:
        return self.decode_tokens / self.decode_s if self.decode_s > 0 else 0.0

    def to_dict(self) -> dict[str, float]:
        out = asdict(self)
        out["prefill_tokens_per_s"] = self.prefill_tokens_per_s
        out["decode_tokens_per_s"] = self.decode_tokens_per_s
        return out


@dataclass
class Generation:
    text: str
    token_ids: list[int]
    finish_reason: str  # "stop" or "length"
    timings: Timings = field(default_factory=Timings)


@dataclass(frozen=True)
class ImageSlot:
    """Where one image's features go in the sequence."""

    key: str  # content hash of the preprocessed pixels
    index: int  # which of the call's images


Piece = list[int] | ImageSlot


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (MB)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


class Runtime(ABC):
    """Base of every backend. Subclasses set the attributes below and implement the ``_`` methods."""

    name: str = "runtime"
    template: Template
    tokenizer: Any  # a `tokenizers.Tokenizer`
    image_processor: ImageProcessor
    num_image_tokens: int
    context_length: int
    stop_ids: frozenset[int]
    special_ids: frozenset[int]
    feature_cache_size: int = 8
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS  # larger image files are refused before decoding

    def __init__(self) -> None:
        self._features: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cached_keys: list[Any] = []  # what the backend's KV cache holds, one key per position

    # ------------------------------------------------------------------ backend hooks
    @abstractmethod
    def _encode_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """``(B, 3, H, W) float32 -> (B, N, D) float32``."""

    @abstractmethod
    def _truncate(self, n: int) -> None:
        """Keep the first ``n`` positions of the KV cache."""

    @abstractmethod
    def _eval_tokens(self, ids: list[int]) -> np.ndarray:
        """Append tokens to the cache; return the last position's logits ``(vocab,)``."""

    @abstractmethod
    def _eval_embeddings(self, embeddings: np.ndarray) -> np.ndarray:
        """Append ``(N, D)`` embeddings to the cache; return the last position's logits."""

    def identity(self) -> dict[str, Any]:
        """What a results file records about this runtime (name, precisions, threads, hashes)."""
        return {"runtime": self.name}

    def close(self) -> None:  # noqa: B027 - optional hook
        """Free backend resources."""

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ shared machinery
    def tokenize(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False).ids)

    def detokenize(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode([i for i in ids if i not in self.special_ids], skip_special_tokens=True)

    def open_images(self, images: Sequence[ImageInput]) -> list[ImageInput]:
        """Files and bytes decoded to RGB images, each checked against ``max_image_pixels`` first."""
        return [load_image(image, self.max_image_pixels) for image in images]

    def encode_images(self, images: Sequence[ImageInput]) -> np.ndarray:
        """Projected image features ``(B, N, D)``, computed once per distinct image."""
        pixels = self.image_processor.batch(self.open_images(images))
        return np.stack([self._features_for(p)[1] for p in pixels]) if len(pixels) else pixels

    def _features_for(self, pixels: np.ndarray) -> tuple[str, np.ndarray, bool]:
        """Cached features of one image, keyed on shape + bytes (the `native` runtime sees raw images of
        any size, and a 32x64 and a 64x32 image of one colour have the same bytes)."""
        digest = hashlib.sha1(np.asarray(pixels.shape, dtype=np.int64).tobytes())
        digest.update(pixels.tobytes())
        key = digest.hexdigest()
        if key in self._features:
            self._features.move_to_end(key)
            return key, self._features[key], False
        feats = self._encode_pixels(pixels[None])[0]
        self._features[key] = feats
        while len(self._features) > self.feature_cache_size:
            self._features.popitem(last=False)
        return key, feats, True

    def render(self, prompt: str | Sequence[Turn], n_images: int) -> str:
        """The template text for a prompt (one user turn) or a whole conversation."""
        if isinstance(prompt, str):
            content = prompt
            if n_images and IMAGE_TOKEN not in content:
                content = "\n".join([IMAGE_TOKEN] * n_images + [content])
            turns = [Turn("user", content)]
        else:
            turns = list(prompt)
        return self.template.prompt(turns, add_generation_prompt=True)

    def plan(self, text: str, image_keys: list[str]) -> list[Piece]:
        parts = text.split(IMAGE_TOKEN)
        if len(parts) - 1 != len(image_keys):
            raise DataError(
                f"the prompt has {len(parts) - 1} <image> tags but {len(image_keys)} images were given"
            )
        pieces: list[Piece] = []
        for i, part in enumerate(parts):
            if part:
                pieces.append(self.tokenize(part))
            if i < len(image_keys):
                pieces.append(ImageSlot(image_keys[i], i))
        return pieces

    def _keys(self, pieces: list[Piece]) -> list[Any]:
        keys: list[Any] = []
        for piece in pieces:
            if isinstance(piece, ImageSlot):
                keys += [(piece.key, j) for j in range(self.num_image_tokens)]
            else:
                keys += piece
        return keys

    def generate(
        self,
        images: Sequence[ImageInput] | None,
        prompt: str | Sequence[Turn],
        max_new_tokens: int = 128,
        sampling: SamplingConfig | None = None,
        stop: Sequence[str] | None = None,
        on_text: Callable[[str], None] | None = None,
        reuse: bool = True,
        ignore_stop: bool = False,
    ) -> Generation:
        """Answer ``prompt`` about ``images``; greedy unless ``sampling`` says otherwise.

        ``on_text`` receives the answer incrementally (streaming). With ``reuse`` the KV cache of
        the longest prefix shared with the previous call and the features of images seen before
        are kept; without it everything is recomputed (one question at a time, nothing reused).
        ``ignore_stop`` keeps decoding past the stop token, to exactly ``max_new_tokens`` tokens
        (speed benchmarks time a fixed token count).
        """
        steps = self.iter_generate(images, prompt, max_new_tokens, sampling, stop, reuse, ignore_stop)
        while True:
            try:
                chunk = next(steps)
            except StopIteration as done:
                return done.value
            if on_text is not None:
                on_text(chunk)

    def stream(
        self, images: Sequence[ImageInput] | None, prompt: str | Sequence[Turn], **kw: Any
    ) -> Iterator[str]:
        """Yield the answer's text as it is produced."""
        yield from self.iter_generate(images, prompt, **kw)

    def iter_generate(
        self,
        images: Sequence[ImageInput] | None,
        prompt: str | Sequence[Turn],
        max_new_tokens: int = 128,
        sampling: SamplingConfig | None = None,
        stop: Sequence[str] | None = None,
        reuse: bool = True,
        ignore_stop: bool = False,
    ) -> Generator[str, None, Generation]:
        """The generation loop as a generator of text chunks; its return value is the result."""
        sampling = sampling or SamplingConfig()
        timings = Timings()
        start = time.perf_counter()
        images = list(images or [])
        text = self.render(prompt, len(images))
        if not reuse:
            self._features.clear()
        t0 = time.perf_counter()
        pixels = self.image_processor.batch(self.open_images(images))
        features: list[np.ndarray] = []
        keys: list[str] = []
        for p in pixels:
            key, feats, fresh = self._features_for(p)
            keys.append(key)
            features.append(feats)
            timings.images_encoded += int(fresh)
        timings.image_encode_s = time.perf_counter() - t0
        pieces = self.plan(text, keys)
        seq_keys = self._keys(pieces)
        if len(seq_keys) + 1 > self.context_length:
            raise PromptTooLongError(
                f"the prompt needs {len(seq_keys)} positions but the context holds {self.context_length}"
            )
        max_new_tokens = min(max_new_tokens, self.context_length - len(seq_keys))
        keep = _common_prefix(self._cached_keys, seq_keys) if reuse else 0
        keep = min(keep, len(seq_keys) - 1)
        self._truncate(keep)
        self._cached_keys = self._cached_keys[:keep]
        timings.reused_tokens = keep

        t0 = time.perf_counter()
        logits = self._prefill(pieces, features, keep)
        self._cached_keys = list(seq_keys)
        timings.prefill_tokens = len(seq_keys) - keep
        timings.prefill_s = time.perf_counter() - t0

        rng = np.random.default_rng(sampling.seed)
        stop_strings = list(stop or [])
        new_ids: list[int] = []
        decoded = emitted = ""
        finish = "length"
        t0 = time.perf_counter()
        for step in range(max_new_tokens):
            token = sample_next(logits, sampling, rng)
            if step == 0:
                timings.ttft_s = time.perf_counter() - start
            if token in self.stop_ids and not ignore_stop:
                finish = "stop"
                break
            new_ids.append(token)
            decoded = self.detokenize(new_ids)
            if stop_strings and any(s in decoded for s in stop_strings):
                finish = "stop"
                new_ids.pop()  # the stop string's token is not part of the answer's tokens
                break
            shown = settled_text(decoded, stop_strings)
            if len(shown) > len(emitted) and shown.startswith(emitted):
                yield shown[len(emitted) :]
                emitted = shown
            if step + 1 < max_new_tokens:
                logits = self._eval_tokens([token])
                self._cached_keys.append(token)
        timings.decode_tokens = len(new_ids)
        timings.decode_s = time.perf_counter() - t0
        answer = answer_text(decoded, stop_strings)
        if len(answer) > len(emitted) and answer.startswith(emitted):
            yield answer[len(emitted) :]  # the stream ends with exactly the returned text
        timings.total_s = time.perf_counter() - start
        timings.peak_rss_mb = peak_rss_mb()
        return Generation(answer, new_ids, finish, timings)

    def _prefill(self, pieces: list[Piece], features: list[np.ndarray], keep: int) -> np.ndarray:
        logits: np.ndarray | None = None
        pos = 0
        for piece in pieces:
            length = self.num_image_tokens if isinstance(piece, ImageSlot) else len(piece)
            if pos + length <= keep:
                pos += length
                continue
            skip = max(0, keep - pos)
            if isinstance(piece, ImageSlot):
                logits = self._eval_embeddings(features[piece.index][skip:])
            else:
                logits = self._eval_tokens(piece[skip:])
            pos += length
        assert logits is not None
        return logits


UNFINISHED_CHARACTER = "\ufffd"  # what a multi-byte character cut between tokens decodes to


def answer_text(decoded: str, stop: Sequence[str] = ()) -> str:
    """The one rule from decoded tokens to the answer, the same whether it is streamed or returned.

    The text is cut at the first stop string, a multi-byte character left unfinished at the end
    (generation stopped between its bytes, decoded as U+FFFD) is dropped, and surrounding
    whitespace is stripped.
    """
    for s in stop:
        decoded = decoded.split(s, 1)[0]
    return decoded.rstrip(UNFINISHED_CHARACTER).strip()


def settled_text(decoded: str, stop: Sequence[str] = ()) -> str:
    """The part of :func:`answer_text` no later token can change: without an unfinished character,
    without a tail that may still grow into a stop string, and without trailing whitespace (the
    answer may end there). Streaming emits this; its end is always a prefix of the final answer."""
    decoded = decoded.rstrip(UNFINISHED_CHARACTER)
    hold = max((_stop_prefix_at_end(decoded, s) for s in stop), default=0)
    return decoded[: len(decoded) - hold].strip()


def _stop_prefix_at_end(text: str, stop: str) -> int:
    """Length of the longest proper prefix of ``stop`` that ``text`` ends with."""
    for n in range(min(len(stop) - 1, len(text)), 0, -1):
        if text.endswith(stop[:n]):
            return n
    return 0


def _common_prefix(a: list[Any], b: list[Any]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n
