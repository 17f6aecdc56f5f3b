"""benchmark: latency and throughput of every backend at one precision, side by side.

For each batch size: ``compute`` (device-resident input/output, CUDA events), ``compute``
with a CUDA graph, and ``end_to_end`` (pinned host input -> device -> host logits, host
clock); at the largest batch a ``pipelined`` end-to-end run that overlaps copies and
compute, and (TensorRT, ``bench.contexts`` > 1) a ``concurrent`` compute run of several
engine copies on their own streams. Every record says what was timed and names the GPU it ran
on (the stage holds that GPU alone: stages.lib.core.gpus), or "cpu". Each backend runs in its own
process, so its device-memory reading is its own. Torch-free.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from .lib.core.cli import run_main
from .lib.core.config import load_params
from .lib.core.errors import BackendUnavailable, PipelineError, UnsupportedCombination
from .lib.core.fanout import add_arguments, passthrough, per_backend, status_of
from .lib.core.gpus import columns, current_gpu
from .lib.core.io import write_json, write_records
from .lib.core.params import Params
from .lib.core.timing import TimedOp, measure, span_budgeted, summarize
from .lib.runners.base import Artifacts, Runner
from .lib.runners.registry import create_runner

log = logging.getLogger(__name__)

LAYER_PROFILE_ITERATIONS = 20
PIPELINE_MIN_STEPS = 40
PIPELINE_BUDGET = 4


def _cuda_mem() -> float | None:
    try:
        from .lib.core import cuda

        cuda.init_context()  # the context itself belongs to the baseline
        return cuda.mem_used_mb()
    except (PipelineError, ImportError):
        return None


def device_record(device: str) -> dict[str, Any]:
    """Where a backend ran: the GPU's name, nvidia-smi index and UUID, or "cpu"."""
    if device != "cuda":
        return {"name": "cpu", "index": None, "uuid": None}
    gpu = current_gpu()
    return gpu.record() if gpu else {"name": "unknown CUDA device", "index": None, "uuid": None}


def batch_sizes(backend: str, p: Params) -> list[int]:
    return list(p.bench.compile_batch_sizes if backend == "torch_compile" else p.bench.batch_sizes)


def time_case(op: TimedOp, p: Params, batch: int, mode: str) -> dict[str, Any]:
    try:
        stats = summarize(measure(op, p.bench.warmup, p.bench.iterations, p.bench.max_seconds), batch)
    finally:
        op.close()
    return {"batch_size": batch, "mode": mode, "cuda_graph": op.cuda_graph, **stats, "timed": op.timed}


def bench_runner(runner: Runner, backend: str, p: Params) -> list[dict[str, Any]]:
    rows = []
    gpu = runner.device == "cuda"
    sizes = batch_sizes(backend, p)
    for b in sizes:
        rows.append(time_case(runner.compute_op(b, cuda_graph=False), p, b, "compute"))
        if gpu and p.bench.cuda_graph:
            op = runner.compute_op(b, cuda_graph=True)
            if op.cuda_graph:
                rows.append(time_case(op, p, b, "compute"))
            else:
                op.close()
        if gpu:
            rows.append(time_case(runner.end_to_end_op(b), p, b, "end_to_end"))
        log.info(
            "%s %s batch %d: %s",
            backend,
            runner.precision,
            b,
            ", ".join(
                f"{r['mode']}{'+graph' if r['cuda_graph'] else ''} "
                f"p50 {r['latency_ms_p50']:.3f} ms / {r['throughput_ips']:.0f} img/s"
                for r in rows
                if r["batch_size"] == b
            ),
        )
    if gpu:
        rows += pipelined_rows(runner, max(sizes), p)
        rows += concurrent_rows(runner, max(sizes), p)
    spec = runner.input_spec()  # what crossed to the device: uint8 for raw-pixel models
    return [{**r, "input_dtype": spec.dtype, "input_layout": spec.layout} for r in rows]


def _span_row(
    op: TimedOp, mode: str, batch: int, batches_per_step: int, span_ms: float, steps: int, **extra: Any
) -> dict[str, Any]:
    """A row timed by :func:`span_budgeted`: throughput only (no per-iteration latency)."""
    return {
        "batch_size": batch,
        "mode": mode,
        **extra,
        "cuda_graph": op.cuda_graph,
        "throughput_ips": round(batch * batches_per_step * steps / (span_ms / 1000.0), 1),
        "iterations": steps,
        "clock": "host perf_counter over the whole run, synchronised at the end",
        "timed": op.timed,
    }


def pipelined_rows(runner: Runner, batch: int, p: Params) -> list[dict[str, Any]]:
    """The ``pipelined`` row: end to end with copies overlapped with compute."""
    op = runner.pipelined_op(batch, p.bench.streams)
    if op is None:
        return []
    # Filling and draining the buffer sets costs about one step: PIPELINE_MIN_STEPS keeps
    # that under a few %, and the budget is PIPELINE_BUDGET x bench.max_seconds (500
    # steps at ResNet-50 b2048 took 64 s on the H100).
    try:
        span, steps = span_budgeted(
            op,
            p.bench.warmup,
            max(PIPELINE_MIN_STEPS, p.bench.iterations),
            PIPELINE_BUDGET * p.bench.max_seconds,
            min_steps=PIPELINE_MIN_STEPS,
        )
    finally:
        op.close()
    return [_span_row(op, "pipelined", batch, 1, span, steps)]


