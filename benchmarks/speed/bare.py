"""llama.cpp next to the runtime: what its log says about the context it made, and the same GGUF
in a bare context (``llama_decode`` only), the one reference that is not a runtime of this project."""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path
from typing import Any


class LlamaLogGrep(logging.Handler):
    """Reads what llama.cpp says about the context it made (through ``export.llama_cpp``'s log)."""

    PATTERNS = {
        "n_ctx": re.compile(r"llama_context: n_ctx\s+=\s+(\d+)"),
        "n_batch": re.compile(r"llama_context: n_batch\s+=\s+(\d+)"),
        "n_ubatch": re.compile(r"llama_context: n_ubatch\s+=\s+(\d+)"),
        # "flash_attn = disabled" when the context asked for it, "Flash Attention enabled" after auto
        "flash_attn": re.compile(r"(?:Flash Attention|flash_attn\s+=)\s+(enabled|disabled)"),
        "kv_buffer_mib": re.compile(r"KV buffer size\s+=\s+([\d.]+) MiB"),
        "compute_buffer_mib": re.compile(r"compute buffer size\s+=\s+([\d.]+) MiB"),
        "output_buffer_mib": re.compile(r"output buffer size\s+=\s+([\d.]+) MiB"),
        "repack_mib": re.compile(r"CPU_REPACK model buffer size\s+=\s+([\d.]+) MiB"),
        "model_mib": re.compile(r"CPU(?:_Mapped)? model buffer size\s+=\s+([\d.]+) MiB"),
    }

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.found: dict[str, Any] = {}

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        for key, pattern in self.PATTERNS.items():
            m = pattern.search(text)
            if m and key not in self.found:
                value = m.group(1)
                if key == "flash_attn":
                    self.found[key] = value == "enabled"
                else:
                    self.found[key] = float(value) if key.endswith("_mib") else int(value)

    def __enter__(self) -> LlamaLogGrep:
        self._logger = logging.getLogger("export.llama_cpp")
        self._saved = (self._logger.level, self._logger.propagate)
        self._logger.setLevel(logging.DEBUG)
        self._logger.propagate = False  # read it, do not print it
        self._logger.addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        self._logger.removeHandler(self)
        self._logger.setLevel(self._saved[0])
        self._logger.propagate = self._saved[1]


class BareLlama:
    """The same GGUF in a bare llama.cpp context (:class:`~export.llama.LlamaSession`, the
    low-level API): ``llama_decode`` of a prompt, then one token at a time; no prompt building, no vision.
    """

    def __init__(self, path: Path, threads: int, n_ctx: int, n_batch: int, n_ubatch: int, flash_attn: bool):
        from export.llama import LlamaSession

        self.settings = {
            "n_ctx": n_ctx,
            "n_batch": n_batch,
            "n_ubatch": n_ubatch,
            "threads": threads,
            "flash_attn": flash_attn,
        }
        self.llm = LlamaSession(
            path, n_ctx=n_ctx, n_threads=threads, n_batch=n_batch, n_ubatch=n_ubatch, flash_attn=flash_attn,
            use_mmap=True,
        )  # fmt: skip
        self.n_vocab = self.llm.n_vocab

    def run(self, n_prompt: int, n_decode: int) -> dict[str, Any]:
        llm = self.llm
        prompt = [(17 + 31 * i) % min(self.n_vocab, 50000) for i in range(n_prompt)]
        llm.reset()
        started = time.perf_counter()
        llm.eval_tokens(prompt)
        prefill_s = time.perf_counter() - started
        started = time.perf_counter()
        for _ in range(n_decode):
            llm.eval_tokens([prompt[-1]])
        decode_s = time.perf_counter() - started
        return {
            "prefill_tokens": n_prompt,
            "prefill_s": prefill_s,
            "prefill_tokens_per_s": n_prompt / prefill_s,
            "decode_forward": n_decode,
            "decode_s": decode_s,
            "decode_forward_per_s": n_decode / decode_s,
        }

    def close(self) -> None:
        self.llm.close()
