"""Build a TensorRT engine from an ONNX model, one precision at a time.

Strongly typed networks (TensorRT >= 9/10) take their precision from the ONNX model itself
(fp16.onnx, the Q/DQ int8.onnx); on versions without them (8.6) the FP16/INT8 builder flags
are set instead. The INT8 implicit calibrator is offered where the API still has it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import EngineError, OnnxModelError
from ..params import BuildParams
from . import common
from .inspect import engine_information, parse_layers

log = logging.getLogger(__name__)


@dataclass
class BuildResult:
    engine: bytes
    timing_cache: bytes | None
    report: dict[str, Any]
    layers: list[dict[str, Any]] = field(default_factory=list)
    inspector: dict[str, Any] = field(default_factory=dict)  # raw engine-inspector JSON


def build_engine(
    trt: Any,
    logger: Any,
    onnx_path: Path,
    precision: str,
    p: BuildParams,
    timing_cache: bytes | None = None,
    calibrator: Any = None,
) -> BuildResult:
    """Parse ``onnx_path`` and build a serialized engine; everything measured goes in report."""
    strongly = p.strongly_typed == "auto" and common.has_strongly_typed(trt) and calibrator is None
    builder = trt.Builder(logger)
    network = builder.create_network(common.network_flags(trt, strongly))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise OnnxModelError(f"{onnx_path}: TensorRT's ONNX parser failed: {'; '.join(errors)}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, p.workspace_mb * 2**20)
    config.builder_optimization_level = p.opt_level
    if p.detailed_profiling:
        config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    config.set_tactic_sources(_tactic_sources(trt, config))
    mode = _set_precision(trt, config, network, precision, strongly, p.io_fp16)
    if calibrator is not None:
        mode = "implicit INT8 calibration (IInt8EntropyCalibrator2)"

    input_name = network.get_input(0).name
    chw = tuple(network.get_input(0).shape)[1:]
    for prof in p.profiles:
        profile = builder.create_optimization_profile()
        profile.set_shape(input_name, (prof.min, *chw), (prof.opt, *chw), (prof.max, *chw))
        config.add_optimization_profile(profile)
    if calibrator is not None:
        calib = builder.create_optimization_profile()
        b = calibrator.get_batch_size()  # must equal the calibrator's batch exactly
        calib.set_shape(input_name, (b, *chw), (b, *chw), (b, *chw))
        common.set_int8_calibrator(config, calibrator, calib)

    cache = None
    if p.timing_cache:
        cache = config.create_timing_cache(timing_cache or b"")
        config.set_timing_cache(cache, ignore_mismatch=False)

    log.info(
        "building %s engine from %s (%s, opt level %d, %d profile(s))",
        precision,
        onnx_path,
        mode,
        p.opt_level,
        len(p.profiles),
    )
    t0 = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    build_s = time.perf_counter() - t0
    if serialized is None:
        raise EngineError(
            f"TensorRT failed to build the {precision} engine from {onnx_path} (see the TensorRT errors above)"
        )
    engine_bytes = bytes(serialized)
    new_cache = bytes(config.get_timing_cache().serialize()) if cache is not None else None

    inspector = engine_information(trt, logger, engine_bytes)
    layers = parse_layers(inspector)
    report = {
        "precision": precision,
        "onnx": str(onnx_path),
        "tensorrt": trt.__version__,
        "mode": mode,
        "strongly_typed": strongly,
        "io_fp16": p.io_fp16 and precision != "fp32",
        "opt_level": p.opt_level,
        "workspace_mb": p.workspace_mb,
        "profiles": [{"min": q.min, "opt": q.opt, "max": q.max} for q in p.profiles],
        "build_s": round(build_s, 2),
        "engine_mb": round(len(engine_bytes) / 2**20, 2),
        "layer_count": len(layers),
        "layer_precisions": _count_precisions(layers),
        "timing_cache_warm": bool(timing_cache),
        "timing_cache_bytes_before": len(timing_cache or b""),
        "timing_cache_bytes_after": len(new_cache or b""),
    }
    return BuildResult(engine_bytes, new_cache, report, layers, inspector)


def _tactic_sources(trt: Any, config: Any) -> int:
    """The default tactic sources without cuBLAS/cuDNN: optional since 8.x, absent from 10.x
    defaults, and stubs in the GPU host's 8.6 bundle."""
    return common.without_library_tactics(trt, int(config.get_tactic_sources()))


def _set_precision(trt: Any, config: Any, network: Any, precision: str, strongly: bool, io_fp16: bool) -> str:
    if strongly:
        return "strongly typed (precision from the ONNX model)"
    # Weakly typed (8.6, or strongly_typed=never): flags allow lower precision; the Q/DQ
    # model pins INT8 where its Q/DQ nodes are and FP16 may serve the rest.
    if precision == "fp32":
        return "FP32 (TF32 allowed)"
    if not common.has_precision_flags(trt):
        raise EngineError(
            f"this TensorRT ({trt.__version__}) has no FP16/INT8 builder flags; use build.strongly_typed=auto"
        )
    for flag in common.precision_flags(trt, precision):
        config.set_flag(flag)
    if io_fp16:
        for i in range(network.num_inputs):
            network.get_input(i).dtype = trt.float16
        for i in range(network.num_outputs):
            network.get_output(i).dtype = trt.float16
    return f"weakly typed, flags FP16{'+INT8' if precision == 'int8' else ''}"


def _count_precisions(layers: list[dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for layer in layers:
        counts[layer["precision"]] = counts.get(layer["precision"], 0) + 1
    return dict(sorted(counts.items()))
