"""Memory probes: each component of the exported runtime alone, in its own process, with its default
and a leaner setting (imports without torch, llama.cpp loading modes, ONNX Runtime prepacking)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from benchmarks.speed.bare import LlamaLogGrep
from benchmarks.speed.config import SpeedConfig
from benchmarks.speed.isolate import run_isolated
from benchmarks.speed.protocol import current_rss_mb

if TYPE_CHECKING:
    from export.manifest import Manifest

#: What a process that runs only the exported runtime has to import (no torch, no transformers).
LEAN_IMPORTS = "import numpy, PIL.Image, tokenizers, onnxruntime, llama_cpp"


def probe_lean_imports_mb() -> float:
    """RSS of a fresh interpreter that imports only what the exported runtime uses (subprocess)."""
    import subprocess
    import sys

    code = f"{LEAN_IMPORTS}; import psutil; print(psutil.Process().memory_info().rss / 2**20)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(done.stdout.strip().splitlines()[-1])


def probe_llama_model_mb(path: str, mode: str) -> dict[str, Any]:
    """RSS growth while llama.cpp loads a GGUF: ``default`` (mmap + weight repacking), ``no_mmap``
    (read into memory) or ``no_repack`` (mmap, no CPU_REPACK copies)."""
    from export.llama import llama_cpp_module
    from runtimes.base import peak_rss_mb

    lib = llama_cpp_module()
    before = current_rss_mb()
    params = lib.llama_model_default_params()
    if mode == "no_mmap":
        params.load_mode = lib.LLAMA_LOAD_MODE_NONE
    elif mode == "no_repack":
        params.use_extra_bufts = False
    with LlamaLogGrep() as grep:
        model = lib.llama_model_load_from_file(path.encode(), params)
    try:
        return {
            "mode": mode,
            "rss_growth_mb": peak_rss_mb() - before,
            "repack_mib": grep.found.get("repack_mib"),
        }
    finally:
        lib.llama_model_free(model)


def probe_onnx_session_mb(path: str, threads: int, prepack: bool) -> dict[str, Any]:
    """RSS growth of an ONNX Runtime session of the vision graph and one batch-1 run."""
    import onnxruntime as ort

    from runtimes.base import peak_rss_mb

    before = current_rss_mb()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    if not prepack:
        options.add_session_config_entry("session.disable_prepacking", "1")
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    loaded = current_rss_mb() - before
    inp = session.get_inputs()[0]
    size = int(inp.shape[-1])
    started = time.perf_counter()
    session.run(None, {inp.name: np.zeros((1, 3, size, size), np.float32)})
    return {
        "prepack": prepack,
        "session_mb": loaded,
        "rss_growth_mb": peak_rss_mb() - before,
        "run_s": time.perf_counter() - started,
    }


def measure_memory_probes(config: SpeedConfig, spec: Any, manifest: Manifest) -> dict[str, Any]:
    """What the exported runtime's memory is made of, and what other settings would save (each in its
    own process): imports without torch, llama.cpp loading modes, ONNX Runtime with / without weight
    prepacking."""
    bundle = Path(spec.bundle)
    gguf = str(bundle / manifest.lm[config.deploy_lm].file)
    out: dict[str, Any] = {"lean_imports_mb": probe_lean_imports_mb(), "llama": {}, "onnx": {}}
    for mode in ("default", "no_mmap", "no_repack"):
        out["llama"][mode] = run_isolated(probe_llama_model_mb, gguf, mode)
    for v in config.vision:
        path = str(bundle / manifest.vision[v].file)
        out["onnx"][v] = {
            "default": run_isolated(probe_onnx_session_mb, path, config.threads, True),
            "no_prepack": run_isolated(probe_onnx_session_mb, path, config.threads, False),
        }
    return out
