"""Per-layer facts from TensorRT's engine inspector (name, type, precision, tactic)."""

from __future__ import annotations

import json
import re
from typing import Any

_PRECISION = re.compile(r"\b(FP32|FP16|BF16|FP8|Int8|Int32|Int64|Bool|UInt8)\b", re.IGNORECASE)


def precision_of(fmt: str) -> str:
    """'Thirty-two wide channel vectorized row major Int8 format' -> 'INT8'."""
    m = _PRECISION.search(fmt or "")
    return m.group(1).upper() if m else "unknown"


def parse_layers(info: dict[str, Any]) -> list[dict[str, Any]]:
    """Inspector JSON -> one record per layer; needs DETAILED profiling verbosity for types."""
    rows = []
    for layer in info.get("Layers", []):
        if isinstance(layer, str):  # LAYER_NAMES_ONLY verbosity
            rows.append({"name": layer, "type": "unknown", "precision": "unknown", "tactic": ""})
            continue
        outputs = layer.get("Outputs") or [{}]
        rows.append({
            "name": layer.get("Name", ""),
            "type": layer.get("LayerType", "unknown"),
            "precision": precision_of(outputs[0].get("Format/Datatype", "")),
            "tactic": str(layer.get("TacticName", layer.get("TacticValue", ""))),
        })
    return rows


def layer_table(trt: Any, logger: Any, engine_bytes: bytes) -> list[dict[str, Any]]:
    runtime = trt.Runtime(logger)
    engine = runtime.deserialize_cuda_engine(engine_bytes)
    inspector = engine.create_engine_inspector()
    info = json.loads(inspector.get_engine_information(trt.LayerInformationFormat.JSON))
    return parse_layers(info)
