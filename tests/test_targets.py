"""Performance targets (stages.lib.report.targets, params ``targets``): each target against what the run
measured, "not measured" where it did not run, the section the report renders, and the checks
on the targets' params.

The run's numbers are the hand-made reports/ folder of tests/test_report.py (the files the
benchmark and evaluate stages write), read back by the report's own ``collect``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from stages.lib.core.config import params_from_dict
from stages.lib.core.errors import ParamsError
from stages.lib.core.params import GpuTargets, TargetsParams
from stages.lib.report import targets
from stages.lib.report.results import Collected, collect
from tests.conftest import TINY, compose
from tests.test_report import D, build_model_dir

# The synthetic H100 run (test_report's "gpu_trt"), TensorRT: INT8 b1 0.21 ms, b256 2.5 ms
# (102,400 img/s); FP16 b256 5 ms (51,200); FP32 b256 12 ms (21,333.3); pipelined 41,000 img/s
# at b256 for each precision. torch_compile FP16 b256 15 ms (17,066.7). Top-1: TensorRT FP32
# 94.10%, INT8 92.80%.
H100 = "NVIDIA H100 80GB HBM3"  # the synthetic run's GPU (its fingerprint.json)
H200 = "NVIDIA H200"
NONE_SET = GpuTargets(
    int8_min_ips=None,
    int8_vs_compile_fp16=None,
    batch1_max_ms={},
    int8_max_top1_drop=None,
    pipelined_within=None,
)
NO_TARGETS = TargetsParams(enabled=True, gpus={})


def _with(**kwargs: Any) -> TargetsParams:
    """Targets for the H100 only, these set and the others unchecked."""
    return TargetsParams(enabled=True, gpus={H100: dataclasses.replace(NONE_SET, **kwargs)})


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Collected:
    root = tmp_path_factory.mktemp("targets")
    build_model_dir(root, "gpu_trt")
    return collect(str(root / "params.yaml"), root / D, root / "artifacts" / "fingerprint.json")


def _check(c: Collected, t: TargetsParams) -> list[targets.TargetRow]:
    return targets.check(t, c.fingerprint.get("gpu"), c.benches, c.records, c.evals)


def _one(c: Collected, t: TargetsParams) -> targets.TargetRow:
    (row,) = _check(c, t)
    return row


def _table(rows: list[targets.TargetRow]) -> list[tuple[str, str, str]]:
    return [(r.target, r.measured_text, r.result) for r in rows]


# The synthetic run's FP32 and FP16 pipelined rows, whatever happens to INT8.
FP32_FP16_PIPELINED = [
    (
        "TensorRT FP32 pipelined img/s within 15% of compute at its batch",
        "41,000 vs 21,333 at b256: 92.2% above",
        "met",
    ),
    (
        "TensorRT FP16 pipelined img/s within 15% of compute at its batch",
        "41,000 vs 51,200 at b256: 19.9% below",
        "**4.9 points over 15%**",
    ),
]


# -- met, missed, the gap ------------------------------------------------------------------------


def test_resnet18_targets_on_the_synthetic_run(run: Collected) -> None:
    """The committed ResNet-18 targets (conf/targets/resnet18_cifar.yaml) against the run."""
    assert run.p.targets.enabled and run.p.model.name == "resnet18_cifar" and run.fingerprint["gpu"] == H100
    assert _table(_check(run, run.p.targets)) == [
        ("TensorRT INT8 best img/s (compute) >= 500,000", "102,400 (b256)", "**79.5% short**"),
        ("TensorRT INT8 batch-1 p50 <= 0.15 ms", "0.2100 ms", "**40.0% over**"),
        (
            "TensorRT INT8 top-1 within 0.3 points of TensorRT FP32",
            "92.80% vs 94.10%: drop 1.30 points",
            "**1.00 points over**",
        ),
        *FP32_FP16_PIPELINED,
        (
            "TensorRT INT8 pipelined img/s within 15% of compute at its batch",
            "41,000 vs 102,400 at b256: 60.0% below",
            "**45.0 points over 15%**",
        ),
    ]


@pytest.mark.parametrize(
    ("t", "measured", "met", "gap"),
    [
        (_with(int8_min_ips=102_400), 102_400.0, True, ""),  # equal meets
        (_with(int8_min_ips=128_000), 102_400.0, False, "20.0% short"),
        (_with(int8_vs_compile_fp16=6.0), 6.0, True, ""),  # 102,400 / 17,066.7
        (_with(int8_vs_compile_fp16=7.5), 6.0, False, "20.0% short"),
        (_with(batch1_max_ms={"int8": 0.21}), 0.21, True, ""),
        (_with(batch1_max_ms={"int8": 0.2}), 0.21, False, "5.0% over"),
        (_with(batch1_max_ms={"fp16": 0.3}), 0.3, True, ""),
        (_with(int8_max_top1_drop=1.3), 1.3, True, ""),  # 94.10 - 92.80 in floats is 1.2999...
        (_with(int8_max_top1_drop=0.0), 1.3, False, "1.30 points over"),
    ],
)
def test_one_target_met_or_missed(run: Collected, t: TargetsParams, measured: float, met: bool, gap: str) -> None:
    row = _one(run, t)
    assert row.measured == pytest.approx(measured, abs=1e-4)
    assert (row.met, row.gap) == (met, gap)
    assert row.result == ("met" if met else f"**{gap}**")


def test_pipelined_compares_with_the_best_compute_case_at_its_batch(run: Collected) -> None:
    """A CUDA-graph compute row at the pipelined batch is the one compared when it is faster."""
    records = [dict(r) for r in run.records]
    fp16 = next(r for r in records if (r["backend"], r["precision"], r["mode"]) == ("tensorrt", "fp16", "compute"))
    records.append({**fp16, "batch_size": 256, "cuda_graph": "True", "throughput_ips": "82000.0"})
    rows = targets.check(_with(pipelined_within=0.5), H100, run.benches, records, run.evals)
    assert [r.measured_text for r in rows][1] == "41,000 vs 82,000 at b256: 50.0% below"
    assert [(r.key, r.met) for r in rows] == [
        ("fp32_pipelined_vs_compute_ratio", True),
        ("fp16_pipelined_vs_compute_ratio", True),  # exactly 50% below, 50% allowed
        ("int8_pipelined_vs_compute_ratio", False),
    ]


# -- not measured -----------------------------------------------------------------------------


def _without_tensorrt_int8(c: Collected) -> Collected:
    """The run, with TensorRT INT8 skipped in the benchmark and the evaluation."""
    skipped = {"status": "skipped", "reason": "TensorRT not importable"}
    benches = {**c.benches, "int8": {**c.benches["int8"], "tensorrt": skipped}}
    evals = {**c.evals, "int8": {**c.evals["int8"], "tensorrt": skipped}}
    records = [r for r in c.records if (r["backend"], r["precision"]) != ("tensorrt", "int8")]
    return dataclasses.replace(c, benches=benches, evals=evals, records=records)


def test_a_backend_that_did_not_run_is_not_measured(run: Collected) -> None:
    c = _without_tensorrt_int8(run)
    rows = _check(c, run.p.targets)
    assert _table(rows) == [
        (
            "TensorRT INT8 best img/s (compute) >= 500,000",
            "not measured: tensorrt INT8 benchmark: skipped",
            "not measured",
        ),
        ("TensorRT INT8 batch-1 p50 <= 0.15 ms", "not measured: tensorrt INT8 benchmark: skipped", "not measured"),
        (
            "TensorRT INT8 top-1 within 0.3 points of TensorRT FP32",
            "not measured: tensorrt INT8 evaluation: skipped",
            "not measured",
        ),
        *FP32_FP16_PIPELINED,
        (
            "TensorRT INT8 pipelined img/s within 15% of compute at its batch",
            "not measured: tensorrt INT8 benchmark: skipped",
            "not measured",
        ),
    ]
    assert all(r.measured is None and r.met is None for r in rows if r.result == "not measured")
    # nothing made up in metrics.json: only the two measured pipelined targets
    assert targets.metrics(rows) == {
        "target_fp32_pipelined_vs_compute_ratio": pytest.approx(1.9219, abs=1e-4),
        "target_fp32_pipelined_vs_compute_ratio_met": True,
        "target_fp16_pipelined_vs_compute_ratio": pytest.approx(0.8008, abs=1e-4),
        "target_fp16_pipelined_vs_compute_ratio_met": False,
    }


def test_torch_compile_missing_and_precisions_not_in_the_run(run: Collected) -> None:
    only_int8 = dataclasses.replace(
        run,
        benches={"int8": run.benches["int8"]},
        evals={"int8": run.evals["int8"]},
        records=[r for r in run.records if r["precision"] == "int8"],
    )
    rows = _check(only_int8, _with(int8_vs_compile_fp16=2.5, batch1_max_ms={"fp16": 0.4}, int8_max_top1_drop=0.3))
    assert [r.measured_text for r in rows] == [
        "not measured: FP16 is not among this run's precisions",
        "not measured: FP16 is not among this run's precisions",
        "not measured: FP32 is not among this run's precisions",
    ]
    unsupported = {"status": "unsupported", "reason": "torch_compile is run in FP16 only"}
    no_compile = dataclasses.replace(
        run, benches={**run.benches, "fp16": {**run.benches["fp16"], "torch_compile": unsupported}}
    )
    row = _one(no_compile, _with(int8_vs_compile_fp16=2.5))
    assert (row.measured_text, row.met) == ("not measured: torch_compile FP16 benchmark: unsupported", None)


def test_no_pipelined_rows_or_no_batch1_case_is_not_measured(run: Collected) -> None:
    records = [r for r in run.records if r["mode"] != "pipelined"]
    rows = targets.check(_with(pipelined_within=0.15), H100, run.benches, records, run.evals)
    assert {r.measured_text for r in rows} == {"not measured: no pipelined run"}
    int8 = {k: v for k, v in run.benches["int8"]["tensorrt"].items() if k != "compute_bs1_latency_ms_p50"}
    no_b1 = dataclasses.replace(run, benches={**run.benches, "int8": {**run.benches["int8"], "tensorrt": int8}})
    row = _one(no_b1, _with(batch1_max_ms={"int8": 0.3}))
    assert row.measured_text == "not measured: no batch-1 case (bench.batch_sizes)"


# -- switched off, unset, rendered --------------------------------------------------------------


def test_switched_off_targets_are_not_checked(run: Collected) -> None:
    off = dataclasses.replace(run.p.targets, enabled=False)
    assert _check(run, off) == []
    assert targets.section(off, "cpu", [], None) == [
        "",
        "## Performance targets",
        "",
        f"Not checked in profile cpu (targets.enabled is false); targets are set for: {H100}, {H200}.",
    ]


def test_a_gpu_without_targets_says_so(run: Collected) -> None:
    elsewhere = dataclasses.replace(run, fingerprint={**run.fingerprint, "gpu": "NVIDIA L4"})
    assert _check(elsewhere, run.p.targets) == []
    assert targets.section(run.p.targets, "gpu", [], "NVIDIA L4")[3] == (
        f"No performance targets for NVIDIA L4; targets are set for: {H100}, {H200}."
    )
    assert (
        "No performance targets for a machine without a CUDA GPU" in targets.section(run.p.targets, "gpu", [], None)[3]
    )


def test_no_section_when_no_target_is_set(run: Collected) -> None:
    assert _check(run, NO_TARGETS) == []
    assert targets.section(NO_TARGETS, "gpu", [], H100) == []


def test_section_names_the_gpu_and_every_target(run: Collected) -> None:
    rows = _check(run, run.p.targets)
    lines = targets.section(run.p.targets, "gpu", rows, H100)
    assert lines[:6] == [
        "",
        "## Performance targets",
        "",
        f"Targets set for {H100} (params: targets.gpus). "
        "Informative: a missed target does not fail the run (the quality gate checks accuracy only).",
        "",
        "| target | measured | result |",
    ]
    assert "| TensorRT INT8 best img/s (compute) >= 500,000 | 102,400 (b256) | **79.5% short** |" in lines
    assert sum(line.startswith("| TensorRT") for line in lines) == len(rows)


# -- conf/ and params --------------------------------------------------------------------------


def test_conf_sets_targets_per_model_and_gpu_and_the_cpu_profile_turns_them_off() -> None:
    r50 = ("experiment=resnet50_224",)
    b1 = "batch1_max_ms"
    expected: dict[tuple[tuple[str, ...], str], dict[str, Any]] = {
        ((), H100): {"int8_min_ips": 500_000, b1: {"int8": 0.15}, "int8_max_top1_drop": 0.3, "pipelined_within": 0.15},
        ((), H200): {
            "int8_min_ips": 620_000,
            "int8_vs_compile_fp16": 1.75,
            b1: {"int8": 0.13, "fp16": 0.155},
            "int8_max_top1_drop": 0.3,
            "pipelined_within": 0.05,
        },
        (r50, H100): {"int8_min_ips": 80_000, "int8_vs_compile_fp16": 2.5, b1: {"int8": 0.3, "fp16": 0.4}},
        (r50, H200): {"int8_min_ips": 78_000, "int8_vs_compile_fp16": 2.5, b1: {"int8": 0.27, "fp16": 0.33}},
    }
    expected[r50, H100]["pipelined_within"] = 0.15
    expected[r50, H200]["pipelined_within"] = 0.10
    for (overrides, gpu), values in expected.items():
        got = params_from_dict(compose(list(overrides))).targets.gpus[gpu]
        assert got == dataclasses.replace(NONE_SET, **values), (overrides, gpu)
    for overrides in (["profile=cpu"], ["experiment=resnet50_224", "profile=cpu"], TINY):
        t = params_from_dict(compose(overrides)).targets
        assert t.enabled is False and t.gpus, overrides  # values kept, checking off
    assert params_from_dict(compose(["profile=cpu", "targets.enabled=true"])).targets.enabled is True


def _problems(**h100_raw: Any) -> list[str]:
    raw = compose(["experiment=resnet50_224"])
    raw["targets"]["gpus"][H100].update(h100_raw)
    with pytest.raises(ParamsError) as info:
        params_from_dict(raw)
    return info.value.problems


G = f"targets.gpus[{H100!r}]"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"int8_min_ips": -5}, f"{G}.int8_min_ips: must be > 0 (or null: not checked), got -5.0"),
        ({"int8_vs_compile_fp16": 0}, f"{G}.int8_vs_compile_fp16: must be > 0 (or null: not checked), got 0.0"),
        ({"batch1_max_ms": {"int4": 0.1}}, f"{G}.batch1_max_ms: unknown precision 'int4'; valid: fp32, fp16, int8"),
        ({"batch1_max_ms": {"int8": -0.3}}, f"{G}.batch1_max_ms.int8: must be > 0 ms, got -0.3"),
        ({"int8_max_top1_drop": -0.1}, f"{G}.int8_max_top1_drop: must be >= 0 points, got -0.1"),
        ({"pipelined_within": 15}, f"{G}.pipelined_within: must be a fraction in [0, 1) (0.15: 15%), got 15.0"),
        ({"int8_min_ips": "fast"}, f"targets.gpus.{H100}.int8_min_ips: expected a number, got 'fast'"),
        ({"batch1_max_ms": [0.3]}, f"targets.gpus.{H100}.batch1_max_ms: expected a mapping, got [0.3]"),
        ({"batch1_max_ms": {"int8": "0.3"}}, f"targets.gpus.{H100}.batch1_max_ms.int8: expected a number, got '0.3'"),
        ({"hardware": "H100"}, f"targets.gpus.{H100}.hardware: unknown key"),
    ],
)
def test_bad_targets_are_rejected_with_what_to_fix(change: dict[str, Any], expected: str) -> None:
    (problem,) = _problems(**change)
    assert problem.startswith(expected)


def test_every_bad_target_is_reported_at_once() -> None:
    problems = _problems(int8_min_ips=-1, batch1_max_ms={"fp8": 1.0}, pipelined_within=-0.5)
    assert [p.split(":")[0] for p in problems] == [f"{G}.int8_min_ips", f"{G}.batch1_max_ms", f"{G}.pipelined_within"]


def test_enabled_must_be_a_boolean() -> None:
    raw = compose([])
    raw["targets"]["enabled"] = None
    with pytest.raises(ParamsError, match=r"targets.enabled: expected true/false, got None"):
        params_from_dict(raw)


def test_unset_targets_load_as_none() -> None:
    raw = compose([])
    raw["targets"]["gpus"] = {H100: {**dict.fromkeys(raw["targets"]["gpus"][H100]), "batch1_max_ms": {}}}
    t = params_from_dict(raw).targets
    assert t == TargetsParams(enabled=True, gpus={H100: NONE_SET}) and not NONE_SET.configured
