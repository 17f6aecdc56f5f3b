"""The INT8 accuracy budget: Q/DQ groups, the held-out subset, the ranking and the choice
(stages/lib/quant/{groups,heldout,search}.py, stages/rank.py, stages/choose.py), on a small
ONNX net with and without a planted intolerant conv (tests/qdq_toy.py)."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import numpy as np
import onnx
import pytest

from stages import choose, rank
from stages.lib.core.config import load_params
from stages.lib.data import prepared as data
from stages.lib.quant import search
from stages.lib.quant.groups import find_groups, revert
from stages.lib.quant.heldout import Images, OrtLogits, heldout_indices, heldout_split
from stages.lib.quant.quantize import compute_ranges, quantize
from tests.conftest import TINY, run_stage, write_params
from tests.qdq_toy import SIZE, toy_images, toy_model

PLANTED = "conv:conv_p"
BUDGET = 10.0  # points: the toy's full INT8 loses ~4 without the outlier, ~44 with it
ALL_GROUPS = ["conv:conv0", "conv:conv_p", "conv:conv_b", "conv:conv_d", "skip:add", "pool:pool"]


def _qdq(tmp: Path, outlier: float) -> tuple[onnx.ModelProto, onnx.ModelProto]:
    """The toy FP32 model and its Q/DQ model (minmax ranges, skip and pool pairs), as the
    calibrate stage makes it."""
    work = tmp / "toy"
    work.mkdir(exist_ok=True)
    p = load_params(write_params(work, TINY))
    c = dataclasses.replace(p.calibrate, method="minmax", quantize_pools=True)
    fp32 = toy_model(work / f"fp32-{outlier}.onnx", outlier)
    x = toy_images(64, seed=1)
    tensors = compute_ranges(fp32, [x[:32], x[32:]], c, ["CPUExecutionProvider"])
    quantize(fp32, tensors, c, work / f"int8-{outlier}.onnx")
    return onnx.load(str(fp32)), onnx.load(str(work / f"int8-{outlier}.onnx"))


def _labelled(fp32: onnx.ModelProto, n: int = 384) -> tuple[Images, np.ndarray]:
    """``n`` toy images labelled with the FP32 model's prediction (FP32 top-1 100%), and its logits."""
    x = toy_images(n, seed=2)
    images = Images([x[i : i + 64] for i in range(0, n, 64)], np.zeros(n, np.int64))
    ref = OrtLogits("cpu")(fp32, images)
    return Images(images.batches, ref.argmax(axis=1)), ref


# -- groups ------------------------------------------------------------------------------------


def test_groups_are_conv_skip_and_pool_pairs(tmp_path: Path) -> None:
    _, qdq = _qdq(tmp_path, 1.0)
    groups = find_groups(qdq)
    assert [g.name for g in groups] == ALL_GROUPS
    assert all(len(g.edges) == 2 for g in groups)  # input + weight; the skip pair; pool in + out
    conv_p = groups[1]
    assert {(e.node, e.index, e.source) for e in conv_p.edges} == {("conv_p", 0, "r0"), ("conv_p", 1, "wp")}


def test_reverting_a_group_removes_only_its_quantizers(tmp_path: Path) -> None:
    fp32, qdq = _qdq(tmp_path, 1.0)
    groups = find_groups(qdq)
    one = revert(qdq, [groups[1]])
    node = next(n for n in one.graph.node if n.name == "conv_p")
    assert list(node.input) == ["r0", "wp"]
    count = lambda m, op: sum(n.op_type == op for n in m.graph.node)  # noqa: E731
    for op in ("QuantizeLinear", "DequantizeLinear"):
        assert count(one, op) == count(qdq, op) - 2
    assert len(one.graph.initializer) < len(qdq.graph.initializer)  # its scales and zero points went
    onnx.checker.check_model(one, full_check=True)
    assert [g.name for g in find_groups(one)] == [n for n in ALL_GROUPS if n != PLANTED]
    # everything reverted: no quantizer left, and the FP32 model's logits exactly
    bare = revert(qdq, groups)
    assert count(bare, "QuantizeLinear") == count(bare, "DequantizeLinear") == 0
    images, ref = _labelled(fp32, 64)
    np.testing.assert_allclose(OrtLogits("cpu")(bare, images), ref, rtol=1e-5, atol=1e-5)


# -- the held-out subset -----------------------------------------------------------------------


