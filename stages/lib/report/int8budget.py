"""The INT8 accuracy budget in the report: the summary section, the harm-per-group plot, the
gate's check and the metrics, all from the choose stage's ``int8_budget.json``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..core.io import read_json

FILE = "int8_budget.json"
OUTCOME = {
    "within_budget": "met with every group in INT8",
    "met": "met",
    "unreachable": "**missed**: even every ranked group in float misses it",
    "time_cap": "**missed**: `calibrate.search_max_s` ended the search",
}


def load(model_dir: Path) -> dict[str, Any] | None:
    """The choose stage's report, where it ran."""
    path = Path(model_dir) / FILE
    return read_json(path) if path.is_file() else None


def metrics(b: dict[str, Any] | None) -> dict[str, Any]:
    """metrics.json keys: the held-out drop before and after the search, and the float groups."""
    if not b:
        return {}
    return {
        "int8_heldout_drop_pts": b["drop_after_pts"],
        "int8_heldout_drop_full_pts": b["drop_before_pts"],
        "int8_float_groups": b["float_groups"],
    }


def gate_check(b: dict[str, Any]) -> dict[str, Any]:
    """The quality gate's check of the budget on the held-out images (as report.quality's)."""
    detail = (
        f"{b['drop_after_pts']:.2f} points below FP32 on {b['heldout_images']} held-out images "
        f"(budget {b['budget_pts']:g}), {b['float_groups']} Q/DQ groups in float; {OUTCOME[b['outcome']]}"
    )
    rule = f"held-out top-1 drop <= {b['budget_pts']:g} points"
    return {"backend": "onnxruntime", "precision": "int8", "passed": bool(b["met"]), "rule": rule, "detail": detail}


def layer_share(node: str, profile: dict[str, Any] | None) -> float | None:
    """The share (%) of the TensorRT INT8 engine's layer time spent in layers built from ``node``
    (None without a profile, or when no layer of it names the node)."""
    if not profile or not profile.get("total_ms"):
        return None
    rows = [r for r in profile["layers"] if node in r["layer"].split(" + ")]
    return 100.0 * sum(r["ms_mean"] for r in rows) / profile["total_ms"] if rows else None


def section(b: dict[str, Any] | None, profile: dict[str, Any] | None) -> list[str]:
    """The summary's INT8 budget section; ``profile`` is the TensorRT INT8 layer profile, if any."""
    if not b:
        return []
    searched = b["outcome"] != "within_budget"
    lines = [
        "",
        "## INT8 accuracy budget",
        "",
        f"- Budget (`quality.max_top1_drop`): {b['budget_pts']:g} points of top-1 below FP32, on "
        f"{b['heldout_images']} held-out training images (neither calibration nor test images; "
        f"ONNX Runtime, {b.get('provider')}). FP32 top-1 there: {b['fp32_top1']:.2f}%.",
        f"- Full INT8: {b['drop_before_pts']:.2f} points below FP32; as built: "
        f"{b['drop_after_pts']:.2f} points, with {b['float_groups']} of {b['groups_total']} Q/DQ groups in "
        f"float. Budget {OUTCOME[b['outcome']]}.",
    ]
    if searched:
        lines.append(
            f"- Search: ranking {b['rank_s']:.1f} s on the {b['rank_images']} worst-hit held-out images"
            f"{'' if b['ranking_complete'] else ' (cut short by the time cap)'}, choice {b['choose_s']:.1f} s "
            f"(cap {b['search_max_s']:g} s); counts tried: "
            + ", ".join(f"{e['float_groups']} -> {e['drop_pts']:.2f}" for e in b["evaluations"])
        )
    if b["reverted"]:
        lines += ["", _reverted_note(b), "", "| group | kind | harm | share of INT8 layer time |", "|---|---|---|---|"]
        for g in b["reverted"]:
            share = layer_share(g["node"], profile)
            cell = f"{share:.1f}%" if share is not None else "not in the profile" if profile else "no GPU profile"
            lines.append(f"| `{g['group']}` | {g['kind']} | {g['harm']:.3f} | {cell} |")
    return lines


def _reverted_note(b: dict[str, Any]) -> str:
    base = "FP16 (the FP16 base)" if b.get("high_precision") == "fp16" else "float (FP16 in TensorRT 8.6's INT8 builds)"
    return (
        f"Groups kept in {base}, most harmful first. Harm: the share of the full INT8 model's squared "
        "logit error (against FP32, on the worst-hit held-out images) that reverting the group alone removes."
    )
