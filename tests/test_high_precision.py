"""calibrate.high_precision: an INT8 model whose unquantized parts are FP16 (an FP16 base), on
the CPU with ONNX Runtime: the calibrate stage's fp16 int8.onnx, the graph conversion on small
hand-made graphs, the bad value, and what the TensorRT side reads from the file."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import yaml
from onnx import TensorProto, helper, numpy_helper

from stages import calibrate
from stages.lib.core.config import load_params
from stages.lib.core.errors import OnnxModelError
from stages.lib.data import inputs
from stages.lib.data import prepared as data
from stages.lib.quant import onnxgraph
from stages.lib.quant import quantize as quantize_lib
from stages.lib.trt import onnxfile
from tests.conftest import ROOT, TINY, run_stage, write_params
from tests.test_cli_errors import edit_params, one_line_error
from tests.test_export_calibrate import CALIBRATE_ARGS, M

QDQ = ("QuantizeLinear", "DequantizeLinear")


def _session(model: Path | bytes) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(
        model if isinstance(model, bytes) else str(model), opts, providers=["CPUExecutionProvider"]
    )


@pytest.fixture(scope="module")
def fp16_base(prepared_tiny: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """prepared_tiny's data and FP32 model, calibrated again with calibrate.high_precision=fp16."""
    root = tmp_path_factory.mktemp("fp16base")
    for name in ("data/prepared", f"{M}/onnx/fp32.onnx"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if (prepared_tiny / name).is_dir() else shutil.copy2)(prepared_tiny / name, root / name)
    write_params(root, [*TINY, "calibrate.high_precision=fp16"])
    args = [a if a.startswith("--") else str(root / a) for a in CALIBRATE_ARGS]
    assert calibrate.main(["--params", str(root / "params.yaml"), *args]) == 0
    return root


def _typed(model: onnx.ModelProto) -> dict[str, int]:
    """Every tensor's element type (inputs, outputs, initializers and inferred intermediates)."""
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    g = inferred.graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*g.input, *g.output, *g.value_info]}
    types.update({t.name: t.data_type for t in g.initializer})
    return types


# -- the calibrate stage with high_precision=fp16 ----------------------------------------------


def test_fp16_base_is_fp16_between_the_qdq_pairs_and_fp32_at_the_edges(prepared_tiny: Path, fp16_base: Path) -> None:
    model = onnx.load(str(fp16_base / M / "onnx/int8.onnx"))
    onnx.checker.check_model(model, full_check=True)
    assert onnxgraph.default_opset(model) == 19  # FP16 Q/DQ scales need opset 19
    g, types = model.graph, _typed(model)
    assert (g.input[0].type.tensor_type.elem_type, g.output[0].type.tensor_type.elem_type) == (
        TensorProto.FLOAT,
        TensorProto.FLOAT,
    )
    casts = [(n.input[0], n.output[0], n.attribute[0].i) for n in g.node if n.op_type == "Cast"]
    assert casts == [("input", "input_fp16", TensorProto.FLOAT16), ("logits_fp16", "logits", TensorProto.FLOAT)]
    # FP32 only at the edges: every other float tensor, weights and scales included, is FP16
    fp32 = sorted(name for name, t in types.items() if t == TensorProto.FLOAT)
    assert fp32 == ["input", "logits"]
    for node in (n for n in g.node if n.op_type in QDQ):
        assert types[node.input[1]] == TensorProto.FLOAT16 and types[node.input[2]] == TensorProto.INT8
    float_ops = {"DequantizeLinear", "Conv", "Relu", "Add", "GlobalAveragePool", "Flatten", "Gemm"}
    outputs = [o for n in g.node if n.op_type in float_ops for o in n.output]
    assert len(outputs) > 80 and {types[o] for o in outputs} == {TensorProto.FLOAT16}
    # the same Q/DQ model otherwise: the same nodes, plus the two Casts
    fp32_base = onnx.load(str(prepared_tiny / M / "onnx/int8.onnx"))
    assert Counter(n.op_type for n in g.node) == Counter(n.op_type for n in fp32_base.graph.node) + Counter(Cast=2)


def test_fp16_base_keeps_the_calibrated_ranges(prepared_tiny: Path, fp16_base: Path) -> None:
    """Conversion after quantization: the same ranges, and scales that are the FP32 base's in float16."""
    ranges = [json.loads((r / M / "calibration/ranges.json").read_text()) for r in (prepared_tiny, fp16_base)]
    assert ranges[0] == ranges[1]
    scales = []
    for root in (prepared_tiny, fp16_base):
        model = onnx.load(str(root / M / "onnx/int8.onnx"))
        names = {n.input[1] for n in model.graph.node if n.op_type in QDQ}
        scales.append({t.name: numpy_helper.to_array(t) for t in model.graph.initializer if t.name in names})
    assert scales[0].keys() == scales[1].keys() and len(scales[0]) > 20
    for name, scale in scales[0].items():
        assert scales[1][name].dtype == np.float16
        np.testing.assert_array_equal(scales[1][name], scale.astype(np.float16))