def concurrent_rows(runner: Runner, batch: int, p: Params) -> list[dict[str, Any]]:
    """The ``concurrent`` row: ``bench.contexts`` inferences at a time, compute only."""
    try:
        op = runner.concurrent_op(batch, p.bench.contexts, p.bench.cuda_graph)
    except PipelineError as exc:  # e.g. no memory for another copy: the other rows still count
        log.warning("%s: no concurrent run (%s)", runner.backend, exc)
        return []
    if op is None:
        return []
    try:
        span, steps = span_budgeted(op, p.bench.warmup, p.bench.iterations, p.bench.max_seconds)
    finally:
        op.close()
    row = _span_row(op, "concurrent", batch, p.bench.contexts, span, steps, contexts=p.bench.contexts)
    log.info("%s concurrent x%d batch %d: %.0f img/s", runner.backend, p.bench.contexts, batch, row["throughput_ips"])
    return [row]


def child(args: argparse.Namespace) -> None:
    p = load_params(args.params)
    artifacts = Artifacts(args.checkpoint, args.onnx, args.engine_dir)
    try:
        runner = create_runner(args.backend, args.precision, artifacts, p)
    except (UnsupportedCombination, BackendUnavailable) as exc:
        write_json(args.part, status_of(exc))
        return
    gpu = device_record(runner.device)  # the GPU this stage holds (stages.lib.core.gpus), or "cpu"
    try:
        base = _cuda_mem() if runner.device == "cuda" else None
        with runner:
            rows = bench_runner(runner, args.backend, p)
            record: dict[str, Any] = {"status": "ok", "rows": rows, "runtime": runner.describe(), "gpu": gpu}
            after = _cuda_mem() if base is not None else None
            if base is not None and after is not None:
                record["device_mem_mb"] = round(after - base, 1)
            if p.bench.layer_profile and hasattr(runner, "layer_profile"):
                b = max(batch_sizes(args.backend, p))
                layers = runner.layer_profile(b, LAYER_PROFILE_ITERATIONS)
                record["layer_profile"] = {
                    "batch_size": b,
                    "layers": layers,  # every layer, slowest first; the report shows ten
                    "total_ms": round(sum(r["ms_mean"] for r in layers), 4),
                }
    except PipelineError as exc:
        record = {"status": "failed", "reason": str(exc), "gpu": gpu}
    write_json(args.part, record)


def headline(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Flat numbers for `dvc metrics`: batch-1 latency and best throughput per mode."""
    out: dict[str, Any] = {}
    for mode in ("compute", "end_to_end", "pipelined", "concurrent"):
        mine = [r for r in rows if r["mode"] == mode]
        if not mine:
            continue
        best = max(mine, key=lambda r: r["throughput_ips"])
        out[f"{mode}_throughput_ips_max"] = best["throughput_ips"]
        out[f"{mode}_throughput_batch"] = best["batch_size"]
        if "contexts" in best:
            out[f"{mode}_contexts"] = best["contexts"]
        b1 = [r for r in mine if r["batch_size"] == 1 and "latency_ms_p50" in r]
        if b1:
            out[f"{mode}_bs1_latency_ms_p50"] = min(r["latency_ms_p50"] for r in b1)
    return out


def parent(args: argparse.Namespace) -> None:
    p = load_params(args.params)
    child_args = passthrough(args)
    results = per_backend("stages.benchmark", p.backends, child_args)
    summary: dict[str, Any] = {"precision": args.precision, "profile": p.profile}
    records: list[dict[str, Any]] = []
    layers: dict[str, Any] = {}
    for backend, rec in results.items():
        rows = rec.pop("rows", [])
        where = columns(rec.get("gpu"))  # every row names the GPU it ran on ("cpu" for a CPU backend)
        records += [{"backend": backend, "precision": args.precision, **r, **where} for r in rows]
        if "layer_profile" in rec:
            layers[backend] = rec.pop("layer_profile")
        summary[backend] = {**rec, **headline(rows)} if rows else rec
    write_records(args.records, records)
    write_json(args.layers, layers)
    write_json(args.out, summary)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    add_arguments(ap, "benchmark")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--records", type=Path)
    ap.add_argument("--layers", type=Path)
    args = ap.parse_args(argv)
    if args.backend:
        return run_main(f"benchmark {args.backend} {args.precision}", lambda: child(args), gpu=True)
    if args.out is None or args.records is None or args.layers is None:
        ap.error("--out, --records and --layers are required")
    return run_main(f"benchmark {args.precision}", lambda: parent(args), gpu=True)


if __name__ == "__main__":
    sys.exit(main())
