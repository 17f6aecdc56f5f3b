"""Failed cases differ from skipped ones: the report lists them, metrics.json counts them and
the gate fails on them unless quality.allow_failed_cases."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from stages.lib.core.io import write_json
from stages.lib.core.params import QualityParams
from stages.lib.report.failures import FailedCase, failed_cases, metrics, read_failed_cases
from stages.lib.report.quality import gate_checks
from tests.conftest import run_stage
from tests.test_cli_errors import edit_params, one_line_error

R = "reports/resnet18_cifar"
OK = {"status": "ok", "top1": 50.0, "top1_agreement_vs_ort_fp32": 1.0, "agreement_images": 8, "images": 8}
OK["max_abs_diff_vs_ort_fp32"] = 0.0
SKIPPED = {"status": "skipped", "reason": "TensorRT is not installed"}
OOM = "batch 4096 needs 35.0 GiB, this machine has 15.6 GiB of RAM"


def _bench() -> dict[str, Any]:
    return {
        "pytorch": {"status": "ok", "failed_batches": [{"batch_size": 4096, "reason": OOM}]},
        "onnxruntime": {"status": "failed", "reason": "MemoryError"},
        "tensorrt": SKIPPED,
    }


def test_failed_cases_are_named_and_skipped_ones_are_not() -> None:
    cases = failed_cases(
        {"fp32": {"pytorch": OK, "tensorrt": SKIPPED}},
        {"fp32": _bench()},
        {"fp32": {"status": "skipped", "reason": "no GPU"}, "int8": {"status": "failed", "reason": "out of memory"}},
    )
    assert [c.name for c in cases] == [
        "build tensorrt INT8",
        "benchmark pytorch FP32 batch 4096",
        "benchmark onnxruntime FP32",
    ]
    assert cases[1].reason == OOM
    assert metrics(cases) == {"failed_cases": 3}
    assert metrics([]) == {"failed_cases": 0}


def test_gate_checks_fail_on_a_failed_case_unless_allowed() -> None:
    case = FailedCase("benchmark", "pytorch", "fp32", OOM, 4096)
    evals = {"fp32": {"pytorch": OK}}
    strict = QualityParams(max_top1_drop=0.5, min_fp32_agreement=0.99)
    [ok, failed] = gate_checks(evals, strict, [case])
    assert ok["passed"] and not failed["passed"]
    assert failed["rule"] == "benchmark ran" and failed["detail"] == f"pytorch FP32 batch 4096: {OOM}"
    allowed = QualityParams(max_top1_drop=0.5, min_fp32_agreement=0.99, allow_failed_cases=True)
    assert all(c["passed"] for c in gate_checks(evals, allowed, [case]))
    failed_eval = {"fp32": {"pytorch": {"status": "failed", "reason": "MemoryError"}}}
    assert [c["passed"] for c in gate_checks(failed_eval, allowed)] == [True]
    assert [c["passed"] for c in gate_checks(failed_eval, strict)] == [False]


def _reports(project: Path) -> None:
    for prec in ("fp32", "fp16", "int8"):
        write_json(project / R / "eval" / f"{prec}.json", {"precision": prec, "onnxruntime": OK})
        write_json(project / R / "bench" / f"{prec}.json", {"precision": prec, "onnxruntime": OK})
    write_json(project / R / "bench" / "fp16.json", {"precision": "fp16", **_bench()})


def test_read_failed_cases_reads_every_report(project: Path) -> None:
    _reports(project)
    names = [c.name for c in read_failed_cases(project / R, ["fp32", "fp16", "int8"])]
    assert names == ["benchmark pytorch FP16 batch 4096", "benchmark onnxruntime FP16"]


def test_gate_fails_in_one_line_naming_the_failed_cases(project: Path) -> None:
    _reports(project)
    proc = run_stage("gate", ["--model-dir", R, "--out", f"{R}/gate.json"], project, check=False)
    line = one_line_error(proc, "quality gate", "pytorch fp16 fails 'benchmark ran'", "batch 4096", OOM)
    assert "onnxruntime fp16 fails 'benchmark ran' (onnxruntime FP16: MemoryError)" in line
    assert "set quality.allow_failed_cases: true to accept them" in line


def test_gate_passes_failed_cases_when_allowed(project: Path) -> None:
    _reports(project)
    edit_params(project, lambda r: r["quality"].__setitem__("allow_failed_cases", True))
    run_stage("gate", ["--model-dir", R, "--out", f"{R}/gate.json"], project)
    assert (project / R / "gate.json").read_text().count('"passed": true') >= 1


def test_report_says_failed_apart_from_skipped_and_counts_them(project: Path) -> None:
    import json

    _reports(project)
    run_stage("report", ["--model-dir", R], project)
    md = (project / R / "summary.md").read_text()
    section = md.split("## Skipped or not run", 1)[1].split("\n## ", 1)[0]
    lines = [x for x in section.splitlines() if x.startswith("- ")]
    assert lines[0] == "- **failed**: MemoryError (benchmark onnxruntime FP16)"
    assert f"- **failed**: {OOM} (benchmark pytorch FP16 batch 4096)" in lines
    assert any(x.startswith("- **skipped**: TensorRT is not installed") for x in lines)
    assert json.loads((project / R / "metrics.json").read_text())["failed_cases"] == 2


def test_a_build_tensorrt_cannot_finish_is_a_failed_case_the_gate_names(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """TensorRT's builder returning no engine (a failed allocation, say) is recorded, not a
    traceback: build.json says failed with the reason, the stage returns, and the case counts."""
    from stages import build
    from stages.lib.core.errors import EngineBuildFailed
    from stages.lib.trt import builder, common

    def no_engine(*_: Any) -> None:
        raise EngineBuildFailed("TensorRT failed to build the int8 engine from m.onnx (out of memory)")

    monkeypatch.chdir(project)
    monkeypatch.setenv("TRT_PYTHON", "")
    monkeypatch.setattr(common, "import_tensorrt", lambda: object())
    monkeypatch.setattr(common, "make_logger", lambda trt: None)
    monkeypatch.setattr(builder, "build_engine", no_engine)
    (project / "m.onnx").write_bytes(b"onnx")
    write_json(project / "fp.json", {"available": True, "gpu": {"name": "test GPU"}})
    out, report = project / "artifacts/resnet18_cifar/engines/int8", project / R / "build/int8.json"
    assert build.main(["--precision", "int8", "--onnx", "m.onnx", "--fingerprint", "fp.json"]
                      + ["--out-dir", str(out), "--report", str(report)]) == 0  # fmt: skip
    record = json.loads(report.read_text())
    assert record["status"] == "failed" and "out of memory" in record["reason"]
    assert not (out / "model.engine").exists()
    [case] = read_failed_cases(project / R, ["int8"])
    assert (case.stage, case.backend, case.precision) == ("build", "tensorrt", "int8")
    [check] = gate_checks({}, QualityParams(max_top1_drop=0.5, min_fp32_agreement=0.99), [case])
    assert check["passed"] is False and "out of memory" in check["detail"]
