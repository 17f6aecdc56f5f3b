"""calibrate: explicit INT8 quantization -> a Q/DQ ONNX model + a readable range cache.

Ranges come from ONNX Runtime's calibrators (entropy, minmax or percentile) over the
calibration subset of the *training* split. Q/DQ nodes follow TensorRT's placement advice:
symmetric INT8, per-channel weights, float bias, Q/DQ on the inputs of Conv and on every
residual block's skip input (the pattern TensorRT fuses into conv + add + ReLU), or, with
``quantize_residual_add``, on all Add inputs and outputs (ORT's own placement); with
``quantize_pools``, also around the average pool (an INT8 pool after the last conv). Convs named
by ``float_nodes`` stay in float. The stage then checks the Q/DQ model against FP32 on the
calibration images (top-1 agreement), so a collapse shows before any engine is built. The
calibration batches are in the FP32 model's input format (raw uint8 pixels or float); with
``export.io_fp16`` the kept Q/DQ model gets fp16 graph I/O (Casts at the edges) at the end.

With ``high_precision: fp16`` the kept Q/DQ model is then given an FP16 base: what its Q/DQ
nodes leave unquantized becomes FP16 (opset 19 for FP16 scales), the ranges stay, graph I/O
keeps its types through Casts at the edges, and its agreement with FP32 is checked again.

Minmax follows single outlier activations, so one method may not be enough: below
``min_agreement`` the stage calibrates again with each of ``fallback_methods`` in turn, until
one reaches it, and keeps the attempt that agrees best (the first of equals); the Q/DQ model
and the ranges are that attempt's, the report lists every attempt, and a warning says when
even the best one stays below ``min_agreement``.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .lib.core.cli import run_main
from .lib.core.config import load_params
from .lib.core.errors import OnnxModelError
from .lib.core.io import write_json
from .lib.core.params import Params
from .lib.data import inputs
from .lib.data import prepared as data
from .lib.quant.onnxgraph import default_opset, input_spec
from .lib.quant.quantize import compute_ranges, load_onnx, quantize, ranges_to_json, with_fp16_base, with_fp16_io
from .lib.report import metrics
from .lib.runners.ort_runner import available_device, reference_runner

log = logging.getLogger(__name__)

BATCH = 32
CHECK_IMAGES = 256  # calibration images the Q/DQ model is checked on against FP32


def calibration_batches(p: Params, calib: data.Split, spec: inputs.InputSpec) -> list[np.ndarray]:
    """The first calibrate.num_images calibration images in batches of the model's input ``spec``."""
    n = min(p.calibrate.num_images, len(calib))
    return list(inputs.model_batches(calib.images[:n], spec, p.data.mean, p.data.std, BATCH))


def qdq_agreement(fp32_onnx: Path, qdq_onnx: Path, batches: list[np.ndarray], p: Params, device: str) -> float:
    """Top-1 agreement of the Q/DQ model with the FP32 model on ``batches`` (ONNX Runtime), in
    the FP32 model's input format and cast to the Q/DQ model's input type (fp16 I/O)."""
    logits = []
    for precision, path in (("fp32", fp32_onnx), ("int8", qdq_onnx)):
        with reference_runner(p, precision, path, device) as runner:
            dtype = runner.input_spec().dtype
            logits.append(np.concatenate([runner.infer(b.astype(dtype, copy=False)) for b in batches]))
    return metrics.agreement(logits[0], logits[1])["top1_agreement"]


@dataclass(frozen=True)
class _Job:
    """What every calibration attempt shares."""

    onnx: Path
    batches: list[np.ndarray]  # calibrated on
    check: list[np.ndarray]  # checked on (the first CHECK_IMAGES of them)
    p: Params
    device: str
    providers: list[str]


@dataclass(frozen=True)
class Attempt:
    """One calibration method's ranges and Q/DQ model (at ``path``), checked against FP32."""

    method: str
    tensors: Any
    counts: dict[str, int]
    path: Path
    agreement: float
    seconds: float  # computing the ranges


