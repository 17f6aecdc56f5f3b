"""What the build needs to know of an ONNX file before TensorRT parses it: its opset and the
types of its Q/DQ scales.

Read straight from the protobuf wire format, because the TensorRT interpreter has no onnx
package (numpy, cuda-python, tensorrt and pyyaml only). Only the fields named below are
decoded; tensor data is skipped, not copied.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import OnnxModelError

FLOAT, FLOAT16 = 1, 10  # onnx.TensorProto.DataType
_QDQ = ("QuantizeLinear", "DequantizeLinear")

# Field numbers of onnx.proto's messages
_MODEL_OPSET_IMPORT, _MODEL_GRAPH = 8, 7
_OPSET_DOMAIN, _OPSET_VERSION = 1, 2
_GRAPH_NODE, _GRAPH_INITIALIZER = 1, 5
_NODE_INPUT, _NODE_OP_TYPE, _NODE_DOMAIN = 1, 4, 7
_TENSOR_DATA_TYPE, _TENSOR_NAME = 2, 8


@dataclass(frozen=True)
class OnnxFacts:
    opset: int  # of the default (ai.onnx) domain
    qdq_scale_types: frozenset[int]  # TensorProto data types of the Q/DQ scales held as initializers

    @property
    def fp16_qdq(self) -> bool:
        """Q/DQ nodes with FP16 scales: an INT8 model with an FP16 base (calibrate.high_precision)."""
        return FLOAT16 in self.qdq_scale_types


def read_facts(path: Path) -> OnnxFacts:
    """The opset and Q/DQ scale types of the ONNX model at ``path``."""
    try:
        buf = memoryview(Path(path).read_bytes())
        opset, graph = 0, memoryview(b"")
        for field, value in _fields(buf):
            if field == _MODEL_OPSET_IMPORT and isinstance(value, memoryview):
                opset = max(opset, _default_opset(value))
            elif field == _MODEL_GRAPH and isinstance(value, memoryview):
                graph = value
        return OnnxFacts(opset, frozenset(_scale_types(graph)))
    except (OSError, ValueError) as exc:
        raise OnnxModelError(f"{path}: cannot read it as an ONNX model ({exc})") from exc


def _default_opset(entry: memoryview) -> int:
    domain, version = _text_and_number(entry, _OPSET_DOMAIN, _OPSET_VERSION)
    return version if domain in ("", "ai.onnx") else 0


def _scale_types(graph: memoryview) -> list[int]:
    """The data type of every initializer that a Q/DQ node of the default domain takes as its scale."""
    scales: set[str] = set()
    types: dict[str, int] = {}
    for field, value in _fields(graph):
        if field == _GRAPH_NODE and isinstance(value, memoryview):
            scale = _qdq_scale(value)
            if scale:
                scales.add(scale)
        elif field == _GRAPH_INITIALIZER and isinstance(value, memoryview):
            name, dtype = _text_and_number(value, _TENSOR_NAME, _TENSOR_DATA_TYPE)
            types[name] = dtype
    return [types[s] for s in scales if s in types]


def _qdq_scale(node: memoryview) -> str | None:
    """A Q/DQ node's scale input (its second), None for any other node."""
    inputs, op_type, domain = [], "", ""
    for field, value in _fields(node):
        if not isinstance(value, memoryview):
            continue
        if field == _NODE_INPUT:
            inputs.append(bytes(value).decode())
        elif field == _NODE_OP_TYPE:
            op_type = bytes(value).decode()
        elif field == _NODE_DOMAIN:
            domain = bytes(value).decode()
    return inputs[1] if op_type in _QDQ and domain in ("", "ai.onnx") and len(inputs) > 1 else None


def _text_and_number(message: memoryview, text_field: int, number_field: int) -> tuple[str, int]:
    """One string field and one varint field of a message ("" and 0 where absent)."""
    text, number = "", 0
    for field, value in _fields(message):
        if field == text_field and isinstance(value, memoryview):
            text = bytes(value).decode()
        elif field == number_field and isinstance(value, int):
            number = value
    return text, number


def _fields(buf: memoryview) -> Iterator[tuple[int, int | memoryview | None]]:
    """(field number, value) of each field of one message: an int for a varint, the bytes of a
    length-delimited field, None for fixed-width ones (not needed here)."""
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = _varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
            yield field, value
        elif wire == 2:
            size, pos = _varint(buf, pos)
            if pos + size > end:
                raise ValueError("a field runs past the end of its message")
            yield field, buf[pos : pos + size]
            pos += size
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
            yield field, None
        else:
            raise ValueError(f"unexpected protobuf wire type {wire}")
    if pos != end:
        raise ValueError("the last field runs past the end of its message")


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise ValueError("truncated or overlong varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
