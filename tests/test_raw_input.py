"""Raw-pixel models (export.raw_input) and fp16 graph I/O (export.io_fp16), end to end on the
tiny project: export, calibrate, the runners, evaluate and benchmark follow the model's input."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from stages import benchmark, calibrate, evaluate, export
from stages.lib.core.config import load_params
from stages.lib.core.params import Params
from stages.lib.data import inputs
from stages.lib.data import prepared as data
from stages.lib.quant import onnxgraph
from stages.lib.quant import quantize as quantize_lib
from stages.lib.runners.base import Artifacts
from stages.lib.runners.registry import create_runner
from tests.conftest import TINY, copy_files, run_stage, write_params

M = "artifacts/resnet18_cifar"
PREPROCESSING = ("Cast", "Mul", "Sub", "Div", "Transpose")


def _stage_args(root: Path) -> tuple[list[str], list[str]]:
    """The export and calibrate stages' arguments in ``root``, as dvc.yaml gives them."""
    r, m = str(root), str(root / M)
    exp = ["--params", f"{r}/params.yaml", "--checkpoint", f"{m}/checkpoint.pt", "--test"]
    exp += [f"{r}/data/prepared/test.npz", "--out-dir", f"{m}/onnx", "--reference", f"{m}/reference_logits.npy"]
    cal = ["--params", f"{r}/params.yaml", "--onnx", f"{m}/onnx/fp32.onnx", "--calib", f"{r}/data/prepared/calib.npz"]
    cal += ["--out", f"{m}/onnx/int8.onnx", "--ranges", f"{m}/calibration/ranges.json"]
    return [*exp, "--report", f"{r}/reports/export.json"], [*cal, "--report", f"{r}/reports/calibrate.json"]


def _variant(prepared_tiny: Path, dest: Path, *overrides: str) -> Path:
    """prepared_tiny's data and checkpoint, exported and calibrated again with ``overrides``."""
    for name in ("data/prepared", f"{M}/checkpoint.pt"):
        src = prepared_tiny / name
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, dest / name)
    write_params(dest, [*TINY, *overrides])
    export_args, calibrate_args = _stage_args(dest)
    assert export.main(export_args) == 0
    assert calibrate.main(calibrate_args) == 0
    return dest


