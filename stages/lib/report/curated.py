"""The curated metrics file, ``reports/<model>/metrics.json``: the one file DVC declares as
metrics, so `dvc exp show`, `dvc metrics diff` and the sweep report compare the same columns.

Every value is a number with its unit in the key (``top1_tensorrt_int8`` in percent,
``ips_tensorrt_int8_best`` in images/s, ``ms_p50_tensorrt_int8_b1`` in ms, flags as 0/1), for
every backend and precision that ran; a backend that did not run has no key, and strings never
appear (the per-stage records under reports/ keep the reasons and the context).

Each group of keys is one function ``(Collected) -> {key: number}`` listed in SECTIONS. To add
a key, write such a function here (or in a module of its concern) and append it to SECTIONS;
``metrics`` rejects any value that is not a number.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

from . import failures, int8budget, targets
from .quality import gate_checks
from .results import Collected, ok_records
from .summary import target_rows

Number = int | float
Section = Callable[[Collected], Mapping[str, Number | bool | None]]

# benchmark record field -> key suffix: ips_<backend>_<precision>_<suffix>
THROUGHPUT = {
    "compute_throughput_ips_max": "best",
    "end_to_end_throughput_ips_max": "e2e_best",
    "pipelined_throughput_ips_max": "pipelined_best",
    "concurrent_throughput_ips_max": "concurrent_best",
}


def accuracy(c: Collected) -> dict[str, Number]:
    """top1_<backend>_<precision>: top-1 % on the test split, per evaluated backend."""
    return {f"top1_{b}_{p}": rec["top1"] for p, b, rec in ok_records(c.evals)}


def top1_drop(c: Collected) -> dict[str, Number]:
    """<precision>_top1_drop_pts: the largest top-1 drop (points) below FP32 among the
    backends at that precision, as the quality gate measures it."""
    drops: dict[str, list[float]] = {}
    for check in gate_checks(c.evals, c.p.quality):
        if check["precision"] != "fp32" and check.get("value") is not None:
            drops.setdefault(check["precision"], []).append(float(check["value"]))
    return {f"{p}_top1_drop_pts": max(v) for p, v in drops.items()}


def speed(c: Collected) -> dict[str, Number]:
    """ips_<backend>_<precision>_best (compute; _e2e_, _pipelined_, _concurrent_ where
    measured) in images/s, and ms_p50_<backend>_<precision>_b1: batch-1 p50 latency in ms."""
    m: dict[str, Number] = {}
    for p, b, rec in ok_records(c.benches):
        for field, suffix in THROUGHPUT.items():
            if rec.get(field) is not None:
                m[f"ips_{b}_{p}_{suffix}"] = rec[field]
        if rec.get("compute_bs1_latency_ms_p50") is not None:
            m[f"ms_p50_{b}_{p}_b1"] = rec["compute_bs1_latency_ms_p50"]
    return m


def gpu(c: Collected) -> dict[str, Number]:
    """gpu_index_<precision>: nvidia-smi's index of the GPU that precision's benchmark ran on
    (absent on the CPU), so a sweep can tell which GPU measured what."""
    m: dict[str, Number] = {}
    for p, _, rec in ok_records(c.benches):
        index = (rec.get("gpu") or {}).get("index")
        if index is not None:
            m.setdefault(f"gpu_index_{p}", int(index))
    return m


def training(c: Collected) -> dict[str, Number | None]:
    """train_test_top1 (%) after the last epoch and train_wall_s (s)."""
    return {"train_test_top1": c.train.get("test_top1"), "train_wall_s": c.train.get("train_wall_s")}


def gate(c: Collected) -> dict[str, Number]:
    """gate_passed (0/1) and gate_failed_checks: the quality gate's verdict on this run."""
    checks = gate_checks(c.evals, c.p.quality, _failed_cases(c), c.int8_budget)
    failed = sum(not check["passed"] for check in checks)
    return {"gate_passed": int(failed == 0), "gate_failed_checks": failed}


def performance_targets(c: Collected) -> dict[str, Number | bool | None]:
    """target_<key> (the measured value) and target_<key>_met (0/1), for measured targets."""
    return targets.metrics(target_rows(c))


def int8_budget(c: Collected) -> dict[str, Number]:
    """int8_heldout_drop_pts (after the search) and int8_heldout_drop_full_pts (every group in
    INT8), points below FP32 on the held-out images, and int8_float_groups kept in float."""
    return int8budget.metrics(c.int8_budget)


def data(c: Collected) -> dict[str, Number]:
    """synthetic_data (0/1): the run used generated images, not the dataset."""
    return {"synthetic_data": int(bool(c.meta.get("synthetic")))}


def failed(c: Collected) -> Mapping[str, Number]:
    """failed_cases: builds, evaluations and benchmark batches that failed (not skipped)."""
    return failures.metrics(_failed_cases(c))


def _failed_cases(c: Collected) -> list[failures.FailedCase]:
    return failures.failed_cases(c.evals, c.benches, c.builds)


SECTIONS: tuple[Section, ...] = (
    accuracy,
    top1_drop,
    speed,
    gpu,
    training,
    gate,
    performance_targets,
    failed,
    int8_budget,
    data,
)


def metrics(c: Collected, sections: tuple[Section, ...] = SECTIONS) -> dict[str, Number]:
    """Every section's keys in one flat dict: booleans as 0/1, absent values (None, NaN) left
    out; TypeError (a bug in a section) for a key given twice or a value that is not a number."""
    out: dict[str, Number] = {}
    problems = []
    for section in sections:
        for key, value in section(c).items():
            if key in out:
                problems.append(f"{key} is given twice ({section.__name__})")
            elif isinstance(value, bool):
                out[key] = int(value)
            elif isinstance(value, (int, float)):
                if not math.isnan(value):
                    out[key] = value
            elif value is not None:
                problems.append(f"{key} = {value!r} is not a number ({section.__name__})")
    if problems:
        raise TypeError("metrics.json takes numbers only, each key once: " + "; ".join(problems))
    return out