def calibrate_once(job: _Job, method: str, dest: Path) -> Attempt:
    """Ranges with ``method``, the Q/DQ model at ``dest``, and its top-1 agreement with FP32."""
    c = dataclasses.replace(job.p.calibrate, method=method)
    t0 = time.perf_counter()
    tensors = compute_ranges(job.onnx, job.batches, c, job.providers)
    seconds = time.perf_counter() - t0
    counts = quantize(job.onnx, tensors, c, dest)
    agreement = qdq_agreement(job.onnx, dest, job.check, job.p, job.device)
    return Attempt(method, tensors, counts, dest, agreement, seconds)


def try_methods(job: _Job, out: Path, temps: list[Path]) -> list[Attempt]:
    """calibrate.method, then each other fallback while agreement stays below min_agreement.

    Each Q/DQ model goes to a temporary file next to ``out``, appended to ``temps`` before it
    is written, so the caller can delete them whatever happens.
    """
    c = job.p.calibrate
    methods = [c.method, *(m for m in c.fallback_methods if m != c.method)]
    attempts: list[Attempt] = []
    for i, method in enumerate(methods):
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.{method}.", suffix=".tmp", dir=out.parent)
        os.close(fd)
        temps.append(Path(tmp))
        attempts.append(calibrate_once(job, method, Path(tmp)))
        next_method = methods[i + 1] if i + 1 < len(methods) else None
        log.info(
            "calibration %s: agreement %.1f%% with FP32 on %d images, %s",
            method,
            100 * attempts[-1].agreement,
            sum(len(b) for b in job.check),
            _outcome(attempts[-1].agreement, c.min_agreement, next_method),
        )
        if attempts[-1].agreement >= c.min_agreement:
            break
    return attempts


def _outcome(agreement: float, min_agreement: float, next_method: str | None) -> str:
    floor = f"{100 * min_agreement:.0f}%"
    if agreement >= min_agreement:
        return f"at least {floor}: kept"
    return f"below {floor}, " + (f"trying {next_method}" if next_method else "no fallback left")


def finish(job: _Job, kept: Attempt) -> dict[str, Any]:
    """The kept Q/DQ model, in place, as the pipeline takes it: an FP16 base where
    calibrate.high_precision asks for one, fp16 graph I/O where export.io_fp16 does. Returns
    its report entries: its opset and, with an FP16 base, its agreement with FP32 and how many
    values were clamped to float16's range."""
    p = job.p
    if p.calibrate.high_precision == "fp16":
        fp16 = _fp16_base(job, kept)
    else:
        if p.export.io_fp16:
            with_fp16_io(kept.path)
        fp16 = {"fp16_base_top1_agreement_vs_fp32": None, "fp16_values_clamped": 0}
    return {"onnx_opset": default_opset(load_onnx(kept.path)), **fp16}


def _fp16_base(job: _Job, kept: Attempt) -> dict[str, Any]:
    """The kept Q/DQ model given an FP16 base in place, checked against FP32 again."""
    p = job.p
    clamped = with_fp16_base(kept.path, fp16_io=p.export.io_fp16)
    agreement = qdq_agreement(job.onnx, kept.path, job.check, p, job.device)
    log.info(
        "FP16 base: agreement %.1f%% with FP32 (%.1f%% with the FP32 base); %d values clamped to float16's range",
        100 * agreement,
        100 * kept.agreement,
        clamped,
    )
    if agreement < p.calibrate.min_agreement <= kept.agreement:
        log.warning(
            "with its FP16 base the INT8 model's top-1 agrees with FP32 on only %.1f%% of the calibration "
            "images (%.1f%% with the FP32 base; calibrate.min_agreement %.0f%%): set calibrate.high_precision: fp32",
            100 * agreement,
            100 * kept.agreement,
            100 * p.calibrate.min_agreement,
        )
    return {"fp16_base_top1_agreement_vs_fp32": round(agreement, 4), "fp16_values_clamped": clamped}