@pytest.fixture(scope="module")
def raw(prepared_tiny: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _variant(prepared_tiny, tmp_path_factory.mktemp("raw"), "export.raw_input=true")


@pytest.fixture(scope="module")
def io16(prepared_tiny: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _variant(prepared_tiny, tmp_path_factory.mktemp("io16"), "export.io_fp16=true")


@pytest.fixture(scope="module")
def test_split(prepared_tiny: Path) -> data.Split:
    return data.load_split(prepared_tiny / "data/prepared/test.npz")


def _session(path: Path) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _io_types(path: Path) -> tuple[int, int]:
    g = onnx.load(str(path)).graph
    return g.input[0].type.tensor_type.elem_type, g.output[0].type.tensor_type.elem_type


def _params(root: Path) -> Params:
    return load_params(root / "params.yaml")


# -- raw-pixel models ----------------------------------------------------------------------


@pytest.mark.parametrize("name,cast_to", [("fp32", TensorProto.FLOAT), ("fp16", TensorProto.FLOAT16), ("int8", 1)])
def test_raw_models_take_uint8_nhwc_into_a_cast(raw: Path, name: str, cast_to: int) -> None:
    path = raw / M / "onnx" / f"{name}.onnx"
    onnx.checker.check_model(str(path), full_check=True)
    model = onnx.load(str(path))
    assert onnxgraph.input_spec(model) == inputs.InputSpec("uint8", "NHWC", 32)
    assert _io_types(path) == (TensorProto.UINT8, TensorProto.FLOAT)  # export.io_fp16 is off
    readers = [n for n in model.graph.node if "input" in n.input]
    assert [n.op_type for n in readers] == ["Cast"]  # TensorRT takes a uint8 input only into a Cast
    assert readers[0].attribute[0].i == cast_to


def test_raw_and_float_models_give_the_same_logits(raw: Path, prepared_tiny: Path, test_split: data.Split) -> None:
    p = _params(raw)
    images = test_split.images[:32]
    got = _session(raw / M / "onnx/fp32.onnx").run(["logits"], {"input": images})[0]
    x = inputs.preprocess(images, p.data.mean, p.data.std, p.model.image_size)
    want = _session(prepared_tiny / M / "onnx/fp32.onnx").run(["logits"], {"input": x})[0]
    assert np.abs(want).max() > 1.0
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
    ref_raw, ref_float = (np.load(r / M / "reference_logits.npy") for r in (raw, prepared_tiny))
    np.testing.assert_allclose(ref_raw, ref_float, rtol=0, atol=1e-5)


def test_raw_export_is_checked_against_pytorch_on_float_input(raw: Path) -> None:
    report = json.loads((raw / "reports/export.json").read_text())
    assert report["raw_input"] is True and report["fp32_input"] == "uint8 NHWC 32x32"
    assert report["fp32_parity"]["images"] == 64 and report["fp32_parity"]["max_abs_diff"] < 1e-3
    assert report["fp32_parity"]["top1_agreement"] == 1.0


def _dq_readers(model: onnx.ModelProto) -> Counter:
    """How many times each op type reads a DequantizeLinear output."""
    dq = {o for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    return Counter(n.op_type for n in model.graph.node for i in n.input if i in dq)


def test_calibrate_quantizes_the_raw_model_like_the_float_one(raw: Path, prepared_tiny: Path) -> None:
    raw8, float8 = (onnx.load(str(r / M / "onnx/int8.onnx")) for r in (raw, prepared_tiny))
    assert onnxgraph.input_spec(raw8) == inputs.InputSpec("uint8", "NHWC", 32)
    assert _dq_readers(raw8) == _dq_readers(float8)  # Q/DQ on the same Conv (and skip) inputs
    producer = {o: n for n in raw8.graph.node for o in n.output}
    activations = [n.input[0] for n in raw8.graph.node if n.op_type == "QuantizeLinear" and n.input[0] in producer]
    quantized = [producer[t].op_type for t in activations]  # (weights are initializers)
    assert quantized.count("Transpose") == 1  # conv1's input: the normalised image, in NCHW
    assert not set(quantized) & set(PREPROCESSING[:-1])  # nothing inside the preprocessing
    report = json.loads((raw / "reports/calibrate.json").read_text())
    assert report["input"] == "uint8 NHWC 32x32" and report["images"] == 128
    ranges = json.loads((raw / M / "calibration/ranges.json").read_text())["tensors"]
    float_ranges = json.loads((prepared_tiny / M / "calibration/ranges.json").read_text())["tensors"]
    conv1_in = next(n.output[0] for n in raw8.graph.node if n.op_type == "Transpose")
    assert "input" not in ranges  # uint8 is not calibrated
    assert ranges[conv1_in]["amax"] == pytest.approx(float_ranges["input"]["amax"], rel=1e-6)


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_evaluate_top1_is_unchanged_with_raw_input(
    raw: Path, prepared_tiny: Path, test_split: data.Split, precision: str
) -> None:
    results = {}
    for root in (raw, prepared_tiny):
        p = _params(root)
        artifacts = Artifacts(onnx=root / M / "onnx" / f"{precision}.onnx")
        reference = np.load(root / M / "reference_logits.npy")
        results[root] = evaluate.evaluate_backend("onnxruntime", p, artifacts, precision, test_split, reference, 10)
    got, want = results[raw], results[prepared_tiny]
    assert got["status"] == want["status"] == "ok"
    assert got["top1"] == want["top1"] and got["confusion"] == want["confusion"]
    assert got["runtime"]["input"] == "uint8 NHWC 32x32" and want["runtime"]["input"] == "float32 NCHW 32x32"


def test_benchmark_rows_for_a_raw_onnx_model_record_uint8_input(raw: Path) -> None:
    p = _params(raw)
    with create_runner("onnxruntime", "fp32", Artifacts(onnx=raw / M / "onnx/fp32.onnx"), p) as runner:
        x = runner.bench_batch(4)
        failed: list[dict[str, object]] = []
        rows = benchmark.bench_runner(runner, "onnxruntime", p, failed)
    assert not failed
    assert x.dtype == np.uint8 and x.shape == (4, 32, 32, 3) and x.std() > 50  # random pixels, not zeros
    assert [r["batch_size"] for r in rows] == [1, 4]  # bench.batch_sizes in TINY
    assert {(r["input_dtype"], r["input_layout"]) for r in rows} == {("uint8", "NHWC")}


def test_predict_feeds_a_raw_model_pixels_and_answers_as_for_the_float_one(
    raw: Path, prepared_tiny: Path, test_split: data.Split, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from PIL import Image

    from stages import predict

    for i, img in enumerate(test_split.images[:8]):
        Image.fromarray(img).save(tmp_path / f"{i}.png")
    records = []
    for root in (raw, prepared_tiny):
        out = tmp_path / f"{root.name}.json"
        monkeypatch.chdir(root)
        argv = [str(tmp_path), "--backend", "onnxruntime", "--top-k", "10", "--output", str(out)]
        assert predict.main(argv) == 0
        records.append(json.loads(out.read_text())["predictions"])
    assert len(records[0]) == 8 and records[0] == records[1]


# -- fp16 I/O inside the model ----------------------------------------------------------------


def test_io_fp16_gives_fp16_graph_io_that_onnx_runtime_runs(
    io16: Path, prepared_tiny: Path, test_split: data.Split
) -> None:
    p = _params(io16)
    assert _io_types(io16 / M / "onnx/fp32.onnx") == (TensorProto.FLOAT, TensorProto.FLOAT)
    x = inputs.preprocess(test_split.images[:32], p.data.mean, p.data.std, p.model.image_size)
    want = {
        n: _session(prepared_tiny / M / "onnx" / f"{n}.onnx").run(["logits"], {"input": x})[0] for n in ("fp32", "int8")
    }
    for name, ref in (("fp16", want["fp32"]), ("int8", want["int8"])):
        path = io16 / M / "onnx" / f"{name}.onnx"
        assert _io_types(path) == (TensorProto.FLOAT16, TensorProto.FLOAT16), name
        out = _session(path).run(["logits"], {"input": x.astype(np.float16)})[0]
        assert out.dtype == np.float16
        np.testing.assert_allclose(out.astype(np.float32), ref, rtol=0, atol=0.02 * np.abs(ref).max())
        assert (out.argmax(1) == ref.argmax(1)).mean() >= 0.9
    report = json.loads((io16 / "reports/calibrate.json").read_text())
    assert report["io_fp16"] is True and report["input"] == "float32 NCHW 32x32"  # calibrated on fp32.onnx


def test_onnx_runtime_runner_feeds_an_fp16_io_model_fp16(io16: Path, test_split: data.Split) -> None:
    p = _params(io16)
    with create_runner("onnxruntime", "int8", Artifacts(onnx=io16 / M / "onnx/int8.onnx"), p) as runner:
        assert runner.input_spec() == inputs.InputSpec("float16", "NCHW", 32)
        assert runner.bench_batch(2).dtype == np.float16
        logits = inputs.infer_all(runner, test_split.images[:8], p.data.mean, p.data.std, 4)
    assert logits.dtype == np.float32 and logits.shape == (8, 10)


def test_raw_input_with_io_fp16_keeps_uint8_in_and_returns_fp16(raw: Path, tmp_path: Path, test_split) -> None:
    images = test_split.images[:8]
    export.export_fp16(raw / M / "onnx/fp32.onnx", tmp_path / "fp16.onnx", io_fp16=True)
    int8 = tmp_path / "int8.onnx"
    shutil.copy2(raw / M / "onnx/int8.onnx", int8)
    quantize_lib.with_fp16_io(int8)
    for path, ref in ((tmp_path / "fp16.onnx", "fp32"), (int8, "int8")):
        assert _io_types(path) == (TensorProto.UINT8, TensorProto.FLOAT16)
        out = _session(path).run(["logits"], {"input": images})[0]
        want = _session(raw / M / "onnx" / f"{ref}.onnx").run(["logits"], {"input": images})[0]
        np.testing.assert_allclose(out.astype(np.float32), want, rtol=0, atol=0.02 * np.abs(want).max())


def test_cast_io_to_fp16_puts_casts_at_the_edges_only() -> None:
    h = helper
    graph = h.make_graph(
        [h.make_node("Relu", ["x"], ["r"], name="relu"), h.make_node("Neg", ["r"], ["y"], name="neg")],
        "g",
        [h.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [h.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
    )
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    assert onnxgraph.cast_io_to_fp16(model) == ["x", "y"]
    onnx.checker.check_model(model, full_check=True)
    ops = [(n.op_type, list(n.input), list(n.output)) for n in model.graph.node]
    assert ops == [
        ("Cast", ["x"], ["x_fp32"]),
        ("Relu", ["x_fp32"], ["r"]),
        ("Neg", ["r"], ["y_fp32"]),
        ("Cast", ["y_fp32"], ["y"]),
    ]
    x = np.array([[-1, 2, -3], [4, -5, 6]], np.float16)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_array_equal(sess.run(None, {"x": x})[0], -np.maximum(x, 0))
    assert onnxgraph.cast_io_to_fp16(model) == []  # already fp16: nothing left to change


# -- on the GPU host ----------------------------------------------------------------------------


@pytest.mark.tensorrt
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_raw_engine_takes_uint8_and_matches_onnx_runtime(raw: Path, tmp_path: Path, precision: str) -> None:
    """TensorRT parses the uint8 input into a Cast, builds a uint8-input engine and agrees with
    ONNX Runtime FP32 on the raw model."""
    from tests.test_gpu import GPU_TINY, _evaluate, _run_build

    root = tmp_path / "raw-gpu"
    shutil.copytree(raw, root)
    copy_files(root)  # the stages run from this copy (TRT_PYTHON has no installed project)
    write_params(root, [*GPU_TINY, "export.raw_input=true"])
    run_stage("probe", ["--out", "artifacts/fingerprint.json"], root)
    _run_build(root, precision)
    build = json.loads((root / M / "engines" / precision / "build.json").read_text())
    assert build["input_dtype"] == "uint8" and build["io"]["input"]["shape"][1:] == [32, 32, 3]
    trt = _evaluate(root, precision)["tensorrt"]
    assert trt["status"] == "ok", trt
    detail = json.loads((root / "reports" / f"eval_{precision}.detail.json").read_text())["tensorrt"]
    assert detail["runtime"]["input"] == "uint8 NHWC 32x32"  # the runtime record is in the detail file
    assert trt["top1_agreement_vs_ort_fp32"] >= {"fp32": 0.99, "fp16": 0.98, "int8": 0.9}[precision]
