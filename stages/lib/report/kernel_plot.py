"""The kernel-kind figure: per batch, GPU time and kernels launched by kind, one panel per
batch size, one stacked bar per backend (see :mod:`stages.lib.report.kernels`)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ..core.errors import InputFileError  # noqa: E402
from ..core.io import atomic_path  # noqa: E402
from .kernels import KINDS, Breakdown  # noqa: E402

KIND_COLORS = {
    "convolution": "#1f77b4",
    "gemm": "#9467bd",
    "elementwise": "#ff7f0e",
    "reformat": "#d62728",
    "pooling": "#2ca02c",
    "other": "#7f7f7f",
}


def kinds_figure(breakdowns: list[Breakdown], dest: Path, title: str) -> None:
    """A 2 x N grid (N batch sizes): GPU µs per batch (top) and kernels per batch (bottom),
    stacked by kind, one bar per backend."""
    sizes = sorted({b.batch_size for b in breakdowns})
    if not sizes:
        raise InputFileError(f"{dest}: no kernel breakdowns to plot")
    fig, axes = plt.subplots(2, len(sizes), figsize=(4.8 * len(sizes), 7.5), squeeze=False)
    for col, size in enumerate(sizes):
        group = [b for b in breakdowns if b.batch_size == size]
        for row, (what, unit) in enumerate((("gpu_us", "GPU time per batch (µs)"), ("launches", "kernels per batch"))):
            ax = axes[row][col]
            bottoms = [0.0] * len(group)
            for kind in KINDS:
                values = [getattr(b.row(kind), what) for b in group]
                ax.barh(range(len(group)), values, left=bottoms, color=KIND_COLORS[kind], label=kind)
                bottoms = [a + v for a, v in zip(bottoms, values, strict=True)]
            for y, total in enumerate(bottoms):
                ax.text(total, y, f" {total:,.1f}" if what == "gpu_us" else f" {total:g}", va="center", fontsize=8)
            ax.set_yticks(range(len(group)), [b.label for b in group])
            ax.invert_yaxis()
            ax.set_xlim(0, max(bottoms) * 1.25)
            ax.set_xlabel(unit)
            ax.set_title(f"batch {size}", fontsize=10)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(KINDS), fontsize=8, frameon=False)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0, 0.05, 1, 1))  # room for the legend below the panels
    with atomic_path(dest) as tmp:
        fig.savefig(tmp, dpi=130, format="png")
    plt.close(fig)