def test_heldout_calibration_and_test_images_are_disjoint(project: Path) -> None:
    run_stage("prepare", ["--out", "data/prepared"], project)
    p = load_params(project / "params.yaml")
    train = data.load_split(project / "data/prepared/train.npz")
    calib = data.load_split(project / "data/prepared/calib.npz")
    test = data.load_split(project / "data/prepared/test.npz")
    held = heldout_split(train, p.data.calib_size, p.calibrate.heldout_images, p.seed)
    assert len(held) == p.calibrate.heldout_images == 256
    key = lambda split: {img.tobytes() for img in split.images}  # noqa: E731
    assert len(key(held)) == len(held)  # synthetic images are all distinct
    assert not key(held) & key(calib)
    assert not key(held) & key(test)
    assert not key(calib) & key(test)
    # and by index: the held-out indices avoid the calibration ones, fixed by the seed
    idx = data.calibration_indices(len(train), p.data.calib_size, p.seed)
    h = heldout_indices(len(train), idx, 256, p.seed)
    assert not set(h) & set(idx)
    np.testing.assert_array_equal(h, heldout_indices(len(train), idx, 256, p.seed))


def test_too_many_heldout_images_is_one_clear_error() -> None:
    from stages.lib.core.errors import DatasetError

    with pytest.raises(DatasetError, match=r"calibrate.heldout_images=30 exceeds the 20 training images"):
        heldout_indices(100, np.arange(80), 30, 0)


# -- ranking and choice ------------------------------------------------------------------------


def _search(tmp: Path, outlier: float, budget: float) -> tuple[dict, search.Choice]:
    fp32, qdq = _qdq(tmp, outlier)
    images, ref = _labelled(fp32)
    logits = OrtLogits("cpu")
    groups = find_groups(qdq)
    ranking = search.rank(qdq, groups, logits, images, ref, 128, deadline=float("inf"))
    by_name = {g.name: g for g in groups}
    ranked = [by_name[g["group"]] for g in ranking["groups"] if g["harm"] is not None]

    def drop_of(gs: list) -> float:
        from stages.lib.quant.heldout import top1

        return ranking["fp32_top1"] - top1(logits(revert(qdq, gs), images), images.labels)

    return ranking, search.choose(ranked, drop_of, ranking["int8_drop_pts"], budget, deadline=float("inf"))


def test_planted_intolerant_conv_is_the_one_group_reverted(tmp_path: Path) -> None:
    ranking, choice = _search(tmp_path, outlier=300.0, budget=BUDGET)
    assert ranking["int8_drop_pts"] > 3 * BUDGET  # full INT8 breaks the budget
    assert ranking["groups"][0]["group"] == PLANTED
    assert ranking["groups"][0]["harm"] > 0.9  # reverting it removes >90% of the logit error
    assert all(g["harm"] < 0.5 for g in ranking["groups"][1:])
    assert choice.reverted == [PLANTED]
    assert choice.outcome == "met" and choice.met
    assert choice.drop <= BUDGET


def test_model_within_budget_reverts_nothing(tmp_path: Path) -> None:
    ranking, choice = _search(tmp_path, outlier=1.0, budget=BUDGET)
    assert 0 < ranking["int8_drop_pts"] <= BUDGET
    assert choice.reverted == [] and choice.outcome == "within_budget"
    assert choice.drop == ranking["int8_drop_pts"]


class _Clock:
    """A clock that advances ``step`` seconds each time it is read."""

    def __init__(self, step: float) -> None:
        self.t, self.step = 0.0, step

    def __call__(self) -> float:
        self.t += self.step
        return self.t


def test_time_cap_ends_the_ranking(tmp_path: Path) -> None:
    fp32, qdq = _qdq(tmp_path, 300.0)
    images, ref = _labelled(fp32, 128)
    # reads: start, then one per group before reverting it; the 4th group's read is past 3.5
    ranking = search.rank(qdq, find_groups(qdq), OrtLogits("cpu"), images, ref, 64, deadline=3.5, clock=_Clock(1.0))
    assert ranking["ranked"] and not ranking["complete"]
    assert [g["harm"] is None for g in ranking["groups"]].count(False) == 2
    assert [g["group"] for g in ranking["groups"][2:]] == ALL_GROUPS[2:]  # unranked ones last, in graph order


