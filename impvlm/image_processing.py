"""Image preprocessing shared by training, export and every runtime (PIL + numpy, no torch).

Imp v1 squashes the image to a square (bicubic, no crop, no pad); ``pad`` mode (later Imp variants,
LLaVA-Phi) first pads to a square filled with the mean colour. LLaVA-Phi's CLIP "resize shortest
edge + centre crop" of an already square image is the same as resizing it to the square.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from impvlm.errors import ImageError

ImageInput = Image.Image | str | Path | bytes | bytearray


def load_image(source: ImageInput) -> Image.Image:
    """Open an image from a PIL image, a path or raw bytes, and convert it to RGB.

    Raises:
        ImageError: naming the file when it is missing, unreadable, truncated or not an image.
    """
    if isinstance(source, Image.Image):
        image = source
        name = "<PIL image>"
    else:
        name = "<bytes>" if isinstance(source, bytes | bytearray) else str(source)
        try:
            if isinstance(source, bytes | bytearray):
                image = Image.open(io.BytesIO(source))
            else:
                image = Image.open(Path(source))
            image.load()
        except FileNotFoundError:
            raise ImageError(f"image not found: {name}") from None
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            raise ImageError(f"cannot decode image {name}: {exc}") from None
    if image.mode != "RGB":
        try:
            image = image.convert("RGB")
        except (OSError, ValueError) as exc:
            raise ImageError(f"cannot convert image {name} (mode {image.mode}) to RGB: {exc}") from None
    return image


@dataclass(frozen=True)
class ImageProcessor:
    """Turns images into normalised ``float32`` arrays of shape ``(3, size, size)``."""

    size: int
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    aspect_ratio: str = "squash"

    @classmethod
    def from_config(cls, config: Any) -> ImageProcessor:
        """Build from an :class:`~impvlm.config.ImpConfig` or a bundle manifest's ``image`` dict."""
        if isinstance(config, dict):
            return cls(
                size=int(config["size"]),
                mean=tuple(config["mean"]),
                std=tuple(config["std"]),
                aspect_ratio=config["aspect_ratio"],
            )
        return cls(
            size=config.image_size,
            mean=tuple(config.image_mean),
            std=tuple(config.image_std),
            aspect_ratio=config.image_aspect_ratio,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "size": self.size,
            "mean": list(self.mean),
            "std": list(self.std),
            "aspect_ratio": self.aspect_ratio,
            "resample": "bicubic",
            "rescale": 1 / 255,
        }

    def resize(self, image: ImageInput) -> Image.Image:
        """RGB, optional pad to square with the mean colour, bicubic resize to ``size``."""
        image = load_image(image)
        if self.aspect_ratio == "pad":
            image = pad_to_square(image, tuple(round(m * 255) for m in self.mean))
        return image.resize((self.size, self.size), Image.Resampling.BICUBIC)

    def __call__(self, image: ImageInput) -> np.ndarray:
        array = np.asarray(self.resize(image), dtype=np.float32) / 255.0  # (H, W, 3)
        array = (array - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return np.ascontiguousarray(array.transpose(2, 0, 1))  # (3, H, W)

    def batch(self, images: list[ImageInput]) -> np.ndarray:
        """``(B, 3, size, size)`` float32."""
        if not images:
            return np.zeros((0, 3, self.size, self.size), np.float32)
        return np.stack([self(image) for image in images])


def pad_to_square(image: Image.Image, fill: tuple[int, ...]) -> Image.Image:
    width, height = image.size
    if width == height:
        return image
    side = max(width, height)
    canvas = Image.new("RGB", (side, side), fill)
    canvas.paste(image, ((side - width) // 2, (side - height) // 2))
    return canvas
