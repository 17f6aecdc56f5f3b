"""The INT8 budget's figure: harm per ranked Q/DQ group, the groups kept in float marked."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .plot import _save, plt


def harm_plot(b: dict[str, Any] | None, dest: Path) -> bool:
    """Bars of harm per ranked Q/DQ group, the reverted ones marked; False when nothing was ranked."""
    ranked = [g for g in (b or {}).get("groups", []) if g.get("harm") is not None]
    if not b or not ranked:
        return False
    reverted = {g["group"] for g in b["reverted"]}
    fig, ax = plt.subplots(figsize=(max(6.0, 0.28 * len(ranked) + 2), 4.2))
    colors = ["#d62728" if g["group"] in reverted else "#7f7f7f" for g in ranked]
    ax.bar(range(len(ranked)), [g["harm"] for g in ranked], color=colors)
    ax.set_xticks(range(len(ranked)))
    ax.set_xticklabels([g["node"][-28:] for g in ranked], rotation=90, fontsize=6)
    ax.set_ylabel("harm (share of INT8 logit error removed)")
    ax.set_title(
        f"Q/DQ groups by harm: {len(reverted)} in float (red), budget {b['budget_pts']:g} pts\n"
        f"held-out drop {b['drop_before_pts']:.2f} -> {b['drop_after_pts']:.2f} points"
    )
    _save(fig, dest)
    return True