def test_choice_bisects_and_stops_at_the_cap() -> None:
    ranked = [type("G", (), {"name": f"g{i}"})() for i in range(20)]
    calls: list[int] = []

    def drop_of(gs: list) -> float:  # each reverted group takes off one point
        calls.append(len(gs))
        return 20.0 - len(gs)

    choice = search.choose(ranked, drop_of, 20.0, budget=6.5, deadline=float("inf"))
    assert choice.reverted == [f"g{i}" for i in range(14)] and choice.drop == 6.0 and choice.met
    assert calls == [1, 2, 4, 8, 16, 12, 14, 13]  # doubling, then bisection between 8 and 16
    calls.clear()
    # a drop computed as 30.8 - 30.7 meets a budget of 0.1
    tenth = search.choose(ranked, lambda gs: 30.8 - 30.7 if gs else 0.5, 0.5, budget=0.1, deadline=float("inf"))
    assert tenth.reverted == ["g0"] and tenth.met
    unreachable = search.choose(ranked, drop_of, 20.0, budget=-1.0, deadline=float("inf"))
    assert unreachable.outcome == "unreachable" and not unreachable.met
    assert len(unreachable.reverted) == 20 and unreachable.drop == 0.0  # the lowest drop found
    calls.clear()
    # the cap: one clock read before the search, one before each evaluation; the 5th is past it
    capped = search.choose(ranked, drop_of, 20.0, budget=6.5, deadline=4.5, clock=_Clock(1.0))
    assert capped.outcome == "time_cap" and not capped.met
    assert calls == [1, 2, 4] and capped.reverted == [f"g{i}" for i in range(4)] and capped.drop == 16.0


# -- the rank and choose stages ------------------------------------------------------------------


def _stage_project(tmp: Path, *overrides: str) -> Path:
    """A folder with params, the toy FP32 and Q/DQ models (planted conv) and a prepared training
    split of toy images labelled by the FP32 model."""
    write_params(tmp, [*TINY, *overrides])
    fp32, qdq = _qdq(tmp, 300.0)
    onnx.save(fp32, str(tmp / "fp32.onnx"))
    onnx.save(qdq, str(tmp / "int8_full.onnx"))
    rng = np.random.default_rng(3)
    # pixels whose normalised values (synthetic mean 0.5, std 0.25) are about N(0, 1), as toy_images
    images = np.clip(np.rint(127.5 + 64 * rng.normal(size=(1024, SIZE, SIZE, 3))), 0, 255).astype(np.uint8)
    p = load_params(tmp / "params.yaml")
    x = (images.astype(np.float32) / 255.0 - np.array(p.data.mean, np.float32)) / np.array(p.data.std, np.float32)
    x = x.transpose(0, 3, 1, 2)
    labels = OrtLogits("cpu")(fp32, Images([x[i : i + 64] for i in range(0, 1024, 64)], np.zeros(1024))).argmax(1)
    data.save_split(tmp / "train.npz", data.Split(images, labels))
    return tmp


RANK = ["--fp32", "fp32.onnx", "--qdq", "int8_full.onnx", "--train", "train.npz", "--out", "ranking.json"]
CHOOSE = ["--qdq", "int8_full.onnx", "--ranking", "ranking.json", "--train", "train.npz"]
CHOOSE += ["--out", "int8.onnx", "--report", "int8_budget.json"]


