"""Kernel traces of one inference: record them on a GPU host, then report launches and GPU
time by kernel kind (stages/lib/report/kernels.py).

  torch   PyTorch eager (the benchmark's compute op, no CUDA graph) under torch.profiler
          (CUPTI), in process: <out>/pytorch_<prec>_b<batch>.json. Host Python (torch).
  trt     a TensorRT engine's compute op (no CUDA graph) under Nsight Compute: each batch
          is timed in a plain run (CUDA events), then traced by `ncu --profile-from-start
          off` around the traced iterations: <out>/tensorrt_<prec>_b<batch>.csv. Runs with
          TRT_PYTHON (no torch needed).
  report  every <name>.meta.json of a trace folder -> kernels.md, kernels.csv,
          kernel_names.json and kernels.png.

Every trace gets <name>.meta.json beside it: batch size, iterations traced, how it was
recorded, the event-timed latency of the same op without a profiler, and versions.
Run from the project root: `python -m tools.kernel_trace torch --help`.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import logging
import os
import platform
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from stages.lib.core.cli import run_main
from stages.lib.core.config import load_params
from stages.lib.core.errors import BackendUnavailable, InputFileError
from stages.lib.core.io import read_json, write_json, write_records, write_text
from stages.lib.core.timing import measure, summarize
from stages.lib.runners.base import Artifacts
from stages.lib.runners.registry import create_runner

log = logging.getLogger(__name__)

WARMUP, TIMED, MAX_SECONDS = 20, 200, 5.0
NCU_ARGS = [
    "--profile-from-start", "off",  # only between cudaProfilerStart and Stop: the traced loop
    "--metrics", "gpu__time_duration.sum",  # one pass per kernel, no counter replay
    "--clock-control", "none",  # the card's clocks as they are
    "--cache-control", "none",  # no cache flush between kernels: back-to-back conditions
    "--csv", "--print-units", "base",
]  # fmt: skip


def _meta(dest: Path, args: argparse.Namespace, backend: str, batch: int, extra: dict[str, Any]) -> None:
    name = f"{backend}_{args.precision}_b{batch}"
    record = {
        "name": name,
        "backend": backend,
        "precision": args.precision,
        "batch_size": batch,
        "iterations": args.iterations,
        "python": platform.python_version(),
        **extra,
    }
    write_json(dest / f"{name}.meta.json", record)


# -- PyTorch ---------------------------------------------------------------------------------


def record_torch(args: argparse.Namespace) -> None:
    import torch
    from torch.profiler import ProfilerActivity, profile

    if not torch.cuda.is_available():
        raise BackendUnavailable("kernel_trace torch: no CUDA GPU visible (it traces GPU kernels)")
    p = load_params(args.params)
    runner = create_runner("pytorch", args.precision, Artifacts(checkpoint=args.checkpoint), p)
    with runner:
        for batch in args.batch:
            op = runner.compute_op(batch, cuda_graph=False)
            timing = summarize(measure(op, WARMUP, TIMED, MAX_SECONDS), batch)  # warms up too
            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                for _ in range(args.iterations):
                    op.step()
                op.sync()
            trace = args.out_dir / f"pytorch_{args.precision}_b{batch}.json"
            args.out_dir.mkdir(parents=True, exist_ok=True)
            prof.export_chrome_trace(str(trace))
            extra = {
                "trace": trace.name,
                "recorder": "torch.profiler (Kineto/CUPTI), CUDA activity, in process",
                "op": op.timed,
                "timing": timing,
                "torch": torch.__version__,
                "gpu": torch.cuda.get_device_name(),
                "runtime": runner.describe(),
            }
            _meta(args.out_dir, args, "pytorch", batch, extra)
            log.info("pytorch %s batch %d: %s, p50 %.4f ms", args.precision, batch, trace, timing["latency_ms_p50"])


# -- TensorRT ----------------------------------------------------------------------------------


@contextlib.contextmanager
def profiler_range() -> Iterator[None]:
    """cudaProfilerStart/Stop around a block: the range `ncu --profile-from-start off` traces."""
    from cuda.bindings import runtime as cudart

    from stages.lib.core.cuda import check

    check(cudart.cudaProfilerStart())
    try:
        yield
    finally:
        check(cudart.cudaProfilerStop())


def trt_loop(args: argparse.Namespace) -> None:
    """One batch size: time the compute op (plain run) or run the traced iterations (under ncu)."""
    p = load_params(args.params)
    batch = args.batch[0]
    runner = create_runner("tensorrt", args.precision, Artifacts(engine_dir=args.engine_dir), p)
    with runner:
        op = runner.compute_op(batch, cuda_graph=False)
        if args.timing_out:
            timing = summarize(measure(op, WARMUP, TIMED, MAX_SECONDS), batch)
            write_json(args.timing_out, {"timing": timing, "op": op.timed, "runtime": runner.describe()})
        else:
            for _ in range(WARMUP):
                op.step()
            op.sync()
            with profiler_range():
                for _ in range(args.iterations):
                    op.step()
                op.sync()
        op.close()


def find_ncu(given: str | None) -> str:
    """Nsight Compute's command line: --ncu, else on PATH, else the newest /opt/nvidia install."""
    installed = sorted(glob.glob("/opt/nvidia/nsight-compute/*/ncu"))
    found = given or shutil.which("ncu") or (installed[-1] if installed else None)
    if not found:
        raise BackendUnavailable("ncu (Nsight Compute) not found: pass --ncu PATH")
    return found


