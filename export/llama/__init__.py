"""The llama.cpp bindings export's checks and the runtimes share: a GGUF LM (:class:`LlamaSession`),
several sequences decoded together on it (:class:`LlamaSequences`) and an mmproj image encoder
(:class:`MtmdEncoder`), over llama-cpp-python's low-level API. The library loader and its log tail
(:func:`llama_cpp_module`, :func:`clear_log`, :func:`log_tail`) serve callers of other llama.cpp
functions (the quantizer)."""

from export.llama.library import LlamaCppError, clear_log, llama_cpp_module, log_tail
from export.llama.mtmd import CLS_ORDER_BUG, MtmdEncoder, mtmd_module
from export.llama.sequences import LlamaSequences
from export.llama.session import LlamaSession

__all__ = [
    "CLS_ORDER_BUG",
    "LlamaCppError",
    "LlamaSequences",
    "LlamaSession",
    "MtmdEncoder",
    "clear_log",
    "llama_cpp_module",
    "log_tail",
    "mtmd_module",
]
