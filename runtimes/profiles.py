"""Device profiles and the memory-budget check made before a bundle is loaded."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from export.manifest import Manifest
from export.quant_types import ONNX_PRECISIONS, PREFERENCE
from impvlm.errors import ConfigError


@dataclass(frozen=True)
class Profile:
    """What to load and how: precisions by manifest name, threads and context size."""

    name: str
    threads: int | None = None
    vision: str = "fp32"
    lm: str | None = None  # None: the best precision the bundle holds
    context_length: int | None = None
    vision_fallbacks: tuple[str, ...] = ()
    lm_fallbacks: tuple[str, ...] = ()


PROFILES: dict[str, Profile] = {
    "default": Profile("default"),
    # a phone-class CPU: 4 big cores, quantized everything, a small context
    "mobile": Profile(
        "mobile",
        threads=4,
        vision="fp16",
        vision_fallbacks=("int8", "fp32"),
        lm="q4_k_m",
        lm_fallbacks=("q4_0", "q5_k_m", "q8_0", "f16"),
        context_length=1024,
    ),
}

LM_PREFERENCE = PREFERENCE
VISION_PREFERENCE = tuple(ONNX_PRECISIONS)


def get_profile(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise ConfigError(f"unknown profile {name!r}; known: {', '.join(PROFILES)}") from None


def choose(
    available: dict[str, Any],
    wanted: str | None,
    fallbacks: tuple[str, ...],
    preference: tuple[str, ...],
    what: str,
) -> str:
    """Pick a precision by name from a manifest section, with a clear error listing what exists."""
    if wanted is not None and wanted in available:
        return wanted
    for name in fallbacks:
        if name in available:
            return name
    if wanted is not None and not fallbacks:
        raise ConfigError(f"the bundle has no {what} {wanted!r}; it has: {', '.join(available) or 'none'}")
    for name in preference:
        if name in available:
            return name
    if available:
        return next(iter(available))
    raise ConfigError(f"the bundle holds no {what} files")


@dataclass(frozen=True)
class MemoryEstimate:
    weights_mb: float
    kv_cache_mb: float
    overhead_mb: float
    budget_mb: float | None

    @property
    def total_mb(self) -> float:
        return self.weights_mb + self.kv_cache_mb + self.overhead_mb

    @property
    def fits(self) -> bool:
        return self.budget_mb is None or self.total_mb <= self.budget_mb

    def describe(self) -> str:
        verdict = (
            ""
            if self.budget_mb is None
            else (" fits" if self.fits else " does NOT fit") + f" {self.budget_mb:.0f} MB"
        )
        return (
            f"estimated {self.total_mb:.0f} MB (weights {self.weights_mb:.0f} + KV cache {self.kv_cache_mb:.0f}"
            f" + runtime {self.overhead_mb:.0f}){verdict}"
        )


def estimate_memory(
    bundle_dir: str | os.PathLike,
    manifest: Manifest,
    vision: str,
    lm: str,
    context_length: int,
    budget_mb: float | None = None,
) -> MemoryEstimate:
    """Weights (file sizes) + f16 KV cache for the context + a fixed runtime overhead.

    Reads only the manifest and the GGUF header (memory-mapped), so it runs before loading.
    """
    from pathlib import Path

    import gguf

    vision_file, lm_file = manifest.vision[vision].file, manifest.lm[lm].file
    weights = manifest.files[vision_file].bytes + manifest.files[lm_file].bytes
    reader = gguf.GGUFReader(Path(bundle_dir) / lm_file)
    arch = bytes(reader.fields[gguf.Keys.General.ARCHITECTURE].parts[-1]).decode()
    layers = int(reader.fields[gguf.Keys.LLM.BLOCK_COUNT.format(arch=arch)].parts[-1][0])
    kv = 2 * layers * context_length * manifest.model.embedding_width * 2  # K and V, f16
    return MemoryEstimate(weights / 2**20, kv / 2**20, 150.0, budget_mb)
