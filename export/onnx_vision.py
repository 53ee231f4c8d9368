"""The vision tower + projector as one ONNX graph: ``pixel_values [B,3,H,W] -> image_features [B,N,D_lm]``.

The graph is what :meth:`ImpForCausalLM.encode_images` computes (SigLIP with Imp's truncation, or
CLIP with LLaVA-Phi's ``hidden_states[-2]`` and the CLS token dropped), so a runtime splices its
output into the LM's input embeddings exactly as PyTorch does. Files follow the onnx-community /
transformers.js layout and I/O names (:data:`FILENAMES`, :data:`INPUT_NAME`, :data:`OUTPUT_NAME`);
:mod:`export.onnx_write` writes them and :mod:`export.kinds.vision` makes them a bundle's kind.

Every file is checked against PyTorch on real images (synthetic scenes through the
:class:`~impvlm.image_processing.ImageProcessor`) plus random ones, at a batch of several images and
at batch 1 (:func:`check_parity`); a file that misses its precision's :data:`PARITY_THRESHOLDS`
fails its export.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from export.errors import ExportError
from impvlm.config import ImpConfig
from impvlm.modeling import ImpForCausalLM
from impvlm.projector import build_projector
from impvlm.vision import VisionTower

INPUT_NAME = "pixel_values"
OUTPUT_NAME = "image_features"
#: onnx-community names, by precision.
FILENAMES: Mapping[str, str] = {
    "fp32": "vision_encoder.onnx",
    "fp16": "vision_encoder_fp16.onnx",
    "int8": "vision_encoder_q8.onnx",
}


@dataclass(frozen=True)
class ParityThreshold:
    """Lowest acceptable cosine similarity to PyTorch, per token over the feature dimension."""

    min_cos: float  # over every image and token
    mean_cos: float


#: fp32 must match PyTorch to float rounding. fp16 keeps ~3 significant digits through 26 layers;
#: dynamic int8 MatMul weights lose more (ONNX Runtime reports ~0.9999 on small ViTs). A NaN or an
#: infinity fails at any precision. Max abs error is recorded, not thresholded (it scales with the
#: features' magnitude).
PARITY_THRESHOLDS: dict[str, ParityThreshold] = {
    "fp32": ParityThreshold(min_cos=0.99999, mean_cos=0.999995),
    "fp16": ParityThreshold(min_cos=0.999, mean_cos=0.9995),
    "int8": ParityThreshold(min_cos=0.98, mean_cos=0.995),
}


class VisionEncoder(nn.Module):
    """The part of an :class:`ImpForCausalLM` that turns pixels into LM embeddings.

    ``pixel_values (B, 3, H, W) -> image_features (B, N, D_lm)``. It shares the model's tower and
    projector modules (no copy) and runs :meth:`ImpForCausalLM.encode_images` itself, so the graph
    holds no LM weights and cannot drift from the model's own code.

    Example::

        encoder = VisionEncoder.from_model(model)             # or VisionEncoder.from_config(config)
        features = encoder(torch.zeros(2, 3, 384, 384))       # (2, 729, 2560) for imp-v1-3b
    """

    def __init__(self, config: ImpConfig, vision_tower: VisionTower, mm_projector: nn.Module) -> None:
        super().__init__()
        self.config = config
        self.vision_tower = vision_tower
        self.mm_projector = mm_projector

    @classmethod
    def from_model(cls, model: ImpForCausalLM) -> VisionEncoder:
        return cls(model.config, model.vision_tower, model.mm_projector).eval()

    @classmethod
    def from_config(cls, config: ImpConfig) -> VisionEncoder:
        """A randomly initialised tower + projector (for tests at real size without building the LM)."""
        projector = build_projector(config.mm_projector_type, config.vision_hidden_size, config.hidden_size)
        return cls(config, VisionTower(config), projector).eval()

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        # encode_images only reads self.vision_tower and self.mm_projector, which this module has.
        return ImpForCausalLM.encode_images(self, pixel_values)  # type: ignore[arg-type]

    def weight_bytes(self, bytes_per_value: int = 4) -> int:
        return sum(p.numel() for p in self.parameters()) * bytes_per_value


# ---------------------------------------------------------------------------------------- parity


@dataclass
class ParityReport:
    """How an ONNX file's features compare to PyTorch's, per token (cosine over the feature dim)."""

    precision: str
    n_images: int
    batch_sizes: list[int]
    min_cos: float
    mean_cos: float
    max_abs_err: float
    ref_max_abs: float  # the scale max_abs_err is to be read against
    threshold: ParityThreshold
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return bool(
            np.isfinite(self.min_cos)
            and self.min_cos >= self.threshold.min_cos
            and self.mean_cos >= self.threshold.mean_cos
        )

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["passed"] = self.passed
        return out

    def describe(self) -> str:
        return (
            f"cos min {self.min_cos:.6f} / mean {self.mean_cos:.6f} (need >= {self.threshold.min_cos} / "
            f"{self.threshold.mean_cos}), max abs err {self.max_abs_err:.3g} (features up to "
            f"{self.ref_max_abs:.3g}) on {self.n_images} images"
        )


#: What :func:`parity_images` returns by default, for the bundle manifest.
PARITY_IMAGES_DESCRIPTION = (
    "4 synthetic scenes (impvlm.data.synthetic, one cropped to 4:3) and 1 uniform-noise image through "
    "the ImageProcessor, plus 1 standard-normal tensor (seed 0); batch of 6, then batch 1"
)


def parity_images(config: ImpConfig, n_synthetic: int = 4, n_random: int = 2, seed: int = 0) -> np.ndarray:
    """``(n_synthetic + n_random, 3, S, S)`` float32 pixel values for parity checks.

    Synthetic scenes (shapes and signs, one cropped to a 4:3 aspect so ``pad`` mode pads it) and a
    uniform-noise image go through the model's :class:`ImageProcessor`; the last random one is a
    standard normal tensor, beyond the range real images reach.
    """
    from PIL import Image

    from impvlm.data.synthetic import Renderer, WorldConfig, sample_scene
    from impvlm.image_processing import ImageProcessor

    processor = ImageProcessor.from_config(config)
    rng = np.random.default_rng(seed)
    world = WorldConfig(seed=seed, ocr_fraction=0.3)
    renderer = Renderer(world, size=max(64, config.image_size))
    images: list[Image.Image] = []
    for i in range(n_synthetic):
        image = renderer(sample_scene(rng, world))
        if i == 1:
            image = image.crop((0, 0, image.width, image.height * 3 // 4))
        images.append(image)
    if n_random > 0:
        noise = rng.integers(0, 256, size=(config.image_size, config.image_size, 3), dtype=np.uint8)
        images.append(Image.fromarray(noise))
    arrays = [processor.batch(images)]  # (0, 3, S, S) when empty
    if n_random > 1:
        shape = (n_random - 1, 3, config.image_size, config.image_size)
        arrays.append(rng.standard_normal(shape).astype(np.float32))
    return np.concatenate(arrays)


def token_cosines(out: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Cosine similarity per token: ``(B, N, D), (B, N, D) -> (B * N,)`` in float64."""
    a = out.reshape(-1, out.shape[-1]).astype(np.float64)
    b = ref.reshape(-1, ref.shape[-1]).astype(np.float64)
    denom = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
    return (a * b).sum(-1) / np.maximum(denom, 1e-30)


