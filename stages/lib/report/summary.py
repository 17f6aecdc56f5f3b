"""summary.md of one run: where it ran, what did not run and why, accuracy, the quality
gate, performance targets, speed and engines."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..quant import strongtyping
from . import tables, targets
from .failures import failed_cases
from .quality import gate_checks
from .results import Collected, where


def _resumed(train: dict[str, Any]) -> str:
    """How the training's wall time was made up, when an interruption split it into runs."""
    n = int(train.get("resumed") or 0)
    if n == 0:
        return ""
    times = "once" if n == 1 else f"{n} times"
    return f", over {n + 1} runs (interrupted and resumed {times}; each run counted up to its last save)"


def _classes(meta: dict[str, Any]) -> str:
    """The dataset's class names (the folder names of an image-folder dataset), in label order."""
    names = meta.get("classes") or []
    shown = ", ".join(map(str, names[:20])) + (f", ... ({len(names)} in all)" if len(names) > 20 else "")
    return f"- Classes ({len(names)}): {shown or 'unknown'}"


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
    if cal.get("high_precision") == "fp16":
        parts.append(
            "FP16 base (`calibrate.high_precision: fp16`): top-1 agreement with FP32 "
            f"{100 * cal['fp16_base_top1_agreement_vs_fp32']:.1f}%"
        )
    dropped = [a for a in cal.get("attempts", []) if a.get("method") != cal.get("method")]
    if dropped:  # calibrate.fallback_methods ran: what the other methods reached
        parts.append(
            "also tried: " + ", ".join(f"{a['method']} {100 * a['qdq_top1_agreement_vs_fp32']:.1f}%" for a in dropped)
        )
    return "; " + "; ".join(parts) if parts else ""


def target_rows(c: Collected) -> list[targets.TargetRow]:
    """The performance targets of this run's params, checked against its results."""
    return targets.check(c.p.targets, c.fingerprint.get("gpu"), c.benches, c.records, c.evals)


def status_lines(c: Collected) -> list[str]:
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
        if b.get("status") in ("skipped", "failed"):
            grouped.setdefault((str(b["status"]), str(b.get("reason"))), []).append(f"build TensorRT {prec.upper()}")
    for case in failed_cases({}, c.benches, {}):
        if case.batch_size is not None:  # a benchmark batch refused or out of memory
            grouped.setdefault(("failed", case.reason), []).append(case.name)
    lines = [f"- **{status}**: {reason} ({', '.join(where)})" for (status, reason), where in grouped.items()]
    return sorted(lines, key=lambda line: not line.startswith("- **failed**"))  # failures first


def summary_markdown(c: Collected, plots_dir: Path, extra: list[str] | None = None) -> str:
    """The whole summary; ``extra`` (sections other modules render) goes before the plots."""
    p = c.p
    lines = [f"# {p.model.name}: results", ""]
    if c.meta.get("synthetic"):
        lines += ["> **SYNTHETIC DATA**: these numbers say nothing about CIFAR-10.", ""]
    lines += [
        f"- Where: {where(c)}",
        f"- Data: {c.meta.get('dataset')} from `{c.meta.get('source')}` "
        f"({c.meta.get('train_images')} train / {c.meta.get('test_images')} test; "
        f"calibration: {c.meta.get('calib_images')} images from the {c.meta.get('calib_drawn_from')})",
        _classes(c.meta),
        f"- Training: {c.train.get('epochs')} epoch{'' if c.train.get('epochs') == 1 else 's'} "
        f"on {c.train.get('train_images')} images, "
        f"test top-1 {tables.fmt(c.train.get('test_top1'))}% (FP32), "
        f"wall time {tables.fmt(c.train.get('train_wall_s'), '.0f')} s "
        f"on {c.train.get('device')}" + _resumed(c.train),
        f"- INT8: explicit quantization, {c.calibrate.get('method')} calibration on "
        f"{c.calibrate.get('images')} training images ({c.calibrate.get('tool')})" + _calibration_check(c.calibrate),
        f"- Precisions: {', '.join(p.precisions)}; backends: {', '.join(p.backends)}",
        "",
    ]
    status = status_lines(c)
    lines += ["## Skipped or not run", ""] + (status or ["- nothing"]) + [""]
    checks = gate_checks(c.evals, p.quality, failed_cases(c.evals, c.benches, c.builds))
    lines += ["## Accuracy (full test split)", ""] + tables.accuracy_table(c) + [""]
    lines += ["## Quality gate", "", "| backend | precision | rule | passed | detail |", "|---|---|---|---|---|"]
    lines += [
        f"| {ch['backend']} | {ch['precision'].upper()} | {ch['rule']} | "
        f"{'yes' if ch['passed'] else '**NO**'} | {ch['detail']} |"
        for ch in checks
    ]
    lines += targets.section(p.targets, p.profile, target_rows(c), c.fingerprint.get("gpu"))
    lines += ["", "## Speed: headline", ""] + tables.headline_table(c)
    lines += ["", "What each number measured:", ""] + tables.timed_notes(c)
    lines += [
        "",
        f"Latency percentiles over up to {p.bench.iterations} iterations "
        f"(at most {p.bench.max_seconds} s per case) after {p.bench.warmup} warm-up iterations.",
        "",
        "## Speed: every case",
        "",
    ] + tables.bench_table(c)
    if any(b.get("status") == "built" for b in c.builds.values()):
        lines += ["", "## TensorRT engines", ""] + tables.build_table(c)
        layer = tables.layer_tables(c)
        if layer:
            lines += ["", "## Ten slowest layers per engine"] + layer
    # a calibrate.json without high_precision comes from an INT8 model with an FP32 base
    lines += strongtyping.section(c.layers.get("int8"), base=c.calibrate.get("high_precision", "fp32"))
    lines += extra or []
    plots = sorted(f"{plots_dir.name}/{f.name}" for f in plots_dir.glob("*.png"))
    if plots:
        lines += ["", "## Plots", ""] + [f"![{Path(x).stem}]({x})" for x in plots]
    return "\n".join(lines) + "\n"
