"""Projected image features kept by image content, so a repeated image is encoded once."""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable

import numpy as np


class FeatureCache:
    """The features of the ``size`` most recently used images, keyed on their pixels' shape + bytes
    (the `native` runtime sees raw images of any size, and a 32x64 and a 64x32 image of one colour
    have the same bytes)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._features: OrderedDict[str, np.ndarray] = OrderedDict()

    def get(
        self, pixels: np.ndarray, encode: Callable[[np.ndarray], np.ndarray]
    ) -> tuple[str, np.ndarray, bool]:
        """``(key, features, fresh)`` of one image; ``fresh``: ``encode`` (``(B, ...)`` pixels ->
        ``(B, N, D)`` features) ran for it in this call."""
        digest = hashlib.sha1(np.asarray(pixels.shape, dtype=np.int64).tobytes())
        digest.update(pixels.tobytes())
        key = digest.hexdigest()
        if key in self._features:
            self._features.move_to_end(key)
            return key, self._features[key], False
        feats = encode(pixels[None])[0]
        self._features[key] = feats
        while len(self._features) > self.size:
            self._features.popitem(last=False)
        return key, feats, True

    def clear(self) -> None:
        self._features.clear()
