"""Build a TensorRT engine from an ONNX model, one precision at a time.

Strongly typed networks (TensorRT >= 9/10) take their precision from the ONNX model itself
(fp16.onnx, the Q/DQ int8.onnx); on versions without them (8.6) the FP16/INT8 builder flags
are set instead. The INT8 implicit calibrator is offered where the API still has it.

The engine's I/O types are the ONNX model's (uint8 raw pixels, fp16 with ``export.io_fp16``):
the builder never sets a tensor's type (read-only in TensorRT 11), and the report states the
types it reads from the parsed network.

An INT8 model with an FP16 base (``calibrate.high_precision: fp16``: FP16 Q/DQ scales, opset
19) is refused in one line on a TensorRT whose parser cannot read it (8.6), before parsing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.errors import EngineBuildFailed, EngineError, OnnxModelError, UnsupportedCombination
from ..core.params import BuildParams
from ..data.inputs import InputSpec
from . import common
from .inspect import engine_information, parse_layers
from .onnxfile import read_facts

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
    calibration: Callable[[InputSpec], Any] | None = None,
) -> BuildResult:
    """Parse ``onnx_path`` and build a serialized engine; everything measured goes in report.

    ``calibration`` makes TensorRT's implicit INT8 calibrator for the parsed network's input
    (its batches in the model's input format); None for the Q/DQ or float models.
    """
    strongly = p.strongly_typed == "auto" and common.has_strongly_typed(trt) and calibration is None
    refuse_unparsable(trt, onnx_path)
    builder, network, parser = _parse(trt, logger, onnx_path, strongly)
    config, mode, calibrator = _configure(trt, builder, network, precision, p, strongly, calibration)
    cache = None
    if p.timing_cache:
        cache = config.create_timing_cache(timing_cache or b"")
        config.set_timing_cache(cache, ignore_mismatch=False)
    io = network_io(trt, network)

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
    del parser, calibrator  # both had to live until the build was done
    if serialized is None:
        raise EngineBuildFailed(
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
        "input_dtype": io["input"]["dtype"],
        "output_dtype": io["output"]["dtype"],
        "io": io,
        **_settings(p),
        "build_s": round(build_s, 2),
        "engine_mb": round(len(engine_bytes) / 2**20, 2),
        "layer_count": len(layers),
        "layer_precisions": _count_precisions(layers),
        "timing_cache_warm": bool(timing_cache),
        "timing_cache_bytes_before": len(timing_cache or b""),
        "timing_cache_bytes_after": len(new_cache or b""),
    }
    return BuildResult(engine_bytes, new_cache, report, layers, inspector)


def refuse_unparsable(trt: Any, onnx_path: Path) -> None:
    """UnsupportedCombination for an INT8 model with an FP16 base (FP16 Q/DQ scales) where this
    TensorRT's ONNX parser cannot read one; decided from the model, whatever the params say."""
    if common.parses_fp16_qdq(trt):
        return
    facts = read_facts(onnx_path)
    if facts.fp16_qdq:
        raise UnsupportedCombination(
            f"{onnx_path} is an INT8 model with an FP16 base (FP16 Q/DQ scales, opset {facts.opset}; "
            f"calibrate.high_precision: fp16), which the ONNX parser of TensorRT {trt.__version__} cannot read "
            "(opsets up to 17, FP32 scales): set calibrate.high_precision: fp32, or build with TensorRT 10.x/11.x"
        )


def _parse(trt: Any, logger: Any, onnx_path: Path, strongly: bool) -> tuple[Any, Any, Any]:
    """Builder, network and parser; the caller keeps the parser until the build is done
    (the network refers to weights the parser holds)."""
    builder = trt.Builder(logger)
    network = builder.create_network(common.network_flags(trt, strongly))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise OnnxModelError(f"{onnx_path}: TensorRT's ONNX parser failed: {'; '.join(errors)}")
    return builder, network, parser


def _configure(
    trt: Any,
    builder: Any,
    network: Any,
    precision: str,
    p: BuildParams,
    strongly: bool,
    calibration: Callable[[InputSpec], Any] | None,
) -> tuple[Any, str, Any]:
    """The builder config (memory, optimisation level, tactics, precision, profiles), the
    precision mode it describes, and the implicit calibrator when there is one (the caller
    keeps it alive until the build is done)."""
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, p.workspace_mb * 2**20)
    config.builder_optimization_level = p.opt_level
    if p.detailed_profiling:
        config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    config.set_tactic_sources(_tactic_sources(trt, config))
    mode = _set_precision(trt, config, precision, strongly)
    calibrator = calibration(input_spec(trt, network)) if calibration is not None else None
    if calibrator is not None:
        mode = "implicit INT8 calibration (IInt8EntropyCalibrator2)"
    _add_profiles(builder, config, network, p, calibrator)
    return config, mode, calibrator


def _settings(p: BuildParams) -> dict[str, Any]:
    return {
        "opt_level": p.opt_level,
        "workspace_mb": p.workspace_mb,
        "profiles": p.profile_dicts(),
    }


def _add_profiles(builder: Any, config: Any, network: Any, p: BuildParams, calibrator: Any) -> None:
    """One optimization profile per ``p.profiles`` entry; with an implicit calibrator, its own
    calibration profile of exactly the calibrator's batch."""
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


def _tactic_sources(trt: Any, config: Any) -> int:
    """The default tactic sources without cuBLAS/cuDNN: optional since 8.x, absent from 10.x
    defaults, and stubs in the GPU host's 8.6 bundle."""
    return common.without_library_tactics(trt, int(config.get_tactic_sources()))


def network_io(trt: Any, network: Any) -> dict[str, dict[str, Any]]:
    """Name, type and shape of the network's input and output, as parsed from the ONNX model:
    the engine's I/O, since nothing here changes a tensor's type or format."""

    def describe(tensor: Any) -> dict[str, Any]:
        return {"name": tensor.name, "dtype": common.dtype_name(trt, tensor.dtype), "shape": list(tensor.shape)}

    if network.num_inputs != 1 or network.num_outputs != 1:
        raise OnnxModelError(
            f"expected a model with one input and one output, got {network.num_inputs} and {network.num_outputs}"
        )
    return {"input": describe(network.get_input(0)), "output": describe(network.get_output(0))}


def input_spec(trt: Any, network: Any) -> InputSpec:
    """What the parsed network takes (raw uint8 NHWC or float NCHW), for calibration batches."""
    tensor = network.get_input(0)
    dtype = common.dtype_to_numpy(trt, tensor.dtype)
    return InputSpec.from_dims(dtype, tuple(int(d) for d in tensor.shape)[1:], where=f"network input {tensor.name}")


def _set_precision(trt: Any, config: Any, precision: str, strongly: bool) -> str:
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
    return f"weakly typed, flags FP16{'+INT8' if precision == 'int8' else ''}"


def _count_precisions(layers: list[dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for layer in layers:
        counts[layer["precision"]] = counts.get(layer["precision"], 0) + 1
    return dict(sorted(counts.items()))
