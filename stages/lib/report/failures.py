"""Cases that failed, as opposed to cases skipped by design (no GPU, no TensorRT, unsupported).

A case is a build, an evaluation or a benchmark of one backend at one precision (and, for a
benchmark batch refused or out of memory, one batch size). The report lists them under
"Skipped or not run", ``metrics.json`` counts them (``failed_cases``) and the gate fails on
them unless ``quality.allow_failed_cases``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.io import read_json

ByPrecision = dict[str, dict[str, Any]]


@dataclass(frozen=True)
class FailedCase:
    stage: str  # build | evaluate | benchmark
    backend: str
    precision: str
    reason: str
    batch_size: int | None = None

    @property
    def name(self) -> str:
        """'benchmark onnxruntime FP32 batch 4096'."""
        batch = f" batch {self.batch_size}" if self.batch_size is not None else ""
        return f"{self.stage} {self.backend} {self.precision.upper()}{batch}"


def failed_cases(evals: ByPrecision, benches: ByPrecision, builds: dict[str, dict[str, Any]]) -> list[FailedCase]:
    """Every failed case in a run's build, evaluation and benchmark reports."""
    cases = [
        FailedCase("build", "tensorrt", prec, str(rec.get("reason")))
        for prec, rec in builds.items()
        if isinstance(rec, dict) and rec.get("status") == "failed"
    ]
    for stage, table in (("evaluate", evals), ("benchmark", benches)):
        for prec, by_backend in table.items():
            for backend, rec in by_backend.items():
                if not isinstance(rec, dict):
                    continue
                if rec.get("status") == "failed":
                    cases.append(FailedCase(stage, backend, prec, str(rec.get("reason"))))
                cases += [
                    FailedCase(stage, backend, prec, str(f.get("reason")), int(f["batch_size"]))
                    for f in rec.get("failed_batches", [])
                ]
    return cases


def read_failed_cases(model_dir: Path, precisions: list[str]) -> list[FailedCase]:
    """:func:`failed_cases` of the reports under ``model_dir`` (missing reports read as none)."""

    def maybe(path: Path) -> dict[str, Any]:
        return read_json(path) if path.is_file() else {}

    return failed_cases(
        {p: maybe(model_dir / "eval" / f"{p}.json") for p in precisions},
        {p: maybe(model_dir / "bench" / f"{p}.json") for p in precisions},
        {p: maybe(model_dir / "build" / f"{p}.json") for p in precisions},
    )


def metrics(cases: list[FailedCase]) -> dict[str, int]:
    """The metrics.json key: how many cases failed."""
    return {"failed_cases": len(cases)}
