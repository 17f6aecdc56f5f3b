"""stages/lib/report/metrics.py, stages/lib/report/quality.py and the gate stage."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from stages.lib.core.params import QualityParams
from stages.lib.report import metrics
from stages.lib.report.quality import gate_checks
from tests.conftest import run_stage

Q = QualityParams(max_top1_drop=0.5, min_fp32_agreement=0.99)


# -- metrics -----------------------------------------------------------------------------


LABELS = np.array([0, 0, 1, 1, 2, 2, 2, 3])
PREDS = np.array([0, 1, 1, 1, 2, 0, 2, 1])


def test_confusion_matrix_rows_true_columns_predicted() -> None:
    cm = metrics.confusion_matrix(LABELS, PREDS, 5)
    expected = np.array(
        [
            [1, 1, 0, 0, 0],
            [0, 2, 0, 0, 0],
            [1, 0, 2, 0, 0],
            [0, 1, 0, 0, 0],
            [0, 0, 0, 0, 0],
        ]
    )
    np.testing.assert_array_equal(cm, expected)
    assert cm.dtype == np.int64
    assert cm.sum() == len(LABELS)


def test_confusion_matrix_counts_repeated_pairs() -> None:
    # np.add.at, not fancy-index assignment: repeated (label, pred) pairs must all count
    cm = metrics.confusion_matrix(np.array([1, 1, 1]), np.array([0, 0, 0]), 2)
    np.testing.assert_array_equal(cm, [[0, 0], [3, 0]])


def test_top1_percent() -> None:
    assert metrics.top1(LABELS, PREDS) == pytest.approx(100.0 * 5 / 8)
    assert metrics.top1(np.array([3, 3]), np.array([3, 3])) == 100.0
    assert metrics.top1(np.array([3, 3]), np.array([0, 1])) == 0.0


def test_per_class_top1_with_empty_class() -> None:
    cm = metrics.confusion_matrix(LABELS, PREDS, 5)
    np.testing.assert_allclose(metrics.per_class_top1(cm), [50.0, 100.0, 200 / 3, 0.0, 0.0])
    assert not np.isnan(metrics.per_class_top1(cm)).any()  # class 4 has no images: 0, not NaN


def test_agreement_known_values() -> None:
    ref = np.array([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 3.0], [5.0, 0.0, 0.0]])
    got = np.array([[0.9, 0.1, 0.0], [0.0, 1.0, 1.5], [0.0, 0.0, 3.25], [4.0, 0.0, 0.0]])
    a = metrics.agreement(ref, got)
    assert a["top1_agreement"] == pytest.approx(0.75)  # image 1 flips to class 2
    assert a["max_abs_diff"] == pytest.approx(1.5)
    assert a["images"] == 4


def test_agreement_uses_only_common_images() -> None:
    ref = np.array([[1.0, 0.0], [0.0, 1.0]])
    got = np.array([[1.0, 0.5], [1.0, 0.0], [100.0, -100.0]])
    a = metrics.agreement(ref, got)
    assert a["images"] == 2
    assert a["top1_agreement"] == pytest.approx(0.5)
    assert a["max_abs_diff"] == pytest.approx(1.0)


def test_agreement_without_reference_is_nan() -> None:
    a = metrics.agreement(np.zeros((0, 0)), np.ones((4, 10)))
    assert a["images"] == 0
    assert math.isnan(a["top1_agreement"]) and math.isnan(a["max_abs_diff"])


# -- quality.gate_checks -----------------------------------------------------------------


def ok(top1: float, agreement: float = 1.0) -> dict[str, Any]:
    return {"status": "ok", "top1": top1, "top1_agreement_vs_ort_fp32": agreement}


def by_key(checks: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    out = {(c["backend"], c["precision"]): c for c in checks}
    assert len(out) == len(checks), f"duplicate checks: {checks}"
    return out


def test_int8_drop_within_budget_passes() -> None:
    evals = {
        "fp32": {"precision": "fp32", "synthetic_data": True, "onnxruntime": ok(90.0)},
        "int8": {"precision": "int8", "synthetic_data": True, "onnxruntime": ok(89.6)},
    }
    checks = by_key(gate_checks(evals, Q))
    assert set(checks) == {("onnxruntime", "fp32"), ("onnxruntime", "int8")}
    c = checks[("onnxruntime", "int8")]
    assert c["passed"] is True
    assert c["value"] == pytest.approx(0.4)
    assert "onnxruntime fp32" in c["rule"] and "0.5" in c["rule"]


def test_drop_exactly_at_budget_passes() -> None:
    evals = {"fp32": {"onnxruntime": ok(90.0)}, "int8": {"onnxruntime": ok(89.5)}}
    assert by_key(gate_checks(evals, Q))[("onnxruntime", "int8")]["passed"] is True


def test_int8_drop_over_budget_fails_with_both_numbers() -> None:
    evals = {"fp32": {"onnxruntime": ok(91.25)}, "int8": {"onnxruntime": ok(89.5)}}
    c = by_key(gate_checks(evals, Q))[("onnxruntime", "int8")]
    assert c["passed"] is False
    assert c["value"] == pytest.approx(1.75)
    assert "89.50%" in c["detail"] and "91.25%" in c["detail"] and "1.75" in c["detail"]


def test_same_backend_fp32_is_preferred_over_pytorch() -> None:
    evals = {"fp32": {"pytorch": ok(95.0), "onnxruntime": ok(90.0)}, "int8": {"onnxruntime": ok(89.8)}}
    c = by_key(gate_checks(evals, Q))[("onnxruntime", "int8")]
    assert c["passed"] is True
    assert c["value"] == pytest.approx(0.2)
    assert "onnxruntime fp32" in c["rule"]


def test_backend_without_fp32_is_compared_with_pytorch_fp32() -> None:
    evals = {
        "fp32": {"pytorch": ok(92.0), "tensorrt": {"status": "skipped", "reason": "no GPU"}},
        "fp16": {"tensorrt": ok(91.0)},
    }
    c = by_key(gate_checks(evals, Q))[("tensorrt", "fp16")]
    assert "pytorch fp32" in c["rule"] and "pytorch fp32" in c["detail"]
    assert c["value"] == pytest.approx(1.0)
    assert c["passed"] is False


def test_failed_backend_yields_failing_check() -> None:
    evals = {
        "fp32": {"pytorch": ok(92.0)},
        "int8": {"tensorrt": {"status": "failed", "reason": "engine build crashed"}},
    }
    checks = by_key(gate_checks(evals, Q))
    c = checks[("tensorrt", "int8")]
    assert c["passed"] is False
    assert c["rule"] == "backend ran"
    assert c["detail"] == "engine build crashed"


def test_failed_fp32_backend_fails_and_its_int8_falls_back_to_pytorch() -> None:
    evals = {
        "fp32": {"pytorch": ok(92.0), "tensorrt": {"status": "failed", "reason": "boom"}},
        "int8": {"tensorrt": ok(91.9)},
    }
    checks = gate_checks(evals, Q)
    trt = [c for c in checks if c["backend"] == "tensorrt"]
    assert [(c["precision"], c["passed"]) for c in trt] == [("fp32", False), ("int8", True)]
    assert "pytorch fp32" in trt[1]["rule"]


def test_fp32_agreement_below_minimum_fails() -> None:
    evals = {"fp32": {"pytorch": ok(92.0, agreement=0.985), "onnxruntime": ok(92.0, 1.0)}}
    checks = by_key(gate_checks(evals, Q))
    assert checks[("pytorch", "fp32")]["passed"] is False
    assert checks[("pytorch", "fp32")]["value"] == pytest.approx(0.985)
    assert "0.9850" in checks[("pytorch", "fp32")]["detail"]
    assert "0.99" in checks[("pytorch", "fp32")]["rule"]
    assert checks[("onnxruntime", "fp32")]["passed"] is True


@pytest.mark.parametrize("status", ["skipped", "unsupported", "not_evaluated"])
def test_backends_that_did_not_run_produce_no_checks(status: str) -> None:
    rec = {"status": status, "reason": "n/a"}
    evals = {
        "fp32": {"pytorch": ok(92.0), "tensorrt": rec},
        "fp16": {"pytorch": rec, "tensorrt": rec},
        "int8": {"pytorch": rec, "tensorrt": rec},
    }
    checks = gate_checks(evals, Q)
    assert [(c["backend"], c["precision"]) for c in checks] == [("pytorch", "fp32")]


@pytest.mark.parametrize(
    "reference_fields",
    [{}, {"agreement_images": 0, "top1_on_reference_images": None, "reference_top1": None}],
    ids=["absent", "empty"],
)
@pytest.mark.parametrize(
    "fp32", [{"fp32": {"pytorch": {"status": "skipped", "reason": "x"}}}, {}], ids=["fp32-skipped", "no-fp32"]
)
def test_no_reference_at_all_yields_a_failing_check(fp32: dict[str, Any], reference_fields: dict[str, Any]) -> None:
    """No FP32 result and no export reference logits: the drop cannot be checked, so it fails."""
    evals = {**fp32, "int8": {"onnxruntime": {**ok(50.0), **reference_fields}}}
    checks = gate_checks(evals, Q)
    assert len(checks) == 1
    c = checks[0]
    assert (c["backend"], c["precision"]) == ("onnxruntime", "int8")
    assert c["passed"] is False
    assert c["rule"] == "an FP32 reference exists"
    assert c["detail"]


def with_reference(top1: float, on_reference: float, reference_top1: float, images: int = 128) -> dict[str, Any]:
    """An evaluate record carrying the export-reference fields (stages/evaluate.py)."""
    return {
        **ok(top1, 0.97),
        "agreement_images": images,
        "top1_on_reference_images": on_reference,
        "reference_top1": reference_top1,
    }


def test_without_fp32_results_the_export_reference_is_used_within_budget() -> None:
    # whole-split top-1 (70) is not comparable with the reference; the reference images' is (89.8)
    evals = {"int8": {"onnxruntime": with_reference(70.0, 89.8, 90.0)}}
    checks = gate_checks(evals, Q)
    assert len(checks) == 1
    c = checks[0]
    assert (c["backend"], c["precision"]) == ("onnxruntime", "int8")
    assert c["passed"] is True
    assert c["value"] == pytest.approx(0.2)
    assert "ORT fp32 reference" in c["rule"] and "0.5" in c["rule"]
    assert "ORT fp32 reference (128 images)" in c["detail"]
    assert "89.80%" in c["detail"] and "90.00%" in c["detail"]


def test_without_fp32_results_the_export_reference_is_used_over_budget() -> None:
    evals = {
        "fp32": {"pytorch": {"status": "skipped", "reason": "x"}},
        "int8": {"tensorrt": with_reference(95.0, 89.0, 90.0, images=64)},
    }
    c = by_key(gate_checks(evals, Q))[("tensorrt", "int8")]
    assert c["passed"] is False
    assert c["value"] == pytest.approx(1.0)
    assert "ORT fp32 reference (64 images)" in c["detail"]
    assert "89.00%" in c["detail"] and "90.00%" in c["detail"] and "1.00" in c["detail"]


def test_fp32_results_are_preferred_over_the_export_reference() -> None:
    evals = {"fp32": {"pytorch": ok(92.0)}, "int8": {"onnxruntime": with_reference(91.8, 80.0, 90.0)}}
    c = by_key(gate_checks(evals, Q))[("onnxruntime", "int8")]
    assert "pytorch fp32" in c["rule"] and "reference" not in c["rule"]
    assert c["value"] == pytest.approx(0.2) and c["passed"] is True


# -- the gate stage ----------------------------------------------------------------------


def _write_evals(project: Path, int8_top1: float) -> Path:
    model_dir = project / "reports" / "resnet18_cifar"
    skipped = {"status": "skipped", "reason": "no CUDA GPU"}
    evals = {
        "fp32": {
            "pytorch": ok(80.0, 1.0),
            "torch_compile": {"status": "not_evaluated", "reason": "x"},
            "onnxruntime": ok(80.0, 1.0),
            "tensorrt": skipped,
        },
        "fp16": {"pytorch": skipped, "torch_compile": skipped, "onnxruntime": skipped, "tensorrt": skipped},
        "int8": {
            "pytorch": {"status": "unsupported", "reason": "no INT8"},
            "torch_compile": {"status": "unsupported", "reason": "no INT8"},
            "onnxruntime": ok(int8_top1, 0.98),
            "tensorrt": skipped,
        },
    }
    (model_dir / "eval").mkdir(parents=True)
    for prec, recs in evals.items():
        doc = {"precision": prec, "synthetic_data": True, **recs}
        (model_dir / "eval" / f"{prec}.json").write_text(json.dumps(doc))
    return model_dir


def test_gate_stage_passes(project: Path) -> None:
    model_dir = _write_evals(project, int8_top1=79.75)
    proc = run_stage(
        "gate", ["--model-dir", str(model_dir), "--out", str(model_dir / "gate.json")], project, check=False
    )
    assert proc.returncode == 0, proc.stderr
    gate = json.loads((model_dir / "gate.json").read_text())
    assert gate["passed"] is True
    assert gate["checks"] == 3 and gate["failed"] == 0 and gate["failures"] == []
    assert gate["max_top1_drop"] == 0.5


def test_gate_stage_fails_with_one_error_line(project: Path) -> None:
    model_dir = _write_evals(project, int8_top1=78.0)
    proc = run_stage(
        "gate", ["--model-dir", str(model_dir), "--out", str(model_dir / "gate.json")], project, check=False
    )
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error:")
    assert "Traceback" not in proc.stderr
    assert "onnxruntime int8" in lines[0] and "78.00%" in lines[0] and "80.00%" in lines[0]
    gate = json.loads((model_dir / "gate.json").read_text())
    assert gate["passed"] is False
    assert gate["failed"] == 1 and gate["checks"] == 3
    assert gate["failures"] == ["onnxruntime int8: 78.00% vs 80.00% (onnxruntime fp32): drop 2.00 points"]
