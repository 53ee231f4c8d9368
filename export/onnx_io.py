"""The declared inputs and outputs of an ONNX graph, read without loading its weights.

``onnx.load`` parses every initializer (1.7 GB for SigLIP-so400m in fp32) and the ``onnx`` package is
not a runtime dependency; the names and shapes of a graph's inputs and outputs are a few hundred bytes
of the file. :func:`graph_io` walks the protobuf wire format with a memory map and decodes only
``ModelProto.graph.input`` / ``.output`` (``ValueInfoProto`` -> ``TypeProto.tensor_type.shape``),
skipping nodes and initializers by their length prefix.

Example::

    io = graph_io("bundle/onnx/vision_encoder.onnx")
    io.inputs["pixel_values"]     # ('batch', 3, 384, 384): a str is a symbolic dimension
    io.outputs["image_features"]  # ('batch', 729, 2560)
"""

from __future__ import annotations

import mmap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

#: Field numbers of onnx.proto3 (ModelProto.graph, GraphProto.input/output, ValueInfoProto.name/type,
#: TypeProto.tensor_type, TypeProto.Tensor.shape, TensorShapeProto.dim, Dimension.dim_value/dim_param).
MODEL_GRAPH = 7
GRAPH_INPUT, GRAPH_OUTPUT = 11, 12
VALUE_NAME, VALUE_TYPE = 1, 2
TYPE_TENSOR = 1
TENSOR_SHAPE = 2
SHAPE_DIM = 1
DIM_VALUE, DIM_PARAM = 1, 2
_VARINT, _FIXED64, _LENGTH, _FIXED32 = 0, 1, 2, 5

Dim = int | str | None  # a fixed size, a symbolic name, or unknown
Shape = tuple[Dim, ...]


class OnnxFormatError(ValueError):
    """The bytes are not a well-formed ONNX ModelProto."""


@dataclass(frozen=True)
class GraphIO:
    inputs: dict[str, Shape]
    outputs: dict[str, Shape]


class _Field(NamedTuple):
    number: int
    wire: int
    value: int  # a varint's value (0 for other wire types)
    span: tuple[int, int]  # a length-delimited field's payload (empty for other wire types)


def graph_io(path: str | Path) -> GraphIO:
    """Names and shapes of the graph's inputs and outputs (:class:`OnnxFormatError` if malformed)."""
    with Path(path).open("rb") as handle:
        if handle.seek(0, 2) == 0:
            raise OnnxFormatError("the file is empty")
        with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            graph = _child(buf, (0, len(buf)), MODEL_GRAPH)
            if graph is None:
                raise OnnxFormatError("no graph in the model")
            inputs: dict[str, Shape] = {}
            outputs: dict[str, Shape] = {}
            for f in _fields(buf, graph):
                if f.wire == _LENGTH and f.number in (GRAPH_INPUT, GRAPH_OUTPUT):
                    name, shape = _value_info(buf, f.span)
                    (inputs if f.number == GRAPH_INPUT else outputs)[name] = shape
    return GraphIO(inputs, outputs)


def _value_info(buf: mmap.mmap, span: tuple[int, int]) -> tuple[str, Shape]:
    name, dims = "", []
    for f in _fields(buf, span):
        if f.wire == _LENGTH and f.number == VALUE_NAME:
            name = _text(buf, f.span)
        elif f.wire == _LENGTH and f.number == VALUE_TYPE:
            dims = _dims(buf, f.span)
    return name, tuple(dims)


def _dims(buf: mmap.mmap, type_span: tuple[int, int]) -> list[Dim]:
    tensor = _child(buf, type_span, TYPE_TENSOR)
    shape = _child(buf, tensor, TENSOR_SHAPE) if tensor else None
    if shape is None:
        return []
    dims: list[Dim] = []
    for dim in _fields(buf, shape):
        if dim.number != SHAPE_DIM or dim.wire != _LENGTH:
            continue
        value: Dim = None
        for f in _fields(buf, dim.span):
            if f.number == DIM_VALUE and f.wire == _VARINT:
                value = f.value - (1 << 64) if f.value >= 1 << 63 else f.value  # int64
            elif f.number == DIM_PARAM and f.wire == _LENGTH:
                value = _text(buf, f.span)
        dims.append(value)
    return dims


def _child(buf: mmap.mmap, span: tuple[int, int], number: int) -> tuple[int, int] | None:
    """The payload of the first length-delimited field ``number`` of a message."""
    return next((f.span for f in _fields(buf, span) if f.number == number and f.wire == _LENGTH), None)


def _text(buf: mmap.mmap, span: tuple[int, int]) -> str:
    return buf[span[0] : span[1]].decode("utf-8", errors="replace")


def _fields(buf: mmap.mmap, span: tuple[int, int]) -> Iterator[_Field]:
    """The fields of the message in ``buf[span]``, in order."""
    pos, end = span
    while pos < end:
        key, pos = _varint(buf, pos, end)
        number, wire = key >> 3, key & 7
        if wire == _VARINT:
            value, pos = _varint(buf, pos, end)
            yield _Field(number, wire, value, (pos, pos))
        elif wire == _LENGTH:
            length, pos = _varint(buf, pos, end)
            if pos + length > end:
                raise OnnxFormatError(f"field {number} runs past the end of its message")
            yield _Field(number, wire, 0, (pos, pos + length))
            pos += length
        elif wire in (_FIXED64, _FIXED32):
            pos += 8 if wire == _FIXED64 else 4
            yield _Field(number, wire, 0, (pos, pos))
        else:
            raise OnnxFormatError(f"unsupported protobuf wire type {wire} at byte {pos}")
    if pos != end:
        raise OnnxFormatError("a message is truncated")


def _varint(buf: mmap.mmap, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while pos < end and shift < 70:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
    raise OnnxFormatError("a varint is truncated")
