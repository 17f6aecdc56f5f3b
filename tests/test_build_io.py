"""The engine's I/O types come from the ONNX model: build_engine on stand-in TensorRT objects
never sets a tensor's type (read-only in TensorRT 11), and its report reads the types from the
parsed network. The stand-ins mimic the three API generations as tests/test_trt_side.py does.
An INT8 model with an FP16 base (calibrate.high_precision: fp16) is refused before parsing
where the parser cannot read it (8.6)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from stages.lib.core.config import params_from_dict
from stages.lib.core.errors import UnsupportedCombination
from stages.lib.core.params import BuildParams
from stages.lib.data.inputs import InputSpec
from stages.lib.quant.quantize import with_fp16_base
from stages.lib.trt import builder, common
from tests.conftest import compose

# TensorRT's DataType members, as opaque stand-ins
F32, F16, U8, I8, I32, BOOL = (f"DataType.{n}" for n in ("FLOAT", "HALF", "UINT8", "INT8", "INT32", "BOOL"))


class _Tensor:
    def __init__(self, name: str, dtype: Any, shape: tuple[int, ...]) -> None:
        self.name, self._dtype, self.shape = name, dtype, shape
        self.dtype_writes: list[Any] = []

    @property
    def dtype(self) -> Any:
        return self._dtype

    @dtype.setter
    def dtype(self, value: Any) -> None:  # what TensorRT 11.x does: the property is read-only
        self.dtype_writes.append(value)
        raise AttributeError("ITensor.dtype is read-only")


class _Network:
    def __init__(self, inp: _Tensor, out: _Tensor) -> None:
        self.inp, self.out = inp, out
        self.num_inputs = self.num_outputs = 1

    def get_input(self, i: int) -> _Tensor:
        return [self.inp][i]

    def get_output(self, i: int) -> _Tensor:
        return [self.out][i]


class _Profile:
    def __init__(self) -> None:
        self.shapes: dict[str, tuple[Any, ...]] = {}

    def set_shape(self, name: str, lo: Any, opt: Any, hi: Any) -> None:
        self.shapes[name] = (lo, opt, hi)


class _Config:
    def __init__(self) -> None:
        self.flags: list[int] = []
        self.profiles: list[_Profile] = []
        self.int8_calibrator: Any = None
        self.calibration_profile: _Profile | None = None
        self.builder_optimization_level = 0
        self.profiling_verbosity = None

    def set_memory_pool_limit(self, pool: Any, size: int) -> None: ...

    def get_tactic_sources(self) -> int:
        return 0b11111

    def set_tactic_sources(self, sources: int) -> None: ...

    def set_flag(self, flag: int) -> None:
        self.flags.append(flag)

    def add_optimization_profile(self, profile: _Profile) -> None:
        self.profiles.append(profile)

    def set_calibration_profile(self, profile: _Profile) -> None:
        self.calibration_profile = profile

    def create_timing_cache(self, blob: bytes) -> Any:
        return SimpleNamespace(serialize=lambda: b"cache")

    def set_timing_cache(self, cache: Any, ignore_mismatch: bool) -> None:
        self.cache = cache

    def get_timing_cache(self) -> Any:
        return self.cache


def _fake_trt(version: str, network: _Network) -> SimpleNamespace:
    flags = {"8.6": ["EXPLICIT_BATCH"], "10": ["EXPLICIT_BATCH", "STRONGLY_TYPED"], "11": ["STRONGLY_TYPED"]}
    config = _Config()
    trt_builder = SimpleNamespace(
        create_network=lambda _flags: network,
        create_builder_config=lambda: config,
        create_optimization_profile=_Profile,
        build_serialized_network=lambda _net, _cfg: b"engine bytes",
    )
    parsed: list[str] = []
    parser = SimpleNamespace(parse_from_file=lambda path: parsed.append(path) or True, num_errors=0)
    trt = SimpleNamespace(
        __version__=version,
        Builder=lambda _logger: trt_builder,
        OnnxParser=lambda _net, _logger: parser,
        NetworkDefinitionCreationFlag=SimpleNamespace(**{n: i for i, n in enumerate(flags[version])}),
        BuilderFlag=SimpleNamespace(FP16=0, INT8=1, TF32=2) if version != "11" else SimpleNamespace(TF32=2),
        TacticSource=SimpleNamespace(CUBLAS=0, CUBLAS_LT=1, CUDNN=2),
        MemoryPoolType=SimpleNamespace(WORKSPACE=0),
        ProfilingVerbosity=SimpleNamespace(DETAILED=1),
        float32=F32,
        float16=F16,
        uint8=U8,
        int8=I8,
        int32=I32,
        bool=BOOL,
        config=config,
        parsed=parsed,
    )
    if version != "11":
        trt.IInt8EntropyCalibrator2 = object
    return trt


@pytest.fixture
def build_params() -> BuildParams:
    """The default build params, composed with every option that asks for fp16 I/O."""
    return params_from_dict(compose(["export.io_fp16=true", "export.raw_input=true"])).build


@pytest.fixture(autouse=True)
def _no_inspector(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(builder, "engine_information", lambda *_a: {"Layers": []})


def _qdq_model(path: Path) -> Path:
    """A one-Q/DQ-pair model with FP32 scales at opset 17, as calibrate writes by default."""
    h = helper
    inits = [
        numpy_helper.from_array(np.array(0.1, np.float32), "s"),
        numpy_helper.from_array(np.array(0, np.int8), "z"),
    ]
    nodes = [
        h.make_node("QuantizeLinear", ["input", "s", "z"], ["q"]),
        h.make_node("DequantizeLinear", ["q", "s", "z"], ["dq"]),
        h.make_node("Relu", ["dq"], ["logits"]),
    ]
    graph = h.make_graph(
        nodes,
        "g",
        [h.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 10])],
        [h.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])],
        inits,
    )
    onnx.save(h.make_model(graph, opset_imports=[h.make_opsetid("", 17)]), str(path))
    return path


@pytest.fixture
def model(tmp_path: Path) -> Path:
    return _qdq_model(tmp_path / "int8.onnx")


@pytest.fixture
def fp16_base_model(tmp_path: Path) -> Path:
    """The same with an FP16 base, as calibrate.high_precision: fp16 writes it (opset 19)."""
    path = _qdq_model(tmp_path / "int8_fp16_base.onnx")
    with_fp16_base(path, fp16_io=False)
    return path


def _network(in_dtype: Any = F32, out_dtype: Any = F32, raw: bool = False) -> _Network:
    shape = (-1, 32, 32, 3) if raw else (-1, 3, 32, 32)
    return _Network(_Tensor("input", in_dtype, shape), _Tensor("logits", out_dtype, (-1, 10)))


def test_io_fp16_is_not_a_build_option() -> None:
    assert "io_fp16" not in {f.name for f in dataclasses.fields(BuildParams)}
    assert "io_fp16" not in compose()["build"]


@pytest.mark.parametrize("version,strongly", [("8.6", "auto"), ("10", "auto"), ("10", "never"), ("11", "auto")])
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_builder_never_sets_a_tensor_type(
    build_params: BuildParams, model: Path, version: str, strongly: str, precision: str
) -> None:
    net = _network(F16, F16)
    trt = _fake_trt(version, net)
    p = dataclasses.replace(build_params, strongly_typed=strongly)
    result = builder.build_engine(trt, None, model, precision, p)
    assert net.inp.dtype_writes == [] and net.out.dtype_writes == []
    assert result.report["input_dtype"] == result.report["output_dtype"] == "float16"
    assert "io_fp16" not in result.report


@pytest.mark.parametrize(
    "in_dtype,out_dtype,raw,want",
    [
        (F32, F32, False, ("float32", [-1, 3, 32, 32], "float32")),
        (F16, F16, False, ("float16", [-1, 3, 32, 32], "float16")),
        (U8, F16, True, ("uint8", [-1, 32, 32, 3], "float16")),
        (U8, F32, True, ("uint8", [-1, 32, 32, 3], "float32")),
    ],
)
def test_build_report_states_the_networks_io_types(build_params, model, in_dtype, out_dtype, raw, want) -> None:
    net = _network(in_dtype, out_dtype, raw)
    report = builder.build_engine(_fake_trt("8.6", net), None, model, "int8", build_params).report
    assert (report["input_dtype"], report["io"]["input"]["shape"], report["output_dtype"]) == want
    assert report["io"]["input"]["name"] == "input" and report["io"]["output"] == {
        "name": "logits",
        "dtype": want[2],
        "shape": [-1, 10],
    }


def test_profiles_use_the_networks_own_image_shape(build_params: BuildParams, model: Path) -> None:
    net = _network(U8, F32, raw=True)
    trt = _fake_trt("10", net)
    builder.build_engine(trt, None, model, "fp16", build_params)
    lo, opt, hi = trt.config.profiles[-1].shapes["input"]
    assert lo[1:] == opt[1:] == hi[1:] == (32, 32, 3)


def test_implicit_calibration_gets_batches_in_the_networks_input_format(build_params: BuildParams, model: Path) -> None:
    net = _network(U8, F32, raw=True)
    trt = _fake_trt("8.6", net)
    seen: list[InputSpec] = []

    def calibration(spec: InputSpec) -> Any:
        seen.append(spec)
        return SimpleNamespace(get_batch_size=lambda: 32)

    report = builder.build_engine(trt, None, model, "int8", build_params, calibration=calibration).report
    assert seen == [InputSpec("uint8", "NHWC", 32)]
    assert report["strongly_typed"] is False and "implicit" in report["mode"]
    assert trt.config.int8_calibrator is not None
    assert trt.config.calibration_profile.shapes["input"][0] == (32, 32, 32, 3)


def test_uint8_maps_to_numpy_and_unknown_types_keep_their_name() -> None:
    trt = _fake_trt("8.6", _network())
    assert common.dtype_to_numpy(trt, trt.uint8) is np.uint8
    assert common.dtype_name(trt, trt.uint8) == "uint8"
    assert common.dtype_name(trt, trt.float16) == "float16"
    assert common.dtype_name(trt, "DataType.FP8") == "fp8"


# -- an INT8 model with an FP16 base ----------------------------------------------------------


def test_tensorrt_86_refuses_an_fp16_base_model_in_one_line_before_parsing(
    build_params: BuildParams, fp16_base_model: Path
) -> None:
    trt = _fake_trt("8.6", _network())
    trt.__version__ = "8.6.0"
    with pytest.raises(UnsupportedCombination) as info:
        builder.build_engine(trt, None, fp16_base_model, "int8", build_params)
    message = str(info.value)
    assert "\n" not in message and trt.parsed == []  # the parser never saw it
    assert message == (
        f"{fp16_base_model} is an INT8 model with an FP16 base (FP16 Q/DQ scales, opset 19; "
        "calibrate.high_precision: fp16), which the ONNX parser of TensorRT 8.6.0 cannot read "
        "(opsets up to 17, FP32 scales): set calibrate.high_precision: fp32, or build with TensorRT 10.x/11.x"
    )


def test_tensorrt_86_builds_the_fp32_base_model(build_params: BuildParams, model: Path) -> None:
    trt = _fake_trt("8.6", _network())
    report = builder.build_engine(trt, None, model, "int8", build_params).report
    assert trt.parsed == [str(model)] and report["mode"] == "weakly typed, flags FP16+INT8"


@pytest.mark.parametrize("version", ["10", "11"])
def test_newer_parsers_get_the_fp16_base_model(build_params: BuildParams, fp16_base_model: Path, version: str) -> None:
    """Whether TensorRT 10.x/11.x build it is not tested here (no GPU): only that it reaches the parser."""
    trt = _fake_trt(version, _network())
    report = builder.build_engine(trt, None, fp16_base_model, "int8", build_params).report
    assert trt.parsed == [str(fp16_base_model)] and report["strongly_typed"] is True


@pytest.mark.parametrize(
    "version,parses",
    [
        ("8.6.0", False),
        ("8.6.1.6", False),
        ("9.3.0", False),
        ("10.0.1", True),
        ("10.16.1.11", True),
        ("11.4.0.106", True),
    ],
)
def test_fp16_qdq_parsing_is_told_by_the_version(version: str, parses: bool) -> None:
    assert common.parses_fp16_qdq(SimpleNamespace(__version__=version)) is parses