def test_rank_and_choose_stages_meet_the_budget_and_rechoose_from_the_ranking(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _stage_project(tmp_path, f"quality.max_top1_drop={BUDGET}")
    monkeypatch.chdir(tmp_path)
    assert rank.main(["--params", "params.yaml", *RANK]) == 0
    assert choose.main(["--params", "params.yaml", *CHOOSE]) == 0
    r = json.loads(Path("int8_budget.json").read_text())
    assert r["heldout_images"] == 256 and r["rank_images"] == 64
    assert r["drop_before_pts"] > BUDGET >= r["drop_after_pts"]
    assert [g["group"] for g in r["reverted"]] == [PLANTED] and r["float_groups"] == 1
    assert r["met"] and r["outcome"] == "met" and r["groups_total"] == 6
    conv_p = next(n for n in onnx.load("int8.onnx").graph.node if n.name == "conv_p")
    assert list(conv_p.input) == ["r0", "wp"]
    # a looser budget: the choose stage alone, from the same ranking, reverts nothing
    ranking = Path("ranking.json").read_bytes()
    write_params(tmp_path, [*TINY, "quality.max_top1_drop=50"])
    monkeypatch.setattr(search, "rank", None)  # not called
    assert choose.main(["--params", "params.yaml", *CHOOSE]) == 0
    assert Path("ranking.json").read_bytes() == ranking
    r = json.loads(Path("int8_budget.json").read_text())
    assert r["float_groups"] == 0 and r["outcome"] == "within_budget" and r["drop_after_pts"] == r["drop_before_pts"]
    assert onnx.load("int8.onnx") == onnx.load("int8_full.onnx")


def test_choose_stage_at_the_time_cap_writes_its_report_and_says_so_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    _stage_project(tmp_path, f"quality.max_top1_drop={BUDGET}", "calibrate.search_max_s=0.001")
    monkeypatch.chdir(tmp_path)
    assert rank.main(["--params", "params.yaml", *RANK]) == 0
    assert not json.loads(Path("ranking.json").read_text())["complete"]
    with caplog.at_level(logging.WARNING):
        assert choose.main(["--params", "params.yaml", *CHOOSE]) == 0
    r = json.loads(Path("int8_budget.json").read_text())
    assert r["outcome"] == "time_cap" and not r["met"] and r["float_groups"] == 0
    warnings = [
        rec.getMessage() for rec in caplog.records if rec.levelname == "WARNING" and rec.name == "stages.choose"
    ]
    assert len(warnings) == 1 and "calibrate.search_max_s (0 s) ended the search" in warnings[0]
    assert onnx.load("int8.onnx") == onnx.load("int8_full.onnx")  # the lowest drop found: full INT8
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*tmp*"))


# -- the report and the gate ---------------------------------------------------------------------


def _budget(outcome: str, met: bool) -> dict:
    groups = [
        {"group": "conv:/layer1/conv1/Conv", "kind": "conv", "node": "/layer1/conv1/Conv", "harm": 0.9},
        {"group": "skip:/layer1/Add", "kind": "skip", "node": "/layer1/Add", "harm": 0.05},
        {"group": "pool:/pool", "kind": "pool", "node": "/pool", "harm": None},
    ]
    return {
        "budget_pts": 0.5,
        "heldout_images": 1000,
        "rank_images": 128,
        "fp32_top1": 40.0,
        "drop_before_pts": 3.2,
        "drop_after_pts": 0.3 if met else 1.1,
        "met": met,
        "outcome": outcome,
        "float_groups": 1,
        "groups_total": 3,
        "reverted": groups[:1],
        "ranking_complete": outcome != "time_cap",
        "rank_s": 12.0,
        "choose_s": 3.0,
        "search_max_s": 900,
        "evaluations": [{"float_groups": 0, "drop_pts": 3.2}, {"float_groups": 1, "drop_pts": 0.3}],
        "provider": "CPUExecutionProvider",
        "high_precision": "fp32",
        "groups": groups,
    }


def test_report_section_metrics_plot_and_gate_check(tmp_path: Path) -> None:
    from stages.lib.report import int8budget
    from stages.lib.report.harmplot import harm_plot

    b = _budget("met", True)
    profile = {
        "total_ms": 2.0,
        "layers": [
            {"layer": "/layer1/conv1/Conv + /layer1/relu/Relu", "ms_mean": 0.5},
            {"layer": "/layer2/conv1/Conv", "ms_mean": 1.5},
        ],
    }
    text = "\n".join(int8budget.section(b, profile))
    assert "Full INT8: 3.20 points below FP32; as built: 0.30 points, with 1 of 3 Q/DQ groups in float" in text
    assert "| `conv:/layer1/conv1/Conv` | conv | 0.900 | 25.0% |" in text
    assert "no GPU profile" in "\n".join(int8budget.section(b, None))
    assert int8budget.metrics(b) == {
        "int8_heldout_drop_pts": 0.3,
        "int8_heldout_drop_full_pts": 3.2,
        "int8_float_groups": 1,
    }
    assert int8budget.metrics(None) == {}
    assert int8budget.gate_check(b)["passed"] is True
    missed = int8budget.gate_check(_budget("time_cap", False))
    assert missed["passed"] is False and "`calibrate.search_max_s` ended the search" in missed["detail"]
    assert harm_plot(b, tmp_path / "int8_harm.png")
    assert (tmp_path / "int8_harm.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    nothing = dict(b, groups=[dict(g, harm=None) for g in b["groups"]])
    assert not harm_plot(nothing, tmp_path / "none.png") and not (tmp_path / "none.png").exists()


def test_gate_fails_when_the_budget_was_missed(project: Path) -> None:
    from tests.conftest import run_stage as stage

    model_dir = project / "reports" / "m"
    (model_dir / "eval").mkdir(parents=True)
    ok = {"status": "ok", "top1": 50.0, "top1_agreement_vs_ort_fp32": 1.0}
    for prec in ("fp32", "fp16", "int8"):
        (model_dir / "eval" / f"{prec}.json").write_text(json.dumps({"onnxruntime": ok}))
    (model_dir / "int8_budget.json").write_text(json.dumps(_budget("unreachable", False)))
    proc = stage("gate", ["--model-dir", "reports/m", "--out", "reports/m/gate.json"], project, check=False)
    assert proc.returncode == 1
    assert "onnxruntime int8 fails 'held-out top-1 drop <= 0.5 points'" in proc.stderr
    gate = json.loads((model_dir / "gate.json").read_text())
    assert gate["passed"] is False and gate["failed"] == 1
    (model_dir / "int8_budget.json").write_text(json.dumps(_budget("met", True)))
    stage("gate", ["--model-dir", "reports/m", "--out", "reports/m/gate.json"], project)
    assert json.loads((model_dir / "gate.json").read_text())["passed"] is True
