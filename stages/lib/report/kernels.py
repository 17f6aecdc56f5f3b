"""What one inference launches on the GPU, by kernel kind, read from a recorded trace.

Two recorders are read: the PyTorch profiler's Chrome trace (Kineto, CUPTI underneath:
events of category ``kernel``) and Nsight Compute's CSV (``ncu --csv --print-units base
--metrics gpu__time_duration.sum``: one row per profiled kernel). Each kernel is classified by
its name into one of :data:`KINDS`; launches and GPU time are then summed per kind and
divided by the iterations the trace covers, giving per-batch figures.

Torch-free and matplotlib-free (the TensorRT interpreter can run it); the plot lives in
:mod:`stages.lib.report.kernel_plot`.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.errors import InputFileError

KINDS = ("convolution", "gemm", "elementwise", "reformat", "pooling", "other")

# The first rule whose pattern is found in a kernel's name (lower case) gives its kind. The
# patterns are read off real kernel names (tests/data/kernels/ holds traces they come from).
# Reformats come first: their names carry layout words (nchw, nhwc) that convolutions share.
_RULES: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (kind, re.compile(pattern))
    for kind, pattern in (
        # TensorRT's copyPackedKernel and cuInt8 layout kernels (nhwcTonchw, nchwToNcqhw4),
        # cuDNN's convertTensor
        ("reformat", r"reformat|copypacked|to(nc|nhwc)|converttensor|direct_copy|permut"),
        ("pooling", r"pool|meanops"),  # PyTorch's global average pool is a mean reduction
        # cuDNN/TensorRT implicit-GEMM convolutions (and cuDNN's workspace init for them)
        ("convolution", r"conv(?!ert)|fprop"),
        ("gemm", r"gemm|gemv|matmul|splitkreduce"),  # the classifier, cuBLASLt's split-K reduction
        ("elementwise", r"elementwise|pointwise|batch_norm|bn_fw|relu|clamp|add|scale|activation|quantize"),
    )
)


@dataclass(frozen=True)
class Kernel:
    """One kernel launch: its (demangled) name and its GPU time."""

    name: str
    duration_us: float


@dataclass(frozen=True)
class KindRow:
    """One kernel kind's share of one batch."""

    kind: str
    launches: float  # per batch
    gpu_us: float  # per batch

    @property
    def record(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "launches_per_batch": round(self.launches, 2),
            "gpu_us_per_batch": round(self.gpu_us, 2),
        }


@dataclass(frozen=True)
class Breakdown:
    """Per-batch launches and GPU time by kind, for one backend at one batch size."""

    label: str
    batch_size: int
    iterations: int
    rows: tuple[KindRow, ...]

    @property
    def launches(self) -> float:
        return sum(r.launches for r in self.rows)

    @property
    def gpu_us(self) -> float:
        return sum(r.gpu_us for r in self.rows)

    def row(self, kind: str) -> KindRow:
        return next(r for r in self.rows if r.kind == kind)


def classify(name: str) -> str:
    """The kind (one of :data:`KINDS`) of a kernel, from its name."""
    low = name.lower()
    return next((kind for kind, pattern in _RULES if pattern.search(low)), "other")


