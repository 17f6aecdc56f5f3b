"""The INT8 accuracy budget: rank the Q/DQ groups by the harm each does, then keep the fewest
most harmful ones in float that bring the held-out top-1 drop within the budget.

Harm is measured as OpenVINO NNCF's accuracy-aware quantization does: on the held-out images
the full INT8 model gets most wrong (largest squared logit error against FP32), each group
alone is reverted to float, and its harm is the share of that logit error the reversion
removes (1: all of it; 0 or less: none). The choice then reverts the ranked groups in order,
first 1, 2, 4, ... of them until the budget holds, then bisects between the last two counts,
and checks each count's top-1 drop on all held-out images.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..core.progress import progress
from .groups import Group, revert
from .heldout import Images, top1

log = logging.getLogger(__name__)

Logits = Callable[[Any, Images], np.ndarray]  # (ONNX model proto, images) -> logits
Clock = Callable[[], float]
EPS = 1e-6  # points: a drop of 30.8 - 30.7 (0.1000000000000014) is within a budget of 0.1


def sample_error(ref: np.ndarray, got: np.ndarray) -> np.ndarray:
    """Each sample's mean squared logit error against the reference logits."""
    return np.mean((got.astype(np.float64) - ref) ** 2, axis=1)


def rank(
    model: Any,
    groups: list[Group],
    logits: Logits,
    images: Images,
    fp32: np.ndarray,
    rank_images: int,
    deadline: float,
    clock: Clock = time.monotonic,
) -> dict[str, Any]:
    """The full INT8 model's held-out top-1 against FP32 (``fp32``: its logits on ``images``)
    and, when INT8 loses any, each group's harm on the ``rank_images`` worst-hit images,
    most harmful first. Stops at ``deadline`` (of ``clock``): the groups not reached then
    have no harm and ``complete`` is false."""
    start = clock()
    q = logits(model, images)
    fp32_top1, int8_top1 = top1(fp32, images.labels), top1(q, images.labels)
    out: dict[str, Any] = {
        "heldout_images": len(images.labels),
        "fp32_top1": round(fp32_top1, 4),
        "int8_top1": round(int8_top1, 4),
        "int8_drop_pts": round(fp32_top1 - int8_top1, 4),
        "rank_images": 0,
        "ranked": False,
        "complete": True,
        "groups": [dict(g.describe(), harm=None) for g in groups],
    }
    if fp32_top1 - int8_top1 <= 0:  # no budget (>= 0) can be exceeded: nothing to rank
        return {**out, "seconds": round(clock() - start, 2)}
    err = sample_error(fp32, q)
    worst = np.argsort(-err, kind="stable")[: min(rank_images, len(err))]
    sub, ref, base = images.subset(worst), fp32[worst], float(err[worst].mean())
    harms: list[float | None] = [None] * len(groups)
    for i, g in enumerate(progress(groups, total=len(groups), desc="rank Q/DQ groups")):
        if clock() >= deadline:
            break
        reverted = float(sample_error(ref, logits(revert(model, [g]), sub)).mean())
        harms[i] = (base - reverted) / base if base > 0 else 0.0
    order = sorted(range(len(groups)), key=lambda i: (harms[i] is None, -(harms[i] or 0.0)))
    ranked = [dict(groups[i].describe(), harm=None if (h := harms[i]) is None else round(h, 6)) for i in order]
    return {
        **out,
        "rank_images": len(worst),
        "rank_logit_mse": round(base, 6),
        "ranked": True,
        "complete": all(h is not None for h in harms),
        "groups": ranked,
        "seconds": round(clock() - start, 2),
    }


@dataclass
class Choice:
    """The groups kept in float, the held-out drop with them reverted, and why the search ended:
    ``outcome`` is within_budget (nothing to revert), met, unreachable (reverting every ranked
    group misses the budget) or time_cap (the search ran out of time)."""

    reverted: list[str]
    drop: float
    outcome: str
    evaluations: list[dict[str, Any]] = field(default_factory=list)

    @property
    def met(self) -> bool:
        return self.outcome in ("within_budget", "met")


def choose(
    ranked: list[Group],
    drop_of: Callable[[list[Group]], float],
    full_drop: float,
    budget: float,
    deadline: float,
    clock: Clock = time.monotonic,
) -> Choice:
    """The fewest leading groups of ``ranked`` whose reversion brings the drop
    (``drop_of(groups)``, in points) within ``budget``: counts 1, 2, 4, ... until one holds,
    then bisection. Stops at ``deadline``, keeping the best count evaluated."""
    if full_drop <= budget + EPS:
        return Choice([], full_drop, "within_budget")
    drops: dict[int, float] = {0: full_drop}

    def at(k: int) -> float | None:
        if clock() >= deadline:
            return None
        if k not in drops:
            drops[k] = drop_of(ranked[:k])
            log.info("%d of %d groups in float: held-out top-1 drop %.2f points", k, len(ranked), drops[k])
        return drops[k]

    if clock() >= deadline:  # the ranking used up the time
        return _ended(ranked, drops, budget, "time_cap")
    lo, hi, k = 0, None, 1
    while hi is None and k <= len(ranked):
        d = at(k)
        if d is None:
            return _ended(ranked, drops, budget, "time_cap")
        if d <= budget + EPS:
            hi = k
        else:
            lo, k = k, (len(ranked) if k < len(ranked) < 2 * k else 2 * k)
    if hi is None:
        return _ended(ranked, drops, budget, "unreachable")
    while hi - lo > 1:
        mid = (lo + hi) // 2
        d = at(mid)
        if d is None:
            return _ended(ranked, drops, budget, "time_cap")
        lo, hi = (lo, mid) if d <= budget + EPS else (mid, hi)
    return Choice([g.name for g in ranked[:hi]], drops[hi], "met", _evaluations(drops))


def _ended(ranked: list[Group], drops: dict[int, float], budget: float, outcome: str) -> Choice:
    """The search stopped early: the fewest groups that met the budget, else the lowest drop."""
    within = [k for k, d in drops.items() if d <= budget + EPS]
    k = min(within) if within else min(drops, key=lambda n: (drops[n], n))
    return Choice([g.name for g in ranked[:k]], drops[k], outcome, _evaluations(drops))


def _evaluations(drops: dict[int, float]) -> list[dict[str, Any]]:
    return [{"float_groups": k, "drop_pts": round(d, 4)} for k, d in sorted(drops.items())]
