"""The LM half shared by the runtimes that decode on llama.cpp (`exported`, `native`).

Both hold one :class:`export.llama.LlamaSession` as ``self._lm`` and differ only in how image
features are made (ONNX Runtime or libmtmd); the decoding hooks of :class:`runtimes.base.Runtime` are
the same calls into the session, written once here.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from export.llama import LlamaSequences, LlamaSession
from export.manifest import MANIFEST_FILE, Manifest, read_manifest
from export.quant_types import kv_type
from impvlm.errors import BundleError
from runtimes.base import Runtime


def gpu_layers() -> int:
    """Offload every layer when llama.cpp was built with a GPU backend, else none."""
    import llama_cpp

    supports = getattr(llama_cpp, "llama_supports_gpu_offload", None)
    return 999 if supports is not None and supports() else 0


class LlamaLMRuntime(Runtime):
    """A runtime whose LM is the llama.cpp session ``self._lm`` (set by the subclass's ``__init__``)."""

    _lm: LlamaSession
    _sequences: LlamaSequences | None = None  # made on the first fork
    batched = True
    #: llama.cpp's flash attention when no layer is offloaded to a GPU (None: llama.cpp decides)
    cpu_flash_attn: bool | None = None

    def _open_bundle(self, bundle: str | Path, verify: bool | str) -> Manifest:
        """Read the bundle's manifest (sha256-checked unless ``verify`` is false) and set what the text
        side needs from it: template, image token count, stop ids, tokenizer. Returns the manifest."""
        from tokenizers import Tokenizer

        self.bundle = Path(bundle)
        self.manifest = manifest = read_manifest(
            self.bundle, verify=str(verify).lower() not in ("0", "false", "no")
        )
        self._manifest_sha256 = hashlib.sha256((self.bundle / MANIFEST_FILE).read_bytes()).hexdigest()
        self.template = manifest.template.template()  # the stored strings, not a lookup by name
        self.num_image_tokens = manifest.model.image_tokens
        tokens = manifest.tokens
        self.stop_ids = frozenset(i for i in (tokens.stop, tokens.eos) if i is not None)
        self.tokenizer = Tokenizer.from_file(str(self.bundle / manifest.tokenizer / "tokenizer.json"))
        self.special_ids = frozenset(
            i for i, t in self.tokenizer.get_added_tokens_decoder().items() if t.special
        )
        return manifest

    def _open_lm(self, precision: str, context_length: int, threads: int | None) -> None:
        """Load the LM GGUF ``precision`` as ``self._lm`` and check it takes the manifest's embeddings."""
        n_gpu_layers = gpu_layers()
        self._lm = LlamaSession(
            self.bundle / self.manifest.lm[precision].file,
            n_ctx=context_length,
            n_threads=threads,
            n_gpu_layers=n_gpu_layers,
            n_batch=max(512, self.num_image_tokens),
            kv_type=kv_type(precision),
            flash_attn=None if n_gpu_layers else self.cpu_flash_attn,
        )
        if (n_embd := self._lm.n_embd) != (width := self.manifest.model.embedding_width):
            self._lm.close()
            raise BundleError(
                f"{self.bundle}: the LM takes {n_embd}-wide embeddings, the manifest says {width}: "
                "files from different models"
            )

    def close(self) -> None:
        if self._sequences is not None:
            self._sequences.close()
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

    # ------------------------------------------------------------------ batch hooks
    def batch_capacity(self, prefix: int, per_sequence: int) -> int:
        return min(super().batch_capacity(prefix, per_sequence), self._lm.n_seq_max)

    def _fork(self, n: int) -> None:
        if self._sequences is None:
            self._sequences = LlamaSequences(self._lm)
        self._sequences.fork(n)

    def _eval_many(self, rows: Sequence[list[int]]) -> np.ndarray:
        assert self._sequences is not None
        return self._sequences.eval_many(list(rows))

    def _join(self, n: int) -> None:
        assert self._sequences is not None
        self._sequences.join(n)
