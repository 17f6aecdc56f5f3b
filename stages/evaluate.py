"""evaluate: test-split accuracy of every backend at one precision.

Top-1, per-class accuracy and the confusion matrix on the full test split, plus top-1
agreement and max |logit difference| against ONNX Runtime FP32 (the export reference).
Each backend runs in its own process (TensorRT in $TRT_PYTHON when set). Torch-free.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from .lib.core.cli import run_main
from .lib.core.config import load_params
from .lib.core.errors import BackendUnavailable, PipelineError, UnsupportedCombination
from .lib.core.fanout import add_arguments, passthrough, per_backend, status_of
from .lib.core.io import read_json, write_json
from .lib.core.params import Params
from .lib.data import inputs
from .lib.data import prepared as data
from .lib.report import metrics
from .lib.runners.base import Artifacts
from .lib.runners.registry import create_runner

log = logging.getLogger(__name__)

EVAL_BATCH = 256
NOT_EVALUATED = {"torch_compile": "same weights and arithmetic as pytorch eager; benchmarked only"}


def evaluate_backend(
    backend: str,
    p: Params,
    artifacts: Artifacts,
    precision: str,
    test: data.Split,
    reference: np.ndarray,
    num_classes: int,
) -> dict[str, Any]:
    if backend in NOT_EVALUATED:
        return {"status": "not_evaluated", "reason": NOT_EVALUATED[backend]}
    try:
        runner = create_runner(backend, precision, artifacts, p)
    except (UnsupportedCombination, BackendUnavailable) as exc:
        return status_of(exc)
    t0 = time.perf_counter()
    with runner:  # images preprocessed into the runner's input format (raw pixels or float)
        out = inputs.infer_all(runner, test.images, p.data.mean, p.data.std, EVAL_BATCH, f"eval {backend} {precision}")
        info = runner.describe()
    seconds = time.perf_counter() - t0
    preds = out.argmax(1)
    cm = metrics.confusion_matrix(test.labels, preds, num_classes)
    agree = metrics.agreement(reference, out)
    n_ref = agree["images"]
    return {
        "status": "ok",
        "top1": round(metrics.top1(test.labels, preds), 3),
        "top1_agreement_vs_ort_fp32": round(agree["top1_agreement"], 5),
        "max_abs_diff_vs_ort_fp32": float(f"{agree['max_abs_diff']:.4g}"),
        "agreement_images": n_ref,
        # top-1 on the reference images, for this backend and for ORT FP32 (the export
        # reference): the gate's fallback when no FP32 run of this experiment exists
        "top1_on_reference_images": round(metrics.top1(test.labels[:n_ref], preds[:n_ref]), 3) if n_ref else None,
        "reference_top1": round(metrics.top1(test.labels[:n_ref], reference[:n_ref].argmax(1)), 3) if n_ref else None,
        "images": len(test),
        "eval_seconds": round(seconds, 2),
        "per_class_top1": [round(float(v), 2) for v in metrics.per_class_top1(cm)],
        "confusion": cm.tolist(),
        "runtime": info,
    }


def child(args: argparse.Namespace) -> None:
    p = load_params(args.params)
    meta = read_json(args.test.parent / "meta.json")
    test = data.load_split(args.test)
    reference = np.load(args.reference) if args.reference.is_file() else np.zeros((0, 0))
    artifacts = Artifacts(args.checkpoint, args.onnx, args.engine_dir)
    try:
        record = evaluate_backend(args.backend, p, artifacts, args.precision, test, reference, len(meta["classes"]))
    except PipelineError as exc:
        record = {"status": "failed", "reason": str(exc)}
    write_json(args.part, record)


def parent(args: argparse.Namespace) -> None:
    p = load_params(args.params)
    meta = read_json(args.test.parent / "meta.json")
    child_args = passthrough(args) + ["--test", str(args.test), "--reference", str(args.reference)]
    results = per_backend("stages.evaluate", p.backends, child_args)
    summary: dict[str, Any] = {"precision": args.precision, "synthetic_data": bool(meta["synthetic"])}
    detail: dict[str, Any] = {"precision": args.precision, "classes": meta["classes"]}
    for backend, rec in results.items():
        detail[backend] = {k: rec.pop(k) for k in ("per_class_top1", "confusion", "runtime") if k in rec}
        summary[backend] = rec
        if rec.get("status") == "ok":
            log.info(
                "%s %s: top-1 %.2f%%, agreement with ORT FP32 %.4f",
                backend,
                args.precision,
                rec["top1"],
                rec["top1_agreement_vs_ort_fp32"],
            )
    write_json(args.detail, detail)
    write_json(args.out, summary)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    add_arguments(ap, "evaluate")
    ap.add_argument("--test", type=Path, required=True)
    ap.add_argument("--reference", type=Path, required=True)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--detail", type=Path)
    args = ap.parse_args(argv)
    if args.backend:
        return run_main(f"evaluate {args.backend} {args.precision}", lambda: child(args), gpu=True)
    if args.out is None or args.detail is None:
        ap.error("--out and --detail are required")
    return run_main(f"evaluate {args.precision}", lambda: parent(args), gpu=True)


if __name__ == "__main__":
    sys.exit(main())
