"""stages/export.py and stages/calibrate.py on the artifacts of the ``prepared_tiny`` project."""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from stages import calibrate, export
from stages.lib.core.config import load_params
from stages.lib.core.errors import OnnxModelError, ParityError
from stages.lib.data import inputs
from stages.lib.data import prepared as data
from stages.lib.model.networks import load_checkpoint
from stages.lib.quant import quantize as quantize_lib
from tests.conftest import TINY, run_stage, write_params

M = "artifacts/resnet18_cifar"
CALIBRATE_ARGS = [  # the calibrate stage's arguments in a project copy, as dvc.yaml gives them
    "--onnx",
    f"{M}/onnx/fp32.onnx",
    "--calib",
    "data/prepared/calib.npz",
    "--out",
    f"{M}/onnx/int8.onnx",
    "--ranges",
    f"{M}/calibration/ranges.json",
    "--report",
    "reports/calibrate.json",
]


# -- helpers ---------------------------------------------------------------------------------


def _session(path: Path | bytes) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(
        path if isinstance(path, bytes) else str(path), opts, providers=["CPUExecutionProvider"]
    )


def _run(path: Path | bytes, x: np.ndarray) -> np.ndarray:
    return _session(path).run(["logits"], {"input": x})[0]


def _dims(value_info) -> list:  # noqa: ANN001
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


def _graph_maps(model: onnx.ModelProto):
    g = model.graph
    producer = {o: n for n in g.node for o in n.output}
    consumers: dict[str, list] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    inits = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    return producer, consumers, inits


@pytest.fixture(scope="module")
def tiny(prepared_tiny: Path):
    p = load_params(prepared_tiny / "params.yaml")
    test = data.load_split(prepared_tiny / "data/prepared/test.npz")
    x = inputs.preprocess(test.images, p.data.mean, p.data.std, p.model.image_size)
    return prepared_tiny, p, test, x


@pytest.fixture(scope="module")
def int8_model(prepared_tiny: Path) -> onnx.ModelProto:
    return onnx.load(str(prepared_tiny / M / "onnx/int8.onnx"))


# -- export ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["fp32.onnx", "fp16.onnx"])
def test_exported_models_are_valid_with_named_dynamic_io(prepared_tiny: Path, name: str) -> None:
    path = prepared_tiny / M / "onnx" / name
    onnx.checker.check_model(str(path), full_check=True)
    export.check_onnx(path)  # the project's own check agrees
    model = onnx.load(str(path))
    opset = {o.domain: o.version for o in model.opset_import}
    assert opset.get("", opset.get("ai.onnx", 0)) >= 17
    assert [i.name for i in model.graph.input] == ["input"]
    assert [o.name for o in model.graph.output] == ["logits"]
    in_dims, out_dims = _dims(model.graph.input[0]), _dims(model.graph.output[0])
    assert isinstance(in_dims[0], str) and in_dims[0], "batch axis must be symbolic"
    assert in_dims[1:] == [3, 32, 32]
    assert isinstance(out_dims[0], str) and out_dims[1:] == [10]
    # float32 at the graph boundary for both (FP16 keeps its I/O types)
    assert model.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert model.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT


@pytest.mark.parametrize("name", ["fp32.onnx", "fp16.onnx", "int8.onnx"])
def test_onnx_runtime_runs_batch_1_and_3(tiny, name: str) -> None:
    root, _, _, x = tiny
    sess = _session(root / M / "onnx" / name)
    one = sess.run(["logits"], {"input": x[:1]})[0]
    three = sess.run(["logits"], {"input": x[:3]})[0]
    assert one.shape == (1, 10) and three.shape == (3, 10)
    assert one.dtype == np.float32 and three.dtype == np.float32
    # batching does not change per-image results
    np.testing.assert_allclose(three[:1], one, rtol=1e-4, atol=1e-4)


def test_fp32_onnx_matches_pytorch_checkpoint(tiny) -> None:
    root, p, _, x = tiny
    model, meta = load_checkpoint(root / M / "checkpoint.pt", p.model)
    assert meta["model"] == "resnet18_cifar"
    with torch.no_grad():
        want = model(torch.from_numpy(x[:8])).numpy()
    got = _run(root / M / "onnx/fp32.onnx", x[:8])
    assert np.abs(want).max() > 1.0, "logits should not be trivially small"
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-3)
    # the stage's own report records the same parity
    report = json.loads((root / "reports/export.json").read_text())
    assert report["fp32_parity"]["top1_agreement"] == 1.0
    assert report["fp32_parity"]["max_abs_diff"] < 1e-3
    assert report["fp32_parity"]["images"] == 64  # export.parity_images in TINY
    assert report["fp16_parity"]["status"] == "skipped"


