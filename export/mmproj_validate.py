"""An mmproj file run by libmtmd, measured against the PyTorch model it was written from.

Two ways (:func:`validate_mmproj`):

- ``same_pixels``: llama.cpp gets the image already preprocessed the Imp way (squash or pad, PIL
  bicubic, at the input size), so only the file and llama.cpp's graph differ;
- ``llama_cpp_preprocessing``: llama.cpp gets the raw image and preprocesses it itself (letterbox,
  its own bicubic), which is what stock llama.cpp users run.

Each is measured on image features (per-token cosine, max abs error) and on greedy answers with the
LM GGUF; PyTorch's side (:class:`MmprojReference`) is computed once for every file of a model.

Example::

    result = validate_mmproj(model, tok, "gguf/mmproj-f16.gguf", "gguf/model-f16.gguf", prompts)
    result["verdict"]["passed"], result["features"]["same_pixels"]["mean_cos"]
"""

from __future__ import annotations

import collections
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from export.calibration import N_GREEDY
from export.errors import ExportError
from export.gguf_file import read_file_type
from export.gguf_validate import TorchReference, greedy_agreement, llama_run, logit_metrics, logit_summary
from export.kinds.base import judgement
from export.llama import CLS_ORDER_BUG
from export.mmproj import LLAMA_CPP_PAD_COLOUR, mmproj_facts
from export.quant_types import file_type_name, mmproj_gate

#: What :func:`validation_images` returns, for the bundle manifest.
VALIDATION_IMAGES_DESCRIPTION = (
    "synthetic scenes (impvlm.data.synthetic, seed 1) rendered at 2x the input size: square, "
    "cropped to 4:3 landscape, 3:4 portrait and 2:1 wide, plus a uniform-noise square"
)


