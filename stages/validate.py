"""validate: check params.yaml, and what can be checked against the raw data, before any stage
runs.

Every stage depends on this stage's output, so DVC runs it first; a bad value fails here,
before DVC deletes any other stage's outputs (a stage's outputs go when it starts). The
output stays byte-identical while the params are valid, so a valid change reruns only the
stages whose own params or deps changed.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from .lib.core.cli import run_main
from .lib.core.config import load_params
from .lib.core.errors import ParamsError
from .lib.core.io import write_json
from .lib.core.params import Params
from .lib.data import rawdata

log = logging.getLogger(__name__)


def data_problems(p: Params) -> list[str]:
    """Params that the dataset cannot satisfy, counted without decoding any image."""
    if p.data.source == "synthetic":
        n_train = p.data.synthetic_train
    else:
        n_train = rawdata.count_train_images(p.data.raw_dir, p.data.source, p.data.download)
    if p.data.calib_size > n_train:
        return [
            f"data.calib_size: {p.data.calib_size} exceeds the {n_train} training images in "
            f"{'the synthetic set' if p.data.source == 'synthetic' else p.data.raw_dir}: "
            f"use at most {n_train} (calibration images are drawn from the training split)"
        ]
    return []


def run(args: argparse.Namespace) -> None:
    p = load_params(args.params)
    problems = data_problems(p)
    if problems:
        raise ParamsError(problems, str(args.params))
    write_json(args.out, {"params_valid": True})
    log.info("%s is valid", args.params)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    return run_main("validate", lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
