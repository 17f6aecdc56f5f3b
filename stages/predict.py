"""predict: the top-k classes of image files, with a trained model's engine, ONNX model or checkpoint.

Images (JPEG, PNG, WebP, ...; folders are searched recursively, in sorted order) may have any
size: one not at the prepared images' size goes through the evaluation transform (shorter side
resized, centre crop; :mod:`stages.lib.data.transforms`), as the test split did; grey, palette
and RGBA images become RGB as in the dataset loader. Preprocessing is the evaluation's own
(:mod:`stages.lib.data.inputs`), into whatever the model takes (raw uint8 pixels or normalised
floats). Probabilities are the softmax of the
logits. TensorRT runs in $TRT_PYTHON when that is set. Also installed as ``trt-predict``.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from .lib.core.cli import run_main
from .lib.core.config import load_params
from .lib.core.errors import BackendUnavailable, ImageError, InputFileError
from .lib.core.interpreter import run_module, trt_python
from .lib.core.io import read_json, write_csv, write_json
from .lib.core.params import PRECISIONS, Params
from .lib.core.progress import progress
from .lib.data import inputs, rawdata
from .lib.data import prepared as data
from .lib.runners.base import Artifacts
from .lib.runners.registry import create_runner

log = logging.getLogger(__name__)

BACKENDS = ("tensorrt", "onnxruntime", "pytorch")
BIG = 1000  # images from which decoding and inference show progress bars


def find_images(paths: list[Path]) -> list[Path]:
    """The files named, and the image files under the folders named (recursive, sorted)."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found += sorted(f for f in path.rglob("*") if f.is_file() and f.suffix.lower() in rawdata.IMAGE_SUFFIXES)
        elif path.is_file():
            found.append(path)
        else:
            raise InputFileError(f"{path}: no such file or folder")
    if not found:
        where = ", ".join(map(str, paths))
        raise InputFileError(f"no image files ({' '.join(rawdata.IMAGE_SUFFIXES)}) in {where}")
    return found


def read_images(files: list[Path], size: int, skip_bad: bool) -> tuple[np.ndarray, list[Path], list[dict[str, str]]]:
    """(uint8 NHWC images, their files, the skipped files with why). A bad file raises an
    ImageError naming it, or with ``skip_bad`` is reported in one line on stderr and skipped."""
    images, kept, skipped = [], [], []
    for f in progress(files, total=len(files), desc="decode") if len(files) >= BIG else files:
        try:
            try:
                blob = f.read_bytes()
            except OSError as exc:
                raise ImageError(f"{f}: cannot read it ({exc.strerror or exc})") from exc
            images.append(rawdata.decode_image(blob, str(f), size))
            kept.append(f)
        except ImageError as exc:
            if not skip_bad:
                raise
            skipped.append({"file": str(f), "error": str(exc)})
            print(f"skipped: {exc}", file=sys.stderr)
    if not images:
        raise ImageError(f"none of the {len(files)} file(s) is a readable image")
    return np.stack(images), kept, skipped


def class_names(meta: Path, checkpoint: Path, n: int) -> list[str]:
    """Class names from the prepared data's meta.json, else from the checkpoint's metadata
    (needs torch), else the class indices."""
    names: Any = read_json(meta).get("classes") if meta.is_file() else None
    if names is None and checkpoint.is_file():
        try:
            import torch

            names = torch.load(checkpoint, map_location="cpu", weights_only=True)["meta"].get("classes")
        except Exception as exc:  # no torch here, or not one of this pipeline's checkpoints
            log.warning("no class names from %s (%s)", checkpoint, exc)
    if not isinstance(names, list) or len(names) != n:
        log.warning("no names for the %d classes (%s, %s): printing class indices", n, meta, checkpoint)
        return [str(i) for i in range(n)]
    return [str(x) for x in names]


def run_backend(images: np.ndarray, args: argparse.Namespace, p: Params) -> np.ndarray:
    """Logits of every image with the chosen backend and precision, in batches."""
    artifacts = Artifacts(args.checkpoint, args.onnx, args.engine_dir)
    try:
        runner = create_runner(args.backend, args.precision, artifacts, p)
    except BackendUnavailable as exc:
        raise BackendUnavailable(f"{exc}; {_alternatives(args.backend, p.device)}") from exc
    with runner:
        log.info("%s %s: input %s", args.backend, args.precision, runner.input_spec().describe())
        desc = f"predict {args.backend} {args.precision}"
        return inputs.infer_all(runner, images, p.data.mean, p.data.std, args.batch_size, desc, len(images) >= BIG)


def run_in_trt_python(python: str, images: np.ndarray, args: argparse.Namespace) -> np.ndarray:
    """TensorRT's part in its own interpreter: images and logits pass through a temporary folder."""
    with tempfile.TemporaryDirectory(prefix="predict.") as tmp:
        x, y = Path(tmp) / "images.npy", Path(tmp) / "logits.npy"
        np.save(x, images)
        child = ["--params", str(args.params), "--backend", "tensorrt", "--precision", args.precision]
        child += ["--engine-dir", str(args.engine_dir), "--batch-size", str(args.batch_size), "--device", args.device]
        run_module("stages.predict", [*child, "--child-images", str(x), "--child-logits", str(y)], python, "trt")
        return np.load(y)


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def top_k(probs: np.ndarray, k: int, names: list[str]) -> list[list[dict[str, Any]]]:
    """Per image: the ``k`` most probable classes, most probable first."""
    order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return [
        [{"class": names[c], "index": int(c), "probability": round(float(row[c]), 6)} for c in idx]
        for row, idx in zip(probs, order, strict=True)
    ]


