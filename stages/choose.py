"""choose: the INT8 model the engines are built from, within the accuracy budget.

When the full INT8 model's held-out top-1 drop (the rank stage's) exceeds
``quality.max_top1_drop``, the most harmful Q/DQ groups of the ranking go back to float, the
fewest that bring the drop within the budget (see :mod:`stages.lib.quant.search`). Reverted
convs run in the Q/DQ model's float type: FP16 in TensorRT 8.6's weakly typed INT8 builds, the
FP16 base (``calibrate.high_precision: fp16``) in strongly typed ones. When the search cannot
meet the budget (time cap, or every group reverted), one warning says so, the model with the
lowest drop found is written with the report, and the gate fails on the report.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any

from .lib.core.cli import run_main
from .lib.core.config import load_params
from .lib.core.errors import OnnxModelError
from .lib.core.io import atomic_path, read_json, write_json
from .lib.core.params import Params
from .lib.quant.groups import Group, find_groups, revert, select
from .lib.quant.heldout import OrtLogits, load_heldout, top1
from .lib.quant.onnxgraph import check_onnx
from .lib.quant.quantize import load_onnx
from .lib.quant.search import Choice, choose
from .lib.runners.ort_runner import available_device

log = logging.getLogger(__name__)

WHY = {
    "time_cap": "calibrate.search_max_s ({cap:.0f} s) ended the search",
    "unreachable": "even with all {n} ranked Q/DQ groups in float",
}


def run(args: argparse.Namespace) -> None:
    p = load_params(args.params)
    if not args.qdq.is_file():
        raise OnnxModelError(f"{args.qdq} is missing: run `dvc repro calibrate`")
    start = time.monotonic()
    ranking, qdq = read_json(args.ranking), load_onnx(args.qdq)
    ranked = select(find_groups(qdq), [g["group"] for g in ranking["groups"] if g["harm"] is not None])
    budget = p.quality.max_top1_drop
    deadline = start + p.calibrate.search_max_s - ranking["seconds"]
    if ranking["int8_drop_pts"] > budget and not ranking["complete"]:
        deadline = start  # the cap ended the ranking: no time is left to choose
    logits = OrtLogits(available_device(p))
    images = load_heldout(p, args.train, qdq) if ranking["int8_drop_pts"] > budget else None

    def drop_of(groups: list[Group]) -> float:
        assert images is not None  # choose() measures only when the full INT8 model misses the budget
        return ranking["fp32_top1"] - top1(logits(revert(qdq, groups), images), images.labels)

    choice = choose(ranked, drop_of, ranking["int8_drop_pts"], budget, deadline)
    _write_model(qdq, select(ranked, choice.reverted), args.out)
    report = _report(p, ranking, choice, time.monotonic() - start)
    write_json(args.report, report)
    _log(report, p)


def _write_model(qdq: Any, reverted: list[Group], out: Path) -> None:
    """The Q/DQ model with ``reverted`` in float at ``out``, checked, atomically."""
    import onnx

    with atomic_path(out) as tmp:
        onnx.save(revert(qdq, reverted) if reverted else qdq, str(tmp))
        check_onnx(tmp, name=f"{out} (the Q/DQ model with its float groups)")


def _report(p: Params, ranking: dict[str, Any], choice: Choice, seconds: float) -> dict[str, Any]:
    """int8_budget.json: the drop before and after, the reverted groups and the whole ranking."""
    harm = {g["group"]: g for g in ranking["groups"]}
    return {
        "budget_pts": p.quality.max_top1_drop,
        "heldout_images": ranking["heldout_images"],
        "rank_images": ranking["rank_images"],
        "fp32_top1": ranking["fp32_top1"],
        "drop_before_pts": ranking["int8_drop_pts"],
        "drop_after_pts": round(choice.drop, 4),
        "met": choice.met,
        "outcome": choice.outcome,
        "float_groups": len(choice.reverted),
        "groups_total": len(ranking["groups"]),
        "reverted": [harm[name] for name in choice.reverted],
        "ranking_complete": ranking["complete"],
        "rank_s": ranking["seconds"],
        "choose_s": round(seconds, 2),
        "search_max_s": p.calibrate.search_max_s,
        "evaluations": choice.evaluations,
        "provider": ranking.get("provider"),
        "high_precision": p.calibrate.high_precision,
        "groups": ranking["groups"],
    }


def _log(r: dict[str, Any], p: Params) -> None:
    line = (
        f"INT8 held-out top-1 drop {r['drop_before_pts']:.2f} -> {r['drop_after_pts']:.2f} points "
        f"(budget {r['budget_pts']:g}) with {r['float_groups']} of {r['groups_total']} Q/DQ groups in float"
    )
    if r["met"]:
        log.info("%s", line)
        return
    n = sum(g["harm"] is not None for g in r["groups"])
    why = WHY[r["outcome"]].format(cap=p.calibrate.search_max_s, n=n)
    log.warning("INT8 misses the accuracy budget: %s; %s (the gate will fail)", why, line)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--qdq", type=Path, required=True, help="the calibrate stage's full INT8 Q/DQ model")
    ap.add_argument("--ranking", type=Path, required=True, help="the rank stage's ranking")
    ap.add_argument("--train", type=Path, required=True, help="the prepared training split")
    ap.add_argument("--out", type=Path, required=True, help="the INT8 model the engines are built from")
    ap.add_argument("--report", type=Path, required=True)
    args = ap.parse_args(argv)
    return run_main("choose", lambda: run(args), gpu=True)


if __name__ == "__main__":
    sys.exit(main())
