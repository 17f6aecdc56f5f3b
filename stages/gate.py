"""gate: fail the run when a reduced-precision model loses more accuracy than allowed.

Runs last, after the report is written, so a failing run still leaves its report.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from .lib.core.cli import run_main
from .lib.core.config import load_params
from .lib.core.errors import QualityGateError
from .lib.core.io import read_json, write_json
from .lib.report import int8budget
from .lib.report.failures import read_failed_cases
from .lib.report.quality import gate_checks

log = logging.getLogger(__name__)


def run(args: argparse.Namespace) -> None:
    p = load_params(args.params)
    evals = {prec: read_json(args.model_dir / "eval" / f"{prec}.json") for prec in p.precisions}
    failed_cases = read_failed_cases(args.model_dir, p.precisions)
    budget = int8budget.load(args.model_dir)  # the INT8 budget on held-out images (choose stage)
    checks = gate_checks(evals, p.quality, failed_cases, budget)
    failed = [c for c in checks if not c["passed"]]
    write_json(
        args.out,
        {
            "passed": not failed,
            "checks": len(checks),
            "failed": len(failed),
            "max_top1_drop": p.quality.max_top1_drop,
            "allow_failed_cases": p.quality.allow_failed_cases,
            "failures": [f"{c['backend']} {c['precision']}: {c['detail']}" for c in failed],
        },
    )
    if failed:
        raise QualityGateError(
            "; ".join(f"{c['backend']} {c['precision']} fails '{c['rule']}' ({c['detail']})" for c in failed)
            + _allow_hint(failed, p.quality.allow_failed_cases)
            + f" (see {args.model_dir / 'summary.md'})"
        )
    log.info("quality gate passed: %d checks", len(checks))


def _allow_hint(failed: list[dict[str, Any]], allowed: bool) -> str:
    """How to accept failed cases, when some of the failing checks are only that."""
    if allowed or not any(c["rule"].endswith(" ran") for c in failed):
        return ""
    return "; fix the failed cases, or set quality.allow_failed_cases: true to accept them"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--model-dir", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    return run_main("quality gate", lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
