"""Importing TensorRT, its logger and what this version of the API offers."""

from __future__ import annotations

import logging
from typing import Any

from ..errors import BackendUnavailable

log = logging.getLogger(__name__)


def import_tensorrt() -> Any:
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise BackendUnavailable(
            f"TensorRT is not importable in this interpreter ({exc}); install the [gpu] extra "
            "or set TRT_PYTHON to an interpreter that has it"
        ) from exc
    return trt


def make_logger(trt: Any) -> Any:
    """A TensorRT logger that forwards to Python logging (warnings and errors only)."""

    class _Logger(trt.ILogger):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            trt.ILogger.__init__(self)

        def log(self, severity: Any, msg: str) -> None:
            if severity in (trt.ILogger.INTERNAL_ERROR, trt.ILogger.ERROR):
                log.error("TensorRT: %s", msg)
            elif severity == trt.ILogger.WARNING:
                log.warning("TensorRT: %s", msg)
            else:
                log.debug("TensorRT: %s", msg)

    return _Logger()


def has_strongly_typed(trt: Any) -> bool:
    return hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED")


def has_precision_flags(trt: Any) -> bool:
    """FP16/INT8 builder flags (deprecated in 10.x, removed in 11.x)."""
    return hasattr(trt.BuilderFlag, "FP16") and hasattr(trt.BuilderFlag, "INT8")


def has_implicit_calibrator(trt: Any) -> bool:
    return hasattr(trt, "IInt8EntropyCalibrator2") and has_precision_flags(trt)


def network_flags(trt: Any, strongly_typed: bool) -> int:
    flags = 0
    explicit = getattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH", None)
    if explicit is not None:  # required by 8.x, ignored by 10.x, gone in 11.x
        flags |= 1 << int(explicit)
    if strongly_typed:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    return flags


def dtype_to_numpy(trt: Any, dtype: Any) -> Any:
    import numpy as np

    table = {
        trt.float32: np.float32,
        trt.float16: np.float16,
        trt.int8: np.int8,
        trt.int32: np.int32,
        trt.bool: np.bool_,
    }
    if hasattr(trt, "int64"):
        table[trt.int64] = np.int64
    if hasattr(trt, "uint8"):  # raw-pixel engines take uint8 input (TensorRT >= 8.5)
        table[trt.uint8] = np.uint8
    if dtype not in table:
        raise BackendUnavailable(f"TensorRT tensor type {dtype} has no numpy equivalent here")
    return table[dtype]


def dtype_name(trt: Any, dtype: Any) -> str:
    """A TensorRT tensor type as a numpy name (float32, float16, uint8, ...), for reports."""
    import numpy as np

    try:
        return str(np.dtype(dtype_to_numpy(trt, dtype)).name)
    except BackendUnavailable:
        return str(dtype).rsplit(".", 1)[-1].lower()


def device_memory_size(engine: Any) -> int:
    """Bytes of activation memory a context needs: ``device_memory_size_v2`` (10.x and later;
    the only name in 11.x), else ``device_memory_size`` (8.6)."""
    v2 = getattr(engine, "device_memory_size_v2", None)
    return int(v2 if v2 is not None else engine.device_memory_size)
