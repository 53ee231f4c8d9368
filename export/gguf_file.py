"""Writing a GGUF file, shared by the LM (:mod:`export.gguf_lm`) and the mmproj (:mod:`export.mmproj`).

Each side builds its own metadata on a ``gguf.GGUFWriter`` and its own tensor table; this module holds
what is the same: the base dtypes, the tensor record, and the write itself (tensor data converted one
tensor at a time, non-finite values refused, the file renamed into place only when complete).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf
import numpy as np
from gguf import LlamaFileType

from export.errors import ExportError
from export.quant_types import QUANT_TYPES

#: transformers names of the tanh-approximated GELU, the form ggml's ``gelu`` computes (LM and tower).
TANH_GELUS = ("gelu_new", "gelu_pytorch_tanh", "gelu_fast")
#: Base precisions written directly (others are quantized by llama.cpp from the f16 or f32 base):
#: ``dtype`` name -> (numpy dtype of 2-D+ weights, ``general.file_type``).
BASE_DTYPES: dict[str, tuple[type[np.floating], LlamaFileType]] = {
    "f32": (np.float32, QUANT_TYPES["f32"].file_type),
    "f16": (np.float16, QUANT_TYPES["f16"].file_type),
}


@dataclass(frozen=True)
class GGUFTensor:
    """One tensor of the file: its GGUF name, numpy shape and a loader (a torch tensor) called only when
    writing."""

    name: str
    shape: tuple[int, ...]
    load: Callable[[], Any]


def _tensor_data(t: GGUFTensor, store: type[np.floating]) -> np.ndarray:
    """The tensor as ``store`` numpy data; :class:`ExportError` if a value is not finite there."""
    value = t.load().detach().float().cpu().contiguous().numpy()
    if store is not np.float32:
        value = value.astype(store)
    if not np.isfinite(value).all():
        raise ExportError(f"tensor {t.name} has non-finite values in {np.dtype(store).name} (try f32)")
    return value


def write_gguf_file(
    writer: gguf.GGUFWriter, tensors: Sequence[GGUFTensor], weight_dtype: type[np.floating], out: Path
) -> None:
    """Write ``writer``'s metadata and ``tensors`` to ``out`` (2-D+ weights in ``weight_dtype``; biases,
    norms and other 1-D tensors in f32, as llama.cpp's converters store them), through a temporary file in
    the same folder that replaces ``out`` only when complete."""
    plan = [(t, weight_dtype if len(t.shape) >= 2 else np.float32) for t in tensors]
    for t, store in plan:
        writer.add_tensor_info(
            t.name, t.shape, np.dtype(store), int(np.prod(t.shape)) * np.dtype(store).itemsize
        )
    fd, tmp_name = tempfile.mkstemp(prefix=out.name + ".", suffix=".tmp", dir=out.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        writer.write_header_to_file(path=tmp)
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for t, store in plan:
            writer.write_tensor_data(_tensor_data(t, store))
        writer.close()
        os.replace(tmp, out)
    except BaseException:
        writer.close()
        tmp.unlink(missing_ok=True)
        raise


#: Bytes of a fixed-size GGUF metadata value, by ``GGUFValueType``.
_SCALAR_BYTES = {
    gguf.GGUFValueType.UINT8: 1, gguf.GGUFValueType.INT8: 1, gguf.GGUFValueType.BOOL: 1,
    gguf.GGUFValueType.UINT16: 2, gguf.GGUFValueType.INT16: 2, gguf.GGUFValueType.UINT32: 4,
    gguf.GGUFValueType.INT32: 4, gguf.GGUFValueType.FLOAT32: 4, gguf.GGUFValueType.UINT64: 8,
    gguf.GGUFValueType.INT64: 8, gguf.GGUFValueType.FLOAT64: 8,
}  # fmt: skip


def read_file_type(path: str | Path) -> int:
    """``general.file_type`` of a GGUF file, read from its header without parsing the rest.

    ``gguf.GGUFReader`` builds every field, which for a 51200-token vocabulary takes seconds; this
    reads key by key (skipping values) and stops at the one it needs. :class:`ExportError` names a
    file that is no GGUF, a truncated or corrupt header, or a header without the key.
    """
    path = Path(path)
    try:
        return _read_file_type(path)
    except ExportError:
        raise
    except Exception as exc:  # truncated or corrupt header
        raise ExportError(f"{path} is not a readable GGUF file: {exc}") from exc


def _read_file_type(path: Path) -> int:
    import struct

    with path.open("rb") as f:

        def unpack(fmt: str) -> Any:
            return struct.unpack("<" + fmt, f.read(struct.calcsize("<" + fmt)))[0]

        def skip(kind: int) -> None:
            if kind == gguf.GGUFValueType.STRING:
                f.seek(unpack("Q"), os.SEEK_CUR)
            elif kind == gguf.GGUFValueType.ARRAY:
                item, count = unpack("I"), unpack("Q")
                if item in _SCALAR_BYTES:
                    f.seek(_SCALAR_BYTES[item] * count, os.SEEK_CUR)
                else:
                    for _ in range(count):
                        skip(item)
            else:
                f.seek(_SCALAR_BYTES[gguf.GGUFValueType(kind)], os.SEEK_CUR)

        if f.read(4) != b"GGUF":
            raise ExportError(f"{path} is not a GGUF file")
        _version, _n_tensors, n_kv = unpack("I"), unpack("Q"), unpack("Q")
        for _ in range(n_kv):
            key = f.read(unpack("Q")).decode("utf-8", errors="replace")
            kind = unpack("I")
            if key == gguf.Keys.General.FILE_TYPE and kind == gguf.GGUFValueType.UINT32:
                return int(unpack("I"))
            skip(kind)
    raise ExportError(f"{path.name} has no {gguf.Keys.General.FILE_TYPE}")
