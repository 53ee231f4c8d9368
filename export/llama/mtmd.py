"""`MtmdEncoder`: an mmproj GGUF loaded in llama.cpp's multimodal library (libmtmd).

Example::

    with LlamaSession("bundle/gguf/model-f16.gguf") as lm, MtmdEncoder("bundle/gguf/mmproj-f16.gguf", lm) as enc:
        features = enc.encode(np.asarray(Image.open("cat.png").convert("RGB")))  # (N, D_lm)

libmtmd's log output is routed to the ``export.mtmd`` logger at DEBUG level (errors at WARNING).
"""

from __future__ import annotations

import ctypes
import threading
from pathlib import Path
from typing import Any

import numpy as np

from export.errors import ExportError
from export.llama.library import LogTail, NativeHandle, llama_cpp_module

#: The upstream defect a CLIP tower runs into (the llava graph appends the class token after the
#: patches while its inputs assume it first): the file is right, the library computes something else.
CLS_ORDER_BUG = "ggml-org/llama.cpp#25814"
_MTMD_LOCK = threading.Lock()
_MTMD_STATE: dict[str, Any] = {}
_MTMD_LOG = LogTail("export.mtmd")


def mtmd_module() -> Any:
    """Import llama-cpp-python's libmtmd bindings once and route libmtmd's logs to ``export.mtmd``."""
    lib = llama_cpp_module()  # the llama backend first
    with _MTMD_LOCK:
        if "mtmd" in _MTMD_STATE:
            return _MTMD_STATE["mtmd"]
        try:
            from llama_cpp import mtmd_cpp
        except (ImportError, OSError) as exc:  # pragma: no cover - depends on the build
            raise ExportError(f"llama-cpp-python was built without libmtmd (multimodal): {exc}") from exc

        _on_log = _MTMD_LOG.callback(lib)
        mtmd_cpp.mtmd_log_set(_on_log, ctypes.c_void_p(0))
        mtmd_cpp.mtmd_helper_log_set(_on_log, ctypes.c_void_p(0))
        _MTMD_STATE["callback"] = _on_log  # keep the C callback alive
        _MTMD_STATE["mtmd"] = mtmd_cpp
        return mtmd_cpp


class MtmdEncoder(NativeHandle):
    """An mmproj file loaded in libmtmd: RGB images in, projected image embeddings out.

    libmtmd needs the text model the embeddings are for (it checks the width against the LM's), so
    it is given a :class:`~export.llama.LlamaSession` of the LM GGUF; the session must
    outlive the encoder. ``encode`` runs llama.cpp's own preprocessing (for this projector: fit and
    letterbox to ``image_size``, bicubic) and graph, and returns ``(N, n_embd)`` float32: what stock
    llama.cpp feeds its LM, ready for ``LlamaSession.eval_embeddings``.

    Args:
        mmproj_path: the mmproj GGUF.
        session: the LM, loaded (its ``llama_model`` is shared, not copied).
        n_threads: CPU threads for the vision graph (default: the session's).
    """

    def __init__(self, mmproj_path: str | Path, session: Any, n_threads: int | None = None) -> None:
        self._ctx = None
        self._lib = lib = mtmd_module()
        self.path = Path(mmproj_path)
        if not self.path.is_file():
            raise ExportError(f"mmproj file not found: {self.path}")
        self.n_embd = int(session.n_embd)
        self.n_threads = int(n_threads or session.n_threads)
        params = lib.mtmd_context_params_default()
        params.use_gpu = False
        params.print_timings = False
        params.n_threads = self.n_threads
        params.warmup = False
        _MTMD_LOG.clear()
        # LlamaSession exposes no public handle of its llama_model; libmtmd borrows it.
        self._ctx = lib.mtmd_init_from_file(str(self.path).encode(), session._model, params)
        if not self._ctx:
            raise ExportError(f"libmtmd cannot load {self.path}: {_MTMD_LOG.tail()}")
        if not lib.mtmd_support_vision(self._ctx):
            self.close()
            raise ExportError(f"{self.path} has no vision encoder")
        self._marker = lib.mtmd_default_marker()

    def encode(self, rgb: np.ndarray) -> np.ndarray:
        """``(H, W, 3)`` uint8 RGB -> ``(N, n_embd)`` float32 image embeddings (llama.cpp preprocessing)."""
        lib = self._lib
        image = np.ascontiguousarray(rgb, dtype=np.uint8)
        if image.ndim != 3 or image.shape[2] != 3 or 0 in image.shape:
            raise ExportError(f"expected an (H, W, 3) uint8 RGB image, got shape {tuple(image.shape)}")
        height, width = image.shape[:2]
        data = image.ctypes.data_as(ctypes.POINTER(ctypes.c_uint8))
        bitmap = lib.mtmd_bitmap_init(width, height, data)
        if not bitmap:
            raise ExportError("libmtmd could not create a bitmap")
        chunks = lib.mtmd_input_chunks_init()
        try:
            text = lib.mtmd_input_text(self._marker, len(self._marker), False, True)
            bitmaps = (lib.mtmd_bitmap_p_ctypes * 1)(bitmap)
            _MTMD_LOG.clear()
            rc = lib.mtmd_tokenize(self._ctx, chunks, ctypes.byref(text), bitmaps, 1)
            if rc != 0:
                raise ExportError(f"mtmd_tokenize failed ({rc}): {_MTMD_LOG.tail()}")
            chunk = self._image_chunk(chunks)
            n_tokens = int(lib.mtmd_input_chunk_get_n_tokens(chunk))
            rc = lib.mtmd_encode_chunk(self._ctx, chunk)
            if rc != 0:
                raise ExportError(f"mtmd_encode_chunk failed ({rc}): {_MTMD_LOG.tail()}")
            ptr = lib.mtmd_get_output_embd(self._ctx)
            if not ptr:
                raise ExportError("libmtmd returned no embeddings")
            return np.ctypeslib.as_array(ptr, shape=(n_tokens, self.n_embd)).copy()
        finally:
            lib.mtmd_input_chunks_free(chunks)
            lib.mtmd_bitmap_free(bitmap)

    def _image_chunk(self, chunks: Any) -> Any:
        lib = self._lib
        for i in range(int(lib.mtmd_input_chunks_size(chunks))):
            chunk = lib.mtmd_input_chunks_get(chunks, i)
            if lib.mtmd_input_chunk_get_type(chunk) == lib.MTMD_INPUT_CHUNK_TYPE_IMAGE:
                return chunk
        raise ExportError("libmtmd produced no image chunk")

    def close(self) -> None:
        if self._ctx:
            self._lib.mtmd_free(self._ctx)
            self._ctx = None
