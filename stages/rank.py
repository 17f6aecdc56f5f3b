"""rank: the INT8 model's held-out top-1 drop against FP32 and, when it loses any, its Q/DQ
groups ranked by the harm each does (see :mod:`stages.lib.quant.search`).

The held-out images are training images that are neither calibration images nor test images
(``calibrate.heldout_images``); the models run in ONNX Runtime (CUDA where present, else CPU).
The ranking does not depend on the budget (``quality.max_top1_drop``), so DVC keeps it when only
the budget changes and the choose stage alone runs again.
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
from .lib.core.io import write_json
from .lib.core.params import Params
from .lib.quant.groups import find_groups
from .lib.quant.heldout import OrtLogits, load_heldout
from .lib.quant.quantize import load_onnx
from .lib.quant.search import rank
from .lib.runners.ort_runner import available_device

log = logging.getLogger(__name__)


def run(args: argparse.Namespace) -> None:
    p = load_params(args.params)
    for path in (args.fp32, args.qdq):
        if not path.is_file():
            raise OnnxModelError(f"{path} is missing: run `dvc repro calibrate`")
    start = time.monotonic()
    fp32_model, qdq = load_onnx(args.fp32), load_onnx(args.qdq)
    images = load_heldout(p, args.train, fp32_model)
    logits = OrtLogits(available_device(p))
    fp32 = logits(fp32_model, images)
    groups = find_groups(qdq)
    deadline = start + p.calibrate.search_max_s
    out = rank(qdq, groups, logits, images, fp32, p.calibrate.rank_images, deadline)
    out["seconds"] = round(time.monotonic() - start, 2)
    out["provider"] = logits.provider
    write_json(args.out, out)
    _log(out, p)


def _log(out: dict[str, Any], p: Params) -> None:
    log.info(
        "INT8 held-out top-1 %.2f%% vs FP32 %.2f%% on %d images (drop %.2f points)",
        out["int8_top1"],
        out["fp32_top1"],
        out["heldout_images"],
        out["int8_drop_pts"],
    )
    if not out["ranked"]:
        log.info("INT8 loses nothing on the held-out images: no Q/DQ group ranked")
    elif not out["complete"]:
        done = sum(g["harm"] is not None for g in out["groups"])
        log.warning(
            "calibrate.search_max_s (%.0f s) ended the ranking after %d of %d Q/DQ groups",
            p.calibrate.search_max_s,
            done,
            len(out["groups"]),
        )
    else:
        top = out["groups"][0]
        log.info(
            "ranked %d Q/DQ groups in %.1f s; most harmful: %s (harm %.3f)",
            len(out["groups"]),
            out["seconds"],
            top["group"],
            top["harm"],
        )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--fp32", type=Path, required=True, help="the FP32 ONNX model")
    ap.add_argument("--qdq", type=Path, required=True, help="the calibrate stage's full INT8 Q/DQ model")
    ap.add_argument("--train", type=Path, required=True, help="the prepared training split")
    ap.add_argument("--out", type=Path, required=True, help="the ranking (JSON)")
    args = ap.parse_args(argv)
    return run_main("rank", lambda: run(args), gpu=True)


if __name__ == "__main__":
    sys.exit(main())
