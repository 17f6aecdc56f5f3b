"""report: summary.md, plots, DVC plot data and the curated metrics.json from every stage's reports.

It states what ran where (profile, GPU, TensorRT), what was skipped and why, whether the
data was synthetic, and what exactly each timing measured.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from .lib.core.cli import run_main
from .lib.core.io import write_json, write_text
from .lib.report import curated, int8budget, plot, plotdata
from .lib.report.harmplot import harm_plot
from .lib.report.results import Collected, collect, where
from .lib.report.summary import status_lines, summary_markdown
from .lib.serving.report import served_report

log = logging.getLogger(__name__)


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


def run(args: argparse.Namespace) -> None:
    c = collect(args.params, args.model_dir, args.fingerprint, args.data_meta)
    plots = args.model_dir / "plots"
    write_plots(c, plots)
    served, _ = served_report(args.model_dir, plots)  # writes plots/served.png when anything was served
    budget = c.int8_budget  # the choose stage's INT8 budget search
    harm_plot(budget, plots / "int8_harm.png")
    int8_profile = (c.layers.get("int8") or {}).get("tensorrt")
    extra = served + int8budget.section(budget, int8_profile)
    write_text(args.model_dir / "summary.md", summary_markdown(c, plots, extra))
    plotdata.write(c, args.model_dir / "plot_data")
    write_json(args.model_dir / "metrics.json", curated.metrics(c))
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