def test_fp16_onnx_has_fp16_weights_and_close_outputs(tiny) -> None:
    root, _, _, x = tiny
    model = onnx.load(str(root / M / "onnx/fp16.onnx"))
    float_types = Counter(
        t.data_type
        for t in model.graph.initializer
        if t.data_type in (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE)
    )
    assert float_types[TensorProto.FLOAT16] > 0
    assert float_types[TensorProto.FLOAT] == 0 and float_types[TensorProto.DOUBLE] == 0
    conv_weights = {n.input[1] for n in model.graph.node if n.op_type == "Conv"}
    by_name = {t.name: t for t in model.graph.initializer}
    assert conv_weights and all(by_name[w].data_type == TensorProto.FLOAT16 for w in conv_weights if w in by_name)
    # half the size of fp32.onnx, roughly
    ratio = (root / M / "onnx/fp16.onnx").stat().st_size / (root / M / "onnx/fp32.onnx").stat().st_size
    assert 0.45 < ratio < 0.55
    # nodes are in topological order (onnx.checker passes; every input is defined before use)
    seen = {i.name for i in model.graph.input} | set(by_name) | {""}
    for node in model.graph.node:
        assert all(i in seen for i in node.input), node.name
        seen.update(node.output)
    ref = _run(root / M / "onnx/fp32.onnx", x[:16])
    got = _run(root / M / "onnx/fp16.onnx", x[:16])
    np.testing.assert_allclose(got, ref, rtol=0, atol=0.02 * np.abs(ref).max())


def test_reference_logits_are_ort_fp32_on_first_test_images(tiny) -> None:
    root, _, _, x = tiny
    ref = np.load(root / M / "reference_logits.npy")
    assert ref.dtype == np.float32 and ref.shape == (128, 10)  # export.reference_images
    np.testing.assert_allclose(ref, _run(root / M / "onnx/fp32.onnx", x[:128]), rtol=0, atol=1e-4)


def test_compare_within_tolerance_returns_stats() -> None:
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(6, 10)).astype(np.float32)
    got = ref + np.float32(1e-4)
    got[2, 3] += 4e-4
    out = export.compare(ref, got, atol=1e-3, rtol=1e-3, what="x")
    assert out["max_abs_diff"] == pytest.approx(5e-4, rel=1e-3)
    assert out["top1_agreement"] == 1.0
    assert out["images"] == 6


def test_compare_agreement_counts_argmax_flips_within_tolerance() -> None:
    ref = np.array([[1.0, 0.9999], [0.0, 1.0]], np.float32)
    got = np.array([[0.9999, 1.0], [0.0, 1.0]], np.float32)  # tiny diff, but class flips
    out = export.compare(ref, got, atol=1e-3, rtol=0, what="x")
    assert out["top1_agreement"] == 0.5


def test_compare_lists_every_mismatching_image() -> None:
    rng = np.random.default_rng(1)
    ref = rng.normal(size=(8, 10)).astype(np.float32)
    got = ref.copy()
    got[1, 0] += 0.5
    got[6] += 2.0  # whole image off
    with pytest.raises(ParityError) as err:
        export.compare(ref, got, atol=1e-3, rtol=1e-3, what="ORT vs torch")
    exc = err.value
    assert len(exc.mismatches) == 2
    assert exc.mismatches[0].startswith("image 1: max |diff| 0.5")
    assert exc.mismatches[1].startswith("image 6: max |diff| 2")
    msg = str(exc)
    assert msg.startswith("ORT vs torch (atol=0.001, rtol=0.001): 2 mismatch(es):")
    assert "image 1" in msg and "image 6" in msg and "image 0" not in msg


def test_compare_relative_tolerance_applies_per_element() -> None:
    ref = np.array([[100.0, 1.0]], np.float32)
    ok = np.array([[100.05, 1.0]], np.float32)  # 0.05 <= 1e-3 * 100
    bad = np.array([[100.0, 1.05]], np.float32)  # 0.05 > 1e-3 * 1
    export.compare(ref, ok, atol=0.0, rtol=1e-3, what="x")
    with pytest.raises(ParityError, match="image 0"):
        export.compare(ref, bad, atol=0.0, rtol=1e-3, what="x")


def test_compare_not_strict_counts_instead_of_raising() -> None:
    ref = np.zeros((5, 10), np.float32)
    got = ref.copy()
    got[[0, 3]] += 0.5
    out = export.compare(ref, got, atol=1e-3, rtol=0, what="fp16", strict=False)
    assert out["images_beyond_tolerance"] == 2
    assert out["max_abs_diff"] == pytest.approx(0.5)
    assert out["images"] == 5


def test_compare_many_mismatches_are_summarised() -> None:
    ref = np.zeros((25, 10), np.float32)
    with pytest.raises(ParityError) as err:
        export.compare(ref, ref + 1.0, atol=1e-3, rtol=0, what="x")
    assert len(err.value.mismatches) == 25
    assert "25 mismatch(es)" in str(err.value) and "(+15 more)" in str(err.value)


@pytest.mark.parametrize("content", [b"\x00not an onnx model\xff" * 20, b""])
def test_check_onnx_garbage_names_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "model.onnx"
    path.write_bytes(content)
    with pytest.raises(OnnxModelError) as err:
        export.check_onnx(path)
    assert str(err.value).startswith(f"{path}: fails onnx.checker")
    with pytest.raises(OnnxModelError, match="^shown-name: fails onnx.checker"):
        export.check_onnx(path, name="shown-name")


