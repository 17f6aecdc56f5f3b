"""The performance targets set for a GPU (conf/targets/) against the published run on that GPU
(reports/reference/): a target edited past what was measured, or a reference report replaced
by a slower one, fails here rather than in a user's report."""

from __future__ import annotations

from pathlib import Path

import pytest

from stages.lib.report import results, targets
from tests.conftest import ROOT, write_params

REFERENCE = ROOT / "reports" / "reference"


@pytest.mark.parametrize(
    ("run", "overrides"),
    [("h200/resnet18_cifar", []), ("h200/resnet50", ["experiment=resnet50_224"])],
)
def test_reference_run_meets_its_gpus_targets(run: str, overrides: list[str], tmp_path: Path) -> None:
    d = REFERENCE / run
    c = results.collect(str(write_params(tmp_path, overrides)), d, fingerprint=d / "run" / "fingerprint.json")
    rows = targets.check(c.p.targets, c.fingerprint["gpu"], c.benches, c.records, c.evals)
    assert len(rows) >= 5, [r.target for r in rows]  # the GPU has targets, and they were measured
    assert [(r.target, r.measured_text) for r in rows if r.met is not True] == []
