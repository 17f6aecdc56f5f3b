"""INT8 ranges and Q/DQ placement with ONNX Runtime's quantization tools (the calibrate
stage's machinery): a calibrator over preprocessed batches, the ranges it finds, and the Q/DQ
model TensorRT fuses (symmetric INT8, per-channel weights, float bias, Q/DQ on Conv inputs and
on residual skips, optionally around the average pool), with an FP32 or an FP16 base."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import OnnxModelError
from ..core.io import atomic_path
from ..core.params import CalibrateParams
from ..core.progress import progress
from .onnxgraph import (
    FP16_QDQ_OPSET,
    cast_float_io,
    cast_io_to_fp16,
    check_onnx,
    float_to_fp16,
    quantize_pools,
    quantize_skip_inputs,
    raise_opset,
)

CHUNK = 4  # batches per collect_data call


class Reader:
    """ONNX Runtime CalibrationDataReader over preprocessed calibration batches."""

    def __init__(self, input_name: str, batches: list[np.ndarray]) -> None:
        self.input_name = input_name
        self._iter = iter(batches)
        self._n = len(batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        x = next(self._iter, None)
        return None if x is None else {self.input_name: x}

    def __len__(self) -> int:
        return self._n

    def set_range(self, start_index: int, end_index: int) -> None:  # pragma: no cover - unused API
        raise NotImplementedError


def compute_ranges(onnx_path: Path, batches: list[np.ndarray], c: CalibrateParams, providers: list[str]) -> Any:
    from onnxruntime.quantization import CalibrationMethod
    from onnxruntime.quantization.calibrate import create_calibrator

    method = {
        "entropy": CalibrationMethod.Entropy,
        "minmax": CalibrationMethod.MinMax,
        "percentile": CalibrationMethod.Percentile,
    }[c.method]
    extra: dict[str, Any] = {"symmetric": True}
    if c.method == "entropy":  # TensorRT's entropy calibration: 2048 bins folded to 128 levels
        extra.update(num_bins=2048, num_quantized_bins=128)
    if c.method == "percentile":
        extra["percentile"] = c.percentile
    input_name = load_onnx(onnx_path).graph.input[0].name
    with tempfile.TemporaryDirectory(prefix="calib.") as tmp:
        calibrator = create_calibrator(
            Path(onnx_path),
            None,
            augmented_model_path=str(Path(tmp) / "augmented.onnx"),
            calibrate_method=method,
            providers=providers,
            extra_options=extra,
        )
        # Every collect_data call reduces what it saw (min/max or histograms) and frees the
        # activations, so feeding a few batches at a time bounds host memory; ORT's own
        # max_intermediate_outputs drops batches (microsoft/onnxruntime#18893).
        chunks = [batches[i : i + CHUNK] for i in range(0, len(batches), CHUNK)]
        for chunk in progress(chunks, total=len(chunks), desc=f"calibrate ({c.method})"):
            calibrator.collect_data(Reader(input_name, chunk))
        return calibrator.compute_data()


def load_onnx(path: Path) -> Any:
    """onnx.load with a one-line error naming the file."""
    import onnx
    from google.protobuf.message import DecodeError

    try:
        model = onnx.load(str(path))
        if not model.graph.input:
            raise ValueError("the graph has no inputs")
    except (DecodeError, ValueError, OSError, IndexError) as exc:
        raise OnnxModelError(f"{path}: not a valid ONNX model ({exc}); run `dvc repro -f export`") from exc
    return model


def _min_max(td: Any) -> tuple[float, float]:
    """A calibrated tensor's (min, max), from ORT's TensorData."""
    lo, hi = (float(np.asarray(v).reshape(-1)[0]) for v in td.range_value)
    return lo, hi


def ranges_to_json(tensors: Any, c: CalibrateParams, n_images: int) -> dict[str, Any]:
    out = {}
    for name, td in sorted(tensors.data.items()):
        lo, hi = _min_max(td)
        out[name] = {"min": lo, "max": hi, "amax": max(abs(lo), abs(hi))}
    return {
        "method": c.method,
        "percentile": c.percentile if c.method == "percentile" else None,
        "images": n_images,
        "symmetric": True,
        "tensors": out,
    }


def quantize(onnx_path: Path, tensors: Any, c: CalibrateParams, dest: Path) -> dict[str, int]:
    import onnx
    from onnxruntime.quantization import QuantType
    from onnxruntime.quantization.qdq_quantizer import QDQQuantizer

    model = load_onnx(onnx_path)
    # Conv only: the 512->10 classifier is negligible work, and Gemm per-channel Q/DQ axes
    # differ across TensorRT versions.
    op_types = ["Conv"] + (["Add"] if c.quantize_residual_add else [])
    extra = {
        "ActivationSymmetric": True,  # TensorRT requires zero-point 0
        "WeightSymmetric": True,
        "QuantizeBias": False,  # TensorRT fuses float bias into the conv
        "AddQDQPairToWeight": True,  # float weights + Q/DQ: parsed by 8.6 and 10.x alike
        "QDQKeepRemovableActivations": True,
        "OpTypesToExcludeOutputQuantization": ["Conv"],
    }
    # Convs named by calibrate.float_nodes get no Q/DQ; TensorRT runs them in float (FP16 in
    # 8.6's weakly typed INT8 builds, which also allow FP16).
    excluded = float_node_names(model, c.float_nodes)
    quantizer = QDQQuantizer(
        model, c.per_channel, False, QuantType.QInt8, QuantType.QInt8, tensors, None, excluded, op_types, extra
    )
    quantizer.quantize_model()
    graph, amax = quantizer.model.model.graph, amax_by_tensor(tensors)
    skip = [] if c.quantize_residual_add else quantize_skip_inputs(graph, amax, set(excluded))
    pools = quantize_pools(graph, amax) if c.quantize_pools else []
    with atomic_path(dest) as tmp:
        quantizer.model.save_model_to_file(str(tmp), False)
        try:
            onnx.checker.check_model(str(tmp))
        except onnx.checker.ValidationError as exc:
            raise OnnxModelError(f"{dest}: the Q/DQ model fails onnx.checker ({exc})") from exc
    counts: dict[str, int] = {"skip_qdq_pairs": len(skip), "pool_qdq": len(pools), "float_convs": len(excluded)}
    for node in onnx.load(str(dest)).graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


def with_fp16_io(path: Path) -> None:
    """Rewrite the Q/DQ model at ``path`` with fp16 graph I/O (export.io_fp16), in place."""
    import onnx

    model = load_onnx(path)
    cast_io_to_fp16(model)
    onnx.save(model, str(path))
    try:
        onnx.checker.check_model(str(path))
    except onnx.checker.ValidationError as exc:
        raise OnnxModelError(f"{path}: the Q/DQ model with fp16 I/O fails onnx.checker ({exc})") from exc


def with_fp16_base(path: Path, fp16_io: bool) -> int:
    """Rewrite the Q/DQ model at ``path`` with an FP16 base (calibrate.high_precision: fp16), in
    place: opset 19 (FP16 Q/DQ scales), every float tensor FP16, and graph I/O as before through
    Casts at the edges, or fp16 I/O with ``fp16_io`` (export.io_fp16). The Q/DQ nodes and the
    ranges stay; returns how many values were clamped to float16's range."""
    import onnx
    from onnx import TensorProto

    model = raise_opset(load_onnx(path), FP16_QDQ_OPSET)
    clamped = float_to_fp16(model)
    if not fp16_io:
        cast_float_io(model, outer=TensorProto.FLOAT, inner=TensorProto.FLOAT16)
    onnx.save(model, str(path))
    check_onnx(path, name=f"{path} (the Q/DQ model with an FP16 base)")
    return clamped


def amax_by_tensor(tensors: Any) -> dict[str, float]:
    """The calibrated symmetric range (max |value|) of each tensor ORT's calibrator saw."""
    return {name: max(map(abs, _min_max(td))) for name, td in tensors.data.items()}


def float_node_names(model: Any, patterns: list[str]) -> list[str]:
    """Names of the Conv nodes that match any of ``patterns`` (regexes, searched)."""
    return [n.name for n in model.graph.node if n.op_type == "Conv" and any(re.search(rx, n.name) for rx in patterns)]
