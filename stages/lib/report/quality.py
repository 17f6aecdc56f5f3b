"""The quality gate's rules, shared by the report (to show them) and the gate (to enforce)."""

from __future__ import annotations

from typing import Any

from ..core.params import QualityParams
from . import int8budget
from .failures import FailedCase
from .results import ran


def gate_checks(
    evals: dict[str, dict[str, Any]],
    q: QualityParams,
    failed: list[FailedCase] | None = None,
    budget: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """One check per evaluated backend x precision, and one per failed build or benchmark case.

    FP16/INT8: top-1 may fall at most ``max_top1_drop`` points below FP32 of the same backend
    (else PyTorch FP32, else the ORT FP32 reference logits from export, on their images).
    FP32: top-1 agreement with ONNX Runtime FP32 at least ``min_fp32_agreement``. A backend
    that failed, and each failed case of ``failed`` (build, benchmark), fails its check unless
    ``quality.allow_failed_cases``. With ``budget`` (the choose stage's int8_budget.json) and
    INT8 evaluated: one check that the held-out drop met the INT8 budget.
    """
    fp32 = evals.get("fp32", {})
    checks = []
    for precision, by_backend in evals.items():
        for backend, rec in by_backend.items():
            if not isinstance(rec, dict):
                continue
            if rec.get("status") == "failed":
                checks.append(_check(backend, precision, q.allow_failed_cases, "backend ran", rec.get("reason", "")))
            elif ran(rec):
                checks.append(
                    _agreement(backend, rec, q) if precision == "fp32" else _drop(backend, precision, rec, fp32, q)
                )
    for case in failed or []:
        if case.stage != "evaluate":  # a failed evaluation has its check above
            where = case.name.split(" ", 1)[1]
            checks.append(
                _check(
                    case.backend, case.precision, q.allow_failed_cases, f"{case.stage} ran", f"{where}: {case.reason}"
                )
            )
    if budget and "int8" in evals:
        checks.append(int8budget.gate_check(budget))
    return checks


def _check(backend: str, precision: str, passed: bool, rule: str, detail: str, **extra: Any) -> dict[str, Any]:
    return {"backend": backend, "precision": precision, "rule": rule, **extra, "passed": passed, "detail": detail}


def _agreement(backend: str, rec: dict[str, Any], q: QualityParams) -> dict[str, Any]:
    """FP32: top-1 agreement with the ONNX Runtime FP32 reference."""
    agree = rec["top1_agreement_vs_ort_fp32"]
    rule = f"top-1 agreement with ORT FP32 >= {q.min_fp32_agreement}"
    return _check(backend, "fp32", agree >= q.min_fp32_agreement, rule, f"agreement {agree:.4f}", value=agree)


def _drop(backend: str, precision: str, rec: dict[str, Any], fp32: dict[str, Any], q: QualityParams) -> dict[str, Any]:
    """FP16/INT8: the top-1 drop against the best FP32 reference this run has."""
    ref, own, ref_name = _top1(fp32.get(backend)), rec["top1"], f"{backend} fp32"
    if ref is None and _top1(fp32.get("pytorch")) is not None:
        ref, ref_name = _top1(fp32.get("pytorch")), "pytorch fp32"
    if ref is None and rec.get("reference_top1") is not None:
        # no FP32 run in this experiment: the export's ORT FP32 reference logits
        ref, own = rec["reference_top1"], rec["top1_on_reference_images"]
        ref_name = f"ORT fp32 reference ({rec.get('agreement_images')} images)"
    if ref is None:
        detail = "no FP32 result or reference logits to compare with"
        return _check(backend, precision, False, "an FP32 reference exists", detail)
    drop = round(ref - own, 3)
    return _check(
        backend,
        precision,
        drop <= q.max_top1_drop,
        f"top-1 drop vs {ref_name} <= {q.max_top1_drop} points",
        f"{own:.2f}% vs {ref:.2f}% ({ref_name}): drop {drop:.2f} points",
        value=drop,
    )


def _top1(rec: Any) -> float | None:
    return float(rec["top1"]) if ran(rec) else None
