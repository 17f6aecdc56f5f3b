"""The Triton model repository: every config.pbtxt parses with Triton's own protobuf schema
and matches the real I/O of the model it describes (the ONNX graph as ONNX Runtime reads it,
or the I/O a TensorRT build recorded in its build.json)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from stages.lib.core.errors import InputFileError
from stages.lib.serving.spec import ModelSpec, TensorSpec, batching, engine_io, engine_spec, onnx_io, to_pbtxt
from tests.conftest import run_stage

MODEL = "resnet18_cifar"
FINGERPRINT = {
    "gpu": "NVIDIA H200",
    "compute_capability": "9.0",
    "tensorrt": "8.6.0",
    "driver": "580.1",
    "cuda_runtime": "12.0",
    "available": True,
}
PROFILES = [{"min": 1, "opt": 1, "max": 1}, {"min": 2, "opt": 256, "max": 1024}]
# A raw-pixel engine with fp16 logits: uint8 NHWC in (build.json's "io", as the build writes it).
RAW_IO = {
    "input": {"name": "images", "dtype": "uint8", "shape": [-1, 32, 32, 3]},
    "output": {"name": "logits", "dtype": "float16", "shape": [-1, 10]},
}


def _parse(text: str) -> Any:
    model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2")
    from google.protobuf import text_format

    return text_format.Parse(text, model_config_pb2.ModelConfig())


def _dtype_name(config_enum: int) -> str:
    from tritonclient.grpc import model_config_pb2

    return model_config_pb2.DataType.Name(config_enum)


def _fake_engine(folder: Path, precision: str, io: dict[str, Any] | None) -> bytes:
    """A built engine's folder as the build stage writes it, with a dummy plan."""
    folder.mkdir(parents=True)
    plan = f"not a real plan ({precision})".encode()
    (folder / "model.engine").write_bytes(plan)
    build = {"status": "built", "precision": precision, "profiles": PROFILES, "fingerprint": FINGERPRINT}
    build["onnx_sha256"] = "0" * 64
    if io is not None:
        build["io"] = io
    (folder / "build.json").write_text(json.dumps(build))
    return plan


def _skipped_engine(folder: Path, precision: str) -> None:
    folder.mkdir(parents=True)
    reason = "TensorRT not importable (No module named 'tensorrt')"
    (folder / "build.json").write_text(json.dumps({"status": "skipped", "precision": precision, "reason": reason}))


def _ort_io(path: Path) -> tuple[list[tuple[str, str, list[int]]], list[tuple[str, str, list[int]]]]:
    """(name, Triton type, dims without batch) of an ONNX model's inputs and outputs, as ONNX
    Runtime reads them: an independent reading of the graph."""
    import onnxruntime as ort

    types = {"tensor(float)": "TYPE_FP32", "tensor(float16)": "TYPE_FP16", "tensor(uint8)": "TYPE_UINT8"}
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def rows(values: list[Any]) -> list[tuple[str, str, list[int]]]:
        return [(v.name, types[v.type], [d if isinstance(d, int) else -1 for d in v.shape[1:]]) for v in values]

    return rows(sess.get_inputs()), rows(sess.get_outputs())


def _io(config: Any) -> tuple[list[tuple[str, str, list[int]]], list[tuple[str, str, list[int]]]]:
    def rows(tensors: Any) -> list[tuple[str, str, list[int]]]:
        return [(t.name, _dtype_name(t.data_type), list(t.dims)) for t in tensors]

    return rows(config.input), rows(config.output)


@pytest.fixture(scope="module")
def repository(prepared_tiny: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, bytes]:
    """The package stage run on the tiny project's ONNX models, a fake built FP32 engine and
    skipped FP16/INT8 engines: (repository, report, the fake plan's bytes)."""
    tmp = tmp_path_factory.mktemp("package")
    plan = _fake_engine(tmp / "engines" / "fp32", "fp32", RAW_IO)
    for precision in ("fp16", "int8"):
        _skipped_engine(tmp / "engines" / precision, precision)
    args = ["--params", str(prepared_tiny / "params.yaml"), "--onnx-dir", f"artifacts/{MODEL}/onnx"]
    args += ["--engines-dir", str(tmp / "engines"), "--out", str(tmp / "repo"), "--report", str(tmp / "package.json")]
    run_stage("package", [*args, "--meta", "data/prepared/meta.json"], prepared_tiny)
    return tmp / "repo", tmp / "package.json", plan


