"""The served benchmark's load generator: a second process that loads a Triton server.

Runs in the serving interpreter (it needs tritonclient):

    python -m stages.lib.serving.load --spec spec.json --url 127.0.0.1:N --concurrencies 1,4
        --batch-size B --requests R --max-seconds S --out results.json

At each concurrency level, that many threads (each with its own gRPC client) keep one
request in flight each, after two untimed warm-up requests per thread, until the level has
sent ``--requests`` requests or run ``--max-seconds``. A latency sample is the host clock
around one blocking ``infer()`` call over loopback: serialising the input, the server's
queueing, batching and inference, and deserialising the output. Throughput is images
answered over the level's wall time. The server's own statistics (executed batch sizes,
queue and compute times) are read before and after each level.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..core.cli import run_main
from ..core.errors import ServingError
from ..core.io import read_json, write_json
from .process import TOKEN_ENV
from .spec import ModelSpec, TensorSpec

log = logging.getLogger(__name__)

WARMUP_PER_THREAD = 2
TIMED = (
    "client-side request latency: host perf_counter around one blocking gRPC infer() over loopback "
    "(127.0.0.1), input serialisation, server queueing/batching/inference and output deserialisation included"
)


def make_input(t: TensorSpec, batch: int, seed: int) -> np.ndarray:
    """Random data of the tensor's type: normal floats, or integers within 0..255."""
    if -1 in t.dims:
        raise ServingError(f"input {t.name!r} has a variable dimension {t.dims}: the load generator needs fixed sizes")
    rng = np.random.default_rng(seed)
    shape = (batch, *t.dims)
    dtype = np.dtype(t.dtype)
    if dtype.kind == "f":
        return rng.standard_normal(shape, dtype=np.float32).astype(dtype)
    info = np.iinfo(dtype) if dtype.kind in "iu" else None
    lo, hi = (max(0, int(info.min)), min(255, int(info.max))) if info else (0, 1)
    return rng.integers(lo, hi + 1, size=shape).astype(dtype)


class Level:
    """One concurrency level: shared request budget, latencies and the first error."""

    def __init__(self, requests: int, max_seconds: float) -> None:
        self.requests, self.max_seconds = requests, max_seconds
        self.lock = threading.Lock()
        self.sent = 0
        self.latencies_ms: list[float] = []
        self.errors: list[str] = []
        self.start = threading.Event()
        self.t0 = 0.0
        self.t_end = 0.0

    def take(self) -> bool:
        """Whether a thread may send one more timed request."""
        with self.lock:
            if self.errors or self.sent >= self.requests or time.perf_counter() - self.t0 > self.max_seconds:
                return False
            self.sent += 1
            return True

    def done(self, ms: float, t_end: float) -> None:
        with self.lock:
            self.latencies_ms.append(ms)
            self.t_end = max(self.t_end, t_end)


def worker(url: str, spec: ModelSpec, batch: int, seed: int, level: Level, ready: threading.Barrier) -> None:
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(url)
    try:
        inputs = []
        for t in spec.inputs:
            x = make_input(t, batch, seed)
            inp = grpcclient.InferInput(t.name, list(x.shape), t.triton_dtype)
            inp.set_data_from_numpy(x)
            inputs.append(inp)
        outputs = [grpcclient.InferRequestedOutput(t.name) for t in spec.outputs]
        for _ in range(WARMUP_PER_THREAD):
            _check(client.infer(spec.name, inputs, outputs=outputs), spec, batch)
        ready.wait()
        level.start.wait()
        while level.take():
            t0 = time.perf_counter()
            client.infer(spec.name, inputs, outputs=outputs)
            t1 = time.perf_counter()
            level.done((t1 - t0) * 1000.0, t1)
    except Exception as exc:  # tritonclient raises InferenceServerException and grpc errors
        with level.lock:
            level.errors.append(f"{type(exc).__name__}: {exc}")
        ready.abort()
    finally:
        client.close()


def _check(result: Any, spec: ModelSpec, batch: int) -> None:
    for t in spec.outputs:
        got = result.as_numpy(t.name)
        if got is None or got.shape != (batch, *t.dims):
            shape = None if got is None else got.shape
            raise ServingError(f"{spec.name}: output {t.name!r} came back as {shape}, expected {(batch, *t.dims)}")


# PyTriton restricts the statistics API to requests carrying its access token; over gRPC,
# Triton expects restricted-protocol headers with this prefix.
_TOKEN_HEADER = "triton-grpc-protocol-triton-access-token"