def test_export_fp32_failure_leaves_no_file(tmp_path: Path, monkeypatch) -> None:
    # when the exported graph fails the checker, nothing is left at the destination
    def refuse(path, name=None):  # noqa: ANN001
        raise OnnxModelError(f"{name}: fails onnx.checker (test)")

    monkeypatch.setattr(export, "check_onnx", refuse)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten()).eval()
    dest = tmp_path / "onnx" / "fp32.onnx"
    with pytest.raises(OnnxModelError, match="fp32.onnx: fails"):
        export.export_fp32(model, 32, 17, "torchscript", dest)
    assert list(dest.parent.iterdir()) == []


# -- calibrate: the Q/DQ model the stage wrote ----------------------------------------------


def test_int8_model_has_qdq_nodes_and_passes_checker(prepared_tiny: Path, int8_model) -> None:
    onnx.checker.check_model(int8_model)
    ops = Counter(n.op_type for n in int8_model.graph.node)
    assert ops["QuantizeLinear"] > 0 and ops["QuantizeLinear"] == ops["DequantizeLinear"]
    report = json.loads((prepared_tiny / "reports/calibrate.json").read_text())
    assert report["quantize_linear_nodes"] == ops["QuantizeLinear"]
    assert report["dequantize_linear_nodes"] == ops["DequantizeLinear"]
    # the stage calibrates with the method params.yaml configures (conf/calibrate/default.yaml)
    method = load_params(prepared_tiny / "params.yaml").calibrate.method
    assert report["images"] == 128 and report["method"] == method
    assert report["attempts"][0]["method"] == method
    assert report["from_split"] == "train"
    assert [i.name for i in int8_model.graph.input] == ["input"]
    assert [o.name for o in int8_model.graph.output] == ["logits"]
    # the stage checks its Q/DQ model against FP32 on the calibration images it used
    assert report["agreement_images"] == 128 and 0.0 <= report["qdq_top1_agreement_vs_fp32"] <= 1.0
    assert report["float_convs"] == 0 and report["float_nodes"] == []


