"""The report's PNG figures: accuracy, latency, throughput, speedup, training."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ..core.io import atomic_path  # noqa: E402
from .results import ok_records, ran  # noqa: E402

BACKEND_COLORS = {"pytorch": "#1f77b4", "torch_compile": "#17becf", "onnxruntime": "#2ca02c", "tensorrt": "#d62728"}
PRECISION_STYLE = {"fp32": "-", "fp16": "--", "int8": ":"}
PRECISION_MARKER = {"fp32": "o", "fp16": "s", "int8": "^"}


def _save(fig: Any, dest: Path) -> None:
    fig.tight_layout()
    with atomic_path(dest) as tmp:
        fig.savefig(tmp, dpi=130, format="png")
    plt.close(fig)


def _batch_axis(ax: Any, records: list[dict[str, Any]]) -> None:
    """Log-2 batch axis labelled with the batch sizes actually measured."""
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    ax.set_xscale("log", base=2)
    sizes = sorted({int(r["batch_size"]) for r in records})
    ax.set_xticks(sizes)
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("batch size")


def _label(backend: str, precision: str) -> str:
    return f"{backend} {precision.upper()}"


def accuracy(evals: dict[str, dict[str, Any]], dest: Path, subtitle: str) -> None:
    """Grouped bars: top-1 per backend, grouped by precision."""
    precisions = list(evals)
    backends = sorted({backend for _, backend, _ in ok_records(evals)})
    fig, ax = plt.subplots(figsize=(8, 4.5))
    width = 0.8 / max(1, len(backends))
    lows = []
    for j, backend in enumerate(backends):
        xs, ys = [], []
        for i, prec in enumerate(precisions):
            rec = evals[prec].get(backend)
            if ran(rec):
                xs.append(i + (j - (len(backends) - 1) / 2) * width)
                ys.append(rec["top1"])
        bars = ax.bar(xs, ys, width, label=backend, color=BACKEND_COLORS.get(backend))
        ax.bar_label(bars, fmt="%.2f", fontsize=7, padding=2)
        lows.extend(ys)
    ax.set_xticks(range(len(precisions)), [p.upper() for p in precisions])
    if lows:
        ax.set_ylim(max(0.0, min(lows) - 3.0), min(100.0, max(lows) + 1.5))
    ax.set_ylabel("test top-1 (%)")
    ax.set_title(f"Accuracy by precision\n{subtitle}", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    _save(fig, dest)


def _series(records: list[dict[str, Any]], mode: str) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """Best (graph or not) record per backend/precision/batch for one mode."""
    best: dict[tuple[str, str, int], dict[str, Any]] = {}
    for r in records:
        if r.get("mode") != mode:
            continue
        key = (r["backend"], r["precision"], int(r["batch_size"]))
        if key not in best or float(r["throughput_ips"]) > float(best[key]["throughput_ips"]):
            best[key] = r
    out: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for (b, p, _), r in sorted(best.items(), key=lambda kv: kv[0]):
        out.setdefault((b, p), []).append(r)
    return out


def by_batch(
    records: list[dict[str, Any]], metric: str, ylabel: str, title: str, dest: Path, mode: str = "compute"
) -> None:
    fig, ax = plt.subplots(figsize=(8, 5))
    for (backend, prec), rows in _series(records, mode).items():
        xs = [int(r["batch_size"]) for r in rows]
        ys = [float(r[metric]) for r in rows]
        ax.plot(
            xs,
            ys,
            PRECISION_STYLE.get(prec, "-"),
            marker=PRECISION_MARKER.get(prec, "o"),
            color=BACKEND_COLORS.get(backend),
            label=_label(backend, prec),
        )
    _batch_axis(ax, records)
    ax.set_yscale("log")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    _save(fig, dest)


def speedup(records: list[dict[str, Any]], dest: Path, title: str) -> None:
    """Throughput over PyTorch FP32 at the same batch size (compute mode)."""
    series = _series(records, "compute")
    base = {int(r["batch_size"]): float(r["throughput_ips"]) for r in series.get(("pytorch", "fp32"), [])}
    fig, ax = plt.subplots(figsize=(8, 5))
    for (backend, prec), rows in series.items():
        pts = [
            (int(r["batch_size"]), float(r["throughput_ips"]) / base[int(r["batch_size"])])
            for r in rows
            if int(r["batch_size"]) in base
        ]
        if pts:
            ax.plot(
                *zip(*pts, strict=True),
                PRECISION_STYLE.get(prec, "-"),
                marker=PRECISION_MARKER.get(prec, "o"),
                color=BACKEND_COLORS.get(backend),
                label=_label(backend, prec),
            )
    ax.axhline(1.0, color="grey", lw=0.8)
    _batch_axis(ax, records)
    ax.set_ylabel("throughput / PyTorch FP32 throughput (x)")
    ax.set_title(title, fontsize=10)
    ax.grid(which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    _save(fig, dest)


def training(history: list[dict[str, Any]], dest: Path, subtitle: str) -> None:
    fig, ax1 = plt.subplots(figsize=(8, 4.5))
    epochs = [int(r["epoch"]) for r in history]
    ax1.plot(epochs, [float(r["train_loss"]) for r in history], color="#1f77b4", label="train loss")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("train loss", color="#1f77b4")
    ax2 = ax1.twinx()
    ax2.plot(epochs, [float(r["train_top1"]) for r in history], color="#ff7f0e", label="train top-1")
    test = [(int(r["epoch"]), float(r["test_top1"])) for r in history if r.get("test_top1") not in ("", None)]
    if test:
        ax2.plot(*zip(*test, strict=True), "o-", color="#2ca02c", label="test top-1")
    ax2.set_ylabel("top-1 (%)")
    ax1.set_title(f"Training\n{subtitle}", fontsize=10)
    ax1.grid(alpha=0.3)
    fig.legend(fontsize=8, loc="center right")
    _save(fig, dest)