def check_parity(
    onnx_path: Path,
    pixel_values: np.ndarray,
    reference: np.ndarray,
    precision: str,
    threshold: ParityThreshold | None = None,
) -> ParityReport:
    """Run ``onnx_path`` on the whole batch and on its first image alone; compare with ``reference``."""
    started = time.perf_counter()
    session = _session(onnx_path)
    full = session.run([OUTPUT_NAME], {INPUT_NAME: pixel_values})[0]
    single = session.run([OUTPUT_NAME], {INPUT_NAME: pixel_values[:1]})[0]
    if full.shape != reference.shape or single.shape != reference[:1].shape:
        raise ExportError(
            f"{onnx_path.name}: output shape {tuple(full.shape)} (batch 1: {tuple(single.shape)}) "
            f"differs from PyTorch's {tuple(reference.shape)}"
        )
    outs = np.concatenate([full, single])
    refs = np.concatenate([reference, reference[:1]])
    cos = token_cosines(outs, refs)
    finite = bool(np.isfinite(outs).all())
    return ParityReport(
        precision=precision,
        n_images=int(pixel_values.shape[0]),
        batch_sizes=[int(pixel_values.shape[0]), 1],
        min_cos=float(cos.min()) if finite else float("nan"),
        mean_cos=float(cos.mean()) if finite else float("nan"),
        max_abs_err=float(np.abs(outs - refs).max()) if finite else float("inf"),
        ref_max_abs=float(np.abs(refs).max()),
        threshold=threshold or PARITY_THRESHOLDS[precision],
        seconds=round(time.perf_counter() - started, 3),
    )


def _session(path: Path) -> Any:
    import onnxruntime as ort

    try:
        return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ExportError(f"ONNX Runtime cannot load {path.name}: {first}") from exc