def test_onnx_runtime_runs_the_fp16_base_and_agrees_with_the_fp32_base(prepared_tiny: Path, fp16_base: Path) -> None:
    p = load_params(fp16_base / "params.yaml")
    test = data.load_split(prepared_tiny / "data/prepared/test.npz")
    x = inputs.preprocess(test.images, p.data.mean, p.data.std, p.model.image_size)
    got = _session(fp16_base / M / "onnx/int8.onnx").run(["logits"], {"input": x})[0]
    want = _session(prepared_tiny / M / "onnx/int8.onnx").run(["logits"], {"input": x})[0]
    assert got.dtype == np.float32 and got.shape == want.shape == (len(x), 10)
    assert (got.argmax(1) == want.argmax(1)).mean() >= 0.95
    np.testing.assert_allclose(got, want, rtol=0, atol=0.1 * np.abs(want).max())
    assert not np.array_equal(got, want)  # it did compute in FP16


def test_the_report_records_the_base(prepared_tiny: Path, fp16_base: Path) -> None:
    fp16 = json.loads((fp16_base / "reports/calibrate.json").read_text())
    assert (fp16["high_precision"], fp16["onnx_opset"]) == ("fp16", 19)
    assert 0.95 <= fp16["fp16_base_top1_agreement_vs_fp32"] <= 1.0 and fp16["fp16_values_clamped"] >= 0
    fp32 = json.loads((prepared_tiny / "reports/calibrate.json").read_text())
    assert (fp32["high_precision"], fp32["onnx_opset"], fp32["fp16_base_top1_agreement_vs_fp32"]) == ("fp32", 17, None)


def test_fp16_base_with_fp16_io_needs_no_cast(prepared_tiny: Path, tmp_path: Path) -> None:
    """export.io_fp16 with an FP16 base: FP16 throughout, input and output included."""
    path = tmp_path / "int8.onnx"
    shutil.copy2(prepared_tiny / M / "onnx/int8.onnx", path)
    quantize_lib.with_fp16_base(path, fp16_io=True)
    model = onnx.load(str(path))
    assert not [n for n in model.graph.node if n.op_type == "Cast"]
    assert {t for t in _typed(model).values() if t in (TensorProto.FLOAT, TensorProto.FLOAT16)} == {TensorProto.FLOAT16}
    x = np.random.default_rng(0).standard_normal((4, 3, 32, 32)).astype(np.float16)
    assert _session(path).run(["logits"], {"input": x})[0].dtype == np.float16
    # the stage's check feeds it the FP32 model's batches, cast to its fp16 input
    p = load_params(prepared_tiny / "params.yaml")
    test = data.load_split(prepared_tiny / "data/prepared/test.npz")
    batches = [inputs.preprocess(test.images[i : i + 32], p.data.mean, p.data.std, 32) for i in (0, 32)]
    assert calibrate.qdq_agreement(prepared_tiny / M / "onnx/fp32.onnx", path, batches, p, "cpu") >= 0.95


# -- the conversion on hand-made graphs -----------------------------------------------------------


def _raw_qdq_model(scale: float, weight: float) -> onnx.ModelProto:
    """uint8 pixels -> Cast -> Q/DQ -> Mul by a weight -> float32 logits, at opset 17."""
    h = helper
    inits = [
        numpy_helper.from_array(np.array(scale, np.float32), "s"),
        numpy_helper.from_array(np.array(0, np.int8), "z"),
        numpy_helper.from_array(np.array([weight, 1e-9, 0.0], np.float32), "w"),
    ]
    nodes = [
        h.make_node("Cast", ["x"], ["xf"], to=TensorProto.FLOAT),
        h.make_node("QuantizeLinear", ["xf", "s", "z"], ["q"]),
        h.make_node("DequantizeLinear", ["q", "s", "z"], ["dq"]),
        h.make_node("Mul", ["dq", "w"], ["y"]),
    ]
    graph = h.make_graph(
        nodes,
        "g",
        [h.make_tensor_value_info("x", TensorProto.UINT8, [2, 3])],
        [h.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
        inits,
    )
    return h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])


