"""Per-layer facts from TensorRT's engine inspector (name, type, precision, tactic)."""

from __future__ import annotations

import json
import re
from typing import Any

_PRECISION = re.compile(r"\b(FP32|FP16|BF16|BFloat16|FP8|Int8|Int32|Int64|Bool|UInt8|Float|Half)\b", re.IGNORECASE)
# Without an execution context, and in 11.x's "Datatype" field, types are abbreviated
# ("Float", "Half", "Int8").
_ALIASES = {"FLOAT": "FP32", "HALF": "FP16", "BFLOAT16": "BF16"}


def precision_of(fmt: str) -> str:
    """'Thirty-two wide channel vectorized row major Int8 format' or 'Int8' -> 'INT8'."""
    m = _PRECISION.search(fmt or "")
    if not m:
        return "unknown"
    token = m.group(1).upper()
    return _ALIASES.get(token, token)


# What a tactic's kernel name says about its arithmetic, in order of precedence
# ("..._i8i8_i8i32_f32_...", "..._f16f16_f16f16_f16_...", "..._f32f32_tf32f32_f32_...").
_TACTIC_TOKENS = (
    (re.compile(r"i8i8|int8int8|i8f32_i8i32|_i8_"), "INT8"),
    (re.compile(r"f16f16|h16h16|_h884|_h1688|fp16|khalf", re.IGNORECASE), "FP16"),
    (re.compile(r"tf32"), "TF32"),
    (re.compile(r"f32f32|kfloat|fp32", re.IGNORECASE), "FP32"),
)


def tensor_type(tensor: dict[str, Any]) -> str:
    """A layer tensor's type. 11.x gives it in its own field ("Datatype": "Int8", beside
    "Format": "(Linear) Row major linear format"); 8.6 and 10.x fold it into "Format/Datatype"."""
    for key in ("Datatype", "DataType"):
        if key in tensor:
            return precision_of(str(tensor[key]))
    return precision_of(str(tensor.get("Format/Datatype", "")))


def _tensor_types(layer: dict[str, Any], key: str) -> list[str]:
    return [tensor_type(t) for t in layer.get(key) or [] if isinstance(t, dict)]


def _weights_type(layer: dict[str, Any]) -> str:
    """8.6/10.x: "Weights": {"Type": ...}; 11.x: "Constants", tensors like Inputs (the largest
    one is the weights; the others are scalars such as a GEMM's alpha and beta)."""
    weights = layer.get("Weights")
    if isinstance(weights, dict):
        return precision_of(str(weights.get("Type", "")))
    constants = [c for c in layer.get("Constants") or [] if isinstance(c, dict)]
    if not constants:
        return "unknown"

    def size(c: dict[str, Any]) -> int:
        n = 1
        for d in c.get("Dimensions") or []:
            n *= max(int(d), 1)
        return n

    return tensor_type(max(constants, key=size))


def _layer_precision(layer: dict[str, Any]) -> str:
    """The precision a layer computes in.

    From the I/O types when the inspector gives them: INT8 when its inputs or weights are
    INT8 (a quantized conv may write FP16/FP32), else the type of its first output. A
    dynamic-shape engine inspected without an execution context reports every format as
    "N/A due to dynamic shapes" (TensorRT 8.6, seen on the H100); then the weights' type
    decides, and failing that the tactic's kernel name.
    """
    wtype = _weights_type(layer)
    tactic = str(layer.get("TacticName", ""))
    in_types = _tensor_types(layer, "Inputs")
    out_types = _tensor_types(layer, "Outputs")
    if wtype == "INT8" or (in_types and all(t == "INT8" for t in in_types)):
        return "INT8"
    if out_types and out_types[0] != "unknown":
        return out_types[0]
    if wtype == "FP32" and "tf32" in tactic:
        return "TF32"
    if wtype != "unknown":
        return wtype
    for pattern, name in _TACTIC_TOKENS:
        if pattern.search(tactic):
            return name
    return "unknown"


def parse_layers(info: dict[str, Any]) -> list[dict[str, Any]]:
    """Inspector JSON -> one record per layer; needs DETAILED profiling verbosity for types."""
    rows = []
    for layer in info.get("Layers", []):
        if isinstance(layer, str):  # LAYER_NAMES_ONLY verbosity
            rows.append({"name": layer, "type": "unknown", "precision": "unknown", "tactic": ""})
            continue
        rows.append(
            {
                "name": layer.get("Name", ""),
                "type": layer.get("LayerType", "unknown"),
                "precision": _layer_precision(layer),
                "tactic": str(layer.get("TacticName", layer.get("TacticValue", ""))),
            }
        )
    return rows


def io_tensors(info: dict[str, Any]) -> list[dict[str, Any]]:
    """The engine's I/O tensors: 11.x lists them under "I/O Tensors" ({"Name", "IOMode",
    "DataType", ...}); 8.6 and 10.x only name them under "Bindings" (mode and type unknown)."""
    if isinstance(info.get("I/O Tensors"), list):
        return [
            {
                "name": str(t.get("Name", "")),
                "mode": str(t.get("IOMode", "unknown")).lower(),
                "dtype": tensor_type(t),
            }
            for t in info["I/O Tensors"]
            if isinstance(t, dict)
        ]
    return [{"name": str(n), "mode": "unknown", "dtype": "unknown"} for n in info.get("Bindings") or []]


def engine_information(trt: Any, logger: Any, engine_bytes: bytes) -> dict[str, Any]:
    """The inspector's JSON for the whole engine.

    An execution context (with every input shape set) makes the inspector print full
    format strings, but only for a single-profile engine: with several profiles, 8.6's
    inspector fails on an attached context ("invalid encoded reference to a slot", an
    internal error, seen on the H100 even with shapes set), so those are inspected bare
    and parse_layers falls back to weights and tactic names.
    """
    runtime = trt.Runtime(logger)
    engine = runtime.deserialize_cuda_engine(engine_bytes)
    if engine.num_optimization_profiles == 1:
        context = engine.create_execution_context()
        if context is not None:
            for i in range(engine.num_io_tensors):
                name = engine.get_tensor_name(i)
                if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                    context.set_input_shape(name, tuple(engine.get_tensor_profile_shape(name, 0)[1]))
            info = _inspect(trt, engine, context)
            if info is not None:
                return info
    info = _inspect(trt, engine, None)
    return info if info is not None else {"Layers": []}


def _inspect(trt: Any, engine: Any, context: Any) -> dict[str, Any] | None:
    inspector = engine.create_engine_inspector()
    if context is not None:
        inspector.execution_context = context
    text = inspector.get_engine_information(trt.LayerInformationFormat.JSON)
    try:  # strict=False: 8.6 puts raw control characters in some layer names
        info = json.loads(text, strict=False)
    except ValueError:
        return None
    return info if isinstance(info, dict) else None