def test_int8_zero_points_are_int8_zeros(int8_model) -> None:
    _, _, inits = _graph_maps(int8_model)
    qdq = [n for n in int8_model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert qdq
    for node in qdq:
        assert len(node.input) == 3, f"{node.name}: zero point must be explicit"
        zp = inits[node.input[2]]
        assert zp.dtype == np.int8, f"{node.input[2]}: {zp.dtype}"
        assert not zp.any(), f"{node.input[2]}: symmetric quantization needs zero points of 0"


def test_every_conv_reads_quantized_input_and_per_channel_weights(int8_model) -> None:
    producer, _, inits = _graph_maps(int8_model)
    convs = [n for n in int8_model.graph.node if n.op_type == "Conv"]
    assert len(convs) == 20  # resnet18: stem + 16 block convs + 3 downsample convs
    for conv in convs:
        act, weight = producer[conv.input[0]], producer[conv.input[1]]
        assert act.op_type == "DequantizeLinear", conv.name
        assert weight.op_type == "DequantizeLinear", conv.name
        q = producer[weight.input[0]]
        assert q.op_type == "QuantizeLinear"
        w = inits[q.input[0]]  # float weights + Q/DQ pair
        scale = inits[weight.input[1]]
        assert w.ndim == 4 and scale.shape == (w.shape[0],), "per-channel: one scale per output channel"
        assert scale.size > 1 and (scale > 0).all()
        axis = {a.name: a.i for a in weight.attribute}.get("axis", 1)
        assert axis == 0
        # scale = amax / 127 per output channel
        amax = np.abs(w).reshape(w.shape[0], -1).max(1)
        np.testing.assert_allclose(scale, amax / 127, rtol=1e-5)
        # activation scales are per-tensor
        assert inits[act.input[1]].size == 1
    gemm = [n for n in int8_model.graph.node if n.op_type == "Gemm"]
    assert len(gemm) == 1 and producer[gemm[0].input[0]].op_type != "DequantizeLinear"


def _adds(int8_model):
    producer, consumers, _ = _graph_maps(int8_model)
    out = []
    for node in int8_model.graph.node:
        if node.op_type == "Add":
            out.append((node, [producer[i] for i in node.input]))
    assert len(out) == 8  # 8 basic blocks
    return out, consumers


def test_identity_block_adds_read_a_quantized_skip(int8_model) -> None:
    adds, consumers = _adds(int8_model)
    shared_skips = 0
    for node, srcs in adds:
        kinds = [s.op_type for s in srcs]
        assert "Conv" in kinds, f"{node.name}: the main branch ends in a Conv"
        other = srcs[1] if srcs[0].op_type == "Conv" else srcs[0]
        if other.op_type == "DequantizeLinear" and any(c.op_type == "Conv" for c in consumers[other.output[0]]):
            # the skip DQ is the one feeding the block's first conv (TensorRT's conv+add pattern)
            shared_skips += 1
    assert shared_skips == 5  # the identity blocks: layer1.0, layer1.1, layer2.1, layer3.1, layer4.1


def test_every_add_has_one_conv_and_one_dequantized_input(int8_model) -> None:
    adds, _ = _adds(int8_model)
    bad = [n.name for n, srcs in adds if sorted(s.op_type for s in srcs) != ["Conv", "DequantizeLinear"]]
    assert bad == [], f"Add nodes without a Q/DQ skip input: {bad}"


def test_ranges_json(prepared_tiny: Path, int8_model) -> None:
    p = load_params(prepared_tiny / "params.yaml")
    ranges = json.loads((prepared_tiny / M / "calibration/ranges.json").read_text())
    assert ranges["method"] == p.calibrate.method
    assert ranges["percentile"] == (p.calibrate.percentile if p.calibrate.method == "percentile" else None)
    assert ranges["images"] == 128  # calibrate.num_images in TINY
    assert ranges["symmetric"] is True
    tensors = ranges["tensors"]
    assert "input" in tensors and len(tensors) > 20
    for name, r in tensors.items():
        assert set(r) == {"min", "max", "amax"}, name
        assert r["min"] <= r["max"], name
        assert r["amax"] == max(abs(r["min"]), abs(r["max"])), name
    # the Q/DQ model's activation scales come from these ranges: scale = amax / 127
    _, _, inits = _graph_maps(int8_model)
    q_input = next(n for n in int8_model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "input")
    assert float(inits[q_input.input[1]]) == pytest.approx(tensors["input"]["amax"] / 127, rel=1e-5)
    # synthetic images normalised with mean 0.5 / std 0.25 lie in [-2, 2]
    assert tensors["input"]["min"] >= -2.0 - 1e-5 and tensors["input"]["max"] <= 2.0 + 1e-5
    if p.calibrate.method == "minmax":
        # MinMax (symmetric): the input's range is [-amax, amax] with amax the largest |value|
        # over every calibration image the stage used
        calib = data.load_split(prepared_tiny / "data/prepared/calib.npz")
        x = np.concatenate(calibrate.calibration_batches(p, calib, inputs.float_input(32)))
        assert len(x) == ranges["images"]
        assert tensors["input"]["amax"] == pytest.approx(float(np.abs(x).max()), rel=1e-6)
        assert tensors["input"]["min"] == pytest.approx(-tensors["input"]["max"], rel=1e-6)


def test_calibrate_stage_missing_onnx_is_one_error_line(prepared_tiny: Path, project: Path) -> None:
    (project / "data/prepared").mkdir(parents=True)
    (project / "data/prepared/calib.npz").write_bytes((prepared_tiny / "data/prepared/calib.npz").read_bytes())
    proc = run_stage("calibrate", CALIBRATE_ARGS, project, check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        f"error: calibrate: {M}/onnx/fp32.onnx is missing: run `dvc repro export`"
    ]
    assert not (project / M).exists()


# -- calibrate: every method, on a model whose predictions vary ---------------------------------


@pytest.fixture(scope="module")
def calib_batches(tiny) -> list[np.ndarray]:
    """Three batches of 32 calibration images (96 images, the ranges the method tests compare)."""
    root, p, _, _ = tiny
    calib = data.load_split(root / "data/prepared/calib.npz")
    p5 = dataclasses.replace(p, calibrate=dataclasses.replace(p.calibrate, num_images=96))
    batches = calibrate.calibration_batches(p5, calib, inputs.float_input(32))
    assert [len(b) for b in batches] == [32] * 3
    return batches


@pytest.fixture(scope="module")
def centroid_model(tiny, calib_batches, tmp_path_factory) -> Path:
    """fp32.onnx with its classifier replaced by a nearest-class-mean head on the calibration
    images, so predictions spread over the classes and follow the (learnable) synthetic labels;
    the random-init checkpoint alone predicts one class for every image."""
    root, _, _, _ = tiny
    calib = data.load_split(root / "data/prepared/calib.npz")
    model = onnx.load(str(root / M / "onnx/fp32.onnx"))
    gemm = next(n for n in model.graph.node if n.op_type == "Gemm")
    feat_name = gemm.input[0]
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.append(helper.make_tensor_value_info(feat_name, TensorProto.FLOAT, None))
    x = np.concatenate(calib_batches)
    feats = _session(probe.SerializeToString()).run([feat_name], {"input": x})[0]
    labels = calib.labels[: len(feats)]
    centroids = np.stack([feats[labels == k].mean(0) for k in range(10)])
    w, b = 2 * centroids, -(centroids**2).sum(1)
    scale = 1.0 / (feats @ w.T + b).std()
    for t in model.graph.initializer:
        if t.name == gemm.input[1]:
            t.CopyFrom(numpy_helper.from_array((w * scale).astype(np.float32), t.name))
        elif t.name == gemm.input[2]:
            t.CopyFrom(numpy_helper.from_array((b * scale).astype(np.float32), t.name))
    path = tmp_path_factory.mktemp("centroid") / "fp32.onnx"
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def ranges_by_method(tiny, centroid_model, calib_batches) -> dict:
    _, p, _, _ = tiny
    out = {}
    for method in ("entropy", "minmax", "percentile"):
        c = dataclasses.replace(p.calibrate, method=method)
        out[method] = quantize_lib.compute_ranges(centroid_model, calib_batches, c, ["CPUExecutionProvider"])
    return out


@pytest.fixture(scope="module")
def true_amax(centroid_model, calib_batches, tmp_path_factory) -> dict[str, float]:
    """max |x| per tensor over every calibration batch: ORT's MinMax calibrator called directly,
    without the project's max_intermediate_outputs option."""
    from onnxruntime.quantization import CalibrationMethod
    from onnxruntime.quantization.calibrate import create_calibrator

    aug = tmp_path_factory.mktemp("minmax") / "augmented.onnx"
    cal = create_calibrator(
        centroid_model,
        None,
        augmented_model_path=str(aug),
        calibrate_method=CalibrationMethod.MinMax,
        providers=["CPUExecutionProvider"],
        extra_options={"symmetric": True},
    )
    cal.collect_data(quantize_lib.Reader("input", calib_batches))
    out = _amax(cal.compute_data())
    assert out["input"] == pytest.approx(float(np.abs(np.concatenate(calib_batches)).max()))
    return out


def _amax(tensors) -> dict[str, float]:  # noqa: ANN001
    return {
        k: max(abs(float(np.ravel(v.range_value[0])[0])), abs(float(np.ravel(v.range_value[1])[0])))
        for k, v in tensors.data.items()
    }


@pytest.mark.parametrize("method", ["entropy", "minmax", "percentile"])
def test_every_method_gives_a_qdq_model_that_agrees_with_fp32(
    tiny, centroid_model, ranges_by_method, tmp_path: Path, method: str
) -> None:
    _, p, test, x = tiny
    c = dataclasses.replace(p.calibrate, method=method)
    tensors = ranges_by_method[method]
    doc = quantize_lib.ranges_to_json(tensors, c, 96)
    assert doc["method"] == method and doc["images"] == 96
    assert doc["percentile"] == (c.percentile if method == "percentile" else None)
    dest = tmp_path / "int8.onnx"
    counts = quantize_lib.quantize(centroid_model, tensors, c, dest)
    assert counts["QuantizeLinear"] == counts["DequantizeLinear"] > 20
    assert sorted(f.name for f in tmp_path.iterdir()) == ["int8.onnx"]
    onnx.checker.check_model(str(dest))

    ref = _run(centroid_model, x)
    got = _run(dest, x)
    assert got.shape == ref.shape and np.isfinite(got).all()
    ref_pred = ref.argmax(1)
    # the reference is meaningful: predictions spread over the classes and match the labels
    assert len(np.unique(ref_pred)) >= 8
    assert (ref_pred == test.labels).mean() > 0.9
    agreement = (got.argmax(1) == ref_pred).mean()
    if method == "entropy":
        # Real (TensorRT-style, 2048 -> 128 bins) entropy calibration clips the ReLU ranges of
        # this stand-in nearest-class-mean model hard, so INT8 agreement falls (to ~0.61): require
        # ranges no wider than MinMax's, some strictly narrower, and agreement well above chance.
        en, mm = _amax(tensors), _amax(ranges_by_method["minmax"])
        assert set(en) == set(mm)
        wider = [k for k in mm if en[k] > mm[k] * (1 + 1e-6)]
        assert not wider, f"entropy ranges wider than minmax: {wider}"
        assert any(en[k] < 0.99 * mm[k] for k in mm), "entropy clipped no tensor"
        assert agreement > 0.3, f"entropy: INT8 top-1 agreement with FP32 only {agreement:.3f}"
    else:
        assert agreement > 0.9, f"{method}: INT8 top-1 agreement with FP32 only {agreement:.3f}"
        assert np.abs(got - ref).max() < 0.25 * np.abs(ref).max()


def test_float_nodes_keep_the_matching_convs_and_their_skips_out_of_int8(
    tiny, centroid_model, ranges_by_method, tmp_path: Path
) -> None:
    _, p, _, x = tiny
    c = dataclasses.replace(p.calibrate, method="minmax", float_nodes=["^/layer4/"])
    counts = quantize_lib.quantize(centroid_model, ranges_by_method["minmax"], c, tmp_path / "int8.onnx")
    model = onnx.load(str(tmp_path / "int8.onnx"))
    producer, _, _ = _graph_maps(model)
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    in_float = [n.name for n in convs if producer[n.input[0]].op_type != "DequantizeLinear"]
    assert in_float and all(name.startswith("/layer4/") for name in in_float)
    assert counts["float_convs"] == len(in_float) == 5  # layer4: 4 block convs + 1 downsample
    for conv in convs:  # weights too: float weights, no Q/DQ pair
        assert (producer.get(conv.input[1]) is not None) == (conv.name not in in_float), conv.name
    # layer4's downsample skip stays float; the other two downsample blocks keep their Q/DQ
    assert counts["skip_qdq_pairs"] == 2
    full = quantize_lib.quantize(
        centroid_model, ranges_by_method["minmax"], dataclasses.replace(c, float_nodes=[]), tmp_path / "all.onnx"
    )
    assert full["skip_qdq_pairs"] == 3 and full["QuantizeLinear"] > counts["QuantizeLinear"]
    # still a valid model that agrees with FP32
    agreement = (_run(tmp_path / "int8.onnx", x).argmax(1) == _run(centroid_model, x).argmax(1)).mean()
    assert agreement > 0.9


def test_quantize_pools_puts_qdq_around_the_average_pool(
    tiny, centroid_model, ranges_by_method, tmp_path: Path
) -> None:
    _, p, _, x = tiny
    tensors = ranges_by_method["minmax"]
    c = dataclasses.replace(p.calibrate, method="minmax", quantize_pools=True)
    counts = quantize_lib.quantize(centroid_model, tensors, c, tmp_path / "int8.onnx")
    model = onnx.load(str(tmp_path / "int8.onnx"))
    producer, consumers, inits = _graph_maps(model)
    pools = [n for n in model.graph.node if n.op_type == "GlobalAveragePool"]
    assert counts["pool_qdq"] == len(pools) == 1
    pool = pools[0]
    # DQ -> pool -> Q -> DQ -> its reader: the pattern TensorRT fuses into an INT8 pool
    dq_in = producer[pool.input[0]]
    assert dq_in.op_type == "DequantizeLinear" and producer[dq_in.input[0]].op_type == "QuantizeLinear"
    (q_out,) = consumers[pool.output[0]]
    assert q_out.op_type == "QuantizeLinear"
    (dq_out,) = consumers[q_out.output[0]]
    assert dq_out.op_type == "DequantizeLinear"
    assert all(n.op_type not in ("QuantizeLinear", "DequantizeLinear") for n in consumers[dq_out.output[0]])
    # scales are the calibrated ranges of the pool's input and output, over 127
    amax = quantize_lib.amax_by_tensor(tensors)
    assert float(inits[dq_in.input[1]]) == pytest.approx(amax[producer[dq_in.input[0]].input[0]] / 127)
    assert float(inits[q_out.input[1]]) == pytest.approx(amax[pool.output[0]] / 127)
    # two pairs more than without, and the model still agrees with FP32
    off = quantize_lib.quantize(
        centroid_model, tensors, dataclasses.replace(c, quantize_pools=False), tmp_path / "o.onnx"
    )
    assert off["pool_qdq"] == 0 and counts["QuantizeLinear"] == off["QuantizeLinear"] + 2
    onnx.checker.check_model(str(tmp_path / "int8.onnx"))
    agreement = (_run(tmp_path / "int8.onnx", x).argmax(1) == _run(centroid_model, x).argmax(1)).mean()
    assert agreement > 0.9


def test_quantize_pools_leaves_a_pool_without_a_range_in_float() -> None:
    from onnx import helper as h

    from stages.lib.quant.onnxgraph import quantize_pools

    nodes = [
        h.make_node("GlobalAveragePool", ["x"], ["p"], name="pool"),
        h.make_node("Flatten", ["p"], ["y"], name="flat"),
    ]
    graph = h.make_graph(
        nodes,
        "g",
        [h.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 3, 3])],
        [h.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])],
    )
    assert quantize_pools(graph, {"x": 1.0}) == []  # no range for the pool's output
    assert [n.op_type for n in graph.node] == ["GlobalAveragePool", "Flatten"]
    assert quantize_pools(graph, {"x": 1.0, "p": 0.5}) == ["pool"]
    ops = [n.op_type for n in graph.node]
    assert ops.count("QuantizeLinear") == ops.count("DequantizeLinear") == 2
    assert ops.index("GlobalAveragePool") < ops.index("Flatten")  # still in topological order


