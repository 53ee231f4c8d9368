"""Quantize a base GGUF (f32/f16) with llama.cpp's own quantizer, optionally with an importance matrix.

``quantize_gguf`` calls ``llama_model_quantize`` in-process (no ``llama-quantize`` binary needed).
llama.cpp picks per-tensor types for the mixed formats (``q4_k_m`` keeps ``output.weight`` and some
``attn_v`` / ``ffn_down`` at higher precision), leaves norms and biases in f32, and falls back to a
non-K type when a row length is not a multiple of 256 (only a warning there):
:func:`tensor_types` reads back what was really written.

Importance matrix: llama-cpp-python 0.3.36 exposes no imatrix *computation* (only llama.cpp's
``llama-imatrix`` tool does it, through an eval callback on ggml tensors), but the quantizer accepts
the data in memory. :func:`compute_imatrix` therefore measures the same statistic on the PyTorch
model: for every matmul of the LM, the mean of the squared input activations per input column,
over the tokens of a calibration set (text and image prompts). It writes llama.cpp's GGUF imatrix
format (``<tensor>.in_sum2`` / ``<tensor>.counts``), which ``llama-quantize --imatrix`` also reads.

Example::

    base = write_gguf(model, tok, "lm-f16.gguf", dtype="f16")
    imat = compute_imatrix(model, tok, calibration_prompts, "imatrix.gguf")
    quantize_gguf(base, "lm-q4_k_m.gguf", "q4_k_m", imatrix=imat)
"""

from __future__ import annotations

import ctypes
import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gguf
import numpy as np
from gguf import LlamaFileType

from export.errors import ExportError
from export.quant_types import QUANT_TYPES, quant_type

log = logging.getLogger(__name__)

IMATRIX_SUM_SUFFIX = ".in_sum2"
IMATRIX_COUNT_SUFFIX = ".counts"


def resolve_quant_type(qtype: str) -> LlamaFileType:
    """``"Q4_K_M"`` / ``"q4_k_m"`` -> ``LlamaFileType.MOSTLY_Q4_K_M``; ExportError lists valid names."""
    row = quant_type(qtype)
    if row is None:
        raise ExportError(f"unknown quantization type {qtype!r}; valid: {', '.join(QUANT_TYPES)}")
    return row.file_type


def quantize_gguf(
    src: str | Path,
    dst: str | Path,
    qtype: str,
    imatrix: str | Path | None = None,
    threads: int | None = None,
) -> Path:
    """Quantize ``src`` (an f32/f16/bf16 GGUF) to ``dst`` with llama.cpp's quantizer.

    Args:
        src: the base file written by :func:`export.gguf_lm.write_gguf`.
        dst: the output file (written atomically).
        qtype: a :data:`QUANT_TYPES` name, case-insensitive.
        imatrix: a GGUF importance matrix (:func:`compute_imatrix` or ``llama-imatrix``).
        threads: quantizer threads (default: all cores).
    """
    ftype = resolve_quant_type(qtype)
    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise ExportError(f"GGUF file to quantize not found: {src}")
    from export.llama import clear_log, llama_cpp_module, log_tail

    lib = llama_cpp_module()
    params = lib.llama_model_quantize_default_params()
    params.ftype = int(ftype)
    params.nthread = int(threads or 0)
    keep_alive: list[Any] = []
    if imatrix is not None:
        entries = load_imatrix(imatrix)
        array = (lib.llama_model_imatrix_data * (len(entries) + 1))()
        for i, (name, values) in enumerate(entries.items()):
            data = np.ascontiguousarray(values, dtype=np.float32)
            keep_alive += [data, name.encode()]
            array[i].name = keep_alive[-1]
            array[i].data = data.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
            array[i].size = data.size
        array[len(entries)].name = None  # terminator
        params.imatrix = ctypes.cast(array, ctypes.POINTER(lib.llama_model_imatrix_data))
        keep_alive.append(array)
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=dst.name + ".", suffix=".tmp", dir=dst.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    clear_log()
    try:
        rc = lib.llama_model_quantize(str(src).encode(), str(tmp).encode(), ctypes.byref(params))
        if rc != 0:
            raise ExportError(f"llama.cpp could not quantize {src.name} to {qtype}: {log_tail()}")
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)
    log.info("quantized %s -> %s (%s%s)", src.name, dst, qtype, ", imatrix" if imatrix else "")
    return dst


