"""Image preprocessing shared by training, export and every runtime (PIL + numpy, no torch).

Imp v1 squashes the image to a square (bicubic, no crop, no pad); ``pad`` mode (later Imp variants,
LLaVA-Phi) first pads to a square filled with the mean colour. LLaVA-Phi's CLIP "resize shortest
edge + centre crop" of an already square image is the same as resizing it to the square.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from impvlm.errors import ImageError, ImageTooLargeError

ImageInput = Image.Image | str | Path | bytes | bytearray

DEFAULT_MAX_IMAGE_PIXELS = 64_000_000
"""The largest image (width x height) any command opens unless told otherwise (``--max-image-pixels``):
64 MP is 192 MB decoded as RGB, far more than a 384-pixel vision tower needs."""


def load_image(
    source: ImageInput, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS, name: str | None = None
) -> Image.Image:
    """Open an image from a PIL image, a path or raw bytes, and convert it to RGB.

    The one guard against decompression bombs: a file's size is read from its header and an image
    of more than ``max_pixels`` pixels is refused before anything is decoded. A PIL image is
    already decoded and passes as it is.

    Args:
        source: a PIL image, a file path or the file's bytes.
        max_pixels: the largest width x height accepted.
        name: how messages name the image (default: the path, or ``<bytes>``).

    Raises:
        ImageTooLargeError: the image has more than ``max_pixels`` pixels.
        ImageError: naming the file when it is missing, unreadable, truncated or not an image.
    """
    if isinstance(source, Image.Image):
        image = source
        name = name or "<PIL image>"
    else:
        name = name or ("<bytes>" if isinstance(source, bytes | bytearray) else str(source))
        image = _open_checked(source, max_pixels, name)
    if image.mode != "RGB":
        try:
            image = image.convert("RGB")
        except (OSError, ValueError) as exc:
            raise ImageError(f"cannot convert image {name} (mode {image.mode}) to RGB: {exc}") from None
    return image


def _open_checked(source: str | Path | bytes | bytearray, max_pixels: int, name: str) -> Image.Image:
    """Read the header, check the size, then decode. Pillow's own bomb warning is left out (the size
    check below decides); its hard limit (``2 * PIL.Image.MAX_IMAGE_PIXELS``) still applies."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(source) if isinstance(source, bytes | bytearray) else Path(source))
        width, height = image.size
        if width * height > max_pixels:
            image.close()
            raise ImageTooLargeError(
                f"image {name} is {width}x{height} = {width * height:,} pixels, more than the limit of "
                f"{max_pixels:,} (max-image-pixels)"
            )
        image.load()
    except FileNotFoundError:
        raise ImageError(f"image not found: {name}") from None
    except Image.DecompressionBombError as exc:  # beyond Pillow's own hard limit, whatever max_pixels says
        raise ImageTooLargeError(f"image {name} is too large to decode ({exc})") from None
    except UnidentifiedImageError:
        raise ImageError(f"cannot decode image {name}: not an image (unknown format)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"cannot decode image {name}: {exc}") from None
    return image


@dataclass(frozen=True)
class ImageProcessor:
    """Turns images into normalised ``float32`` arrays of shape ``(3, size, size)``.

    ``max_pixels`` is the largest image file it opens (see :func:`load_image`); it is a safety limit,
    not part of the preprocessing, and not written to a bundle's manifest.
    """

    size: int
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    aspect_ratio: str = "squash"
    max_pixels: int = field(default=DEFAULT_MAX_IMAGE_PIXELS, compare=False)

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

    @property
    def pad_colour(self) -> tuple[int, ...]:
        """The mean colour a ``pad`` image is filled with, truncated to 8 bits as upstream's
        ``expand2square(image, tuple(int(x * 255) for x in image_processor.image_mean))`` does it."""
        return tuple(int(m * 255) for m in self.mean)

    def resize(self, image: ImageInput) -> Image.Image:
        """RGB, optional pad to square with the mean colour, bicubic resize to ``size``."""
        image = load_image(image, self.max_pixels)
        if self.aspect_ratio == "pad":
            image = pad_to_square(image, self.pad_colour)
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
