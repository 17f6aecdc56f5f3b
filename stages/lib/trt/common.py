"""Importing TensorRT, its logger and what this version of the API offers.

Every TensorRT name that is missing from a supported version (8.6, 10.x, 11.x) is looked up
here, with ``hasattr``/``getattr(..., default)``, and nowhere else: the other TensorRT-side
modules use only names all three have. tests/test_trt_api_contract.py checks both against the
committed API surfaces (tests/data/trt_api/).
"""

from __future__ import annotations

import logging
from typing import Any

from ..core.errors import BackendUnavailable

log = logging.getLogger(__name__)


def import_tensorrt() -> Any:
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise BackendUnavailable(
            f"TensorRT is not importable in this interpreter ({exc}); install the [gpu] extra ([gpu-cu12] for a "
            "CUDA 12 driver) with --extra-index-url https://pypi.nvidia.com, or set TRT_PYTHON to an "
            "interpreter that has it"
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


def parses_fp16_qdq(trt: Any) -> bool:
    """Whether this TensorRT's ONNX parser reads Q/DQ nodes with FP16 scales, which ONNX allows
    from opset 19 on: 10.x and later (10.0's parser takes opsets 9 to 20). 8.6's takes opsets
    up to 17, where Q/DQ scales are FP32 only."""
    major = str(trt.__version__).split(".", 1)[0]
    return major.isdigit() and int(major) >= 10


def has_precision_flags(trt: Any) -> bool:
    """FP16/INT8 builder flags (deprecated in 10.x, removed in 11.x)."""
    return hasattr(trt.BuilderFlag, "FP16") and hasattr(trt.BuilderFlag, "INT8")


def has_implicit_calibrator(trt: Any) -> bool:
    """TensorRT's own INT8 calibration (IInt8EntropyCalibrator2; removed in 11.x)."""
    return hasattr(trt, "IInt8EntropyCalibrator2") and has_precision_flags(trt)


def require_implicit_calibrator(trt: Any) -> Any:
    """The IInt8EntropyCalibrator2 base class; BackendUnavailable where this TensorRT lacks it."""
    base = getattr(trt, "IInt8EntropyCalibrator2", None)
    if base is None or not has_precision_flags(trt):
        raise BackendUnavailable(
            f"TensorRT {trt.__version__} has no implicit INT8 calibrator (IInt8EntropyCalibrator2 and the "
            "INT8 builder flag were removed in 11.x): build INT8 from the Q/DQ model (the pipeline's default), "
            "or use TensorRT 8.6-10.x for --implicit-calibration"
        )
    return base


def set_int8_calibrator(config: Any, calibrator: Any, profile: Any) -> None:
    """Attach an implicit calibrator and the optimization profile it calibrates with."""
    if not (hasattr(config, "int8_calibrator") and hasattr(config, "set_calibration_profile")):
        raise BackendUnavailable("this TensorRT's builder config takes no INT8 calibrator (removed in 11.x)")
    config.int8_calibrator = calibrator
    config.set_calibration_profile(profile)


def precision_flags(trt: Any, precision: str) -> list[Any]:
    """Builder flags that allow ``precision`` in a weakly typed network: FP16, plus INT8 for int8."""
    wanted = ["FP16", "INT8"] if precision == "int8" else ["FP16"]
    found = {"FP16": getattr(trt.BuilderFlag, "FP16", None), "INT8": getattr(trt.BuilderFlag, "INT8", None)}
    missing = [name for name in wanted if found[name] is None]
    if missing:
        raise BackendUnavailable(f"this TensorRT ({trt.__version__}) has no {'/'.join(missing)} builder flag")
    return [found[name] for name in wanted]


def without_library_tactics(trt: Any, sources: int) -> int:
    """``sources`` (a tactic-source bitmask) with cuBLAS, cuBLAS-LT and cuDNN cleared, where this
    TensorRT still has them (8.x, 10.x; 11.x removed them)."""
    for src in (
        getattr(trt.TacticSource, "CUBLAS", None),
        getattr(trt.TacticSource, "CUBLAS_LT", None),
        getattr(trt.TacticSource, "CUDNN", None),
    ):
        if src is not None:
            sources &= ~(1 << int(src))
    return sources


def device_memory_size(engine: Any) -> int:
    """Bytes of device memory an execution context of ``engine`` needs.

    ``device_memory_size_v2`` from 10.x on; 8.6 has only ``device_memory_size`` (deprecated in
    10.1, removed in 11.x).
    """
    size = getattr(engine, "device_memory_size_v2", None)
    if size is None:
        size = getattr(engine, "device_memory_size", None)
    if size is None:
        raise BackendUnavailable("this TensorRT's engine reports no device memory size")
    return int(size)


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