def test_qdq_agreement_is_top1_agreement_on_the_given_batches(
    tiny, centroid_model, calib_batches, tmp_path: Path
) -> None:
    """1.0 against itself; against a model with a permuted classifier, what argmax says."""
    _, p, _, _ = tiny
    assert calibrate.qdq_agreement(centroid_model, centroid_model, calib_batches, p, "cpu") == 1.0
    model = onnx.load(str(centroid_model))
    gemm = next(n for n in model.graph.node if n.op_type == "Gemm")
    for t in model.graph.initializer:
        if t.name in (gemm.input[1], gemm.input[2]):
            arr = numpy_helper.to_array(t)
            t.CopyFrom(numpy_helper.from_array(np.roll(arr, 1, axis=0), t.name))  # class k -> k+1
    onnx.save(model, str(tmp_path / "rolled.onnx"))
    x = np.concatenate(calib_batches)
    expected = (_run(centroid_model, x).argmax(1) == _run(tmp_path / "rolled.onnx", x).argmax(1)).mean()
    got = calibrate.qdq_agreement(centroid_model, tmp_path / "rolled.onnx", calib_batches, p, "cpu")
    assert got == pytest.approx(expected) and got < 0.5


# -- calibrate: the fallback methods (agreement scripted; the stage run in a project copy) -------