def run(args: argparse.Namespace) -> None:
    p = load_params(args.params)
    if not args.onnx.is_file():
        raise OnnxModelError(f"{args.onnx} is missing: run `dvc repro export`")
    calib = data.load_split(args.calib)
    spec = input_spec(load_onnx(args.onnx))
    batches = calibration_batches(p, calib, spec)
    n_images = sum(len(b) for b in batches)
    device = available_device(p)
    providers = (["CUDAExecutionProvider"] if device == "cuda" else []) + ["CPUExecutionProvider"]
    check = batches[: max(1, CHECK_IMAGES // BATCH)]
    job = _Job(args.onnx, batches, check, p, device, providers)
    temps: list[Path] = []
    try:
        attempts = try_methods(job, args.out, temps)
        kept = max(attempts, key=lambda a: a.agreement)  # max keeps the first of equals
        kept_c = dataclasses.replace(p.calibrate, method=kept.method)
        base = finish(job, kept)
        write_json(args.ranges, ranges_to_json(kept.tensors, kept_c, n_images))
        os.replace(kept.path, args.out)  # same folder: an atomic rename
    finally:
        for tmp in temps:
            tmp.unlink(missing_ok=True)
    n_check = sum(len(b) for b in check)
    calib_s = sum(a.seconds for a in attempts)
    if kept.agreement < p.calibrate.min_agreement:
        tried = [a.method for a in attempts]
        log.warning(
            "the INT8 model's top-1 agrees with FP32 on only %.1f%% of %d calibration images "
            "(calibrate.min_agreement %.0f%%) with %s calibration, %s: INT8 accuracy will "
            "suffer. An under-trained model is a common cause; otherwise keep the sensitive "
            "layers in float with calibrate.float_nodes, or try other calibrate.method / "
            "calibrate.fallback_methods",
            100 * kept.agreement,
            n_check,
            100 * p.calibrate.min_agreement,
            kept.method,
            f"the best of {', '.join(tried)}" if len(tried) > 1 else "and no calibrate.fallback_methods",
        )
    report = _report(p, spec, kept, attempts, n_images, n_check, providers[0])
    write_json(args.report, {**report, **base})
    log.info(
        "calibrated %d tensors on %d images (%s) in %.1f s -> %s",
        len(kept.tensors.data),
        n_images,
        kept.method,
        calib_s,
        args.out,
    )


def _report(
    p: Params,
    spec: inputs.InputSpec,
    kept: Attempt,
    attempts: list[Attempt],
    n_images: int,
    n_check: int,
    provider: str,
) -> dict[str, Any]:
    """calibrate.json: the kept attempt, its Q/DQ model's make-up and every attempt's agreement."""
    import onnxruntime as ort

    return {
        "method": kept.method,
        "images": n_images,
        "from_split": "train",
        "per_channel": p.calibrate.per_channel,
        "input": spec.describe(),
        "io_fp16": p.export.io_fp16,
        "high_precision": p.calibrate.high_precision,
        "quantize_residual_add": p.calibrate.quantize_residual_add,
        "tensors_calibrated": len(kept.tensors.data),
        "calibrate_s": round(sum(a.seconds for a in attempts), 2),
        "quantize_linear_nodes": kept.counts.get("QuantizeLinear", 0),
        "skip_qdq_pairs_added": kept.counts["skip_qdq_pairs"],
        "quantize_pools": p.calibrate.quantize_pools,
        "pool_qdq_added": kept.counts["pool_qdq"],
        "float_convs": kept.counts["float_convs"],
        "float_nodes": p.calibrate.float_nodes,
        "qdq_top1_agreement_vs_fp32": round(kept.agreement, 4),
        "agreement_images": n_check,
        "dequantize_linear_nodes": kept.counts.get("DequantizeLinear", 0),
        "provider": provider,
        "tool": f"onnxruntime {ort.__version__} quantization",
        "attempts": [
            {
                "method": a.method,
                "qdq_top1_agreement_vs_fp32": round(a.agreement, 4),
                "calibrate_s": round(a.seconds, 2),
            }
            for a in attempts
        ],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--onnx", type=Path, required=True)
    ap.add_argument("--calib", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--ranges", type=Path, required=True)
    ap.add_argument("--report", type=Path, required=True)
    args = ap.parse_args(argv)
    return run_main("calibrate", lambda: run(args), gpu=True)


if __name__ == "__main__":
    sys.exit(main())
