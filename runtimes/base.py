"""The runtime protocol: one ``generate()`` for every backend, with prefix reuse and timings.

A runtime turns ``(images, prompt or conversation)`` into an answer. What must be the same on every
backend lives here: the template, ``<image>`` splitting, the model's own tokenizer, greedy / seeded
sampling, stop handling, detokenizing, streaming, timings, and reuse of work between calls (image
features by content hash, the KV cache of the longest shared prefix). Backends only implement
how to encode pixels and how to evaluate tokens / embeddings into their KV cache, and, to answer
several questions about one image together (``generate_many``), how to fork that cache into
sequences and extend them all in one batch.

Example::

    rt = load_runtime("work/bundle")            # or a checkpoint folder
    out = rt.generate(["cat.png"], "What colour is the circle?")
    print(out.text, out.timings.decode_tokens_per_s)
    outs = rt.generate_many(["cat.png"], ["What colour is it?", "How many cats?"])
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from impvlm.errors import DataError, ImpError
from impvlm.image_processing import DEFAULT_MAX_IMAGE_PIXELS, ImageInput, ImageProcessor, load_image
from impvlm.templates import IMAGE_TOKEN, Template, Turn
from runtimes.features import FeatureCache
from runtimes.generation import Answer, Generation, Timings, common_prefix, peak_rss_mb
from runtimes.sampling import SamplingConfig, sample_next

GREEDY = SamplingConfig()


class PromptTooLongError(ImpError):
    """The prompt (with image tokens) does not fit the context window."""


@dataclass(frozen=True)
class ImageSlot:
    """Where one image's features go in the sequence."""

    key: str  # content hash of the preprocessed pixels
    index: int  # which of the call's images


