"""The quality gate's rules, shared by the report (to show them) and the gate (to enforce)."""

from __future__ import annotations

from typing import Any

from .params import QualityParams
from .results import ran


def gate_checks(evals: dict[str, dict[str, Any]], q: QualityParams) -> list[dict[str, Any]]:
    """One check per evaluated backend x precision.

    FP16/INT8: top-1 may fall at most ``max_top1_drop`` points below FP32 of the same backend
    (else PyTorch FP32, else the ORT FP32 reference logits from export, on their images).
    FP32: top-1 agreement with ONNX Runtime FP32 at least ``min_fp32_agreement``. A backend
    that failed fails its check.
    """
    fp32 = evals.get("fp32", {})
    pytorch_fp32 = _top1(fp32.get("pytorch"))
    checks = []
    for precision, by_backend in evals.items():
        for backend, rec in by_backend.items():
            if not isinstance(rec, dict):
                continue
            status = rec.get("status")
            if status == "failed":
                checks.append(
                    {
                        "backend": backend,
                        "precision": precision,
                        "passed": False,
                        "rule": "backend ran",
                        "detail": rec.get("reason", ""),
                    }
                )
            if status != "ok":
                continue
            if precision == "fp32":
                agree = rec["top1_agreement_vs_ort_fp32"]
                checks.append(
                    {
                        "backend": backend,
                        "precision": precision,
                        "rule": f"top-1 agreement with ORT FP32 >= {q.min_fp32_agreement}",
                        "value": agree,
                        "passed": agree >= q.min_fp32_agreement,
                        "detail": f"agreement {agree:.4f}",
                    }
                )
                continue
            ref, own = _top1(fp32.get(backend)), rec["top1"]
            ref_name = f"{backend} fp32"
            if ref is None and pytorch_fp32 is not None:
                ref, ref_name = pytorch_fp32, "pytorch fp32"
            if ref is None and rec.get("reference_top1") is not None:
                # no FP32 run in this experiment: the export's ORT FP32 reference logits
                ref, own = rec["reference_top1"], rec["top1_on_reference_images"]
                ref_name = f"ORT fp32 reference ({rec.get('agreement_images')} images)"
            if ref is None:
                checks.append(
                    {
                        "backend": backend,
                        "precision": precision,
                        "passed": False,
                        "rule": "an FP32 reference exists",
                        "detail": "no FP32 result or reference logits to compare with",
                    }
                )
                continue
            drop = round(ref - own, 3)
            checks.append(
                {
                    "backend": backend,
                    "precision": precision,
                    "rule": f"top-1 drop vs {ref_name} <= {q.max_top1_drop} points",
                    "value": drop,
                    "passed": drop <= q.max_top1_drop,
                    "detail": f"{own:.2f}% vs {ref:.2f}% ({ref_name}): drop {drop:.2f} points",
                }
            )
    return checks


def _top1(rec: Any) -> float | None:
    return float(rec["top1"]) if ran(rec) else None
