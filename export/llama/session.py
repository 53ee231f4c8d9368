"""`LlamaSession`: one llama.cpp model + context, fed token ids or image embeddings.

A thin wrapper over llama-cpp-python's low-level API (no ``Llama`` object, no sampler chain): the
caller decides what to feed and reads logits back, which is all greedy decoding and the GGUF parity
checks need. Whole prompts go to ``llama_decode`` in chunks of ``n_batch`` rows (an image's
embeddings too), and the KV cache can be truncated to a prefix to reuse a system prompt.

Example (an Imp prompt: text, image features, text)::

    with LlamaSession("lm-q4_k_m.gguf", n_ctx=2048) as s:
        pre, post = prompt.split(IMAGE_TOKEN)  # impdefs.IMAGE_TOKEN
        s.eval_tokens(s.tokenize(pre))
        s.eval_embeddings(image_features)  # (N, n_embd) float32, from the ONNX vision encoder
        s.eval_tokens(s.tokenize(post))
        next_id = int(s.logits().argmax())
"""

from __future__ import annotations

import ctypes
from pathlib import Path
from typing import Any

import numpy as np

from export.errors import ExportError
from export.llama.library import (
    LlamaCppError,
    NativeHandle,
    clear_log,
    cpu_extra_buffers_safe,
    default_threads,
    llama_cpp_module,
    log_tail,
)