Piece = list[int] | ImageSlot


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
        self._features = FeatureCache(self.feature_cache_size)
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

    # ------------------------------------------------------------------ batch hooks (optional)
    batched: bool = False  # whether the backend implements the three hooks below
    max_batch: int = 32  # most sequences decoded together

    def _fork(self, n: int) -> None:
        """Make ``n`` sequences ``0 .. n-1`` that each hold the cache's positions (no recompute)."""
        raise NotImplementedError

    def _eval_many(self, rows: Sequence[list[int]]) -> np.ndarray:
        """Append ``rows[s]`` to sequence ``s``, all in one batch; a sequence given no tokens has ended
        and takes none again. Returns the logits after each non-empty row ``(k, vocab)``."""
        raise NotImplementedError

    def _join(self, n: int) -> None:
        """Back to one sequence, holding the first ``n`` positions."""
        raise NotImplementedError

    def batch_capacity(self, prefix: int, per_sequence: int) -> int:
        """How many sequences go together when they share a ``prefix``-position cache and each needs
        ``per_sequence`` positions of its own: here all of them fit one context window."""
        return max(1, min(self.max_batch, (self.context_length - prefix) // max(1, per_sequence)))

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
        return (
            np.stack([self._features.get(p, self._encode_pixels)[1] for p in pixels])
            if len(pixels)
            else pixels
        )

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

    def generate_many(
        self,
        images: Sequence[ImageInput] | None,
        prompts: Sequence[str | Sequence[Turn]],
        max_new_tokens: int = 128,
        stop: Sequence[str] | None = None,
        max_batch: int | None = None,
        ignore_stop: bool = False,
    ) -> list[Generation]:
        """Greedy answers to several prompts about the same images, decoded together.

        The images are encoded once and the prompts' shared prefix (system prompt, images) is
        prefilled once or kept from the cache; each prompt becomes its own sequence on that prefix's
        cache, the prompts' own tokens are prefilled in one batch, and all sequences decode in one
        batch until each stops. At most ``max_batch`` prompts go together (default:
        :meth:`batch_capacity`). The answers are those of ``generate``, one prompt at a time; that is
        also how a backend without batch hooks answers, and prompts that share no prefix or have
        images outside it. Each answer's timings hold its share of the time (``batch_size``).
        ``ignore_stop`` decodes every answer to ``max_new_tokens`` (as in :meth:`generate`).
        """
        start = time.perf_counter()
        shared = Timings()
        features, plans = self._prepare(images, list(prompts), True, shared)
        keys = [k for _, k in plans]
        prefix = min(common_prefix(*keys), min(map(len, keys)) - 1) if len(keys) > 1 else 0
        if not self.batched or prefix < 1 or any(not isinstance(k, int) for ks in keys for k in ks[prefix:]):
            return [
                self.generate(images, p, max_new_tokens, stop=stop, ignore_stop=ignore_stop) for p in prompts
            ]
        self._fill(plans[0][0], features, keys[0], prefix, True, shared)
        limits = [min(max_new_tokens, self.context_length - len(k)) for k in keys]
        size = max_batch or self.batch_capacity(
            prefix, max(len(k) - prefix + n for k, n in zip(keys, limits))
        )
        shared.total_s = time.perf_counter() - start
        out: list[Generation] = []
        for i in range(0, len(keys), size):
            suffixes = [k[prefix:] for k in keys[i : i + size]]
            out += self._decode_together(
                suffixes, limits[i : i + size], stop or (), start, prefix, ignore_stop
            )
        first = out[0].timings
        for name in ("image_encode_s", "images_encoded", "prefill_tokens", "prefill_s", "total_s"):
            setattr(first, name, getattr(first, name) + getattr(shared, name))
        first.reused_tokens = shared.reused_tokens
        return out

    def _decode_together(
        self,
        suffixes: list[list[int]],
        limits: list[int],
        stop: Sequence[str],
        start: float,
        prefix: int,
        ignore_stop: bool = False,
    ) -> list[Generation]:
        """Prefill ``suffixes`` on copies of the cached prefix in one batch and decode them together."""
        n = len(suffixes)
        answers = [Answer(self.detokenize, self.stop_ids, stop, limit, ignore_stop) for limit in limits]
        ttft = [0.0] * n
        t0 = time.perf_counter()
        self._fork(n)
        try:
            logits, order = self._eval_many(suffixes), list(range(n))
            t1 = time.perf_counter()
            while order:
                for row, s in zip(logits, order, strict=True):
                    if not answers[s].done:  # only an answer allowed no tokens is done before its first
                        answers[s].push(sample_next(row, GREEDY, None))
                        ttft[s] = ttft[s] or time.perf_counter() - start
                order = [s for s in range(n) if not answers[s].done]
                if order:
                    logits = self._eval_many([[] if a.done else a.token_ids[-1:] for a in answers])
            t2 = time.perf_counter()
        finally:
            self._join(prefix)
            self._cached_keys = self._cached_keys[:prefix]
        out = []
        for a, suffix, first in zip(answers, suffixes, ttft, strict=True):
            timings = Timings(reused_tokens=prefix, prefill_tokens=len(suffix), prefill_s=(t1 - t0) / n)
            timings.ttft_s, timings.decode_tokens, timings.decode_s = first, len(a.token_ids), (t2 - t1) / n
            timings.total_s, timings.peak_rss_mb, timings.batch_size = (t2 - t0) / n, peak_rss_mb(), n
            out.append(Generation(a.text, a.token_ids, a.finish_reason, timings))
        return out

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
        features, [(pieces, keys)] = self._prepare(images, [prompt], reuse, timings)
        logits = self._fill(pieces, features, keys, len(keys), reuse, timings)
        limit = min(max_new_tokens, self.context_length - len(keys))
        answer = Answer(self.detokenize, self.stop_ids, stop or (), limit, ignore_stop)
        rng = np.random.default_rng(sampling.seed)
        t0 = time.perf_counter()
        while not answer.done:
            answer.push(sample_next(logits, sampling, rng))
            timings.ttft_s = timings.ttft_s or time.perf_counter() - start
            if chunk := answer.new_text():
                yield chunk
            if not answer.done:
                logits = self._eval_tokens([answer.token_ids[-1]])
                self._cached_keys.append(answer.token_ids[-1])
        timings.decode_tokens = len(answer.token_ids)
        timings.decode_s = time.perf_counter() - t0
        timings.total_s = time.perf_counter() - start
        timings.peak_rss_mb = peak_rss_mb()
        return Generation(answer.text, answer.token_ids, answer.finish_reason, timings)

    def _prepare(
        self,
        images: Sequence[ImageInput] | None,
        prompts: Sequence[str | Sequence[Turn]],
        reuse: bool,
        timings: Timings,
    ) -> tuple[list[np.ndarray], list[tuple[list[Piece], list[Any]]]]:
        """The images' features (encoded once each) and, per prompt, its pieces and position keys."""
        images = list(images or [])
        if not reuse:
            self._features.clear()
        t0 = time.perf_counter()
        features: list[np.ndarray] = []
        image_keys: list[str] = []
        for p in self.image_processor.batch(self.open_images(images)):
            key, feats, fresh = self._features.get(p, self._encode_pixels)
            image_keys.append(key)
            features.append(feats)
            timings.images_encoded += int(fresh)
        timings.image_encode_s = time.perf_counter() - t0
        plans = []
        for prompt in prompts:
            pieces = self.plan(self.render(prompt, len(images)), image_keys)
            keys = self._keys(pieces)
            if len(keys) + 1 > self.context_length:
                raise PromptTooLongError(
                    f"the prompt needs {len(keys)} positions but the context holds {self.context_length}"
                )
            plans.append((pieces, keys))
        return features, plans

    def _fill(
        self,
        pieces: list[Piece],
        features: list[np.ndarray],
        keys: list[Any],
        end: int,
        reuse: bool,
        timings: Timings,
    ) -> np.ndarray | None:
        """Make the KV cache hold ``keys[:end]``, keeping (with ``reuse``) the longest prefix it already
        holds, but never all of ``keys``; returns the logits after the last position prefilled."""
        keep = min(common_prefix(self._cached_keys, keys) if reuse else 0, end, len(keys) - 1)
        self._truncate(keep)
        self._cached_keys = self._cached_keys[:keep]
        timings.reused_tokens = keep
        t0 = time.perf_counter()
        logits = self._prefill(pieces, features, keep, end)
        self._cached_keys = list(keys[:end])
        timings.prefill_tokens = end - keep
        timings.prefill_s = time.perf_counter() - t0
        return logits

    def _prefill(
        self, pieces: list[Piece], features: list[np.ndarray], keep: int, end: int | None = None
    ) -> np.ndarray | None:
        """Evaluate positions ``keep`` to ``end`` (default: all) of ``pieces``; the last logits, if any."""
        logits: np.ndarray | None = None
        pos = 0
        end = len(self._keys(pieces)) if end is None else end
        for piece in pieces:
            length = self.num_image_tokens if isinstance(piece, ImageSlot) else len(piece)
            lo, hi = max(0, keep - pos), min(length, end - pos)
            if lo < hi:
                if isinstance(piece, ImageSlot):
                    logits = self._eval_embeddings(features[piece.index][lo:hi])
                else:
                    logits = self._eval_tokens(piece[lo:hi])
            pos += length
        return logits
