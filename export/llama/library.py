"""llama-cpp-python, loaded once: its backend initialised and its log routed to Python logging.

llama.cpp's own log output goes to the ``export.llama_cpp`` logger at DEBUG level (errors at
WARNING) instead of stderr; the last lines are kept to explain a failed load or decode.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import logging
import os
import threading
from types import TracebackType
from typing import Any, Self

from export.errors import ExportError

_INIT_LOCK = threading.Lock()
_STATE: dict[str, Any] = {}
# ggml log levels: 0 none, 1 info, 2 warn, 3 error, 4 debug, 5 continuation of the previous line
_GGML_ERROR = 3


class LlamaCppError(ExportError):
    """llama.cpp failed to load a file, make a context or decode a batch."""


class LogTail:
    """A C library's log routed to a Python logger, its last lines kept to explain a failure."""

    def __init__(self, logger_name: str, maxlen: int = 30) -> None:
        self.logger = logging.getLogger(logger_name)
        self._lines: collections.deque[str] = collections.deque(maxlen=maxlen)

    def callback(self, lib: Any) -> Any:
        """A ``llama_log_callback`` that fills this tail (the caller keeps it alive)."""

        @lib.llama_log_callback
        def _on_log(level: int, text: bytes, _user: Any) -> None:
            line = text.decode("utf-8", errors="replace").rstrip("\n")
            if line:
                self._lines.append(line)
                self.logger.log(logging.WARNING if level == _GGML_ERROR else logging.DEBUG, "%s", line)

        return _on_log

    def tail(self, n: int = 3) -> str:
        """The last ``n`` lines logged since :meth:`clear`, error lines first choice."""
        lines = list(self._lines)
        errors = [line for line in lines if "error" in line.lower() or "failed" in line.lower()]
        return " | ".join((errors or lines)[-n:]) or "no details logged"

    def clear(self) -> None:
        self._lines.clear()


_LLAMA_LOG = LogTail("export.llama_cpp")


class NativeHandle:
    """A holder of native resources: ``close()`` frees them; a context manager; freed when collected."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # interpreter shutdown
            self.close()


def llama_cpp_module() -> Any:
    """Import ``llama_cpp`` (the optional dependency), init its backend once and route its logs."""
    with _INIT_LOCK:
        if "lib" in _STATE:
            return _STATE["lib"]
        try:
            import llama_cpp
        except ImportError as exc:  # pragma: no cover - depends on the installation
            raise ExportError(
                "llama-cpp-python is not installed: pip install 'impvlm[export]' (llama-cpp-python==0.3.36)"
            ) from exc

        _on_log = _LLAMA_LOG.callback(llama_cpp)
        llama_cpp.llama_log_set(_on_log, ctypes.c_void_p(0))
        llama_cpp.llama_backend_init()
        _STATE["callback"] = _on_log  # keep the C callback alive
        _STATE["lib"] = llama_cpp
        return llama_cpp


def log_tail(n: int = 3) -> str:
    """The last ``n`` lines llama.cpp logged since :func:`clear_log` (to explain a failure)."""
    return _LLAMA_LOG.tail(n)


def clear_log() -> None:
    """Forget the log lines kept so far (call before an operation whose failure is to be explained)."""
    _LLAMA_LOG.clear()


def cpu_extra_buffers_safe() -> bool:
    """Whether llama.cpp's extra CPU weight buffers are safe to use on this machine.

    They hold weights repacked for the CPU (``CPU_REPACK``) and, on CPUs with AMX, in AMX tiles. With
    llama-cpp-python 0.3.36 on an AMX Xeon, ``llama_decode`` of a batch of more than one token with
    q8_0 / q4_k_m weights in the AMX buffer segfaults (measured: one token works, five crash; f16 is
    not repacked). On such CPUs the weights stay in the plain CPU buffer.
    """
    lib = llama_cpp_module()
    with _INIT_LOCK:
        if "extra_buffers_safe" not in _STATE:  # the CPU does not change: ask llama.cpp once
            info = lib.llama_print_system_info().decode("utf-8", errors="replace")
            _STATE["extra_buffers_safe"] = "AMX_INT8 = 1" not in info
        return bool(_STATE["extra_buffers_safe"])


def default_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - macOS / Windows
        return max(1, os.cpu_count() or 1)
