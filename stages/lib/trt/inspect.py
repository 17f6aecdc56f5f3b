"""Per-layer facts from TensorRT's engine inspector (name, type, precision, tactic)."""

from __future__ import annotations

import json
import re
from typing import Any

_PRECISION = re.compile(r"\b(FP32|FP16|BF16|FP8|Int8|Int32|Int64|Bool|UInt8|Float|Half)\b", re.IGNORECASE)
# Without an execution context the inspector abbreviates ("Float", "Half", "Int8").
_ALIASES = {"FLOAT": "FP32", "HALF": "FP16"}


def precision_of(fmt: str) -> str:
    """'Thirty-two wide channel vectorized row major Int8 format' or 'Int8' -> 'INT8'."""
    m = _PRECISION.search(fmt or "")
    if not m:
        return "unknown"
    token = m.group(1).upper()
    return _ALIASES.get(token, token)


def _layer_precision(layer: dict[str, Any]) -> str:
    """The precision a layer computes in: INT8 when its inputs or weights are INT8 (a
    quantized conv may write FP16/FP32), else the type of its first output."""
    weights = layer.get("Weights")
    wtype = precision_of(str(weights.get("Type", ""))) if isinstance(weights, dict) else "unknown"
    inputs = [precision_of(str(i.get("Format/Datatype", ""))) for i in layer.get("Inputs") or [] if isinstance(i, dict)]
    if wtype == "INT8" or (inputs and all(p == "INT8" for p in inputs)):
        return "INT8"
    outputs = [o for o in layer.get("Outputs") or [] if isinstance(o, dict)]
    return precision_of(str(outputs[0].get("Format/Datatype", ""))) if outputs else "unknown"


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


def engine_information(trt: Any, logger: Any, engine_bytes: bytes) -> dict[str, Any]:
    """The inspector's JSON for the whole engine (with a context: full format strings)."""
    runtime = trt.Runtime(logger)
    engine = runtime.deserialize_cuda_engine(engine_bytes)
    inspector = engine.create_engine_inspector()
    context = engine.create_execution_context()
    if context is not None:
        inspector.execution_context = context
    # strict=False: 8.6 puts raw control characters in some layer names
    return json.loads(inspector.get_engine_information(trt.LayerInformationFormat.JSON), strict=False)
