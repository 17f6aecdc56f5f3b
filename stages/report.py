"""report: summary.md, plots and a flat metrics.json from every stage's reports.

It states what ran where (profile, GPU, TensorRT), what was skipped and why, whether the
data was synthetic, and what exactly each timing measured.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from .lib.core.cli import run_main
from .lib.core.io import write_json, write_text
from .lib.report import plot, targets
from .lib.report.results import Collected, collect, ok_records, where
from .lib.report.summary import status_lines, summary_markdown, target_rows
from .lib.serving.report import served_report

log = logging.getLogger(__name__)

HEADLINE_KEYS = (
    "compute_bs1_latency_ms_p50",
    "compute_throughput_ips_max",
    "end_to_end_throughput_ips_max",
    "pipelined_throughput_ips_max",
    "concurrent_throughput_ips_max",
)


def write_plots(c: Collected, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    sub = where(c) + (" - SYNTHETIC DATA" if c.meta.get("synthetic") else "")
    plot.accuracy(c.evals, out / "accuracy.png", sub)
    if c.records:
        plot.by_batch(
            c.records,
            "latency_ms_p50",
            "p50 latency per batch (ms)",
            f"Latency, GPU compute (device-resident I/O)\n{sub}" if c.p.device == "cuda" else f"Latency (CPU)\n{sub}",
            out / "latency.png",
        )
        plot.by_batch(c.records, "throughput_ips", "images / s", f"Throughput, compute\n{sub}", out / "throughput.png")
        if c.p.device == "cuda":
            plot.by_batch(
                c.records,
                "throughput_ips",
                "images / s",
                f"Throughput, end to end (host -> device -> host)\n{sub}",
                out / "throughput_end_to_end.png",
                mode="end_to_end",
            )
        plot.speedup(c.records, out / "speedup.png", f"Speedup over PyTorch FP32 (compute)\n{sub}")
    if c.history:
        plot.training(c.history, out / "training.png", sub)


def flat_metrics(c: Collected) -> dict[str, Any]:
    """Headline numbers, snake_case with units, for `dvc metrics` / `dvc exp show`."""
    m: dict[str, Any] = {
        "train_test_top1": c.train.get("test_top1"),
        "train_wall_s": c.train.get("train_wall_s"),
        "synthetic_data": bool(c.meta.get("synthetic")),
    }
    for prec, backend, rec in ok_records(c.evals):
        m[f"{backend}_{prec}_top1"] = rec["top1"]
    for prec, backend, rec in ok_records(c.benches):
        m.update({f"{backend}_{prec}_{k}": rec[k] for k in HEADLINE_KEYS if rec.get(k) is not None})
    m.update(targets.metrics(target_rows(c)))
    return m


def run(args: argparse.Namespace) -> None:
    c = collect(args.params, args.model_dir, args.fingerprint, args.data_meta)
    plots = args.model_dir / "plots"
    write_plots(c, plots)
    served, _ = served_report(args.model_dir, plots)  # writes plots/served.png when anything was served
    write_text(args.model_dir / "summary.md", summary_markdown(c, plots, served))
    write_json(args.model_dir / "metrics.json", flat_metrics(c))
    for line in status_lines(c):
        log.warning("%s", line.lstrip("- ").replace("**", ""))
    log.info("wrote %s", args.model_dir / "summary.md")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--model-dir", type=Path, required=True)
    ap.add_argument("--fingerprint", type=Path)
    ap.add_argument("--data-meta", type=Path)
    args = ap.parse_args(argv)
    return run_main("report", lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
