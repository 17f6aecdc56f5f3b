"""Comparing runs the way DVC users do, on the tiny synthetic CPU pipeline in a temporary git
repository (tests/dvcrepo.py): `dvc metrics diff` across commits, `dvc plots diff` of two
revisions in one chart, and the width of `dvc exp show`.

The tests share one repository and run in file order: a commit of a `-S precision=int8` run,
a commit of a `-S calibrate.method=entropy` run on top, then an experiment that differs from
that commit only in calibrate.method.
"""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import pytest

from tests.dvcrepo import Repo, make_tiny_repo

pytestmark = pytest.mark.slow

MODEL = "resnet18_cifar"
METRICS = f"reports/{MODEL}/metrics.json"
EXTRA = ["train.subset=128", "quality.max_top1_drop=100.0"]
# The compact view the README shows (and `make compare` runs): file deps hidden, since a
# stage's deps are every module it imports and DVC gives each path a column.
DROP_DEPS = r"(stages|artifacts|data|reports)/|params\.yaml$"


def _commit_run(repo: Repo, message: str, *overrides: str) -> None:
    repo.dvc("exp", "run", *[a for o in overrides for a in ("-S", o)])
    repo.git("add", "-A")
    repo.git("commit", "-q", "-m", message)


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Repo:
    r = make_tiny_repo(tmp_path_factory.mktemp("compare"), EXTRA)
    _commit_run(r, "INT8 only", "precision=int8")
    _commit_run(r, "entropy calibration", "calibrate.method=entropy")
    return r


def test_the_curated_metrics_file_is_the_only_metric(repo: Repo) -> None:
    shown = json.loads(repo.dvc("metrics", "show", "--json"))
    files = {path for rev in shown.values() for path in rev["data"]}
    assert files == {METRICS}
    values = json.loads((repo.path / METRICS).read_text())
    assert all(type(v) in (int, float) for v in values.values()), values
    assert {"top1_onnxruntime_int8", "ips_onnxruntime_int8_best", "ms_p50_onnxruntime_int8_b1"} <= set(values)
    assert values["gate_passed"] == 1 and values["synthetic_data"] == 1


def test_metrics_diff_across_commits_shows_numeric_changes_only(repo: Repo) -> None:
    """HEAD~1 ran INT8 alone with minmax ranges; HEAD every precision with entropy ranges."""
    diff = json.loads(repo.dvc("metrics", "diff", "HEAD~1", "--json"))
    assert set(diff) == {METRICS}
    changes: dict[str, dict[str, Any]] = diff[METRICS]
    assert changes, "nothing changed between the two commits"
    for key, change in changes.items():
        old, new = change.get("old"), change.get("new")
        assert old != new, key
        for value in (old, new):
            assert value is None or type(value) in (int, float), f"{key}: {change}"
    # FP32 ran only in HEAD: its keys are new; INT8 ran in both and was recalibrated
    assert changes["top1_pytorch_fp32"]["old"] is None and changes["top1_pytorch_fp32"]["new"] is not None
    assert "ms_p50_onnxruntime_int8_b1" in changes and changes["ms_p50_onnxruntime_int8_b1"]["old"] is not None
    assert "train_test_top1" not in changes  # training did not rerun


def _plot_revs(plots: dict[str, Any], name: str) -> dict[str, set[str]]:
    """revision -> the series of ``name`` in `dvc plots diff --json` output."""
    (entry,) = plots[name]
    rows = entry["content"]["data"]["values"]
    found: dict[str, set[str]] = {}
    for row in rows:
        found.setdefault(row["rev"], set()).add(row["series"])
    return found


def test_plots_diff_overlays_both_revisions_in_one_chart(repo: Repo) -> None:
    plots = json.loads(repo.dvc("plots", "diff", "HEAD~1", "HEAD", "--json"))["data"]
    throughput = _plot_revs(plots, "throughput_by_batch")
    assert set(throughput) == {"HEAD~1", "HEAD"}
    assert "onnxruntime int8" in throughput["HEAD~1"] and all(s.endswith(" int8") for s in throughput["HEAD~1"])
    assert {"onnxruntime int8", "onnxruntime fp32", "pytorch fp32"} <= throughput["HEAD"]
    assert _plot_revs(plots, "top1") == {
        "HEAD~1": {"onnxruntime int8"},
        "HEAD": {"pytorch fp32", "onnxruntime fp32", "onnxruntime int8"},
    }


def _columns(repo: Repo, *args: str) -> list[str]:
    out = repo.dvc("exp", "show", "--csv", *args)
    return next(csv.reader(io.StringIO(out)))


@pytest.fixture(scope="module")
def experiment(repo: Repo) -> str:
    """An experiment on HEAD that differs from it only in calibrate.method."""
    repo.dvc("exp", "run", "-S", "calibrate.method=minmax", "--name", "minmax")
    return "minmax"


def test_exp_show_is_readable(repo: Repo, experiment: str) -> None:
    full = _columns(repo)
    compact = _columns(repo, "--drop", DROP_DEPS)
    changed = _columns(repo, "--only-changed")
    print(f"dvc exp show --csv: {len(full)} columns")  # noqa: T201 (quoted in the README)
    print(f"dvc exp show --csv --drop '{DROP_DEPS}': {len(compact)} columns")  # noqa: T201
    print(f"dvc exp show --csv --only-changed: {len(changed)} columns: {changed}")  # noqa: T201
    assert len(compact) <= 130
    assert len(changed) <= 30
    # no per-stage record is a metric, and no string appears as a column
    assert not [c for c in full if c.startswith(("reports/", "pytorch.", "onnxruntime.")) and ":" in c]
    assert not [c for c in full if c.endswith((".status", ".reason"))]
    assert "calibrate.method" in changed and "top1_onnxruntime_int8" in compact


def test_sort_by_a_curated_metric(repo: Repo, experiment: str) -> None:
    out = repo.dvc("exp", "show", "--csv", "--sort-by", "ms_p50_onnxruntime_int8_b1", "--keep", "ms_p50_")
    assert "ms_p50_onnxruntime_int8_b1" in out.splitlines()[0]
