"""Run one measurement in its own process, so its peak memory is its own and nothing leaks between runs.

Two kinds of child, both serving one call and exiting:

- ``fresh=True`` (*spawn*): a new interpreter that imports what the measurement needs, exactly like
  a user's process; its peak RSS is the one a user sees. Costs the imports (seconds) per child.
- ``fresh=False`` (*forkserver*): forked from a server that has already imported torch,
  transformers, ONNX Runtime and the runtimes (never run them), so a child starts in a fraction of a
  second. Its RSS misses the file-backed pages touched only while importing (fork does not copy
  them; ~100 MB), so quick runs (``--tiny``) and non-memory steps use it.

Both re-import the caller's main module, as :mod:`multiprocessing` does: a script that calls this
must guard its entry point with ``if __name__ == "__main__":`` (the ``imp`` command does).
"""

from __future__ import annotations

import logging
import multiprocessing
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

from impvlm.errors import ImpError

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Imported once in the forkserver; every child starts with them loaded.
PRELOAD = ["runtimes.exported", "runtimes.torch_runtime", "benchmarks.speed.workers"]
_CONTEXT: dict[str, Any] = {}


class WorkerFailed(ImpError):
    """An isolated measurement raised or its process died (e.g. killed for memory)."""


def _context(fresh: bool) -> Any:
    if fresh:
        return multiprocessing.get_context("spawn")
    if "forkserver" not in _CONTEXT:
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(PRELOAD)
        _CONTEXT["forkserver"] = ctx
    return _CONTEXT["forkserver"]


def _call(fn: Callable[..., T], args: tuple[Any, ...], level: int) -> T:
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S", force=True
    )
    for noisy in ("export.llama_cpp", "onnxruntime", "torch", "transformers"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
    return fn(*args)


def run_isolated(fn: Callable[..., T], *args: Any, fresh: bool = False) -> T:
    """``fn(*args)`` in a child process of its own; its exception (or death) becomes :class:`WorkerFailed`."""
    level = logging.getLogger().getEffectiveLevel()
    name = getattr(fn, "__name__", str(fn))
    with ProcessPoolExecutor(max_workers=1, mp_context=_context(fresh)) as pool:
        future = pool.submit(_call, fn, args, level)
        try:
            return future.result()
        except BrokenProcessPool:
            raise WorkerFailed(
                f"{name}: the worker process died (out of memory or a crash in native code)"
            ) from None
        except ImpError as exc:
            raise WorkerFailed(f"{name}: {exc}") from exc
        except Exception as exc:
            raise WorkerFailed(f"{name}: {type(exc).__name__}: {exc}") from exc