def test_a_uint8_input_stays_and_its_cast_goes_to_fp16(tmp_path: Path) -> None:
    path = tmp_path / "raw.onnx"
    onnx.save(_raw_qdq_model(scale=2.0, weight=3.0), str(path))
    assert quantize_lib.with_fp16_base(path, fp16_io=False) == 1  # the 1e-9 weight
    model = onnx.load(str(path))
    g = model.graph
    assert [(n.op_type, n.attribute[0].i) for n in g.node if n.op_type == "Cast"] == [
        ("Cast", TensorProto.FLOAT16),  # the raw pixels' cast, now to FP16
        ("Cast", TensorProto.FLOAT),  # the output edge
    ]
    assert (g.input[0].type.tensor_type.elem_type, g.output[0].type.tensor_type.elem_type) == (
        TensorProto.UINT8,
        TensorProto.FLOAT,
    )
    x = np.array([[0, 101, 255], [7, 8, 9]], np.uint8)
    y = _session(path).run(None, {"x": x})[0]
    dq = (np.clip(np.round(x / 2.0), -128, 127) * 2.0).astype(np.float16)
    w = np.array([3.0, np.finfo(np.float16).smallest_subnormal, 0.0], np.float16)
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y, (dq * w).astype(np.float32))


def test_values_outside_float16_are_clamped_so_no_scale_becomes_zero() -> None:
    model = _raw_qdq_model(scale=1e-9, weight=1e6)
    assert onnxgraph.float_to_fp16(model) == 3  # the tiny scale, the huge weight, the 1e-9 weight
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    tiny, big = np.finfo(np.float16).smallest_subnormal, np.finfo(np.float16).max
    assert inits["s"].dtype == np.float16 and inits["s"] == tiny  # 1e-9 would round to 0
    np.testing.assert_array_equal(inits["w"], np.array([big, tiny, 0.0], np.float16))
    assert inits["z"].dtype == np.int8


def test_raise_opset_converts_and_says_what_it_cannot() -> None:
    model = onnxgraph.raise_opset(_raw_qdq_model(2.0, 3.0), 19)
    assert onnxgraph.default_opset(model) == 19
    assert onnxgraph.raise_opset(model, 17) is model  # never lowers it
    bad = _raw_qdq_model(2.0, 3.0)
    bad.graph.node.append(helper.make_node("NoSuchOp", ["y"], ["z"]))
    with pytest.raises(OnnxModelError, match="cannot raise the model from opset 17 to 19"):
        onnxgraph.raise_opset(bad, 19)


# -- the bad value, and the stage's params --------------------------------------------------------


def test_a_bad_value_is_one_line_naming_the_valid_ones(project: Path) -> None:
    edit_params(project, lambda r: r["calibrate"].__setitem__("high_precision", "bf16"))
    proc = run_stage("calibrate", CALIBRATE_ARGS, project, check=False)
    one_line_error(proc, "calibrate", "calibrate.high_precision: unknown value 'bf16'; valid: fp32, fp16")


def test_the_calibrate_stage_reruns_when_high_precision_changes() -> None:
    stage = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["calibrate"]
    assert {"calibrate", "calibrate.high_precision"} & set(stage["params"])
    assert yaml.safe_load((ROOT / "params.yaml").read_text())["calibrate"]["high_precision"] == "fp32"


# -- what the TensorRT side reads from the file ----------------------------------------------------


def test_onnxfile_reads_the_opset_and_the_qdq_scale_types(prepared_tiny: Path, fp16_base: Path) -> None:
    """The build's own reader (no onnx package under TensorRT's interpreter) against onnx's."""
    facts = {
        "fp32": onnxfile.read_facts(prepared_tiny / M / "onnx/fp32.onnx"),
        "int8": onnxfile.read_facts(prepared_tiny / M / "onnx/int8.onnx"),
        "int8 fp16 base": onnxfile.read_facts(fp16_base / M / "onnx/int8.onnx"),
    }
    assert facts["fp32"] == onnxfile.OnnxFacts(17, frozenset())
    assert facts["int8"] == onnxfile.OnnxFacts(17, frozenset({TensorProto.FLOAT}))
    assert facts["int8 fp16 base"] == onnxfile.OnnxFacts(19, frozenset({TensorProto.FLOAT16}))
    assert [f.fp16_qdq for f in facts.values()] == [False, False, True]


@pytest.mark.parametrize("content", [b"", b"\x0f\xff\xff", b"\x00not an onnx model\xff" * 20])
def test_onnxfile_on_a_file_that_is_no_model(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.onnx"
    path.write_bytes(content)
    if not content:  # an empty message is a valid (empty) model
        assert onnxfile.read_facts(path) == onnxfile.OnnxFacts(0, frozenset())
        return
    with pytest.raises(OnnxModelError, match="bad.onnx: cannot read it as an ONNX model"):
        onnxfile.read_facts(path)
    with pytest.raises(OnnxModelError, match="missing.onnx: cannot read it"):
        onnxfile.read_facts(tmp_path / "missing.onnx")
