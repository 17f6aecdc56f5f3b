"""The report's "Served through Triton" section and plot: what serving costs.

Per concurrency, three figures side by side: the model served (reports/<model>/serve/
<precision>.json and .csv, from the serve stage), the pass-through model served by the same
server with no compute (the ceiling the serving path sets), and the same runner in process
(reports/<model>/bench/<precision>.csv, from the benchmark stage: its best img/s, and its
latency at one request's batch). In process means end to end (host input to host logits)
where the benchmark has it, else ``compute`` (on the CPU that is the same thing: host arrays
in and out).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

SERVE_DIR, BENCH_DIR = "serve", "bench"
NUMERIC = (
    "concurrency",
    "batch_size",
    "requests",
    "throughput_ips",
    "latency_ms_p50",
    "latency_ms_p99",
    "server_batch_mean",
    "server_queue_ms_mean",
    "server_compute_ms_mean",
)
MODEL, PASSTHROUGH = "model", "passthrough"  # the records' "served" column
_PROTOCOLS = {"grpc": "gRPC", "http": "HTTP"}


def read_records(path: Path) -> list[dict[str, Any]]:
    """CSV rows with the numeric columns as numbers; [] when the file is missing or empty."""
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        for key in NUMERIC:
            if row.get(key) not in (None, ""):
                row[key] = float(row[key])
    return rows


def load(model_dir: Path) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    """(serve summaries by precision, serve records, bench records) of one model's reports."""
    summaries = {p.stem: json.loads(p.read_text()) for p in sorted((model_dir / SERVE_DIR).glob("*.json"))}
    served = [r for p in summaries for r in read_records(model_dir / SERVE_DIR / f"{p}.csv")]
    bench = [r for p in summaries for r in read_records(model_dir / BENCH_DIR / f"{p}.csv")]
    return summaries, served, bench


def in_process(bench: list[dict[str, Any]], backend: str, precision: str, batch: int) -> dict[str, Any] | None:
    """The same runner in process: best img/s over batch sizes, and the latency at ``batch``."""
    rows = [r for r in bench if r["backend"] == backend and r["precision"] == precision]
    mode = "end_to_end" if any(r["mode"] == "end_to_end" for r in rows) else "compute"
    rows = [r for r in rows if r["mode"] == mode and r.get("latency_ms_p50") not in (None, "")]
    if not rows:
        return None
    best = max(rows, key=lambda r: r["throughput_ips"])
    at = [r for r in rows if int(r["batch_size"]) == batch]
    same = min(at, key=lambda r: r["latency_ms_p50"]) if at else None
    return {
        "mode": mode,
        "throughput_ips": best["throughput_ips"],
        "batch_size": int(best["batch_size"]),
        "latency_ms_p50": same["latency_ms_p50"] if same else None,
        "latency_ms_p99": same["latency_ms_p99"] if same else None,
    }