def read_chrome_trace(path: Path) -> list[Kernel]:
    """The GPU kernels of a PyTorch profiler Chrome trace, in trace order."""
    try:
        events = json.loads(Path(path).read_text())["traceEvents"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputFileError(
            f"{path}: not a PyTorch profiler Chrome trace ({exc}); record it with export_chrome_trace"
        ) from exc
    kernels = [e for e in events if isinstance(e, dict) and e.get("cat") == "kernel" and e.get("ph") == "X"]
    return [Kernel(str(e["name"]), float(e["dur"])) for e in sorted(kernels, key=lambda e: float(e["ts"]))]


# ncu 2025.3 writes "ns" with --print-units base; older versions spell the units out
_NCU_UNITS_US = {"ns": 1e-3, "us": 1.0, "ms": 1e3, "s": 1e6, "nsecond": 1e-3, "usecond": 1.0, "msecond": 1e3}


def read_ncu_csv(path: Path) -> list[Kernel]:
    """The kernels of an Nsight Compute CSV log with the gpu__time_duration.sum metric, in
    launch order (lines before the CSV header, ncu's own messages, are skipped)."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as exc:
        raise InputFileError(f"{path}: cannot read it ({exc})") from exc
    start = next((i for i, line in enumerate(lines) if line.startswith('"ID"')), None)
    if start is None:
        raise InputFileError(f'{path}: no Nsight Compute CSV header ("ID",...); record it with ncu --csv --log-file')
    kernels = []
    for row in csv.DictReader(lines[start:]):
        if row.get("Metric Name") != "gpu__time_duration.sum":
            continue
        unit = row.get("Metric Unit", "")
        if unit not in _NCU_UNITS_US:
            raise InputFileError(f"{path}: gpu__time_duration in unknown unit {unit!r}; record with --print-units base")
        value = float(row["Metric Value"].replace(",", ""))
        kernels.append(Kernel(row["Kernel Name"], value * _NCU_UNITS_US[unit]))
    if not kernels:
        raise InputFileError(f"{path}: no gpu__time_duration.sum rows; record with --metrics gpu__time_duration.sum")
    return kernels


def read_trace(path: Path) -> list[Kernel]:
    """The kernels of a trace: a Chrome trace (.json) or an Nsight Compute CSV (.csv)."""
    suffix = Path(path).suffix
    if suffix == ".json":
        return read_chrome_trace(path)
    if suffix == ".csv":
        return read_ncu_csv(path)
    raise InputFileError(f"{path}: unknown trace type {suffix!r}; expected a .json Chrome trace or an ncu .csv")


def breakdown(kernels: list[Kernel], label: str, batch_size: int, iterations: int) -> Breakdown:
    """Launches and GPU time per batch, by kind, over a trace of ``iterations`` batches."""
    if iterations <= 0 or not kernels:
        raise InputFileError(f"{label} batch {batch_size}: {len(kernels)} kernels over {iterations} iterations")
    launches = dict.fromkeys(KINDS, 0)
    time_us = dict.fromkeys(KINDS, 0.0)
    for k in kernels:
        kind = classify(k.name)
        launches[kind] += 1
        time_us[kind] += k.duration_us
    rows = tuple(KindRow(kind, launches[kind] / iterations, time_us[kind] / iterations) for kind in KINDS)
    return Breakdown(label, batch_size, iterations, rows)


def names_by_kind(kernels: list[Kernel]) -> dict[str, list[str]]:
    """The distinct kernel names of a trace under each kind (for checking the classification)."""
    out: dict[str, list[str]] = {kind: [] for kind in KINDS}
    for name in sorted({k.name for k in kernels}):
        out[classify(name)].append(name)
    return out


def markdown_table(breakdowns: list[Breakdown]) -> list[str]:
    """One row per backend and batch size: kernels and GPU µs per batch, in total and by kind."""
    head = "| backend | batch | kernels / batch | GPU µs / batch | " + " | ".join(KINDS) + " |"
    lines = [head, "|" + "---|" * (4 + len(KINDS))]
    for b in breakdowns:
        cells = [f"{r.launches:g} / {r.gpu_us:,.1f}" for r in b.rows]
        lines.append(f"| {b.label} | {b.batch_size} | {b.launches:g} | {b.gpu_us:,.1f} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("Each kind's cell: kernels launched per batch / GPU µs per batch.")
    return lines


def records(breakdowns: list[Breakdown]) -> list[dict[str, Any]]:
    """Flat records (one per backend, batch size and kind) for a CSV or JSON file."""
    out = []
    for b in breakdowns:
        for r in b.rows:
            out.append({"backend": b.label, "batch_size": b.batch_size, "iterations": b.iterations, **r.record})
    return out
