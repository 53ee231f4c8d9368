"""Parity of a GGUF language model in llama.cpp against the PyTorch model it was exported from.

Every prompt of a probe set is run through both:

- PyTorch: ``model(input_ids, image_features=...)`` (the project's own ``<image>`` splicing);
- llama.cpp: the prompt is cut at each ``<image>`` token into text segments fed as token ids and the
  image's projected features (``model.encode_images``) fed as input embeddings, with continuing
  positions, exactly as the runtime does it.

Compared: the tokenization of the text between images (llama.cpp's vs the HF tokenizer's, and
detokenization back), the next-token logits at every position of every prompt (max / mean absolute
error, top-1 agreement, KL divergence of the next-token distributions, reported for all probes and
split into text-only and image probes) and greedy continuations of ``n_greedy`` tokens, token by token (generation does not
stop at eos, so every prompt yields ``n_greedy`` comparable tokens).

The result is a JSON-serialisable dict for the bundle manifest. llama.cpp runs with the given
session options; the defaults are the runtime's (f16 KV cache, flash attention chosen by llama.cpp).
Note that even an f32 GGUF is not bit-exact: ggml's CPU GELU goes through an fp16 lookup table
(inputs and outputs rounded to fp16) and the f16 KV cache / flash-attention kernels round Q, K and
V, which on a tiny random model gives max logit errors of a few 1e-4 to 1e-3.

Example::

    ref = torch_reference(model, tok, prompts, pixel_values, n_greedy=16)
    report = {q: validate_gguf(model, tok, path, prompts, pixel_values, reference=ref)
              for q, path in files.items()}
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from export.calibration import N_GREEDY
from export.errors import ExportError
from export.gguf_file import read_file_type
from export.quant_types import file_type_name
from impvlm.templates import IMAGE_TOKEN


@dataclass(frozen=True)
class Probe:
    """One prompt: its HF token ids and the pixel values of each ``<image>`` in it, in order."""

    prompt: str
    ids: list[int]
    pixel_values: torch.Tensor | None  # (k, 3, H, W) or None

    def segments(self, image_token: int) -> list[list[int]]:
        """Token ids between the ``<image>`` tokens (k images -> k + 1 segments, maybe empty)."""
        out: list[list[int]] = [[]]
        for t in self.ids:
            if t == image_token:
                out.append([])
            else:
                out[-1].append(t)
        return out


@dataclass
class TorchReference:
    """PyTorch's answers for a probe set: reusable across the quant types of one model."""

    probes: list[Probe]
    features: list[np.ndarray | None]  # per probe: (k, N, D) float32
    logits: list[np.ndarray]  # per probe: (T', V) float32, T' = positions after splicing
    greedy: list[list[int]]  # per probe: n_greedy token ids
    n_greedy: int


# ---------------------------------------------------------------------------------------- probes
def build_probes(model: Any, tokenizer: Any, prompts: Sequence[str], images: Any = None) -> list[Probe]:
    """Tokenize ``prompts`` (no special tokens added; the text between ``<image>`` tags piece by piece,
    with the model's image id at each tag); each ``<image>`` takes the next image (cycled)."""
    from impvlm.tokenizer import encode_with_images

    if not prompts:
        raise ExportError("the probe set needs at least one prompt")
    image_token = int(model.config.image_token_index)
    pixels = None if images is None else torch.as_tensor(np.asarray(images), dtype=torch.float32)
    if pixels is not None and (pixels.ndim != 4 or pixels.shape[0] == 0):
        raise ExportError(f"images must be pixel values of shape (B, 3, H, W), got {tuple(pixels.shape)}")
    probes, next_image = [], 0
    for prompt in prompts:
        ids = encode_with_images(tokenizer, prompt, image_token)
        k = ids.count(image_token)
        if k and pixels is None:
            raise ExportError(f"prompt {prompt[:40]!r} has an <image> token but no images were given")
        px = None
        if k:
            rows = [(next_image + j) % pixels.shape[0] for j in range(k)]
            next_image += k
            px = pixels[rows]
        probes.append(Probe(prompt, ids, px))
    return probes


def torch_forward_inputs(
    model: Any, tokenizer: Any, prompts: Sequence[str], images: Any = None
) -> Iterator[dict[str, torch.Tensor]]:
    """``model(**kwargs)`` arguments for each prompt (``input_ids`` and, with images, ``pixel_values``)."""
    device = next(model.parameters()).device
    for probe in build_probes(model, tokenizer, prompts, images):
        kwargs = {"input_ids": torch.tensor([probe.ids], device=device)}
        if probe.pixel_values is not None:
            kwargs["pixel_values"] = probe.pixel_values.to(device)
        yield kwargs


