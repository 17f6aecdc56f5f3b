"""What PyTriton's serving path costs, option by option: the pass-through model (no compute)
served with each option and loaded by perf_analyzer, the options interleaved in every round
so they see the same machine.

    SERVE_PYTHON=... python -m stages.lib.serving.options --rounds 3 --out reports/serving-cpu/options.json

Each option changes one thing against ``baseline`` (the serve stage's settings: one instance,
max batch 64, preferred batch 8, 500 us queue delay, gRPC, 8 images a request, TensorStore
shared memory). Prints a markdown table of the median over rounds per option and
concurrency; writes every measurement to ``--out``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import platform
import secrets
import statistics
import sys
from pathlib import Path
from typing import Any

from ..core.io import write_json
from . import perf
from .process import Server, ServingPython, serving_python, workdir
from .server import passthrough_name
from .spec import ModelSpec, TensorSpec

log = logging.getLogger(__name__)

BASE = ModelSpec(
    "resnet18_cifar_fp32",
    "onnxruntime_onnx",
    64,
    (8,),
    500,
    (TensorSpec("input", "float32", (3, 32, 32)),),
    (TensorSpec("logits", "float32", (10,)),),
    "KIND_CPU",
)


@dataclasses.dataclass(frozen=True)
class Option:
    """One way of serving or loading the pass-through model: its spec, server flags and
    environment, and what perf_analyzer sends."""

    name: str
    spec: ModelSpec = BASE
    server_args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    load: perf.Load = perf.Load(batch_size=8, window_ms=1000)

    def server_key(self) -> tuple[Any, ...]:
        return (json.dumps(self.spec.to_json()), self.server_args, self.env)


OPTIONS = [
    Option("baseline"),
    Option("http", load=perf.Load(8, 1000, "http")),
    Option("1 image a request", load=perf.Load(1, 1000)),
    Option("32 images a request", load=perf.Load(32, 1000)),
    Option("4 instances", server_args=("--instances", "4")),
    Option("decoupled", server_args=("--decoupled",), load=perf.Load(8, 1000, streaming=True)),
    Option("PYTRITON_NO_TENSORSTORE=1", env=(("PYTRITON_NO_TENSORSTORE", "1"),)),
    Option(
        "max batch 1024, no preferred size",
        spec=dataclasses.replace(BASE, max_batch_size=1024, preferred_batch_sizes=()),
    ),
    Option("no queue delay", spec=dataclasses.replace(BASE, max_queue_delay_us=0)),
]


def measure(pa: str, server: Server, tmp: Path, option: Option, levels: list[int]) -> list[dict[str, Any]]:
    """The pass-through model at each level, loaded as ``option`` says."""
    url = server.grpc_url if option.load.protocol == "grpc" else f"127.0.0.1:{server.http_port}"
    model = passthrough_name(option.spec.name)
    return [perf.run_level(pa, model, url, option.load, c, server.token, tmp) for c in levels]


def one_round(sp: ServingPython, pa: str, options: list[Option], levels: list[int]) -> list[dict[str, Any]]:
    """Every option once; options that share a server are measured on one server."""
    out = []
    groups: dict[tuple[Any, ...], list[Option]] = {}
    for o in options:
        groups.setdefault(o.server_key(), []).append(o)
    for group in groups.values():
        first = group[0]
        with workdir() as tmp:
            write_json(tmp / "spec.json", first.spec.to_json())
            args = ["--spec", str(tmp / "spec.json"), "--backend", "none", "--precision", "fp32", *first.server_args]
            with Server(sp, args, tmp, secrets.token_urlsafe(16), 300.0, dict(first.env)) as server:
                for o in group:
                    for rec in measure(pa, server, tmp, o, levels):
                        out.append({"option": o.name, **rec})
                        log.info(
                            "%s c%d: %.0f img/s p50 %.2f ms",
                            o.name,
                            rec["concurrency"],
                            rec["throughput_ips"],
                            rec["latency_ms_p50"],
                        )
    return out


def _median(rows: list[dict[str, Any]], key: str) -> str:
    values = [r[key] for r in rows if r.get(key) is not None]
    return f"{statistics.median(values):,.2f}" if values else "-"


def table(records: list[dict[str, Any]]) -> list[str]:
    """Markdown: per option and concurrency, the median over rounds (and each round's img/s)."""
    lines = [
        "| option | in flight | img/s (median) | img/s each round | p50 ms | p99 ms | server queue ms "
        "| server compute ms | executed batch |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, c in dict.fromkeys((r["option"], r["concurrency"]) for r in records):
        rows = [r for r in records if r["option"] == name and r["concurrency"] == c]
        ips = [r["throughput_ips"] for r in rows]
        cells = [
            _median(rows, k)
            for k in (
                "latency_ms_p50",
                "latency_ms_p99",
                "server_queue_ms_mean",
                "server_compute_ms_mean",
                "server_batch_mean",
            )
        ]
        lines.append(
            f"| {name} | {c} | {statistics.median(ips):,.0f} | {', '.join(f'{v:,.0f}' for v in ips)} "
            f"| {' | '.join(cells)} |"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--concurrencies", default="1,64")
    ap.add_argument("--only", default="", help="comma-separated option names (default: all)")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    levels = [int(c) for c in args.concurrencies.split(",")]
    options = [o for o in OPTIONS if not args.only or o.name in args.only.split(",")]
    sp = serving_python()
    pa = perf.find_perf_analyzer(sp.python)
    records = []
    for r in range(args.rounds):
        records += [{"round": r + 1, **rec} for rec in one_round(sp, pa, options, levels)]
    lines = table(records)
    machine: dict[str, Any] = {"machine": platform.machine(), "cpus": os.cpu_count(), "perf_analyzer": perf.version(pa)}
    machine["load_average_1min"] = os.getloadavg()[0]  # other work on a shared host moves every figure
    command = "python -m stages.lib.serving.options " + " ".join(argv if argv is not None else sys.argv[1:])
    write_json(args.out, {"command": command, **machine, "versions": sp.versions, "records": records})
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
