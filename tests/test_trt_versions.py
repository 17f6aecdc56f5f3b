"""TensorRT 10.x/11.x behaviour without TensorRT: the names 11.x removed (with stand-ins for the
module and its objects), the 11.x engine-inspector JSON, and implicit calibration where 11.x
no longer has it."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from stages.lib.core.errors import BackendUnavailable
from stages.lib.trt import common, inspect
from tests.conftest import ROOT, run_stage
from tests.test_gpu import implicit_calibrator_missing

DATA = Path(__file__).parent / "data"


@pytest.mark.parametrize(
    "engine",
    [
        SimpleNamespace(device_memory_size_v2=3 * 2**20),  # 11.x: the old name is gone
        SimpleNamespace(device_memory_size_v2=3 * 2**20, device_memory_size=1),  # 10.x: both, v2 wins
        SimpleNamespace(device_memory_size=3 * 2**20),  # 8.6: only the old name
    ],
    ids=["11.x", "10.x", "8.6"],
)
def test_device_memory_size_reads_the_name_each_version_has(engine: object) -> None:
    """What describe() reports as activation memory (tests/test_trt_runner_fake.py runs
    describe() itself on a fake engine of each kind)."""
    assert common.device_memory_size(engine) == 3 * 2**20


def test_device_memory_size_without_either_name_is_a_clear_error() -> None:
    with pytest.raises(BackendUnavailable, match="device memory size"):
        common.device_memory_size(SimpleNamespace())


def _trt(version: str) -> SimpleNamespace:
    """The names common.py detects, as 8.6/10.x and 11.x have them."""
    old = version != "11"
    flags = SimpleNamespace(FP16=0, INT8=1, TF32=2) if old else SimpleNamespace(TF32=2)
    sources = dict(CUBLAS=0, CUBLAS_LT=1, CUDNN=2) if old else {}
    trt = SimpleNamespace(
        __version__=version, BuilderFlag=flags, TacticSource=SimpleNamespace(EDGE_MASK_CONVOLUTIONS=3, **sources)
    )
    if old:
        trt.IInt8EntropyCalibrator2 = type("IInt8EntropyCalibrator2", (), {})
    return trt


def test_precision_flags_and_tactic_sources_follow_the_version() -> None:
    assert common.precision_flags(_trt("10"), "int8") == [0, 1]
    assert common.precision_flags(_trt("10"), "fp16") == [0]
    with pytest.raises(BackendUnavailable, match="FP16/INT8 builder flag"):
        common.precision_flags(_trt("11"), "int8")
    assert common.without_library_tactics(_trt("10"), 0b1111) == 0b1000
    assert common.without_library_tactics(_trt("11"), 0b1111) == 0b1111  # nothing to clear


def test_implicit_calibrator_api_where_it_exists_and_a_clear_error_where_not() -> None:
    assert common.require_implicit_calibrator(_trt("10")).__name__ == "IInt8EntropyCalibrator2"
    with pytest.raises(BackendUnavailable, match="IInt8EntropyCalibrator2 .* removed in 11.x.*Q/DQ model"):
        common.require_implicit_calibrator(_trt("11"))
    config = SimpleNamespace(int8_calibrator=None, set_calibration_profile=lambda p: setattr(config, "profile", p))
    common.set_int8_calibrator(config, "calibrator", "profile")
    assert (config.int8_calibrator, config.profile) == ("calibrator", "profile")
    with pytest.raises(BackendUnavailable, match="no INT8 calibrator"):
        common.set_int8_calibrator(SimpleNamespace(), "calibrator", "profile")


# -- the engine inspector's 11.x JSON ------------------------------------------------------


def test_parse_layers_reads_the_11x_datatype_field() -> None:
    """11.x split 8.6/10.x's "Format/Datatype" into "Datatype" and "Format" on every layer tensor
    and lists a layer's weights under "Constants"; "Bindings" became "I/O Tensors".

    tests/data/inspector_trt11_shape.json is built from the documented field names, not dumped
    from an engine (no 11.x runs here): the "I/O Tensors" entries follow NVIDIA's migration guide
    (https://docs.nvidia.com/deeplearning/tensorrt/11.0.0/api/migration/tensorrt-10x-to-11x-IEngineInspector.html);
    the layer fields ("Name", "LayerType", "Inputs"/"Constants"/"Outputs" with "Name",
    "Dimensions", "Datatype", "Format", then "TacticName", "StreamId", "Metadata") and values such
    as "Float" and "(Linear) Row major linear format" follow the 11.x engine-inspector output in
    the TensorRT cookbook (github.com/wili-65535/trt-samples-for-hackathon-cn at 6373fd27,
    cookbook/04-Feature/EngineInspector/log-main.py.log), whose parser reads "Datatype" and
    "Format" where "Format/Datatype" is absent (cookbook/tensorrt_cookbook/utils_network.py,
    get_engine_tensor_info). The INT8 layers' formats are written by analogy with those.
    """
    info = json.loads((DATA / "inspector_trt11_shape.json").read_text())
    assert "Bindings" not in info and all("Format/Datatype" not in str(layer) for layer in info["Layers"])
    rows = inspect.parse_layers(info)
    assert [(r["type"], r["precision"]) for r in rows] == [
        ("Reformat", "INT8"),  # the input QuantizeLinear writes INT8
        ("CaskConvolution", "INT8"),
        ("CaskConvolution", "INT8"),  # INT8 weights (Constants) with an FP16 residual input and output
        ("CaskPooling", "FP16"),
        ("CaskGemmConvolution", "FP16"),  # the largest constant is the weight, not alpha/beta
        ("Reformat", "FP32"),
        ("NoOp", "FP32"),
    ]
    assert inspect.io_tensors(info) == [
        {"name": "input", "mode": "input", "dtype": "FP32"},
        {"name": "logits", "mode": "output", "dtype": "FP32"},
    ]


def test_io_tensors_of_the_older_bindings_list_only_names() -> None:
    assert inspect.io_tensors({"Bindings": ["input", "logits"], "Layers": []}) == [
        {"name": "input", "mode": "unknown", "dtype": "unknown"},
        {"name": "logits", "mode": "unknown", "dtype": "unknown"},
    ]
    assert inspect.io_tensors({"Layers": []}) == []


def test_tensor_type_prefers_the_split_field_and_reads_the_old_one() -> None:
    assert inspect.tensor_type({"Datatype": "Half", "Format": "(NHWC) Channel major format"}) == "FP16"
    assert inspect.tensor_type({"DataType": "BFloat16"}) == "BF16"
    assert inspect.tensor_type({"Format/Datatype": "Channel major FP16 format where channel % 8 == 0"}) == "FP16"
    assert inspect.tensor_type({"Format": "(Linear) Row major linear format"}) == "unknown"


# -- implicit calibration on a TensorRT without it ------------------------------------------

FAKE_TRT = """
__version__ = "{version}"
class ILogger:
    INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = range(5)
    def __init__(self):
        pass
class BuilderFlag:
    TF32 = 2
class NetworkDefinitionCreationFlag:
    STRONGLY_TYPED = 1
"""
OLD_API = """
BuilderFlag.FP16, BuilderFlag.INT8 = 0, 1
class IInt8EntropyCalibrator2:
    pass
"""


def _fake_tensorrt(folder: Path, version: str) -> Path:
    folder.mkdir(parents=True)
    text = FAKE_TRT.format(version=version) + (OLD_API if not version.startswith("11") else "")
    (folder / "tensorrt.py").write_text(text)
    return folder


def test_implicit_calibration_on_11x_stops_with_one_line_before_reading_data(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No calibration data exists here: the reason given must be the missing API, not the data."""
    monkeypatch.setenv("PYTHONPATH", str(_fake_tensorrt(tmp_path / "trt11", "11.4.0.106")))
    (project / "model.onnx").write_bytes(b"not read")
    (project / "fp.json").write_text(json.dumps({"available": True, "reason": None, "tensorrt": "11.4.0.106"}))
    args = ["--precision", "int8", "--onnx", "model.onnx", "--fingerprint", "fp.json", "--out-dir", "e"]
    proc = run_stage(
        "build", [*args, "--report", "r.json", "--implicit-calibration"], project, check=False, env={"TRT_PYTHON": ""}
    )
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: build int8: TensorRT 11.4.0.106 has no implicit INT8")
    assert "IInt8EntropyCalibrator2" in lines[0] and "Q/DQ model" in lines[0]
    assert not (project / "e" / "model.engine").exists()


def test_the_gpu_test_skips_implicit_calibration_where_tensorrt_lacks_it(tmp_path: Path) -> None:
    for version, skips in (("11.4.0.106", True), ("10.16.1.11", False)):
        fake = _fake_tensorrt(tmp_path / version, version)
        env = {"TRT_PYTHON": "", "PYTHONPATH": os.pathsep.join([str(ROOT), str(fake)])}
        reason = implicit_calibrator_missing(ROOT, env)
        assert (reason is not None) == skips, reason
        if skips:
            assert reason == (
                "TensorRT 11.4.0.106 has no IInt8EntropyCalibrator2 (removed in 11.x): no implicit calibration to test"
            )
