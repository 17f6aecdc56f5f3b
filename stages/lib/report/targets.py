"""Performance targets (params ``targets``) checked against one run's benchmark and evaluation.

Informative only: the report shows each target next to what this run measured, and nothing
fails on a miss (the quality gate is for accuracy). A target whose backend or precision did not
run is "not measured", never estimated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..core.params import TargetsParams
from .results import ByPrecision, ok_record


@dataclass(frozen=True)
class TargetRow:
    key: str  # metrics.json: target_<key> (the measured value) and target_<key>_met
    target: str  # what is asked, in words
    measured: float | None  # None: not measured in this run
    measured_text: str  # the value with its context, or why it was not measured
    met: bool | None  # None: not measured
    gap: str = ""  # how far off, when not met: "11.9% short"

    @property
    def result(self) -> str:
        if self.met is None:
            return "not measured"
        return "met" if self.met else f"**{self.gap}**"


def check(
    targets: TargetsParams, gpu: str | None, benches: ByPrecision, records: list[dict[str, Any]], evals: ByPrecision
) -> list[TargetRow]:
    """One row per target set for ``gpu``; none when targets are off (targets.enabled false)
    or none are set for that GPU."""
    t = targets.for_gpu(gpu)
    if not targets.enabled or t is None:
        return []
    rows: list[TargetRow] = []
    if t.int8_min_ips is not None:
        rows.append(_int8_throughput(t.int8_min_ips, benches))
    if t.int8_vs_compile_fp16 is not None:
        rows.append(_int8_vs_compile(t.int8_vs_compile_fp16, benches))
    rows += [_batch1(prec, limit, benches) for prec, limit in t.batch1_max_ms.items()]
    if t.int8_max_top1_drop is not None:
        rows.append(_int8_top1(t.int8_max_top1_drop, evals))
    if t.pipelined_within is not None:
        rows += [_pipelined(prec, t.pipelined_within, benches, records) for prec in benches]
    return rows


def metrics(rows: list[TargetRow]) -> dict[str, Any]:
    """Flat keys for metrics.json, only for targets this run measured."""
    m: dict[str, Any] = {}
    for r in rows:
        if r.met is not None:
            m[f"target_{r.key}"] = r.measured
            m[f"target_{r.key}_met"] = r.met
    return m


def section(targets: TargetsParams, profile: str, rows: list[TargetRow], gpu: str | None) -> list[str]:
    """summary.md's "## Performance targets": the rows, or why there are none."""
    if not targets.gpus:
        return []
    lines = ["", "## Performance targets", ""]
    known = ", ".join(targets.gpus)
    if not targets.enabled:
        return lines + [f"Not checked in profile {profile} (targets.enabled is false); targets are set for: {known}."]
    t = targets.for_gpu(gpu)
    if t is None or not t.configured:
        here = gpu or "a machine without a CUDA GPU"
        return lines + [f"No performance targets for {here}; targets are set for: {known}."]
    lines += [
        f"Targets set for {gpu} (params: targets.gpus). "
        "Informative: a missed target does not fail the run (the quality gate checks accuracy only).",
        "",
        "| target | measured | result |",
        "|---|---|---|",
    ]
    lines += [f"| {r.target} | {r.measured_text} | {r.result} |" for r in rows]
    return lines + [
        "",
        "img/s and batch-1 latency are GPU compute on device-resident input, the best with or without a "
        "CUDA graph (as in the headline table); pipelined is end to end, copies overlapped with compute.",
    ]


# -- one function per kind of target ---------------------------------------------------------


def _int8_throughput(limit: float, benches: ByPrecision) -> TargetRow:
    key, target = "int8_throughput_ips", f"TensorRT INT8 best img/s (compute) >= {limit:,.0f}"
    rec = ok_record(benches, "int8", "tensorrt")
    if rec is None:
        return _not_measured(key, target, _why(benches, "benchmark", "int8", "tensorrt"))
    ips = float(rec["compute_throughput_ips_max"])
    return _at_least(key, target, ips, limit, f"{ips:,.0f} (b{rec.get('compute_throughput_batch')})")


def _int8_vs_compile(limit: float, benches: ByPrecision) -> TargetRow:
    key = "int8_vs_compile_fp16_ratio"
    target = f"TensorRT INT8 best img/s (compute) >= {limit:g}x torch_compile FP16's"
    trt, tc = ok_record(benches, "int8", "tensorrt"), ok_record(benches, "fp16", "torch_compile")
    if trt is None:
        return _not_measured(key, target, _why(benches, "benchmark", "int8", "tensorrt"))
    if tc is None:
        return _not_measured(key, target, _why(benches, "benchmark", "fp16", "torch_compile"))
    a, b = float(trt["compute_throughput_ips_max"]), float(tc["compute_throughput_ips_max"])
    return _at_least(key, target, round(a / b, 4), limit, f"{a / b:.2f}x ({a:,.0f} vs {b:,.0f})")