def test_every_model_names_its_classes_in_a_label_file(
    prepared_tiny: Path, repository: tuple[Path, Path, bytes]
) -> None:
    repo, _, _ = repository
    classes = json.loads((prepared_tiny / "data" / "prepared" / "meta.json").read_text())["classes"]
    for folder in repo.iterdir():
        assert (folder / "labels.txt").read_text().splitlines() == classes
        config = _parse((folder / "config.pbtxt").read_text())
        assert [o.label_filename for o in config.output] == ["labels.txt"]


def test_every_config_parses_with_tritons_schema(repository: tuple[Path, Path, bytes]) -> None:
    repo, _, _ = repository
    names = sorted(p.name for p in repo.iterdir())
    assert names == [f"{MODEL}_fp32", f"{MODEL}_fp32_onnx", f"{MODEL}_int8_onnx"]
    for name in names:
        config = _parse((repo / name / "config.pbtxt").read_text())
        assert config.name == name
        assert config.max_batch_size == 1024  # the largest build profile max
        assert list(config.dynamic_batching.preferred_batch_size) == [256]  # opt sizes above 1
        assert config.dynamic_batching.max_queue_delay_microseconds == 500
        assert len(config.instance_group) == 1 and config.instance_group[0].count == 1


def test_onnx_configs_match_the_models_real_io(prepared_tiny: Path, repository: tuple[Path, Path, bytes]) -> None:
    repo, _, _ = repository
    for precision in ("fp32", "int8"):
        folder = repo / f"{MODEL}_{precision}_onnx"
        config = _parse((folder / "config.pbtxt").read_text())
        source = prepared_tiny / "artifacts" / MODEL / "onnx" / f"{precision}.onnx"
        assert config.platform == "onnxruntime_onnx"
        assert _io(config) == _ort_io(source)
        assert _io(config) == ([("input", "TYPE_FP32", [3, 32, 32])], [("logits", "TYPE_FP32", [10])])
        assert (folder / "1" / "model.onnx").read_bytes() == source.read_bytes()
        from tritonclient.grpc import model_config_pb2

        assert config.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_CPU  # device: cpu
        assert config.parameters["precision"].string_value == precision


def test_engine_config_matches_the_recorded_io_and_fingerprint(repository: tuple[Path, Path, bytes]) -> None:
    from tritonclient.grpc import model_config_pb2

    repo, _, plan = repository
    folder = repo / f"{MODEL}_fp32"
    text = (folder / "config.pbtxt").read_text()
    config = _parse(text)
    assert config.platform == "tensorrt_plan"
    assert _io(config) == ([("images", "TYPE_UINT8", [32, 32, 3])], [("logits", "TYPE_FP16", [10])])
    group = config.instance_group[0]
    assert group.kind == model_config_pb2.ModelInstanceGroup.KIND_GPU
    assert list(group.profile) == ["0", "1"]  # without it Triton uses profile 0 only (batch 1)
    params = {k: v.string_value for k, v in config.parameters.items()}
    assert params["built_for_gpu"] == "NVIDIA H200"
    assert params["built_for_compute_capability"] == "9.0"
    assert params["built_for_tensorrt"] == "8.6.0"
    assert "NVIDIA H200 (compute capability 9.0), TensorRT 8.6.0" in text.split("\nname:")[0]
    assert (folder / "1" / "model.plan").read_bytes() == plan