CLEANUP_REPLACEMENTS = (
    (" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"),
    (" n't", "n't"), (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re"),
)  # fmt: skip


class LlamaSession(NativeHandle):
    """A GGUF model loaded in llama.cpp with one sequence's KV cache.

    Args:
        gguf_path: the model file.
        n_ctx: context (KV cache) length; ``None`` = the model's trained context.
        n_threads: CPU threads for decode and prompt processing (default: all usable cores).
        n_gpu_layers: layers to offload to a GPU build of llama.cpp (0 = CPU only).
        n_batch: most rows one ``llama_decode`` call takes; longer inputs are split. Keep it at
            least the image token count (729 for Imp) so an image is one call.
        all_logits: also keep the logits of every position of each ``eval_*`` call
            (:meth:`logits_all`), for parity checks. Costs ``n_batch x vocab`` floats.
        kv_type: ``f16`` (llama.cpp's default) or ``f32`` KV cache.
        flash_attn: use llama.cpp's flash attention kernels (``None`` = llama.cpp decides).
        use_mmap: map the file (llama.cpp's default load mode) instead of reading it. Off by default:
            on CPUs where llama.cpp repacks quantized weights (CPU_REPACK), the mapped pages stay resident
            next to their repacked copies (Phi-2 q4_k_m on 2 cores: load 2677 MB mapped vs 1734 MB read).
        n_ubatch: rows llama.cpp computes at once inside a batch (default: ``min(n_batch, 512)``).
        extra_buffers: let llama.cpp put weights in its extra CPU buffers (repacked layouts, AMX);
            ``None`` = unless this CPU has AMX, where llama-cpp-python 0.3.36 crashes on them
            (:func:`cpu_extra_buffers_safe`).
        n_seq_max: most sequences the context holds (:class:`export.llama.sequences.LlamaSequences`).
            They share one KV cache of ``n_ctx`` cells (llama.cpp's unified cache), so a prefix
            copied to another sequence costs no cells.
    """

    def __init__(
        self,
        gguf_path: str | Path,
        n_ctx: int | None = None,
        n_threads: int | None = None,
        n_gpu_layers: int = 0,
        n_batch: int = 1024,
        all_logits: bool = False,
        kv_type: str = "f16",
        flash_attn: bool | None = None,
        use_mmap: bool = False,
        n_ubatch: int | None = None,
        extra_buffers: bool | None = None,
        n_seq_max: int = 64,
    ) -> None:
        self._model = self._ctx = None
        self._tok_batch = self._emb_batch = None
        self._lib = lib = llama_cpp_module()
        self.path = Path(gguf_path)
        if not self.path.is_file():
            raise LlamaCppError(f"GGUF file not found: {self.path}")
        if kv_type not in ("f16", "f32"):
            raise ExportError(f"unknown kv_type {kv_type!r}; use f16 or f32")
        clear_log()
        self._load_model(n_gpu_layers, use_mmap, extra_buffers)
        try:
            self._vocab = lib.llama_model_get_vocab(self._model)
            self.n_vocab = int(lib.llama_vocab_n_tokens(self._vocab))
            self.n_embd = int(lib.llama_model_n_embd(self._model))
            self.n_ctx_train = int(lib.llama_model_n_ctx_train(self._model))
            self.n_threads = int(n_threads or default_threads())
            cparams = self._context_params(n_ctx, n_batch, n_ubatch, kv_type, flash_attn, n_seq_max)
            self._ctx = lib.llama_init_from_model(self._model, cparams)
            if not self._ctx:
                raise LlamaCppError(f"llama.cpp cannot create a context for {self.path}: {log_tail()}")
            self.n_ctx = int(lib.llama_n_ctx(self._ctx))
            self.n_batch = int(lib.llama_n_batch(self._ctx))
            self.n_seq_max = int(lib.llama_n_seq_max(self._ctx))
            self._mem = lib.llama_get_memory(self._ctx)
            self._tok_batch = lib.llama_batch_init(self.n_batch, 0, 1)
            self._tok = _BatchView(self._tok_batch, self.n_batch, 0)
        except BaseException:
            self.close()
            raise
        self.all_logits = bool(all_logits)
        self.n_past = 0
        self._has_logits = False
        self._last_all: list[np.ndarray] = []
        self._piece_cache: dict[tuple[int, bool], bytes] = {}

    def _load_model(self, n_gpu_layers: int, use_mmap: bool, extra_buffers: bool | None) -> None:
        lib = self._lib
        mparams = lib.llama_model_default_params()
        mparams.n_gpu_layers = int(n_gpu_layers)
        mparams.use_extra_bufts = cpu_extra_buffers_safe() if extra_buffers is None else bool(extra_buffers)
        if not use_mmap:
            mparams.load_mode = lib.LLAMA_LOAD_MODE_NONE
        self._model = lib.llama_model_load_from_file(str(self.path).encode(), mparams)
        if not self._model:
            raise LlamaCppError(f"llama.cpp cannot load {self.path}: {log_tail()}")

    def _context_params(
        self,
        n_ctx: int | None,
        n_batch: int,
        n_ubatch: int | None,
        kv_type: str,
        flash_attn: bool | None,
        n_seq_max: int,
    ) -> Any:
        lib = self._lib
        cparams = lib.llama_context_default_params()
        cparams.n_ctx = int(n_ctx or self.n_ctx_train)
        cparams.n_batch = max(1, min(int(n_batch), cparams.n_ctx))
        cparams.n_ubatch = min(cparams.n_batch, int(n_ubatch or 512))
        cparams.n_seq_max = max(1, min(int(n_seq_max), cparams.n_batch))  # one output row per sequence
        cparams.kv_unified = True  # sequences share the cells of a common prefix
        cparams.n_threads = cparams.n_threads_batch = self.n_threads
        cparams.no_perf = True
        cparams.type_k = cparams.type_v = lib.GGML_TYPE_F32 if kv_type == "f32" else lib.GGML_TYPE_F16
        if flash_attn is not None:
            cparams.flash_attn_type = (
                lib.LLAMA_FLASH_ATTN_TYPE_ENABLED if flash_attn else lib.LLAMA_FLASH_ATTN_TYPE_DISABLED
            )
        return cparams

    # ------------------------------------------------------------------ text
    def tokenize(self, text: str, parse_special: bool = True) -> list[int]:
        """Token ids of ``text`` (no BOS is added); special tokens such as ``<image>`` are parsed."""
        data = text.encode("utf-8")
        cap = len(data) + 8
        for _ in range(2):
            buf = (self._lib.llama_token * cap)()
            n = self._lib.llama_tokenize(self._vocab, data, len(data), buf, cap, False, parse_special)
            if n >= 0:
                return list(buf[:n])
            cap = -n
        raise LlamaCppError(f"llama_tokenize failed on a text of {len(data)} bytes")  # pragma: no cover

    def token_bytes(self, token: int, special: bool = False) -> bytes:
        """The raw bytes of one token (``special=False`` renders control tokens as nothing)."""
        key = (int(token), bool(special))
        piece = self._piece_cache.get(key)
        if piece is None:
            buf = ctypes.create_string_buffer(64)
            n = self._lib.llama_token_to_piece(self._vocab, key[0], buf, 64, 0, key[1])
            if n < 0:
                buf = ctypes.create_string_buffer(-n)
                n = self._lib.llama_token_to_piece(self._vocab, key[0], buf, -n, 0, key[1])
            piece = self._piece_cache[key] = buf.raw[:n]
        return piece

    def detokenize(self, ids: list[int], skip_special: bool = True, clean_up_spaces: bool = False) -> str:
        """Text of ``ids``; like HF ``decode(skip_special_tokens=...)`` (invalid UTF-8 -> U+FFFD).

        ``clean_up_spaces`` applies transformers' ``clean_up_tokenization`` (pass the tokenizer's
        ``clean_up_tokenization_spaces`` to decode exactly as it does).
        """
        text = b"".join(self.token_bytes(t, not skip_special) for t in ids).decode("utf-8", errors="replace")
        if clean_up_spaces:
            for old, new in CLEANUP_REPLACEMENTS:
                text = text.replace(old, new)
        return text

    def is_eog(self, token: int) -> bool:
        """Whether llama.cpp treats ``token`` as an end-of-generation token."""
        return bool(self._lib.llama_vocab_is_eog(self._vocab, int(token)))

    @property
    def eos_id(self) -> int:
        return int(self._lib.llama_vocab_eos(self._vocab))

    # ------------------------------------------------------------------ evaluation
    def eval_tokens(self, ids: list[int] | np.ndarray) -> None:
        """Append token ids at the end of the KV cache (in chunks of ``n_batch``)."""
        arr = np.asarray(ids, dtype=np.int32).reshape(-1)
        if arr.size and (arr.min() < 0 or arr.max() >= self.n_vocab):
            raise ExportError(f"token ids must lie in [0, {self.n_vocab}), got {arr.min()}..{arr.max()}")
        self._eval(arr, self._tok, self._tok.token)

    def eval_embeddings(self, embeddings: np.ndarray) -> None:
        """Append ``(N, n_embd)`` input embeddings (e.g. projected image features) to the KV cache."""
        arr = np.ascontiguousarray(embeddings, dtype=np.float32)
        if arr.ndim != 2 or arr.shape[1] != self.n_embd:
            raise ExportError(f"embeddings must have shape (N, {self.n_embd}), got {tuple(arr.shape)}")
        if self._emb_batch is None:
            self._emb_batch = self._lib.llama_batch_init(self.n_batch, self.n_embd, 1)
            self._emb = _BatchView(self._emb_batch, self.n_batch, self.n_embd)
        self._eval(arr, self._emb, self._emb.embd)

    def _eval(self, rows: np.ndarray, view: _BatchView, target: np.ndarray) -> None:
        n = rows.shape[0]
        if n == 0:
            return
        if self.n_past + n > self.n_ctx:
            raise LlamaCppError(f"the context is full: {self.n_past} + {n} positions > n_ctx {self.n_ctx}")
        self._last_all = []
        self._has_logits = False
        for start in range(0, n, self.n_batch):
            chunk = rows[start : start + self.n_batch]
            m = chunk.shape[0]
            target[:m] = chunk
            view.pos[:m] = np.arange(self.n_past, self.n_past + m, dtype=np.int32)
            view.logits[:m] = 1 if self.all_logits else 0
            view.logits[m - 1] = 1
            view.batch.n_tokens = m
            rc = self._lib.llama_decode(self._ctx, view.batch)
            if rc != 0:
                self._has_logits = False
                self._sync_n_past()
                raise LlamaCppError(f"llama_decode returned {rc} at position {self.n_past}: {log_tail()}")
            self.n_past += m
            if self.all_logits:
                out = self._lib.llama_get_logits(self._ctx)
                self._last_all.append(np.ctypeslib.as_array(out, shape=(m, self.n_vocab)).copy())
        self._has_logits = True

    def logits(self) -> np.ndarray:
        """``(vocab,)`` float32 logits after the last evaluated position (a copy)."""
        if not self._has_logits:
            raise ExportError("no logits: evaluate tokens or embeddings first")
        ptr = self._lib.llama_get_logits_ith(self._ctx, -1)
        if not ptr:  # pragma: no cover - guarded by _has_logits
            raise LlamaCppError("llama_get_logits_ith returned NULL")
        return np.ctypeslib.as_array(ptr, shape=(self.n_vocab,)).copy()

    def argmax(self) -> int:
        """The greedy next token after the last evaluated position (no copy of the logits)."""
        if not self._has_logits:
            raise ExportError("no logits: evaluate tokens or embeddings first")
        ptr = self._lib.llama_get_logits_ith(self._ctx, -1)
        return int(np.ctypeslib.as_array(ptr, shape=(self.n_vocab,)).argmax())

    def logits_all(self) -> np.ndarray:
        """``(N, vocab)`` logits of every position of the last ``eval_*`` call (needs ``all_logits``)."""
        if not self.all_logits:
            raise ExportError("logits_all() needs LlamaSession(..., all_logits=True)")
        if not self._has_logits:
            raise ExportError("no logits: evaluate tokens or embeddings first")
        return np.concatenate(self._last_all)

    # ------------------------------------------------------------------ KV cache
    def truncate(self, n: int) -> None:
        """Keep the first ``n`` positions of the KV cache (e.g. a shared system prompt)."""
        if not 0 <= n <= self.n_past:
            raise ExportError(f"cannot truncate to {n} positions: the cache holds {self.n_past}")
        if n == self.n_past:
            return
        if n == 0:
            self.reset()
            return
        if not self._lib.llama_memory_seq_rm(self._mem, 0, n, -1):
            raise LlamaCppError(f"llama.cpp cannot truncate the KV cache to {n} positions")
        self.n_past = n
        self._has_logits = False
        self._last_all = []

    def reset(self) -> None:
        """Empty the KV cache."""
        self._lib.llama_memory_clear(self._mem, True)
        self.n_past = 0
        self._has_logits = False
        self._last_all = []

    def _sync_n_past(self) -> None:
        self.n_past = int(self._lib.llama_memory_seq_pos_max(self._mem, 0)) + 1

    # ------------------------------------------------------------------ lifetime
    def close(self) -> None:
        """Free the batches, the context and the model (idempotent)."""
        lib = self._lib
        if self._emb_batch is not None:
            lib.llama_batch_free(self._emb_batch)
            self._emb_batch = None
        if self._tok_batch is not None:
            lib.llama_batch_free(self._tok_batch)
            self._tok_batch = None
        if self._ctx:
            lib.llama_free(self._ctx)
            self._ctx = None
        if self._model:
            lib.llama_model_free(self._model)
            self._model = None


class _BatchView:
    """numpy views of a ``llama_batch``'s arrays; sequence ids are set once (one sequence)."""

    def __init__(self, batch: Any, capacity: int, n_embd: int) -> None:
        self.batch = batch
        self.pos = np.ctypeslib.as_array(batch.pos, shape=(capacity,))
        self.logits = np.ctypeslib.as_array(batch.logits, shape=(capacity,))
        n_seq = np.ctypeslib.as_array(batch.n_seq_id, shape=(capacity,))
        n_seq[:] = 1
        for i in range(capacity):
            batch.seq_id[i][0] = 0
        if n_embd:
            self.embd = np.ctypeslib.as_array(batch.embd, shape=(capacity, n_embd))
        else:
            self.token = np.ctypeslib.as_array(batch.token, shape=(capacity,))