def _calibrate_project(prepared_tiny: Path, project: Path, monkeypatch: pytest.MonkeyPatch, *overrides: str) -> Path:
    """``project`` with prepared_tiny's data and FP32 model, no calibrate outputs, tiny params
    plus ``overrides``, as the working directory."""
    for name in ("data/prepared", M):
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(prepared_tiny / name, project / name)
    (project / M / "onnx/int8.onnx").unlink()
    shutil.rmtree(project / M / "calibration")
    write_params(project, [*TINY, *overrides])
    monkeypatch.chdir(project)
    return project


def _script_agreement(monkeypatch: pytest.MonkeyPatch, values: list[float]) -> list[Path]:
    """Make qdq_agreement return ``values`` in turn; returns the Q/DQ paths it was asked about."""
    checked: list[Path] = []
    it = iter(values)

    def fake(fp32_onnx: Path, qdq_onnx: Path, *_: object) -> float:
        checked.append(Path(qdq_onnx))
        assert Path(qdq_onnx).is_file()  # each attempt's model is there when it is checked
        return next(it)

    monkeypatch.setattr(calibrate, "qdq_agreement", fake)
    return checked


def _assert_outputs_of(project: Path, method: str) -> dict:
    """args.out and args.ranges are ``method``'s, and no temporary file is left; the report."""
    assert sorted(f.name for f in (project / M / "onnx").iterdir()) == ["fp16.onnx", "fp32.onnx", "int8.onnx"]
    assert sorted(f.name for f in (project / M / "calibration").iterdir()) == ["ranges.json"]
    ranges = json.loads((project / M / "calibration/ranges.json").read_text())
    assert ranges["method"] == method
    assert ranges["percentile"] == (99.99 if method == "percentile" else None)
    # the Q/DQ model is the kept attempt's: its input scale comes from these ranges
    model = onnx.load(str(project / M / "onnx/int8.onnx"))
    _, _, inits = _graph_maps(model)
    q_input = next(n for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "input")
    assert float(inits[q_input.input[1]]) == pytest.approx(ranges["tensors"]["input"]["amax"] / 127, rel=1e-5)
    report = json.loads((project / "reports/calibrate.json").read_text())
    assert report["method"] == method
    return report


