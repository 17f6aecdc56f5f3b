"""serve: the served benchmark, one precision: what a Triton Inference Server costs.

For each backend in ``serve.backends`` it starts a real Triton server (PyTriton, in the
serving interpreter $SERVE_PYTHON) on 127.0.0.1 with dynamic batching, serving the model
through the project's own runner and beside it a pass-through model with the same I/O,
batcher and instances that computes nothing. perf_analyzer loads both, back to back, at
each of ``serve.concurrencies``: throughput, client-side p50/p90/p99 latency, and Triton's
server-side queue and compute times and executed batch per level. The pass-through figures
are the ceiling the serving path sets. The model is described by the same spec as the
Triton model repository (stages.package). Without a serving interpreter or perf_analyzer,
with ``serve.enabled`` false, or where a backend cannot run here, the record says
"skipped" and why.
"""

from __future__ import annotations

import argparse
import logging
import secrets
import sys
from pathlib import Path
from typing import Any

from .lib.core import memory
from .lib.core.cli import run_main
from .lib.core.config import load_params
from .lib.core.errors import BackendUnavailable, PipelineError
from .lib.core.io import write_json, write_records
from .lib.core.params import Params
from .lib.serving import perf
from .lib.serving.process import Server, ServingPython, serving_python, workdir
from .lib.serving.server import passthrough_name
from .lib.serving.spec import served_spec
from .lib.trt.engine import BUILD_FILE

log = logging.getLogger(__name__)


def serve_backend(sp: ServingPython, pa: str, backend: str, args: argparse.Namespace, p: Params) -> dict[str, Any]:
    """Serve one backend and load it; its record (status, levels, versions)."""
    try:
        source = args.engine_dir / BUILD_FILE if backend == "tensorrt" else args.onnx
        spec = served_spec(p, args.precision, backend, source)
    except BackendUnavailable as exc:
        return {"status": "skipped", "reason": str(exc)}
    s = p.serve
    size = p.model.image_size
    need = memory.case_need(
        s.batch_size,
        3 * size * size * (1 if p.export.raw_input else 4),
        4 * p.model.num_classes,
        (p.model.arch, p.model.cifar_stem, size),
        args.precision,
    )
    case = f"serve {backend} {args.precision.upper()} batch {s.batch_size}"
    memory.check_fits(case, need, p.device, "lower serve.batch_size")
    token = secrets.token_urlsafe(24)
    with workdir() as tmp:
        spec_file = tmp / "spec.json"
        write_json(spec_file, spec.to_json())
        server_args = ["--spec", str(spec_file), "--params", str(args.params), "--backend", backend]
        server_args += ["--precision", args.precision, "--onnx", str(args.onnx), "--engine-dir", str(args.engine_dir)]
        with Server(sp, server_args, tmp, token, s.startup_timeout_s) as server:
            if server.status["status"] != "ready":
                return {"status": server.status["status"], "reason": server.status.get("reason")}
            load = perf.Load(s.batch_size, window_ms=round(s.max_seconds * 1000 / perf.WINDOWS))
            models = {"model": spec.name, "passthrough": passthrough_name(spec.name)}
            levels = perf.measure(pa, models, server.grpc_url, load, s.concurrencies, token, tmp)
    return {
        "status": "ok",
        "model": spec.name,
        "levels": levels,
        "runtime": server.status.get("runtime"),
        "server": {
            "triton": server.status.get("triton"),
            "pytriton": sp.versions["pytriton"],
            "python": sp.versions["version"],
            "url": server.grpc_url,
        },
        "client": {"perf_analyzer": perf.version(pa), "protocol": load.protocol},
    }


def headline(levels: list[dict[str, Any]]) -> dict[str, Any]:
    """Flat numbers for `dvc metrics`: best throughput of the model and of the pass-through
    model, and the model's latency at the lowest concurrency."""
    model = [r for r in levels if r["served"] == "model"]
    passthrough = [r for r in levels if r["served"] == "passthrough"]
    best = max(model, key=lambda r: r["throughput_ips"])
    low = min(model, key=lambda r: r["concurrency"])
    out = {
        "served_throughput_ips_max": best["throughput_ips"],
        "served_throughput_concurrency": best["concurrency"],
        f"served_c{low['concurrency']}_latency_ms_p50": low["latency_ms_p50"],
        f"served_c{low['concurrency']}_latency_ms_p99": low["latency_ms_p99"],
    }
    if passthrough:
        out["passthrough_throughput_ips_max"] = max(r["throughput_ips"] for r in passthrough)
    return out


def run(args: argparse.Namespace) -> None:
    p = load_params(args.params)
    results: dict[str, dict[str, Any]] = {}
    try:
        if not p.serve.enabled:
            raise BackendUnavailable("serve.enabled is false")
        sp = serving_python()
        pa = perf.find_perf_analyzer(sp.python)
    except BackendUnavailable as exc:
        log.warning("served benchmark skipped: %s", exc)
        results = {b: {"status": "skipped", "reason": str(exc)} for b in p.serve.backends}
    else:
        for backend in p.serve.backends:
            try:
                results[backend] = serve_backend(sp, pa, backend, args, p)
            except PipelineError as exc:
                log.error("%s: %s", backend, exc)
                results[backend] = {"status": "failed", "reason": str(exc)}
            if results[backend]["status"] != "ok":
                log.warning("%s %s: %s", backend, results[backend]["status"], results[backend].get("reason"))
    write_outputs(args, p, results)


def write_outputs(args: argparse.Namespace, p: Params, results: dict[str, dict[str, Any]]) -> None:
    summary: dict[str, Any] = {"precision": args.precision, "profile": p.profile}
    records: list[dict[str, Any]] = []
    for backend, rec in results.items():
        levels = rec.pop("levels", [])
        records += [{"backend": backend, "precision": args.precision, "model": rec["model"], **r} for r in levels]
        summary[backend] = {**rec, **headline(levels)} if levels else rec
    write_records(args.records, records)
    write_json(args.out, summary)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--precision", required=True, choices=("fp32", "fp16", "int8"))
    ap.add_argument("--onnx", type=Path, required=True)
    ap.add_argument("--engine-dir", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True, help="summary JSON (metrics)")
    ap.add_argument("--records", type=Path, required=True, help="one CSV row per backend and concurrency (plots)")
    args = ap.parse_args(argv)
    return run_main(f"serve {args.precision}", lambda: run(args), gpu=True)


if __name__ == "__main__":
    sys.exit(main())