def tensor_types(path: str | Path) -> dict[str, str]:
    """``{tensor name: ggml type name}`` of a GGUF file (e.g. to see K-quant fallbacks)."""
    reader = gguf.GGUFReader(str(path))
    return {t.name: t.tensor_type.name for t in reader.tensors}


# ------------------------------------------------------------------------------------ importance
def compute_imatrix(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    out_path: str | Path,
    images: Any = None,
) -> Path:
    """Importance matrix of the LM's matmuls over ``prompts``, as a llama.cpp GGUF imatrix file.

    ``prompts`` holding ``<image>`` take the next row of ``images`` (``(B, 3, H, W)`` pixel values,
    cycled) so the calibration covers image-conditioned activations too.
    """
    import torch

    from export.gguf_lm import iter_lm_linear_inputs

    if not prompts:
        raise ExportError("compute_imatrix needs at least one calibration prompt")
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}

    def hook(name: str):
        def record(_module: Any, inputs: tuple[torch.Tensor, ...]) -> None:
            x = inputs[0].detach().float().reshape(-1, inputs[0].shape[-1])  # (tokens, in_features)
            sums[name] = sums.get(name, 0) + (x.double() ** 2).sum(0)
            counts[name] = counts.get(name, 0) + x.shape[0]

        return record

    handles = [m.register_forward_pre_hook(hook(n)) for n, m in iter_lm_linear_inputs(model)]
    try:
        from export.gguf_validate import torch_forward_inputs

        with torch.no_grad():
            for kwargs in torch_forward_inputs(model, tokenizer, prompts, images):
                model(**kwargs)
    finally:
        for h in handles:
            h.remove()
    writer = gguf.GGUFWriter(path=None, arch=gguf.GGUFType.IMATRIX)
    writer.add_type(gguf.GGUFType.IMATRIX)
    writer.add_array(gguf.Keys.IMatrix.DATASETS, ["impvlm calibration prompts"])
    writer.add_uint32(gguf.Keys.IMatrix.CHUNK_COUNT, len(prompts))
    writer.add_uint32(gguf.Keys.IMatrix.CHUNK_SIZE, max(1, max(counts.values()) // len(prompts)))
    for name in sorted(sums):
        writer.add_tensor(name + IMATRIX_SUM_SUFFIX, sums[name].numpy().astype(np.float32)[None, :])
        writer.add_tensor(name + IMATRIX_COUNT_SUFFIX, np.array([[counts[name]]], dtype=np.float32))
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    writer.write_header_to_file(path=tmp)
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    os.replace(tmp, out)
    return out


def load_imatrix(path: str | Path) -> dict[str, np.ndarray]:
    """``{weight name: mean squared activation per input column}`` from a GGUF imatrix file."""
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"importance matrix not found: {path}")
    try:
        reader = gguf.GGUFReader(str(path))
    except Exception as exc:
        raise ExportError(f"{path} is not a GGUF importance matrix: {exc}") from exc
    tensors = {t.name: np.asarray(t.data, dtype=np.float64) for t in reader.tensors}
    out: dict[str, np.ndarray] = {}
    for name, sums in tensors.items():
        if not name.endswith(IMATRIX_SUM_SUFFIX):
            continue
        base = name[: -len(IMATRIX_SUM_SUFFIX)]
        count = tensors.get(base + IMATRIX_COUNT_SUFFIX)
        if count is None or float(count.reshape(-1)[0]) <= 0:
            raise ExportError(f"importance matrix {path.name} has no counts for {base}")
        # one count per expert; a dense model has one row
        out[base] = (sums.reshape(count.size, -1) / count.reshape(-1, 1)).reshape(-1).astype(np.float32)
    if not out:
        raise ExportError(f"{path} holds no importance-matrix entries ({IMATRIX_SUM_SUFFIX} tensors)")
    return out
