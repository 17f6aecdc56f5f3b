"""probe: fingerprint this machine (GPU, compute capability, TensorRT, driver).

Always runs (``always_changed``); engines depend on its output, so DVC reuses them on the
same GPU/TensorRT and rebuilds them elsewhere. Runs in $TRT_PYTHON when that is set.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from .lib.core.cli import run_main
from .lib.core.interpreter import run_module, trt_python
from .lib.core.io import write_json
from .lib.trt.fingerprint import describe, probe

log = logging.getLogger(__name__)


def run(args: argparse.Namespace) -> None:
    python = trt_python()
    if python:
        run_module("stages.probe", ["--out", str(args.out)], python=python, kind="trt")
        return
    fp = probe()
    write_json(args.out, fp)
    if fp["available"]:
        log.info("TensorRT target: %s, driver %s", describe(fp), fp["driver"])
    else:
        log.warning("TensorRT engines will be skipped on this machine: %s", fp["reason"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    return run_main("probe", lambda: run(args), gpu=True)


if __name__ == "__main__":
    sys.exit(main())
