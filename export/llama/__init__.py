"""The llama.cpp bindings export's checks and the runtimes share: a GGUF LM (:class:`LlamaSession`)
and an mmproj image encoder (:class:`MtmdEncoder`), over llama-cpp-python's low-level API."""

from export.llama.library import (
    LlamaCppError,
    clear_log,
    cpu_extra_buffers_safe,
    default_threads,
    llama_cpp_module,
    log_tail,
)
from export.llama.mtmd import CLS_ORDER_BUG, MtmdEncoder, mtmd_module
from export.llama.session import LlamaSession

__all__ = [
    "CLS_ORDER_BUG",
    "LlamaCppError",
    "LlamaSession",
    "MtmdEncoder",
    "clear_log",
    "cpu_extra_buffers_safe",
    "default_threads",
    "llama_cpp_module",
    "log_tail",
    "mtmd_module",
]