def record_trt(args: argparse.Namespace) -> None:
    ncu = find_ncu(args.ncu)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    version = subprocess.run([ncu, "--version"], capture_output=True, text=True).stdout.strip().splitlines()[-1:]
    for batch in args.batch:
        name = f"tensorrt_{args.precision}_b{batch}"
        loop = [sys.executable, "-m", "tools.kernel_trace", "trt-loop", "--params", str(args.params)]
        loop += ["--precision", args.precision, "--engine-dir", str(args.engine_dir), "--batch", str(batch)]
        loop += ["--iterations", str(args.iterations)]
        timing_file = args.out_dir / f"{name}.timing.json"
        _run([*loop, "--timing-out", str(timing_file)])
        trace = args.out_dir / f"{name}.csv"
        _run([ncu, *NCU_ARGS, "--log-file", str(trace), *loop])
        timed = read_json(timing_file)
        timing_file.unlink()
        extra = {
            "trace": trace.name,
            "recorder": f"Nsight Compute ({' '.join(version)}): {' '.join(NCU_ARGS)}",
            "op": timed["op"],
            "timing": timed["timing"],
            "runtime": timed["runtime"],
        }
        _meta(args.out_dir, args, "tensorrt", batch, extra)
        log.info(
            "tensorrt %s batch %d: %s, p50 %.4f ms", args.precision, batch, trace, timed["timing"]["latency_ms_p50"]
        )


def _run(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    if proc.returncode != 0:
        raise BackendUnavailable(f"{' '.join(cmd[:4])} ... failed ({proc.returncode}): {proc.stderr[-3000:]}")


# -- report ------------------------------------------------------------------------------------

LABELS = {"pytorch": "PyTorch eager", "tensorrt": "TensorRT"}


def report(args: argparse.Namespace) -> None:
    from stages.lib.report import kernels
    from stages.lib.report.kernel_plot import kinds_figure

    metas = [read_json(m) for m in sorted(args.trace_dir.glob("*.meta.json"))]
    if not metas:
        raise InputFileError(f"{args.trace_dir}: no <trace>.meta.json files; record traces first")
    metas.sort(key=lambda m: (m["batch_size"], m["backend"] != "pytorch"))
    breakdowns, names, timing_lines = [], {}, []
    for m in metas:
        found = kernels.read_trace(args.trace_dir / m["trace"])
        label = f"{LABELS.get(m['backend'], m['backend'])} {m['precision'].upper()}"
        b = kernels.breakdown(found, label, m["batch_size"], m["iterations"])
        breakdowns.append(b)
        names[m["name"]] = kernels.names_by_kind(found)
        p50_us = 1000 * m["timing"]["latency_ms_p50"]
        timing_lines.append(
            f"| {label} | {b.batch_size} | {p50_us:,.1f} | {b.gpu_us:,.1f} | {100 * b.gpu_us / p50_us:.0f}% |"
        )
    lines = [*kernels.markdown_table(breakdowns), ""]
    lines += ["| backend | batch | event-timed µs / batch (p50, no profiler) | kernel µs / batch | kernel share |"]
    lines += ["|---|---|---|---|---|", *timing_lines, ""]
    args.out_dir.mkdir(parents=True, exist_ok=True)
    write_text(args.out_dir / "kernels.md", "\n".join(lines))
    write_records(args.out_dir / "kernels.csv", kernels.records(breakdowns))
    write_json(args.out_dir / "kernel_names.json", names)
    kinds_figure(breakdowns, args.out_dir / "kernels.png", args.title)
    print("\n".join(lines))


# -- command line ------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    for name in ("torch", "trt", "trt-loop"):
        s = sub.add_parser(name)
        s.add_argument("--params", type=Path, default=Path("params.yaml"))
        s.add_argument("--precision", default="fp32" if name == "torch" else "int8")
        s.add_argument("--batch", type=int, nargs="+", default=[1, 1024])
        s.add_argument("--iterations", type=int, default=20, help="batches traced")
        s.add_argument("--out-dir", type=Path, default=Path("kernel-traces"))
        if name == "torch":
            s.add_argument("--checkpoint", type=Path, required=True)
        else:
            s.add_argument("--engine-dir", type=Path, required=True)
        if name == "trt":
            s.add_argument("--ncu", help="Nsight Compute's ncu (default: on PATH or under /opt/nvidia)")
        if name == "trt-loop":
            s.add_argument("--timing-out", type=Path, help="(internal) time only, write the timing here")
    r = sub.add_parser("report")
    r.add_argument("--trace-dir", type=Path, required=True)
    r.add_argument("--out-dir", type=Path, required=True)
    r.add_argument("--title", default="ResNet-18 CIFAR: GPU time and kernels per batch, by kernel kind")
    args = ap.parse_args(argv)
    body = {"torch": record_torch, "trt": record_trt, "trt-loop": trt_loop, "report": report}[args.command]
    return run_main(f"kernel_trace {args.command}", lambda: body(args))


if __name__ == "__main__":
    sys.exit(main())
