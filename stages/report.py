"""report: summary.md, plots and a flat metrics.json from every stage's reports.

It states what ran where (profile, GPU, TensorRT), what was skipped and why, whether the
data was synthetic, and what exactly each timing measured.
"""

from __future__ import annotations

import argparse
import csv
import logging
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import plot
from .lib import targets
from .lib.cli import run_main
from .lib.io import read_json, write_json, write_text
from .lib.params import Params, load_params
from .lib.quality import gate_checks

log = logging.getLogger(__name__)

TOP_LAYERS = 10  # slowest layers shown per engine (the benchmark keeps them all)


@dataclass
class Collected:
    p: Params
    meta: dict[str, Any]
    fingerprint: dict[str, Any]
    train: dict[str, Any]
    history: list[dict[str, Any]]
    export: dict[str, Any]
    calibrate: dict[str, Any]
    builds: dict[str, dict[str, Any]]
    evals: dict[str, dict[str, Any]]
    benches: dict[str, dict[str, Any]]
    records: list[dict[str, Any]]
    layers: dict[str, dict[str, Any]]


def _read_csv(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    with open(path, encoding="utf-8") as f:
        return [row for row in csv.DictReader(f) if row.get("backend") or row.get("epoch")]


def _maybe(path: Path) -> Any:
    return read_json(path) if path.is_file() else {}


def collect(params_path: str, d: Path, fingerprint: Path | None = None, data_meta: Path | None = None) -> Collected:
    p = load_params(params_path)
    precs = p.precisions
    records = [r for prec in precs for r in _read_csv(d / "bench" / f"{prec}.csv")]
    for r in records:
        for k in ("batch_size", "iterations"):
            if r.get(k):
                r[k] = int(float(r[k]))
    return Collected(
        p=p,
        meta=_maybe(data_meta) if data_meta else {},
        fingerprint=_maybe(fingerprint) if fingerprint else {},
        train=_maybe(d / "train.json"),
        history=_read_csv(d / "train_history.csv"),
        export=_maybe(d / "export.json"),
        calibrate=_maybe(d / "calibrate.json"),
        builds={prec: _maybe(d / "build" / f"{prec}.json") for prec in precs},
        evals={prec: _maybe(d / "eval" / f"{prec}.json") for prec in precs},
        benches={prec: _maybe(d / "bench" / f"{prec}.json") for prec in precs},
        records=records,
        layers={prec: _maybe(d / "bench" / f"{prec}_layers.json") for prec in precs},
    )


def _where(c: Collected) -> str:
    fp = c.fingerprint
    gpu = f"{fp.get('gpu')} (driver {fp.get('driver')})" if fp.get("gpu") else "no CUDA GPU"
    trt = f"TensorRT {fp['tensorrt']}" if fp.get("tensorrt") else "no TensorRT"
    return f"{c.p.model.name}, profile {c.p.profile}, {gpu}, {trt}"


def write_plots(c: Collected, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    sub = _where(c) + (" - SYNTHETIC DATA" if c.meta.get("synthetic") else "")
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


def _resumed(train: dict[str, Any]) -> str:
    """How the training's wall time was made up, when an interruption split it into runs."""
    n = int(train.get("resumed") or 0)
    if n == 0:
        return ""
    times = "once" if n == 1 else f"{n} times"
    return f", over {n + 1} runs (interrupted and resumed {times}; each run counted up to its last save)"


def _calibration_check(cal: dict[str, Any]) -> str:
    """The calibrate stage's own check, when it ran: Q/DQ vs FP32 agreement, float layers and
    the calibration methods tried before the kept one."""
    parts = []
    if cal.get("float_convs"):
        parts.append(f"{cal['float_convs']} convs kept in float ({', '.join(cal.get('float_nodes', []))})")
    if cal.get("qdq_top1_agreement_vs_fp32") is not None:
        parts.append(
            f"Q/DQ top-1 agreement with FP32 {100 * cal['qdq_top1_agreement_vs_fp32']:.1f}% "
            f"on {cal.get('agreement_images')} calibration images (ONNX Runtime)"
        )
    dropped = [a for a in cal.get("attempts", []) if a.get("method") != cal.get("method")]
    if dropped:  # calibrate.fallback_methods ran: what the other methods reached
        parts.append(
            "also tried: " + ", ".join(f"{a['method']} {100 * a['qdq_top1_agreement_vs_fp32']:.1f}%" for a in dropped)
        )
    return "; " + "; ".join(parts) if parts else ""


def _status_lines(c: Collected) -> list[str]:
    """What did not run, grouped by reason: '- build/evaluate/benchmark X: status: reason'."""
    grouped: dict[tuple[str, str], list[str]] = {}
    for what, table in (("evaluate", c.evals), ("benchmark", c.benches)):
        for prec, by_backend in table.items():
            if not by_backend:
                grouped.setdefault(("no results", "its stage did not complete"), []).append(f"{what} {prec.upper()}")
            for backend, rec in by_backend.items():
                if isinstance(rec, dict) and rec.get("status") not in (None, "ok"):
                    key = (str(rec["status"]), str(rec.get("reason")))
                    grouped.setdefault(key, []).append(f"{what} {backend} {prec.upper()}")
    for prec, b in c.builds.items():
        if b.get("status") == "skipped":
            grouped.setdefault(("skipped", str(b.get("reason"))), []).append(f"build TensorRT {prec.upper()}")
    return [f"- **{status}**: {reason} ({', '.join(where)})" for (status, reason), where in grouped.items()]


def _fmt(v: Any, spec: str = ".2f") -> str:
    if v is None or v == "":
        return "-"
    try:
        return format(float(v), spec)
    except (TypeError, ValueError):
        return str(v)


def _accuracy_table(c: Collected) -> list[str]:
    rows = [
        "| backend | precision | top-1 % | agreement vs ORT FP32 | max abs logit diff | images |",
        "|---|---|---|---|---|---|",
    ]
    for prec, backend, rec in _ok_records(c.evals):
        rows.append(
            f"| {backend} | {prec.upper()} | {rec['top1']:.2f} | "
            f"{rec['top1_agreement_vs_ort_fp32']:.4f} ({rec['agreement_images']} img) | "
            f"{_fmt(rec['max_abs_diff_vs_ort_fp32'], '.3g')} | {rec['images']} |"
        )
    return rows


def _ok_records(by_precision: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(precision, backend, record) for every backend record that ran ("status": "ok")."""
    for prec, by_backend in by_precision.items():
        for backend, rec in by_backend.items():
            if isinstance(rec, dict) and rec.get("status") == "ok":
                yield prec, backend, rec


def _bench_table(c: Collected) -> list[str]:
    rows = [
        "| backend | precision | batch | mode | CUDA graph | p50 ms | p99 ms | img/s | iterations |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in c.records:
        rows.append(
            f"| {r['backend']} | {r['precision'].upper()} | {r['batch_size']} | {r['mode']} | "
            f"{r.get('cuda_graph')} | {_fmt(r.get('latency_ms_p50'), '.4f')} | "
            f"{_fmt(r.get('latency_ms_p99'), '.4f')} | {_fmt(r.get('throughput_ips'), ',.0f')} | "
            f"{r.get('iterations')} |"
        )
    return rows


def _headline_table(c: Collected) -> list[str]:
    rows = [
        "| backend | precision | batch-1 p50 ms (compute) | best img/s (compute) | "
        "best img/s (end to end) | pipelined img/s | concurrent img/s | device MB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for prec, backend, rec in _ok_records(c.benches):
        best = f"{_fmt(rec.get('compute_throughput_ips_max'), ',.0f')} (b{rec.get('compute_throughput_batch')})"
        e2e = (
            f"{_fmt(rec.get('end_to_end_throughput_ips_max'), ',.0f')} (b{rec.get('end_to_end_throughput_batch')})"
            if rec.get("end_to_end_throughput_ips_max")
            else "-"
        )
        rows.append(
            f"| {backend} | {prec.upper()} | {_fmt(rec.get('compute_bs1_latency_ms_p50'), '.4f')} | "
            f"{best} | {e2e} | {_fmt(rec.get('pipelined_throughput_ips_max'), ',.0f')} | "
            f"{_concurrent(rec)} | "
            f"{_fmt(rec.get('device_mem_mb'), '.0f')} |"
        )
    return rows


def _concurrent(rec: dict[str, Any]) -> str:
    ips = rec.get("concurrent_throughput_ips_max")
    if ips is None:
        return "-"
    return f"{_fmt(ips, ',.0f')} (b{rec.get('concurrent_throughput_batch')} x{rec.get('concurrent_contexts')})"


def _timed_notes(c: Collected) -> list[str]:
    seen: dict[str, str] = {}
    for r in c.records:
        key = f"{r['backend']} / {r['mode']}{' + graph' if str(r.get('cuda_graph')) == 'True' else ''}"
        seen.setdefault(key, f"{r.get('timed')}; clock: {r.get('clock')}")
    return [f"- **{k}**: {v}" for k, v in sorted(seen.items())]


def _build_table(c: Collected) -> list[str]:
    rows = [
        "| precision | mode | build s | warm timing cache | engine MB | layers | layer precisions |",
        "|---|---|---|---|---|---|---|",
    ]
    for prec, b in c.builds.items():
        if b.get("status") == "built":
            rows.append(
                f"| {prec.upper()} | {b['mode']} | {b['build_s']} | {b['timing_cache_warm']} | "
                f"{b['engine_mb']} | {b['layer_count']} | {b['layer_precisions']} |"
            )
    return rows


def _layer_tables(c: Collected) -> list[str]:
    out = []
    for prec, by_backend in c.layers.items():
        prof = by_backend.get("tensorrt") if isinstance(by_backend, dict) else None
        if not prof:
            continue
        out += [
            f"\n**TensorRT {prec.upper()}**, batch {prof['batch_size']}, "
            f"sum of layer times {prof['total_ms']:.4f} ms (IProfiler, synchronous per layer):\n",
            "| layer | precision | mean ms | share |",
            "|---|---|---|---|",
        ]
        for row in prof["layers"][:TOP_LAYERS]:
            share = 100.0 * row["ms_mean"] / prof["total_ms"] if prof["total_ms"] else 0.0
            out.append(f"| `{row['layer'][:90]}` | {row.get('precision', '?')} | {row['ms_mean']:.4f} | {share:.1f}% |")
    return out


def _target_rows(c: Collected) -> list[targets.TargetRow]:
    return targets.check(c.p.targets, c.benches, c.records, c.evals)


def flat_metrics(c: Collected) -> dict[str, Any]:
    """Headline numbers, snake_case with units, for `dvc metrics` / `dvc exp show`."""
    m: dict[str, Any] = {
        "train_test_top1": c.train.get("test_top1"),
        "train_wall_s": c.train.get("train_wall_s"),
        "synthetic_data": bool(c.meta.get("synthetic")),
    }
    for prec, by_backend in c.evals.items():
        for backend, rec in by_backend.items():
            if isinstance(rec, dict) and rec.get("status") == "ok":
                m[f"{backend}_{prec}_top1"] = rec["top1"]
    for prec, by_backend in c.benches.items():
        for backend, rec in by_backend.items():
            if isinstance(rec, dict) and rec.get("status") == "ok":
                for k in (
                    "compute_bs1_latency_ms_p50",
                    "compute_throughput_ips_max",
                    "end_to_end_throughput_ips_max",
                    "pipelined_throughput_ips_max",
                    "concurrent_throughput_ips_max",
                ):
                    if rec.get(k) is not None:
                        m[f"{backend}_{prec}_{k}"] = rec[k]
    m.update(targets.metrics(_target_rows(c)))
    return m


def summary_markdown(c: Collected, plots_dir: Path) -> str:
    p = c.p
    lines = [f"# {p.model.name}: results", ""]
    if c.meta.get("synthetic"):
        lines += ["> **SYNTHETIC DATA**: these numbers say nothing about CIFAR-10.", ""]
    lines += [
        f"- Where: {_where(c)}",
        f"- Data: {c.meta.get('dataset')} from `{c.meta.get('source')}` "
        f"({c.meta.get('train_images')} train / {c.meta.get('test_images')} test; "
        f"calibration: {c.meta.get('calib_images')} images from the {c.meta.get('calib_drawn_from')})",
        f"- Training: {c.train.get('epochs')} epochs on {c.train.get('train_images')} images, "
        f"test top-1 {_fmt(c.train.get('test_top1'))}% (FP32), wall time {_fmt(c.train.get('train_wall_s'), '.0f')} s "
        f"on {c.train.get('device')}" + _resumed(c.train),
        f"- INT8: explicit quantization, {c.calibrate.get('method')} calibration on "
        f"{c.calibrate.get('images')} training images ({c.calibrate.get('tool')})" + _calibration_check(c.calibrate),
        f"- Precisions: {', '.join(p.precisions)}; backends: {', '.join(p.backends)}",
        "",
    ]
    status = _status_lines(c)
    lines += ["## Skipped or not run", ""] + (status or ["- nothing"]) + [""]
    checks = gate_checks(c.evals, p.quality)
    lines += ["## Accuracy (full test split)", ""] + _accuracy_table(c) + [""]
    lines += ["## Quality gate", "", "| backend | precision | rule | passed | detail |", "|---|---|---|---|---|"]
    lines += [
        f"| {ch['backend']} | {ch['precision'].upper()} | {ch['rule']} | "
        f"{'yes' if ch['passed'] else '**NO**'} | {ch['detail']} |"
        for ch in checks
    ]
    lines += targets.section(p.targets, p.profile, _target_rows(c), c.fingerprint.get("gpu"))
    lines += ["", "## Speed: headline", ""] + _headline_table(c)
    lines += ["", "What each number measured:", ""] + _timed_notes(c)
    lines += [
        "",
        f"Latency percentiles over up to {p.bench.iterations} iterations "
        f"(at most {p.bench.max_seconds} s per case) after {p.bench.warmup} warm-up iterations.",
        "",
        "## Speed: every case",
        "",
    ] + _bench_table(c)
    if any(b.get("status") == "built" for b in c.builds.values()):
        lines += ["", "## TensorRT engines", ""] + _build_table(c)
        layer = _layer_tables(c)
        if layer:
            lines += ["", "## Ten slowest layers per engine"] + layer
    plots = sorted(f"{plots_dir.name}/{f.name}" for f in plots_dir.glob("*.png"))
    if plots:
        lines += ["", "## Plots", ""] + [f"![{Path(x).stem}]({x})" for x in plots]
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> None:
    c = collect(args.params, args.model_dir, args.fingerprint, args.data_meta)
    write_plots(c, args.model_dir / "plots")
    write_text(args.model_dir / "summary.md", summary_markdown(c, args.model_dir / "plots"))
    write_json(args.model_dir / "metrics.json", flat_metrics(c))
    for line in _status_lines(c):
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
