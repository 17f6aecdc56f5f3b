"""The markdown tables of a run's summary: accuracy, speed, engines, slowest layers."""

from __future__ import annotations

from typing import Any

from .results import Collected, ok_records

TOP_LAYERS = 10  # slowest layers shown per engine (the benchmark keeps them all)


def fmt(v: Any, spec: str = ".2f") -> str:
    if v is None or v == "":
        return "-"
    try:
        return format(float(v), spec)
    except (TypeError, ValueError):
        return str(v)


def accuracy_table(c: Collected) -> list[str]:
    rows = [
        "| backend | precision | top-1 % | agreement vs ORT FP32 | max abs logit diff | images |",
        "|---|---|---|---|---|---|",
    ]
    for prec, backend, rec in ok_records(c.evals):
        rows.append(
            f"| {backend} | {prec.upper()} | {rec['top1']:.2f} | "
            f"{rec['top1_agreement_vs_ort_fp32']:.4f} ({rec['agreement_images']} img) | "
            f"{fmt(rec['max_abs_diff_vs_ort_fp32'], '.3g')} | {rec['images']} |"
        )
    return rows


def bench_table(c: Collected) -> list[str]:
    rows = [
        "| backend | precision | batch | mode | CUDA graph | p50 ms | p99 ms | img/s | iterations |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in c.records:
        rows.append(
            f"| {r['backend']} | {r['precision'].upper()} | {r['batch_size']} | {r['mode']} | "
            f"{r.get('cuda_graph')} | {fmt(r.get('latency_ms_p50'), '.4f')} | "
            f"{fmt(r.get('latency_ms_p99'), '.4f')} | {fmt(r.get('throughput_ips'), ',.0f')} | "
            f"{r.get('iterations')} |"
        )
    return rows


def headline_table(c: Collected) -> list[str]:
    rows = [
        "| backend | precision | batch-1 p50 ms (compute) | best img/s (compute) | "
        "best img/s (end to end) | pipelined img/s | concurrent img/s | device MB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for prec, backend, rec in ok_records(c.benches):
        best = f"{fmt(rec.get('compute_throughput_ips_max'), ',.0f')} (b{rec.get('compute_throughput_batch')})"
        e2e = (
            f"{fmt(rec.get('end_to_end_throughput_ips_max'), ',.0f')} (b{rec.get('end_to_end_throughput_batch')})"
            if rec.get("end_to_end_throughput_ips_max")
            else "-"
        )
        rows.append(
            f"| {backend} | {prec.upper()} | {fmt(rec.get('compute_bs1_latency_ms_p50'), '.4f')} | "
            f"{best} | {e2e} | {fmt(rec.get('pipelined_throughput_ips_max'), ',.0f')} | "
            f"{_concurrent(rec)} | "
            f"{fmt(rec.get('device_mem_mb'), '.0f')} |"
        )
    return rows


def _concurrent(rec: dict[str, Any]) -> str:
    ips = rec.get("concurrent_throughput_ips_max")
    if ips is None:
        return "-"
    return f"{fmt(ips, ',.0f')} (b{rec.get('concurrent_throughput_batch')} x{rec.get('concurrent_contexts')})"


def timed_notes(c: Collected) -> list[str]:
    seen: dict[str, str] = {}
    for r in c.records:
        key = f"{r['backend']} / {r['mode']}{' + graph' if str(r.get('cuda_graph')) == 'True' else ''}"
        seen.setdefault(key, f"{r.get('timed')}; clock: {r.get('clock')}")
    return [f"- **{k}**: {v}" for k, v in sorted(seen.items())]


def build_table(c: Collected) -> list[str]:
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


def layer_tables(c: Collected) -> list[str]:
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
