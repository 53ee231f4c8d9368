"""The LM half shared by the runtimes that decode on llama.cpp (`exported`, `native`).

Both hold one :class:`export.llama_session.LlamaSession` as ``self._lm`` and differ only in how image
features are made (ONNX Runtime or libmtmd); the decoding hooks of :class:`runtimes.base.Runtime` are
the same calls into the session, written once here.
"""

from __future__ import annotations

import numpy as np

from export.llama_session import LlamaSession
from runtimes.base import Runtime


def gpu_layers() -> int:
    """Offload every layer when llama.cpp was built with a GPU backend, else none."""
    import llama_cpp

    supports = getattr(llama_cpp, "llama_supports_gpu_offload", None)
    return 999 if supports is not None and supports() else 0


class LlamaLMRuntime(Runtime):
    """A runtime whose LM is the llama.cpp session ``self._lm`` (set by the subclass's ``__init__``)."""

    _lm: LlamaSession

    def close(self) -> None:
        self._lm.close()

    def _truncate(self, n: int) -> None:
        if n == 0:
            self._lm.reset()
        else:
            self._lm.truncate(n)

    def _eval_tokens(self, ids: list[int]) -> np.ndarray:
        self._lm.eval_tokens(ids)
        return self._lm.logits()

    def _eval_embeddings(self, embeddings: np.ndarray) -> np.ndarray:
        self._lm.eval_embeddings(np.ascontiguousarray(embeddings, dtype=np.float32))
        return self._lm.logits()