def validation_images(config: Any, seed: int = 1) -> list[Any]:
    """Raw RGB images of several aspect ratios, where letterbox and squash differ (PIL images)."""
    from PIL import Image

    from impvlm.data.synthetic import Renderer, WorldConfig, sample_scene

    rng = np.random.default_rng(seed)
    world = WorldConfig(seed=seed)
    side = 2 * max(int(config.image_size), 64)
    renderer = Renderer(world, size=side)
    scenes = [renderer(sample_scene(rng, world)) for _ in range(4)]
    images = [
        scenes[0],
        scenes[1].crop((0, 0, side, side * 3 // 4)),
        scenes[2].crop((0, 0, side * 3 // 4, side)),
        scenes[3].crop((0, side // 4, side, side * 3 // 4)),
        Image.fromarray(rng.integers(0, 256, size=(side // 2, side // 2, 3), dtype=np.uint8)),
    ]
    return images


def feature_stats(got: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    """Per-token cosine (min / mean), max |error| and the reference's scale of ``(..., N, D)`` arrays."""
    from export.onnx_vision import token_cosines

    cos = token_cosines(got, ref)
    return {
        "min_cos": float(cos.min()),
        "mean_cos": float(cos.mean()),
        "max_abs_err": float(np.abs(got.astype(np.float64) - ref).max()),
        "ref_max_abs": float(np.abs(ref).max()),
    }


# ------------------------------------------------------------------------------------ PyTorch's side
@dataclass
class MmprojReference:
    """PyTorch's answers for an mmproj check: reusable across the precisions of one model."""

    prompts: list[str]
    raw: list[Any]  # the images as given (PIL)
    given: bool  # the images were given (not :func:`validation_images`)
    squashed: list[np.ndarray]  # (S, S, 3) uint8: preprocessed the Imp way
    features: np.ndarray  # (B, N, D) PyTorch's image features
    cls_last: np.ndarray | None  # a CLIP tower's features as the buggy llava graph computes them
    order: list[int]  # image row of each <image> across the prompts
    answers: TorchReference
    n_greedy: int

    def per_probe(self, feats: np.ndarray, image_token: int) -> list[np.ndarray | None]:
        """``feats`` rows of each probe's images (None for a text-only probe)."""
        out: list[np.ndarray | None] = []
        used = 0
        for probe in self.answers.probes:
            k = probe.ids.count(image_token)
            out.append(feats[self.order[used : used + k]] if k else None)
            used += k
        return out


def mmproj_reference(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    images: Sequence[Any] | None = None,
    n_greedy: int = N_GREEDY,
) -> MmprojReference:
    """Features and greedy answers of the PyTorch model on ``images`` (default
    :func:`validation_images`); each ``<image>`` of ``prompts`` takes the next image, cycled."""
    from export.gguf_validate import torch_reference
    from impvlm.image_processing import ImageProcessor, load_image
    from impvlm.templates import IMAGE_TOKEN

    config = model.config
    processor = ImageProcessor.from_config(config)
    raw = [load_image(i) for i in (images if images is not None else validation_images(config))]
    pixels = processor.batch(raw)  # what PyTorch sees
    n_tags = sum(p.count(IMAGE_TOKEN) for p in prompts)
    order = [i % len(raw) for i in range(n_tags)]
    answers = torch_reference(model, tokenizer, list(prompts), pixels[order] if n_tags else None, n_greedy)
    has_cls = mmproj_facts(config).has_class_embedding
    return MmprojReference(
        prompts=list(prompts),
        raw=raw,
        given=images is not None,
        squashed=[np.asarray(processor.resize(i)) for i in raw],
        features=_torch_features(model, pixels),
        cls_last=_cls_last_features(model, pixels) if has_cls else None,
        order=order,
        answers=answers,
        n_greedy=n_greedy,
    )


def _torch_features(model: Any, pixels: np.ndarray) -> np.ndarray:
    import torch

    device = next(model.parameters()).device
    with torch.no_grad():
        return model.encode_images(torch.from_numpy(pixels).to(device)).float().cpu().numpy()


def _cls_last_features(model: Any, pixels: np.ndarray) -> np.ndarray:
    """What the buggy llava graph computes for a CLIP tower: class token appended after the patches
    with positions in sequence order, output rows 1..N (:data:`~export.llama.CLS_ORDER_BUG`)."""
    import torch

    layers = mmproj_facts(model.config).block_count
    emb = model.vision_tower.model.vision_model.embeddings
    vision = model.vision_tower.model.vision_model
    with torch.no_grad():
        x = torch.from_numpy(pixels).to(emb.patch_embedding.weight.device, emb.patch_embedding.weight.dtype)
        patches = emb.patch_embedding(x).flatten(2).transpose(1, 2)  # (B, N, C)
        cls = emb.class_embedding.expand(patches.shape[0], 1, -1)  # (B, 1, C)
        hidden = vision.pre_layrnorm(torch.cat([patches, cls], 1) + emb.position_embedding.weight[None])
        for layer in vision.encoder.layers[:layers]:
            out = layer(hidden, None, None)
            hidden = out[0] if isinstance(out, tuple) else out
        return model.mm_projector(hidden[:, 1:]).float().cpu().numpy()


# ------------------------------------------------------------------------------------ llama.cpp's side
def validate_mmproj(
    model: Any,
    tokenizer: Any,
    mmproj_path: str | Path,
    lm_path: str | Path,
    prompts: Sequence[str],
    images: Sequence[Any] | None = None,
    n_greedy: int = N_GREEDY,
    threads: int | None = None,
    *,
    reference: MmprojReference | None = None,
) -> dict[str, Any]:
    """Measure an mmproj file run by libmtmd against the PyTorch model, two ways (module docstring).

    Features: per-token cosine and max abs error. Answers to ``prompts`` (each ``<image>`` takes the
    next image, cycled) with the LM GGUF ``lm_path``: exact match and prefix agreement of
    ``n_greedy`` tokens against PyTorch, top-1 agreement and KL of the next-token distributions.
    ``lm_only`` feeds PyTorch's own features to the same LM, the baseline that isolates the LM
    file's share of the drift. The verdict applies :func:`~export.quant_types.mmproj_gate` to
    ``same_pixels`` features; everything else is recorded, not gated (letterbox vs squash is a
    property of llama.cpp, not of the file). ``reference``: :func:`mmproj_reference` computed once
    for several files (same prompts, images and ``n_greedy``).
    """
    from export.quantize import tensor_types

    start = time.perf_counter()
    path, lm_path = Path(mmproj_path), Path(lm_path)
    if reference is None:
        reference = mmproj_reference(model, tokenizer, prompts, images, n_greedy)
    elif reference.prompts != list(prompts) or reference.n_greedy != n_greedy:
        raise ExportError("the reference was computed for other prompts or another n_greedy")
    same, native, answers, settings = _llama_cpp_runs(model.config, path, lm_path, reference, threads)
    precision = file_type_name(read_file_type(path))
    features, bug = _feature_report(reference, same, native)
    config = model.config
    raw = reference.raw
    result = {
        "file": path.name,
        "precision": precision,
        "file_bytes": path.stat().st_size,
        "tensor_types": dict(collections.Counter(tensor_types(path).values())),
        "lm_file": lm_path.name,
        "n_images": len(raw),
        "images": f"{len(raw)} given images" if reference.given else VALIDATION_IMAGES_DESCRIPTION,
        "preprocessing": {
            "pytorch": f"{config.image_aspect_ratio} to {config.image_size}x{config.image_size} (PIL bicubic)",
            "llama_cpp": f"letterbox to {config.image_size}x{config.image_size}, pad colour "
            f"{LLAMA_CPP_PAD_COLOUR} (llama.cpp bicubic)",
        },
        "features": features,
        "answers": {"n_prompts": len(reference.prompts), "n_greedy": reference.n_greedy, **answers},
        "llama_cpp": settings,
        "seconds": round(time.perf_counter() - start, 3),
    }
    result["verdict"] = judge_mmproj(result, precision, bug)
    return result


def _llama_cpp_runs(
    config: Any, path: Path, lm_path: Path, reference: MmprojReference, threads: int | None
) -> tuple[np.ndarray, np.ndarray, dict[str, Any], dict[str, Any]]:
    """libmtmd's features (same pixels, own preprocessing) and the LM's answers fed each feature set."""
    from export.llama import LlamaSession, MtmdEncoder

    n = reference.n_greedy
    image_token = int(config.image_token_index)
    longest = max(len(lg) for lg in reference.answers.logits) + n + 1
    n_batch = max(512, mmproj_facts(config).image_tokens)
    with LlamaSession(lm_path, n_ctx=longest, n_threads=threads, n_batch=n_batch, all_logits=True) as session:
        with MtmdEncoder(path, session, n_threads=threads) as encoder:
            same = np.stack([encoder.encode(a) for a in reference.squashed])
            native = np.stack([encoder.encode(np.asarray(i)) for i in reference.raw])
        ref = reference.features
        if same.shape != ref.shape:
            raise ExportError(
                f"libmtmd gives {same.shape[1]} x {same.shape[2]} image embeddings, PyTorch "
                f"{ref.shape[1]} x {ref.shape[2]}: {path.name} is not this model's"
            )
        runs = {"lm_only": ref, "same_pixels": same, "llama_cpp_preprocessing": native}
        answers = {
            name: _answer_run(
                session, reference.answers, reference.per_probe(feats, image_token), image_token, n
            )
            for name, feats in runs.items()
        }
        settings = {"n_threads": session.n_threads, "kv_type": "f16"}
    return same, native, answers, settings


def _answer_run(
    session: Any, reference: TorchReference, features: list[Any], image_token: int, n: int
) -> dict:
    """Greedy tokens and next-token agreement of the LM in llama.cpp fed ``features`` per probe."""
    tokens, per_pos = [], []
    for probe, feats, ref_logits in zip(reference.probes, features, reference.logits):
        logits, greedy = llama_run(session, probe, feats, image_token, n)
        tokens.append(greedy)
        per_pos.append(logit_metrics(ref_logits, logits))
    logits_summary = logit_summary(per_pos) or {}
    return {
        **greedy_agreement(reference.greedy, tokens, n),
        "top1_agreement": logits_summary["top1_agreement"],
        "mean_kl": logits_summary["mean_kl"],
    }


def _feature_report(
    reference: MmprojReference, same: np.ndarray, native: np.ndarray
) -> tuple[dict[str, Any], str | None]:
    """Feature statistics of both runs, and the upstream bug a CLIP file's numbers match, if any."""
    ref = reference.features
    features = {
        "same_pixels": feature_stats(same, ref),
        "llama_cpp_preprocessing": {
            **feature_stats(native, ref),
            "per_image": [
                {"size": list(img.size), "mean_cos": feature_stats(n[None], r[None])["mean_cos"]}
                for img, n, r in zip(reference.raw, native, ref)
            ],
        },
    }
    bug = None
    if reference.cls_last is not None:
        simulated = feature_stats(same, reference.cls_last)
        features["cls_last_simulation"] = simulated
        if simulated["mean_cos"] > features["same_pixels"]["mean_cos"] and simulated["mean_cos"] > 0.99:
            bug = CLS_ORDER_BUG
    return features, bug


def judge_mmproj(result: dict[str, Any], qtype: str, upstream_bug: str | None = None) -> dict[str, Any]:
    """Pass/fail of :func:`validate_mmproj`'s ``same_pixels`` features against their gate."""
    gate = mmproj_gate(qtype)
    same = result["features"]["same_pixels"]
    problems = []
    if not same["min_cos"] >= gate.min_cos:  # also catches NaN
        problems.append(f"min cos {same['min_cos']:.5f} < {gate.min_cos}")
    if not same["mean_cos"] >= gate.mean_cos:
        problems.append(f"mean cos {same['mean_cos']:.5f} < {gate.mean_cos}")
    verdict = judgement(gate, problems)
    if problems and upstream_bug:
        verdict["reason"] += (
            f" - libmtmd computes the class token last ({upstream_bug}, matches a simulation of the bug):"
            " the file is right for llama.cpp builds with the fix"
        )
    return {**verdict, "upstream_bug": upstream_bug}
