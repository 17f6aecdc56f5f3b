"""export: checkpoint -> fp32.onnx and fp16.onnx (dynamic batch), checked and validated.

With ``model.onnx`` the user's ONNX classifier is checked and taken as fp32.onnx instead
(:mod:`stages.lib.model.useronnx`); its ONNX Runtime logits are the reference.

With ``export.raw_input`` the models take uint8 NHWC images and preprocess inside the graph;
with ``export.io_fp16`` fp16.onnx returns fp16 (and takes fp16 unless raw). ONNX Runtime is
validated against PyTorch (float input) on real test images with tolerances from params;
every mismatch is listed in one ParityError. ONNX Runtime FP32 logits on the first
``export.reference_images`` test images become the reference every engine is verified against.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .lib.core.cli import run_main
from .lib.core.config import load_params
from .lib.core.errors import BackendUnavailable, OnnxModelError, ParityError
from .lib.core.io import atomic_path, read_json, write_json
from .lib.core.params import Params
from .lib.data import inputs
from .lib.data import prepared as data
from .lib.model.networks import RawPixels, load_checkpoint
from .lib.model.useronnx import adopt_onnx
from .lib.quant.onnxgraph import check_onnx, topological_sort
from .lib.runners.ort_runner import available_device, reference_runner

log = logging.getLogger(__name__)

INPUT_NAME, OUTPUT_NAME = "input", "logits"


def export_fp32(
    model: torch.nn.Module, image_size: int, opset: int, exporter: str, dest: Path, raw: bool = False
) -> None:
    """ONNX export with a dynamic batch axis, then onnx.checker.

    ``torchscript`` (default) writes GlobalAveragePool/Flatten at the requested opset;
    ``dynamo`` (torch.export) writes opset >= 18 ReduceMean with axes as an input, which
    TensorRT's ONNX parser rejects (NVIDIA/TensorRT#3467), so it is for other runtimes.
    ``raw``: ``model`` is a :class:`RawPixels` taking uint8 NHWC images.
    """
    import warnings

    if raw:
        x = torch.randint(0, 256, (2, image_size, image_size, 3), dtype=torch.uint8)
    else:
        x = torch.randn(2, 3, image_size, image_size)
    # the ONNX file is about the size of the float32 weights
    weights = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    with atomic_path(dest, need_bytes=weights) as tmp:
        if exporter == "dynamo":
            batch = torch.export.Dim("batch", min=1, max=4096)
            program = torch.onnx.export(
                model,
                (x,),
                dynamo=True,
                opset_version=opset,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_shapes={"x": {0: batch}},
                verbose=False,
            )
            if program is None:
                raise OnnxModelError("torch.onnx.export (dynamo) returned no program")
            program.save(str(tmp))
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                torch.onnx.export(
                    model,
                    (x,),
                    str(tmp),
                    dynamo=False,
                    opset_version=opset,
                    input_names=[INPUT_NAME],
                    output_names=[OUTPUT_NAME],
                    dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                    do_constant_folding=True,
                )
        check_onnx(tmp, name=str(dest))


def export_fp16(src: Path, dest: Path, io_fp16: bool = False) -> None:
    """FP16 weights and arithmetic; FP32 input/output (casts inside the graph) unless ``io_fp16``.

    A uint8 input (raw pixels) stays uint8 either way: the converter turns its Cast to float32
    into a Cast to float16.
    """
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model16 = convert_float_to_float16(onnx.load(str(src)), keep_io_types=not io_fp16)
    topological_sort(model16.graph)  # the converter appends its input casts at the end
    with atomic_path(dest, need_bytes=model16.ByteSize()) as tmp:
        onnx.save(model16, str(tmp))
        check_onnx(tmp, name=str(dest))


def compare(
    ref: np.ndarray, got: np.ndarray, atol: float, rtol: float, what: str, strict: bool = True
) -> dict[str, Any]:
    """Per-image check |got - ref| <= atol + rtol*|ref|; raise ParityError listing failures
    (or, with ``strict=False``, count them in the result)."""
    diff = np.abs(got - ref)
    bad = (diff > atol + rtol * np.abs(ref)).any(axis=1)
    agree = float((got.argmax(1) == ref.argmax(1)).mean())
    mismatches = [
        f"image {i}: max |diff| {diff[i].max():.3g} (class {ref[i].argmax()} vs {got[i].argmax()})"
        for i in np.flatnonzero(bad)
    ]
    if mismatches and strict:
        raise ParityError(f"{what} (atol={atol}, rtol={rtol})", mismatches)
    return {
        "max_abs_diff": float(diff.max()),
        "top1_agreement": agree,
        "images": len(ref),
        "images_beyond_tolerance": len(mismatches),
    }


def logits_of(runner: Any, split: data.Split, p: Params, n: int, desc: str) -> np.ndarray:
    """The runner's logits on the first ``n`` images, in the runner's input format."""
    return inputs.infer_all(runner, split.images[:n], p.data.mean, p.data.std, 128, desc)


def run(args: argparse.Namespace) -> None:
    p = load_params(args.params)
    # the user's ONNX model is the FP32 model (ONNX Runtime the reference); else the checkpoint
    model, meta = (None, {}) if p.model.onnx else load_checkpoint(args.checkpoint, p.model)
    test = data.load_split(args.test)  # inputs checked in pipeline order: train's, then prepare's
    t0 = time.perf_counter()
    fp32, fp16 = args.out_dir / "fp32.onnx", args.out_dir / "fp16.onnx"
    raw = p.export.raw_input
    if p.model.onnx:
        adopted = adopt_onnx(p.model.onnx, fp32, p.model.image_size, p.model.num_classes)
        synthetic = bool(read_json(args.test.parent / "meta.json").get("synthetic", False))
    else:
        assert model is not None
        synthetic = bool(meta["synthetic"])
        net = RawPixels(model, p.data.mean, p.data.std).eval() if raw else model
        export_fp32(net, p.model.image_size, p.export.opset, p.export.exporter, fp32, raw=raw)
    export_fp16(fp32, fp16, io_fp16=p.export.io_fp16)
    export_s = time.perf_counter() - t0

    n = min(p.export.parity_images, len(test))  # PyTorch on float input: the reference either way
    torch_logits = None
    if model is not None:
        x_all = inputs.preprocess(test.images[:n], p.data.mean, p.data.std, p.model.image_size)
        with torch.no_grad():
            torch_logits = np.concatenate([model(torch.from_numpy(x_all[i : i + 64])).numpy() for i in range(0, n, 64)])
    device = available_device(p)
    report: dict[str, Any] = {
        "opset": p.export.opset,
        "exporter": "user onnx" if p.model.onnx else p.export.exporter,
        "export_s": round(export_s, 2),
        "fp32_onnx_mb": round(fp32.stat().st_size / 2**20, 2),
        "fp16_onnx_mb": round(fp16.stat().st_size / 2**20, 2),
        "ort_provider": device,
        "synthetic_data": synthetic,
        "raw_input": raw,
        "io_fp16": p.export.io_fp16,
    }
    if p.model.onnx:
        report["user_onnx"] = adopted
        report["opset"] = adopted["opset"]
    with reference_runner(p, "fp32", fp32, device) as ort32:
        report["fp32_input"] = ort32.input_spec().describe()
        ort_logits = logits_of(ort32, test, p, n, "parity fp32")
        if torch_logits is None:
            parity: dict[str, Any] = {"status": "skipped", "reason": "model.onnx: no PyTorch model to compare with"}
            torch_logits = ort_logits
        else:
            parity = compare(
                torch_logits, ort_logits, p.export.atol, p.export.rtol, f"ONNX Runtime FP32 vs PyTorch on {fp32}"
            )
        report["fp32_parity"] = parity
        n_ref = min(p.export.reference_images, len(test))
        reference = logits_of(ort32, test, p, n_ref, "reference logits")
    with atomic_path(args.reference) as tmp, open(tmp, "wb") as f:
        np.save(f, reference.astype(np.float32))
    report["reference_images"] = n_ref
    report["fp16_parity"] = fp16_parity(p, fp16, test, torch_logits, device)
    write_json(args.report, report)
    log.info("exported %s and %s; FP32 parity %s over %d images", fp32, fp16, parity.get("max_abs_diff", "skipped"), n)


def fp16_parity(p: Params, fp16: Path, test: data.Split, torch_logits: np.ndarray, device: str) -> dict[str, Any]:
    """ONNX Runtime FP16 against PyTorch FP32 on the parity images: FP16 rounding is expected,
    so mismatches are counted (and warned about), not fatal; CUDA provider only."""
    n = len(torch_logits)
    try:
        if device != "cuda":
            raise BackendUnavailable("FP16 ONNX is validated on the CUDA provider only")
        with reference_runner(p, "fp16", fp16, device) as ort16:
            parity = compare(
                torch_logits,
                logits_of(ort16, test, p, n, "parity fp16"),
                p.export.fp16_atol,
                p.export.fp16_rtol,
                f"ONNX Runtime FP16 vs PyTorch on {fp16}",
                strict=False,
            )
    except BackendUnavailable as exc:
        log.warning("FP16 parity skipped: %s", exc)
        return {"status": "skipped", "reason": str(exc)}
    if parity["images_beyond_tolerance"]:
        log.warning(
            "FP16 ONNX: %d of %d images beyond fp16 tolerance (max |diff| %.3g)",
            parity["images_beyond_tolerance"],
            n,
            parity["max_abs_diff"],
        )
    return parity


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--checkpoint", type=Path, required=True)
    ap.add_argument("--test", type=Path, required=True)
    ap.add_argument("--out-dir", type=Path, required=True)
    ap.add_argument("--reference", type=Path, required=True)
    ap.add_argument("--report", type=Path, required=True)
    args = ap.parse_args(argv)
    return run_main("export", lambda: run(args), gpu=True)


if __name__ == "__main__":
    sys.exit(main())