def test_report_says_what_was_left_out_and_why(repository: tuple[Path, Path, bytes]) -> None:
    _, report, _ = repository
    entries = {e["name"]: e for e in json.loads(report.read_text())["models"]}
    assert json.loads(report.read_text())["packaged"] == 3
    for precision in ("fp16", "int8"):
        engine = entries[f"{MODEL}_{precision}"]
        assert engine["status"] == "skipped" and "TensorRT not importable" in engine["reason"]
    assert entries[f"{MODEL}_fp16_onnx"]["status"] == "skipped"
    assert "CUDA" in entries[f"{MODEL}_fp16_onnx"]["reason"]


def test_package_replaces_the_repository_as_a_whole(prepared_tiny: Path, tmp_path: Path) -> None:
    """A model left out now is not left over from an earlier run."""
    engines = tmp_path / "engines"
    _fake_engine(engines / "fp32", "fp32", RAW_IO)
    for precision in ("fp16", "int8"):
        _skipped_engine(engines / precision, precision)
    repo = tmp_path / "repo"
    (repo / "stale_model" / "1").mkdir(parents=True)
    args = ["--params", str(prepared_tiny / "params.yaml"), "--onnx-dir", f"artifacts/{MODEL}/onnx"]
    args += ["--engines-dir", str(engines), "--out", str(repo), "--report", str(tmp_path / "r.json")]
    run_stage("package", args, prepared_tiny)
    assert not (repo / "stale_model").exists() and (repo / f"{MODEL}_fp32" / "config.pbtxt").is_file()


def test_an_engine_without_recorded_io_is_a_clear_error(prepared_tiny: Path, tmp_path: Path) -> None:
    engines = tmp_path / "engines"
    _fake_engine(engines / "fp32", "fp32", None)
    for precision in ("fp16", "int8"):
        _skipped_engine(engines / precision, precision)
    args = ["--params", str(prepared_tiny / "params.yaml"), "--onnx-dir", f"artifacts/{MODEL}/onnx"]
    args += ["--engines-dir", str(engines), "--out", str(tmp_path / "repo"), "--report", str(tmp_path / "r.json")]
    proc = run_stage("package", args, prepared_tiny, check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "records no engine I/O" in proc.stderr and "dvc repro -f build" in proc.stderr
    assert not (tmp_path / "repo").exists()


# -- the spec itself ------------------------------------------------------------------------


def test_batching_takes_the_largest_max_and_the_opt_sizes_above_one() -> None:
    assert batching(PROFILES) == (1024, (256,))
    assert batching([{"min": 1, "opt": 1, "max": 1}]) == (1, ())
    three = [*PROFILES, {"min": 2, "opt": 16, "max": 64}]
    assert batching(three) == (1024, (16, 256))


def test_engine_io_needs_a_dynamic_batch_dimension() -> None:
    build = {"io": {**RAW_IO, "input": {"name": "x", "dtype": "float32", "shape": [8, 3, 32, 32]}}}
    with pytest.raises(InputFileError, match="dynamic batch dimension"):
        engine_io(build, "b.json")


def test_onnx_io_reads_the_graph(prepared_tiny: Path) -> None:
    inputs, outputs = onnx_io(prepared_tiny / "artifacts" / MODEL / "onnx" / "int8.onnx")
    assert inputs == (TensorSpec("input", "float32", (3, 32, 32)),)
    assert outputs == (TensorSpec("logits", "float32", (10,)),)


def test_spec_json_round_trip_and_pbtxt_escaping() -> None:
    build = {"status": "built", "precision": "int8", "profiles": PROFILES, "io": RAW_IO}
    build["fingerprint"] = {**FINGERPRINT, "gpu": 'GPU "quoted" \\ name'}
    spec = engine_spec("m_int8", build, "build.json", 250)
    assert ModelSpec.from_json(json.loads(json.dumps(spec.to_json()))) == spec
    config = _parse(to_pbtxt(spec, ["a comment"]))
    assert config.parameters["built_for_gpu"].string_value == 'GPU "quoted" \\ name'
    assert config.dynamic_batching.max_queue_delay_microseconds == 250