def _batch1(prec: str, limit: float, benches: ByPrecision) -> TargetRow:
    key, target = f"{prec}_bs1_latency_ms", f"TensorRT {prec.upper()} batch-1 p50 <= {limit:g} ms"
    rec = ok_record(benches, prec, "tensorrt")
    if rec is None:
        return _not_measured(key, target, _why(benches, "benchmark", prec, "tensorrt"))
    ms = rec.get("compute_bs1_latency_ms_p50")
    if ms is None:
        return _not_measured(key, target, "no batch-1 case (bench.batch_sizes)")
    ms = float(ms)
    met = ms <= limit
    return TargetRow(key, target, ms, f"{ms:.4f} ms", met, "" if met else f"{(ms - limit) / limit:.1%} over")


def _int8_top1(limit: float, evals: ByPrecision) -> TargetRow:
    key, target = "int8_top1_drop_points", f"TensorRT INT8 top-1 within {limit:g} points of TensorRT FP32"
    i8, f32 = ok_record(evals, "int8", "tensorrt"), ok_record(evals, "fp32", "tensorrt")
    if i8 is None:
        return _not_measured(key, target, _why(evals, "evaluation", "int8", "tensorrt"))
    if f32 is None:
        return _not_measured(key, target, _why(evals, "evaluation", "fp32", "tensorrt"))
    drop = round(float(f32["top1"]) - float(i8["top1"]), 6)  # top-1 is given to 0.01: no float noise
    met = drop <= limit
    text = f"{float(i8['top1']):.2f}% vs {float(f32['top1']):.2f}%: drop {drop:.2f} points"
    return TargetRow(key, target, drop, text, met, "" if met else f"{drop - limit:.2f} points over")


def _pipelined(prec: str, within: float, benches: ByPrecision, records: list[dict[str, Any]]) -> TargetRow:
    key = f"{prec}_pipelined_vs_compute_ratio"
    target = f"TensorRT {prec.upper()} pipelined img/s within {within:.0%} of compute at its batch"
    mine = [r for r in records if r.get("backend") == "tensorrt" and r.get("precision") == prec and _ips(r)]
    piped = [r for r in mine if r.get("mode") == "pipelined"]
    if not piped:
        ran = ok_record(benches, prec, "tensorrt") is not None
        return _not_measured(key, target, "no pipelined run" if ran else _why(benches, "benchmark", prec, "tensorrt"))
    batch = max(int(r["batch_size"]) for r in piped)  # the largest batch
    pipe = max(_ips(r) for r in piped if int(r["batch_size"]) == batch)
    compute = [_ips(r) for r in mine if r.get("mode") == "compute" and int(r["batch_size"]) == batch]
    if not compute:
        return _not_measured(key, target, f"no compute case at b{batch}")
    best = max(compute)
    below = 1.0 - pipe / best
    met = below <= within
    text = f"{pipe:,.0f} vs {best:,.0f} at b{batch}: " + (f"{below:.1%} below" if below >= 0 else f"{-below:.1%} above")
    return TargetRow(
        key,
        target,
        round(pipe / best, 4),
        text,
        met,
        "" if met else f"{100 * (below - within):.1f} points over {within:.0%}",
    )


# -- helpers -----------------------------------------------------------------------------------


def _at_least(key: str, target: str, value: float, limit: float, text: str) -> TargetRow:
    met = value >= limit
    return TargetRow(key, target, value, text, met, "" if met else f"{(limit - value) / limit:.1%} short")


def _not_measured(key: str, target: str, why: str) -> TargetRow:
    return TargetRow(key, target, None, f"not measured: {why}", None)


def _why(table: ByPrecision, what: str, prec: str, backend: str) -> str:
    """Why a backend x precision has no usable result, as the report's inputs say it."""
    if prec not in table:
        return f"{prec.upper()} is not among this run's precisions"
    rec = table[prec].get(backend)
    status = rec.get("status") if isinstance(rec, dict) else None
    return f"{backend} {prec.upper()} {what}: {status or 'no result'}"


def _ips(r: dict[str, Any]) -> float:
    """A CSV row's img/s (0.0 where the row has none)."""
    v = r.get("throughput_ips")
    return float(v) if v not in (None, "") else 0.0