def _f(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _series(served: list[dict[str, Any]], what: str = MODEL) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """Rows of the model (or the pass-through model) by (backend, precision), by concurrency;
    rows without a "served" column are the model's."""
    out: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in served:
        if (r.get("served") or MODEL) == what:
            out.setdefault((r["backend"], r["precision"]), []).append(r)
    return {k: sorted(v, key=lambda r: r["concurrency"]) for k, v in out.items()}


def _at(rows: list[dict[str, Any]], concurrency: float) -> dict[str, Any] | None:
    return next((r for r in rows if r["concurrency"] == concurrency), None)


def _pair(row: dict[str, Any] | None, a: str, b: str, spec: str = ".2f") -> str:
    return "-" if row is None else f"{_f(row.get(a), spec)} / {_f(row.get(b), spec)}"


def section(summaries: dict[str, Any], served: list[dict[str, Any]], bench: list[dict[str, Any]]) -> list[str]:
    """Markdown lines of the "Served through Triton" section."""
    lines = ["## Served through Triton", ""]
    ok = [
        (p, b, rec)
        for p, s in summaries.items()
        for b, rec in s.items()
        if isinstance(rec, dict) and rec.get("status") == "ok"
    ]
    if ok:
        _, _, first = ok[0]
        server, client = first.get("server", {}), first.get("client", {})
        loader = (
            f"perf_analyzer {client['perf_analyzer']}"
            if client.get("perf_analyzer")
            else f"tritonclient {client.get('tritonclient')}"
        )
        protocol = _PROTOCOLS.get(client.get("protocol", "grpc"))
        lines += [
            f"Triton {server.get('triton')} (PyTriton {server.get('pytriton')}, Python backend running the project's "
            f"runner), dynamic batching, loaded over {protocol} on 127.0.0.1 by {loader}. "
            "Latency is client-side per request: serialisation, queueing, batching and inference included. "
            "Pass-through: a model with the same I/O, batcher and instances that computes nothing, served by the "
            "same server and measured right after the model at each concurrency: the ceiling of the serving path. "
            "In process: the same runner in the benchmark stage (best img/s over batch sizes; latency at one "
            "request's batch). Server queue and compute: Triton's statistics, per request (compute is that of "
            "the batch the request ran in).",
            "",
            "| backend | precision | in flight | images/request | served img/s | pass-through img/s "
            "| in process img/s | served/pass-through | served p50 / p99 ms | pass-through p50 / p99 ms "
            "| in process p50 / p99 ms | server queue / compute ms | executed batch (mean) |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
    ceilings = _series(served, PASSTHROUGH)
    for (backend, precision), rows in _series(served).items():
        for r in rows:
            ref = in_process(bench, backend, precision, int(r["batch_size"]))
            pt = _at(ceilings.get((backend, precision), []), r["concurrency"])
            ratio = f"{r['throughput_ips'] / pt['throughput_ips']:.2f}" if pt else "-"
            pt_ips = f"{pt['throughput_ips']:,.1f}" if pt else "-"
            ref_ips = f"{ref['throughput_ips']:,.0f} (b{ref['batch_size']})" if ref else "-"
            lines.append(
                f"| {backend} | {precision.upper()} | {int(r['concurrency'])} | {int(r['batch_size'])} "
                f"| {r['throughput_ips']:,.1f} | {pt_ips} | {ref_ips} | {ratio} "
                f"| {_pair(r, 'latency_ms_p50', 'latency_ms_p99')} | {_pair(pt, 'latency_ms_p50', 'latency_ms_p99')} "
                f"| {_pair(ref, 'latency_ms_p50', 'latency_ms_p99')} "
                f"| {_pair(r, 'server_queue_ms_mean', 'server_compute_ms_mean')} "
                f"| {_f(r.get('server_batch_mean'), '.1f')} |"
            )
    not_ok = [
        (p, b, rec)
        for p, s in summaries.items()
        for b, rec in s.items()
        if isinstance(rec, dict) and rec.get("status") != "ok"
    ]
    if not_ok:
        lines += ["", "Not served:"]
        lines += [f"- {b} {p.upper()}: {rec.get('status')}: {rec.get('reason')}" for p, b, rec in not_ok]
    return lines + [""]


def plot(served: list[dict[str, Any]], bench: list[dict[str, Any]], dest: Path) -> Path | None:
    """Served img/s and p99 latency against concurrency, the in-process figures as dashed
    reference lines; None (no file) when nothing was served."""
    if not served:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..core.io import atomic_path

    fig, (ax_ips, ax_lat) = plt.subplots(1, 2, figsize=(11, 4.5))
    ceilings = _series(served, PASSTHROUGH)
    for i, ((backend, precision), rows) in enumerate(_series(served).items()):
        color = f"C{i}"
        label = f"{backend} {precision.upper()}"
        xs = [r["concurrency"] for r in rows]
        ax_ips.plot(xs, [r["throughput_ips"] for r in rows], "o-", color=color, label=f"{label} served")
        ax_lat.plot(xs, [r["latency_ms_p99"] for r in rows], "o-", color=color, label=f"{label} served p99")
        pt = ceilings.get((backend, precision), [])
        if pt:
            xp = [r["concurrency"] for r in pt]
            ax_ips.plot(xp, [r["throughput_ips"] for r in pt], "s:", color=color, label=f"{label} pass-through")
            ax_lat.plot(xp, [r["latency_ms_p99"] for r in pt], "s:", color=color, label=f"{label} pass-through p99")
        _reference_lines(
            ax_ips, ax_lat, in_process(bench, backend, precision, int(rows[0]["batch_size"])), color, label
        )
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    levels = sorted({r["concurrency"] for r in served})
    for ax, ylabel in ((ax_ips, "images/s"), (ax_lat, "p99 latency per request (ms)")):
        ax.set_xscale("log", base=2)
        ax.set_xticks(levels)
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_ylim(0, ax.get_ylim()[1] * 1.08)  # room above the reference lines
        ax.set_xlabel("concurrent requests")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    ax_ips.set_title("Served through Triton: throughput", fontsize=10)
    ax_lat.set_title("Served through Triton: tail latency", fontsize=10)
    fig.tight_layout()
    with atomic_path(dest) as tmp:
        fig.savefig(tmp, dpi=130, format="png")
    plt.close(fig)
    return dest


def _reference_lines(ax_ips: Any, ax_lat: Any, ref: dict[str, Any] | None, color: str, label: str) -> None:
    """The in-process figures as dashed horizontal lines."""
    if not ref:
        return
    ax_ips.axhline(
        ref["throughput_ips"], color=color, ls="--", lw=1, label=f"{label} in process (b{ref['batch_size']})"
    )
    if ref["latency_ms_p99"] is not None:
        ax_lat.axhline(ref["latency_ms_p99"], color=color, ls="--", lw=1, label=f"{label} in process p99")


def served_report(model_dir: Path, plots_dir: Path) -> tuple[list[str], Path | None]:
    """The section's markdown lines and ``plots_dir/served.png`` (None when nothing was served)
    for one model's reports folder; no lines at all when the serve stage has not run."""
    summaries, served, bench = load(model_dir)
    if not summaries:
        return [], None
    return section(summaries, served, bench), plot(served, bench, plots_dir / "served.png")