@torch.no_grad()
def torch_reference(
    model: Any, tokenizer: Any, prompts: Sequence[str], images: Any = None, n_greedy: int = N_GREEDY
) -> TorchReference:
    """Logits at every position and greedy continuations of the PyTorch model."""
    model.eval()
    device = next(model.parameters()).device
    probes = build_probes(model, tokenizer, prompts, images)
    features, logits, greedy = [], [], []
    for probe in probes:
        ids = torch.tensor([probe.ids], device=device)
        feats = None
        if probe.pixel_values is not None:
            feats = model.encode_images(probe.pixel_values.to(device)).float()  # (k, N, D)
        out = model(input_ids=ids, image_features=feats, use_cache=True)
        features.append(None if feats is None else feats.cpu().numpy())
        logits.append(out.logits[0].float().cpu().numpy())
        tokens: list[int] = []
        past, step_logits = out.past_key_values, out.logits[0, -1]
        for _ in range(n_greedy):
            tokens.append(int(step_logits.argmax()))
            if len(tokens) == n_greedy:
                break
            out = model(
                input_ids=torch.tensor([[tokens[-1]]], device=device), past_key_values=past, use_cache=True
            )
            past, step_logits = out.past_key_values, out.logits[0, -1]
        greedy.append(tokens)
    return TorchReference(probes, features, logits, greedy, n_greedy)


# ---------------------------------------------------------------------------------------- llama.cpp
def llama_run(session: Any, probe: Probe, features: np.ndarray | None, image_token: int, n_greedy: int):
    """``(logits (T', V), greedy ids)`` of one probe in a session made with ``all_logits=True``."""
    session.reset()
    rows: list[np.ndarray] = []
    for j, segment in enumerate(probe.segments(image_token)):
        if j > 0:
            session.eval_embeddings(features[j - 1])
            rows.append(session.logits_all())
        if segment:
            session.eval_tokens(segment)
            rows.append(session.logits_all())
    tokens: list[int] = []
    step = rows[-1][-1]
    while len(tokens) < n_greedy:
        tokens.append(int(step.argmax()))
        if len(tokens) < n_greedy:
            session.eval_tokens([tokens[-1]])
            step = session.logits()
    return np.concatenate(rows), tokens


# ---------------------------------------------------------------------------------------- metrics
def logit_metrics(ref: np.ndarray, got: np.ndarray) -> dict[str, np.ndarray]:
    """Per-position max |error|, top-1 agreement and KL(P_ref || P_got) of ``(T, V)`` logit rows."""
    ref64, got64 = ref.astype(np.float64), got.astype(np.float64)
    log_p = _log_softmax(ref64)
    log_q = _log_softmax(got64)
    return {
        "max_abs": np.abs(ref64 - got64).max(-1),
        "mean_abs": np.abs(ref64 - got64).mean(-1),
        "top1": (ref64.argmax(-1) == got64.argmax(-1)).astype(np.float64),
        "kl": np.maximum((np.exp(log_p) * (log_p - log_q)).sum(-1), 0.0),
    }


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def logit_summary(per_pos: list[dict[str, np.ndarray]]) -> dict[str, float | int] | None:
    """Max / mean logit error, top-1 agreement and KL over every position of :func:`logit_metrics` rows."""
    if not per_pos:
        return None
    cat = {k: np.concatenate([p[k] for p in per_pos]) for k in per_pos[0]}
    return {
        "n_positions": int(cat["kl"].size),
        "max_abs_logit_error": float(cat["max_abs"].max()),
        "mean_abs_logit_error": float(cat["mean_abs"].mean()),
        "top1_agreement": float(cat["top1"].mean()),
        "mean_kl": float(cat["kl"].mean()),
        "max_kl": float(cat["kl"].max()),
    }


def greedy_agreement(ref: list[list[int]], got: list[list[int]], n: int) -> dict[str, Any]:
    """How far greedy continuations of ``n`` tokens agree with the reference's, prompt by prompt."""
    first_diff = [next((i for i, (a, b) in enumerate(zip(r, g)) if a != b), n) for r, g in zip(ref, got)]
    return {
        "exact_match": float(np.mean([d == n for d in first_diff])) if first_diff else 1.0,
        # share of generated tokens before the first disagreement
        "prefix_agreement": float(np.mean(first_diff) / n) if n and first_diff else 1.0,
        "first_divergence": first_diff,
    }


