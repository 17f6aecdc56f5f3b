"""The served benchmark's load generator: Triton's perf_analyzer (C++), one run per
concurrency level against a server on 127.0.0.1.

perf_analyzer keeps ``concurrency`` requests in flight (synchronous calls, one per client
thread), measures three time windows after its own warm-up, and reports their average:
throughput, client-side latency percentiles, and from Triton's statistics each request's
mean queue and compute times and the batches the server executed. `make serve-venv`
installs it next to the serving interpreter (tools/serving/install-perf-analyzer.sh).
"""

from __future__ import annotations

import csv
import io
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.errors import BackendUnavailable, ServingError

PERF_ANALYZER = "PERF_ANALYZER"  # overrides where perf_analyzer is looked for
WINDOWS = 3  # perf_analyzer's stability check compares the last three windows
SLACK_S = 60.0  # perf_analyzer's start, warm-up and statistics, beyond its windows
# PyTriton restricts the statistics API to requests that carry its access token; over gRPC,
# Triton reads restricted-protocol headers with this prefix.
TOKEN_HEADER = {"grpc": "triton-grpc-protocol-triton-access-token", "http": "triton-access-token"}
TIMED = (
    "perf_analyzer {version}: client-side request latency over {protocol} on loopback (127.0.0.1), "
    "synchronous requests, the mean of 3 windows of {window_ms} ms; server queue and compute from Triton's "
    "statistics, per request"
)


@dataclass(frozen=True)
class Load:
    """What one perf_analyzer run sends: images a request, protocol, window length."""

    batch_size: int
    window_ms: int
    protocol: str = "grpc"  # or http
    streaming: bool = False  # gRPC streaming, which decoupled models need


def find_perf_analyzer(serve_python: str, environ: dict[str, str] | None = None) -> str:
    """perf_analyzer: $PERF_ANALYZER, else next to the serving interpreter, else on PATH;
    BackendUnavailable says how to install it."""
    env = environ if environ is not None else os.environ
    candidates = [env.get(PERF_ANALYZER, ""), str(Path(serve_python).parent / "perf_analyzer")]
    for path in candidates:
        if path and os.access(path, os.X_OK):
            return path
    found = shutil.which("perf_analyzer", path=env.get("PATH"))
    if found:
        return found
    raise BackendUnavailable(
        f"no perf_analyzer next to {serve_python} or on PATH: `make serve-venv` installs it "
        "(tools/serving/install-perf-analyzer.sh; it needs Debian's libb64-0d)"
    )


def command(pa: str, model: str, url: str, load: Load, concurrency: int, token: str, csv_out: Path) -> list[str]:
    """The perf_analyzer command line for one concurrency level."""
    cmd = [pa, "-m", model, "-u", url, "-i", load.protocol, "-b", str(load.batch_size)]
    cmd += ["--concurrency-range", f"{concurrency}:{concurrency}", "-p", str(load.window_ms)]
    # a stability bound no three windows can miss (it is a deviation from their mean, in %):
    # always exactly three windows, so a level's time is bounded; their average is reported
    cmd += ["--max-trials", str(WINDOWS), "-s", "1000", "-f", str(csv_out), "--verbose-csv"]
    if load.streaming:
        cmd.append("--streaming")
    if token:
        cmd += ["-H", f"{TOKEN_HEADER[load.protocol]}:{token}"]
    return cmd


def _us(row: dict[str, str], *keys: str) -> float:
    return sum(float(row[k]) for k in keys) / 1000.0


def parse(csv_text: str, stdout: str, load: Load) -> dict[str, Any]:
    """One level's record from perf_analyzer's --verbose-csv file and its printed report
    (the executed batch comes from the server's inference and execution counts there)."""
    rows = list(csv.DictReader(io.StringIO(csv_text)))
    if len(rows) != 1:
        raise ServingError(f"perf_analyzer wrote {len(rows)} result rows, expected one: {csv_text[:300]!r}")
    row = rows[0]
    record: dict[str, Any] = {
        "concurrency": int(row["Concurrency"]),
        "batch_size": load.batch_size,
        "throughput_ips": round(float(row["Inferences/Second"]), 1),
        **{f"latency_ms_p{q}": round(_us(row, f"p{q} latency"), 3) for q in (50, 90, 99)},
        "latency_ms_mean": round(_us(row, "Avg latency"), 3),
        "server_queue_ms_mean": round(_us(row, "Server Queue"), 3),
        # per request, the compute of the batch it ran in (Triton charges each request the whole batch)
        "server_compute_ms_mean": round(
            _us(row, "Server Compute Input", "Server Compute Infer", "Server Compute Output"), 3
        ),
        "server_infer_ms_mean": round(_us(row, "Server Compute Infer"), 3),
    }
    counts = {k: re.findall(rf"{k} count: (\d+)", stdout) for k in ("Request", "Inference", "Execution")}
    if counts["Request"]:
        record["requests"] = int(counts["Request"][-1])
    if counts["Inference"] and counts["Execution"] and int(counts["Execution"][-1]):
        record["server_batch_mean"] = round(int(counts["Inference"][-1]) / int(counts["Execution"][-1]), 2)
    return record


def version(pa: str) -> str:
    """perf_analyzer's version ("2.51.0"), or "unknown"."""
    proc = subprocess.run([pa, "--version"], capture_output=True, text=True, timeout=30)
    found = re.search(r"Version (\S+)", proc.stdout + proc.stderr)
    return found.group(1) if found else "unknown"


def run_level(pa: str, model: str, url: str, load: Load, concurrency: int, token: str, workdir: Path) -> dict[str, Any]:
    """Measure one model at one concurrency; its record."""
    csv_out = workdir / f"{model}-c{concurrency}.csv"
    cmd = command(pa, model, url, load, concurrency, token, csv_out)
    timeout = WINDOWS * load.window_ms / 1000.0 * 3 + SLACK_S  # perf_analyzer's warm-up is a window or two
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise ServingError(f"perf_analyzer on {model} at concurrency {concurrency} ran past {timeout:.0f} s") from exc
    if proc.returncode != 0 or not csv_out.is_file():
        tail = " ".join((proc.stdout + proc.stderr)[-800:].split())
        raise ServingError(f"perf_analyzer on {model} at concurrency {concurrency} failed ({proc.returncode}): {tail}")
    return parse(csv_out.read_text(), proc.stdout, load)


def measure(
    pa: str, models: dict[str, str], url: str, load: Load, concurrencies: list[int], token: str, workdir: Path
) -> list[dict[str, Any]]:
    """Every model at every concurrency level, the models back to back at each level so they
    see the same machine; ``models`` maps what is served ("model", "passthrough") to the name
    it is served under. Each record says which it is and what was timed."""
    timed = TIMED.format(version=version(pa), protocol=load.protocol, window_ms=load.window_ms)
    return [
        {"served": served, **run_level(pa, name, url, load, c, token, workdir), "timed": timed}
        for c in concurrencies
        for served, name in models.items()
    ]