def server_stats(client: Any, model: str, token: str | None) -> dict[str, int]:
    """Cumulative counters of the model's server-side statistics."""
    headers = {_TOKEN_HEADER: token} if token else None
    raw = client.get_inference_statistics(model, headers=headers, as_json=True)["model_stats"][0]
    stats = raw.get("inference_stats", {})

    def count(*path: str) -> int:
        node: Any = stats
        for key in path:
            node = node.get(key, {}) if isinstance(node, dict) else {}
        return int(node or 0)

    return {
        "inferences": int(raw.get("inference_count", 0)),
        "executions": int(raw.get("execution_count", 0)),
        "requests": count("success", "count"),
        "queue_ns": count("queue", "ns"),
        "compute_ns": count("compute_input", "ns") + count("compute_infer", "ns") + count("compute_output", "ns"),
    }


def server_side(before: dict[str, int], after: dict[str, int]) -> dict[str, Any]:
    """Per level: the mean batch Triton executed, and each request's mean queue time and the mean
    compute time of the batch it ran in."""
    d = {k: after[k] - before[k] for k in before}
    if not d["executions"] or not d["requests"]:
        return {}
    return {
        "server_batch_mean": round(d["inferences"] / d["executions"], 2),
        "server_queue_ms_mean": round(d["queue_ns"] / d["requests"] / 1e6, 3),  # per request
        # Triton's inference_stats are per request, and each request of a batch is charged the
        # whole batch's compute: per request this is the compute of the batch it ran in
        "server_compute_ms_mean": round(d["compute_ns"] / d["requests"] / 1e6, 3),
    }


def run_level(args: argparse.Namespace, spec: ModelSpec, concurrency: int, stats: Any) -> dict[str, Any]:
    """Load the server at one concurrency; the level's record."""
    level = Level(args.requests, args.max_seconds)
    ready = threading.Barrier(concurrency + 1)
    threads = [
        threading.Thread(target=worker, args=(args.url, spec, args.batch_size, i, level, ready), daemon=True)
        for i in range(concurrency)
    ]
    for t in threads:
        t.start()
    with contextlib.suppress(threading.BrokenBarrierError):  # a warm-up failed: recorded in level.errors
        ready.wait()
    before = stats()
    cpu0 = time.process_time()
    level.t0 = time.perf_counter()
    level.start.set()
    for t in threads:
        t.join()
    cpu = time.process_time() - cpu0
    if level.errors:
        raise ServingError(f"{spec.name} at concurrency {concurrency}: {level.errors[0]}")
    lat = np.array(level.latencies_ms)
    seconds = level.t_end - level.t0
    record = {
        "concurrency": concurrency,
        "batch_size": args.batch_size,
        "requests": len(lat),
        "images": len(lat) * args.batch_size,
        "seconds": round(seconds, 3),
        "throughput_ips": round(len(lat) * args.batch_size / seconds, 1),
        **{f"latency_ms_p{q}": round(float(np.percentile(lat, q)), 3) for q in (50, 90, 99)},
        "latency_ms_mean": round(float(lat.mean()), 3),
        "latency_ms_max": round(float(lat.max()), 3),
        **server_side(before, stats()),
        "client_cpu_s": round(cpu, 2),
        "timed": TIMED,
    }
    log.info(
        "%s concurrency %d: %.1f img/s, p50 %.2f ms, p99 %.2f ms (%d requests)",
        spec.name,
        concurrency,
        record["throughput_ips"],
        record["latency_ms_p50"],
        record["latency_ms_p99"],
        record["requests"],
    )
    return record


def run(args: argparse.Namespace) -> None:
    from importlib.metadata import version

    import tritonclient.grpc as grpcclient

    spec = ModelSpec.from_json(read_json(args.spec))
    client = grpcclient.InferenceServerClient(args.url)
    token = os.environ.get(TOKEN_ENV)
    try:
        server = client.get_server_metadata(as_json=True)
        levels = [run_level(args, spec, c, lambda: server_stats(client, spec.name, token)) for c in args.concurrencies]
    finally:
        client.close()
    write_json(
        args.out,
        {
            "levels": levels,
            "server": {"triton": server.get("version"), "url": args.url},
            "client": {"tritonclient": version("tritonclient"), "protocol": "grpc"},
        },
    )


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--spec", type=Path, required=True)
    ap.add_argument("--url", required=True, help="gRPC host:port (loopback)")
    ap.add_argument("--concurrencies", type=_ints, required=True, help="comma-separated")
    ap.add_argument("--batch-size", type=int, required=True)
    ap.add_argument("--requests", type=int, required=True, help="timed requests per level at most")
    ap.add_argument("--max-seconds", type=float, required=True, help="per level at most")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    return run_main("load", lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