def write_output(path: Path, record: dict[str, Any], k: int) -> None:
    """JSON: the whole record. CSV: one row per file (top-k columns, or the error)."""
    if path.suffix.lower() == ".json":
        write_json(path, record)
        return
    rows = []
    for pred in record["predictions"]:
        row: dict[str, Any] = {"file": pred["file"]}
        for rank in range(1, k + 1):
            top = pred["top"][rank - 1] if rank <= len(pred["top"]) else {}
            for key in ("class", "index", "probability"):
                row[f"top{rank}_{key}"] = top.get(key)
        rows.append({**row, "error": None})
    rows += [{"file": s["file"], "error": s["error"]} for s in record["skipped"]]
    write_csv(path, rows)


def predict(args: argparse.Namespace) -> None:
    p = load_params(args.params)
    p = dataclasses.replace(p, device=args.device or p.device)
    args.device = p.device
    _default_artifacts(args, p)
    python = trt_python() if args.backend == "tensorrt" else None
    if python is None and args.backend == "tensorrt":  # fail before decoding a big folder
        _check_tensorrt()
    images, files, skipped = read_images(find_images(args.inputs), _image_size(args.meta), args.skip_bad)
    names = class_names(args.meta, args.checkpoint, p.model.num_classes)
    t0 = time.perf_counter()
    logits = run_in_trt_python(python, images, args) if python else run_backend(images, args, p)
    seconds = time.perf_counter() - t0
    k = min(args.top_k, logits.shape[1])
    tops = top_k(softmax(logits), k, names)
    for f, top in zip(files, tops, strict=True):
        print(f"{f}\t" + "\t".join(f"{t['class']} {t['probability']:.1%}" for t in top))
    record = {
        "model": p.model.name,
        "backend": args.backend,
        "precision": args.precision,
        "device": p.device,
        "top_k": k,
        "images": len(files),
        "seconds": round(seconds, 3),
        "predictions": [{"file": str(f), "top": top} for f, top in zip(files, tops, strict=True)],
        "skipped": skipped,
    }
    if args.output:
        write_output(args.output, record, k)
    log.info(
        "%d image(s) predicted with %s %s in %.2f s, %d skipped",
        len(files),
        args.backend,
        args.precision,
        seconds,
        len(skipped),
    )


def _check_tensorrt() -> None:
    from .lib.trt.common import import_tensorrt

    try:
        import_tensorrt()
    except BackendUnavailable as exc:
        raise BackendUnavailable(f"{exc}; {_alternatives('tensorrt', 'cuda')}") from exc


def _alternatives(backend: str, device: str) -> str:
    others = " or ".join(f"--backend {b}" for b in BACKENDS if b != backend)
    cpu = " (--device cpu runs them on the CPU)" if device == "cuda" else ""
    return f"use {others} instead{cpu}"


def _image_size(meta: Path) -> int:
    """The dataset's image size: from the prepared data's meta.json, else CIFAR-10's."""
    shape = read_json(meta).get("image_shape") if meta.is_file() else None
    return int(shape[0]) if shape else data.IMAGE_SIZE


def _default_artifacts(args: argparse.Namespace, p: Params) -> None:
    """artifacts/<model.name>/... for whatever was not given, as dvc.yaml writes them."""
    root = Path("artifacts") / p.model.name
    args.checkpoint = args.checkpoint or root / "checkpoint.pt"
    args.onnx = args.onnx or root / "onnx" / f"{args.precision}.onnx"
    args.engine_dir = args.engine_dir or root / "engines" / args.precision


def child(args: argparse.Namespace) -> None:
    """The TensorRT part, run by the parent in $TRT_PYTHON: images in, logits out."""
    p = dataclasses.replace(load_params(args.params), device=args.device)
    images = np.load(args.child_images)
    np.save(args.child_logits, run_backend(images, args, p))


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="trt-predict", description=__doc__)
    ap.add_argument("inputs", nargs="*", type=Path, help="image files or folders")
    ap.add_argument("--backend", choices=BACKENDS, default="tensorrt")
    ap.add_argument("--precision", choices=PRECISIONS, default="fp32")
    ap.add_argument("--top-k", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--output", type=Path, help="also write the predictions to FILE.json or FILE.csv")
    ap.add_argument("--skip-bad", action="store_true", help="report unreadable or wrong-size files, predict the rest")
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    ap.add_argument("--device", choices=("cuda", "cpu"), help="default: params.yaml's device")
    ap.add_argument("--engine-dir", type=Path, help="default: artifacts/<model.name>/engines/<precision>")
    ap.add_argument("--onnx", type=Path, help="default: artifacts/<model.name>/onnx/<precision>.onnx")
    ap.add_argument("--checkpoint", type=Path, help="default: artifacts/<model.name>/checkpoint.pt")
    ap.add_argument("--meta", type=Path, default=Path("data/prepared/meta.json"), help="class names, image size")
    ap.add_argument("--child-images", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--child-logits", type=Path, help=argparse.SUPPRESS)
    return ap


def main(argv: list[str] | None = None) -> int:
    ap = parser()
    args = ap.parse_args(argv)
    if args.child_images:
        return run_main("predict", lambda: child(args))
    if not args.inputs:
        ap.error("name at least one image file or folder")
    if args.top_k < 1 or args.batch_size < 1:
        ap.error("--top-k and --batch-size must be at least 1")
    if args.output and args.output.suffix.lower() not in (".json", ".csv"):
        ap.error(f"--output {args.output}: use a .json or .csv file")
    return run_main("predict", lambda: predict(args))


if __name__ == "__main__":
    sys.exit(main())
