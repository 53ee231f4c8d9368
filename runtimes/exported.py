"""`ExportedRuntime`: a bundle on ONNX Runtime (vision + projector) and llama.cpp (the Phi-2 LM).

Image features from the ONNX graph are fed into llama.cpp as embeddings at the ``<image>``
position (llama-cpp-python's low-level API, through :class:`export.llama.LlamaSession`);
text is tokenized with the bundle's own ``tokenizer.json``, exactly as the PyTorch runtime does.
Precisions are chosen by name from the manifest; CUDA execution providers and GPU offload are used
when the installed packages offer them, never required.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from export.manifest import MANIFEST_FILE
from export.manifest_check import check_vision_shapes
from impvlm.errors import BundleError
from impvlm.image_processing import ImageProcessor
from runtimes.llama_lm import LlamaLMRuntime
from runtimes.profiles import LM_PREFERENCE, VISION_PREFERENCE, choose, estimate_memory, get_profile


def onnx_providers() -> list[str]:
    import onnxruntime as ort

    available = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


class ExportedRuntime(LlamaLMRuntime):
    name = "exported"
    # llama.cpp's CPU flash attention is slow below about 64 query rows (48 rows: 22 tok/s, 64: 41):
    # a follow-up question's 25 tokens prefill at 18 tok/s with it, 34 without, and 30 sequences
    # decode a step in 1.58 s vs 1.00 s (Phi-2 q4_k_m on 788 cached positions, 2 Zen 4 cores). Off
    # costs 8% on a long prefill.
    cpu_flash_attn = False

    def __init__(
        self,
        bundle: str | Path,
        vision: str | None = None,
        lm: str | None = None,
        threads: int | None = None,
        context_length: int | None = None,
        profile: str | None = None,
        memory_budget_mb: float | None = None,
        verify: bool | str = True,
    ) -> None:
        super().__init__()
        prof = get_profile(profile or "default")
        manifest = self._open_bundle(bundle, verify)
        self.vision_name = choose(
            manifest.vision,
            vision or (prof.vision if profile else None),
            () if vision else prof.vision_fallbacks,
            VISION_PREFERENCE,
            "vision precision",
        )
        self.lm_name = choose(
            manifest.lm, lm or prof.lm, () if lm else prof.lm_fallbacks, LM_PREFERENCE, "LM precision"
        )
        self.context_length = int(
            context_length or min(prof.context_length or 1 << 30, manifest.model.context_length)
        )
        self.threads = threads or prof.threads
        if memory_budget_mb is not None:
            estimate = estimate_memory(
                self.bundle,
                manifest,
                self.vision_name,
                self.lm_name,
                self.context_length,
                float(memory_budget_mb),
            )
            if not estimate.fits:
                raise BundleError(f"{self.bundle}: {estimate.describe()}")
        self.image_processor = ImageProcessor.from_config(manifest.image)
        for needed in (manifest.vision[self.vision_name].file, manifest.lm[self.lm_name].file):
            if not (self.bundle / needed).is_file():
                raise BundleError(f"{self.bundle}: {needed} is missing")
        self._open_vision()
        self._open_lm(self.lm_name, self.context_length, self.threads)

    def _open_vision(self) -> None:
        """The ONNX vision graph on ONNX Runtime, checked against the manifest's sizes (also without
        ``verify``: a manifest's image size or token count that is not the graph's)."""
        import onnxruntime as ort

        options = ort.SessionOptions()
        if self.threads:
            options.intra_op_num_threads = int(self.threads)
        # prepacked weights keep the unpacked initializers alive beside them (an int8 SigLIP-so400m:
        # 773 MB resident instead of 440) and the encode takes as long without them
        options.add_session_config_entry("session.disable_prepacking", "1")
        rel = self.manifest.vision[self.vision_name].file
        self._vision = ort.InferenceSession(str(self.bundle / rel), options, providers=onnx_providers())
        self._vision_input = self._vision.get_inputs()[0].name
        check_vision_shapes(
            self.bundle / MANIFEST_FILE,
            self.manifest,
            rel,
            self._vision.get_inputs()[0].shape,
            self._vision.get_outputs()[0].shape,
        )

    def identity(self) -> dict[str, Any]:
        return {
            "runtime": self.name,
            "bundle": str(self.bundle),
            "manifest_sha256": self._manifest_sha256,
            "model_id": self.manifest.model.id,
            "vision": self.vision_name,
            "lm": self.lm_name,
            "threads": self._lm.n_threads,
            "context_length": self.context_length,
        }

    def _encode_pixels(self, pixels: np.ndarray) -> np.ndarray:
        (features,) = self._vision.run(None, {self._vision_input: pixels.astype(np.float32)})
        return np.asarray(features, dtype=np.float32)
