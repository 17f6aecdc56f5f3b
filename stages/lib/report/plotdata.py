"""Data plots for DVC: the benchmark and evaluation records as flat JSON lists, one row per
point, so `dvc plots diff rev1 rev2` overlays runs in one chart (dvc.yaml's top-level
``plots``). The PNGs beside them are for summary.md.

Each row names its series (``"tensorrt int8"``: backend and precision); the throughput chart
uses the ``series_linear`` template (.dvc/plots/), which draws one line per revision and series.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..core.io import write_json
from .results import Collected, ok_records

THROUGHPUT = "throughput.json"
TOP1 = "top1.json"


def throughput_rows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Compute-mode throughput (img/s) per batch size, one series per backend and precision."""
    rows = [
        {
            "series": f"{r['backend']} {r['precision']}",
            "batch_size": int(r["batch_size"]),
            "throughput_ips": float(r["throughput_ips"]),
        }
        for r in records
        if r.get("mode") == "compute" and r.get("throughput_ips") not in (None, "")
    ]
    return sorted(rows, key=lambda r: (r["series"], r["batch_size"]))


def top1_rows(c: Collected) -> list[dict[str, Any]]:
    """Top-1 % on the test split, one row per evaluated backend and precision."""
    return [{"series": f"{b} {p}", "top1": float(rec["top1"])} for p, b, rec in ok_records(c.evals)]


def write(c: Collected, out: Path) -> None:
    """throughput.json and top1.json under ``out`` (empty lists when nothing ran)."""
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / THROUGHPUT, throughput_rows(c.records))
    write_json(out / TOP1, top1_rows(c))