# ---------------------------------------------------------------------------------------- API
def validate_gguf(
    model: Any,
    tokenizer: Any,
    gguf_path: str | Path,
    prompts: list[str],
    images: np.ndarray | None,
    n_greedy: int = N_GREEDY,
    *,
    reference: TorchReference | None = None,
    n_threads: int | None = None,
    kv_type: str = "f16",
    flash_attn: bool | None = None,
) -> dict[str, Any]:
    """Compare ``gguf_path`` in llama.cpp with ``model`` on ``prompts`` (and ``images``).

    Args:
        model / tokenizer: the PyTorch model the file was exported from and its HF tokenizer.
        gguf_path: an f32, f16 or quantized GGUF of the model's LM.
        prompts: probe prompts; those with ``<image>`` take the next row of ``images``.
        images: ``(B, 3, H, W)`` preprocessed pixel values, or ``None`` for text-only probes.
        n_greedy: greedy tokens generated and compared per prompt.
        reference: :func:`torch_reference` computed once for several files (same prompts/images).
        n_threads / kv_type / flash_attn: llama.cpp session options.

    Returns:
        ``{"file", "quant_type", "file_type", "file_bytes", "tokenization": {...}, "logits": {...},
        "logits_text": {...} | None, "logits_image": {...} | None, "greedy": {...}, "llama_cpp": {...},
        "seconds"}``. Logit summaries hold ``max_abs_logit_error``, ``mean_abs_logit_error``,
        ``top1_agreement``, ``mean_kl`` and ``max_kl`` over every position of the probes.
    """
    from export.llama import LlamaSession

    start = time.perf_counter()
    path = Path(gguf_path)
    if reference is None:
        reference = torch_reference(model, tokenizer, prompts, images, n_greedy)
    elif [p.prompt for p in reference.probes] != list(prompts) or reference.n_greedy != n_greedy:
        raise ExportError("the reference was computed for other prompts or another n_greedy")
    image_token = int(model.config.image_token_index)
    file_type = read_file_type(path)
    options = {"n_threads": n_threads, "kv_type": kv_type, "flash_attn": flash_attn}
    with LlamaSession(path, **_sizes(reference, image_token), all_logits=True, **options) as session:
        if session.n_vocab != reference.logits[0].shape[-1]:
            raise ExportError(
                f"{path.name} has {session.n_vocab} tokens but the model has {reference.logits[0].shape[-1]}"
            )
        runs = _ProbeRuns(session, tokenizer, image_token)
        for i, probe in enumerate(reference.probes):
            runs.run(i, probe, reference, n_greedy)
        used = {"n_threads": session.n_threads, "n_ctx": session.n_ctx, "n_batch": session.n_batch}
    return {
        "file": path.name,
        "quant_type": file_type_name(file_type),
        "file_type": file_type,
        "file_bytes": path.stat().st_size,
        "n_prompts": len(reference.probes),
        **runs.summary(reference, n_greedy),
        "llama_cpp": {**used, "kv_type": kv_type, "flash_attn": flash_attn},
        "seconds": round(time.perf_counter() - start, 3),
    }


def _sizes(reference: TorchReference, image_token: int) -> dict[str, int]:
    """Context for the longest probe and its greedy tokens; a batch for its longest segment."""
    longest = max(len(lg) for lg in reference.logits) + reference.n_greedy + 1
    longest_segment = max(
        [len(s) for p in reference.probes for s in p.segments(image_token)]
        + [f.shape[1] for f in reference.features if f is not None]
    )
    return {"n_ctx": longest, "n_batch": max(512, longest_segment)}


class _ProbeRuns:
    """The probes of one file in one llama.cpp session: tokenization checks, logits and greedy tokens."""

    def __init__(self, session: Any, tokenizer: Any, image_token: int) -> None:
        self.session, self.tokenizer, self.image_token = session, tokenizer, image_token
        self.clean_up = bool(getattr(tokenizer, "clean_up_tokenization_spaces", False))
        self.encode_mismatches: list[int] = []
        self.decode_mismatches: list[int] = []
        self.per_text: list[dict[str, np.ndarray]] = []
        self.per_image: list[dict[str, np.ndarray]] = []
        self.greedy: list[list[int]] = []

    def run(self, i: int, probe: Probe, reference: TorchReference, n_greedy: int) -> None:
        session = self.session
        segments = probe.segments(self.image_token)  # what a runtime tokenizes: the text between images
        if [session.tokenize(t, parse_special=True) for t in probe.prompt.split(IMAGE_TOKEN)] != segments:
            self.encode_mismatches.append(i)
        if not all(
            _detokenizes_like_hf(session, self.tokenizer, ids, self.clean_up) for ids in segments if ids
        ):
            self.decode_mismatches.append(i)
        got, tokens = llama_run(session, probe, reference.features[i], self.image_token, n_greedy)
        if got.shape != reference.logits[i].shape:
            raise ExportError(
                f"llama.cpp produced {got.shape[0]} positions for prompt {i}, PyTorch {reference.logits[i].shape[0]}"
            )
        per_probe = self.per_image if probe.pixel_values is not None else self.per_text
        per_probe.append(logit_metrics(reference.logits[i], got))
        self.greedy.append(tokens)

    def summary(self, reference: TorchReference, n_greedy: int) -> dict[str, Any]:
        return {
            "n_image_prompts": len(self.per_image),
            "tokenization": {
                "match": not self.encode_mismatches and not self.decode_mismatches,
                "encode_mismatches": self.encode_mismatches,
                "decode_mismatches": self.decode_mismatches,
            },
            "logits": logit_summary(self.per_text + self.per_image),
            "logits_text": logit_summary(self.per_text),
            "logits_image": logit_summary(self.per_image),
            "greedy": {"n_tokens": n_greedy, **greedy_agreement(reference.greedy, self.greedy, n_greedy)},
        }


def _detokenizes_like_hf(session: Any, tokenizer: Any, ids: list[int], clean_up: bool) -> bool:
    for skip in (False, True):
        hf = tokenizer.decode(ids, skip_special_tokens=skip, clean_up_tokenization_spaces=clean_up)
        if session.detokenize(ids, skip_special=skip, clean_up_spaces=clean_up) != hf:
            return False
    return True