def test_calibrate_with_min_agreement_0_runs_only_the_first_method(
    prepared_tiny: Path, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _calibrate_project(prepared_tiny, project, monkeypatch, "calibrate.min_agreement=0")
    checked = _script_agreement(monkeypatch, [0.0, 1.0, 1.0])
    assert calibrate.main(["--params", "params.yaml", *CALIBRATE_ARGS]) == 0
    assert len(checked) == 1
    report = _assert_outputs_of(project, "minmax")
    assert [a["method"] for a in report["attempts"]] == ["minmax"]
    assert report["attempts"][0]["qdq_top1_agreement_vs_fp32"] == report["qdq_top1_agreement_vs_fp32"] == 0.0
    assert report["calibrate_s"] == report["attempts"][0]["calibrate_s"]


def test_calibrate_stops_at_the_first_method_that_agrees_enough(
    prepared_tiny: Path, project: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    _calibrate_project(prepared_tiny, project, monkeypatch)
    checked = _script_agreement(monkeypatch, [0.5, 0.95, 1.0])
    with caplog.at_level("INFO"):
        assert calibrate.main(["--params", "params.yaml", *CALIBRATE_ARGS]) == 0
    # each attempt wrote and checked its own temporary model next to int8.onnx
    assert len(checked) == 2 and checked[0] != checked[1]
    assert all(c.parent == project / M / "onnx" and c.name != "int8.onnx" for c in checked)
    report = _assert_outputs_of(project, "percentile")
    attempts = report["attempts"]
    assert [set(a) for a in attempts] == [{"method", "qdq_top1_agreement_vs_fp32", "calibrate_s"}] * 2
    assert [(a["method"], a["qdq_top1_agreement_vs_fp32"]) for a in attempts] == [("minmax", 0.5), ("percentile", 0.95)]
    assert all(a["calibrate_s"] >= 0 for a in attempts)
    assert report["qdq_top1_agreement_vs_fp32"] == 0.95
    assert report["calibrate_s"] == pytest.approx(sum(a["calibrate_s"] for a in report["attempts"]), abs=0.011)
    assert report["quantize_linear_nodes"] == report["dequantize_linear_nodes"] > 20
    # percentile clipped the input range that minmax took in full
    minmax = json.loads((prepared_tiny / M / "calibration/ranges.json").read_text())
    kept = json.loads((project / M / "calibration/ranges.json").read_text())
    assert kept["tensors"]["input"]["amax"] < minmax["tensors"]["input"]["amax"]
    infos = [r.getMessage() for r in caplog.records if r.name == "stages.calibrate" and r.levelname == "INFO"]
    assert "calibration minmax: agreement 50.0% with FP32 on 128 images, below 90%, trying percentile" in infos
    assert "calibration percentile: agreement 95.0% with FP32 on 128 images, at least 90%: kept" in infos
    assert not [r for r in caplog.records if r.levelname == "WARNING" and r.name == "stages.calibrate"]


def test_calibrate_tries_every_method_and_keeps_the_best(
    prepared_tiny: Path, project: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    _calibrate_project(prepared_tiny, project, monkeypatch)
    _script_agreement(monkeypatch, [0.6, 0.4, 0.5])
    with caplog.at_level("INFO"):
        assert calibrate.main(["--params", "params.yaml", *CALIBRATE_ARGS]) == 0
    report = _assert_outputs_of(project, "minmax")
    assert [(a["method"], a["qdq_top1_agreement_vs_fp32"]) for a in report["attempts"]] == [
        ("minmax", 0.6),
        ("percentile", 0.4),
        ("entropy", 0.5),
    ]
    assert report["qdq_top1_agreement_vs_fp32"] == 0.6
    infos = [r.getMessage() for r in caplog.records if r.levelname == "INFO"]
    assert "calibration entropy: agreement 50.0% with FP32 on 128 images, below 90%, no fallback left" in infos
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    best_of = "only 60.0% of 128 calibration images (calibrate.min_agreement 90%) with minmax calibration, the best of"
    assert any(f"{best_of} minmax, percentile, entropy" in w for w in warned), warned


def test_calibrate_keeps_the_first_of_equal_attempts(
    prepared_tiny: Path, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # percentile first, so the kept model (percentile's clipped input range) differs from the last one's
    _calibrate_project(
        prepared_tiny, project, monkeypatch, "calibrate.method=percentile", "calibrate.fallback_methods=[minmax]"
    )
    _script_agreement(monkeypatch, [0.7, 0.7])
    assert calibrate.main(["--params", "params.yaml", *CALIBRATE_ARGS]) == 0
    report = _assert_outputs_of(project, "percentile")
    assert [a["method"] for a in report["attempts"]] == ["percentile", "minmax"]


def test_a_fallback_equal_to_the_method_is_not_tried_twice(
    prepared_tiny: Path, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `-S calibrate.method=percentile` with the default fallbacks [percentile, entropy]
    _calibrate_project(prepared_tiny, project, monkeypatch, "calibrate.method=percentile")
    _script_agreement(monkeypatch, [0.5, 0.3, 0.9])
    assert calibrate.main(["--params", "params.yaml", *CALIBRATE_ARGS]) == 0
    report = _assert_outputs_of(project, "percentile")
    assert [a["method"] for a in report["attempts"]] == ["percentile", "entropy"]


def test_calibrate_failure_in_a_fallback_leaves_no_output_and_no_temporary_file(
    prepared_tiny: Path, project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _calibrate_project(prepared_tiny, project, monkeypatch)
    calls = []

    def fake(*args: object) -> float:
        calls.append(args)
        if len(calls) == 2:
            raise OnnxModelError("the percentile Q/DQ model does not run")
        return 0.5

    monkeypatch.setattr(calibrate, "qdq_agreement", fake)
    assert calibrate.main(["--params", "params.yaml", *CALIBRATE_ARGS]) == 1
    assert "the percentile Q/DQ model does not run" in capsys.readouterr().err
    assert sorted(f.name for f in (project / M / "onnx").iterdir()) == ["fp16.onnx", "fp32.onnx"]
    assert not (project / M / "calibration").exists() or not list((project / M / "calibration").iterdir())
    assert not (project / "reports/calibrate.json").exists()


def test_calibrate_warns_when_the_qdq_model_disagrees_with_fp32(
    prepared_tiny: Path, project: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    _calibrate_project(prepared_tiny, project, monkeypatch, "calibrate.fallback_methods=[]")
    monkeypatch.setattr(calibrate, "qdq_agreement", lambda *a: 0.3)
    with caplog.at_level("WARNING"):
        assert calibrate.main(["--params", "params.yaml", *CALIBRATE_ARGS]) == 0
    report = json.loads((project / "reports/calibrate.json").read_text())
    assert report["qdq_top1_agreement_vs_fp32"] == 0.3
    assert [a["method"] for a in report["attempts"]] == ["minmax"]
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("agrees with FP32 on only 30.0% of 128 calibration images" in w for w in warned), warned
    assert any("with minmax calibration, and no calibrate.fallback_methods" in w for w in warned), warned
    assert any("calibrate.float_nodes" in w for w in warned)


def test_entropy_clips_outliers_unlike_minmax(ranges_by_method, true_amax) -> None:
    mm, en = true_amax, _amax(ranges_by_method["entropy"])
    assert set(en) == set(mm)
    assert all(en[k] <= mm[k] * (1 + 1e-6) for k in mm)  # holds either way
    clipped = sum(en[k] < 0.99 * mm[k] for k in mm if mm[k] > 0)
    assert clipped > len(mm) // 4, f"entropy clipped only {clipped} of {len(mm)} tensors"


def _scaled_batches(calib_batches: list[np.ndarray], n: int) -> list[np.ndarray]:
    """n batches of 2 images; the first is scaled up so it alone holds the extreme input."""
    x = np.concatenate(calib_batches)[: 2 * n]
    out = [x[i : i + 2].copy() for i in range(0, 2 * n, 2)]
    out[0] *= np.float32(3.0)
    return out


def test_minmax_uses_every_batch(tiny, calib_batches) -> None:
    root, p, _, _ = tiny
    batches = _scaled_batches(calib_batches, 9)
    c = dataclasses.replace(p.calibrate, method="minmax")
    tensors = quantize_lib.compute_ranges(root / M / "onnx/fp32.onnx", batches, c, ["CPUExecutionProvider"])
    want = float(np.abs(np.concatenate(batches)).max())
    assert _amax(tensors)["input"] == pytest.approx(want, rel=1e-6)


@pytest.mark.parametrize("n", [8])
def test_minmax_with_a_power_of_two_batch_count(tiny, calib_batches, n: int) -> None:
    root, p, _, _ = tiny
    batches = _scaled_batches(calib_batches, n)
    c = dataclasses.replace(p.calibrate, method="minmax")
    tensors = quantize_lib.compute_ranges(root / M / "onnx/fp32.onnx", batches, c, ["CPUExecutionProvider"])
    assert _amax(tensors)["input"] == pytest.approx(float(np.abs(np.concatenate(batches)).max()), rel=1e-6)
