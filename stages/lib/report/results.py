"""What a run wrote: every stage's reports for one model, read back for the report and gate.

Per-precision results are ``{precision: {backend: record}}``; a record ran when its
``status`` is ``"ok"`` (otherwise it says why not: skipped, unsupported, failed, ...).
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeGuard

from ..core.config import load_params
from ..core.io import read_json
from ..core.params import Params

ByPrecision = dict[str, dict[str, Any]]


def ran(rec: Any) -> TypeGuard[dict[str, Any]]:
    """Whether a backend record holds results (``"status": "ok"``)."""
    return isinstance(rec, dict) and rec.get("status") == "ok"


def ok_records(by_precision: ByPrecision) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(precision, backend, record) for every backend record that ran."""
    for prec, by_backend in by_precision.items():
        for backend, rec in by_backend.items():
            if ran(rec):
                yield prec, backend, rec


def ok_record(by_precision: ByPrecision, prec: str, backend: str) -> dict[str, Any] | None:
    """The record of ``backend`` at ``prec`` if it ran, else None."""
    rec = by_precision.get(prec, {}).get(backend)
    return rec if ran(rec) else None


@dataclass
class Collected:
    """One model's reports, as the stages wrote them under reports/<model>/."""

    p: Params
    meta: dict[str, Any]
    fingerprint: dict[str, Any]
    train: dict[str, Any]
    history: list[dict[str, Any]]
    export: dict[str, Any]
    calibrate: dict[str, Any]
    builds: dict[str, dict[str, Any]]
    evals: ByPrecision
    benches: ByPrecision
    records: list[dict[str, Any]]  # every benchmark row (bench/<p>.csv)
    layers: dict[str, dict[str, Any]]  # TensorRT layer profiles (bench/<p>_layers.json)


def read_csv(path: Path) -> list[dict[str, Any]]:
    """A report CSV's rows (an empty list when the file is missing)."""
    if not path.is_file():
        return []
    with open(path, encoding="utf-8") as f:
        return [row for row in csv.DictReader(f) if row.get("backend") or row.get("epoch")]


def _maybe(path: Path) -> Any:
    return read_json(path) if path.is_file() else {}


def collect(params_path: str, d: Path, fingerprint: Path | None = None, data_meta: Path | None = None) -> Collected:
    """Read every report under ``d`` for the precisions in params; missing ones read as {}."""
    p = load_params(params_path)
    precs = p.precisions
    records = [r for prec in precs for r in read_csv(d / "bench" / f"{prec}.csv")]
    for r in records:
        for k in ("batch_size", "iterations"):
            if r.get(k):
                r[k] = int(float(r[k]))
    return Collected(
        p=p,
        meta=_maybe(data_meta) if data_meta else {},
        fingerprint=_maybe(fingerprint) if fingerprint else {},
        train=_maybe(d / "train.json"),
        history=read_csv(d / "train_history.csv"),
        export=_maybe(d / "export.json"),
        calibrate=_maybe(d / "calibrate.json"),
        builds={prec: _maybe(d / "build" / f"{prec}.json") for prec in precs},
        evals={prec: _maybe(d / "eval" / f"{prec}.json") for prec in precs},
        benches={prec: _maybe(d / "bench" / f"{prec}.json") for prec in precs},
        records=records,
        layers={prec: _maybe(d / "bench" / f"{prec}_layers.json") for prec in precs},
    )


def where(c: Collected) -> str:
    """Model, profile, GPU and TensorRT of a run, in one line."""
    fp = c.fingerprint
    gpu = f"{fp.get('gpu')} (driver {fp.get('driver')})" if fp.get("gpu") else "no CUDA GPU"
    trt = f"TensorRT {fp['tensorrt']}" if fp.get("tensorrt") else "no TensorRT"
    return f"{c.p.model.name}, profile {c.p.profile}, {gpu}, {trt}"
