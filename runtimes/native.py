"""`LlamaCppNativeRuntime`: a bundle run the way stock llama.cpp runs it, LM GGUF + mmproj GGUF.

The image goes through llama.cpp's own multimodal library (libmtmd, from llama-cpp-python): its
preprocessing (letterbox for this projector, not Imp's squash), its vision graph and the bundle's
``mmproj-*.gguf``. The embeddings it produces are fed to the LM GGUF through the same
:class:`~export.llama.LlamaSession` path as :class:`~runtimes.exported.ExportedRuntime`, so
templates, tokenization, greedy decoding, stop handling, streaming and prefix reuse are the base
class's, and the benchmarks measure exactly what differs: the vision side of llama.cpp.

``preprocess="imp"`` hands libmtmd the image already preprocessed the Imp way (squash / pad to the
input size with PIL), which isolates the file and graph from the preprocessing difference.

Example::

    rt = LlamaCppNativeRuntime("work/bundle", lm="q4_k_m", mmproj="f16")
    print(rt.generate(["cat.png"], "What colour is the cat?").text)
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from export.llama import CLS_ORDER_BUG, MtmdEncoder
from export.quant_types import PREFERENCE
from impvlm.errors import BundleError, ConfigError
from impvlm.image_processing import ImageInput, ImageProcessor, load_image
from runtimes.llama_lm import LlamaLMRuntime
from runtimes.profiles import LM_PREFERENCE, choose

log = logging.getLogger(__name__)

MMPROJ_PREFERENCE = PREFERENCE
PREPROCESSING = ("llama.cpp", "imp")


class RawImages:
    """The native runtime's "image processor": decoded RGB ``uint8`` arrays, one per image.

    ``llama.cpp`` mode keeps each image at its own size (libmtmd preprocesses it); ``imp`` mode
    resizes it the Imp way first. Arrays differ in shape, so :meth:`batch` returns a list.
    """

    def __init__(self, imp: ImageProcessor, mode: str) -> None:
        if mode not in PREPROCESSING:
            raise ConfigError(f"unknown preprocessing {mode!r}; use one of {', '.join(PREPROCESSING)}")
        self.imp = imp
        self.mode = mode

    def __call__(self, image: ImageInput) -> np.ndarray:
        picture = self.imp.resize(image) if self.mode == "imp" else load_image(image)
        return np.ascontiguousarray(np.asarray(picture, dtype=np.uint8))  # (H, W, 3)

    def batch(self, images: Sequence[ImageInput]) -> list[np.ndarray]:
        return [self(image) for image in images]


class LlamaCppNativeRuntime(LlamaLMRuntime):
    """A bundle's LM GGUF + mmproj GGUF on llama.cpp, images through libmtmd.

    Args:
        bundle: the bundle folder (exported with ``--mmproj``).
        lm: LM precision from the manifest's ``lm`` section (default: the most precise).
        mmproj: mmproj precision from the manifest's ``mmproj`` section (default: the most precise).
        threads: CPU threads for the LM and the vision graph.
        context_length: KV cache size (default: the model's).
        verify: check the bundle files' sha256 first.
        preprocess: ``llama.cpp`` (stock behaviour) or ``imp`` (Imp's resize, then libmtmd).
    """

    name = "native"

    def __init__(
        self,
        bundle: str | Path,
        lm: str | None = None,
        mmproj: str | None = None,
        threads: int | None = None,
        context_length: int | None = None,
        verify: bool | str = True,
        preprocess: str = "llama.cpp",
    ) -> None:
        super().__init__()
        manifest = self._open_bundle(bundle, verify)
        if not manifest.mmproj:
            raise BundleError(
                f"{self.bundle} has no mmproj file: export it with `imp export ... --mmproj f16` "
                "to run it on llama.cpp's multimodal library"
            )
        self.lm_name = choose(manifest.lm, lm, (), LM_PREFERENCE, "LM precision")
        self.mmproj_name = choose(manifest.mmproj, mmproj, (), MMPROJ_PREFERENCE, "mmproj precision")
        self.context_length = int(context_length or manifest.model.context_length)
        self.image_processor = RawImages(ImageProcessor.from_config(manifest.image), preprocess)  # type: ignore[assignment]
        self._open_lm(self.lm_name, self.context_length, threads)
        artifact = manifest.mmproj[self.mmproj_name]
        try:
            self._mtmd = MtmdEncoder(self.bundle / artifact.file, self._lm)
        except BaseException:
            self._lm.close()
            raise
        if (artifact.details or {}).get("has_class_embedding"):
            log.warning(
                "%s: a CLIP tower; llama.cpp builds without the fix for %s compute its features wrongly "
                "(see the mmproj validation in the manifest)",
                self.bundle,
                CLS_ORDER_BUG,
            )

    @property
    def preprocess(self) -> str:
        return self.image_processor.mode  # type: ignore[attr-defined]

    def identity(self) -> dict[str, Any]:
        return {
            "runtime": self.name,
            "bundle": str(self.bundle),
            "manifest_sha256": self._manifest_sha256,
            "model_id": self.manifest.model.id,
            "lm": self.lm_name,
            "mmproj": self.mmproj_name,
            "preprocess": self.preprocess,
            "threads": self._lm.n_threads,
            "context_length": self.context_length,
        }

    def close(self) -> None:
        mtmd = getattr(self, "_mtmd", None)
        if mtmd is not None:
            mtmd.close()
        super().close()

    # ------------------------------------------------------------------ backend hooks
    def _encode_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """``(1, H, W, 3)`` uint8 -> ``(1, N, D)`` float32 through libmtmd."""
        feats = np.stack([self._mtmd.encode(image) for image in pixels])
        if feats.shape[1] != self.num_image_tokens:
            raise BundleError(
                f"libmtmd gives {feats.shape[1]} image embeddings but the model takes {self.num_image_tokens}: "
                f"{self.manifest.mmproj[self.mmproj_name].file} does not belong to this LM"
            )
        return feats
