"""build: one TensorRT engine per precision, with its build report and layer table.

Runs in $TRT_PYTHON when set. The engine folder is a persistent DVC output so the timing
cache inside it survives rebuilds; a stale engine is removed before every build.
On a machine without TensorRT or a GPU it records why the engine was skipped.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .lib.core.cli import run_main
from .lib.core.config import load_params
from .lib.core.errors import EngineBuildFailed, OnnxModelError, is_out_of_memory
from .lib.core.interpreter import run_module, trt_python
from .lib.core.io import read_json, write_bytes, write_json
from .lib.core.params import Params
from .lib.data import inputs
from .lib.data import prepared as data
from .lib.trt import common
from .lib.trt.engine import BUILD_FILE, ENGINE_FILE, LAYERS_FILE
from .lib.trt.fingerprint import describe

log = logging.getLogger(__name__)

TIMING_CACHE = "timing.cache"


def run(args: argparse.Namespace) -> None:
    python = trt_python()
    if python:
        run_module("stages.build", sys.argv[1:] if args.argv is None else args.argv, python=python, kind="trt")
        return
    p = load_params(args.params)
    out: Path = args.out_dir
    out.mkdir(parents=True, exist_ok=True)
    for stale in (ENGINE_FILE, BUILD_FILE, LAYERS_FILE):
        (out / stale).unlink(missing_ok=True)
    fp = read_json(args.fingerprint)
    if not fp.get("available"):
        record = {"status": "skipped", "precision": args.precision, "reason": fp.get("reason"), "fingerprint": fp}
        write_json(out / BUILD_FILE, record)
        write_json(args.report, record)
        log.warning("TensorRT %s engine skipped: %s", args.precision, fp.get("reason"))
        return
    if not args.onnx.is_file():
        raise OnnxModelError(f"{args.onnx} is missing: run `dvc repro`")

    trt = common.import_tensorrt()
    logger = common.make_logger(trt)
    cache_file = out / TIMING_CACHE
    cache = cache_file.read_bytes() if p.build.timing_cache and cache_file.is_file() else None
    calibration = _implicit_calibration(trt, args.calib, p, out) if args.implicit_calibration else None
    from .lib.trt.builder import build_engine

    try:
        result = build_engine(trt, logger, args.onnx, args.precision, p.build, cache, calibration)
    except Exception as exc:
        if not (isinstance(exc, EngineBuildFailed) or is_out_of_memory(exc)):
            raise
        # a failed case, not a failed stage: evaluate and benchmark run the other backends,
        # and the report, metrics.json (failed_cases) and the gate name this build
        record = {"status": "failed", "precision": args.precision, "reason": f"{type(exc).__name__}: {exc}"}
        write_json(out / BUILD_FILE, {**record, "fingerprint": fp})
        write_json(args.report, record)
        log.error("TensorRT %s engine build failed: %s", args.precision, exc)
        return
    result.report.update(status="built", fingerprint=fp, onnx_sha256=_sha256(args.onnx))
    write_bytes(out / ENGINE_FILE, result.engine)
    if result.timing_cache is not None:
        write_bytes(cache_file, result.timing_cache)
    write_json(out / LAYERS_FILE, result.layers)
    write_json(out / "inspector.json", result.inspector)
    write_json(out / BUILD_FILE, result.report)
    write_json(args.report, {k: v for k, v in result.report.items() if k != "fingerprint"})
    log.info(
        "built %s engine for %s in %.1f s: %.1f MB, %d layers %s",
        args.precision,
        describe(fp),
        result.report["build_s"],
        result.report["engine_mb"],
        result.report["layer_count"],
        result.report["layer_precisions"],
    )


def _implicit_calibration(trt: Any, calib: Path, p: Params, out: Path) -> Callable[[inputs.InputSpec], Any]:
    """What makes TensorRT's entropy calibrator once the network's input is known: batches of
    32 calibration images in that input's format."""
    common.require_implicit_calibrator(trt)  # says so before any calibration data is read
    from .lib.trt.calibrator import make_entropy_calibrator

    split = data.load_split(calib)

    def make(spec: inputs.InputSpec) -> Any:
        batches = list(inputs.model_batches(split.images, spec, p.data.mean, p.data.std, 32, drop_last=True))
        return make_entropy_calibrator(trt, batches, out / "calibration.cache")

    return make


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--precision", required=True, choices=("fp32", "fp16", "int8"))
    ap.add_argument("--onnx", type=Path, required=True)
    ap.add_argument("--fingerprint", type=Path, required=True)
    ap.add_argument("--out-dir", type=Path, required=True)
    ap.add_argument("--report", type=Path, required=True)
    ap.add_argument(
        "--implicit-calibration",
        action="store_true",
        help="INT8 via TensorRT's entropy calibrator (<= 10.x) from --onnx (fp32) and --calib, instead of a Q/DQ model",
    )
    ap.add_argument("--calib", type=Path, default=Path("data/prepared/calib.npz"))
    args = ap.parse_args(argv)
    args.argv = argv
    return run_main(f"build {args.precision}", lambda: run(args), gpu=True)


if __name__ == "__main__":
    sys.exit(main())
